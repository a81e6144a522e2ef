"""The AWS IoT quota emulator: request naming, token buckets, AWS's throttling answer, counters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from thingpress.local import LocalStack
from thingpress.local.layers import ApiCall, ServerLayer, identify_call, mark_harness_client
from thingpress.local.quota import DEFAULT_IOT_QUOTAS, QuotaEmulator, scaled_quotas

TEMPLATE = """\
AWSTemplateFormatVersion: 2010-09-09
Resources:
  Queue:
    Type: AWS::SQS::Queue
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    with LocalStack(tmp_path / "template.yaml", stack_name="quotatest") as local:
        yield local


def single_attempt_client(stack: LocalStack, service: str) -> Any:
    """A client that does not retry, so every call is exactly one request."""
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=stack.endpoint_url,
        region_name=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def environ(method: str, path: str, service: str = "iot", query: str = "", **headers: str) -> dict[str, Any]:
    signed = {
        "HTTP_AUTHORIZATION": (
            f"AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/{service}/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=0"
        )
    }
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, **signed, **headers}


@pytest.mark.parametrize(
    ("method", "path", "query", "operation"),
    [
        ("POST", "/certificate/register-no-ca", "", "RegisterCertificateWithoutCA"),
        ("POST", "/things/dev-1", "", "CreateThing"),
        ("GET", "/things/dev-1", "", "DescribeThing"),
        ("PATCH", "/things/dev-1", "", "UpdateThing"),
        ("PUT", "/things/dev-1/principals", "", "AttachThingPrincipal"),
        ("PUT", "/bucket/key", "", "PutObject"),
        ("GET", "/things/dev-1/principals", "", "ListThingPrincipals"),
        ("PUT", "/target-policies/my%20policy", "", "AttachPolicy"),
        ("PUT", "/thing-groups/addThingToThingGroup", "", "AddThingToThingGroup"),
        ("GET", "/certificates/ab12", "", "DescribeCertificate"),
        ("GET", "/certificates", "pageSize=250", "ListCertificates"),
        ("DELETE", "/nothing/here", "", None),
    ],
)
def test_iot_requests_are_named_from_the_botocore_model(
    method: str, path: str, query: str, operation: str | None
) -> None:
    service = "s3" if path.startswith("/bucket") else "iot"
    assert identify_call(environ(method, path, service, query=query)) == ApiCall(service, operation)


@pytest.mark.parametrize(
    ("request_environ", "expected"),
    [
        (environ("GET", "/bucket/a/b.json", "s3"), ApiCall("s3", "GetObject")),
        (environ("PUT", "/bucket/a/b.json", "s3"), ApiCall("s3", "PutObject")),
        (
            environ("PUT", "/bucket/a/b.json", "s3", query="partNumber=1&uploadId=x"),
            ApiCall("s3", "UploadPart"),
        ),
        (environ("GET", "/bucket", "s3", query="list-type=2&prefix=x"), ApiCall("s3", "ListObjectsV2")),
        (environ("GET", "/bucket", "s3"), ApiCall("s3", "ListObjects")),
        (
            environ("POST", "/", "sqs", HTTP_X_AMZ_TARGET="AmazonSQS.SendMessageBatch"),
            ApiCall("sqs", "SendMessageBatch"),
        ),
        (
            environ("POST", "/", "dynamodb", HTTP_X_AMZ_TARGET="DynamoDB_20120810.TransactWriteItems"),
            ApiCall("dynamodb", "TransactWriteItems"),
        ),
        (environ("GET", "/", "execute-api"), ApiCall("iot", None)),
    ],
)
def test_other_services_are_named_by_target_or_route(
    request_environ: dict[str, Any], expected: ApiCall
) -> None:
    assert identify_call(request_environ) == expected


def test_labels_match_the_path_as_sent_not_the_decoded_path() -> None:
    # ListAttachedPolicies' {target} is a certificate ARN: its '/' arrives percent-encoded.
    sent = "/attached-policies/arn%3Aaws%3Aiot%3Aus-east-1%3A123456789012%3Acert%2Fab12"
    request = environ("POST", "/attached-policies/arn:aws:iot:us-east-1:123456789012:cert/ab12", "iot")
    assert identify_call(request) == ApiCall("iot", None)
    assert identify_call({**request, "RAW_URI": f"{sent}?recursive=false"}) == ApiCall(
        "iot", "ListAttachedPolicies"
    )


def test_unsigned_requests_are_not_aws_calls() -> None:
    assert identify_call({"REQUEST_METHOD": "POST", "PATH_INFO": "/moto-api/reset"}) is None


def test_above_the_quota_iot_answers_throttling_exception_as_aws_does(stack: LocalStack) -> None:
    clock = FakeClock()
    iot = single_attempt_client(stack, "iot")
    with QuotaEmulator({"CreateThing": 2}, clock=clock) as quota:
        iot.create_thing(thingName="a")
        iot.create_thing(thingName="b")
        with pytest.raises(ClientError) as raised:
            iot.create_thing(thingName="c")
        clock.now += 0.5
        iot.create_thing(thingName="d")
        with pytest.raises(iot.exceptions.ThrottlingException):
            iot.create_thing(thingName="e")

    error = raised.value.response
    assert error["Error"]["Code"] == "ThrottlingException"
    assert error["Error"]["Message"] == "Rate exceeded"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ThrottlingException"
    assert error["ResponseMetadata"]["RequestId"]
    counts = quota.counts()
    assert counts.admitted == {"CreateThing": 3}
    assert counts.throttled == {"CreateThing": 2}
    assert counts.calls == {("iot", "CreateThing"): 5}
    assert counts.total_throttled == 2
    names = {thing["thingName"] for thing in stack.client("iot").list_things()["things"]}
    assert names == {"a", "b", "d"}


