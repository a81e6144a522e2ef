"""Protected AWS calls: rate limit, circuit breaker, typed errors, in one place.

:func:`protected_call` is how every protected AWS call is made: the rate limiter (if any) is
acquired (and again for each of botocore's retries of the call, see :mod:`layer_utils.attempts`),
the circuit breaker admits the call (or raises ``CircuitOpenError``), the call runs, the
breaker records its outcome, and AWS errors leave as the typed errors of the error model through
:func:`handle_aws_error` (docs/ARCHITECTURE.md, "Error model").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.attempts import limited_call
from layer_utils.errors import QUIET_CLASSES, error_details, to_operation_error
from layer_utils.telemetry import logger

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from layer_utils.circuit import CircuitRegistry

R = TypeVar("R")

SEND_OPERATION = "sqs:SendMessageBatch"
"""The circuit name of ``SendMessageBatch`` to the import queue (the provider's and the importer's)."""


class Limiter(Protocol):
    """A rate limiter (``RateLimiter`` of the importer) as :func:`protected_call` uses it."""

    def acquire(self, api: str) -> float:
        """Block until a call to ``api`` is allowed; return the seconds waited."""
        ...


def handle_aws_error(
    error: BaseException, operation: str, context: Mapping[str, Any] | None = None
) -> NoReturn:
    """Log an AWS failure and raise the typed exception.

    Logs one structured record (operation, error_code, error_message, request_id, error_class,
    http_status, context): a warning for throttled, transient, already-exists and not-found errors
    (expected, handled by callers), an error otherwise. It counts nothing: only the circuit breaker
    counts failures, of the calls it admitted.

    Args:
        error: a botocore ``ClientError`` or ``BotoCoreError`` (or built-in ``TimeoutError``/
            ``ConnectionError``).
        operation: the circuit-style name of the call, e.g. ``iot:RegisterCertificateWithoutCA``.
        context: extra fields for the log record (e.g. the entry locator).

    Raises:
        AwsOperationError: always, the subclass for the error's class, chained ``from error``.
        TypeError: ``error`` is not an AWS or network error (a programming error; chained from it).

    """
    if not isinstance(error, (ClientError, BotoCoreError, TimeoutError, ConnectionError)):
        raise TypeError(
            f"handle_aws_error expects a botocore error, got {type(error).__name__} for {operation}."
        ) from error
    typed = to_operation_error(error, operation)
    _code, _message, _request_id, status = error_details(error)
    fields = {
        "operation": operation,
        "error_code": typed.code,
        "error_message": typed.message,
        "request_id": typed.request_id,
        "error_class": typed.error_class.value,
        "http_status": status,
        "context": dict(context or {}),
    }
    log = logger.warning if typed.error_class in QUIET_CLASSES else logger.error
    log(str(typed), extra=fields)
    raise typed from error


def protected_call(
    registry: CircuitRegistry,
    operation: str,
    call: Callable[[], R],
    *,
    limiter: Limiter | None = None,
    context: Mapping[str, Any] | None = None,
) -> R:
    """Make one AWS call through the rate limiter and the circuit ``operation``.

    Args:
        registry: the function's circuit registry.
        operation: the circuit name, ``"<service>:<Operation>"``; the limiter is asked for the
            ``<Operation>`` part.
        call: makes the AWS call and returns what the caller needs; it may turn an expected AWS
            answer (e.g. already exists) into a value, which the breaker counts as healthy.
        limiter: the rate limiter, or None for no rate limit.
        context: extra fields for the log record of a failure.

    Returns:
        What ``call`` returned.

    Raises:
        CircuitOpenError: the circuit rejected the call; it was not made.
        AwsOperationError: the call failed (the subclass for the error's class).

    """
    api = operation.partition(":")[2] or operation

    def attempt() -> R:
        try:
            if limiter is None:
                return call()
            limiter.acquire(api)
            # botocore's own retries of this call draw again (layer_utils.attempts).
            with limited_call(limiter, api):
                return call()
        except (ClientError, BotoCoreError) as error:
            handle_aws_error(error, operation, context)

    return registry.call(operation, attempt, None)
