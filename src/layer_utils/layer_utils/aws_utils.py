"""AWS client factory, the Thingpress error model and name validation helpers.

Clients: :func:`get_client` returns one cached boto3 client per (service, region, endpoint,
configuration) per process. Configuration comes from the environment:

* ``THINGPRESS_RETRY_MODE``: botocore retry mode, ``standard`` (default) or ``adaptive``;
* ``THINGPRESS_MAX_ATTEMPTS``: botocore total attempts, default 4;
* ``THINGPRESS_CONNECT_TIMEOUT`` / ``THINGPRESS_READ_TIMEOUT``: seconds, defaults 5 and 20;
* ``THINGPRESS_MAX_POOL_CONNECTIONS``: connection pool size, default 32.

Endpoints follow boto3's own convention (``AWS_ENDPOINT_URL_<SERVICE>``, then ``AWS_ENDPOINT_URL``,
then the shared config file), resolved by botocore's own provider, so a local emulator needs no
special code path. The region comes from ``AWS_REGION``, then ``AWS_DEFAULT_REGION``, then the
config file.

Errors: :func:`classify_error` maps any AWS failure to an :class:`ErrorClass`;
:func:`handle_aws_error` logs it, feeds the circuit breaker and raises the typed
:class:`AwsOperationError` subclass. Besides the classes of the architecture contract there is
``conflict`` (optimistic-concurrency failures such as ``ConditionalCheckFailedException`` or
``TransactionCanceledException``): the request was valid and the service healthy, but the state
changed under it, which callers treat differently from bad input.
"""

from __future__ import annotations

import enum
import os
import re
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn, overload

import boto3
import botocore.session
from botocore.config import Config
from botocore.configprovider import ConfiguredEndpointProvider
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from layer_utils.telemetry import install_call_metrics, logger

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_iot import IoTClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

# ---------------------------------------------------------------------------------------- clients

DEFAULT_RETRY_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_MAX_POOL_CONNECTIONS = 32
RETRY_MODES = ("standard", "adaptive")

_clients: dict[tuple[str, str | None, str | None, tuple[Any, ...]], Any] = {}
_clients_lock = threading.Lock()
_session_holder: list[tuple[botocore.session.Session, boto3.session.Session]] = []


def _sessions() -> tuple[botocore.session.Session, boto3.session.Session]:
    """Return the process-wide botocore session and the one boto3 session wrapping it.

    Created on first use; the caller must not hold ``_clients_lock``.
    """
    with _clients_lock:
        if not _session_holder:
            core = botocore.session.get_session()
            _session_holder.append((core, boto3.session.Session(botocore_session=core)))
        return _session_holder[0]


def _botocore_session() -> botocore.session.Session:
    """Return the process-wide botocore session."""
    return _sessions()[0]


