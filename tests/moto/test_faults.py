"""The seeded fault injector: 5xx and dropped connections per protocol, outages, and the
invocation-side faults (duplicate deliveries and S3 events, visibility expiry, crashes)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError

from thingpress.local import LocalStack
from thingpress.local.faults import (
    CrashAfter,
    EmulatorFaults,
    FaultInjector,
    FaultPlan,
    FaultyEmulator,
    Outage,
    SimulatedCrash,
)
from thingpress.local.layers import mark_harness_client
from thingpress.local.quota import QuotaEmulator

TEMPLATE = """\
AWSTemplateFormatVersion: 2010-09-09
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.13
    Timeout: 30
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    DependsOn: QueuePolicy
    Properties:
      NotificationConfiguration:
        QueueConfigurations:
          - Event: s3:ObjectCreated:*
            Queue: !GetAtt IntakeQueue.Arn
  QueuePolicy:
    Type: AWS::SQS::QueuePolicy
    Properties:
      Queues: [!Ref IntakeQueue]
      PolicyDocument: {Version: "2012-10-17", Statement: []}
  IntakeQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 60
  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 60
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
  IntakeFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code
      Handler: tp_faults_code.app.intake
      Events:
        Intake:
          Type: SQS
          Properties:
            Queue: !GetAtt IntakeQueue.Arn
            BatchSize: 1
  WorkFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code
      Handler: tp_faults_code.app.work
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt WorkQueue.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig:
              MaximumConcurrency: 2
