"""Every template setting reaches each function's Powertools objects (issue 11, item 8).

The attack run found ``LogLevel=DEBUG`` giving no DEBUG record on the local stack, and the
ingest, follow-up and end functions logging and measuring under one service name, because the
runtime built ``Logger(service="aftercall")`` over each function's ``POWERTOOLS_SERVICE_NAME``.
Here, for every function of the template, a process with exactly the environment the local stack
gives that function (the template's variables, resolved with the parameters, plus Lambda's own,
such as ``AWS_LAMBDA_LOG_LEVEL`` from ``LoggingConfig``) builds the runtime's Powertools objects
and reports what they were configured with, and what they log.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.emulator.template import PROJECT_ROOT, load_template
from aftercall_ops.generate import conversation

PROBE = """
import json, logging, sys
from aftercall_ops.emulator.worker import configure_root_logging
configure_root_logging()  # as the worker (and Lambda's runtime) does before importing the handler
from aftercall.observability import logger, metrics, tracer
logger.debug("runtime debug probe")
logger.info("runtime info probe")
logger.warning("runtime warning probe")
logging.getLogger("end_function").debug("standard logging debug probe")  # an End function using logging
print(json.dumps({
    "service": logger.service,
    "level": logging.getLevelName(logger.log_level),
    "namespace": metrics.namespace,
    "metrics_service": metrics.service,
    "tracer_service": tracer.service,
    "tracer_disabled": tracer.disabled,
}), file=sys.stderr)
"""


def _template_settings() -> dict[str, dict[str, Any]]:
    """Each function's Powertools variables as written in template.yaml (by logical id)."""
    resources = load_template()["Resources"]
    return {
        logical_id: resource["Properties"]["Environment"]["Variables"]
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def _probe(environment: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the probe with ``environment``; returns what it reported and the JSON lines it logged."""
    done = subprocess.run(  # noqa: S603 - our interpreter, our probe
        [sys.executable, "-c", PROBE],
        env=environment,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    logged = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(done.stderr.strip().splitlines()[-1]), logged


@pytest.mark.parametrize("level", ["DEBUG", "WARN"])
def test_every_function_gets_its_service_namespace_and_log_level(level: str, tmp_path: Path) -> None:
    # Given the local stack with the LogLevel parameter set
    with LocalStack(
        f"aftercall-obs-{uuid.uuid4().hex[:6]}", {"LogLevel": level}, workers=1, state_dir=tmp_path
    ) as local:
        functions = sorted(local.log_paths)
        # When each function's environment builds the runtime's Powertools objects
        reports = {name: _probe(local.environment_of(name)) for name in functions}
    written = {variables["POWERTOOLS_SERVICE_NAME"] for variables in _template_settings().values()}
    services = set()
    for name, (settings, logged) in reports.items():
        # Then the Logger, Tracer and Metrics carry the function's own service and the namespace
        service = settings["service"]
        services.add(service)
        assert service in written, name
        assert settings["metrics_service"] == settings["tracer_service"] == service, name
        assert settings["namespace"] == "Aftercall", name
        assert settings["tracer_disabled"] is True, name  # the local stack has no X-Ray daemon
        # And the level is the LogLevel parameter, for the runtime's records and the standard logging module's alike
        assert settings["level"] == ("WARNING" if level == "WARN" else level), name
        messages = {line["message"] for line in logged}
        if level == "DEBUG":
            assert {"runtime debug probe", "standard logging debug probe", "runtime info probe"} <= messages, name
        else:
            assert messages == {"runtime warning probe"}, name
        assert all(
            line.get("service") == service
            for line in logged
            if "probe" in line["message"] and "runtime" in line["message"]
        )
    # And no two functions share a service name, so their logs and metrics can be told apart
    assert len(services) == len(functions) >= 3


def test_at_debug_the_end_handlers_log_holds_debug_records(tmp_path: Path) -> None:
    # Given the local stack deployed with LogLevel=DEBUG
    with LocalStack(
        f"aftercall-obs-{uuid.uuid4().hex[:6]}", {"LogLevel": "DEBUG"}, workers=1, state_dir=tmp_path
    ) as local:
        detail = conversation(random.Random(uuid.uuid4().int), random.randrange(10**6), environment="sandbox")
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Conversation Ended",
            "source": local.outputs["EventSource"],
            "account": "123456789012",
            "time": detail["ended_at"],
            "region": "us-east-1",
            "resources": [],
            "detail": detail,
        }
        # When a conversation is processed
        outcome = local.invoke(event)
        lines = [
            json.loads(line)
            for line in local.log_paths[local.function_name].read_text().splitlines()
            if line.startswith("{")
        ]
    # Then it was, and its log holds DEBUG records next to the runtime's own, under its service
    assert outcome.ok, outcome
    assert any(line.get("level") == "DEBUG" for line in lines)
    assert any(line.get("message") == "conversation ended" and line.get("service") == "aftercall" for line in lines)