def _env_number(name: str, default: float, *, integer: bool, minimum: float) -> float:
    """Read a positive number from the environment, or the default when unset or empty.

    Raises:
        ValueError: the value is not a number, not an integer when one is required, or too small.

    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {raw!r}.") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {raw!r}.")
    return value


def client_config_from_env() -> Config:
    """Build the botocore client configuration from the ``THINGPRESS_*`` environment variables.

    Returns:
        A ``botocore.config.Config`` with retries, timeouts and pool size set.

    Raises:
        ValueError: a variable holds an invalid value.

    """
    return Config(**_config_kwargs())


def _config_kwargs() -> dict[str, Any]:
    """Return the keyword arguments of the client ``Config`` read from the environment."""
    mode = os.environ.get("THINGPRESS_RETRY_MODE", "").strip() or DEFAULT_RETRY_MODE
    if mode not in RETRY_MODES:
        raise ValueError(f"THINGPRESS_RETRY_MODE must be 'standard' or 'adaptive', got {mode!r}.")
    attempts = int(_env_number("THINGPRESS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, integer=True, minimum=1))
    return {
        "retries": {"mode": mode, "total_max_attempts": attempts},
        "connect_timeout": _env_number(
            "THINGPRESS_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT, integer=False, minimum=0.001
        ),
        "read_timeout": _env_number(
            "THINGPRESS_READ_TIMEOUT", DEFAULT_READ_TIMEOUT, integer=False, minimum=0.001
        ),
        "max_pool_connections": int(
            _env_number(
                "THINGPRESS_MAX_POOL_CONNECTIONS", DEFAULT_MAX_POOL_CONNECTIONS, integer=True, minimum=1
            )
        ),
    }


def resolve_region(region: str | None = None) -> str | None:
    """Return the region to use: the argument, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the config file."""
    if region:
        return region
    env_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if env_region:
        return env_region
    configured = _botocore_session().get_config_variable("region")
    return str(configured) if configured else None


def resolve_endpoint_url(service_name: str) -> str | None:
    """Return the endpoint boto3 would use for the service, or None for the AWS default.

    Uses botocore's own lookup (``AWS_ENDPOINT_URL_<SERVICE>``, ``AWS_ENDPOINT_URL``, then the
    config file's ``services`` section and ``endpoint_url``), honouring
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``.
    """
    session = _botocore_session()
    if session.get_config_variable("ignore_configured_endpoint_urls"):
        return None
    provider = ConfiguredEndpointProvider(
        full_config=session.full_config,
        scoped_config=session.get_scoped_config(),
        client_name=service_name,
    )
    endpoint = provider.provide()
    return str(endpoint) if endpoint else None


@overload
def get_client(service_name: Literal["iot"], *, region: str | None = None) -> IoTClient: ...
@overload
def get_client(service_name: Literal["s3"], *, region: str | None = None) -> S3Client: ...
@overload
def get_client(service_name: Literal["sqs"], *, region: str | None = None) -> SQSClient: ...
@overload
def get_client(service_name: Literal["dynamodb"], *, region: str | None = None) -> DynamoDBClient: ...
@overload
def get_client(service_name: str, *, region: str | None = None) -> Any: ...
def get_client(service_name: str, *, region: str | None = None) -> Any:
    """Return the process-wide boto3 client for a service, region and endpoint.

    Clients are created once under a lock and shared by all threads (boto3 clients are
    thread-safe). Every client counts its retries and throttles (see ``telemetry``).

    Args:
        service_name: the boto3 service name, e.g. ``"iot"``.
        region: the region; defaults as described in the module docstring.

    Returns:
        The boto3 client.

    Raises:
        ValueError: a ``THINGPRESS_*`` client setting in the environment is invalid.

    """
    config_kwargs = _config_kwargs()
    resolved_region = resolve_region(region)
    endpoint_url = resolve_endpoint_url(service_name)
    retries = config_kwargs["retries"]
    config_key = (
        retries["mode"],
        retries["total_max_attempts"],
        config_kwargs["connect_timeout"],
        config_kwargs["read_timeout"],
        config_kwargs["max_pool_connections"],
    )
    key = (service_name, resolved_region, endpoint_url, config_key)
    client = _clients.get(key)
    if client is not None:
        return client
    _core, session = _sessions()
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # Client creation is serialised by the lock, so sharing one session (and its loaded
            # service models) between threads is safe.
            client = session.client(
                service_name,  # type: ignore[call-overload]
                region_name=resolved_region,
                endpoint_url=endpoint_url,
                config=Config(**config_kwargs),
            )
            install_call_metrics(client)
            _clients[key] = client
        return client


def clear_client_cache() -> None:
    """Forget every cached client and the shared session (tests and the local stack)."""
    with _clients_lock:
        _clients.clear()
        _session_holder.clear()


# ------------------------------------------------------------------------------------ error model


class ErrorClass(enum.StrEnum):
    """What an AWS failure means for the caller (``str()`` is the bare value, e.g. ``throttled``)."""

    THROTTLED = "throttled"
    TRANSIENT = "transient"
    ALREADY_EXISTS = "already_exists"
    NOT_FOUND = "not_found"
    INVALID_INPUT = "invalid_input"
    CONFLICT = "conflict"
    ACCESS_DENIED = "access_denied"
    UNKNOWN = "unknown"


THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceededException",
        "EC2ThrottledException",
        "ThrottlingError",
    }
)

_CODE_CLASSES: dict[str, ErrorClass] = {
    **dict.fromkeys(THROTTLING_CODES, ErrorClass.THROTTLED),
    **dict.fromkeys(
        (
            "InternalFailure",
            "InternalFailureException",
            "InternalError",
            "InternalServerError",
            "InternalServerException",
            "InternalServiceError",
            "InternalServiceException",
            "ServiceUnavailable",
            "ServiceUnavailableException",
            "ServiceUnavailableError",
            "ServiceException",
            "ServiceFailure",
            "RequestTimeout",
            "RequestTimeoutException",
            "PriorRequestNotComplete",
            "TransactionInProgressException",
            "IDPCommunicationError",
            "KMSInternalException",
        ),
        ErrorClass.TRANSIENT,
    ),
    **dict.fromkeys(
        (
            "ResourceAlreadyExistsException",
            "AlreadyExistsException",
            "EntityAlreadyExists",
            "EntityAlreadyExistsException",
            "BucketAlreadyExists",
            "BucketAlreadyOwnedByYou",
            "QueueAlreadyExists",
            "QueueNameExists",
            "TableAlreadyExistsException",
        ),
        ErrorClass.ALREADY_EXISTS,
    ),
    **dict.fromkeys(
        (
            "ResourceNotFoundException",
            "ResourceNotFound",
            "NotFoundException",
            "NotFound",
            "NoSuchKey",
            "NoSuchBucket",
            "NoSuchEntity",
            "NoSuchUpload",
            "NoSuchVersion",
            "QueueDoesNotExist",
            "NonExistentQueue",
            "TableNotFoundException",
        ),
        ErrorClass.NOT_FOUND,
    ),
    **dict.fromkeys(
        (
            "InvalidRequestException",
            "InvalidRequest",
            "CertificateValidationException",
            "CertificateStateException",
            "ValidationException",
            "ValidationError",
            "MalformedPolicy",
            "MalformedPolicyDocument",
            "MalformedPolicyException",
            "MalformedPolicyDocumentException",
            "InvalidParameterValue",
            "InvalidParameterValueException",
            "InvalidParameterException",
            "InvalidParameterCombination",
            "InvalidArgument",
            "InvalidInputException",
            "InvalidInput",
            "MissingParameter",
            "SerializationException",
            "InvalidQueryException",
            "InvalidStateTransitionException",
            "InvalidAttributeName",
            "InvalidAttributeValue",
            "InvalidMessageContents",
            "InvalidBatchEntryId",
            "BatchEntryIdsNotDistinct",
            "BatchRequestTooLong",
            "EmptyBatchRequest",
            "TooManyEntriesInBatchRequest",
            "UnsupportedOperation",
            "InvalidBucketName",
            "InvalidDigest",
            "EntityTooLarge",
            "KeyTooLongError",
            "ItemCollectionSizeLimitExceededException",
            # IoT uses LimitExceededException for per-resource quotas (e.g. too many policies on one
            # certificate): retrying cannot fix it, so it is bad input, not throttling.
            "LimitExceededException",
        ),
        ErrorClass.INVALID_INPUT,
    ),
    **dict.fromkeys(
        (
            "ConditionalCheckFailedException",
            "TransactionCanceledException",
            "TransactionConflictException",
            "VersionConflictException",
            "ConflictingResourceUpdateException",
            "ConflictException",
            "CertificateConflictException",
            "DeleteConflictException",
            "ResourceInUseException",
            "OperationAborted",
        ),
        ErrorClass.CONFLICT,
    ),
    **dict.fromkeys(
        (
            "AccessDenied",
            "AccessDeniedException",
            "UnauthorizedException",
            "UnauthorizedOperation",
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "ExpiredTokenException",
            "MissingAuthenticationToken",
            "MissingAuthenticationTokenException",
            "AuthFailure",
            "AuthorizationError",
            "OptInRequired",
            "KMSAccessDeniedException",
        ),
        ErrorClass.ACCESS_DENIED,
    ),
}

_SQS_CODE_PREFIX = "AWS.SimpleQueueService."


def _status_class(status: int | None) -> ErrorClass:
    """Classify an HTTP status code when the error code is not recognised."""
    if status is None:
        return ErrorClass.UNKNOWN
    if status == 429:
        return ErrorClass.THROTTLED
    if status >= 500:
        return ErrorClass.TRANSIENT
    if status in (401, 403):
        return ErrorClass.ACCESS_DENIED
    if status == 404:
        return ErrorClass.NOT_FOUND
    if status in (409, 412):
        return ErrorClass.CONFLICT
    if 400 <= status < 500:
        return ErrorClass.INVALID_INPUT
    return ErrorClass.UNKNOWN


def error_details(error: BaseException) -> tuple[str, str, str | None, int | None]:
    """Return ``(code, message, request id, HTTP status)`` of an AWS error.

    For a botocore ``ClientError`` these come from the response; for other exceptions the code is
    the exception's class name and the message its text.
    """
    if isinstance(error, ClientError):
        response: Mapping[str, Any] = error.response
        err = response.get("Error", {})
        meta = response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        return (
            str(err.get("Code") or "Unknown"),
            str(err.get("Message") or ""),
            meta.get("RequestId") or None,
            int(status) if status is not None else None,
        )
    return type(error).__name__, str(error), None, None


def classify_error(error: BaseException) -> ErrorClass:
    """Classify an AWS failure.

    Args:
        error: a botocore ``ClientError`` (classified by error code, falling back to the HTTP
            status), a botocore connection or timeout error (transient), ``NoCredentialsError``
            (access denied), an :class:`AwsOperationError` (its own class), or a built-in
            ``TimeoutError``/``ConnectionError`` (transient). Anything else is ``unknown``.

    Returns:
        The error class.

    """
    if isinstance(error, AwsOperationError):
        return error.error_class
    if isinstance(error, ClientError):
        code, _message, _request_id, status = error_details(error)
        code = code.removeprefix(_SQS_CODE_PREFIX)
        known = _CODE_CLASSES.get(code)
        return known if known is not None else _status_class(status)
    if isinstance(error, (BotocoreConnectionError, HTTPClientError, TimeoutError, ConnectionError)):
        return ErrorClass.TRANSIENT
    if isinstance(error, NoCredentialsError):
        return ErrorClass.ACCESS_DENIED
    return ErrorClass.UNKNOWN


class ThingpressError(Exception):
    """Base class of every Thingpress error.

    Attributes:
        retryable: whether retrying later may succeed.
        circuit_recorded: whether the circuit breaker has already accounted for this error.

    """

    retryable: bool = False
    circuit_recorded: bool = False


class AwsOperationError(ThingpressError):
    """An AWS call failed; subclasses say how (one per :class:`ErrorClass`).

    Attributes:
        error_class: the classification.
        operation: the circuit-style operation name, e.g. ``iot:CreateThing``.
        code: the AWS error code (or the botocore exception name).
        message: the AWS error message.
        request_id: the AWS request id, when there was a response.
        retryable: true for throttled and transient errors.

    """

    error_class: ClassVar[ErrorClass] = ErrorClass.UNKNOWN

    def __init__(self, operation: str, code: str, message: str, request_id: str | None = None) -> None:
        self.operation = operation
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retryable = self.error_class in (ErrorClass.THROTTLED, ErrorClass.TRANSIENT)
        detail = f": {message}" if message else ""
        super().__init__(f"The AWS call {operation} failed with {code}{detail}")


class ThrottledError(AwsOperationError):
    """The service throttled the call; retry later at a lower rate."""

    error_class = ErrorClass.THROTTLED


class TransientError(AwsOperationError):
    """The service or the network failed temporarily; retry later."""

    error_class = ErrorClass.TRANSIENT


class AlreadyExistsError(AwsOperationError):
    """The resource already exists."""

    error_class = ErrorClass.ALREADY_EXISTS


class NotFoundError(AwsOperationError):
    """The resource does not exist."""

    error_class = ErrorClass.NOT_FOUND


class InvalidInputError(AwsOperationError):
    """The request was rejected as invalid; retrying the same request cannot succeed."""

    error_class = ErrorClass.INVALID_INPUT


class ConflictError(AwsOperationError):
    """A condition on the resource's current state failed (optimistic concurrency)."""

    error_class = ErrorClass.CONFLICT


