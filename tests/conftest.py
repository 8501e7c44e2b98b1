"""Shared fixtures: a moto server per test process (AWS), a fake CRM per test, unique resources.

Every test talks to real protocol peers on loopback: boto3 reaches the moto server through
``AWS_ENDPOINT_URL`` exactly as the Lambda would reach AWS, and the HubSpot adapter reaches the
fake CRM over HTTP. Safe under pytest-xdist: each worker starts its own moto server, and every
test's table, queue, secret and CRM are its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Set before any test module imports the runtime (Powertools reads some of these at import), and
# so that nothing can reach a real AWS account or pick up a developer's profile.
_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_MAX_ATTEMPTS": "1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    # Until the moto server is up, point at the discard port: a stray call fails fast, locally.
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Aftercall",
    "POWERTOOLS_SERVICE_NAME": "aftercall",
    "AFTERCALL_LOCAL": "true",
}
os.environ.update(_ENV)
os.environ.pop("AWS_PROFILE", None)

from aftercall import aws  # noqa: E402 - after the environment is set
from aftercall_ops.fakes.hubspot import FakeCrm  # noqa: E402
from tests.support.events import CUSTOMER_EMAIL, CUSTOMER_PHONE  # noqa: E402
from tests.support.stack import HandlerPeers, create_queue, create_secret, create_table, unique  # noqa: E402

# The operator tools' fixtures (ops_target, fault_proxy): tests/support/ops_fixtures.py.
pytest_plugins = ["tests.support.ops_fixtures"]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port for this test process; AWS_ENDPOINT_URL points at it."""
    from moto.server import ThreadedMotoServer

    from aftercall_ops.emulator import moto_fixes

    moto_fixes.apply()  # SQS deletes that lose messages, aws.* sources PutEvents must refuse; see moto_fixes.py
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_ENDPOINT_URL", endpoint)
    aws.reset_clients()  # clients cached before now point at the old endpoint
    yield endpoint
    patch.undo()
    aws.reset_clients()
    server.stop()


@pytest.fixture
def fake_crm() -> Iterator[FakeCrm]:
    """A running fake HubSpot with its own token and one contact: the default events' customer."""
    with FakeCrm(token=unique("pat-na1")) as crm:
        crm.add_contact(
            phone=CUSTOMER_PHONE,
            email=CUSTOMER_EMAIL,
            properties={"firstname": "Jane", "lastname": "Doe", "hs_lead_status": "NEW"},
        )
        yield crm


@pytest.fixture
def stack(moto_endpoint: str, fake_crm: FakeCrm) -> Iterator[HandlerPeers]:
    """This test's idempotency table, failed-events queue and CRM secret, plus the fake CRM."""
    local = HandlerPeers(
        table=create_table(unique("aftercall-idempotency")),
        queue_url=create_queue(unique("aftercall-failed-events")),
        secret_id=create_secret(unique("aftercall/crm"), {"access_token": fake_crm.token}),
        crm=fake_crm,
        contact_id=fake_crm.contacts[0]["id"],
        notifications_topic_arn=aws.client("sns").create_topic(Name=unique("aftercall-notifications"))["TopicArn"],
    )
    yield local
    local.delete()
