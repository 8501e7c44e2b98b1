"""Salesforce adapter (OAuth 2.0 client credentials flow, REST API).

Idempotency comes from Salesforce itself: the call summary is a Task and a support ticket is a
Case, each *upserted* on an external-id field that holds the conversation id
(``PATCH /services/data/vXX.X/sobjects/Task/<Field__c>/<conversation id>``). An upsert on an
external id is naturally idempotent: sent again after a timeout, a 500 that came after the write,
a reset connection, a Lambda retry or a replay days later, it updates the one record instead of
creating a second. So these writes are simply retried, with no search-before-create. Setting the
Lead's ``Status`` (the disposition) is idempotent as well.

Auth: the client id and secret are exchanged for an access token at ``/services/oauth2/token``
(grant type ``client_credentials``, run as the connected app's integration user). The token is
cached for the warm process; the flow returns no expiry, so a 401 (session expired or revoked)
is the signal to re-read the secret and fetch a new one, once.

Callers: found with SOSL phone search and, when new, upserted as a Lead (or Contact) on a caller
external id: :mod:`aftercall.crm.salesforce_callers`.

Rate limits: Salesforce answers an exhausted API limit with 403 ``REQUEST_LIMIT_EXCEEDED`` (and
some edges with 429); both are waited out like any rate limit, within the invocation's budget.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import requests

from aftercall.credentials import SecretCredentials
from aftercall.crm.base import DISPOSITIONS, CrmCall, CrmRecord, Customer, Disposition, SummaryNote, SupportTicket
from aftercall.crm.callers import CallerMatch, Callers, NewCallers
from aftercall.crm.http import CrmHttpClient, current_call
from aftercall.crm.lookups import SharedLookups
from aftercall.crm.salesforce_callers import LEAD_PREFIX, CallerSettings, NewCallerObject, SalesforceCallers
from aftercall.deadline import Deadline
from aftercall.errors import (
    ConfigurationError,
    CrmCredentialsError,
    CrmRequestError,
    UnknownContactError,
)
from aftercall.privacy import mask_email, mask_phone

#: Keys the CRM secret must hold; optional ones are listed in docs/crm.md.
SECRET_KEYS = ("client_id", "client_secret", "instance_url")
DEFAULT_API_VERSION = "v62.0"
DEFAULT_EXTERNAL_ID_FIELD = "Aftercall_Conversation_Id__c"
TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a URL path, not a password
#: A token request is small; it must not eat the whole invocation when no call is in progress.
_TOKEN_BUDGET_SECONDS = 15.0

#: The standard Lead Status picklist ("Open - Not Contacted", "Working - Contacted",
#: "Closed - Converted", "Closed - Not Converted"). "Closed - Converted" is left to Salesforce's
#: own lead conversion. Orgs with their own values set ``lead_status_map`` in the secret.
DEFAULT_LEAD_STATUS: dict[str, str] = {
    "connected": "Working - Contacted",
    "interested": "Working - Contacted",
    "info_requested": "Working - Contacted",
    "meeting_booked": "Working - Contacted",
    "converted": "Working - Contacted",
    "callback_requested": "Working - Contacted",
    "no_answer": "Open - Not Contacted",
    "voicemail": "Open - Not Contacted",
    "busy": "Open - Not Contacted",
    "not_interested": "Closed - Not Converted",
    "wrong_number": "Closed - Not Converted",
    "do_not_call": "Closed - Not Converted",
}
CASE_PRIORITY = {"LOW": "Low", "MEDIUM": "Medium", "HIGH": "High", "URGENT": "High"}

_API_VERSION = re.compile(r"^v\d{2,3}\.\d$")
_CUSTOM_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}__c$")


class _SalesforceHttp(CrmHttpClient):
    """Salesforce signals an exhausted API limit with 403 ``REQUEST_LIMIT_EXCEEDED``."""

    def _is_rate_limit(self, response: requests.Response) -> bool:
        if response.status_code != 403:
            return False
        try:
            body = response.json()
        except ValueError:
            return False
        errors = body if isinstance(body, list) else [body]
        return any(isinstance(e, dict) and e.get("errorCode") == "REQUEST_LIMIT_EXCEEDED" for e in errors)


class SalesforceCrm:
    name = "salesforce"

    def __init__(
        self,
        credentials: SecretCredentials,
        base_url: str | None = None,
        *,
        allow_loopback_http: bool = False,
        new_callers: NewCallers | None = None,
        new_caller_object: NewCallerObject = "Lead",
        **http: Any,
    ) -> None:
        """``base_url`` overrides the secret's ``instance_url`` (the template's ``CrmBaseUrl``);
        ``new_callers``: what to do with callers Salesforce does not know (default: park them);
        ``new_caller_object``: what a new caller becomes (``NewCallerObject``)."""
        self._credentials = credentials
        self._base_url = base_url
        self._allow_loopback_http = allow_loopback_http
        self._http_options = http
        self._setup_lock = threading.Lock()
        self._api: _SalesforceHttp | None = None
        self._token_client: CrmHttpClient | None = None
        self._config: _Config | None = None
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self._new_caller_object = new_caller_object
        self._directory = SalesforceCallers(self._http, lambda: self._setup().data_path, lambda: self._setup().callers)
        self._callers = Callers(self._directory, new_callers or NewCallers())
        self._leads: SharedLookups[Customer, str] = SharedLookups()
        if base_url is not None:  # refuse a bad override at once, before any secret is read
            self._api = _SalesforceHttp(
                self.name, base_url, self._auth, allow_loopback_http=allow_loopback_http, **http
            )

    # --- actions -------------------------------------------------------------------------------

    def log_summary(self, note: SummaryNote, call: CrmCall) -> CrmRecord:
        who_id = self.caller(note.customer, note.conversation_id, call).record_id
        config = self._setup()
        fields = {
            "Subject": _task_subject(note.summary),
            "Description": _summary_text(note.summary, note.conversation_id),
            "Status": "Completed",
            "Priority": "Normal",
            "ActivityDate": note.occurred_at.date().isoformat(),
            "WhoId": who_id,
        }
        task_id = self._upsert("Task", config.task_field, note.conversation_id, fields, call)
        return CrmRecord("task", task_id, {"who_id": who_id})

    def open_ticket(self, ticket: SupportTicket, call: CrmCall) -> CrmRecord:
        caller_id = self.caller(ticket.customer, ticket.conversation_id, call).record_id
        config = self._setup()
        fields: dict[str, Any] = {
            "Subject": ticket.subject,
            "Description": f"{ticket.description}\n\nRef: aftercall-{ticket.conversation_id}".strip(),
            "Priority": CASE_PRIORITY[ticket.priority],
        }
        if caller_id.startswith(LEAD_PREFIX):
            # A Case links to a Contact; for a Lead it carries the caller's details as Web-to-Case does.
            who = {"SuppliedPhone": ticket.customer.phone, "SuppliedEmail": ticket.customer.email}
            fields |= {name: value for name, value in who.items() if value}
            extra = {"lead_id": caller_id}
        else:
            fields["ContactId"] = caller_id
            extra = {"contact_id": caller_id}
        # No Status: a new Case takes the org's default, and a retry must not reopen a worked one.
        case_id = self._upsert("Case", config.case_field, ticket.conversation_id, fields, call)
        return CrmRecord("case", case_id, extra)

    def log_disposition(self, disposition: Disposition, call: CrmCall) -> CrmRecord:
        caller_id = self.caller(disposition.customer, disposition.conversation_id, call).record_id
        lead_id = caller_id if caller_id.startswith(LEAD_PREFIX) else self._find_lead(disposition.customer, call)
        if lead_id is None:
            raise _unknown(disposition.customer, "open (unconverted) Lead")
        config = self._setup()
        status = config.lead_status[disposition.disposition]
        try:
            # Setting a field to a value is naturally idempotent: safe to retry as is.
            self._http().request(
                "PATCH",
                f"{config.data_path}/sobjects/Lead/{lead_id}",
                call,
                json={"Status": status},
                safe_to_retry=True,
            )
        except CrmRequestError as exc:
            if exc.status == 400 and "picklist" in str(exc).lower():
                raise ConfigurationError(
                    f"salesforce refused Lead Status {status!r} for disposition {disposition.disposition!r}: "
                    "set 'lead_status_map' in the CRM secret to your org's Lead Status values (docs/crm.md)"
                ) from exc
            raise
        return CrmRecord("lead", lead_id, {"status": status})

    # --- callers ---------------------------------------------------------------------------------

    def caller(self, customer: Customer, conversation_id: str, call: CrmCall) -> CallerMatch:
        """The caller's Contact or Lead: found by SOSL, or (``UnknownCallerPolicy=create``) upserted
        once (see :mod:`aftercall.crm.salesforce_callers`)."""
        return self._callers.resolve(customer, conversation_id, call)

    def _find_lead(self, customer: Customer, call: CrmCall) -> str | None:
        """The caller's open Lead when their record is a Contact (a disposition sets a Lead Status)."""
        found = self._leads.get(
            customer, lambda: self._directory.search(customer, ("Lead",), call) or "", call.deadline.remaining()
        )
        return found or None

    # --- upsert ----------------------------------------------------------------------------------

    def _upsert(self, sobject: str, field: str, conversation_id: str, fields: Mapping[str, Any], call: CrmCall) -> str:
        """Create or update the record whose ``field`` is the conversation id; returns its Id."""
        path = f"{self._setup().data_path}/sobjects/{sobject}/{field}/{quote(conversation_id, safe='')}"
        try:
            body = self._http().request("PATCH", path, call, json=dict(fields), safe_to_retry=True)
            if isinstance(body, dict) and body.get("id"):
                return str(body["id"])
            # API versions before 46.0 answer an update with 204 and no body: read the Id back.
            record = self._http().request("GET", path, call, params={"fields": "Id"}, safe_to_retry=True)
        except CrmRequestError as exc:
            if exc.status == 404:
                raise ConfigurationError(
                    f"salesforce: {sobject} has no external-id field {field!r} the integration user can see; "
                    "create it as described in docs/crm.md"
                ) from exc
            if exc.status == 300:
                raise CrmRequestError(
                    f"salesforce: more than one {sobject} has {field} = {conversation_id!r}; "
                    "mark the field Unique (docs/crm.md)",
                    300,
                ) from exc
            raise
        return str(record["Id"])

    # --- setup and auth --------------------------------------------------------------------------

    def _setup(self) -> _Config:
        """Read the secret once for the URLs, API version and field names; build the clients."""
        with self._setup_lock:
            if self._config is not None:
                return self._config
            secret = self._credentials.get()
            config = _Config.from_secret(secret, self._new_caller_object)
            instance_url = self._base_url or secret["instance_url"]
            if self._api is None:
                self._api = _SalesforceHttp(
                    self.name,
                    instance_url,
                    self._auth,
                    allow_loopback_http=self._allow_loopback_http,
                    **self._http_options,
                )
            self._token_client = CrmHttpClient(
                self.name,
                secret.get("login_url") or instance_url,
                _no_auth,
                allow_loopback_http=self._allow_loopback_http,
                **self._http_options,
            )
            self._config = config
            return config

    def _http(self) -> _SalesforceHttp:
        self._setup()
        assert self._api is not None
        return self._api

    @property
    def http(self) -> _SalesforceHttp:
        """The REST API client (built on first use from the secret's ``instance_url``)."""
        return self._http()

    def _auth(self, force: bool) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self._access_token(force)}"}

    def _access_token(self, force: bool) -> str:
        # One fetch at a time: concurrent actions of an invocation wait for the same token.
        with self._token_lock:
            if self._token is None or force:
                self._token = None
                self._token = self._fetch_token(force)
            return self._token

    def _fetch_token(self, force: bool) -> str:
        call = current_call() or CrmCall(Deadline.after(_TOKEN_BUDGET_SECONDS))
        secret = self._credentials.get(force)
        try:
            return self._request_token(secret, call)
        except (CrmRequestError, CrmCredentialsError) as first:
            if force:
                raise _refused(first) from None
        # The cached secret may be older than a rotation: read it again, once.
        try:
            return self._request_token(self._credentials.get(True), call)
        except (CrmRequestError, CrmCredentialsError) as again:
            raise _refused(again) from None

    def _request_token(self, secret: Mapping[str, str], call: CrmCall) -> str:
        self._setup()
        assert self._token_client is not None
        body = self._token_client.request(
            "POST",
            TOKEN_PATH,
            call,
            data={
                "grant_type": "client_credentials",
                "client_id": secret["client_id"],
                "client_secret": secret["client_secret"],
            },
            safe_to_retry=True,  # asking for a token twice is harmless
        )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise CrmCredentialsError("salesforce: the token endpoint answered without an access_token")
        return token


