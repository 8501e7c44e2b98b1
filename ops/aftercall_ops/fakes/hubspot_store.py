"""The fake HubSpot's objects: contacts, notes and tickets as HubSpot keeps them, and its search.

Phones are stored as typed; HubSpot's calculated ``hs_searchable_calculated_*`` properties hold the
digits-only national number (what search by phone matches), and search shows an object only
after the index lag (``searchable_at``).
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

OBJECT_TYPES = ("contacts", "notes", "tickets")
SEARCH_OPERATORS = (
    "EQ",
    "NEQ",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "IN",
)
MAX_FILTER_GROUPS = 5
MAX_SEARCH_LIMIT = 200


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(message: str, category: str = "VALIDATION_ERROR") -> dict[str, Any]:
    return {"status": "error", "message": message, "category": category, "correlationId": str(uuid.uuid4())}


# --- the in-memory CRM ------------------------------------------------------------------------


class _Store:
    """HubSpot-shaped objects by type; every public method takes the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in OBJECT_TYPES}
        self._ids = itertools.count(1001)
        #: Object id -> when (monotonic) it shows in search.
        self.searchable_at: dict[str, float] = {}

    def create(
        self, kind: str, properties: Mapping[str, Any], associations: Iterable[str] = (), *, index_lag: float = 0.0
    ) -> dict[str, Any]:
        with self.lock:
            object_id = str(next(self._ids))
            stamp = _now_iso()
            props = {key: _as_property(value) for key, value in properties.items()}
            props.update({"hs_object_id": object_id, "hs_createdate": stamp, "hs_lastmodifieddate": stamp})
            if kind == "contacts":
                props.setdefault("createdate", stamp)
                props.setdefault("lastmodifieddate", stamp)
                _calculate_phones(props)
            self.searchable_at[object_id] = time.monotonic() + index_lag
            obj = {
                "id": object_id,
                "properties": props,
                "createdAt": stamp,
                "updatedAt": stamp,
                "archived": False,
                "associations": {"contacts": list(associations)},
            }
            self.objects[kind][object_id] = obj
            return copy.deepcopy(obj)

    def update(self, kind: str, object_id: str, properties: Mapping[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects[kind].get(object_id)
            if obj is None:
                return None
            stamp = _now_iso()
            obj["properties"].update({key: _as_property(value) for key, value in properties.items()})
            obj["properties"]["hs_lastmodifieddate"] = stamp
            if kind == "contacts":
                _calculate_phones(obj["properties"])
            obj["updatedAt"] = stamp
            return copy.deepcopy(obj)

    def get(self, kind: str, object_id: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects[kind].get(object_id)
            return copy.deepcopy(obj) if obj else None

    def all(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(obj) for obj in self.objects[kind].values()]

    def search(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Match under the lock without copying every object (searches stay cheap at volume)."""
        with self.lock:
            now = time.monotonic()
            indexed = [obj for obj in self.objects[kind].values() if self.searchable_at.get(obj["id"], 0.0) <= now]
            return copy.deepcopy(_search(indexed, body))

    def find_by_email(self, email: str) -> str | None:
        """The id of the contact with this email (HubSpot's unique key for contacts), searchable or not."""
        with self.lock:
            for obj in self.objects["contacts"].values():
                if obj["properties"].get("email", "").casefold() == email.casefold():
                    return str(obj["id"])
        return None

    def clear(self) -> None:
        with self.lock:
            for objects in self.objects.values():
                objects.clear()
            self.searchable_at.clear()


def _calculated_phone(typed: str) -> str:
    """HubSpot's ``hs_searchable_calculated_*`` value: digits only, without the country code.

    A number typed with ``+`` loses its country code; one typed without is kept as its digits.
    """
    digits = re.sub(r"\D", "", typed)
    if not typed.strip().startswith("+") or not digits:
        return digits
    for length in (1, 2, 3):  # ITU country codes are 1 to 3 digits and prefix-free
        if digits[:length] in _COUNTRY_CODES:
            return digits[length:]
    return digits


#: Country calling codes (ITU-T E.164 assignments) the fake strips from numbers typed with ``+``.
_COUNTRY_CODE_TEXT = (
    "1 7 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 65 "
    "66 81 82 84 86 90 91 92 93 94 95 98 211 212 213 216 218 220 221 222 223 224 225 226 227 228 229 230 "
    "231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 248 249 250 251 252 253 254 255 256 "
    "257 258 260 261 262 263 264 265 266 267 268 269 290 291 297 298 299 350 351 352 353 354 355 356 357 "
    "358 359 370 371 372 373 374 375 376 377 378 380 381 382 383 385 386 387 389 420 421 423 500 501 502 "
    "503 504 505 506 507 508 509 590 591 592 593 594 595 596 597 598 599 670 672 673 674 675 676 677 678 "
    "679 680 681 682 683 685 686 687 688 689 690 691 692 850 852 853 855 856 880 886 960 961 962 963 964 "
    "965 966 967 968 970 971 972 973 974 975 976 977 992 993 994 995 996 998 "
)
_COUNTRY_CODES = frozenset(_COUNTRY_CODE_TEXT.split())


def _calculate_phones(props: dict[str, str]) -> None:
    for typed, calculated in (
        ("phone", "hs_searchable_calculated_phone_number"),
        ("mobilephone", "hs_searchable_calculated_mobile_number"),
    ):
        if props.get(typed):
            props[calculated] = _calculated_phone(props[typed])
        else:
            props.pop(calculated, None)


def _as_property(value: Any) -> str:
    """HubSpot stores every property value as a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"property values must be strings, numbers or booleans, not {type(value).__name__}")


def _filter_matches(obj: Mapping[str, Any], rule: Mapping[str, Any]) -> bool:
    props: Mapping[str, str] = obj["properties"]
    name = rule.get("propertyName")
    operator = rule.get("operator")
    if not isinstance(name, str) or operator not in SEARCH_OPERATORS:
        raise ValueError(f"invalid filter {dict(rule)!r}: needs propertyName and an operator in {SEARCH_OPERATORS}")
    actual = props.get(name, "") if name != "hs_object_id" else obj["id"]
    if operator == "HAS_PROPERTY":
        return actual != ""
    if operator == "NOT_HAS_PROPERTY":
        return actual == ""
    if operator == "IN":
        values = rule.get("values")
        if not isinstance(values, list):
            raise ValueError("operator IN needs a 'values' list")
        return actual.casefold() in {_as_property(v).casefold() for v in values}
    if "value" not in rule:
        raise ValueError(f"operator {operator} needs a 'value'")
    expected = _as_property(rule["value"]).casefold()
    if operator == "EQ":
        return actual != "" and actual.casefold() == expected
    if operator == "NEQ":
        return actual.casefold() != expected
    # CONTAINS_TOKEN: HubSpot tokenises; a case-insensitive substring match is close enough here.
    contained = expected.replace("*", "") in actual.casefold()
    return contained if operator == "CONTAINS_TOKEN" else not contained


def _search(objects: list[dict[str, Any]], body: Mapping[str, Any]) -> dict[str, Any]:
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list) or len(groups) > MAX_FILTER_GROUPS:
        raise ValueError(f"filterGroups must be a list of at most {MAX_FILTER_GROUPS} groups")
    limit = body.get("limit", 10)
    if not isinstance(limit, int) or not 0 < limit <= MAX_SEARCH_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_SEARCH_LIMIT}")
    try:
        after = int(body.get("after") or 0)
    except (TypeError, ValueError):
        raise ValueError("after must be a paging cursor from an earlier answer") from None
    wanted = body.get("properties")

    def matches(obj: dict[str, Any]) -> bool:
        if not groups:
            return True
        # Groups are OR'ed; the filters inside a group are AND'ed (HubSpot's semantics).
        return any(all(_filter_matches(obj, rule) for rule in group.get("filters") or []) for group in groups)

    hits = sorted((obj for obj in objects if matches(obj)), key=lambda o: int(o["id"]))
    page = hits[after : after + limit]
    results = []
    for obj in page:
        props = obj["properties"]
        if isinstance(wanted, list) and wanted:
            props = {k: v for k, v in props.items() if k in wanted or k in ("hs_object_id", "hs_createdate")}
        results.append(
            {
                "id": obj["id"],
                "properties": props,
                "createdAt": obj["createdAt"],
                "updatedAt": obj["updatedAt"],
                "archived": False,
            }
        )
    answer: dict[str, Any] = {"total": len(hits), "results": results}
    if after + limit < len(hits):
        answer["paging"] = {"next": {"after": str(after + limit)}}
    return answer


def _public(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as HubSpot's API returns it (associations only on request)."""
    return {key: copy.deepcopy(value) for key, value in obj.items() if key != "associations"}


# --- the server ---------------------------------------------------------------------------------
