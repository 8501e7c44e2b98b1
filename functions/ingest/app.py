"""Ingest Lambda entry points: Powertools wiring, then one call each. Logic lives in the layer.

``lambda_handler`` answers the function URL (signed vendor webhooks); ``connect_handler`` takes
Amazon Connect contact events from the rule on the default bus. Both run the same
:class:`aftercall.ingest.service.IngestService`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aftercall.ingest.service import IngestService
from aftercall.observability import logger, metrics, tracer
from aftercall.settings import IngestSettings

_service: IngestService | None = None


def service() -> IngestService:
    """Built on the first invocation, then reused while the process stays warm (secret cache included)."""
    global _service
    if _service is None:
        _service = IngestService(IngestSettings.from_env())
    return _service


@logger.inject_lambda_context(clear_state=True, correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The body is used exactly as received (base64-decoded when flagged): signatures cover its bytes.
    return service().handle_function_url(event, context)


@logger.inject_lambda_context(clear_state=True, correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def connect_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return service().handle_connect(event, context)
