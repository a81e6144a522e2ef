"""Tests for layer_utils.aws_utils (clients, error model, handle_aws_error, names) and protected_call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from layer_utils.aws_utils import (
    AccessDeniedError,
    AlreadyExistsError,
    AwsOperationError,
    ConflictError,
    ErrorClass,
    InvalidInputError,
    NotFoundError,
    ThingpressError,
    ThrottledError,
    TransientError,
    UnknownAwsError,
    classify_error,
    clear_client_cache,
    get_client,
    handle_aws_error,
    require_name,
    validate_policy_name,
    validate_thing_group_name,
    validate_thing_name,
    validate_thing_type_name,
)
from layer_utils.circuit import CircuitRegistry
from layer_utils.protected import protected_call

OPERATION = "RegisterCertificateWithoutCA"


def client_error(code: str, status: int, message: str = "details", request_id: str = "req-1") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": request_id},
        },
        OPERATION,
    )


@pytest.fixture(autouse=True)
def _fresh_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_IOT",
        "AWS_ENDPOINT_URL_S3",
        "THINGPRESS_RETRY_MODE",
        "THINGPRESS_MAX_ATTEMPTS",
        "THINGPRESS_CONNECT_TIMEOUT",
        "THINGPRESS_READ_TIMEOUT",
        "THINGPRESS_MAX_POOL_CONNECTIONS",
        "THINGPRESS_CIRCUIT_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    clear_client_cache()
    yield
    clear_client_cache()


# ------------------------------------------------------------------------------------ client factory


def test_same_client_across_threads() -> None:
    ids: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        client = get_client("iot")
        with lock:
            ids.append(id(client))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 16
    assert len(set(ids)) == 1
    assert get_client("iot") is get_client("iot")


def test_regions_get_different_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    east = get_client("iot", region="us-east-1")
    west = get_client("iot", region="eu-west-1")
    assert east is not west
    assert east.meta.region_name == "us-east-1"
    assert west.meta.region_name == "eu-west-1"
    assert get_client("iot") is east  # AWS_REGION=us-east-1 from conftest
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-2")
    assert get_client("iot").meta.region_name == "ap-southeast-2"


def test_endpoint_env_honoured_and_service_specific_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    default = get_client("iot")
    assert "amazonaws.com" in default.meta.endpoint_url
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    local = get_client("iot")
    assert local is not default
    assert local.meta.endpoint_url == "http://127.0.0.1:5000"
    assert get_client("s3").meta.endpoint_url == "http://127.0.0.1:5000"
    monkeypatch.setenv("AWS_ENDPOINT_URL_IOT", "http://127.0.0.1:6000")
    assert get_client("iot").meta.endpoint_url == "http://127.0.0.1:6000"
    assert get_client("s3").meta.endpoint_url == "http://127.0.0.1:5000"
    monkeypatch.delenv("AWS_ENDPOINT_URL_IOT")
    assert get_client("iot") is local


def test_config_defaults() -> None:
    config = get_client("iot").meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert config.connect_timeout == 5
    assert config.read_timeout == 20
    assert config.max_pool_connections == 32


def test_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINGPRESS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("THINGPRESS_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("THINGPRESS_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("THINGPRESS_READ_TIMEOUT", "11")
    monkeypatch.setenv("THINGPRESS_MAX_POOL_CONNECTIONS", "64")
    config = get_client("sqs").meta.config
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert config.connect_timeout == 2.5
    assert config.read_timeout == 11
    assert config.max_pool_connections == 64


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("THINGPRESS_RETRY_MODE", "legacy", "THINGPRESS_RETRY_MODE must be 'standard' or 'adaptive'"),
        ("THINGPRESS_MAX_ATTEMPTS", "three", "THINGPRESS_MAX_ATTEMPTS must be an integer"),
        ("THINGPRESS_MAX_ATTEMPTS", "0", "THINGPRESS_MAX_ATTEMPTS must be at least 1"),
        ("THINGPRESS_CONNECT_TIMEOUT", "soon", "THINGPRESS_CONNECT_TIMEOUT must be a number"),
        ("THINGPRESS_READ_TIMEOUT", "-1", "THINGPRESS_READ_TIMEOUT must be at least"),
        ("THINGPRESS_MAX_POOL_CONNECTIONS", "1.5", "THINGPRESS_MAX_POOL_CONNECTIONS must be an integer"),
    ],
)
def test_invalid_config_env(monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=fragment):
        get_client("iot")


# ----------------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ThrottlingException", 400, ErrorClass.THROTTLED),
        ("TooManyRequestsException", 429, ErrorClass.THROTTLED),
        ("RequestLimitExceeded", 503, ErrorClass.THROTTLED),
        ("SlowDown", 503, ErrorClass.THROTTLED),
        ("Throttling", 400, ErrorClass.THROTTLED),
        ("ProvisionedThroughputExceededException", 400, ErrorClass.THROTTLED),
        ("RequestThrottled", 400, ErrorClass.THROTTLED),
        ("ServiceUnavailable", 503, ErrorClass.TRANSIENT),
        ("InternalFailure", 500, ErrorClass.TRANSIENT),
        ("InternalError", 500, ErrorClass.TRANSIENT),
        ("InternalServerException", 500, ErrorClass.TRANSIENT),
        ("SomethingNew", 502, ErrorClass.TRANSIENT),
        ("ResourceAlreadyExistsException", 409, ErrorClass.ALREADY_EXISTS),
        ("ResourceNotFoundException", 404, ErrorClass.NOT_FOUND),
        ("NoSuchKey", 404, ErrorClass.NOT_FOUND),
        ("NoSuchBucket", 404, ErrorClass.NOT_FOUND),
        ("QueueDoesNotExist", 400, ErrorClass.NOT_FOUND),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, ErrorClass.NOT_FOUND),
        ("SomethingMissing", 404, ErrorClass.NOT_FOUND),
        ("InvalidRequestException", 400, ErrorClass.INVALID_INPUT),
        ("CertificateValidationException", 400, ErrorClass.INVALID_INPUT),
        ("ValidationException", 400, ErrorClass.INVALID_INPUT),
        ("MalformedPolicy", 400, ErrorClass.INVALID_INPUT),
        ("LimitExceededException", 410, ErrorClass.INVALID_INPUT),
        ("SomethingRejected", 400, ErrorClass.INVALID_INPUT),
        ("ConditionalCheckFailedException", 400, ErrorClass.CONFLICT),
        ("TransactionCanceledException", 400, ErrorClass.CONFLICT),
        ("VersionConflictException", 409, ErrorClass.CONFLICT),
        ("SomethingClashed", 409, ErrorClass.CONFLICT),
        ("AccessDenied", 403, ErrorClass.ACCESS_DENIED),
        ("AccessDeniedException", 400, ErrorClass.ACCESS_DENIED),
        ("UnauthorizedException", 401, ErrorClass.ACCESS_DENIED),
        ("SomethingForbidden", 403, ErrorClass.ACCESS_DENIED),
        ("SomethingOdd", 302, ErrorClass.UNKNOWN),
    ],
)
def test_classify_client_errors(code: str, status: int, expected: ErrorClass) -> None:
    assert classify_error(client_error(code, status)) is expected


def test_classify_client_error_without_status() -> None:
    error = ClientError({"Error": {"Code": "Mystery", "Message": "?"}}, OPERATION)
    assert classify_error(error) is ErrorClass.UNKNOWN


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (EndpointConnectionError(endpoint_url="https://iot.us-east-1.amazonaws.com"), ErrorClass.TRANSIENT),
        (ReadTimeoutError(endpoint_url="https://iot.us-east-1.amazonaws.com"), ErrorClass.TRANSIENT),
        (ConnectTimeoutError(endpoint_url="https://iot.us-east-1.amazonaws.com"), ErrorClass.TRANSIENT),
        (TimeoutError("slow"), ErrorClass.TRANSIENT),
        (ConnectionResetError("reset"), ErrorClass.TRANSIENT),
        (NoCredentialsError(), ErrorClass.ACCESS_DENIED),
        (ThrottledError("iot:CreateThing", "ThrottlingException", "slow down"), ErrorClass.THROTTLED),
        (KeyError("bug"), ErrorClass.UNKNOWN),
    ],
)
def test_classify_other_errors(error: BaseException, expected: ErrorClass) -> None:
    assert classify_error(error) is expected


def test_error_hierarchy_and_retryable() -> None:
    expected = {
        ErrorClass.THROTTLED: (ThrottledError, True),
        ErrorClass.TRANSIENT: (TransientError, True),
        ErrorClass.ALREADY_EXISTS: (AlreadyExistsError, False),
        ErrorClass.NOT_FOUND: (NotFoundError, False),
        ErrorClass.INVALID_INPUT: (InvalidInputError, False),
        ErrorClass.CONFLICT: (ConflictError, False),
        ErrorClass.ACCESS_DENIED: (AccessDeniedError, False),
        ErrorClass.UNKNOWN: (UnknownAwsError, False),
    }
    assert set(expected) == set(ErrorClass)
    for error_class, (error_type, retryable) in expected.items():
        error = error_type("iot:CreateThing", "Code", "msg", "rid")
        assert isinstance(error, AwsOperationError)
        assert isinstance(error, ThingpressError)
        assert error.error_class is error_class
        assert error.retryable is retryable
        assert str(error) == "The AWS call iot:CreateThing failed with Code: msg"
    assert str(ErrorClass.THROTTLED) == "throttled"


# --------------------------------------------------------------------------------- handle_aws_error


@pytest.mark.parametrize(
    ("code", "status", "error_type", "recorded"),
    [
        ("ThrottlingException", 400, ThrottledError, 1),
        ("ServiceUnavailableException", 503, TransientError, 1),
        ("ResourceAlreadyExistsException", 409, AlreadyExistsError, 0),
        ("ResourceNotFoundException", 404, NotFoundError, 0),
        ("InvalidRequestException", 400, InvalidInputError, 0),
        ("ConditionalCheckFailedException", 400, ConflictError, 0),
        ("AccessDeniedException", 403, AccessDeniedError, 0),
        ("Mystery", 302, UnknownAwsError, 0),
    ],
)
def test_handle_aws_error(
    read_logs: Callable[[], list[dict[str, Any]]],
    code: str,
    status: int,
    error_type: type[AwsOperationError],
    recorded: int,
) -> None:
    original = client_error(code, status, message="It went wrong.", request_id="abc-123")
    with pytest.raises(error_type) as caught:
        handle_aws_error(original, "iot:RegisterCertificateWithoutCA", {"locator": "row 3"})
    error = caught.value
    assert error.__cause__ is original
    assert error.operation == "iot:RegisterCertificateWithoutCA"
    assert error.code == code
    assert error.message == "It went wrong."
    assert error.request_id == "abc-123"
    lines = read_logs()
    assert len(lines) == 1
    record = lines[0]
    assert record["operation"] == "iot:RegisterCertificateWithoutCA"
    assert record["error_code"] == code
    assert record["error_message"] == "It went wrong."
    assert record["request_id"] == "abc-123"
    assert record["error_class"] == error.error_class.value
    assert record["http_status"] == status
    assert record["context"] == {"locator": "row 3"}
    assert (
        record["message"]
        == f"The AWS call iot:RegisterCertificateWithoutCA failed with {code}: It went wrong."
    )
    # Only the breaker counts: through protected_call, an unhealthy class counts once.
    registry = CircuitRegistry(clock=lambda: 1000.0, env={})

    def fail() -> None:
        raise original

    with pytest.raises(error_type) as again:
        protected_call(registry, "iot:RegisterCertificateWithoutCA", fail)
    assert again.value.__cause__ is original
    status_now = registry.status()["iot:RegisterCertificateWithoutCA"]
    assert status_now["consecutive_failures"] == recorded
    assert status_now["last_failure_time"] == (1000.0 if recorded else None)


def test_handle_aws_error_counts_nothing() -> None:
    registry = CircuitRegistry(clock=lambda: 5.0, env={})
    with pytest.raises(ThrottledError):
        handle_aws_error(client_error("ThrottlingException", 400), "iot:AttachPolicy")
    assert registry.status() == {}


def test_protected_call_honours_circuit_count_classes() -> None:
    registry = CircuitRegistry(clock=lambda: 5.0, env={})
    registry.configure("iot:AttachPolicy", count_classes=["access_denied"])
    for error, expected in (
        (client_error("ThrottlingException", 400), ThrottledError),
        (client_error("AccessDeniedException", 403), AccessDeniedError),
    ):

        def fail(error: ClientError = error) -> None:
            raise error

        with pytest.raises(expected):
            protected_call(registry, "iot:AttachPolicy", fail)
    assert registry.status()["iot:AttachPolicy"]["consecutive_failures"] == 1


def test_protected_call_acquires_the_limiter_first() -> None:
    registry = CircuitRegistry(clock=lambda: 5.0, env={})
    order: list[str] = []

    class Limiter:
        def acquire(self, api: str) -> float:
            order.append(f"acquire {api}")
            return 0.0

    assert (
        protected_call(registry, "iot:CreateThing", lambda: order.append("call"), limiter=Limiter()) is None
    )
    assert order == ["acquire CreateThing", "call"]


def test_handle_aws_error_network_error() -> None:
    registry = CircuitRegistry(clock=lambda: 5.0, env={})
    original = EndpointConnectionError(endpoint_url="https://iot.us-east-1.amazonaws.com")

    def fail() -> None:
        raise original

    with pytest.raises(TransientError) as caught:
        protected_call(registry, "iot:CreateThing", fail)
    assert caught.value.code == "EndpointConnectionError"
    assert caught.value.request_id is None
    assert registry.status()["iot:CreateThing"]["consecutive_failures"] == 1


def test_handle_aws_error_rejects_non_aws_errors() -> None:
    original = KeyError("oops")
    with pytest.raises(TypeError, match="handle_aws_error expects a botocore error") as caught:
        handle_aws_error(original, "iot:CreateThing")
    assert caught.value.__cause__ is original


# ---------------------------------------------------------------------------------- name validation


@pytest.mark.parametrize("value", [None, "", "   "])
def test_require_name_rejects_blank(value: str | None) -> None:
    with pytest.raises(ValueError, match=r"^Thing group name cannot be None or empty$"):
        require_name(value, "Thing group name")


def test_require_name_returns_value() -> None:
    assert require_name("group-1", "Thing group name") == "group-1"


def test_one_validate_thing_name() -> None:
    # aws_utils and cert_utils expose the same function (messages: see test_cert_utils).
    from layer_utils import cert_utils

    assert validate_thing_name is cert_utils.validate_thing_name
    assert validate_thing_name("Device_01:a-b") == "Device_01:a-b"
    assert validate_thing_name("x" * 128) == "x" * 128
    for bad in ("x" * 129, "bad name", ""):
        with pytest.raises(ValueError, match=r"^Thing name "):
            validate_thing_name(bad)


@pytest.mark.parametrize("validator", [validate_thing_group_name, validate_thing_type_name])
def test_iot_names(validator: Any) -> None:
    assert validator("Device_01:a-b") == "Device_01:a-b"
    assert validator("x" * 128) == "x" * 128
    with pytest.raises(ValueError, match="is 129 characters long; the limit is 128"):
        validator("x" * 129)
    with pytest.raises(ValueError, match=r"'bad name' is invalid: use only letters, digits"):
        validator("bad name")
    with pytest.raises(ValueError, match="cannot be None or empty"):
        validator("")


def test_policy_names() -> None:
    assert validate_policy_name("Policy.v1+a=b,c@d-e_f") == "Policy.v1+a=b,c@d-e_f"
    with pytest.raises(ValueError, match="Policy name 'a:b' is invalid"):
        validate_policy_name("a:b")
    with pytest.raises(ValueError, match="Policy name 'é' is invalid"):
        validate_policy_name("é")
    with pytest.raises(ValueError, match="Policy name cannot be None or empty"):
        validate_policy_name(None)
