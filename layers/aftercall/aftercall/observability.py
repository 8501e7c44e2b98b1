"""Powertools Logger, Tracer and Metrics: one instance each per process, configured by env.

``POWERTOOLS_SERVICE_NAME`` and ``POWERTOOLS_METRICS_NAMESPACE`` come from the template.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="aftercall")
tracer = Tracer(service="aftercall")
metrics = Metrics(namespace="Aftercall", service="aftercall")
