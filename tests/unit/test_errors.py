"""Every error the runtime raises on purpose is an ``AftercallError`` whose name says where it comes from."""

from __future__ import annotations

import pytest

from aftercall.errors import AftercallError, CrmCredentialsError, CrmUnavailableError, SecretError
from aftercall.ingest.errors import IngestError, IngestUnavailableError, PayloadError, SignatureError


@pytest.mark.parametrize("error", [IngestError, SignatureError, PayloadError, IngestUnavailableError, SecretError])
def test_ingest_and_secret_errors_are_aftercall_errors(error: type[Exception]) -> None:
    # Given an error class of ingest or of reading a secret
    # When its place in the hierarchy is read, Then one `except AftercallError` covers it
    assert issubclass(error, AftercallError)


def test_a_secret_that_cannot_be_read_is_not_a_crm_error() -> None:
    # Given the error for a missing or malformed secret (the CRM's, or ingest's signing keys)
    # When its ancestry is read, Then nothing calls it a CRM error, and a retry can help once the secret is fixed
    assert not issubclass(SecretError, CrmCredentialsError | CrmUnavailableError)
    assert SecretError.permanent is False
    # And the CRM refusing the credentials stays a CRM error
    assert not issubclass(CrmCredentialsError, SecretError)


def test_ingest_errors_keep_their_answer_and_only_a_bad_payload_is_permanent() -> None:
    # Given one error of each ingest kind
    errors = [
        SignatureError("bad_signature", "m"),
        PayloadError("not_json", "m", status=400),
        IngestUnavailableError("bus_unavailable", "m"),
    ]
    # When their HTTP status and permanence are read
    answers = [(type(e).__name__, e.status, e.reason, e.permanent) for e in errors]
    # Then the status and reason are what the vendor sees, as before
    assert answers == [
        ("SignatureError", 401, "bad_signature", False),
        ("PayloadError", 400, "not_json", True),
        ("IngestUnavailableError", 503, "bus_unavailable", False),
    ]
