"""The provider survives dying mid-fan-out: SQS redelivers the record and the manifest completes.

Regression test: the parse lease used to belong to one invocation (request id and message id), so
the redelivered record found the dead invocation's lease still live, was acknowledged as "busy" and
left the job in PARSING for ever. The lease now belongs to the SQS message.
"""

from __future__ import annotations

import json
from pathlib import Path

from thingpress.generate import generate
from thingpress.local import LocalStack
from thingpress.local.faults import CrashAfter, EmulatorFaults, FaultyEmulator
from thingpress.localrun import LOCAL_IOT_TPS

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
PROVIDER = "ManifestProviderFunction"


def test_a_provider_crash_mid_fan_out_is_resumed_by_the_redelivered_record(tmp_path: Path) -> None:
    manifest = tmp_path / "devices.txt"
    summary = generate("generated", 30, manifest, seed=41)
    parameters = {"IotApiTps": json.dumps(LOCAL_IOT_TPS), "CertsPerMessage": "2"}
    with LocalStack(TEMPLATE, parameters=parameters, stack_name="recovery") as stack:
        # 15 messages go out in two SendMessageBatch calls; the provider dies after the first.
        faults = EmulatorFaults(
            crash=CrashAfter(after=1, function=PROVIDER, service="sqs", operation="SendMessageBatch")
        )
        emulator = FaultyEmulator(stack, faults)
        stack.client("s3").put_object(
            Bucket=stack.bucket, Key="generated/devices.txt", Body=manifest.read_bytes()
        )
        stats = emulator.run_until_idle(max_seconds=120)

        assert stats.idle
        assert emulator.crashes_fired == 1
        assert [invocation.function for invocation in emulator.crashes] == [PROVIDER]
        report = json.loads(
            stack.client("s3")
            .get_object(Bucket=stack.bucket, Key="reports/generated/devices.txt.json")["Body"]
            .read()
        )
        assert (report["status"], report["total"], report["imported"], report["failed"]) == (
            "COMPLETED",
            30,
            30,
            0,
        )
        things = {
            thing["thingName"]
            for page in stack.client("iot").get_paginator("list_things").paginate()
            for thing in page["things"]
        }
        assert things == set(summary.thing_names)
        sqs = stack.client("sqs")
        for dlq in ("IntakeDLQ", "ImportDLQ"):
            attributes = sqs.get_queue_attributes(
                QueueUrl=stack.physical_id(dlq), AttributeNames=["ApproximateNumberOfMessages"]
            )
            assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
