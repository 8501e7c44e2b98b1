"""The chaos run's configuration, plan (faults, waves of emissions, duplicates) and report."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aftercall_ops.generate import conversations
from aftercall_ops.operations.demo import HOT_LEADS

#: The kinds of CRM failure and their shares of the failing requests.
FAULT_MIX: Mapping[str, float] = {
    "rate_limit": 0.28,  # 429 with Retry-After
    "status": 0.24,  # 500, nothing applied
    "hang": 0.15,  # no answer within the client's read timeout; applied a little later
    "reset": 0.14,  # the connection is reset
    "after_commit_status": 0.14,  # applied, then 500
    # applied, then the answer trickles in a byte at a time: the invocation is still reading it when
    # Lambda stops it at its deadline, in the middle of the action
    "trickle": 0.05,
}
#: Powertools' idempotency records of whole conversations (``key_prefix`` in aftercall.handler).
CONVERSATION_RECORD_PREFIX = "aftercall.conversation#"
MARKER = re.compile(r"aftercall-(\S+?)(?:</p>|$|\s)")


@dataclass(frozen=True)
class ChaosConfig:
    """One chaos run. Durations are seconds; ``fault_rate`` is the share of CRM requests that fail."""

    conversations: int = 2000
    seed: int = 2026
    duplicate_share: float = 0.2
    concurrent_share: float = 0.5  # of the duplicates: emitted in the same batch as the original
    fault_rate: float = 0.3
    function_timeout: float = 4.0
    crm_read_timeout: float = 1.0
    #: How long a hung request waits before the fake CRM applies it and answers (past the read timeout).
    hang_seconds: float = 1.2
    retry_after: str = "1"
    #: Conversations per wave. A wave goes out once the delivery queue holds fewer events than there
    #: are workers, so the run spreads over its whole length whatever the machine's speed.
    wave_conversations: int = 20
    #: Checkpoints while the waves go out (then one when idle, one after the replay).
    checkpoints: int = 4
    #: When the CRM's token is rotated (a share of the waves), and how much later the secret follows.
    rotate_at: float = 0.4
    rotation_gap: float = 3.0
    #: Environments (ReservedConcurrency); None: the template's default.
    workers: int | None = 8
    retry_delays: tuple[float, ...] = (0.2, 0.4)
    idle_timeout: float = 600.0

    def check(self) -> None:
        if self.conversations < 1:
            raise ValueError("conversations must be at least 1")
        for name in ("duplicate_share", "concurrent_share", "fault_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if not self.crm_read_timeout < self.hang_seconds <= 2 * self.crm_read_timeout:
            # Past the client's timeout, but within the window the HubSpot adapter waits for an
            # unanswered create (read timeout + settle): later than that is a documented limit.
            raise ValueError("hang_seconds must be more than crm_read_timeout and at most twice it")
        if self.wave_conversations < 1:
            raise ValueError("wave_conversations must be at least 1")
        if not 0 < self.rotate_at < 1:
            raise ValueError("rotate_at must be a share of the waves between 0 and 1")
        if self.rotation_gap < 0:
            raise ValueError("rotation_gap must not be negative")


@dataclass
class Checkpoint:
    """One sample: every conversation emitted so far is processed, parked or in flight."""

    at_seconds: float
    label: str
    emitted: int
    processed: int
    in_dlq: int
    in_flight: int
    missing: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "at_seconds": round(self.at_seconds, 1),
            "label": self.label,
            "emitted": self.emitted,
            "processed": self.processed,
            "in_dlq": self.in_dlq,
            "in_flight": self.in_flight,
            "missing": len(self.missing),
            "missing_ids": self.missing[:20],
        }


@dataclass(frozen=True)
class Expected:
    """What the default End function does for one conversation."""

    tickets: int
    disposition: bool
    follow_ups: tuple[str, ...]
    notification: bool


def expected_effects(detail: Mapping[str, Any]) -> Expected:
    """The default End function's rules (functions/end_handler/end_function.py), restated."""
    state = detail["state"]
    outbound = detail["direction"] == "outbound"
    customer_phone = detail["callee"] if outbound else detail["caller"]
    follow_ups = []
    if state.get("follow_up_required") and customer_phone:
        follow_ups.append("callback")
    disposition = state.get("disposition", "connected") if outbound else None
    if disposition == "info_requested" and detail.get("customer_email"):
        follow_ups.append("email")
    return Expected(
        tickets=1 if state.get("support_needed") else 0,
        disposition=outbound,
        follow_ups=tuple(sorted(follow_ups)),
        notification=disposition in HOT_LEADS,
    )


