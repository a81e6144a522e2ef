"""The events Lambda's pollers pass a handler: an SQS batch and an EventBridge "Scheduled Event"."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thingpress.local.provision import ScheduleSpec
    from thingpress.local.stack import LocalStack

__all__ = ["scheduled_event", "sqs_event"]


def scheduled_event(stack: LocalStack, schedule: ScheduleSpec, at: datetime) -> dict[str, Any]:
    """Return the event EventBridge sends a function for ``schedule`` at ``at`` (a "Scheduled Event")."""
    rule = f"{stack.stack_name}-{schedule.function}{schedule.name}"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": stack.account_id,
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": stack.region,
        "resources": [f"arn:aws:events:{stack.region}:{stack.account_id}:rule/{rule}"],
        "detail": {},
    }


def _lambda_message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    for name, value in attributes.items():
        binary = value.get("BinaryValue")
        converted[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": base64.b64encode(binary).decode("ascii") if binary is not None else None,
            "stringListValues": list(value.get("StringListValues", [])),
            "binaryListValues": [
                base64.b64encode(b).decode("ascii") for b in value.get("BinaryListValues", [])
            ],
            "dataType": value.get("DataType"),
        }
    return converted


def sqs_event(messages: Sequence[dict[str, Any]], *, queue_arn: str, region: str) -> dict[str, Any]:
    """Return the SQS event Lambda passes for messages received from a queue.

    Args:
        messages: The messages as ``ReceiveMessage`` returned them (all attributes requested).
        queue_arn: The queue's ARN (``eventSourceARN``).
        region: The queue's region (``awsRegion``).

    Returns:
        The event, with one record per message.

    """
    records = []
    for message in messages:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": _lambda_message_attributes(message.get("MessageAttributes", {})),
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        records.append(record)
    return {"Records": records}
