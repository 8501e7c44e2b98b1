"""One local Lambda execution environment: a process that imports the handler once and serves invocations.

Why a process per environment: Powertools' Logger, Metrics and Tracer are process-global
singletons and app.py keeps warm state in module globals, exactly as in Lambda, so two
invocations must never share a process at the same time. ``aftercall_ops.emulator.stack`` starts one of
these per unit of reserved concurrency (``python -m aftercall_ops.emulator.worker``), kills it when
an invocation runs past the function timeout, and starts a fresh one, as Lambda does.

Only the standard library is imported here, so the environment holds what app.py and the layer
import and nothing the operator tooling happens to load.

Protocol, one JSON document per line: the parent writes ``{"request_id", "event", "deadline_ms",
"function_arn"}`` to stdin; this process answers on its original stdout with ``{"type": "ready"}``
or ``{"type": "init_error", "error"}`` once after the import, then ``{"type": "result", "ok",
"result" | "error"}`` per invocation. Everything the function prints (Powertools' JSON logs, EMF
metrics) goes to the log file, which the parent passed in as stderr.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import IO, Any

Handler = Callable[[Any, Any], Any]


class LocalLambdaContext:
    """What the Python runtime's context object offers, with the deadline the parent set."""

    def __init__(self, request_id: str, function_arn: str, deadline_ms: int) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        # The real runtime reads this from the environment too, so it is a string there as well.
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error_payload(
    exc: BaseException, request_id: str | None, error_type: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """The error document the Python runtime returns for an exception that left the handler."""
    payload: dict[str, Any] = {
        "errorMessage": message if message is not None else str(exc),
        "errorType": error_type or type(exc).__name__,
    }
    if request_id is not None:
        payload["requestId"] = request_id
    payload["stackTrace"] = traceback.format_list(traceback.extract_tb(exc.__traceback__))
    return payload


def _log_runtime_error(error: dict[str, Any]) -> None:
    """The line the runtime writes to the function's log for an unhandled error (JSON log format)."""
    record = {
        "timestamp": _timestamp(),
        "level": "ERROR",
        "logger": "lambda_runtime",
        "message": f"{error['errorType']}: {error['errorMessage']}",
        **error,
    }
    print(json.dumps(record, default=str), flush=True)


class _LambdaJsonFormatter(logging.Formatter):
    """The line Lambda's Python runtime writes for a standard-library log record (JSON log format)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        if record.exc_info:
            line["stackTrace"] = self.formatException(record.exc_info).splitlines()
        return json.dumps(line, default=str)


def configure_root_logging() -> None:
    """Set up the root logger as Lambda's Python runtime does with a LoggingConfig.

    With ``LogFormat: JSON`` the runtime gives the root logger a JSON handler at the function's
    ``ApplicationLogLevel`` (``AWS_LAMBDA_LOG_LEVEL``), so records of libraries (Powertools
    utilities, the SDK) at or above that level reach the function's log; without this, the local
    stack showed none of them, whatever ``LogLevel`` said.
    """
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LambdaJsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, "WARNING" if level == "WARN" else level, logging.INFO))


def _load_handler(handler: str, end_function: str | None) -> Handler:
    """Import the handler module (``app.lambda_handler``), with ``end_function`` from the given file."""
    if end_function:
        spec = importlib.util.spec_from_file_location("end_function", end_function)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load an end_function module from {end_function}")
        module = importlib.util.module_from_spec(spec)
        sys.modules["end_function"] = module  # app.py's `from end_function import end_function` finds it
        spec.loader.exec_module(module)
    module_name, _, attribute = handler.rpartition(".")
    app = importlib.import_module(module_name)
    function = getattr(app, attribute, None)
    if not callable(function):
        raise AttributeError(f"Handler '{attribute}' missing on module '{module_name}'")
    return function  # type: ignore[no-any-return]


def _send(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message, default=str) + "\n")
    channel.flush()


def _invoke(handler: Handler, request: dict[str, Any]) -> dict[str, Any]:
    request_id = str(request["request_id"])
    context = LocalLambdaContext(request_id, str(request["function_arn"]), int(request["deadline_ms"]))
    try:
        result = handler(request["event"], context)
    except Exception as exc:  # noqa: BLE001 - the runtime reports every error the handler raises
        error = _error_payload(exc, request_id)
        _log_runtime_error(error)
        return {"type": "result", "ok": False, "error": error}
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        error = _error_payload(exc, request_id, "Runtime.MarshalError", f"Unable to marshal response: {exc}")
        _log_runtime_error(error)
        return {"type": "result", "ok": False, "error": error}
    return {"type": "result", "ok": True, "result": result}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aftercall_ops.emulator.worker")
    parser.add_argument("--handler", required=True, help="module.function, as the template's Handler")
    parser.add_argument("--end-function", default=None, help="file to load as the end_function module")
    args = parser.parse_args(argv)

    # Answers go to the original stdout; from here on fd 1 is the log file the parent gave as stderr.
    reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    started = time.monotonic()
    configure_root_logging()
    try:
        handler = _load_handler(args.handler, args.end_function)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as Lambda's init error
        module_name = args.handler.rpartition(".")[0]
        error = _error_payload(
            exc, None, "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        )
        _log_runtime_error(error)
        _send(reply, {"type": "init_error", "error": error})
        return 1
    _send(reply, {"type": "ready", "init_ms": round((time.monotonic() - started) * 1000, 1)})

    for line in sys.stdin:  # ends when the parent closes stdin
        if line.strip():
            _send(reply, _invoke(handler, json.loads(line)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
