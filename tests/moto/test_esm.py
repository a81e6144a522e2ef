"""The ESM emulator end to end: S3 → queue → function → queue → function on the local stack.

The template and the handler packages are written by these tests (so they do not depend on the
real handlers); handlers write what they saw into the stack's DynamoDB table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from testing.helpers import write_sam_project
from thingpress.local import EventSourceMappingEmulator, Invocation, LocalStack

TEMPLATE = """\
AWSTemplateFormatVersion: 2010-09-09
Transform: AWS::Serverless-2016-10-31
Parameters:
  Prefix:
    Type: String
    Default: incoming/
Globals:
  Function:
    Runtime: python3.13
    Timeout: 30
    MemorySize: 256
    Layers:
      - !Ref CodeLayer
    Environment:
      Variables:
        TABLE: !Ref Table
        SHARED: from-globals
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    DependsOn: QueuePolicy
    Properties:
      NotificationConfiguration:
        QueueConfigurations:
          - Event: s3:ObjectCreated:*
            Queue: !GetAtt FirstQueue.Arn
            Filter:
              S3Key:
                Rules:
                  - Name: prefix
                    Value: !Ref Prefix
  QueuePolicy:
    Type: AWS::SQS::QueuePolicy
    Properties:
      Queues: [!Ref FirstQueue]
      PolicyDocument: {Version: "2012-10-17", Statement: []}
  FirstDLQ:
    Type: AWS::SQS::Queue
  FirstQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 180
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt FirstDLQ.Arn
        maxReceiveCount: 2
  SecondDLQ:
    Type: AWS::SQS::Queue
  SecondQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 180
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt SecondDLQ.Arn
        maxReceiveCount: 2
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
        - {AttributeName: sk, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
        - {AttributeName: sk, KeyType: RANGE}
  CodeLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer
  FirstFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: first
      Handler: tp_esm_first.app.handler
      Timeout: 5
      Environment:
        Variables:
          NEXT_QUEUE_URL: !Ref SecondQueue
          BUCKET: !Sub "${Bucket}"
      Events:
        Intake:
          Type: SQS
          Properties:
            Queue: !GetAtt FirstQueue.Arn
            BatchSize: 1
            FunctionResponseTypes: [ReportBatchItemFailures]
  SecondFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: second
      Handler: tp_esm_second.app.handler
      Events:
        Import:
          Type: SQS
          Properties:
            Queue: !GetAtt SecondQueue.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig:
              MaximumConcurrency: 2
"""

LAYER = '''\
"""Test layer: records what a handler saw in the stack's table."""
import json
import os
import uuid

import boto3


def record(kind, **fields):
    boto3.client("dynamodb").put_item(
        TableName=os.environ["TABLE"],
        Item={"pk": {"S": kind}, "sk": {"S": uuid.uuid4().hex}, "data": {"S": json.dumps(fields)}},
    )
'''

FIRST = '''\
"""Test provider: one message per line of the uploaded object, sent to the next queue."""
import json
import os
from urllib.parse import unquote_plus

import boto3

from tp_esm_layer import record


def handler(event, context):
    failures = []
    for message in event["Records"]:
        body = json.loads(message["body"])
        if body.get("Event") == "s3:TestEvent":
            record("test-event", bucket=body["Bucket"])
            continue
        for s3_record in body["Records"]:
            raw_key = s3_record["s3"]["object"]["key"]
            key = unquote_plus(raw_key)
            if "explode" in key:
                raise RuntimeError("boom")
            record(
                "first",
                raw_key=raw_key,
                key=key,
                shared=os.environ.get("SHARED"),
                bucket_env=os.environ.get("BUCKET"),
                remaining=context.get_remaining_time_in_millis(),
                function_arn=context.invoked_function_arn,
                receive_count=message["attributes"]["ApproximateReceiveCount"],
                event_source=message["eventSource"],
            )
            bucket = s3_record["s3"]["bucket"]["name"]
            content = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            lines = [line for line in content.splitlines() if line]
            entries = [{"Id": str(i), "MessageBody": line} for i, line in enumerate(lines)]
            if entries:
                boto3.client("sqs").send_message_batch(QueueUrl=os.environ["NEXT_QUEUE_URL"], Entries=entries)
    return {"batchItemFailures": failures}
'''

SECOND = '''\
"""Test importer: "bad..." always fails, "flaky..." fails on its first receive, "slow..." times out."""
import os

from tp_esm_layer import record


def handler(event, context):
    failures = []
    for message in event["Records"]:
        body = message["body"]
        receive_count = int(message["attributes"]["ApproximateReceiveCount"])
        if body.startswith("bad") or (body.startswith("flaky") and receive_count == 1):
            failures.append({"itemIdentifier": message["messageId"]})
            continue
        if body.startswith("slow"):
            context.get_remaining_time_in_millis()
        record(
            "second",
            body=body,
            receive_count=receive_count,
            shared=os.environ.get("SHARED"),
            next_queue=os.environ.get("NEXT_QUEUE_URL"),
            service=os.environ.get("POWERTOOLS_SERVICE_NAME"),
        )
    return {"batchItemFailures": failures}
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A template directory with its code; module scoped, since handler modules stay imported."""
    return write_sam_project(
        tmp_path_factory.mktemp("esm_project"),
        TEMPLATE,
        {"first/tp_esm_first": FIRST, "second/tp_esm_second": SECOND},
        {"layer/tp_esm_layer.py": LAYER},
    )


@pytest.fixture
def stack(project: Path) -> Any:
    with LocalStack(project / "template.yaml", stack_name="esmtest") as local:
        yield local


def recorded(stack: LocalStack, kind: str) -> list[dict[str, Any]]:
    items = stack.client("dynamodb").scan(TableName=stack.physical_id("Table"))["Items"]
    return [json.loads(item["data"]["S"]) for item in items if item["pk"]["S"] == kind]


def queue_bodies(stack: LocalStack, logical_id: str) -> list[str]:
    sqs = stack.client("sqs")
    messages = sqs.receive_message(QueueUrl=stack.physical_id(logical_id), MaxNumberOfMessages=10)
    return [message["Body"] for message in messages.get("Messages", [])]


def test_s3_upload_flows_through_both_functions_to_completion(stack: LocalStack) -> None:
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.bucket, Key="incoming/dir/my file+1.txt", Body=b"a\nb\nflaky1\nbad1\n")
    s3.put_object(Bucket=stack.bucket, Key="elsewhere/ignored.txt", Body=b"x\n")
    progress: list[Invocation] = []

    stats = EventSourceMappingEmulator(stack, on_progress=progress.append).run_until_idle(max_seconds=30)

    assert stats.idle
    assert len(recorded(stack, "test-event")) == 1
    (first,) = recorded(stack, "first")
    assert first["raw_key"] == "incoming/dir/my+file%2B1.txt"
    assert first["key"] == "incoming/dir/my file+1.txt"
    assert first["shared"] == "from-globals"
    assert first["bucket_env"] == stack.bucket
    assert first["function_arn"] == stack.functions["FirstFunction"].arn
    assert first["function_arn"].startswith("arn:aws:lambda:us-east-1:123456789012:function:esmtest-")
    assert first["event_source"] == "aws:sqs"
    second = {entry["body"]: entry for entry in recorded(stack, "second")}
    assert set(second) == {"a", "b", "flaky1"}
    assert second["flaky1"]["receive_count"] == 2
    assert second["a"]["next_queue"] is None
    assert second["a"]["shared"] == "from-globals"
    assert queue_bodies(stack, "SecondDLQ") == ["bad1"]
    assert queue_bodies(stack, "FirstDLQ") == []
    assert stats.moved_to_dlq == {"SecondDLQ": 1}
    assert stats.invocations["FirstFunction"] == 2
    assert stats.records["SecondFunction"] == 4 + 2
    assert stats.failed_records == 3
    assert stats.errors == 0
    assert len(progress) == stats.total_invocations


def test_handler_exception_fails_whole_batch_and_ends_in_dlq(stack: LocalStack) -> None:
    stack.client("s3").put_object(Bucket=stack.bucket, Key="incoming/explode.txt", Body=b"a\n")
    emulator = EventSourceMappingEmulator(stack)

    stats = emulator.run_until_idle(max_seconds=30)

    assert stats.idle
    assert stats.errors == 2
    errors = [invocation.error for invocation in emulator.invocations if invocation.error is not None]
    assert all(isinstance(error, RuntimeError) for error in errors)
    assert stats.moved_to_dlq == {"FirstDLQ": 1}
    (dead,) = queue_bodies(stack, "FirstDLQ")
    assert json.loads(dead)["Records"][0]["s3"]["object"]["key"] == "incoming/explode.txt"
    assert recorded(stack, "second") == []


def test_remaining_time_comes_from_injected_clock_and_function_timeout(stack: LocalStack) -> None:
    stack.client("s3").put_object(Bucket=stack.bucket, Key="incoming/t.txt", Body=b"")
    emulator = EventSourceMappingEmulator(stack, clock=lambda: 1000.0)

    stats = emulator.run_until_idle(max_seconds=30, max_invocations=10)

    assert stats.idle
    (first,) = recorded(stack, "first")
    assert first["remaining"] == 5000


def test_until_stops_the_run_early_and_leaves_the_rest_queued(stack: LocalStack) -> None:
    stack.client("s3").put_object(Bucket=stack.bucket, Key="incoming/u.txt", Body=b"a\nb\n")
    emulator = EventSourceMappingEmulator(stack)
    second_queue = stack.physical_id("SecondQueue")

    stats = emulator.run_until_idle(max_seconds=30, until=lambda: emulator.queue_depth(second_queue) > 0)

    assert not stats.idle
    assert set(stats.invocations) == {"FirstFunction"}
    assert emulator.queue_depth(second_queue) == 2
    assert recorded(stack, "second") == []


def test_timeout_fails_the_whole_batch(stack: LocalStack) -> None:
    stack.configure_function("SecondFunction", timeout=1)
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.physical_id("SecondQueue"), MessageBody="slow1")
    ticks = iter(range(1_000_000))
    emulator = EventSourceMappingEmulator(stack, clock=lambda: float(next(ticks)))

    stats = emulator.run_until_idle(max_seconds=1_000_000)

    assert stats.idle
    assert stats.errors == 2
    errors = [i.error for i in emulator.invocations if i.function == "SecondFunction"]
    assert len(errors) == 2
    assert all(isinstance(error, TimeoutError) for error in errors)
    assert queue_bodies(stack, "SecondDLQ") == ["slow1"]


def test_batch_item_failure_with_unknown_identifier_is_a_whole_batch_failure(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.physical_id("SecondQueue"), MessageBody="bad-identifier")

    def rename(function: str, event: dict[str, Any]) -> dict[str, Any]:
        return {"Records": [{**record, "messageId": "not-in-batch"} for record in event["Records"]]}

    outcomes: list[Any] = []
    emulator = EventSourceMappingEmulator(
        stack,
        before_invoke=rename,
        after_invoke=lambda function, event, outcome: outcomes.append((function, outcome)),
    )

    stats = emulator.run_until_idle(max_seconds=30)

    assert stats.idle
    assert stats.errors == 2
    second = [outcome for function, outcome in outcomes if function == "SecondFunction"]
    assert len(second) == 2
    assert all(isinstance(outcome, ValueError) for outcome in second)
    assert queue_bodies(stack, "SecondDLQ") == ["bad-identifier"]


def test_duplicate_delivery_invokes_twice_and_deletes_once(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.physical_id("SecondQueue"), MessageBody="dup1")
    emulator = EventSourceMappingEmulator(stack, duplicate_delivery=lambda function, event: True)

    stats = emulator.run_until_idle(max_seconds=30)

    assert stats.idle
    deliveries = [i.delivery for i in emulator.invocations if i.function == "SecondFunction"]
    assert deliveries == [1, 2]
    assert [entry["body"] for entry in recorded(stack, "second")] == ["dup1", "dup1"]


def test_caller_environment_does_not_leak_and_is_restored(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "from-the-shell")
    stack.client("sqs").send_message(QueueUrl=stack.physical_id("SecondQueue"), MessageBody="env1")

    EventSourceMappingEmulator(stack).run_until_idle(max_seconds=30)

    (entry,) = recorded(stack, "second")
    assert entry["service"] is None
    assert os.environ["POWERTOOLS_SERVICE_NAME"] == "from-the-shell"
    assert "TABLE" not in os.environ


def test_a_message_that_one_look_misses_keeps_the_queues_busy(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = EventSourceMappingEmulator(stack)
    sources = len(emulator.sources)
    # The first look misses a message between two counts (delayed, then not yet visible); the second
    # look sees it visible.
    depths = iter([0] * sources + [1] + [0] * (sources - 1))
    monkeypatch.setattr(emulator, "queue_depth", lambda _url: next(depths))
    assert not emulator.idle()
    monkeypatch.setattr(emulator, "queue_depth", lambda _url: 0)
    assert emulator.idle()


def test_concurrent_invocations_up_to_maximum_concurrency(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    for batch in range(5):
        sqs.send_message_batch(
            QueueUrl=stack.physical_id("SecondQueue"),
            Entries=[{"Id": str(i), "MessageBody": f"m{batch}-{i}"} for i in range(10)],
        )
    emulator = EventSourceMappingEmulator(stack, max_concurrency=None)
    assert emulator.concurrency(next(s for s in stack.event_sources if s.function == "SecondFunction")) == 2

    stats = emulator.run_until_idle(max_seconds=30)

    assert stats.idle
    assert stats.records["SecondFunction"] == 50
    assert len(recorded(stack, "second")) == 50


def test_event_shape_matches_lambda(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    sqs.send_message(
        QueueUrl=stack.physical_id("SecondQueue"),
        MessageBody="shape",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "x"}},
    )
    emulator = EventSourceMappingEmulator(stack)
    source = next(s for s in stack.event_sources if s.function == "SecondFunction")

    event = emulator.build_event(source, emulator.receive(source))

    (record,) = event["Records"]
    assert set(record) >= {"messageId", "receiptHandle", "body", "attributes", "messageAttributes"}
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == stack.attribute("SecondQueue", "Arn")
    assert record["awsRegion"] == "us-east-1"
    assert record["md5OfBody"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["kind"]["stringValue"] == "x"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"


def test_max_invocations_bounds_the_run(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    for i in range(3):
        sqs.send_message(
            QueueUrl=stack.physical_id("FirstQueue"),
            MessageBody=json.dumps({"Event": "s3:TestEvent", "Bucket": str(i)}),
        )

    stats = EventSourceMappingEmulator(stack).run_until_idle(max_seconds=30, max_invocations=2)

    assert not stats.idle
    assert stats.total_invocations == 2


def test_crash_after_the_handler_redelivers_work_already_done(stack: LocalStack) -> None:
    stack.client("sqs").send_message(QueueUrl=stack.physical_id("SecondQueue"), MessageBody="once")
    crashes = iter([True])

    def crash_once(function: str, event: dict[str, Any], outcome: Any) -> None:
        if function == "SecondFunction" and next(crashes, False):
            raise ConnectionResetError("execution environment lost")

    emulator = EventSourceMappingEmulator(stack, after_invoke=crash_once)

    stats = emulator.run_until_idle(max_seconds=30)

    assert stats.idle
    assert stats.errors == 1
    assert sorted(entry["receive_count"] for entry in recorded(stack, "second")) == [1, 2]
    assert queue_bodies(stack, "SecondDLQ") == []


def test_crash_before_the_handler_fails_the_batch(stack: LocalStack) -> None:
    stack.client("sqs").send_message(QueueUrl=stack.physical_id("SecondQueue"), MessageBody="never")

    def crash(function: str, event: dict[str, Any]) -> dict[str, Any]:
        if function == "SecondFunction":
            raise MemoryError("out of memory")
        return event

    stats = EventSourceMappingEmulator(stack, before_invoke=crash).run_until_idle(max_seconds=30)

    assert stats.idle
    assert recorded(stack, "second") == []
    assert len(recorded(stack, "test-event")) == 1
    assert stats.errors == 2
    assert queue_bodies(stack, "SecondDLQ") == ["never"]
