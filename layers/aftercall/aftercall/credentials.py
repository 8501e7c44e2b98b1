"""JSON secrets from Secrets Manager (the CRM's credentials, ingest's signing keys), through
Powertools Parameters with caching.

A warm function reads the secret at most once per ``max_age`` seconds; on a 401 the CRM client
asks for a forced re-read once, which is how a rotated secret is picked up.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from aftercall import aws
from aftercall.errors import SecretError


class SecretCredentials:
    """The JSON secret ``secret_id``, which must hold every key in ``required``.

    ``what`` names the secret in every :class:`SecretError` ("CRM secret", "ingest signing secret").
    """

    def __init__(
        self, secret_id: str, required: tuple[str, ...], max_age: int = 300, *, what: str = "CRM secret"
    ) -> None:
        if not secret_id:
            raise SecretError(f"no {what} configured: set CRM_SECRET_ID to the secret's name or ARN")
        self.what = what
        self.secret_id = secret_id
        self.required = required
        self.max_age = max_age
        self._provider: SecretsProvider | None = None
        self._lock = threading.Lock()

    def get(self, force: bool = False) -> dict[str, str]:
        with self._lock:
            if self._provider is None:
                self._provider = SecretsProvider(boto3_client=aws.client("secretsmanager"))
            try:
                value: Any = self._provider.get(
                    self.secret_id, transform="json", max_age=self.max_age, force_fetch=force
                )
            except TransformParameterError:
                raise SecretError(f"{self.what} {self.secret_id!r} is not a JSON object") from None
            except GetParameterError as exc:
                reason = "it does not exist" if "ResourceNotFound" in str(exc) else str(exc)[:300]
                raise SecretError(f"cannot read {self.what} {self.secret_id!r}: {reason}") from None
        if not isinstance(value, dict):
            raise SecretError(f"{self.what} {self.secret_id!r} is not a JSON object")
        missing = [key for key in self.required if not isinstance(value.get(key), str) or not value.get(key)]
        if missing:
            raise SecretError(
                f"{self.what} {self.secret_id!r} lacks {', '.join(repr(k) for k in missing)} (expected keys: "
                f"{', '.join(self.required)})"
            )
        # Optional non-string values (a Salesforce lead-status map) stay readable as JSON text.
        return {key: item if isinstance(item, str) else json.dumps(item) for key, item in value.items()}