class _Config:
    """The secret's optional settings, validated once (they end up in URLs and field names)."""

    def __init__(
        self,
        api_version: str,
        task_field: str,
        case_field: str,
        lead_status: dict[str, str],
        callers: CallerSettings,
    ) -> None:
        self.callers = callers
        self.api_version = api_version
        self.task_field = task_field
        self.case_field = case_field
        self.lead_status = lead_status
        self.data_path = f"/services/data/{api_version}"

    @classmethod
    def from_secret(cls, secret: Mapping[str, str], new_caller_object: str = "Lead") -> _Config:
        version = secret.get("api_version") or DEFAULT_API_VERSION
        if not version.startswith("v"):
            version = f"v{version}"
        if not _API_VERSION.match(version):
            raise ConfigurationError(f"salesforce: api_version {version!r} in the CRM secret is not like 'v62.0'")
        fields = {}
        for key in ("task_external_id_field", "case_external_id_field"):
            value = secret.get(key) or DEFAULT_EXTERNAL_ID_FIELD
            if not _CUSTOM_FIELD.match(value):
                raise ConfigurationError(
                    f"salesforce: {key} {value!r} in the CRM secret is not a custom field API name (like Foo__c)"
                )
            fields[key] = value
        callers = CallerSettings.read(secret, new_caller_object, _CUSTOM_FIELD)
        return cls(
            version, fields["task_external_id_field"], fields["case_external_id_field"], _lead_status(secret), callers
        )