"""

CODE = '''\
"""Test functions: intake records S3 events; work creates one thing per import entry."""
import json
import threading
import time

from layer_utils.aws_utils import get_client

SEEN = []
ERRORS = []
LOCK = threading.Lock()


def intake(event, context):
    for record in event["Records"]:
        with LOCK:
            SEEN.append(("intake", json.loads(record["body"])))


def work(event, context):
    iot = get_client("iot")
    started = time.monotonic()
    for record in event["Records"]:
        body = json.loads(record["body"])
        for entry in body.get("entries", []):
            try:
                iot.create_thing(thingName=entry["thing_name"])
            except Exception as error:
                with LOCK:
                    ERRORS.append(repr(error))
        time.sleep(body.get("sleep", 0))
        with LOCK:
            SEEN.append(
                (
                    "work",
                    record["messageId"],
                    int(record["attributes"]["ApproximateReceiveCount"]),
                    started,
                    time.monotonic(),
                )
            )
    return {"batchItemFailures": []}
'''


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults_project")
    (root / "template.yaml").write_text(TEMPLATE)
    (root / "code" / "tp_faults_code").mkdir(parents=True)
    (root / "code" / "tp_faults_code" / "__init__.py").write_text("")
    (root / "code" / "tp_faults_code" / "app.py").write_text(textwrap.dedent(CODE))
    return root


@pytest.fixture
def stack(project: Path) -> Iterator[LocalStack]:
    with LocalStack(project / "template.yaml", stack_name="faultstest") as local:
        module = sys.modules.get("tp_faults_code.app")
        if module is not None:
            module.SEEN.clear()  # type: ignore[attr-defined]
            module.ERRORS.clear()  # type: ignore[attr-defined]
        yield local


def app_state(name: str) -> list[Any]:
    return list(getattr(sys.modules["tp_faults_code.app"], name))


def client(stack: LocalStack, service: str, attempts: int = 1) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=stack.endpoint_url,
        region_name=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


def harness(stack: LocalStack, service: str) -> Any:
    return mark_harness_client(stack.client(service))


# --- server side ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "call", "codes"),
    [
        (
            "iot",
            lambda c: c.list_things(),
            {500: "InternalFailureException", 503: "ServiceUnavailableException"},
        ),
        ("sqs", lambda c: c.list_queues(), {500: "InternalError", 503: "ServiceUnavailable"}),
        ("dynamodb", lambda c: c.list_tables(), {500: "InternalServerError", 503: "ServiceUnavailable"}),
        ("s3", lambda c: c.list_buckets(), {500: "InternalError", 503: "ServiceUnavailable"}),
    ],
)
def test_server_errors_have_each_protocols_shape(
    stack: LocalStack, service: str, call: Any, codes: dict[int, str]
) -> None:
    aws = client(stack, service)
    seen: dict[int, str] = {}
    with FaultInjector(FaultPlan(error_rate=1.0, services=frozenset({service})), seed=3) as injector:
        for _ in range(12):
            with pytest.raises(ClientError) as raised:
                call(aws)
            response = raised.value.response
            seen[response["ResponseMetadata"]["HTTPStatusCode"]] = response["Error"]["Code"]

    assert seen == codes
    assert sum(injector.injected.values()) == 12


def test_botocore_retries_server_errors_until_success(stack: LocalStack) -> None:
    iot = client(stack, "iot", attempts=10)
    with FaultInjector(FaultPlan(error_rate=0.5), seed=1) as injector:
        iot.create_thing(thingName="survivor")

    assert stack.client("iot").describe_thing(thingName="survivor")["thingName"] == "survivor"
    assert sum(injector.injected.values()) >= 1


def test_dropped_connection_is_a_connection_error_and_nothing_happens(stack: LocalStack) -> None:
    sqs = client(stack, "sqs")
    url = stack.physical_id("WorkQueue")
    with FaultInjector(FaultPlan(drop_rate=1.0), seed=0) as injector, pytest.raises(HTTPClientError):
        sqs.send_message(QueueUrl=url, MessageBody="lost")

    assert injector.injected == {("sqs:SendMessage", "drop"): 1}
    assert harness(stack, "sqs").receive_message(QueueUrl=url).get("Messages", []) == []


def test_drop_after_serving_applies_the_change_but_the_client_never_hears(stack: LocalStack) -> None:
    sqs = client(stack, "sqs")
    url = stack.physical_id("WorkQueue")
    with FaultInjector(FaultPlan(drop_after_rate=1.0), seed=0), pytest.raises(HTTPClientError):
        sqs.send_message(QueueUrl=url, MessageBody="sent anyway")

    messages = harness(stack, "sqs").receive_message(QueueUrl=url)["Messages"]
    assert [message["Body"] for message in messages] == ["sent anyway"]


def test_faults_are_reproducible_from_the_seed(stack: LocalStack) -> None:
    def run(seed: int) -> list[str]:
        iot = client(stack, "iot")
        outcomes = []
        with FaultInjector(FaultPlan(error_rate=0.3, drop_rate=0.2), seed=seed):
            for _ in range(30):
                try:
                    iot.list_things()
                    outcomes.append("ok")
                except ClientError as error:
                    outcomes.append(error.response["Error"]["Code"])
                except HTTPClientError:
                    outcomes.append("drop")
        return outcomes

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert {"ok", "drop"} <= set(first)


def test_faults_target_only_the_listed_services_and_operations(stack: LocalStack) -> None:
    iot = client(stack, "iot")
    sqs = client(stack, "sqs")
    plan = FaultPlan(error_rate=1.0, services=frozenset({"iot"}), operations=frozenset({"CreateThing"}))
    with FaultInjector(plan) as injector:
        iot.list_things()
        sqs.list_queues()
        for _ in range(2):
            with pytest.raises(ClientError) as raised:
                iot.create_thing(thingName="x")
            assert raised.value.response["Error"]["Code"] in {
                "InternalFailureException",
                "ServiceUnavailableException",
            }

    assert set(injector.injected) <= {("iot:CreateThing", "500"), ("iot:CreateThing", "503")}
    assert sum(injector.injected.values()) == 2


def test_harness_requests_are_never_faulted(stack: LocalStack) -> None:
    with FaultInjector(FaultPlan(error_rate=1.0)) as injector:
        harness(stack, "iot").list_things()
        harness(stack, "sqs").list_queues()

    assert not injector.injected


def test_outage_window_after_calls_rejects_every_call_until_it_ends(stack: LocalStack) -> None:
    clock = FakeClock()
    iot = client(stack, "iot")
    outage = Outage("CreateThing", duration=5.0, after_calls=2)
    with FaultInjector(FaultPlan(outages=(outage,)), clock=clock) as injector:
        iot.create_thing(thingName="before")
        for _ in range(3):
            with pytest.raises(iot.exceptions.ServiceUnavailableException):
                iot.create_thing(thingName="during")
            clock.now += 1.0
        iot.list_things()
        clock.now += 2.0
        iot.create_thing(thingName="after")

    (report,) = injector.outages()
    assert report.started == 50.0
    assert report.ended == 55.0
    assert report.rejected == 3
    assert injector.injected == {("iot:CreateThing", "outage"): 3}
    names = {thing["thingName"] for thing in stack.client("iot").list_things()["things"]}
    assert names == {"before", "after"}


def test_outage_window_at_a_time_after_installation(stack: LocalStack) -> None:
    clock = FakeClock()
    iot = client(stack, "iot")
    outage = Outage("CreateThing", duration=1.0, start=10.0)
    with FaultInjector(FaultPlan(outages=(outage,)), clock=clock) as injector:
        iot.create_thing(thingName="early")
        clock.now += 10.5
        with pytest.raises(iot.exceptions.ServiceUnavailableException):
            iot.create_thing(thingName="late")
        clock.now += 1.0
        iot.create_thing(thingName="later")

    (report,) = injector.outages()
    assert (report.started, report.ended, report.rejected) == (60.0, 61.0, 1)


def test_scheduled_faults_fail_exactly_the_given_calls_of_an_api(stack: LocalStack) -> None:
    s3 = client(stack, "s3")
    s3.put_object(Bucket=stack.bucket, Key="k", Body=b"x")
    outcomes = []
    with FaultInjector(FaultPlan(scheduled={"s3:GetObject": frozenset({2, 3})}), seed=4) as injector:
        for _ in range(4):
            try:
                s3.get_object(Bucket=stack.bucket, Key="k")["Body"].read()
                outcomes.append("ok")
            except ClientError as error:
                outcomes.append(error.response["Error"]["Code"])
        s3.head_object(Bucket=stack.bucket, Key="k")

    assert outcomes[0] == outcomes[3] == "ok"
    assert set(outcomes[1:3]) <= {"InternalError", "ServiceUnavailable"}
    assert sum(injector.injected.values()) == 2


def test_invalid_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultPlan(error_rate=1.5)
    with pytest.raises(ValueError, match="add up"):
        FaultPlan(error_rate=0.6, drop_rate=0.6)


def test_quota_and_faults_stack_in_front_of_each_other(stack: LocalStack) -> None:
    iot = client(stack, "iot")
    with (
        QuotaEmulator({"CreateThing": 1}, clock=FakeClock()) as quota,
        FaultInjector(FaultPlan(drop_rate=1.0)),
        pytest.raises(HTTPClientError),
    ):
        iot.create_thing(thingName="a")
    assert quota.counts().calls == {}


# --- invocation side ------------------------------------------------------------------------------


def import_body(names: list[str], **extra: Any) -> str:
    return json.dumps({"entries": [{"thing_name": name} for name in names], **extra})


def test_duplicate_delivery_rate_delivers_batches_twice(stack: LocalStack) -> None:
    harness(stack, "sqs").send_message(
        QueueUrl=stack.physical_id("WorkQueue"), MessageBody=import_body(["d1"])
    )
    emulator = FaultyEmulator(
        stack, EmulatorFaults(duplicate_delivery_rate=1.0, duplicate_functions=("WorkFunction",))
    )

    stats = emulator.run_until_idle(max_seconds=30)

    assert stats.idle
    assert [i.delivery for i in emulator.invocations if i.function == "WorkFunction"] == [1, 2]
    assert len([entry for entry in app_state("SEEN") if entry[0] == "work"]) == 2


def test_duplicate_batches_deliver_exactly_the_given_batches_twice(stack: LocalStack) -> None:
    sqs = harness(stack, "sqs")
    emulator = FaultyEmulator(
        stack, EmulatorFaults(duplicate_batches=frozenset({2}), duplicate_functions=("WorkFunction",))
    )
    for batch in range(3):
        sqs.send_message(QueueUrl=stack.physical_id("WorkQueue"), MessageBody=import_body([f"b{batch}"]))
        emulator.run_until_idle(max_seconds=30)

    deliveries = [i.delivery for i in emulator.invocations if i.function == "WorkFunction"]
    assert deliveries == [1, 1, 2, 1]


def test_duplicate_s3_event_is_sent_to_the_intake_queue_again(stack: LocalStack) -> None:
    harness(stack, "s3").put_object(Bucket=stack.bucket, Key="in/a.csv", Body=b"x")
    emulator = FaultyEmulator(
        stack, EmulatorFaults(duplicate_s3_event_rate=1.0, s3_event_functions=("IntakeFunction",))
    )

    stats = emulator.run_until_idle(max_seconds=30)

    assert stats.idle
    events = [body for kind, body in app_state("SEEN") if kind == "intake" and "Records" in body]
    assert len(events) == 2
    assert events[0] == events[1]
    assert events[0]["Records"][0]["s3"]["object"]["key"] == "in/a.csv"
    assert emulator.duplicate_s3_events == 1


def test_visibility_expiry_delivers_a_record_to_a_concurrent_invocation(stack: LocalStack) -> None:
    sqs = harness(stack, "sqs")
    url = stack.physical_id("WorkQueue")
    sqs.send_message(QueueUrl=url, MessageBody=import_body(["v1"], sleep=0.3))
    emulator = FaultyEmulator(
        stack, EmulatorFaults(visibility_expiries=1, visibility_function="WorkFunction"), max_concurrency=None
    )

    stats = emulator.run_until_idle(max_seconds=30)

    assert stats.idle
    assert emulator.visibility_redeliveries == 1
    work = sorted((entry for entry in app_state("SEEN") if entry[0] == "work"), key=lambda e: e[2])
    assert [entry[2] for entry in work] == [1, 2]
    assert work[0][1] == work[1][1]
    (_, _, _, first_start, first_end), (_, _, _, second_start, second_end) = work
    assert second_start < first_end and first_start < second_end
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"][
            "ApproximateNumberOfMessages"
        ]
        == "0"
    )


def test_crash_after_k_calls_kills_the_invocation_and_the_batch_is_redelivered(stack: LocalStack) -> None:
    names = [f"c{i}" for i in range(5)]
    harness(stack, "sqs").send_message(
        QueueUrl=stack.physical_id("WorkQueue"), MessageBody=import_body(names)
    )
    things_at_redelivery: list[int] = []

    def before(function: str, event: dict[str, Any]) -> dict[str, Any]:
        if event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2":
            things_at_redelivery.append(len(harness(stack, "iot").list_things()["things"]))
        return event

    emulator = FaultyEmulator(
        stack, EmulatorFaults(crash=CrashAfter(after=3, function="WorkFunction")), before_invoke=before
    )
    with QuotaEmulator(clock=FakeClock()) as quota:
        stats = emulator.run_until_idle(max_seconds=30)

    assert stats.idle
    assert emulator.crashes_fired == 1
    (crash,) = emulator.crashes
    assert isinstance(crash.error, SimulatedCrash)
    assert crash.failed_records == 1
    assert things_at_redelivery == [3]
    assert quota.counts().calls[("iot", "CreateThing")] == 3 + 5
    assert app_state("ERRORS") == []
    assert {thing["thingName"] for thing in harness(stack, "iot").list_things()["things"]} == set(names)
    assert stats.errors == 1


def test_crash_is_sticky_for_the_dead_invocations_entries(stack: LocalStack) -> None:
    from thingpress.local.faults import function_client

    emulator = FaultyEmulator(stack, EmulatorFaults(crash=CrashAfter(after=1, function="WorkFunction")))
    iot = function_client(stack, "WorkFunction", "iot")
    event = {"Records": [{"body": import_body(["s1", "s2"])}]}
    emulator._before("WorkFunction", event)

    with pytest.raises(SimulatedCrash):
        iot.create_thing(thingName="s1")
    with pytest.raises(SimulatedCrash):
        iot.create_thing(thingName="s2")
    iot.create_thing(thingName="unrelated")
    emulator._after("WorkFunction", event, None)
    iot.create_thing(thingName="s2")

    names = {thing["thingName"] for thing in harness(stack, "iot").list_things()["things"]}
    assert names == {"s1", "unrelated", "s2"}
