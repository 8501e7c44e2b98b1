"""Who called, in Salesforce: SOSL phone search, and a new caller's Lead (or Contact) upserted once.

Finding: Salesforce keeps phone fields as typed ("Salesforce preserves whichever phone number
format you enter"), so an equality query on ``+14155550134`` misses ``(415) 555-0134``. SOSL
searches the search index, where phone fields are searchable by their digits (Salesforce's own
sample: ``FIND {4155551212} IN PHONE FIELDS``). We search by the digit forms a number is typed
in: the national number (``4155550134``), with country code (``14155550134``) and, where the
country dials a trunk prefix, as dialled at home (``02079460958``). No phone match: the email,
``IN EMAIL FIELDS``. Several matches: Contacts before unconverted Leads, the same number before a
look-alike, then the oldest; logged masked.

Creating: a new caller becomes a Lead (``SalesforceNewCallerObject``: or a Contact) *upserted* on
an external-id field holding a hash of the caller's normalised number or email
(``PATCH /sobjects/Lead/Aftercall_Caller_Id__c/aftercall-caller-<hash>``). A lost answer or a second
conversation of the caller sends the same upsert and updates that one record. Salesforce's search
index lags writes ("it could take about 15 minutes or more for the updated text to become
searchable"), far beyond any settle window: the upsert, not a search, is what makes a repeat safe;
the caller lease (:mod:`aftercall.crm.caller_lease`) keeps the created id for a day, so later
conversations do not depend on the index either.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

from aftercall.crm.base import CrmCall, Customer
from aftercall.crm.callers import caller_external_id
from aftercall.crm.http import CrmHttpClient
from aftercall.errors import ConfigurationError, CrmRequestError
from aftercall.phones import parse_phone, region_of
from aftercall.privacy import mask_phone

NewCallerObject = Literal["Lead", "Contact"]
NEW_CALLER_OBJECTS: tuple[NewCallerObject, ...] = ("Lead", "Contact")
DEFAULT_CALLER_EXTERNAL_ID_FIELD = "Aftercall_Caller_Id__c"
#: Salesforce's standard key prefixes: an Id says which object it is.
CONTACT_PREFIX, LEAD_PREFIX = "003", "00Q"
#: "Unknown" fillers for the fields Salesforce requires on a Lead (LastName, Company) and a Contact.
NO_NAME = "Unknown caller"
NO_COMPANY = "[not provided]"
#: SOSL reserved characters, each escaped with a backslash in a search term.
_SOSL_RESERVED = re.compile(r"([?&|!{}\[\]()^~*:\\\"'+\-])")
_RETURNED = "Id, Phone, MobilePhone, Email, CreatedDate"

log = logging.getLogger(__name__)


def sosl_term(value: str) -> str:
    """A SOSL search term: reserved characters escaped, so caller data cannot change the search."""
    return _SOSL_RESERVED.sub(r"\\\1", value)


def phone_forms(number: str) -> list[str]:
    """The digit forms Salesforce's phone search is asked for (see the module docstring)."""
    phone = parse_phone(number)
    if phone is None:
        digits = "".join(ch for ch in number if ch.isdigit())
        return [digits] if digits else []
    return list(dict.fromkeys([phone.national, phone.country_code + phone.national, phone.national_dialled]))


def caller_search(customer: Customer, objects: Sequence[str], by: Literal["phone", "email"]) -> str | None:
    """The SOSL for the customer's phone (``IN PHONE FIELDS``) or email (``IN EMAIL FIELDS``)."""
    if by == "phone":
        terms = phone_forms(customer.phone) if customer.phone else []
        scope = "PHONE"
    else:
        terms = [customer.email] if customer.email else []
        scope = "EMAIL"
    if not terms:
        return None
    returning = []
    for sobject in objects:
        where = " WHERE IsConverted = false" if sobject == "Lead" else ""
        returning.append(f"{sobject}({_RETURNED}{where} ORDER BY CreatedDate ASC LIMIT 20)")
    found = " OR ".join(f'"{sosl_term(term)}"' for term in terms)
    return f"FIND {{{found}}} IN {scope} FIELDS RETURNING {', '.join(returning)}"


