"""What the user's ``end_function(conv)`` sees: ``conv.id``, ``conv.state.get(...)`` and friends.

The names follow the platform docs the End function comes from, so their examples run unchanged.
``conv.state`` is the validated, sanitised ``state`` of the event, read-only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aftercall.models.event import ConversationEndedDetail

if TYPE_CHECKING:
    from aftercall.actions import ActionPlan


class State(Mapping[str, Any]):
    """Read-only view of ``conv.state``: ``state.get("x")``, ``state["x"]`` and ``state.x`` all work.

    Nested objects come back as ``State`` too. A missing attribute raises ``AttributeError``
    naming the key, so a typo in the End function fails loudly instead of writing ``None``.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        try:
            return _wrap(self._data[key])
        except KeyError:
            raise AttributeError(
                f"conv.state has no key {key!r}; use conv.state.get({key!r}) if it is optional"
            ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise TypeError("conv.state is read-only in the End function")

    def __repr__(self) -> str:
        return f"State({self._data!r})"

    def to_dict(self) -> dict[str, Any]:
        """A plain copy, for passing on (e.g. into a CRM summary)."""
        return dict(self._data)


def _wrap(value: Any) -> Any:
    return State(value) if isinstance(value, dict) else value


class Conversation:
    """One ended conversation, as handed to ``end_function``."""

    def __init__(self, detail: ConversationEndedDetail, actions: ActionPlan) -> None:
        self.detail = detail
        self.state = State(detail.state)
        self.actions = actions

    @property
    def id(self) -> str:
        return self.detail.conversation_id

    @property
    def environment(self) -> str:
        return self.detail.environment

    @property
    def channel(self) -> str:
        return self.detail.channel

    @property
    def direction(self) -> str:
        return self.detail.direction

    @property
    def started_at(self) -> datetime:
        return self.detail.started_at

    @property
    def ended_at(self) -> datetime:
        return self.detail.ended_at

    @property
    def duration(self) -> float:
        """Seconds, as ``conv.duration`` in the platform docs."""
        return self.detail.duration_seconds

    @property
    def caller(self) -> str | None:
        return self.detail.caller

    @property
    def callee(self) -> str | None:
        return self.detail.callee

    @property
    def customer_phone(self) -> str | None:
        return self.detail.customer_phone

    @property
    def customer_email(self) -> str | None:
        return self.detail.customer_email

    @property
    def agent_id(self) -> str:
        return self.detail.agent_id

    @property
    def ended_reason(self) -> str:
        return self.detail.ended_reason

    def __repr__(self) -> str:
        return f"Conversation(id={self.id!r}, direction={self.direction!r}, channel={self.channel!r})"
