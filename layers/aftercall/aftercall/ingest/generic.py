"""The generic webhook: the body *is* a ``Conversation Ended`` detail, signed by the sender.

For platforms without an adapter (or your own bridge): POST the detail as JSON with an
``X-Aftercall-Signature`` header. ``environment`` may be left out (the stack's stage is filled
in); when present it must be the stack's stage, so a sandbox sender cannot reach live.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from aftercall.ingest.common import Normalised, as_object
from aftercall.ingest.errors import PayloadError
from aftercall.models.event import ConversationEndedDetail

PLATFORM = "generic"


def normalise(payload: Any, environment: str) -> Normalised:
    """Validate the posted detail against the contract; fill in ``environment`` when missing."""
    detail = dict(as_object(payload, "body"))
    found = detail.setdefault("environment", environment)
    if found != environment:
        raise PayloadError(
            "wrong_environment", f"environment is {found!r} but this is the {environment!r} stack's ingest URL"
        )
    try:
        model = ConversationEndedDetail.model_validate(detail)
    except ValidationError as exc:
        from aftercall.handler import describe_validation_error

        raise PayloadError(
            "invalid_detail", f"not a valid Conversation Ended detail: {describe_validation_error(exc)}"
        ) from None
    return Normalised(PLATFORM, model.model_dump(mode="json", exclude_none=True))
