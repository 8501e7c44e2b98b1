"""One entry point for every adapter: parse the body strictly, then map it with the platform's module.

The webhook service and ``aftercall emit --from`` both come through here, so a payload saved
from a vendor's logs becomes exactly the event the webhook would have produced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aftercall.ingest import connect, elevenlabs, generic, retell, vapi
from aftercall.ingest.common import Ignored, Normalised
from aftercall.ingest.errors import PayloadError

Adapter = Callable[[Any, str], Normalised | Ignored]

ADAPTERS: dict[str, Adapter] = {
    vapi.PLATFORM: vapi.normalise,
    retell.PLATFORM: retell.normalise,
    elevenlabs.PLATFORM: elevenlabs.normalise,
    connect.PLATFORM: connect.normalise,
    generic.PLATFORM: generic.normalise,
}
#: Platforms that reach ingest as signed webhooks (Connect arrives through EventBridge instead).
WEBHOOK_PLATFORMS = (vapi.PLATFORM, retell.PLATFORM, elevenlabs.PLATFORM, generic.PLATFORM)
PLATFORMS = tuple(ADAPTERS)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes | str) -> Any:
    """Strict JSON (UTF-8, no NaN/Infinity, no comments or trailing commas), or a 400 saying where it broke.

    Vendor documentation sometimes shows JSON with comments or ``[Object]`` placeholders; real
    traffic never does, and guessing what a broken body meant could put a wrong event on the bus.
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise PayloadError("invalid_json", f"the body is not UTF-8 (byte {exc.start})", status=400) from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            "invalid_json",
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            status=400,
        ) from None
    except (ValueError, RecursionError) as exc:
        raise PayloadError("invalid_json", f"the body is not valid JSON: {exc}", status=400) from None


def normalise(platform: str, payload: Any, environment: str) -> Normalised | Ignored:
    """Map a parsed payload of ``platform`` to a ``Conversation Ended`` detail for ``environment``."""
    adapter = ADAPTERS.get(platform)
    if adapter is None:
        raise ValueError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
    if environment not in ("sandbox", "live"):
        raise ValueError(f"environment must be sandbox or live, got {environment!r}")
    return adapter(payload, environment)
