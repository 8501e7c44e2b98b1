"""The fake Salesforce's in-memory org: objects, their fields, validation and the search index."""

from __future__ import annotations

import copy
import itertools
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aftercall_ops.fakes.salesforce_search import EMAIL_FIELDS, run_search
from aftercall_ops.fakes.salesforce_soql import SalesforceError, _now, _SoqlParser

DEFAULT_EXTERNAL_ID_FIELD = "Aftercall_Conversation_Id__c"
DEFAULT_CALLER_ID_FIELD = "Aftercall_Caller_Id__c"
LEAD_STATUSES = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted")
#: "After a searchable object's record is created or updated, it could take about 15 minutes or more
#: for the updated text to become searchable." (Salesforce, Large Data Volumes: Search Architecture).
#: SOSL reads that index; SOQL and the sobject resources read the database and see a write at once.
INDEX_LAG_SECONDS = 15 * 60.0

#: Writable fields per object; the system fields (Id, dates) are added by the store.
FIELDS: dict[str, frozenset[str]] = {
    "Contact": frozenset({"FirstName", "LastName", "Phone", "MobilePhone", "Email", "AccountId", "LeadSource"}),
    "Lead": frozenset(
        {"FirstName", "LastName", "Company", "Phone", "MobilePhone", "Email", "Status", "IsConverted", "LeadSource"}
    ),
    "Task": frozenset(
        {"Subject", "Description", "Status", "Priority", "ActivityDate", "WhoId", "WhatId", "Type", "CallDisposition"}
    ),
    "Case": frozenset(
        {"Subject", "Description", "Priority", "Status", "Origin", "ContactId", "SuppliedPhone", "SuppliedEmail"}
    ),
}
#: Fields a record cannot be created without ("Required fields are missing: [LastName, Company]").
REQUIRED: dict[str, tuple[str, ...]] = {"Contact": ("LastName",), "Lead": ("LastName", "Company")}
#: Salesforce refuses malformed addresses: "Email: invalid email address: <value>" (INVALID_EMAIL_ADDRESS).
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
SYSTEM_FIELDS = frozenset({"Id", "CreatedDate", "LastModifiedDate"})
PICKLISTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Case", "Priority"): ("High", "Medium", "Low"),
    ("Task", "Status"): ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"),
    ("Task", "Priority"): ("High", "Normal", "Low"),
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "Lead": {"Status": "Open - Not Contacted", "IsConverted": False},
    "Task": {"Status": "Not Started", "Priority": "Normal"},
    "Case": {"Status": "New", "Priority": "Medium"},
}
ID_PREFIX = {"Contact": "003", "Lead": "00Q", "Task": "00T", "Case": "500"}
#: Reference fields and the objects they may point at.
REFERENCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("Task", "WhoId"): ("Contact", "Lead"),
    ("Case", "ContactId"): ("Contact",),
}


# --- the in-memory org -------------------------------------------------------------------------------