class SalesforceCallers:
    """Finds and creates callers for :class:`aftercall.crm.salesforce.SalesforceCrm` (the
    :class:`aftercall.crm.callers.CallerDirectory` it hands to :class:`~aftercall.crm.callers.Callers`)."""

    name = "salesforce"

    def __init__(
        self, http: Callable[[], CrmHttpClient], data_path: Callable[[], str], settings: Callable[[], CallerSettings]
    ) -> None:
        self._http = http
        self._data_path = data_path
        self._settings = settings

    def search_caller(self, customer: Customer, call: CrmCall) -> str | None:
        return self.search(customer, ("Contact", "Lead"), call)

    def search(self, customer: Customer, objects: Sequence[str], call: CrmCall) -> str | None:
        """The best matching record among ``objects``, by phone and then by email."""
        for by in ("phone", "email"):
            sosl = caller_search(customer, objects, by)
            if sosl is None:
                continue
            records = self._search(sosl, call)
            if records:
                return _choose(records, customer)
        return None

    def _search(self, sosl: str, call: CrmCall) -> list[dict[str, Any]]:
        try:
            body = self._http().request(
                "GET", f"{self._data_path()}/search/", call, params={"q": sosl}, safe_to_retry=True, search=True
            )
        except CrmRequestError as exc:
            # Salesforce quotes the failing search, which holds the phone or email: keep the status only.
            raise CrmRequestError(f"salesforce refused the caller search: HTTP {exc.status}", exc.status) from None
        records = (body or {}).get("searchRecords") if isinstance(body, dict) else body
        return [r for r in records or [] if isinstance(r, dict) and r.get("Id")]

    def create_caller(self, customer: Customer, call: CrmCall) -> str:
        """Upsert the new caller's Lead/Contact on the caller external id: safe to send again."""
        settings = self._settings()
        key = caller_external_id(customer)
        assert key is not None  # Callers only creates callers it has a key for
        sobject = settings.new_caller_object
        fields: dict[str, Any] = {
            "FirstName": customer.first_name,
            "LastName": customer.last_name or NO_NAME,
            "Phone": customer.phone,
            "Email": customer.email,
        }
        if sobject == "Lead":
            fields |= {"Company": NO_COMPANY, "LeadSource": "Phone Inquiry"}
        body_fields = {name: value for name, value in fields.items() if value}
        path = f"{self._data_path()}/sobjects/{sobject}/{settings.external_id_field}/{quote(key, safe='')}"
        try:
            body = self._http().request("PATCH", path, call, json=body_fields, safe_to_retry=True)
            if isinstance(body, dict) and body.get("id"):
                return str(body["id"])
            # API versions before 46.0 answer an update with 204 and no body: read the Id back.
            record = self._http().request("GET", path, call, params={"fields": "Id"}, safe_to_retry=True)
        except CrmRequestError as exc:
            if exc.status == 404:
                raise ConfigurationError(
                    f"salesforce: {sobject} has no external-id field {settings.external_id_field!r} the integration "
                    "user can see; create it (Text, External ID, Unique) as described in docs/crm.md"
                ) from exc
            if exc.status == 400 and customer.email and customer.phone and "INVALID_EMAIL_ADDRESS" in str(exc):
                log.warning("salesforce refused the caller's email; creating the record with the phone only")
                return self.create_caller(Customer(customer.phone, None, customer.first_name, customer.last_name), call)
            raise
        return str(record["Id"])

    def settle(self, unanswered_at: float | None, call: CrmCall, answered_at: float | None = None) -> None:
        """Nothing to wait for: a repeated upsert on the caller's external id updates the same record."""


class CallerSettings:
    """The secret's caller settings: which object a new caller becomes, and its external-id field."""

    def __init__(self, new_caller_object: NewCallerObject, external_id_field: str) -> None:
        self.new_caller_object = new_caller_object
        self.external_id_field = external_id_field

    @classmethod
    def read(cls, secret: Mapping[str, str], sobject: str, custom_field: re.Pattern[str]) -> CallerSettings:
        if sobject not in NEW_CALLER_OBJECTS:
            raise ConfigurationError(f"salesforce: NewCallerObject {sobject!r} must be Lead or Contact")
        field = secret.get("caller_external_id_field") or DEFAULT_CALLER_EXTERNAL_ID_FIELD
        if not custom_field.match(field):
            raise ConfigurationError(
                f"salesforce: caller_external_id_field {field!r} in the CRM secret is not a custom field API name"
            )
        return cls(sobject, field)


def _choose(records: list[dict[str, Any]], customer: Customer) -> str:
    """Deterministic: Contacts first, the caller's very number before a look-alike, the oldest, the lowest Id."""
    ours = parse_phone(customer.phone) if customer.phone else None
    region = region_of(ours) if ours is not None else None

    def preference(record: Mapping[str, Any]) -> tuple[int, int, str, str]:
        kind = str((record.get("attributes") or {}).get("type") or "")
        rank = 0 if kind == "Contact" or str(record["Id"]).startswith(CONTACT_PREFIX) else 1
        same = 1
        for typed in (record.get("Phone"), record.get("MobilePhone")):
            theirs = parse_phone(str(typed), region) if typed else None
            if ours is not None and theirs is not None and theirs.e164 == ours.e164:
                same = 0
        return rank, same, str(record.get("CreatedDate") or ""), str(record["Id"])

    chosen = min(records, key=preference)
    if len(records) > 1:
        log.warning(
            "several Salesforce records match the caller; using the first Contact with the same number, oldest first",
            extra={
                "matches": len(records),
                "record_id": str(chosen["Id"]),
                "customer_phone": mask_phone(customer.phone),
            },
        )
    return str(chosen["Id"])
