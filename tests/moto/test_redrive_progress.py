"""thingpress.remote.redrive tells its progress: messages handled of the dead-letter queue's depth."""

from __future__ import annotations

import boto3
from moto import mock_aws

from thingpress.remote import redrive


@mock_aws
def test_redrive_reports_progress_against_the_dlq_depth() -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    source = sqs.create_queue(QueueName="source")["QueueUrl"]
    for number in range(23):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"body {number}")
    seen: list[tuple[int, int | None]] = []

    result = redrive(sqs, dlq, source, progress=lambda done, total, status="": seen.append((done, total)))

    assert (result.moved, result.failed) == (23, 0)
    assert seen[0] == (0, 23)
    assert seen[-1] == (23, 23)
    done = [count for count, _ in seen]
    assert done == sorted(done)
    assert {total for _, total in seen} == {23}
    assert 0 < len(set(done)) - 1 <= 3  # one step per batch of up to 10 messages
