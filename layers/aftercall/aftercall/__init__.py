"""aftercall runtime: the code that runs inside the EndHandler Lambda (shipped in the layer).

Operator tooling lives in ``aftercall_ops`` and is never imported from here.
"""

__version__ = "0.1.0"
