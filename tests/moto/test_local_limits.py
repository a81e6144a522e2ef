"""AWS limits on the local stack that moto alone does not enforce (or measures differently).

S3 keys over 1024 bytes, DynamoDB items over 400 KB, SQS bodies over the queue's limit in bytes, and
the S3 event's sequencer (see `thingpress.local.server.FIDELITY_PATCHES`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from testing.helpers import write_sam_project
from thingpress.local import LocalStack

TEMPLATE = """\
AWSTemplateFormatVersion: 2010-09-09
Transform: AWS::Serverless-2016-10-31
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      VersioningConfiguration: {Status: Enabled}
      NotificationConfiguration:
        QueueConfigurations:
          - Event: s3:ObjectCreated:*
            Queue: !GetAtt Queue.Arn
  Queue:
    Type: AWS::SQS::Queue
  SmallQueue:
    Type: AWS::SQS::Queue
    Properties:
      MaximumMessageSize: 1024
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sam_project(tmp_path_factory.mktemp("limits_project"), TEMPLATE, {})


@pytest.fixture
def stack(project: Path) -> Iterator[LocalStack]:
    with LocalStack(project / "template.yaml", stack_name="Limits") as local:
        yield local


def error_of(raised: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = raised.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


@pytest.mark.parametrize("key", ["k" * 1025, "é" * 513, "k/" * 400 + "€" * 76])
def test_s3_refuses_keys_over_1024_utf8_bytes(stack: LocalStack, key: str) -> None:
    s3 = stack.client("s3")
    assert len(key.encode()) > 1024
    with pytest.raises(ClientError) as put:
        s3.put_object(Bucket=stack.bucket, Key=key, Body=b"x")
    assert error_of(put) == ("KeyTooLongError", "Your key is too long")
    s3.put_object(Bucket=stack.bucket, Key="source", Body=b"x")
    with pytest.raises(ClientError) as copy:
        s3.copy_object(Bucket=stack.bucket, Key=key, CopySource={"Bucket": stack.bucket, "Key": "source"})
    assert error_of(copy)[0] == "KeyTooLongError"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket).get("Contents", [])] == ["source"]


def test_s3_accepts_a_key_of_exactly_1024_bytes(stack: LocalStack) -> None:
    s3 = stack.client("s3")
    key = "a" * 1022 + "é"
    s3.put_object(Bucket=stack.bucket, Key=key, Body=b"x")
    assert s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read() == b"x"


def test_s3_events_carry_a_sequencer_that_grows(stack: LocalStack) -> None:
    s3 = stack.client("s3")
    sqs = stack.client("sqs")
    for body in (b"1", b"2", b"3"):
        s3.put_object(Bucket=stack.bucket, Key="same.csv", Body=body)

    messages = sqs.receive_message(QueueUrl=stack.physical_id("Queue"), MaxNumberOfMessages=10)["Messages"]
    records = [json.loads(m["Body"])["Records"][0] for m in messages if "Records" in json.loads(m["Body"])]
    sequencers = [record["s3"]["object"]["sequencer"] for record in records]
    assert len(sequencers) == 3
    assert [int(value, 16) for value in sequencers] == sorted(int(value, 16) for value in sequencers)
    assert len(set(sequencers)) == 3


def item_of_bytes(size: int) -> dict[str, Any]:
    """An item whose attribute names and values add up to ``size`` bytes."""
    return {"pk": {"S": "p"}, "data": {"S": "x" * (size - len("pk") - len("p") - len("data"))}}


def test_dynamodb_refuses_items_over_400_kb(stack: LocalStack) -> None:
    dynamodb = stack.client("dynamodb")
    table = stack.physical_id("Table")
    too_big = item_of_bytes(410 * 1024)

    with pytest.raises(ClientError) as put:
        dynamodb.put_item(TableName=table, Item=too_big)
    assert error_of(put) == ("ValidationException", "Item size has exceeded the maximum allowed size")
    with pytest.raises(ClientError) as transact:
        dynamodb.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": too_big}}])
    assert "Item size has exceeded the maximum allowed size" in error_of(transact)[1]
    dynamodb.put_item(TableName=table, Item=item_of_bytes(390 * 1024))
    with pytest.raises(ClientError) as update:
        dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": "p"}},
            UpdateExpression="SET more = :more",
            ExpressionAttributeValues={":more": {"S": "y" * 20 * 1024}},
        )
    assert error_of(update) == (
        "ValidationException",
        "Item size to update has exceeded the maximum allowed size",
    )


def test_sqs_measures_bodies_in_utf8_bytes(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    small = stack.physical_id("SmallQueue")
    sqs.send_message(QueueUrl=small, MessageBody="x" * 1024)
    with pytest.raises(ClientError) as ascii_over:
        sqs.send_message(QueueUrl=small, MessageBody="x" * 1025)
    assert error_of(ascii_over)[0] == "InvalidParameterValue"
    with pytest.raises(ClientError) as multibyte_over:  # 600 characters, 1200 bytes
        sqs.send_message(QueueUrl=small, MessageBody="é" * 600)
    assert "Message must be shorter than 1024 bytes" in error_of(multibyte_over)[1]


def test_sqs_refuses_bodies_over_the_default_limit_of_1_mib(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    queue = stack.physical_id("Queue")
    limit = int(
        sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["MaximumMessageSize"])["Attributes"][
            "MaximumMessageSize"
        ]
    )
    assert limit == 1_048_576
    with pytest.raises(ClientError) as over:
        sqs.send_message(QueueUrl=queue, MessageBody="é" * (limit // 2 + 1))
    assert error_of(over)[0] == "InvalidParameterValue"
