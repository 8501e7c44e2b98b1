"""``aftercall emit --from``: saved vendor payloads become the events the webhook would have produced.

And :func:`ingest_demo_webhooks`, the ``make demo`` hook: one signed webhook per platform through
the real ingest service onto a bus on the moto server, then through the real EndHandler.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aftercall import aws
from aftercall.ingest.common import Normalised
from aftercall.ingest.normalise import normalise
from aftercall.ingest.service import IngestService
from aftercall.settings import IngestSettings
from aftercall_ops.cli import app
from aftercall_ops.operations import emit, vendor_import
from aftercall_ops.operations.emit import EmitInputError, RawItem
from end_function import end_function
from tests.support.events import CUSTOMER_PHONE
from tests.support.lambda_context import lambda_context
from tests.support.ops import OpsTarget
from tests.support.stack import HandlerPeers, unique

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "events" / "vendor"
PUBLISHED = ROOT / "tests" / "fixtures" / "vendor-payloads"
SECRETS = {"vapi": "v-secret", "retell": "r-secret", "elevenlabs": "e-secret", "generic": "g-secret"}


def mapped(platform: str, payload: Any) -> dict[str, Any]:
    result = normalise(platform, payload, "sandbox")
    assert isinstance(result, Normalised)
    return result.detail


# ---------------------------------------------------------------------------------------------- reading and mapping


@pytest.mark.parametrize("platform", vendor_import.VENDOR_PLATFORMS)
def test_each_saved_sample_maps_as_the_webhook_would(platform: str) -> None:
    # Given the platform's sample saved as a file
    path = SAMPLES / vendor_import.SAMPLE_FILES[platform]
    # When it is read for emit --from
    imported = vendor_import.read_vendor_files(platform, [path], "sandbox")
    # Then there is one detail, exactly what ingest maps the payload to, labelled with the file
    (item,) = imported.items
    assert item.origin == str(path)
    assert item.value == mapped(platform, json.loads(path.read_text()))
    assert imported.skipped == []


def test_a_log_of_several_events_keeps_the_call_ends_and_lists_the_rest(tmp_path: Path) -> None:
    # Given a Retell log saved as JSON lines: a call_started, a call_ended and the call_analyzed
    analyzed = json.loads((SAMPLES / "retell_call_analyzed.json").read_text())
    call = analyzed["call"]
    lines = [{"event": "call_started", "call": call}, {"event": "call_ended", "call": call}, analyzed]
    path = tmp_path / "retell.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    # When it is read
    imported = vendor_import.read_vendor_files("retell", [path], "live")
    # Then only call_analyzed becomes a detail (for the live stage), and the others are named as skipped
    (item,) = imported.items
    assert item.value["environment"] == "live"
    assert item.origin == f"{path} line 3"
    assert [note.split(":")[0] for note in imported.skipped] == [f"{path} line 1", f"{path} line 2"]


def test_a_file_that_is_not_json_is_refused_with_its_position() -> None:
    # The Connect sample exactly as published has a trailing comma
    with pytest.raises(EmitInputError) as caught:
        vendor_import.read_vendor_files("connect", [PUBLISHED / "connect_disconnected.jsonc"], "sandbox")
    assert "line 37, column 9" in str(caught.value)


def test_every_payload_that_cannot_be_mapped_is_listed_and_nothing_is_kept() -> None:
    good = json.loads((SAMPLES / "vapi_end_of_call_report.json").read_text())
    no_call = json.loads(json.dumps(good))
    del no_call["message"]["call"]
    items = [RawItem("a", good), RawItem("b", no_call), RawItem("c", {"message": "nope"})]
    with pytest.raises(EmitInputError) as caught:
        vendor_import.convert("vapi", items, "sandbox")
    assert caught.value.problems == [
        "b: missing_field: message.call.id is missing or empty",
        "c: invalid_field: message is not a JSON object",
    ]


def test_from_needs_an_environment_and_a_vendor_platform() -> None:
    with pytest.raises(EmitInputError, match="--environment"):
        vendor_import.convert("vapi", [], None)
    with pytest.raises(EmitInputError, match="--from must be one of"):
        vendor_import.convert("generic", [], "sandbox")


def test_a_saved_payload_reaches_the_bus_as_the_same_event_the_webhook_put(ops_target: OpsTarget) -> None:
    # Given an ElevenLabs payload that went through the webhook once ...
    payload = json.loads((SAMPLES / "elevenlabs_post_call_transcription.json").read_text())
    secret = unique("aftercall/ingest")
    aws.client("secretsmanager").create_secret(Name=secret, SecretString=json.dumps(SECRETS))
    service = IngestService(IngestSettings("sandbox", ops_target.bus, secret_id=secret))
    body = json.dumps(payload).encode()
    assert service.handle(vendor_import.signed_request("elevenlabs", body, SECRETS["elevenlabs"])).status == 200
    (via_webhook,) = ops_target.delivered()
    # ... when the same payload is replayed from a file with emit --from
    imported = vendor_import.convert("elevenlabs", [RawItem("saved", payload)], "sandbox")
    entries = emit.prepare(imported.items, bus=ops_target.bus, source=None, environment="sandbox")
    report = emit.send(ops_target.events(), entries)
    # Then the bus gets an event with the identical detail (so the handler deduplicates the two)
    assert report.ok
    (via_emit,) = ops_target.delivered()
    assert via_emit["detail"] == via_webhook["detail"]
    assert via_emit["source"] == via_webhook["source"]


# ---------------------------------------------------------------------------------------------- the demo hook


def test_the_demo_sends_one_signed_webhook_per_platform_through_ingest(
    ops_target: OpsTarget, stack: HandlerPeers
) -> None:
    # Given a bus and signing secrets
    # When the demo runs every platform's sample through the real ingest service
    results = vendor_import.ingest_demo_webhooks(
        ops_target.bus, SECRETS, failed_events_queue_url=ops_target.queue_url, customer_phone=CUSTOMER_PHONE
    )
    # Then each was accepted and its event is what reached the bus
    assert [result.platform for result in results] == ["vapi", "retell", "elevenlabs", "generic", "connect"]
    assert {result.status for result in results} == {200}
    delivered = {event["id"]: event for event in ops_target.delivered()}
    assert sorted(delivered) == sorted(str(result.event_id) for result in results)
    for result in results:
        assert delivered[str(result.event_id)]["detail"] == result.detail
        assert result.detail is not None
        assert result.detail["conversation_id"] == result.conversation_id
        # every sample is made a call with the CRM's known customer
        assert CUSTOMER_PHONE in (result.detail.get("caller"), result.detail.get("callee"))
    # And the EndHandler turns each into exactly one CRM note
    runtime = stack.runtime()
    for event in delivered.values():
        assert runtime.handle(event, lambda_context(), end_function)["status"] == "processed"
    for result in results:
        assert len(stack.notes_for(str(result.conversation_id))) == 1
    # And the temporary secret it stored for the run is gone
    names = [s["Name"] for s in aws.client("secretsmanager").list_secrets()["SecretList"]]
    assert not any(name.startswith("aftercall-demo/ingest-") for name in names)


def test_the_demo_uses_an_existing_secret_and_fresh_ids_each_run(ops_target: OpsTarget) -> None:
    secret = unique("aftercall/ingest")
    aws.client("secretsmanager").create_secret(Name=secret, SecretString=json.dumps(SECRETS))
    first = vendor_import.ingest_demo_webhooks(ops_target.bus, secret, platforms=["generic"])
    second = vendor_import.ingest_demo_webhooks(ops_target.bus, secret, platforms=["generic"])
    assert first[0].conversation_id != second[0].conversation_id
    assert len(ops_target.delivered()) == 2
    same = vendor_import.ingest_demo_webhooks(ops_target.bus, secret, platforms=["vapi"], unique=False)
    assert same[0].conversation_id == "3f1d2c4b-8a7e-4f60-9b1a-2d5c6e7f8a90"


def test_the_demo_reports_a_platform_the_secret_lacks(ops_target: OpsTarget) -> None:
    results = vendor_import.ingest_demo_webhooks(ops_target.bus, {"generic": "g"}, platforms=["retell"])
    (result,) = results
    assert (result.status, result.response["error"]) == (503, "platform_not_configured")
    assert result.detail is None
    assert ops_target.delivered() == []


# ---------------------------------------------------------------------------------------------- the CLI


def run(*args: str) -> Any:
    """The CLI in-process, as an operator runs it."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"}, catch_exceptions=False)


