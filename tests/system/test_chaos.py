"""The chaos run, CI-sized: 200 conversations through the local stack while everything fails.

The scenario lives in ``aftercall_ops.operations.chaos`` (``bench/chaos.py`` runs it at 2,000): real
EndHandler processes with Lambda's async retries and timeouts, the fake HubSpot failing about 30%
of requests in every way it knows, a token rotation, duplicate emissions, then one replay. This
test checks the promise on what a client of the stack can see: the CRM's objects, the schedules,
the notifications, the queues and the idempotency table.
"""

from __future__ import annotations

import logging

from aftercall_ops.operations.chaos import FAULT_MIX, ChaosConfig, run

CONVERSATIONS = 200


def test_under_chaos_every_conversation_is_done_exactly_once_and_nothing_is_lost() -> None:
    # Given 200 conversations, 20% of them emitted twice (half of those at the same moment), a CRM
    # failing about 30% of requests, a token rotation midway, and a 4 s function timeout
    config = ChaosConfig(conversations=CONVERSATIONS, seed=2026)
    dispatcher_log = logging.getLogger("aftercall_ops.emulator")  # narrates every failed attempt: hundreds
    level = dispatcher_log.level
    dispatcher_log.setLevel(logging.CRITICAL)

    # When they all go through the local stack, the CRM recovers, and one `aftercall replay` runs
    try:
        report = run(config)
    finally:
        dispatcher_log.setLevel(level)

    # Then the chaos happened: every kind of CRM failure, 401s after the rotation, invocations
    # stopped at their deadline, failed attempts retried
    assert report.events_emitted == CONVERSATIONS + 40
    assert (report.duplicate_emissions, report.concurrent_duplicate_emissions) == (40, 20)
    for kind in FAULT_MIX:
        assert report.faults_injected.get(kind, 0) > 0, kind
    assert report.faults_injected["unauthorized"] > 0
    assert report.dispatcher["timeouts"] > 0
    assert report.dispatcher["failed_attempts"] > 0
    # And at every checkpoint each emitted conversation was processed, in the failed-events queue,
    # or in flight: none was ever lost
    assert len(report.checkpoints) >= 4
    assert {checkpoint.label: checkpoint.missing for checkpoint in report.checkpoints} == {
        checkpoint.label: [] for checkpoint in report.checkpoints
    }
    # And after the one replay pass the queue is empty, nothing is in flight, all are processed
    assert report.replay["exit_code"] == 0, report.replay
    assert (report.dlq_after_replay, report.in_flight_after_replay, report.unprocessed) == (0, 0, [])
    # And every conversation has exactly what the End function asked for: one note, its ticket,
    # disposition, follow-ups and notification; nothing twice, nothing missing
    assert report.problems == []
    assert report.effects == report.expected_effects
    assert report.effects["notes"] == CONVERSATIONS
    assert (report.duplicates, report.lost) == (0, 0)
    assert report.ok