class AccessDeniedError(AwsOperationError):
    """The caller lacks permission or valid credentials."""

    error_class = ErrorClass.ACCESS_DENIED


class UnknownAwsError(AwsOperationError):
    """The failure could not be classified."""

    error_class = ErrorClass.UNKNOWN


ERROR_TYPES: dict[ErrorClass, type[AwsOperationError]] = {
    cls.error_class: cls
    for cls in (
        ThrottledError,
        TransientError,
        AlreadyExistsError,
        NotFoundError,
        InvalidInputError,
        ConflictError,
        AccessDeniedError,
        UnknownAwsError,
    )
}

_QUIET_CLASSES = frozenset(
    {ErrorClass.THROTTLED, ErrorClass.TRANSIENT, ErrorClass.ALREADY_EXISTS, ErrorClass.NOT_FOUND}
)


def to_operation_error(error: BaseException, operation: str) -> AwsOperationError:
    """Convert an AWS failure into the typed exception of its class, without logging or raising.

    Args:
        error: the botocore exception.
        operation: the operation name, e.g. ``iot:CreateThing``.

    Returns:
        The :class:`AwsOperationError` subclass instance for the error's class.

    """
    code, message, request_id, _status = error_details(error)
    return ERROR_TYPES[classify_error(error)](operation, code, message, request_id)


