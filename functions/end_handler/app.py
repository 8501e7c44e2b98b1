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
    from typing import Any

    from aws_lambda_powertools.utilities.typing import LambdaContext

    from aftercall.handler import EndHandlerRuntime
    from aftercall.observability import logger, metrics, tracer
    from aftercall.settings import Settings
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
        _runtime = EndHandlerRuntime(Settings.from_env())
    return _runtime


@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # What Logger.inject_lambda_context adds, less the function's name, ARN and memory: the same on
    # every line of the function's own log group, and a fifth of the bytes CloudWatch Logs bills.
    global _cold_start
    logger.structure_logs(cold_start=_cold_start, function_request_id=context.aws_request_id)
    _cold_start = False
    return runtime().handle(event, context, end_function)
