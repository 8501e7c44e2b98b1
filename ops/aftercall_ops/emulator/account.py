"""The local account every emulator module names things in: region, account id, dummy credentials."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"
#: moto's default account; the template resolver uses the same one for ARNs.
ACCOUNT_ID = "123456789012"
LOCAL_ACCESS_KEY = "testing"
LOCAL_SECRET_KEY = "testing"  # noqa: S105 - moto accepts any credentials; these reach nothing real


def now_iso() -> str:
    """Now, as Lambda writes timestamps (milliseconds, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"


def client_environment(moto_url: str, invoke_url: str) -> dict[str, str]:
    """What a client process (the CLI, the AWS CLI, boto3) needs to talk to the local stack's AWS."""
    return {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ENDPOINT_URL_LAMBDA": invoke_url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
        "AWS_MAX_ATTEMPTS": "1",
    }


def local_client(service: str, endpoint: str, *, read_timeout: float) -> Any:
    """A boto3 client for ``service`` at ``endpoint`` with the local credentials; one attempt."""
    return boto3.session.Session().client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=LOCAL_ACCESS_KEY,
        aws_secret_access_key=LOCAL_SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout),
    )
