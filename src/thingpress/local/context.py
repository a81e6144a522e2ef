"""A fake Lambda context for invoking handlers in-process.

It subclasses Powertools' `LambdaContext` so handlers typed against it (and Powertools' Logger,
which reads `function_name`, `memory_limit_in_mb`, `invoked_function_arn`, `aws_request_id`) see
the attributes the Lambda runtime provides. The remaining time comes from an injectable clock, so
tests can make a handler run out of time without sleeping.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from aws_lambda_powertools.utilities.typing import LambdaContext

__all__ = ["FakeLambdaContext", "function_arn"]


def function_arn(function_name: str, *, region: str = "us-east-1", account: str = "123456789012") -> str:
    """Return the ARN of a Lambda function from its name, region and account."""
    return f"arn:aws:lambda:{region}:{account}:function:{function_name}"


class FakeLambdaContext(LambdaContext):
    """The context object passed to a handler invoked locally.

    The deadline is fixed at construction: `get_remaining_time_in_millis()` is
    ``timeout - (clock() - start)``.

    Args:
        function_name: The function name.
        timeout_seconds: Its timeout.
        memory_limit_in_mb: Its memory size.
        clock: Monotonic seconds.
        region: The region of the function's ARN.
        account: The account of the function's ARN.
        aws_request_id: The request id (default a new UUID).

    """

    def __init__(
        self,
        function_name: str,
        *,
        timeout_seconds: float = 3.0,
        memory_limit_in_mb: int = 128,
        clock: Callable[[], float] = time.monotonic,
        region: str = "us-east-1",
        account: str = "123456789012",
        aws_request_id: str | None = None,
    ) -> None:
        """Start the invocation clock now; see the class docstring for the arguments."""
        self._function_name = function_name
        self._function_version = "$LATEST"
        self._invoked_function_arn = function_arn(function_name, region=region, account=account)
        self._memory_limit_in_mb = memory_limit_in_mb
        self._aws_request_id = aws_request_id or str(uuid.uuid4())
        self._log_group_name = f"/aws/lambda/{function_name}"
        self._log_stream_name = f"local/[$LATEST]{uuid.uuid4().hex}"
        self._tenant_id = None
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self.started = clock()
        self.deadline = self.started + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        """Return the milliseconds left before the function's timeout, never below zero."""
        return max(0, int((self.deadline - self.clock()) * 1000))

    def timed_out(self) -> bool:
        """Return whether the function's timeout has passed (Lambda would have stopped the handler)."""
        return self.clock() > self.deadline
