"""No job is left unfinished: end to end on the local stack, with the real handlers and the ESM emulator.

1. The ManifestProvider fails deterministically on a manifest (its parser raises after three
   entries): the first deliveries are retried, the last one fails the job, whose three entries are
   still imported; the job ends FAILED with a report and nothing reaches the IntakeDLQ.
2. The BulkImporter fails deterministically on one import message, which goes to the ImportDLQ: the
   job stays IMPORTING until the sweep (on an injected clock) fails it, keeping the settled entries
   in the report and counting the others as failed. Redriving the DLQ afterwards leaves it final.
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from job_sweeper.sweeper import SweepConfig, sweep_jobs
from layer_utils.jobs import JobStatus, JobStore, job_id_for
from thingpress import remote
from thingpress.generate import generate
from thingpress.local import EventSourceMappingEmulator, LocalStack
from thingpress.localrun import LOCAL_IOT_TPS

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
PROVIDER = "ManifestProviderFunction"
IMPORTER = "BulkImporterFunction"
PARAMETERS = {"IotApiTps": json.dumps(LOCAL_IOT_TPS), "CertsPerMessage": "2", "ImportBatchSize": "1"}


def dlq_depths(stack: LocalStack) -> dict[str, int]:
    sqs = stack.client("sqs")
    return {
        dlq: int(
            sqs.get_queue_attributes(
                QueueUrl=stack.physical_id(dlq), AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
        )
        for dlq in ("IntakeDLQ", "ImportDLQ")
    }


def read_report(stack: LocalStack, key: str) -> dict[str, Any]:
    body = stack.client("s3").get_object(Bucket=stack.bucket, Key=f"reports/{key}.json")["Body"].read()
    return json.loads(body)


def things(stack: LocalStack) -> set[str]:
    paginator = stack.client("iot").get_paginator("list_things")
    return {thing["thingName"] for page in paginator.paginate() for thing in page["things"]}


def upload(stack: LocalStack, tmp_path: Path, key: str, count: int, seed: int) -> tuple[str, list[str]]:
    manifest = tmp_path / key.rsplit("/", 1)[-1]
    summary = generate("generated", count, manifest, seed=seed)
    put = stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=manifest.read_bytes())
    return job_id_for(stack.bucket, key, put["VersionId"]), list(summary.thing_names)


def test_a_manifest_the_provider_always_fails_on_ends_failed_on_the_last_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalStack(TEMPLATE, parameters=PARAMETERS, stack_name="lastattempt") as stack:
        stack.handler(PROVIDER)  # import the provider as its cold start does, then break it
        stream = importlib.import_module("manifest_provider.stream")
        real = stream.ManifestStream._handle

        def handle(self: Any, outcome: Any) -> None:
            # A fault of the provider itself (a parser's own error ends the manifest at once).
            if self.run.entries_done == 3:
                raise RuntimeError("provider exploded")
            real(self, outcome)

        monkeypatch.setattr(stream.ManifestStream, "_handle", handle)
        job_id, names = upload(stack, tmp_path, "generated/exploding.txt", 6, seed=51)
        emulator = EventSourceMappingEmulator(stack)

        stats = emulator.run_until_idle(max_seconds=120)

        assert stats.idle
        provider_runs = [i for i in emulator.invocations if i.function == PROVIDER]
        # The bucket's s3:TestEvent, then the manifest's MaxReceiveCount (5) deliveries.
        assert [i.failed_records for i in provider_runs] == [0, 1, 1, 1, 1, 0]
        report = read_report(stack, "generated/exploding.txt")
        reason = "The manifest could not be processed after 5 attempts: provider exploded."
        assert (report["job_id"], report["status"], report["reason"]) == (job_id, "FAILED", reason)
        assert (report["total"], report["imported"], report["failed"]) == (3, 3, 0)
        assert things(stack) == set(names[:3])
        assert dlq_depths(stack) == {"IntakeDLQ": 0, "ImportDLQ": 0}
        assert stats.moved_to_dlq == {}


def test_a_job_stuck_behind_the_import_dlq_is_swept_and_stays_final_after_redrive(tmp_path: Path) -> None:
    with LocalStack(TEMPLATE, parameters=PARAMETERS, stack_name="sweep") as stack:
        job_id, names = upload(stack, tmp_path, "generated/poisoned.txt", 4, seed=52)

        def poison_second_chunk(function: str, event: dict[str, Any]) -> dict[str, Any]:
            if function == IMPORTER and any(
                json.loads(r["body"])["chunk"] == "000001" for r in event["Records"]
            ):
                raise RuntimeError("the importer dies on this message")
            return event

        stats = EventSourceMappingEmulator(stack, before_invoke=poison_second_chunk).run_until_idle(120)
        assert stats.idle
        assert dlq_depths(stack) == {"IntakeDLQ": 0, "ImportDLQ": 1}
        store = JobStore(
            stack.physical_id("JobsTable"), dynamodb=stack.client("dynamodb"), s3=stack.client("s3")
        )
        stuck = store.get_job(job_id)
        assert stuck is not None
        assert (stuck.status, stuck.total, stuck.settled) == (JobStatus.IMPORTING, 4, 2)

        # The scheduled sweep, StalledJobMinutes and a minute later: the job made no progress since.
        later = datetime.now(UTC) + SweepConfig(store.table_name).stall_after + timedelta(minutes=1)
        swept_metrics: list[tuple[str, float]] = []
        result = sweep_jobs(
            store,
            SweepConfig(store.table_name),
            clock=lambda: later,
            emit=lambda name, value, _dims: swept_metrics.append((name, value)),
        )

        assert [(job.job_id, job.was, job.status) for job in result.swept] == [
            (job_id, "IMPORTING", "FAILED")
        ]
        assert swept_metrics == [("JobsSwept", 1)]
        reason = (
            f"The job was stopped because no progress since {stuck.updated_at}; "
            "2 entries that had not settled are counted as failed."
        )
        report = read_report(stack, "generated/poisoned.txt")
        assert (report["status"], report["reason"]) == ("FAILED", reason)
        assert (report["total"], report["imported"], report["failed"], report["unsettled"]) == (4, 2, 2, 2)
        assert [entry["thing_name"] for entry in report["imported_entries"]] == names[:2]

        # The cause is fixed and the ImportDLQ redriven: the messages are processed, the job stays final.
        sqs = stack.client("sqs")
        moved = remote.redrive(sqs, stack.physical_id("ImportDLQ"), stack.physical_id("ImportQueue"))
        assert (moved.moved, moved.failed) == (1, 0)
        assert EventSourceMappingEmulator(stack).run_until_idle(120).idle
        assert dlq_depths(stack) == {"IntakeDLQ": 0, "ImportDLQ": 0}
        final = store.get_job(job_id)
        assert final is not None
        assert (final.status, final.reason) == (JobStatus.FAILED, reason)
        assert read_report(stack, "generated/poisoned.txt") == report
