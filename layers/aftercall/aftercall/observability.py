"""Powertools Logger, Tracer and Metrics: one instance each per process, configured by env.

``POWERTOOLS_SERVICE_NAME`` and ``POWERTOOLS_METRICS_NAMESPACE`` come from the template.

The Tracer patches only what the runtime calls out through: botocore (every AWS call) and
requests (every CRM call). Its default, ``patch_all``, also imports and patches a dozen other
libraries (sqlite3, httplib, database drivers...) at cold start for nothing (bench/coldstart.py).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

#: What the X-Ray SDK patches, so each AWS and CRM call is a subsegment of the invocation's trace.
TRACED_LIBRARIES = ("botocore", "requests")

logger = Logger(service="aftercall")
tracer = Tracer(service="aftercall", patch_modules=TRACED_LIBRARIES)
metrics = Metrics(namespace="Aftercall", service="aftercall")
