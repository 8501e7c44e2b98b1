"""``aftercall emit``'s logic: reading inputs, checking entries, batching, retrying, reporting.

Sending goes to the moto server (a rule copies what reaches the bus into a "delivered" queue);
FailedEntries are injected by a real HTTP proxy in front of it, so botocore parses real answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aftercall.models.event import MAX_EVENT_BYTES
from aftercall_ops.operations import emit
from aftercall_ops.operations.emit import EmitInputError, RawItem, RetryPolicy
from tests.support.events import conversation_detail, conversation_ended
from tests.support.ops import CallCounter, FaultProxy, OpsTarget

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


def _entries(target: OpsTarget, count: int, **kwargs: Any) -> list[emit.PreparedEntry]:
    items = [RawItem(f"item {index}", conversation_detail()) for index in range(count)]
    return emit.prepare(items, bus=target.bus, source=None, environment="sandbox", **kwargs)


# ---------------------------------------------------------------------------------------------- reading


def test_a_file_may_hold_an_envelope_a_detail_or_a_list(tmp_path: Path) -> None:
    # Given three files: one event envelope, one bare detail, a list of both
    envelope, detail = conversation_ended(), conversation_detail()
    (tmp_path / "one.json").write_text(json.dumps(envelope))
    (tmp_path / "detail.json").write_text(json.dumps(detail))
    (tmp_path / "list.json").write_text(json.dumps([envelope, detail]))
    # When they are read
    items = [item for name in ("one", "detail", "list") for item in emit.read_file(tmp_path / f"{name}.json")]
    # Then every value is there, each labelled with where it came from
    assert [item.origin for item in items] == [
        str(tmp_path / "one.json"),
        str(tmp_path / "detail.json"),
        f"{tmp_path / 'list.json'}[0]",
        f"{tmp_path / 'list.json'}[1]",
    ]
    assert items[0].value == envelope


def test_jsonl_files_are_read_line_by_line(tmp_path: Path) -> None:
    # Given a .jsonl file with a blank line
    path = tmp_path / "calls.jsonl"
    path.write_text(json.dumps(conversation_detail()) + "\n\n" + json.dumps(conversation_detail()) + "\n")
    # When it is read
    items = emit.read_file(path)
    # Then each non-blank line is one item, numbered as in the file
    assert [item.origin for item in items] == [f"{path} line 1", f"{path} line 3"]


def test_malformed_json_lines_are_reported_with_their_line_numbers() -> None:
    # Given JSON lines where lines 2 and 4 are broken
    lines = [json.dumps(conversation_detail()), "{not json", json.dumps(conversation_detail()), '{"a": 1,}']
    # When they are read
    with pytest.raises(EmitInputError) as caught:
        emit.read_lines(lines)
    # Then both bad lines are named, and nothing is returned
    assert caught.value.problems[0].startswith("stdin line 2: invalid JSON at column 2")
    assert caught.value.problems[1].startswith("stdin line 4: invalid JSON")
    assert "nothing was sent" in str(caught.value)


def test_a_broken_file_and_a_missing_file_give_specific_errors(tmp_path: Path) -> None:
    # Given a file with a syntax error on its third line
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "a": 1,\n  "b": oops\n}')
    # When it, and a file that does not exist, are read
    with pytest.raises(EmitInputError, match=r"broken.json: invalid JSON at line 3, column 8"):
        emit.read_file(broken)
    with pytest.raises(EmitInputError, match=r"missing.json: no such file"):
        emit.read_file(tmp_path / "missing.json")
    with pytest.raises(EmitInputError, match=r"is a directory"):
        emit.read_file(tmp_path)


# ---------------------------------------------------------------------------------------------- checking


def test_environment_is_filled_in_when_missing_and_enforced_when_present() -> None:
    # Given one detail without an environment and one for the live stage
    without = conversation_detail()
    del without["environment"]
    live = conversation_detail(environment="live")
    # When they are prepared for the sandbox
    (entry,) = emit.prepare([RawItem("a", without)], bus="b", source=None, environment="sandbox")
    with pytest.raises(EmitInputError) as caught:
        emit.prepare([RawItem("b", live)], bus="b", source=None, environment="sandbox")
    # Then the first gets environment sandbox and the second is refused, naming both environments
    assert json.loads(entry.entry["Detail"])["environment"] == "sandbox"
    assert "b: detail.environment is 'live' but the target is 'sandbox'" in caught.value.problems[0]


def test_without_an_environment_from_anywhere_a_detail_lacking_one_is_refused() -> None:
    detail = conversation_detail()
    del detail["environment"]
    with pytest.raises(EmitInputError, match=r"detail\.environment is missing; pass --environment"):
        emit.prepare([RawItem("x", detail)], bus="b", source=None, environment=None)


def test_entries_carry_the_source_detail_type_and_bus() -> None:
    # Given an envelope with its own source, and a bare detail
    envelope = conversation_ended(envelope={"source": "acme.voice", "resources": ["arn:aws:connect:x"]})
    items = [RawItem("env", envelope), RawItem("det", conversation_detail())]
    # When prepared without --source, then with one
    own, default = emit.prepare(items, bus="bus-1", source=None, environment="sandbox")
    forced = emit.prepare(items, bus="bus-1", source="forced.src", environment="sandbox")
    # Then the envelope's own source is kept, a bare detail gets the template default, --source wins
    assert own.entry["Source"] == "acme.voice"
    assert own.entry["Resources"] == ["arn:aws:connect:x"]
    assert default.entry["Source"] == emit.DEFAULT_SOURCE
    assert {entry.entry["Source"] for entry in forced} == {"forced.src"}
    assert {entry.entry["DetailType"] for entry in forced} == {"Conversation Ended"}
    assert {entry.entry["EventBusName"] for entry in forced} == {"bus-1"}


def test_other_detail_types_and_non_objects_are_refused_all_at_once() -> None:
    items = [
        RawItem("a", conversation_ended(envelope={"detail-type": "Call Started"})),
        RawItem("b", [1, 2]),
        RawItem("c", conversation_ended(envelope={"detail": "text"})),
    ]
    with pytest.raises(EmitInputError) as caught:
        emit.prepare(items, bus="b", source=None, environment="sandbox")
    assert caught.value.problems == [
        "a: detail-type is 'Call Started'; aftercall only emits 'Conversation Ended' events",
        "b: expected a JSON object (an event or its detail), got list",
        "c: the event's detail must be a JSON object",
    ]


def test_validate_refuses_details_the_end_function_would_reject() -> None:
    bad = conversation_detail(caller="555-CALL-ME")
    with pytest.raises(EmitInputError, match=r"x: not a valid detail: caller: .*E.164"):
        emit.prepare([RawItem("x", bad)], bus="b", source=None, environment="sandbox", validate=True)


def test_entry_size_is_computed_as_eventbridge_computes_it() -> None:
    # Given an entry with multi-byte characters, a Time and two resources
    entry = {
        "Source": "src",
        "DetailType": "Conversation Ended",
        "Detail": '{"n":"é"}',
        "Time": "x",
        "Resources": ["r1", "r22"],
    }
    # Then Time counts 14 bytes and every string its UTF-8 bytes (é is two)
    assert emit.entry_size(entry) == 14 + 3 + 18 + len('{"n":"é"}'.encode()) + 2 + 3


def test_an_entry_over_256_kb_is_refused_with_its_size_before_anything_is_sent() -> None:
    # Given a detail whose state pushes the entry just over EventBridge's limit
    big = conversation_detail(state={"transcript": "x" * MAX_EVENT_BYTES})
    small = conversation_detail()
    # When both are prepared
    with pytest.raises(EmitInputError) as caught:
        emit.prepare([RawItem("small", small), RawItem("big", big)], bus="b", source=None, environment="sandbox")
    # Then the run is refused as a whole, naming the entry, its size and the limit
    (problem,) = caught.value.problems
    assert problem.startswith("big: entry is ")
    assert f"over EventBridge's {MAX_EVENT_BYTES:,}-byte limit" in problem
    assert big["conversation_id"] in problem


def test_batches_hold_at_most_ten_entries_and_256_kb() -> None:
    # Given 25 small entries and then three of about 100 KB
    small = [RawItem(str(i), conversation_detail()) for i in range(25)]
    large = [RawItem(f"L{i}", conversation_detail(state={"t": "x" * 100_000})) for i in range(3)]
    entries = emit.prepare(small + large, bus="b", source=None, environment="sandbox")
    # When they are batched
    sizes = [len(batch) for batch in emit.batches(entries)]
    # Then no batch exceeds 10 entries or 256 KB
    assert sizes == [10, 10, 7, 1]  # the third batch takes two large entries, the third large one waits
    for batch in emit.batches(entries):
        assert len(batch) <= 10
        assert sum(entry.size for entry in batch) <= MAX_EVENT_BYTES
    assert sum(sizes) == 28


# ---------------------------------------------------------------------------------------------- sending


def test_events_are_sent_ten_per_put_events_call_and_reach_the_rule(ops_target: OpsTarget) -> None:
    # Given 25 valid events
    entries = _entries(ops_target, 25)
    counter = CallCounter()
    client = counter.attach(ops_target.events())
    # When they are sent
    report = emit.send(client, entries, concurrency=3)
    # Then three PutEvents calls carried them all, and the rule saw every one
    assert report.ok
    assert report.accepted == 25
    assert counter["PutEvents"] == 3
    assert report.api_calls == 3
    delivered = ops_target.delivered()
    assert len(delivered) == 25
    assert {event["detail-type"] for event in delivered} == {"Conversation Ended"}
    assert {event["detail"]["conversation_id"] for event in delivered} == {e.conversation_id for e in entries}


def test_failed_entries_are_retried_until_accepted(ops_target: OpsTarget, fault_proxy: FaultProxy) -> None:
    # Given a bus that throttles every second entry of the first two answers
    fault_proxy.fail_entries(2, "ThrottlingException")
    entries = _entries(ops_target, 10)
    # When ten events are sent through it
    report = emit.send(ops_target.events(fault_proxy.url), entries, policy=FAST_RETRY)
    # Then every event was accepted in the end, the retried ones are counted, and none arrived twice
    assert report.ok
    assert report.accepted == 10
    assert report.retried_entries == 5
    assert report.api_calls == 3  # 10 entries, then the 5 throttled, then the 2 throttled again
    assert len(ops_target.delivered()) == 10


def test_entries_still_failing_after_the_retries_are_each_reported(
    ops_target: OpsTarget, fault_proxy: FaultProxy
) -> None:
    # Given a bus that keeps throttling the events of two conversations
    entries = _entries(ops_target, 4)
    fault_proxy.fail_conversations([e.conversation_id or "" for e in entries[1::2]], "ThrottlingException")
    # When four events are sent with at most 4 attempts
    report = emit.send(ops_target.events(fault_proxy.url), entries, policy=FAST_RETRY)
    # Then the two never accepted are reported with origin, conversation, code and attempts
    assert not report.ok
    assert report.accepted == 2
    assert [(f.origin, f.error_code, f.attempts) for f in report.failures] == [
        ("item 1", "ThrottlingException", 4),
        ("item 3", "ThrottlingException", 4),
    ]
    assert report.failures[0].conversation_id == entries[1].conversation_id


def test_permanent_entry_errors_are_not_retried(ops_target: OpsTarget, fault_proxy: FaultProxy) -> None:
    # Given a bus that refuses the first entry of every batch as malformed
    fault_proxy.permanent_entry("MalformedDetail")
    # When 3 events are sent
    report = emit.send(ops_target.events(fault_proxy.url), _entries(ops_target, 3), policy=FAST_RETRY)
    # Then that entry fails after one attempt, the rest are accepted
    assert report.accepted == 2
    assert [(f.origin, f.error_code, f.attempts) for f in report.failures] == [("item 0", "MalformedDetail", 1)]
    assert report.api_calls == 1


def test_a_missing_bus_stops_the_run_after_one_call(ops_target: OpsTarget) -> None:
    # Given entries for a bus that does not exist
    items = [RawItem(str(i), conversation_detail()) for i in range(30)]
    entries = emit.prepare(items, bus="no-such-bus", source=None, environment="sandbox")
    counter = CallCounter()
    # When they are sent one batch at a time
    report = emit.send(counter.attach(ops_target.events()), entries, concurrency=1)
    # Then the first call's error stops the run: every entry is reported, with the reason
    assert counter["PutEvents"] == 1
    assert report.accepted == 0
    assert len(report.failures) == 30
    assert "no-such-bus does not exist" in report.failures[0].error_message
    assert report.failures[-1].error_message.startswith("not sent: ")


def test_generated_conversations_follow_the_ratios(ops_target: OpsTarget) -> None:
    # Given 200 generated conversations, a tenth of them duplicates
    items = emit.generated(200, seed=3, duplicates=0.1, invalid=0.0, environment="sandbox")
    entries = emit.prepare(items, bus=ops_target.bus, source=None, environment="sandbox", validate=True)
    # Then they are valid, and some conversation ids repeat
    ids = [entry.conversation_id for entry in entries]
    assert len(ids) == 200
    assert 0 < len(ids) - len(set(ids)) < 40


def test_a_dry_run_counts_without_sending(ops_target: OpsTarget) -> None:
    report = emit.dry_run(_entries(ops_target, 21))
    assert (report.dry_run, report.total, report.batches, report.accepted) == (True, 21, 3, 0)
    assert ops_target.delivered() == []