class _Org:
    """Records by object type; every public method takes the lock."""

    def __init__(self, external_ids: Mapping[str, frozenset[str]], lead_statuses: Sequence[str]) -> None:
        self.lock = threading.RLock()
        self.picklists = {**PICKLISTS, ("Lead", "Status"): tuple(lead_statuses)}
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in FIELDS}
        self.external_ids = {name: frozenset(external_ids.get(name, ())) for name in FIELDS}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)

    def fields(self, sobject: str) -> frozenset[str]:
        if sobject not in FIELDS:
            return frozenset()
        return FIELDS[sobject] | SYSTEM_FIELDS | self.external_ids[sobject]

    def new_id(self, sobject: str) -> str:
        return f"{ID_PREFIX[sobject]}5g000{next(self._ids):010d}"

    def validate(self, sobject: str, values: Mapping[str, Any]) -> None:
        known = FIELDS[sobject] | self.external_ids[sobject]
        for name, value in values.items():
            if name not in known:
                raise SalesforceError(400, f"No such column '{name}' on sobject of type {sobject}", "INVALID_FIELD")
            if value is not None and not isinstance(value, str | bool | int | float):
                raise SalesforceError(400, f"{name}: value not of required type", "JSON_PARSER_ERROR", [name])
            allowed = self.picklists.get((sobject, name))
            if allowed is not None and value not in allowed:
                raise SalesforceError(
                    400,
                    f"{name}: bad value for restricted picklist field: {value}",
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    [name],
                )
            if name in EMAIL_FIELDS and value and not _EMAIL.match(str(value)):
                raise SalesforceError(400, f"{name}: invalid email address: {value}", "INVALID_EMAIL_ADDRESS", [name])
            targets = REFERENCES.get((sobject, name))
            if targets is not None and value is not None and not any(str(value) in self.records[t] for t in targets):
                raise SalesforceError(
                    400, f"{name}: id value of incorrect type: {value}", "FIELD_INTEGRITY_EXCEPTION", [name]
                )

    def create(self, sobject: str, values: Mapping[str, Any], *, index_lag: float = 0.0) -> dict[str, Any]:
        """A new record; SOSL finds it ``index_lag`` seconds from now (seeded records: at once)."""
        with self.lock:
            self.validate(sobject, values)
            missing = [name for name in REQUIRED.get(sobject, ()) if not values.get(name)]
            if missing:
                raise SalesforceError(
                    400, f"Required fields are missing: [{', '.join(missing)}]", "REQUIRED_FIELD_MISSING", missing
                )
            record_id = self.new_id(sobject)
            stamp = _now()
            record = {**DEFAULTS.get(sobject, {}), **values}
            record.update({"Id": record_id, "CreatedDate": stamp, "LastModifiedDate": stamp, "_seq": next(self._seq)})
            record["_searchable_at"] = time.monotonic() + index_lag
            self.records[sobject][record_id] = record
            return copy.deepcopy(record)

    def update(self, sobject: str, record_id: str, values: Mapping[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            record = self.records[sobject].get(record_id)
            if record is None:
                return None
            self.validate(sobject, values)
            record.update(values)
            record["LastModifiedDate"] = _now()
            record["_seq"] = next(self._seq)
            return copy.deepcopy(record)

    def by_external_id(self, sobject: str, field: str, value: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(r) for r in self.records[sobject].values() if r.get(field) == value]

    def get(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self.records.get(sobject, {}).get(record_id)
            return copy.deepcopy(record) if record else None

    def all(self, sobject: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(r) for r in self.records[sobject].values()]

    def query(self, soql: str) -> list[dict[str, Any]]:
        with self.lock:
            parsed = _SoqlParser(soql, self.fields).parse()
            hits = [r for r in self.records[parsed.sobject].values() if parsed.where(r)]
            if parsed.order_by is not None:
                key = parsed.order_by
                hits.sort(key=lambda r: (str(r.get(key) or ""), r["_seq"]), reverse=parsed.descending)
            if parsed.limit is not None:
                hits = hits[: parsed.limit]
            return [
                {name: copy.deepcopy(r.get(name)) for name in parsed.fields} | {"_type": parsed.sobject} for r in hits
            ]

    def search(self, sosl: str) -> list[dict[str, Any]]:
        """SOSL over the search index: only records indexed by now (see :data:`INDEX_LAG_SECONDS`)."""
        with self.lock:
            now = time.monotonic()
            indexed = {
                name: [r for r in records.values() if r.get("_searchable_at", 0.0) <= now]
                for name, records in self.records.items()
            }
            return copy.deepcopy(run_search(sosl, indexed, self.fields))

    def clear(self) -> None:
        with self.lock:
            for records in self.records.values():
                records.clear()


def _public(sobject: str, record: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A record as the REST API returns it: ``attributes`` first, no internal keys."""
    fields = {k: v for k, v in record.items() if not k.startswith("_")}
    return {"attributes": {"type": sobject, "url": f"{base}/sobjects/{sobject}/{record['Id']}"}, **fields}
