"""The fake HubSpot itself: the other tests trust it to speak HubSpot's shapes and to fail on cue.

Driven with plain ``requests`` over loopback, as any client would, never through its internals.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from aftercall_ops.fakes.hubspot import FakeCrm, FakeCrmAdmin, Fault
from tests.support.events import CUSTOMER_EMAIL, CUSTOMER_PHONE

ROOT = Path(__file__).resolve().parents[2]
NOTE = {"hs_timestamp": "2026-11-25T10:00:00Z", "hs_note_body": "<p>Call summary</p><p>Ref: aftercall-conv-1</p>"}


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _auth(crm: FakeCrm) -> dict[str, str]:
    return {"Authorization": f"Bearer {crm.token}"}


def _phone_search(phone: str = CUSTOMER_PHONE) -> dict[str, Any]:
    return {"filterGroups": [{"filters": [{"propertyName": "phone", "operator": "EQ", "value": phone}]}], "limit": 1}


def _note_for(contact_id: str, properties: dict[str, str] = NOTE) -> dict[str, Any]:
    return {
        "properties": properties,
        "associations": [
            {
                "to": {"id": contact_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}],
            }
        ],
    }


def test_requests_without_a_valid_bearer_token_get_hubspots_401(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given the fake CRM with its token
    url = f"{fake_crm.url}/crm/v3/objects/contacts/search"
    # When a request comes without a token, with a wrong one, and with the right one
    missing = http.post(url, json=_phone_search())
    wrong = http.post(url, json=_phone_search(), headers={"Authorization": "Bearer nope"})
    right = http.post(url, json=_phone_search(), headers=_auth(fake_crm))
    # Then only the right one passes, the others get HubSpot's error body
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json()["status"] == "error"
    assert missing.json()["message"].startswith("Authentication credentials not found")


def test_rotating_the_token_invalidates_the_old_one(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given a client holding the current token
    old = _auth(fake_crm)
    url = f"{fake_crm.url}/crm/v3/objects/contacts/search"
    # When the token is rotated
    fake_crm.rotate_token("pat-na1-rotated")
    # Then the old token is refused and the new one accepted
    assert http.post(url, json=_phone_search(), headers=old).status_code == 401
    assert http.post(url, json=_phone_search(), headers=_auth(fake_crm)).status_code == 200


def test_contact_search_ors_groups_ands_filters_and_honours_limit(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given three contacts besides the seeded one
    a = fake_crm.add_contact(phone="+14155550001", email="a@example.com", properties={"lifecyclestage": "lead"})
    b = fake_crm.add_contact(phone="+14155550002", email="b@example.com", properties={"lifecyclestage": "lead"})
    fake_crm.add_contact(phone="+14155550003", email="c@example.com", properties={"lifecyclestage": "customer"})
    url = f"{fake_crm.url}/crm/v3/objects/contacts/search"

    def search(body: dict[str, Any]) -> dict[str, Any]:
        response = http.post(url, json=body, headers=_auth(fake_crm))
        assert response.status_code == 200
        return dict(response.json())

    # When searching with two OR'ed groups, one of which ANDs two filters
    either = search(
        {
            "filterGroups": [
                {"filters": [{"propertyName": "phone", "operator": "EQ", "value": "+14155550001"}]},
                {
                    "filters": [
                        {"propertyName": "email", "operator": "EQ", "value": "B@example.com"},
                        {"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"},
                    ]
                },
            ],
            "limit": 10,
        }
    )
    both_must_hold = search(
        {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "email", "operator": "EQ", "value": "c@example.com"},
                        {"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"},
                    ]
                }
            ]
        }
    )
    limited = search(
        {
            "filterGroups": [{"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}]}],
            "limit": 1,
        }
    )
    # Then the groups are OR'ed, filters AND'ed (EQ ignores case), and limit caps the results
    assert sorted(r["id"] for r in either["results"]) == sorted([a, b])
    assert either["total"] == 2
    assert both_must_hold == {"total": 0, "results": []}
    assert limited["total"] == 2
    assert [r["id"] for r in limited["results"]] == [a]
    assert limited["paging"]["next"]["after"] == "1"


def test_creating_a_note_returns_201_and_stores_it_with_its_association(
    fake_crm: FakeCrm, http: requests.Session
) -> None:
    # Given the seeded contact
    contact_id = fake_crm.contacts[0]["id"]
    # When a note associated with it is created
    response = http.post(f"{fake_crm.url}/crm/v3/objects/notes", json=_note_for(contact_id), headers=_auth(fake_crm))
    # Then HubSpot's create answer comes back and the note is kept, findable by its marker
    assert response.status_code == 201
    created = response.json()
    assert set(created) >= {"id", "properties", "createdAt"}
    assert created["properties"]["hs_note_body"] == NOTE["hs_note_body"]
    (stored,) = fake_crm.notes_for("aftercall-conv-1")
    assert stored["id"] == created["id"]
    assert stored["associations"] == {"contacts": [contact_id]}


def test_creates_are_validated_like_hubspot(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given the seeded contact
    contact_id = fake_crm.contacts[0]["id"]
    url = f"{fake_crm.url}/crm/v3/objects"
    # When a note lacks hs_timestamp, a ticket lacks its stage, and a note points at no contact
    no_timestamp = http.post(f"{url}/notes", json=_note_for(contact_id, {"hs_note_body": "x"}), headers=_auth(fake_crm))
    no_stage = http.post(f"{url}/tickets", json={"properties": {"subject": "x"}}, headers=_auth(fake_crm))
    bad_link = http.post(f"{url}/notes", json=_note_for("999999"), headers=_auth(fake_crm))
    # Then each is refused with 400 naming the problem, and nothing is stored
    assert no_timestamp.status_code == 400
    assert "hs_timestamp" in no_timestamp.json()["message"]
    assert no_stage.status_code == 400
    assert "hs_pipeline_stage" in no_stage.json()["message"]
    assert bad_link.status_code == 400
    assert "associations" in bad_link.json()["message"]
    assert fake_crm.notes == []
    assert fake_crm.tickets == []


def test_note_and_ticket_search_find_the_marker_token(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given a note and a ticket carrying different markers
    contact_id = fake_crm.contacts[0]["id"]
    http.post(f"{fake_crm.url}/crm/v3/objects/notes", json=_note_for(contact_id), headers=_auth(fake_crm))
    ticket = {"subject": "Refund", "content": "Details\n\nRef: aftercall-conv-2", "hs_pipeline_stage": "1"}
    http.post(f"{fake_crm.url}/crm/v3/objects/tickets", json={"properties": ticket}, headers=_auth(fake_crm))

    def search(kind: str, prop: str, token: str) -> list[str]:
        body = {"filterGroups": [{"filters": [{"propertyName": prop, "operator": "CONTAINS_TOKEN", "value": token}]}]}
        answer = http.post(f"{fake_crm.url}/crm/v3/objects/{kind}/search", json=body, headers=_auth(fake_crm))
        time.sleep(0.25)  # HubSpot's search limit: 4 per second
        return [r["id"] for r in answer.json()["results"]]

    # When searching each kind for each marker, once the index has caught up with the writes
    time.sleep(fake_crm.index_lag_seconds)
    # Then a marker finds only the object that carries it
    assert len(search("notes", "hs_note_body", "aftercall-conv-1")) == 1
    assert search("notes", "hs_note_body", "aftercall-conv-2") == []
    assert len(search("tickets", "content", "aftercall-conv-2")) == 1
    assert search("tickets", "content", "aftercall-conv-1") == []


def test_patching_a_contact_updates_it_and_unknown_ids_get_404(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given the seeded contact
    contact_id = fake_crm.contacts[0]["id"]
    body = {"properties": {"hs_lead_status": "IN_PROGRESS"}}
    # When it is patched, and so is an id that does not exist
    ok = http.patch(f"{fake_crm.url}/crm/v3/objects/contacts/{contact_id}", json=body, headers=_auth(fake_crm))
    missing = http.patch(f"{fake_crm.url}/crm/v3/objects/contacts/424242", json=body, headers=_auth(fake_crm))
    # Then the contact carries the new value, and the unknown id is a 404
    assert ok.status_code == 200
    assert ok.json()["properties"]["hs_lead_status"] == "IN_PROGRESS"
    contact = fake_crm.contact(contact_id)
    assert contact is not None
    assert contact["properties"]["hs_lead_status"] == "IN_PROGRESS"
    assert missing.status_code == 404


def test_a_status_fault_applies_times_then_expires(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given a 503 fault on searches for two requests
    fake_crm.add_fault("status", method="POST", path="/crm/v3/objects/contacts/search", status=503, times=2)
    url = f"{fake_crm.url}/crm/v3/objects/contacts/search"
    # When three searches are made and one other request
    statuses = [http.post(url, json=_phone_search(), headers=_auth(fake_crm)).status_code for _ in range(3)]
    other = http.get(f"{fake_crm.url}/crm/v3/objects/contacts/{fake_crm.contacts[0]['id']}", headers=_auth(fake_crm))
    # Then the first two fail, the third passes, the other route was never affected; the log shows it
    assert statuses == [503, 503, 200]
    assert other.status_code == 200
    assert [r.status for r in fake_crm.requests_to("POST", "/crm/v3/objects/contacts/search")] == [503, 503, 200]
    assert fake_crm.faults == []


def test_a_rate_limit_fault_answers_429_with_retry_after(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given a rate-limit fault
    fake_crm.add_fault("rate_limit", retry_after=2, times=1)
    # When a request is made
    response = http.post(
        f"{fake_crm.url}/crm/v3/objects/contacts/search", json=_phone_search(), headers=_auth(fake_crm)
    )
    # Then it is a 429 carrying Retry-After and HubSpot's rate-limit body
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.json()["errorType"] == "RATE_LIMIT"


def test_after_commit_status_applies_the_write_then_answers_500(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given an after-commit fault on note creation
    fake_crm.add_fault("after_commit_status", method="POST", path="/crm/v3/objects/notes", times=1)
    contact_id = fake_crm.contacts[0]["id"]
    # When a note is created
    response = http.post(f"{fake_crm.url}/crm/v3/objects/notes", json=_note_for(contact_id), headers=_auth(fake_crm))
    # Then the client sees a 500 although the note exists (the ambiguous case)
    assert response.status_code == 500
    assert len(fake_crm.notes_for("aftercall-conv-1")) == 1


def test_a_reset_fault_closes_the_connection_without_an_answer(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given a reset fault on note creation
    fake_crm.add_fault("reset", method="POST", path="/crm/v3/objects/notes", times=1)
    contact_id = fake_crm.contacts[0]["id"]
    # When a note is created
    # Then the client's connection breaks, no note is stored, and the log shows no answer
    with pytest.raises(requests.exceptions.ConnectionError):
        http.post(f"{fake_crm.url}/crm/v3/objects/notes", json=_note_for(contact_id), headers=_auth(fake_crm))
    assert fake_crm.notes == []
    (record,) = fake_crm.requests_to("POST", "/crm/v3/objects/notes")
    assert (record.status, record.fault) == (None, "reset")


def test_a_hang_fault_outlasts_the_client_timeout(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given a fault that never answers searches
    fake_crm.add_fault("hang", path="/crm/v3/objects/contacts/search", then="never")
    # When a client with a short read timeout searches
    # Then it times out, and the fake's later answers are unaffected once the fault is cleared
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(
            f"{fake_crm.url}/crm/v3/objects/contacts/search",
            json=_phone_search(),
            headers=_auth(fake_crm),
            timeout=(1, 0.2),
        )
    fake_crm.clear_faults()
    response = http.post(
        f"{fake_crm.url}/crm/v3/objects/contacts/search", json=_phone_search(), headers=_auth(fake_crm)
    )
    assert response.status_code == 200


def test_a_trickle_fault_applies_the_write_then_drips_the_body(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given a trickle fault on note creation, a byte every 50 ms
    fake_crm.add_fault("trickle", method="POST", path="/crm/v3/objects/notes", interval=0.05, times=1)
    contact_id = fake_crm.contacts[0]["id"]
    # When a note is created by a client that waits at most 0.5 s for each read
    response = http.post(
        f"{fake_crm.url}/crm/v3/objects/notes",
        json=_note_for(contact_id),
        headers=_auth(fake_crm),
        timeout=(1, 0.5),
        stream=True,
    )
    # Then the note is stored and the status arrives at once, while the body comes a byte at a time:
    # every read gets its byte within the timeout, so the client never times out
    assert response.status_code == 201
    assert len(fake_crm.notes_for("aftercall-conv-1")) == 1
    first = b"".join(response.raw.read(1) for _ in range(6))
    assert first == b'{"id":'
    response.close()
    (record,) = fake_crm.requests_to("POST", "/crm/v3/objects/notes")
    assert record.fault == "trickle"


def test_a_latency_fault_delays_a_normal_answer(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given 50 ms of added latency
    fake_crm.add_fault("latency", ms=50)
    # When a search is made
    response = http.post(
        f"{fake_crm.url}/crm/v3/objects/contacts/search", json=_phone_search(), headers=_auth(fake_crm)
    )
    # Then it answers normally, and the fake held it at least that long
    assert response.status_code == 200
    (record,) = fake_crm.requests
    assert record.answered is not None
    assert record.answered - record.received >= 0.05
    assert record.fault == "latency"


def test_probabilistic_faults_are_reproducible_from_the_seed() -> None:
    # Given two fake CRMs with the same seed and a 50 % fault
    def pattern(seed: int) -> list[int]:
        with FakeCrm(seed=seed, token="t") as crm, requests.Session() as session:
            crm.add_fault("status", status=503, probability=0.5)
            url = f"{crm.url}/crm/v3/objects/contacts/1001"  # no such contact: 404 unless a fault answers
            return [session.get(url, headers={"Authorization": "Bearer t"}).status_code for _ in range(20)]

    # When the same requests are made to each
    first, second = pattern(7), pattern(7)
    # Then they fail on the same requests, and some (not all) fail
    assert first == second
    assert {404, 503} == set(first)


def test_the_global_rate_limit_answers_429_above_the_rate() -> None:
    # Given a fake CRM allowing one request per 100 seconds
    with FakeCrm(token="t", rate_limit_per_second=0.01) as crm, requests.Session() as session:
        url = f"{crm.url}/crm/v3/objects/contacts/search"
        headers = {"Authorization": "Bearer t"}
        # When two requests follow each other
        first = session.post(url, json={}, headers=headers)
        second = session.post(url, json={}, headers=headers)
    # Then the second is rate limited with a whole-second Retry-After
    assert first.status_code == 200
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1


def test_fault_rules_are_validated() -> None:
    # Given rule definitions with mistakes
    # When they are parsed
    # Then each is refused with a message naming the mistake
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault.from_json({"kind": "explode"})
    with pytest.raises(ValueError, match="unknown fault field"):
        Fault.from_json({"kind": "status", "stauts": 500})
    with pytest.raises(ValueError, match="probability"):
        Fault.from_json({"kind": "status", "probability": 2})


def test_the_admin_endpoints_drive_it_from_another_process(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given an admin client that only knows the URL
    admin = FakeCrmAdmin(fake_crm.url)
    # When it seeds a contact, adds a fault, rotates the token and reads the state
    contact_id = admin.add_contact(phone="+14155550999", email="admin@example.com")
    admin.add_faults([{"kind": "status", "status": 502, "method": "POST", "times": 1}])
    admin.rotate_token("pat-na1-from-admin")
    url = f"{fake_crm.url}/crm/v3/objects/contacts/search"
    headers = {"Authorization": "Bearer pat-na1-from-admin"}
    faulted = http.post(url, json=_phone_search("+14155550999"), headers=headers)
    found = http.post(url, json=_phone_search("+14155550999"), headers=headers)
    state = admin.state()
    # Then all of it took effect, and the state reports contacts and request counts
    assert faulted.status_code == 502
    assert [r["id"] for r in found.json()["results"]] == [contact_id]
    assert {c["id"] for c in state["contacts"]} == {fake_crm.contacts[0]["id"], contact_id}
    assert state["requests"]["by_status"] == {"502": 1, "200": 1}
    assert [r["status"] for r in admin.requests()] == [502, 200]
    # And clearing faults over HTTP clears them
    admin.add_faults([{"kind": "status"}])
    admin.clear_faults()
    assert admin.state()["faults"] == []


def test_admin_refuses_bad_input_with_400(fake_crm: FakeCrm, http: requests.Session) -> None:
    # Given the admin endpoints
    # When a fault rule is malformed and a token is missing
    bad_fault = http.post(f"{fake_crm.url}/__admin/faults", json=[{"kind": "nope"}])
    bad_token = http.post(f"{fake_crm.url}/__admin/tokens", json={})
    # Then both are refused naming the problem, and nothing changed
    assert bad_fault.status_code == 400
    assert "unknown fault kind" in bad_fault.json()["message"]
    assert bad_token.status_code == 400
    assert fake_crm.faults == []


def test_stop_releases_hanging_requests_and_closes_connections() -> None:
    # Given a request hanging forever on a running fake
    crm = FakeCrm(token="t").start()
    crm.add_fault("hang", then="never")
    session = requests.Session()
    url = f"{crm.url}/crm/v3/objects/contacts/search"
    # When the fake stops while the client waits
    errors: list[BaseException] = []

    def call() -> None:
        try:
            session.post(url, json={}, headers={"Authorization": "Bearer t"}, timeout=(1, 10))
        except requests.exceptions.RequestException as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    while not crm.requests:
        threading.Event().wait(0.01)
    crm.stop()
    worker.join(timeout=10)
    # Then the client gets a connection error (not a timeout) and the thread is done
    assert not worker.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], requests.exceptions.ConnectionError)


def test_aftercall_fake_hubspot_prints_its_url_and_serves() -> None:
    # Given `aftercall fake hubspot` run as a program with a seeded contact
    process = subprocess.Popen(  # noqa: S603 - our own command, fixed arguments
        [
            sys.executable,
            "-m",
            "aftercall_ops.cli",
            "fake",
            "hubspot",
            "--port",
            "0",
            "--token",
            "t",
            "--contact",
            f"{CUSTOMER_PHONE},{CUSTOMER_EMAIL}",
        ],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "ops"), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        # When its first output line is read
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        # Then it is the URL of a working fake CRM that knows the contact
        assert url.startswith("http://127.0.0.1:")
        response = requests.post(
            f"{url}/crm/v3/objects/contacts/search",
            json=_phone_search(),
            headers={"Authorization": "Bearer t"},
            timeout=5,
        )
        assert response.json()["total"] == 1
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
