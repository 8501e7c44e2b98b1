"""Client-side pacing of CRM requests (``CrmRateLimitPerSecond``): the limiter, the HTTP client, the settings.

The limiter runs on an injected clock that only moves when the code under test sleeps, so every
assertion is about slots, waits and request counts, never about how long something took.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aftercall.crm.base import CrmCall, Customer, SummaryNote
from aftercall.crm.hubspot import HubSpotCrm
from aftercall.crm.limiter import RateLimiter, share
from aftercall.deadline import Deadline
from aftercall.errors import ConfigurationError, CrmUnavailableError
from aftercall.handler import build_crm
from aftercall.settings import EndHandlerSettings
from tests.support.events import CUSTOMER_PHONE
from tests.support.stack import HandlerPeers, unique

CONTACT_SEARCH = "/crm/v3/objects/contacts/search"
ENV = {"STAGE": "sandbox", "IDEMPOTENCY_TABLE": "t", "CRM_SECRET_ID": "aftercall/sandbox/crm"}


class FakeClock:
    """A monotonic clock that moves only when ``sleep`` is called; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- the limiter ----------------------------------------------------------------------------------


def test_a_fresh_bucket_lets_one_seconds_worth_through_then_one_per_interval() -> None:
    # Given 4 requests per second and a clock that stands still
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock)
    # When ten requests ask for a slot at the same instant
    waits = [limiter.reserve(max_wait=60) for _ in range(10)]
    # Then four go at once (the burst) and the others are queued a quarter second apart
    assert waits == [0, 0, 0, 0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]


def test_slots_refill_at_the_rate_and_never_beyond_the_burst() -> None:
    # Given an emptied bucket of 2 per second
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock)
    assert [limiter.reserve(60) for _ in range(2)] == [0, 0]
    # When one second passes, two slots are free again; after a long idle still only two
    clock.now += 1.0
    assert [limiter.reserve(60) for _ in range(3)] == [0, 0, 0.5]
    clock.now += 3600
    assert [limiter.reserve(60) for _ in range(3)] == [0, 0, 0.5]


def test_a_slot_beyond_max_wait_is_refused_and_nothing_is_taken() -> None:
    # Given one request per second, its one slot taken
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock)
    assert limiter.reserve(0) == 0
    # When a request can wait at most half a second
    # Then it is refused (None), and the refusal left the queue as it was
    assert limiter.reserve(0.5) is None
    assert limiter.reserve(0.5) is None
    assert limiter.reserve(5) == 1.0


def test_a_pause_holds_every_slot_then_resumes_one_interval_apart_without_a_burst() -> None:
    # Given 10 per second with a full bucket, and a 429 asking to wait 2 s
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    limiter.pause(2.0)
    # When requests ask for slots
    waits = [limiter.reserve(60) for _ in range(3)]
    # Then the first goes when the pause ends and the next ones 0.1 s apart (no burst after a pause)
    assert waits == pytest.approx([2.0, 2.1, 2.2])
    # And a shorter pause than what is already queued changes nothing
    limiter.pause(0.5)
    assert limiter.reserve(60) == pytest.approx(2.3)


def test_the_share_of_an_environment_is_the_limit_over_the_concurrency() -> None:
    # Given HubSpot's 100 requests per 10 s and a reserved concurrency of 5
    limiter = share(10, 5)
    # Then each environment paces itself to 2 requests per second; no limit means no limiter
    assert limiter is not None
    assert (limiter.rate, limiter.burst) == (2.0, 2.0)
    assert share(None, 5) is None
    assert share(0, 5) is None
    with pytest.raises(ValueError, match="concurrency"):
        share(10, 0)
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


# --- the HTTP client against the fake HubSpot --------------------------------------------------------


def _note() -> SummaryNote:
    return SummaryNote(
        conversation_id=unique("conv"),
        customer=Customer(phone=CUSTOMER_PHONE, email=None),
        occurred_at=datetime(2026, 11, 25, 9, 14, 50, tzinfo=UTC),
        summary={"topic": "billing"},
    )


