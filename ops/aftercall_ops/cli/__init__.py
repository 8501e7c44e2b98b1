"""The ``aftercall`` command: options and printing only; the logic lives in :mod:`aftercall_ops.operations`."""

from aftercall_ops.cli.app import app

__all__ = ["app"]