def handle_aws_error(
    error: BaseException, operation: str, context: Mapping[str, Any] | None = None
) -> NoReturn:
    """Log an AWS failure, feed the circuit breaker and raise the typed exception.

    Logs one structured record (operation, error_code, error_message, request_id, error_class,
    http_status, context): a warning for throttled, transient, already-exists and not-found errors
    (expected, handled by callers), an error otherwise. Records a circuit failure for
    ``operation`` only when the error's class is in that circuit's ``count_classes`` (default
    throttled and transient), and marks the raised exception ``circuit_recorded = True`` so that
    ``with_circuit_breaker`` does not account for it a second time.

    Args:
        error: a botocore ``ClientError`` or ``BotoCoreError`` (or built-in ``TimeoutError``/
            ``ConnectionError``).
        operation: the circuit name of the call, e.g. ``iot:RegisterCertificateWithoutCA``.
        context: extra fields for the log record (e.g. the entry locator).

    Raises:
        AwsOperationError: always, the subclass for the error's class, chained ``from error``.
        TypeError: ``error`` is not an AWS or network error (a programming error; chained from it).

    """
    from layer_utils.circuit_state import (  # noqa: PLC0415 - circuit_state imports this module
        get_circuit_config,
        record_failure,
    )

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
    log = logger.warning if typed.error_class in _QUIET_CLASSES else logger.error
    log(str(typed), extra=fields)
    if typed.error_class in get_circuit_config(operation).count_classes:
        record_failure(operation)
    typed.circuit_recorded = True
    raise typed from error


