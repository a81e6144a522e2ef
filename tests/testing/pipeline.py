"""A harness that runs manifests through the whole local pipeline and reads the real end state.

One ``Pipeline`` is one fresh local stack built from ``template.yaml``: upload a manifest (with its S3
metadata), let the event source mapping emulator drain every queue, then read the job, its report,
the IoT registry and both dead-letter queues.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layer_utils.jobs import FINAL_STATUSES, Job, JobStore, latest_report_key
from thingpress.local import EventSourceMappingEmulator, LocalStack
from thingpress.localrun import LOCAL_IOT_TPS

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
PROVIDER = "ManifestProviderFunction"
DEAD_LETTER_QUEUES = ("IntakeDLQ", "ImportDLQ")


@dataclass(frozen=True)
class Result:
    """The end state of one manifest: its report, its job item, and the IoT registry after it."""

    report: dict[str, Any]
    job: Job
    things: dict[str, frozenset[str]]  # thing name -> the certificate ids attached to it

    @property
    def imported(self) -> dict[str, str]:
        """Return locator -> thing name of every imported entry in the report."""
        return {entry["locator"]: entry["thing_name"] for entry in self.report["imported_entries"]}

    @property
    def failures(self) -> dict[str, str]:
        """Return locator -> reason of every failed entry in the report."""
        return {failure["locator"]: failure["reason"] for failure in self.report["failures"]}


class Pipeline:
    """The local stack and what a test does with it."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.s3 = stack.client("s3")
        self.iot = stack.client("iot")
        self.sqs = stack.client("sqs")
        self.jobs = JobStore(stack.physical_id("JobsTable"), dynamodb=stack.client("dynamodb"), s3=self.s3)

    def configure(self, **environment: str) -> None:
        """Set environment variables of the ManifestProvider (as the stack's parameters would)."""
        self.stack.configure_function(PROVIDER, environment=environment)

    def put(self, key: str, body: bytes) -> None:
        """Write an object to the bucket without running anything (trust material)."""
        self.s3.put_object(Bucket=self.stack.bucket, Key=key, Body=body)

    def run(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None) -> Result:
        """Upload one manifest, drain every queue and return its end state.

        Checks what must hold for every input: no handler error, no failed record, nothing
        dead-lettered, both DLQs empty, the job final and its report in S3 agreeing with it.
        """
        self.s3.put_object(Bucket=self.stack.bucket, Key=key, Body=body, Metadata=dict(metadata or {}))
        stats = EventSourceMappingEmulator(self.stack, max_concurrency=None).run_until_idle(max_seconds=180)
        assert stats.idle, "the pipeline did not drain"
        assert stats.errors == 0
        assert stats.failed_records == 0
        assert sum(stats.moved_to_dlq.values()) == 0
        assert self.dlq_depths() == dict.fromkeys(DEAD_LETTER_QUEUES, 0)
        (job,) = [job for job in self.jobs.list_jobs() if job.key == key]
        assert job.status in FINAL_STATUSES, job
        body_read = self.s3.get_object(Bucket=self.stack.bucket, Key=latest_report_key(key))["Body"].read()
        report = json.loads(body_read)
        assert report["status"] == str(job.status)
        text = json.dumps(report)
        for dump in ("Traceback", "ParseError", "InvalidValue", "asn1 encoding routines"):
            assert dump not in text, f"a parser dump reached the report: {dump}"
        return Result(report, job, self.things())

    def dlq_depths(self) -> dict[str, int]:
        """Return the number of messages in each dead-letter queue."""
        depths = {}
        for logical_id in DEAD_LETTER_QUEUES:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.stack.physical_id(logical_id),
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            depths[logical_id] = int(attributes["ApproximateNumberOfMessages"]) + int(
                attributes["ApproximateNumberOfMessagesNotVisible"]
            )
        return depths

    def things(self) -> dict[str, frozenset[str]]:
        """Return every thing in IoT with the ids of the certificates attached to it."""
        names = [
            thing["thingName"]
            for page in self.iot.get_paginator("list_things").paginate()
            for thing in page["things"]
        ]
        return {
            name: frozenset(
                arn.rsplit("/", 1)[1] for arn in self.iot.list_thing_principals(thingName=name)["principals"]
            )
            for name in names
        }


@contextmanager
def pipeline(**parameters: str) -> Iterator[Pipeline]:
    """Start a fresh local stack with these template parameters (and unthrottled local IoT)."""
    with LocalStack(TEMPLATE, parameters={"IotApiTps": json.dumps(LOCAL_IOT_TPS), **parameters}) as stack:
        yield Pipeline(stack)
