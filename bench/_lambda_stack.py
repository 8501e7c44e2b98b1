"""The local stack the performance benchmarks run the End function on, and their Lambda-like children.

:class:`BenchStack` starts, in this process and on loopback only, a moto server
(``ThreadedMotoServer``) standing in for AWS and the fake HubSpot seeded with the generated
customers; it creates the resources the EndHandler's environment refers to and derives that
environment from ``template.yaml`` (one source of truth, as for the local stack). The function
itself never runs in this process: :func:`run_child` starts ``bench/_lambda_child.py`` in a fresh
interpreter with Lambda's variables, so its imports, timings and memory are its own.

Tracing is on in the children, as on Lambda with ``Tracing: Active``: Powertools' Tracer patches
the SDKs and the X-Ray SDK sends its segments over UDP to a loopback socket of this process
(which discards them).
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config
from packaging.requirements import Requirement

from aftercall_ops.emulator.template import Resolver, function_properties, load_template, stack_spec
from aftercall_ops.fakes.hubspot import FakeCrm
from aftercall_ops.generate import CUSTOMERS, conversations

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
FUNCTION_DIR = REPO / "functions" / "end_handler"
LAYER_DIR = REPO / "layers" / "aftercall"
CHILD = BENCH_DIR / "_lambda_child.py"
STACK_NAME = "aftercall-bench"
STAGE = "sandbox"
REGION = "us-east-1"
ACCOUNT = "123456789012"
EVENT_SOURCE = "aftercall.platform"
#: What the Lambda python3.13 runtime itself provides: boto3 and its dependencies.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3"})


def machine() -> dict[str, Any]:
    """Where the figures were taken: CPUs, CPU model, Python, OS."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_average": load,
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def site_dirs() -> list[str]:
    """The dev environment's site-packages (boto3 there stands in for the Lambda runtime's)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


# --- events -------------------------------------------------------------------------------------------


def envelope(detail: Mapping[str, Any]) -> dict[str, Any]:
    """A full EventBridge ``Conversation Ended`` event around ``detail``, as the rule delivers it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Conversation Ended",
        "source": EVENT_SOURCE,
        "account": ACCOUNT,
        "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "region": REGION,
        "resources": [],
        "detail": dict(detail),
    }


def mixed_events(count: int, *, seed: int, invalid: float = 0.0) -> list[dict[str, Any]]:
    """``count`` distinct conversations in the generator's mix (2/3 inbound support, 1/3 outbound)."""
    return [envelope(detail) for detail in conversations(count, seed=seed, invalid=invalid, environment=STAGE)]


def support_events(count: int, *, seed: int) -> list[dict[str, Any]]:
    """``count`` distinct unresolved inbound calls: the seed End function logs a summary and opens a ticket."""
    found: list[dict[str, Any]] = []
    for detail in conversations(count * 8, seed=seed, environment=STAGE):
        if detail["state"].get("support_needed"):
            found.append(envelope(detail))
            if len(found) == count:
                return found
    raise RuntimeError(f"the generator gave fewer than {count} support calls")


def write_events(path: Path, events: Iterable[Mapping[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event) + "\n")
    return path


# --- the layer's contents -----------------------------------------------------------------------------


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def requirement_closure(path: Path = LAYER_DIR / "requirements.txt") -> list[str]:
    """Every distribution ``pip install -r requirements.txt`` installs (as found in this environment)."""
    seen: dict[str, None] = {}
    pending = [(req, frozenset(req.extras)) for req in _requirements(path)]
    while pending:
        req, extras = pending.pop()
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        seen[name] = None
        for spec in metadata.requires(req.name) or []:
            child = Requirement(spec)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras or {""}):
                pending.append((child, frozenset(child.extras)))
    return sorted(seen)


