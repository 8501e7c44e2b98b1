"""One X-Ray trace per call (Ingest → EventBridge → EndHandler) and the saved Logs Insights queries."""

from __future__ import annotations

import re
from typing import Any

import pytest

from aftercall.ingest.service import IngestService
from aftercall.settings import TRACE_ENV
from aftercall.trace_context import current_trace_header
from aftercall_ops.emulator.template import load_template, sam_transform
from tests.support.ingest import encode, ops_target, sample, secret_id, service, webhook  # noqa: F401
from tests.support.ops import OpsTarget

LAMBDA_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def put_entries(ingest: IngestService) -> list[dict[str, Any]]:
    """Every PutEvents entry the service sends from now on, as boto3 parameters (a botocore hook)."""
    seen: list[dict[str, Any]] = []
    ingest.events().meta.events.register(
        "before-parameter-build.events.PutEvents", lambda params, **_: seen.extend(params["Entries"])
    )
    return seen


def test_ingest_hands_the_invocations_trace_header_to_eventbridge(
    service: IngestService,  # noqa: F811
    ops_target: OpsTarget,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an ingest invocation Lambda is tracing
    monkeypatch.setenv(TRACE_ENV, LAMBDA_HEADER)
    entries = put_entries(service)
    # When a signed webhook is put on the bus
    response = service.handle(webhook("generic", encode(sample("generic"))))
    # Then the entry carries the trace header, so EventBridge passes it to the EndHandler
    assert response.status == 200
    (entry,) = entries
    assert entry["TraceHeader"] == LAMBDA_HEADER
    assert len(ops_target.delivered()) == 1


def test_without_a_valid_trace_nothing_is_invented(
    service: IngestService,  # noqa: F811
    ops_target: OpsTarget,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no trace (a local run) and then a malformed one
    monkeypatch.delenv(TRACE_ENV, raising=False)
    entries = put_entries(service)
    service.handle(webhook("generic", encode(sample("generic"))))
    monkeypatch.setenv(TRACE_ENV, "Root=not-a-trace")
    service.handle(webhook("generic", encode(sample("generic"))))
    # Then no entry carries a TraceHeader (X-Ray would drop an invalid one anyway)
    assert [e.get("TraceHeader") for e in entries] == [None, None]
    assert len(ops_target.delivered()) == 2


@pytest.mark.parametrize(
    ("header", "passed"),
    [
        (LAMBDA_HEADER, True),
        ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Lineage=a87bd80c:1", True),
        ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1" + ";X=y" * 200, False),
        ("Parent=53995c3f42cd8ad8", False),
        ("", False),
    ],
)
def test_only_a_header_x_ray_accepts_is_passed_on(header: str, passed: bool) -> None:
    assert (current_trace_header({TRACE_ENV: header}) == header) is passed


def test_every_function_on_the_path_is_traced() -> None:
    # Given the template as SAM transforms it
    resources = sam_transform(load_template(), {"Stage": "sandbox"})["Resources"]
    # Then the ingest functions and the EndHandler run with active tracing
    for name in ("IngestFunction", "EndHandler", "FollowUpFunction"):
        assert resources[name]["Properties"]["TracingConfig"] == {"Mode": "Active"}, name


def test_the_saved_queries_cover_one_conversation_failures_and_slow_actions() -> None:
    # Given the template's Logs Insights query definitions
    resources = load_template()["Resources"]
    queries = {
        r["Properties"]["Name"]["Fn::Sub"].rsplit("/", 1)[1]: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Logs::QueryDefinition"
    }
    # Then the three are there, on the stack's own log groups
    assert set(queries) == {"one-conversation", "failures-by-reason", "slowest-actions"}
    groups = {"IngestLogGroup", "EndHandlerLogGroup", "FollowUpLogGroup"}
    for query in queries.values():
        assert {ref["Ref"] for ref in query["LogGroupNames"]} <= groups
    # And each filters on the fields the handler logs (checked against real lines in tests/integration/test_inspect.py)
    assert 'filter conversation_id = "' in queries["one-conversation"]["QueryString"]
    assert re.search(r'filter level = "ERROR"', queries["failures-by-reason"]["QueryString"])
    assert "pct(seconds, 95)" in queries["slowest-actions"]["QueryString"]
    assert "by action" in queries["slowest-actions"]["QueryString"]