def test_emit_from_a_vendor_file_puts_the_mapped_event_on_the_stacks_bus(ops_target: OpsTarget) -> None:
    # Given a Vapi end-of-call report saved from the vendor's logs
    path = SAMPLES / "vapi_end_of_call_report.json"
    # When it is emitted with --from vapi against the stack
    result = run("emit", "--stack", ops_target.stack_name, "--from", "vapi", str(path), "--json")
    # Then one event was accepted, carrying exactly what ingest maps the payload to (stage from the stack)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["accepted"] == 1
    (event,) = ops_target.delivered()
    assert event["detail"] == mapped("vapi", json.loads(path.read_text()))


def test_emit_from_lists_skipped_payloads_and_refuses_broken_files(ops_target: OpsTarget, tmp_path: Path) -> None:
    analyzed = json.loads((SAMPLES / "retell_call_analyzed.json").read_text())
    path = tmp_path / "log.json"
    path.write_text(json.dumps([{"event": "call_started", "call": analyzed["call"]}, analyzed]))
    result = run("emit", "--stack", ops_target.stack_name, "--from", "retell", str(path))
    assert result.exit_code == 0, result.stderr
    assert "skipped" in result.stderr
    assert "call_started" in result.stderr
    assert len(ops_target.delivered()) == 1
    # A file that is not JSON (the Connect sample as published) is refused, nothing sent
    broken = run(
        "emit", "--stack", ops_target.stack_name, "--from", "connect", str(PUBLISHED / "connect_disconnected.jsonc")
    )
    assert broken.exit_code == 2
    assert "line 37, column 9" in broken.stderr
    assert ops_target.delivered() == []


def test_emit_from_only_takes_vendor_platforms(ops_target: OpsTarget) -> None:
    result = CliRunner().invoke(
        app,
        [
            "emit",
            "--stack",
            ops_target.stack_name,
            "--from",
            "generic",
            str(SAMPLES / "generic_conversation_ended.json"),
        ],
    )
    assert result.exit_code == 2
    assert "--from" in result.stderr
