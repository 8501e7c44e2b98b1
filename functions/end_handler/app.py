"""EndHandler Lambda entry point: Powertools wiring, then one call. Logic lives in the layer."""

from __future__ import annotations

import gc
import warnings

# Importing the runtime builds some 50,000 objects that live as long as the process (modules,
# classes, models). Letting the collector run while they are built finds almost nothing and costs
# about a tenth of the cold start (bench/coldstart.py); freezing them afterwards also spares every
# later full collection from scanning them again. The few hundred cycles the imports leave behind
# stay frozen with them: a fixed fraction of a megabyte, not a growth.
gc.disable()
try:
    from collections.abc import Callable
    from typing import Any

    from aws_lambda_powertools.utilities.typing import LambdaContext

    from aftercall import observability
    from aftercall.handler import EndHandlerRuntime
    from aftercall.observability import logger, metrics
    from aftercall.settings import EndHandlerSettings, trace_header
    from end_function import end_function
finally:
    gc.freeze()
    gc.enable()

# A processed conversation's metrics are one EMF line of aftercall.reporting's own; Powertools' flush
# then has nothing left and would print this warning to the log of every new environment.
warnings.filterwarnings("ignore", message="No application metrics to publish")

_runtime: EndHandlerRuntime | None = None
_cold_start = True


def runtime() -> EndHandlerRuntime:
    """Built on the first invocation, then reused while the process stays warm."""
    global _runtime
    if _runtime is None:
        _runtime = EndHandlerRuntime(EndHandlerSettings.from_env())
    return _runtime


def _handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # What Logger.inject_lambda_context adds, less the function's name, ARN and memory: the same on
    # every line of the function's own log group, and bytes CloudWatch Logs bills on every line.
    global _cold_start
    logger.structure_logs(cold_start=_cold_start, function_request_id=context.aws_request_id)
    _cold_start = False
    return runtime().handle(event, context, end_function)


_traced: Callable[[dict[str, Any], LambdaContext], dict[str, Any]] | None = None


def _sampled() -> bool:
    """Whether X-Ray records this invocation: Lambda decides (the template's sampling rule) and says
    so in the trace header it sets for each invocation."""
    return "Sampled=1" in trace_header()


@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The Tracer (the X-Ray SDK, botocore and requests patched) is built for the first sampled
    # invocation: at the default sampling most environments never need it (bench/coldstart.py).
    global _traced
    if not _sampled():
        return _handle(event, context)
    if _traced is None:
        _traced = observability.tracer.capture_lambda_handler(capture_response=False)(_handle)
    return _traced(event, context)
