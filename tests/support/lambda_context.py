"""A Lambda context for tests: what Powertools and the runtime read from the real one."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import cast

from aws_lambda_powertools.utilities.typing import LambdaContext

FUNCTION_NAME = "aftercall-sandbox-EndHandler"
FUNCTION_ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"


@dataclass
class FakeLambdaContext:
    """Duck-typed like Lambda's context object; the deadline is ``timeout`` seconds from creation."""

    timeout: float = 30.0
    function_name: str = FUNCTION_NAME
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = FUNCTION_ARN
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name: str = "2026/11/25/[$LATEST]0123456789abcdef"
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def lambda_context(timeout: float = 30.0) -> LambdaContext:
    """A fresh context (new request id), typed as the runtime expects it."""
    return cast(LambdaContext, FakeLambdaContext(timeout=timeout))