def top_level_paths(distribution: str) -> list[str]:
    """The files and package directories a distribution installed at the top of site-packages."""
    dist = metadata.distribution(distribution)
    base = Path(str(dist.locate_file("")))
    names: dict[str, None] = {}
    for file in dist.files or []:
        first = file.parts[0]
        if first.endswith((".dist-info", ".data")) or first in ("..", "bin", "__pycache__"):
            continue
        names[first] = None
    return [str(base / name) for name in names]


# --- the stack ------------------------------------------------------------------------------------------


class BenchStack:
    """``with BenchStack() as stack:`` moto + fake CRM + the EndHandler's resources; all stopped on exit."""

    def __init__(self) -> None:
        self.moto_url = ""
        self.crm = FakeCrm(token=f"pat-bench-{uuid.uuid4().hex[:12]}")
        self._moto: Any = None
        self._udp: socket.socket | None = None
        self.environment: dict[str, str] = {}
        self.memory_mb = 128
        self.timeout_s = 60.0
        self.log_level = "INFO"

    def __enter__(self) -> BenchStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _start(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.crm.start()
        for customer in CUSTOMERS:
            self.crm.add_contact(phone=customer.typed_phone, email=customer.email, properties={"hs_lead_status": "NEW"})
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind(("127.0.0.1", 0))
        self._create_resources()

    def stop(self) -> None:
        self.crm.stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def client(self, service: str) -> Any:
        return boto3.session.Session().client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(retries={"total_max_attempts": 1}),
        )

    def _create_resources(self) -> None:
        """Create what the EndHandler's environment refers to; resolve that environment from the template."""
        template = load_template()
        resources = template["Resources"]
        parameters = {"Stage": STAGE, "EventSource": EVENT_SOURCE, "CrmBaseUrl": self.crm.url}
        resolver = Resolver(template, parameters, STACK_NAME)
        spec = stack_spec(STACK_NAME, parameters, template)
        function = function_properties(template, "EndHandler")  # with Globals.Function, as SAM deploys it
        self.memory_mb = int(resolver.value(function.get("MemorySize", 128)))
        self.timeout_s = float(spec.function_timeout_seconds)
        refs: dict[str, str] = {}
        arns: dict[str, str] = {}
        for logical_id in _referenced(spec.function_environment):
            kind = resources[logical_id]["Type"]
            props = resources[logical_id].get("Properties", {})
            name = str(resolver.value(_name_property(props))) if _name_property(props) else f"{STACK_NAME}-{logical_id}"
            if kind == "AWS::DynamoDB::Table":
                self.client("dynamodb").create_table(
                    TableName=name,
                    AttributeDefinitions=props["AttributeDefinitions"],
                    KeySchema=props["KeySchema"],
                    BillingMode=props["BillingMode"],
                )
                refs[logical_id] = name
            elif kind == "AWS::SQS::Queue":
                sqs = self.client("sqs")
                url = sqs.create_queue(QueueName=name)["QueueUrl"]
                refs[logical_id] = url
                arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                    "QueueArn"
                ]
            elif kind == "AWS::SecretsManager::Secret":
                secret = self.client("secretsmanager").create_secret(
                    Name=name, SecretString=json.dumps({"access_token": self.crm.token})
                )
                refs[logical_id] = secret["ARN"]
            elif kind == "AWS::SNS::Topic":
                refs[logical_id] = self.client("sns").create_topic(Name=name)["TopicArn"]
            elif kind == "AWS::Scheduler::ScheduleGroup":
                self.client("scheduler").create_schedule_group(Name=name)
                refs[logical_id] = name
            elif kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
                arns[logical_id] = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
            elif kind == "AWS::IAM::Role":
                arns[logical_id] = f"arn:aws:iam::{ACCOUNT}:role/{name}"
            else:
                raise RuntimeError(f"EndHandler's environment refers to {logical_id} ({kind}); teach {__file__}")
        self.environment = {
            key: _local_value(value, refs, arns, key) for key, value in spec.function_environment.items()
        }
        self.log_level = str(resolver.value(function["LoggingConfig"]["ApplicationLogLevel"]))

    @property
    def table(self) -> str:
        return self.environment["IDEMPOTENCY_TABLE"]

    def lambda_env(self, function_name: str = f"{STACK_NAME}-EndHandler") -> dict[str, str]:
        """The template's variables plus what Lambda sets, with AWS pointed at moto (no inherited AWS_*)."""
        assert self._udp is not None
        udp_port = self._udp.getsockname()[1]
        keep = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")
        return {
            **{key: os.environ[key] for key in keep if key in os.environ},
            **self.environment,
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aftercall/{STACK_NAME}/end-handler",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]bench",
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "AWS_LAMBDA_LOG_LEVEL": self.log_level,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
            "LAMBDA_TASK_ROOT": str(FUNCTION_DIR),
            "_HANDLER": "app.lambda_handler",
            "TZ": ":UTC",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_SESSION_TOKEN": "bench",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{udp_port}",
            "_AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1",
            "_AWS_XRAY_DAEMON_PORT": str(udp_port),
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "AFTERCALL_LOCAL": "true",  # the HubSpot adapter accepts the fake CRM's http://127.0.0.1 URL
            "PYTHONUNBUFFERED": "1",
        }

    def crm_requests(self) -> dict[str, Any]:
        return self.crm.request_counts()