def _paced(stack: HandlerPeers, rate: float) -> tuple[HubSpotCrm, FakeClock]:
    clock = FakeClock()
    hubspot = stack.hubspot(limiter=RateLimiter(rate, clock=clock), sleep=clock.sleep)
    return hubspot, clock


def test_every_request_waits_for_its_slot(stack: HandlerPeers) -> None:
    # Given an adapter paced to 2 requests per second (its clock moves only when it sleeps)
    hubspot, clock = _paced(stack, 2)
    # When three summaries are logged (a contact search, then a note each: four requests)
    for _ in range(3):
        hubspot.log_summary(_note(), CrmCall(Deadline.after(30)))
    # Then the first two went at once and each later one waited half a second for its slot
    assert len(stack.crm.requests) == 4
    assert {r.status for r in stack.crm.requests} == {200, 201}
    assert clock.sleeps == [0.5, 0.5]


def test_a_429_pauses_the_environment_for_retry_after_with_jitter(stack: HandlerPeers) -> None:
    # Given a paced adapter, and a CRM that rate-limits the first contact search asking for 2 s
    hubspot, clock = _paced(stack, 100)
    stack.crm.add_fault("rate_limit", path=CONTACT_SEARCH, retry_after="2", times=1)
    # When a summary is logged
    hubspot.log_summary(_note(), CrmCall(Deadline.after(30)))
    # Then the retry waited out Retry-After plus at most a fifth of it, and succeeded
    assert [r.status for r in stack.crm.requests_to("POST", CONTACT_SEARCH)] == [429, 200]
    pause, note_slot = clock.sleeps
    assert 2.0 <= pause <= 2.4
    # And the note after it went one interval later, not in a burst
    assert note_slot == pytest.approx(0.01)
    assert len(stack.crm.requests) == 3


def test_a_slot_past_the_deadline_gives_up_for_a_retry_without_sending(stack: HandlerPeers) -> None:
    # Given one request per second, its slot just taken by another conversation
    hubspot, _ = _paced(stack, 1)
    assert hubspot.http.limiter is not None
    hubspot.http.limiter.reserve(0)
    # When a summary must be written with one second left in the invocation
    # Then it gives up (a Lambda retry comes later) and sends nothing
    with pytest.raises(CrmUnavailableError, match="rate limit"):
        hubspot.log_summary(_note(), CrmCall(Deadline.after(1.0)))
    assert stack.crm.requests == []


# --- settings ------------------------------------------------------------------------------------------


def test_the_rate_limit_is_shared_out_over_the_reserved_concurrency() -> None:
    # Given the template's CrmRateLimitPerSecond (10) and ReservedConcurrency (5)
    env = {**ENV, "CRM_BASE_URL": "https://crm.example", "RESERVED_CONCURRENCY": "5"}
    crm = build_crm(EndHandlerSettings.from_env({**env, "CRM_RATE_LIMIT_PER_SECOND": "10"}))
    # Then the environment's CRM client paces itself to 2 requests per second
    assert isinstance(crm, HubSpotCrm)
    assert crm.http.limiter is not None
    assert crm.http.limiter.rate == 2.0
    # And 0 (the default) or no value means no client-side pacing
    for value in ("0", ""):
        unpaced = build_crm(EndHandlerSettings.from_env({**env, "CRM_RATE_LIMIT_PER_SECOND": value}))
        assert isinstance(unpaced, HubSpotCrm)
        assert unpaced.http.limiter is None


@pytest.mark.parametrize("value", ["fast", "-1", "inf", "nan"])
def test_a_rate_limit_that_is_not_a_number_of_requests_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="CRM_RATE_LIMIT_PER_SECOND"):
        EndHandlerSettings.from_env({**ENV, "CRM_RATE_LIMIT_PER_SECOND": value})