@dataclass
class ChaosReport:
    """What a run did and found; ``ok`` when nothing was duplicated, lost or left in a queue."""

    config: ChaosConfig
    conversations: int = 0
    events_emitted: int = 0
    duplicate_emissions: int = 0
    concurrent_duplicate_emissions: int = 0
    seconds: float = 0.0
    checkpoints: list[Checkpoint] = field(default_factory=list)
    dlq_before_replay: int = 0
    replay: dict[str, Any] = field(default_factory=dict)
    dlq_after_replay: int = 0
    in_flight_after_replay: int = 0
    crm_requests: int = 0
    #: Requests the CRM received while the faults were on (the share of failures is counted on these).
    crm_requests_under_faults: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    dispatcher: dict[str, int] = field(default_factory=dict)
    effects: dict[str, int] = field(default_factory=dict)
    expected_effects: dict[str, int] = field(default_factory=dict)
    duplicate_effects: dict[str, int] = field(default_factory=dict)
    missing_effects: dict[str, int] = field(default_factory=dict)
    unprocessed: list[str] = field(default_factory=list)
    #: Conversations with an effect missing (no note, no ticket that was asked for, ...).
    short_of_effects: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Effects performed more often than the End function asked for (a second note, ...)."""
        return sum(self.duplicate_effects.values())

    @property
    def lost(self) -> int:
        """Conversations missing at a checkpoint, unprocessed at the end, or missing an effect."""
        missing = {cid for checkpoint in self.checkpoints for cid in checkpoint.missing}
        return len(missing | set(self.unprocessed) | self.short_of_effects)

    @property
    def fault_share(self) -> float:
        injected = sum(count for kind, count in self.faults_injected.items() if kind != "unauthorized")
        return injected / self.crm_requests_under_faults if self.crm_requests_under_faults else 0.0

    @property
    def ok(self) -> bool:
        return (
            self.duplicates == 0
            and self.lost == 0
            and self.dlq_after_replay == 0
            and self.in_flight_after_replay == 0
            and not self.problems
        )

    def to_json(self) -> dict[str, Any]:
        config = self.config
        return {
            "ok": self.ok,
            "conversations": self.conversations,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "dlq_after_replay": self.dlq_after_replay,
            "seconds": round(self.seconds, 1),
            "events_emitted": self.events_emitted,
            "duplicate_emissions": self.duplicate_emissions,
            "concurrent_duplicate_emissions": self.concurrent_duplicate_emissions,
            "dlq_before_replay": self.dlq_before_replay,
            "replay": self.replay,
            "in_flight_after_replay": self.in_flight_after_replay,
            "crm_requests": self.crm_requests,
            "crm_requests_under_faults": self.crm_requests_under_faults,
            "faults_injected": self.faults_injected,
            "fault_share": round(self.fault_share, 3),
            "invocations": self.dispatcher.get("invocations", 0),
            "timeouts": self.dispatcher.get("timeouts", 0),
            "dispatcher": self.dispatcher,
            "effects": self.effects,
            "expected_effects": self.expected_effects,
            "duplicate_effects": self.duplicate_effects,
            "missing_effects": self.missing_effects,
            "checkpoints": [checkpoint.to_json() for checkpoint in self.checkpoints],
            "problems": self.problems[:50],
            "settings": {
                "seed": config.seed,
                "duplicate_share": config.duplicate_share,
                "fault_rate": config.fault_rate,
                "function_timeout_s": config.function_timeout,
                "crm_read_timeout_s": config.crm_read_timeout,
                "hang_s": config.hang_seconds,
                "retry_after": config.retry_after,
                "wave_conversations": config.wave_conversations,
                "workers": self.dispatcher.get("workers", 0),
            },
        }


# --- the plan ------------------------------------------------------------------------------------


def fault_rules(config: ChaosConfig) -> list[dict[str, Any]]:
    """Fault rules for the fake CRM that fail ``fault_rate`` of all requests, split as :data:`FAULT_MIX`.

    The fake tries rules in order and applies the first whose draw succeeds, so each rule's
    probability is its share of what the rules before it left.
    """
    rules = []
    left = 1.0
    for kind, weight in FAULT_MIX.items():
        share = config.fault_rate * weight
        probability = min(1.0, share / left) if left > 0 else 0.0
        left -= share
        rule: dict[str, Any] = {"kind": kind, "probability": round(probability, 6)}
        if kind == "rate_limit":
            rule["retry_after"] = config.retry_after
        elif kind in ("status", "after_commit_status"):
            rule["status"] = 500
        elif kind == "hang":
            rule["seconds"] = config.hang_seconds
        elif kind == "trickle":
            rule["interval"] = config.crm_read_timeout / 2
        rules.append(rule)
    return rules


@dataclass(frozen=True)
class Emission:
    """The events of one run, as waves of PutEvents batches (≤ 10 details each)."""

    details: list[dict[str, Any]]
    waves: list[list[list[dict[str, Any]]]]
    duplicates: int
    concurrent: int


def plan_emissions(config: ChaosConfig) -> Emission:
    details = conversations(config.conversations, seed=config.seed, duplicates=0.0)
    rng = random.Random(config.seed)
    twice = rng.sample(range(len(details)), round(len(details) * config.duplicate_share))
    concurrent = set(twice[: round(len(twice) * config.concurrent_share)])
    later = [index for index in twice if index not in concurrent]
    per_wave = config.wave_conversations
    waves: list[list[dict[str, Any]]] = []
    for start in range(0, len(details), per_wave):
        wave: list[dict[str, Any]] = []
        for index in range(start, min(start + per_wave, len(details))):
            wave.append(details[index])
            if index in concurrent:
                wave.append(dict(details[index]))  # same batch as the original: the copies race
        waves.append(wave)
    for index in later:  # a later wave (or the last one) re-emits it
        wave_of = index // per_wave
        target = min(len(waves) - 1, wave_of + 1 + rng.randrange(2))
        waves[target].insert(rng.randrange(len(waves[target]) + 1), dict(details[index]))
    batched = [[wave[i : i + 10] for i in range(0, len(wave), 10)] for wave in waves]
    return Emission(details, batched, len(twice), len(concurrent))
