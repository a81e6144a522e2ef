"""botocore's own retries of a rate-limited call draw from the limiter (layer_utils.attempts)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from layer_utils.attempts import install_attempt_draws
from layer_utils.circuit import CircuitRegistry
from layer_utils.protected import protected_call


class CountingLimiter:
    def __init__(self) -> None:
        self.draws: list[str] = []

    def acquire(self, api: str) -> float:
        self.draws.append(api)
        return 0.0


class Raw:
    """A response body botocore can read."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_kwargs: Any) -> Any:
        yield self.body


def answers(*statuses: int) -> Any:
    """A before-send handler answering a throttle (400 ThrottlingException) or 200, in order."""
    queue = list(statuses)

    def respond(request: Any, **_kwargs: Any) -> AWSResponse:
        status = queue.pop(0)
        if status == 200:
            body = b'{"certificateArn": "arn:aws:iot:us-east-1:1:cert/x", "certificateId": "x"}'
            return AWSResponse(request.url, 200, {}, Raw(body))  # type: ignore[arg-type]
        headers = {"x-amzn-ErrorType": "ThrottlingException"}
        return AWSResponse(request.url, 400, headers, Raw(b'{"message": "Rate exceeded"}'))  # type: ignore[arg-type]

    return respond


@pytest.fixture
def iot(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr("botocore.endpoint.time.sleep", lambda _seconds: None)  # botocore's backoff
    client = boto3.client(
        "iot",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 4}),
    )
    return install_attempt_draws(client)


def register(iot: Any, limiter: CountingLimiter | None) -> Any:
    return protected_call(
        CircuitRegistry(),
        "iot:RegisterCertificateWithoutCA",
        lambda: iot.register_certificate_without_ca(certificatePem="pem", status="ACTIVE"),
        limiter=limiter,
    )


def test_a_throttled_call_retried_inside_botocore_draws_twice(iot: Any) -> None:
    iot.meta.events.register("before-send", answers(400, 200))
    limiter = CountingLimiter()
    response = register(iot, limiter)
    assert response["certificateId"] == "x"
    assert limiter.draws == ["RegisterCertificateWithoutCA", "RegisterCertificateWithoutCA"]


def test_a_call_that_succeeds_at_once_draws_once_and_calls_outside_a_scope_draw_nothing(iot: Any) -> None:
    iot.meta.events.register("before-send", answers(200, 400, 400, 200))
    limiter = CountingLimiter()
    register(iot, limiter)
    assert limiter.draws == ["RegisterCertificateWithoutCA"]
    # Without a limiter (or outside protected_call) the hook draws nothing, retries or not.
    register(iot, None)
    assert limiter.draws == ["RegisterCertificateWithoutCA"]


def test_another_request_inside_the_limited_call_draws_nothing(iot: Any) -> None:
    """The fleet budget renews its share from inside the limiter: that request is not an attempt."""
    other = install_attempt_draws(
        boto3.client(
            "dynamodb", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )
    )
    other.meta.events.register(
        "before-send", lambda request, **_: AWSResponse(request.url, 200, {}, Raw(b"{}"))
    )  # type: ignore[arg-type]
    iot.meta.events.register("before-send", answers(200))
    limiter = CountingLimiter()

    def renew_then_register() -> Any:
        other.put_item(TableName="budget", Item={"id": {"S": "importer-fleet"}})
        other.put_item(TableName="budget", Item={"id": {"S": "importer-fleet"}})
        return iot.register_certificate_without_ca(certificatePem="pem", status="ACTIVE")

    protected_call(
        CircuitRegistry(), "iot:RegisterCertificateWithoutCA", renew_then_register, limiter=limiter
    )
    assert limiter.draws == ["RegisterCertificateWithoutCA"]  # the first attempt only
