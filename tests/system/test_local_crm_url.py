"""``aftercall local --crm-url``: the local stack against another CRM endpoint than its own fake.

The other endpoint here is a second fake HubSpot on loopback with its own token and contacts, as a
team would point the stack at a CRM sandbox: the End function's requests must reach it, with the
token from the file, and nothing may reach the stack's own fake.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pytest

from aftercall.crm.hubspot import marker
from aftercall_ops.cli.local_cmd import crm_secret_from_file
from aftercall_ops.emulator.stack import LocalStack
from aftercall_ops.fakes.hubspot import FakeCrm
from aftercall_ops.generate import CUSTOMERS, conversation


def test_the_local_stack_writes_to_the_crm_named_with_crm_url(tmp_path: Path) -> None:
    # Given another HubSpot endpoint with a token of its own, knowing one customer, and the token in a file
    token = f"pat-sandbox-{uuid.uuid4().hex[:12]}"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    customer = CUSTOMERS[3]
    with FakeCrm(token=token) as sandbox:
        contact_id = sandbox.add_contact(phone=customer.typed_phone, email=customer.email)
        detail = conversation(random.Random(uuid.uuid4().int), 1, customer=customer)
        detail["state"]["support_needed"] = False
        # When the local stack runs against it and a conversation with that customer arrives
        with LocalStack(
            "aftercall-test-crm-url",
            workers=1,
            state_dir=tmp_path / "state",
            crm_url=sandbox.url,
            crm_secret=crm_secret_from_file(token_file),
        ) as local:
            answer = local.client("events").put_events(
                Entries=[
                    {
                        "EventBusName": local.outputs["EventBusName"],
                        "Source": local.outputs["EventSource"],
                        "DetailType": "Conversation Ended",
                        "Detail": json.dumps(detail),
                    }
                ]
            )
            assert answer["FailedEntryCount"] == 0
            local.wait_idle(timeout=90)
            counts = local.counts()
            own_fake_requests = local.crm.requests
        # Then the note is in that CRM, on that contact, and the stack's own fake saw nothing
        (note,) = sandbox.notes_for(marker(detail["conversation_id"]))
        assert note["associations"] == {"contacts": [contact_id]}
        assert counts["succeeded"] == 1
        assert own_fake_requests == []


@pytest.mark.parametrize("url", ["http://crm.example.com", "ftp://127.0.0.1:9/"])
def test_crm_url_takes_https_or_plain_http_to_loopback_only(url: str) -> None:
    # Given a CRM URL that would send the secret in the clear over a network, or is not HTTP
    # When the local stack is set up with it
    # Then it is refused before anything starts
    with pytest.raises(ValueError, match="not allowed: outbound calls use HTTPS"):
        LocalStack("aftercall-test-crm-url-refused", crm_url=url)


def test_a_token_file_holds_a_token_or_a_whole_secret(tmp_path: Path) -> None:
    # Given a bare token, a JSON secret and an empty file
    bare, whole, empty = tmp_path / "bare", tmp_path / "whole", tmp_path / "empty"
    bare.write_text("pat-na1-abc\n")
    whole.write_text(json.dumps({"subdomain": "acme", "email": "ops@acme.test", "api_token": "t"}))
    empty.write_text("  \n")
    # When they are read
    # Then the token becomes HubSpot's access_token, the JSON object is taken whole, the empty file is refused
    assert crm_secret_from_file(bare) == {"access_token": "pat-na1-abc"}
    assert crm_secret_from_file(whole)["subdomain"] == "acme"
    with pytest.raises(ValueError, match="is empty"):
        crm_secret_from_file(empty)
