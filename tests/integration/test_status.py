"""``aftercall status``: depth, oldest message, counts by error and shape, recent failures, all on moto."""

from __future__ import annotations

import json

import pytest

from aftercall_ops.operations.status import status
from aftercall_ops.operations.targets import TargetError
from tests.support.events import conversation_ended
from tests.support.ops import OpsTarget, eventbridge_dlq_attributes, legacy_dlq_attributes, on_failure_record


def test_an_empty_queue_says_so(ops_target: OpsTarget) -> None:
    report = status(ops_target.sqs(), ops_target.queue_url)
    assert report.empty
    assert (report.depth, report.peeked, report.oldest_age_seconds) == (0, 0, None)
    assert report.complete


def test_counts_by_shape_and_error_and_the_newest_failures_first(ops_target: OpsTarget) -> None:
    # Given three OnFailure records, one delivery failure, one legacy message and one unreadable one
    ops_target.seed_on_failure(3)
    ops_target.send(json.dumps(conversation_ended()), eventbridge_dlq_attributes())
    ops_target.send(json.dumps(conversation_ended()), legacy_dlq_attributes())
    newest = conversation_ended()
    ops_target.send(json.dumps(on_failure_record(newest, error_type="EndFunctionError", condition="RetriesExhausted")))
    ops_target.send("not json")
    # When status peeks at the queue
    report = status(ops_target.sqs(), ops_target.queue_url, recent=3)
    # Then depth, shapes and error kinds are counted over every message
    assert (report.depth, report.peeked, report.complete) == (7, 7, True)
    assert report.by_shape == {"eventbridge-dlq": 1, "lambda-on-failure": 4, "lambda-dlq": 1, "unrecognised": 1}
    assert report.by_error == {
        "ActionsFailedError [RetriesExhausted]": 3,
        "SDK_CLIENT_ERROR [MaximumRetryAttemptsExhausted]": 1,
        "200": 1,
        "EndFunctionError [RetriesExhausted]": 1,
        "unrecognised message": 1,
    }
    # And the oldest message's age is known, and the most recent failures come newest first
    assert report.oldest_age_seconds is not None
    assert report.oldest_age_seconds >= 0
    assert len(report.recent) == 3
    sent = [message.sent_at for message in report.recent]
    assert sent == sorted(sent, reverse=True)  # type: ignore[type-var]


def test_status_consumes_nothing(ops_target: OpsTarget) -> None:
    # Given five failures
    ops_target.seed_on_failure(5)
    # When status runs twice
    first = status(ops_target.sqs(), ops_target.queue_url)
    second = status(ops_target.sqs(), ops_target.queue_url)
    # Then both saw all five, and all five are still there and visible
    assert first.peeked == second.peeked == 5
    assert ops_target.depth() == (5, 0)


def test_peek_can_be_limited_and_then_says_the_counts_are_partial(ops_target: OpsTarget) -> None:
    ops_target.seed_on_failure(12)
    report = status(ops_target.sqs(), ops_target.queue_url, peek=4)
    assert (report.depth, report.peeked, report.complete) == (12, 4, False)
    assert ops_target.depth() == (12, 0)


def test_depth_only_reads_no_message(ops_target: OpsTarget) -> None:
    ops_target.seed_on_failure(2)
    report = status(ops_target.sqs(), ops_target.queue_url, peek=0)
    assert (report.depth, report.peeked, report.by_shape) == (2, 0, {})


def test_a_missing_queue_is_a_clear_error(ops_target: OpsTarget) -> None:
    missing = ops_target.queue_url + "-gone"
    with pytest.raises(TargetError, match=r"the queue .*-gone does not exist \(check --queue-url / --stack"):
        status(ops_target.sqs(), missing)