def test_burst_is_one_second_of_quota_by_default_and_refills_at_the_quota_rate(stack: LocalStack) -> None:
    clock = FakeClock()
    with QuotaEmulator({"RegisterCertificateWithoutCA": 10}, clock=clock) as quota:
        admitted = [quota.try_acquire("RegisterCertificateWithoutCA") for _ in range(15)]
        clock.now += 0.35
        later = [quota.try_acquire("RegisterCertificateWithoutCA") for _ in range(5)]

    assert admitted == [True] * 10 + [False] * 5
    assert later == [True] * 3 + [False] * 2


def test_disabled_emulator_counts_but_never_throttles(stack: LocalStack) -> None:
    iot = single_attempt_client(stack, "iot")
    with QuotaEmulator({"CreateThing": 1}, clock=FakeClock(), enabled=False) as quota:
        for index in range(5):
            iot.create_thing(thingName=f"t{index}")
        quota.enabled = True
        iot.create_thing(thingName="first")
        with pytest.raises(iot.exceptions.ThrottlingException):
            iot.create_thing(thingName="over")

    assert quota.counts().admitted == {"CreateThing": 6}
    assert quota.counts().throttled == {"CreateThing": 1}


def test_apis_without_quota_and_other_services_are_counted_not_limited(stack: LocalStack) -> None:
    iot = single_attempt_client(stack, "iot")
    sqs = single_attempt_client(stack, "sqs")
    with QuotaEmulator({"CreateThing": 1}, clock=FakeClock()) as quota:
        for _ in range(3):
            iot.list_things()
            sqs.get_queue_url(QueueName=stack.attribute("Queue", "QueueName"))

    counts = quota.reset_counts()
    assert counts.calls == {("iot", "ListThings"): 3, ("sqs", "GetQueueUrl"): 3}
    assert counts.service_calls("sqs") == 3
    assert counts.throttled == {}
    assert quota.counts().calls == {}


def test_harness_clients_bypass_the_emulator(stack: LocalStack) -> None:
    harness = mark_harness_client(single_attempt_client(stack, "iot"))
    with QuotaEmulator({"CreateThing": 1}, clock=FakeClock()) as quota:
        for index in range(3):
            harness.create_thing(thingName=f"h{index}")

    assert quota.counts().calls == {}
    assert len(stack.client("iot").list_things()["things"]) == 3


def test_scaled_quotas_multiply_the_default_table() -> None:
    scaled = scaled_quotas(10)
    assert scaled["RegisterCertificateWithoutCA"] == 100
    assert scaled["DescribeThing"] == 3500
    assert set(scaled) == set(DEFAULT_IOT_QUOTAS)


def test_invalid_quotas_are_refused() -> None:
    with pytest.raises(ValueError, match="CreateThing"):
        QuotaEmulator({"CreateThing": 0})
    with pytest.raises(ValueError, match="burst_seconds"):
        QuotaEmulator(burst_seconds=0)


def test_layers_nest_and_must_be_removed_in_reverse_order(stack: LocalStack) -> None:
    outer = QuotaEmulator({"CreateThing": 1}, clock=FakeClock())
    inner = ServerLayer()
    outer.install()
    inner.install()
    with pytest.raises(RuntimeError, match="reverse order"):
        outer.uninstall()
    inner.uninstall()
    outer.uninstall()
    assert not outer.installed
    with pytest.raises(RuntimeError, match="already installed"), outer, outer:
        pass
    single_attempt_client(stack, "iot").create_thing(thingName="after")


def test_installing_without_a_running_stack_is_refused() -> None:
    with pytest.raises(RuntimeError, match="start a LocalStack"):
        QuotaEmulator().install()


def test_admitted_rate_is_measured_between_first_and_last_admitted_call(stack: LocalStack) -> None:
    clock = FakeClock()
    with QuotaEmulator({"CreateThing": 4}, clock=clock, burst_seconds=0.25) as quota:
        for _ in range(21):
            quota.try_acquire("CreateThing")
            clock.now += 0.125

    counts = quota.counts()
    assert counts.admitted["CreateThing"] == 11
    assert counts.admitted_window["CreateThing"] == (1000.0, 1002.5)
    assert counts.admitted_rate("CreateThing") == pytest.approx(4.0)
    assert counts.admitted_rate("AttachPolicy") is None


def test_moto_lock_serialises_iot_so_concurrent_requests_never_fail(stack: LocalStack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from thingpress.local.layers import MotoLock

    iot = single_attempt_client(stack, "iot")

    def create_and_describe(index: int) -> str:
        iot.create_thing(thingName=f"n{index}")
        return str(iot.describe_thing(thingName=f"n{index}")["thingName"])

    with MotoLock(), ThreadPoolExecutor(8) as pool:
        names = list(pool.map(create_and_describe, range(300)))

    assert names == [f"n{index}" for index in range(300)]
