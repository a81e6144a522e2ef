"""The Thingpress error model: error classes, the typed exceptions and ``classify_error``.

A leaf of the layer (it imports only botocore). The contract is in docs/ARCHITECTURE.md, "Error
model". Besides the classes of that contract there is ``conflict`` (optimistic-concurrency failures
such as ``ConditionalCheckFailedException``): the request was valid and the service healthy, but the
state changed under it, which callers treat differently from bad input.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, ClassVar

from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

if TYPE_CHECKING:
    from collections.abc import Mapping


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

    """

    retryable: bool = False


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
        """Create the error; ``retryable`` follows from the class."""
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

QUIET_CLASSES = frozenset(
    {ErrorClass.THROTTLED, ErrorClass.TRANSIENT, ErrorClass.ALREADY_EXISTS, ErrorClass.NOT_FOUND}
)
"""The classes ``handle_aws_error`` logs as warnings (expected and handled by callers), not errors."""


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
