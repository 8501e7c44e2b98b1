"""``python -m aftercall_ops.cli``: the ``aftercall`` command without its console script."""

from aftercall_ops.cli import app

app()