# --------------------------------------------------------------------------------- name validation

IOT_NAME_MAX_LENGTH = 128
_IOT_NAME_RE = re.compile(r"[a-zA-Z0-9:_-]+")
_IOT_NAME_ALLOWED = "letters, digits, ':', '_' and '-'"
_IOT_POLICY_NAME_RE = re.compile(r"[\w+=,.@-]+", re.ASCII)
_IOT_POLICY_NAME_ALLOWED = "letters, digits, '_', '+', '=', ',', '.', '@' and '-'"


def require_name(value: str | None, what: str) -> str:
    """Return ``value`` if it is a non-blank string.

    Args:
        value: the name to check.
        what: what the name is, for the message, e.g. ``"Thing group name"``.

    Returns:
        The value, unchanged.

    Raises:
        ValueError: the value is None, empty or only whitespace.

    """
    if value is None or not value.strip():
        raise ValueError(f"{what} cannot be None or empty")
    return value


def _validate_iot_name(value: str | None, what: str, pattern: re.Pattern[str], allowed: str) -> str:
    """Check a name against an IoT name pattern and the 128-character limit."""
    name = require_name(value, what)
    if len(name) > IOT_NAME_MAX_LENGTH:
        raise ValueError(
            f"{what} {name[:40]!r}... is {len(name)} characters long; the limit is {IOT_NAME_MAX_LENGTH}."
        )
    if not pattern.fullmatch(name):
        raise ValueError(f"{what} {name!r} is invalid: use only {allowed}.")
    return name


def validate_thing_name(value: str | None, what: str = "Thing name") -> str:
    """Validate an IoT thing name (``[a-zA-Z0-9:_-]+``, at most 128 characters).

    Returns:
        The name, unchanged.

    Raises:
        ValueError: the name is empty, too long or has a forbidden character.

    """
    return _validate_iot_name(value, what, _IOT_NAME_RE, _IOT_NAME_ALLOWED)


def validate_thing_group_name(value: str | None, what: str = "Thing group name") -> str:
    """Validate an IoT thing group name (``[a-zA-Z0-9:_-]+``, at most 128 characters).

    Returns:
        The name, unchanged.

    Raises:
        ValueError: the name is empty, too long or has a forbidden character.

    """
    return _validate_iot_name(value, what, _IOT_NAME_RE, _IOT_NAME_ALLOWED)


def validate_thing_type_name(value: str | None, what: str = "Thing type name") -> str:
    """Validate an IoT thing type name (``[a-zA-Z0-9:_-]+``, at most 128 characters).

    Returns:
        The name, unchanged.

    Raises:
        ValueError: the name is empty, too long or has a forbidden character.

    """
    return _validate_iot_name(value, what, _IOT_NAME_RE, _IOT_NAME_ALLOWED)


def validate_policy_name(value: str | None, what: str = "Policy name") -> str:
    r"""Validate an IoT policy name (the IoT API pattern ``[\w+=,.@-]+``, at most 128 characters).

    Returns:
        The name, unchanged.

    Raises:
        ValueError: the name is empty, too long or has a forbidden character.

    """
    return _validate_iot_name(value, what, _IOT_POLICY_NAME_RE, _IOT_POLICY_NAME_ALLOWED)