def _lead_status(secret: Mapping[str, str]) -> dict[str, str]:
    raw = secret.get("lead_status_map")
    if not raw:
        return dict(DEFAULT_LEAD_STATUS)
    try:
        overrides = json.loads(raw)
    except ValueError:
        raise ConfigurationError("salesforce: lead_status_map in the CRM secret is not a JSON object") from None
    if not isinstance(overrides, dict) or not all(isinstance(v, str) and v for v in overrides.values()):
        raise ConfigurationError("salesforce: lead_status_map must map dispositions to Lead Status values (strings)")
    unknown = sorted(set(overrides) - set(DISPOSITIONS))
    if unknown:
        raise ConfigurationError(
            f"salesforce: lead_status_map names unknown disposition(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(DISPOSITIONS))}"
        )
    return {**DEFAULT_LEAD_STATUS, **overrides}


def _no_auth(force: bool) -> Mapping[str, str]:
    """The token endpoint takes the client credentials in its form body, not in a header."""
    return {}


def _refused(exc: Exception) -> CrmCredentialsError:
    return CrmCredentialsError(f"salesforce refused the client credentials even after re-reading the secret: {exc}")


def _unknown(customer: Customer, what: str) -> UnknownContactError:
    if not customer.phone and not customer.email:
        return UnknownContactError(
            "the conversation has no customer phone number or email to find a Salesforce record by"
        )
    return UnknownContactError(
        f"no Salesforce {what} with phone {mask_phone(customer.phone)} or email {mask_email(customer.email)}"
    )


# --- text ----------------------------------------------------------------------------------------------


def _task_subject(summary: Mapping[str, Any]) -> str:
    topic = summary.get("topic") or summary.get("last_topic")
    return f"Call summary: {topic}"[:255] if topic else "Call summary"


def _summary_text(summary: Mapping[str, Any], conversation_id: str) -> str:
    """One ``key: value`` line per summary field (Task descriptions are plain text)."""
    lines = [f"{key}: {value if isinstance(value, str) else json.dumps(value)}" for key, value in summary.items()]
    return ("\n".join(lines) + f"\n\nRef: aftercall-{conversation_id}")[:32_000]
