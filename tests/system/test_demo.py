"""``make demo`` (``aftercall demo``) tells the story it claims, end to end.

The demo once broke silently because nothing ran it. Here it runs as a user runs it (the
``aftercall`` command, in a process of its own, on its own local stack), with fewer calls in part 2
so it takes seconds rather than a minute, and each claim it prints is checked against what it printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CALLS = 10
#: The demo's sample events (ops/aftercall_ops/operations/demo.py SAMPLES), read from events/.
SAMPLES = {
    name: json.loads((ROOT / "events" / f"{name}.json").read_text())["detail"]
    for name in ("inbound_support_ticket", "outbound_sales_disposition", "minimal_valid")
}
PLATFORMS = ("vapi", "retell", "elevenlabs", "generic", "connect")


@pytest.fixture(scope="module")
def story() -> str:
    """One run of ``aftercall demo --calls 10``; its exit code must be 0 (every check it makes held)."""
    result = subprocess.run(  # noqa: S603 - our own command, fixed arguments
        [sys.executable, "-m", "aftercall_ops.cli", "demo", "--calls", str(CALLS)],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "110"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return result.stdout


def _part(story: str, number: int) -> str:
    """The text of part ``number`` of the story (parts start with ``== N.``)."""
    start = story.index(f"== {number}. ")
    following = story.find(f"== {number + 1}. ", start)
    return story[start : following if following != -1 else None]


def test_the_sample_events_reach_the_crm_and_the_invalid_one_waits_in_the_queue(story: str) -> None:
    # Given part 1 of the story: the samples emitted with `aftercall emit`
    part = _part(story, 1)
    # Then the bus accepted all four (three valid, one invalid)
    assert "4 of 4 event(s) accepted" in part
    # And each valid sample left exactly one note, the support call a ticket, the sales call its disposition
    for detail in SAMPLES.values():
        section = part[part.index(f"{detail['conversation_id']} ({detail['direction']}):") :]
        section = section[: section.find("\n\n")]
        assert len(re.findall(r"^  note \d+: Call summary", section, re.M)) == 1, section
        if detail.get("state", {}).get("support_needed"):
            assert re.search(r"^  ticket \d+: \[", section, re.M), section
        if detail["direction"] == "outbound":
            assert f"disposition: {detail['state']['disposition']} → lead status" in section
    # And `aftercall status` shows the invalid one refused by the function, with its reason
    assert "1 failed event(s) in the queue" in part
    assert "InvalidEventError" in part


def test_a_day_of_calls_with_an_outage_ends_exactly_once_after_the_replay(story: str) -> None:
    # Given part 2: a day of calls with duplicates, the CRM down for the afternoon, then a replay
    part = _part(story, 2)
    # Then the outage sent events to the failed-events queue after Lambda's retries
    sent = re.search(r"(\d+) events sent to the failed-events queue after \d+ retries", part)
    assert sent is not None, part
    assert int(sent[1]) > 0
    # And the replay handed every one of them back, none failing again
    replayed = re.search(r"^invoke: (\d+) replayed, 0 failed again", part, re.M)
    assert replayed is not None, part
    assert int(replayed[1]) > 0
    # And every conversation has exactly one note, nothing is left in the queue, no problem is reported
    emitted = re.search(rf"emitted {CALLS} events for (\d+) conversations", part)
    notes = re.search(r"CRM: (\d+) notes", part)
    assert emitted is not None, part
    assert notes is not None, part
    assert notes[1] == emitted[1]
    assert "failed-events queue: 0" in part
    assert "exactly once: 0 conversations lost, 0 duplicated, failed-events queue empty" in part
    assert "PROBLEM" not in part


def test_every_agent_platform_reaches_the_crm_through_ingest(story: str) -> None:
    # Given part 3: one signed webhook per platform to the ingest URL, and a Connect event
    part = _part(story, 3)
    # Then each was accepted and ended as exactly one CRM note
    for platform in PLATFORMS:
        assert re.search(rf"^  {platform}\s+\S+: 1 CRM note$", part, re.M), part
    assert "demo finished" in story
