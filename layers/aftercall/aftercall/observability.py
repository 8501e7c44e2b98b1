"""Powertools Logger, Tracer and Metrics: one instance each per process, configured by env.

``POWERTOOLS_SERVICE_NAME`` and ``POWERTOOLS_METRICS_NAMESPACE`` come from the template.

The Tracer patches only what the runtime calls out through: botocore (every AWS call) and
requests (every CRM call). Its default, ``patch_all``, also imports and patches a dozen other
libraries (sqlite3, httplib, database drivers...) at cold start for nothing (bench/coldstart.py).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

#: What the X-Ray SDK patches, so each AWS and CRM call is a subsegment of the invocation's trace.
TRACED_LIBRARIES = ("botocore", "requests")

logger = Logger(service="aftercall")
metrics = Metrics(namespace="Aftercall", service="aftercall")
_tracer_lock = threading.Lock()


def __getattr__(name: str) -> Tracer:
    """``tracer`` is built on first use: that imports the X-Ray SDK and patches botocore and requests,
    which only invocations X-Ray samples need (the EndHandler asks for it only then; see its app.py)."""
    if name != "tracer":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _tracer_lock:
        if "tracer" not in globals():
            from aws_lambda_powertools import Tracer

            globals()["tracer"] = Tracer(service="aftercall", patch_modules=TRACED_LIBRARIES)
        built: Tracer = globals()["tracer"]
        return built
