"""One entry point for every adapter: parse the body strictly, then map it with the platform's module.

The webhook service and ``aftercall emit --from`` both come through here, so a payload saved
from a vendor's logs becomes exactly the event the webhook would have produced.
"""

from __future__ import annotations

import json
import re
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
#: A JSON escape of a UTF-16 surrogate: the only way valid JSON can carry text UTF-8 cannot encode.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different, or a 400: with a repeated key, which value counts
    depends on the parser, so what was signed and what would be processed could differ."""
    found = dict(pairs)
    if len(found) != len(pairs):
        raise PayloadError(
            "duplicate_key",
            "an object in the body has the same key twice; which value counts would be open to "
            "interpretation (the key is not quoted: names may be personal data)",
            status=400,
        )
    return found


def parse_json(body: bytes | str) -> Any:
    """Strict JSON (UTF-8, no NaN/Infinity, no comments or trailing commas, no repeated keys, no
    lone surrogates), or a 400 saying where it broke.

    Vendor documentation sometimes shows JSON with comments or ``[Object]`` placeholders; real
    traffic never does, and guessing what a broken body meant could put a wrong event on the bus.
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise PayloadError("invalid_json", f"the body is not UTF-8 (byte {exc.start})", status=400) from None
    try:
        value = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            "invalid_json",
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            status=400,
        ) from None
    except (ValueError, RecursionError) as exc:
        raise PayloadError("invalid_json", f"the body is not valid JSON: {str(exc)[:200]}", status=400) from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadError(
                "invalid_json", "the body escapes a lone UTF-16 surrogate (\\ud800-\\udfff): not text", status=400
            ) from None
    return value


def normalise(platform: str, payload: Any, environment: str) -> Normalised | Ignored:
    """Map a parsed payload of ``platform`` to a ``Conversation Ended`` detail for ``environment``."""
    adapter = ADAPTERS.get(platform)
    if adapter is None:
        raise ValueError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
    if environment not in ("sandbox", "live"):
        raise ValueError(f"environment must be sandbox or live, got {environment!r}")
    return adapter(payload, environment)
