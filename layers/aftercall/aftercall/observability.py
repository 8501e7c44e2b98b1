"""Powertools Logger, Tracer and Metrics: one instance each per process, configured by env.

Every setting comes from the function's environment, as the template sets it:
``POWERTOOLS_SERVICE_NAME`` (each function has its own, so the ingest, follow-up and end
functions' logs, traces and metrics can be told apart), ``POWERTOOLS_METRICS_NAMESPACE``,
``POWERTOOLS_LOG_LEVEL`` / Lambda's ``AWS_LAMBDA_LOG_LEVEL`` (the ``LogLevel`` parameter) and
``POWERTOOLS_TRACE_DISABLED``. Nothing here passes a value that would override them; the
fallbacks only apply outside Lambda, where no template set anything.

The Tracer patches only what the runtime calls out through: botocore (every AWS call) and
requests (every CRM call). Its default, ``patch_all``, also imports and patches a dozen other
libraries (sqlite3, httplib, database drivers...) at cold start for nothing (bench/coldstart.py).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics

from aftercall.settings import ObservabilitySettings

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

#: What the X-Ray SDK patches, so each AWS and CRM call is a subsegment of the invocation's trace.
TRACED_LIBRARIES = ("botocore", "requests")
_SETTINGS = ObservabilitySettings.from_env()
SERVICE = _SETTINGS.service
NAMESPACE = _SETTINGS.namespace

logger = Logger(service=SERVICE)  # the level: POWERTOOLS_LOG_LEVEL, else AWS_LAMBDA_LOG_LEVEL
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
_tracer_lock = threading.Lock()


def __getattr__(name: str) -> Tracer:
    """``tracer`` is built on first use: that imports the X-Ray SDK and patches botocore and requests,
    which only invocations X-Ray samples need (the EndHandler asks for it only then; see its app.py)."""
    if name != "tracer":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _tracer_lock:
        if "tracer" not in globals():
            from aws_lambda_powertools import Tracer

            globals()["tracer"] = Tracer(service=SERVICE, patch_modules=TRACED_LIBRARIES)
        built: Tracer = globals()["tracer"]
        return built
