"""``aftercall try``: the End function on sample events, no AWS, no stack, no CRM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from aftercall_ops.cli import app
from tests.support.events import outbound_call_ended, support_call_ended

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted(str(p) for p in (ROOT / "events").glob("*.json"))


def run(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(app, ["try", *args], env={"COLUMNS": "200"}, input=stdin, catch_exceptions=False)


def write(tmp_path: Path, name: str, value: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(value) if not isinstance(value, str) else value, encoding="utf-8")
    return str(path)


def test_the_sample_events_plan_and_the_invalid_one_is_refused_with_the_handlers_reason() -> None:
    # Given the repo's sample events (one of them breaks the contract on purpose)
    # When they are tried with the default End function
    result = run(*SAMPLES)
    # Then the valid ones are planned with the HubSpot requests they would make
    assert "conv-20261124-inbound-0001" in result.stdout
    assert "POST /crm/v3/objects/tickets" in result.stdout
    assert "PATCH /crm/v3/objects/contacts/501" in result.stdout
    # And the invalid one is refused naming each bad field, so the exit code is 1
    assert "invalid_missing_fields.json" in result.stdout
    assert "detail.conversation_id: Field required" in result.stdout
    assert "3 of 4 event(s) planned cleanly" in result.stdout
    assert result.exit_code == 1
    # And the callers' numbers never appear unmasked
    assert "+14155550007" not in result.stdout
    assert "4155550007" not in result.stdout  # nor as the national number HubSpot is searched by
    assert "******0007" in result.stdout


def test_valid_events_exit_0_and_json_lists_every_action_with_its_requests(tmp_path: Path) -> None:
    # Given two valid events in one file
    events = [support_call_ended(), outbound_call_ended(state={"disposition": "interested"})]
    path = write(tmp_path, "two.json", events)
    # When they are tried with --json
    result = run(path, "--json")
    # Then every event planned cleanly and the exit code is 0
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [e["outcome"] for e in report["events"]] == ["planned", "planned"]
    hot_lead = {a["name"]: a for a in report["events"][1]["actions"]}
    assert list(hot_lead) == ["crm_summary", "disposition", "notification:team"]
    # And the notification's text is there as SNS would receive it
    (publish,) = hot_lead["notification:team"]["aws_calls"]
    assert publish["params"]["Subject"] == "Potential lead: interested"
    assert publish["params"]["Message"].startswith("Potential lead: interested\n\nconversation_id: ")


def test_an_error_in_the_end_function_shows_its_traceback_from_the_users_file(tmp_path: Path) -> None:
    # Given an End function with a bug on its third line
    source = (
        "def end_function(conv):\n"
        "    topic = conv.state.get('last_topic')\n"
        "    conv.actions.log_disposition(topic.lower() + '!')\n"
    )
    function = write(tmp_path, "buggy_end.py", source)
    event = write(tmp_path, "event.json", support_call_ended())
    # When it is tried
    result = run(event, "--function", f"{function}:end_function")
    # Then the error and the traceback through the user's line are shown, and the exit code is 1
    assert result.exit_code == 1
    assert "end_function raised" in result.stdout
    assert f'File "{function}", line 3, in end_function' in result.stdout
    assert "unknown disposition (a str of" in result.stdout
    assert "billing!" not in result.stdout  # the value is not echoed: it may be personal data
    assert "aftercall/testing/" not in result.stdout  # the traceback starts in the user's file


def test_a_function_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    # Given an event and a file without the named function
    event = write(tmp_path, "event.json", support_call_ended())
    function = write(tmp_path, "other.py", "def something_else(conv):\n    pass\n")
    # When it is tried with that name, Then the error names what the file defines, exit code 2
    result = run(event, "--function", f"{function}:end_function")
    assert result.exit_code == 2
    assert "defines no function 'end_function' (it has: something_else)" in result.stderr
    assert run(event, "--function", "missing.py:end_function").exit_code == 2


def test_vendor_payloads_are_mapped_as_ingest_maps_them() -> None:
    # Given Vapi's published end-of-call report sample
    sample = str(ROOT / "events" / "vendor" / "vapi_end_of_call_report.json")
    # When it is tried --from vapi
    result = run(sample, "--from", "vapi", "--json")
    # Then it was mapped to a Conversation Ended event and planned
    report = json.loads(result.stdout)
    assert report["events"][0]["outcome"] == "planned", report
    assert report["events"][0]["actions"][0]["name"] == "crm_summary"


def test_events_on_standard_input_are_tried() -> None:
    # Given one event as a JSON line on standard input
    line = json.dumps(support_call_ended()) + "\n"
    # When nothing else is given
    result = run("--json", stdin=line)
    # Then it is tried
    assert result.exit_code == 0
    assert json.loads(result.stdout)["events"][0]["origin"] == "stdin line 1"
