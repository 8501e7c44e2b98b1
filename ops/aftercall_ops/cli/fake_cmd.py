"""``aftercall fake hubspot|salesforce|zendesk|webhook``: run one fake CRM on loopback until Ctrl-C.

Each prints its URL as the first line on stdout (scripts read it), then serves until interrupted.
"""

from __future__ import annotations

from typing import Annotated

import typer

fake = typer.Typer(
    name="fake",
    help="Run a fake CRM (or webhook receiver) on loopback until Ctrl-C; its URL is the first line printed.",
    no_args_is_help=True,
)

HostOption = Annotated[str, typer.Option(help="Address to bind (default loopback).")]
PortOption = Annotated[int, typer.Option(min=0, max=65535, help="Port (0 picks a free one).")]
SeedsOption = Annotated[list[str] | None, typer.Option(metavar="PHONE[,EMAIL]", show_default=False)]


def _pairs(specs: list[str] | None) -> list[tuple[str | None, str | None]]:
    """``PHONE[,EMAIL]`` seeds as (phone, email), either may be empty."""
    pairs = []
    for spec in specs or []:
        phone, _, email = spec.partition(",")
        pairs.append((phone or None, email or None))
    return pairs


@fake.command()
def hubspot(
    host: HostOption = "127.0.0.1",
    port: PortOption = 0,
    token: Annotated[str | None, typer.Option(help="The valid access token (default: the fake's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for probabilistic faults.")] = 0,
    rate_limit: Annotated[float | None, typer.Option(help="Requests per second before 429.")] = None,
    contact: SeedsOption = None,
) -> None:
    """The fake HubSpot CRM (``--contact PHONE[,EMAIL]`` seeds a contact; repeatable)."""
    from aftercall_ops.fakes.http import serve_until_signalled
    from aftercall_ops.fakes.hubspot import DEFAULT_TOKEN, FakeCrm

    token = token or DEFAULT_TOKEN
    crm = FakeCrm(host=host, port=port, token=token, seed=seed, rate_limit_per_second=rate_limit)
    for phone, email in _pairs(contact):
        crm.add_contact(phone=phone, email=email)
    banner = f"fake HubSpot CRM on {{url}} (token {token!r}); admin at {{url}}/__admin/state"
    raise typer.Exit(serve_until_signalled(crm, banner))


@fake.command()
def salesforce(
    host: HostOption = "127.0.0.1",
    port: PortOption = 0,
    client_id: Annotated[str | None, typer.Option(help="The connected app's client id (default: the fake's).")] = None,
    client_secret: Annotated[str | None, typer.Option(help="Its client secret (default: the fake's).")] = None,
    contact: SeedsOption = None,
    lead: SeedsOption = None,
) -> None:
    """The fake Salesforce org (``--contact``/``--lead PHONE[,EMAIL]`` seed records; repeatable)."""
    from aftercall_ops.fakes.http import serve_until_signalled
    from aftercall_ops.fakes.salesforce import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, FakeSalesforce

    org = FakeSalesforce(
        host=host,
        port=port,
        client_id=client_id or DEFAULT_CLIENT_ID,
        client_secret=client_secret or DEFAULT_CLIENT_SECRET,
    )
    for phone, email in _pairs(contact):
        org.add_contact(phone, email)
    for phone, email in _pairs(lead):
        org.add_lead(phone, email)
    raise typer.Exit(serve_until_signalled(org, "fake Salesforce on {url}; admin at {url}/__admin/state"))


@fake.command()
def zendesk(
    host: HostOption = "127.0.0.1",
    port: PortOption = 0,
    email: Annotated[str | None, typer.Option(help="The agent's email (default: the fake's).")] = None,
    api_token: Annotated[str | None, typer.Option(help="The API token (default: the fake's).")] = None,
    user: SeedsOption = None,
) -> None:
    """The fake Zendesk account (``--user PHONE[,EMAIL]`` seeds an end user; repeatable)."""
    from aftercall_ops.fakes.http import serve_until_signalled
    from aftercall_ops.fakes.zendesk import DEFAULT_API_TOKEN, DEFAULT_EMAIL, FakeZendesk

    account = FakeZendesk(host=host, port=port, email=email or DEFAULT_EMAIL, api_token=api_token or DEFAULT_API_TOKEN)
    for phone, user_email in _pairs(user):
        account.add_user(phone, user_email)
    raise typer.Exit(serve_until_signalled(account, "fake Zendesk on {url}; admin at {url}/__admin/state"))


@fake.command()
def webhook(
    host: HostOption = "127.0.0.1",
    port: PortOption = 0,
    secret: Annotated[
        str | None, typer.Option(help="The Standard Webhooks signing secret (default: the fake's).")
    ] = None,
    path: Annotated[str | None, typer.Option(help="The path it receives on (default: the fake's).")] = None,
) -> None:
    """A webhook receiver that verifies Standard Webhooks signatures."""
    from aftercall_ops.fakes.http import serve_until_signalled
    from aftercall_ops.fakes.webhook_receiver import DEFAULT_PATH, DEFAULT_SECRET, FakeWebhookReceiver

    path = path or DEFAULT_PATH
    receiver = FakeWebhookReceiver(host=host, port=port, secret=secret or DEFAULT_SECRET, path=path)
    banner = f"webhook receiver at {{url}}{path}; admin at {{url}}/__admin/state"
    raise typer.Exit(serve_until_signalled(receiver, banner))
