"""What one conversation costs in calls, writes and bytes: measured once, used by memory.py and cost.py.

:func:`run_warm` runs one warm End function process (``bench/_lambda_child.py``) over generated
conversations on a :class:`BenchStack`; :func:`per_conversation` turns what it counted into the
per-conversation figures both benchmarks print: AWS calls by operation, DynamoDB write units
priced from the size of the item each write touched, table items, CRM requests by route, log
bytes and the EMF lines and metric series in the log.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _lambda_stack import FUNCTION_DIR, LAYER_DIR, BenchStack, ChildRun, mixed_events, run_child, site_dirs

#: Share of generated events that break the contract (rejected and parked), as producers do now and then.
INVALID_SHARE = 0.01
#: "One write capacity unit represents one write per second for an item up to 1 KB in size"
#: (DynamoDB developer guide, read/write capacity mode); an update is charged on the larger of the
#: item's size before and after.
WRITE_UNIT_BYTES = 1024


def transcript(kilobytes: int) -> list[dict[str, str]]:
    """A call transcript of about ``kilobytes`` KB as JSON: the largest thing agents put in ``conv.state``."""
    turn = "Could you check the second charge on my November invoice and refund it, please? " * 2
    return [{"role": ("caller", "agent")[n % 2], "text": turn} for n in range(kilobytes * 1024 // (len(turn) + 30))]


def run_warm(
    stack: BenchStack,
    events: int,
    *,
    seed: int,
    extra: Sequence[str] = (),
    state_kb: int = 0,
    invalid: float = INVALID_SHARE,
    sampled_share: float = 1.0,
    arrival_rate: float = 0.0,
) -> ChildRun:
    """One warm process handling ``events`` conversations of the generator's mix, counting AWS calls.

    ``arrival_rate``: the conversations end at this mean rate per second (Poisson); 0: all at once.
    """
    with tempfile.TemporaryDirectory(prefix="aftercall-warm-") as tmp:
        events_file = Path(tmp) / "events.jsonl"
        with events_file.open("w", encoding="utf-8") as handle:
            for event in mixed_events(events, seed=seed, invalid=invalid):
                if state_kb:
                    event["detail"]["state"]["transcript"] = transcript(state_kb)
                handle.write(json.dumps(event) + "\n")
        return run_child(
            "app.lambda_handler",
            [str(FUNCTION_DIR), str(LAYER_DIR), *site_dirs()],
            events_file,
            stack.lambda_env(),
            extra=[
                "--count-aws-calls",
                f"--sampled-share={sampled_share}",
                f"--arrival-rate={arrival_rate}",
                *extra,
            ],
            function_timeout_s=stack.timeout_s,
            timeout_s=max(600.0, events * 2.0 + (events / arrival_rate if arrival_rate else 0.0)),
            keep_log=True,
        )


def item_bytes(item: Mapping[str, Any]) -> int:
    """An item's size by DynamoDB's rule: attribute names plus values (numbers ~1 byte per 2 digits)."""
    size = 0
    for name, value in item.items():
        ((kind, data),) = value.items()
        if kind == "M":
            data_size = item_bytes(data) + 3
        elif kind == "N":
            data_size = len(str(data)) // 2 + 1
        else:
            data_size = len(str(data).encode())
        size += len(name.encode()) + data_size
    return size


def table_items(stack: BenchStack) -> dict[str, int]:
    """Every item the run left in the idempotency table (records and action ledger): id → bytes."""
    sizes: dict[str, int] = {}
    for page in stack.client("dynamodb").get_paginator("scan").paginate(TableName=stack.table):
        sizes.update({item["id"]["S"]: item_bytes(item) for item in page["Items"]})
    return sizes


def metric_series(log_text: str) -> list[str]:
    """The distinct CloudWatch metrics (name and dimension values) the EMF lines in the log create."""
    series: set[str] = set()
    for line in log_text.splitlines():
        if '"_aws"' not in line:
            continue
        try:
            document = json.loads(line)
            directives = document["_aws"]["CloudWatchMetrics"]
        except (ValueError, KeyError, TypeError):
            continue
        for directive in directives:
            for dimensions in directive.get("Dimensions", [[]]):
                labels = ",".join(f"{d}={document.get(d)}" for d in dimensions)
                for metric in directive.get("Metrics", []):
                    series.add(f"{directive.get('Namespace')}/{metric['Name']}[{labels}]")
    return sorted(series)


def write_units(writes_by_key: Mapping[str, int], sizes: Mapping[str, int]) -> int:
    """Write units of every counted write, each priced by its item's final size (deleted items: 1)."""
    return sum(count * max(1, math.ceil(sizes.get(key, 0) / WRITE_UNIT_BYTES)) for key, count in writes_by_key.items())


def _kind(key: str) -> str:
    """``aftercall.conversation#…`` → ``aftercall.conversation``, ``caller#hubspot#…`` → ``caller``."""
    return key.split("#", 1)[0]


def per_conversation(run: ChildRun, crm: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
    """The figures per conversation (every invocation of the run counts as one conversation)."""
    report = run.report
    conversations = report["invocations"]
    routes: dict[str, int] = {}
    for route, count in crm["by_route"].items():  # PATCH /crm/v3/objects/contacts/1042 → .../{id}
        key = re.sub(r"/\d+(?=/|$)", "/{id}", route)
        routes[key] = routes.get(key, 0) + count
    writes = report.get("dynamodb_writes_by_key", {})
    read_units = report.get("dynamodb_items_read", 0)  # consistent reads of items under 4 KB: one unit each
    lines = [line for line in run.log_text.splitlines() if line.strip()]
    items = list(sizes.values())
    return {
        "aws_calls": {op: round(n / conversations, 3) for op, n in sorted(report["aws_calls"].items())},
        "aws_request_bytes_max": report["aws_request_bytes_max"],
        "dynamodb_write_units": round(write_units(writes, sizes) / conversations, 3),
        # by kind of item: the conversation's record (with its ledger), caller items, search slots
        "dynamodb_write_units_by_item": {
            kind: round(write_units({k: n for k, n in writes.items() if _kind(k) == kind}, sizes) / conversations, 3)
            for kind in sorted({_kind(k) for k in writes})
        },
        "dynamodb_read_units": round(read_units / conversations, 3),
        "crm_requests": round(crm["total"] / conversations, 3),
        "crm_requests_by_route": {r: round(n / conversations, 3) for r, n in sorted(routes.items())},
        "log_bytes": round(run.log_bytes / conversations, 1),
        "log_lines": round(len(lines) / conversations, 2),
        "emf_lines": round(run.log_text.count('"_aws"') / conversations, 2),
        "table_items": round(len(items) / conversations, 3),
        "table_item_bytes_mean": round(sum(items) / max(1, len(items)), 1),
        "table_item_bytes_max": max(items, default=0),
    }