def _referenced(environment: Mapping[str, Any]) -> list[str]:
    ids: dict[str, None] = {}
    for value in environment.values():
        if isinstance(value, dict):
            if "Ref" in value:
                ids[str(value["Ref"])] = None
            elif "Fn::GetAtt" in value:
                ids[str(value["Fn::GetAtt"][0])] = None
    return list(ids)


def _name_property(props: Mapping[str, Any]) -> Any:
    for key in ("TableName", "QueueName", "Name", "TopicName", "FunctionName", "RoleName"):
        if key in props:
            return props[key]
    return None


def _local_value(value: Any, refs: Mapping[str, str], arns: Mapping[str, str], key: str) -> str:
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict) and "Ref" in value:
        return refs[str(value["Ref"])]
    if isinstance(value, dict) and "Fn::GetAtt" in value and value["Fn::GetAtt"][1] == "Arn":
        return arns[str(value["Fn::GetAtt"][0])]
    raise RuntimeError(f"{key}: cannot resolve {value!r} locally (did template.yaml change?)")


# --- children -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    wall_ms: float
    report: dict[str, Any]
    log_bytes: int
    log_text: str = ""


def run_child(
    handler: str,
    paths: Sequence[str],
    events_file: Path,
    env: Mapping[str, str],
    *,
    timeout_s: float = 600.0,
    extra: Sequence[str] = (),
    python_flags: Sequence[str] = (),
    function_timeout_s: float = 60.0,
    keep_log: bool = False,
) -> ChildRun:
    """Start a fresh interpreter on ``_lambda_child.py``; wall time runs from spawn to its report."""
    with tempfile.NamedTemporaryFile(prefix="aftercall-bench-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    command = [sys.executable, *python_flags, "-S", str(CHILD), "--handler", handler, "--events", str(events_file)]
    command += ["--log", str(log_path), "--timeout", str(function_timeout_s)]
    for path in paths:
        command += ["--path", path]
    command += list(extra)
    try:
        started = time.perf_counter()
        with log_path.open("ab") as stderr:  # from the first byte: -X importtime writes before main() runs
            process = subprocess.Popen(  # noqa: S603 - our own interpreter on our own script
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=paths[0],
                text=True,
            )
        watchdog = threading.Timer(timeout_s, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            wall_ms = (time.perf_counter() - started) * 1000
            process.stdout.close()
            process.wait(timeout=30)
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        if not line:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"the child exited with {process.returncode} without a report; its log ends:\n{tail}")
        text = log_path.read_text(encoding="utf-8", errors="replace") if keep_log else ""
        return ChildRun(wall_ms, json.loads(line), log_path.stat().st_size, text)
    finally:
        log_path.unlink(missing_ok=True)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
