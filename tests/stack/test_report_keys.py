"""Reports on the local stack: two versions of one key race, and a 1024-byte manifest key.

Each job writes its own report (``reports/jobs/<job id>.json``) and the manifest key's pointer
(``latest_report_key``), which only ever moves to a newer version of the key (the S3 event's
sequencer), whatever order the jobs finish in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from layer_utils.jobs import FINAL_STATUSES, Job, JobStatus, job_report_key, latest_report_key
from testing.pipeline import Pipeline, pipeline
from thingpress.generate import generate
from thingpress.local import EventSourceMappingEmulator

KEY = "generated/devices.txt"


def manifest(tmp_path: Path, count: int, seed: int) -> bytes:
    path = tmp_path / f"devices-{seed}.txt"
    generate("generated", count, path, seed=seed)
    return path.read_bytes()


def drain(run: Pipeline) -> None:
    stats = EventSourceMappingEmulator(run.stack, max_concurrency=None).run_until_idle(max_seconds=120)
    assert stats.idle
    assert stats.errors == 0
    assert stats.failed_records == 0


def read(run: Pipeline, key: str) -> dict[str, Any]:
    return json.loads(run.s3.get_object(Bucket=run.stack.bucket, Key=key)["Body"].read())


def jobs_of(run: Pipeline, key: str) -> dict[str, Job]:
    """The jobs of ``key`` by manifest version id."""
    return {job.version: job for job in run.jobs.list_jobs() if job.key == key}


def hold_event_of(run: Pipeline, version_id: str) -> list[str]:
    """Take the S3 events of one object version off the intake queue (as a late delivery would)."""
    sqs, queue = run.sqs, run.stack.physical_id("IntakeQueue")
    held: list[str] = []
    while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            records = json.loads(message["Body"]).get("Records", [])
            if any(record["s3"]["object"].get("versionId") == version_id for record in records):
                held.append(message["Body"])
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            else:
                sqs.change_message_visibility(
                    QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
        if held:
            break
    assert held, f"no S3 event for version {version_id}"
    return held


def assert_report_agrees(report: dict[str, Any], job: Job) -> None:
    assert job.status in FINAL_STATUSES
    assert report["job_id"] == job.job_id
    assert report["manifest"] == {"bucket": job.bucket, "key": job.key, "version": job.version}
    assert report["status"] == str(job.status)
    assert (report["total"], report["imported"], report["failed"], report["duplicates"]) == (
        job.total,
        job.succeeded,
        job.failed,
        job.duplicates,
    )
    assert len(report["imported_entries"]) == job.succeeded
    assert len(report["failures"]) == job.failed


def test_the_pointer_ends_at_the_newer_version_when_the_older_job_finishes_last(tmp_path: Path) -> None:
    with pipeline() as run:
        bucket = run.stack.bucket
        # The same bytes uploaded twice are two versions (two jobs). The older job re-imports the
        # certificates onto the things the newer job made for them, so both complete. (Different
        # certificates under the same thing names would be conflicts: Thingpress never takes over.)
        body = manifest(tmp_path, 3, seed=1)
        older = run.s3.put_object(Bucket=bucket, Key=KEY, Body=body)["VersionId"]
        newer = run.s3.put_object(Bucket=bucket, Key=KEY, Body=body)["VersionId"]
        late = hold_event_of(run, older)

        drain(run)  # only the newer version's job runs
        assert set(jobs_of(run, KEY)) == {newer}
        assert read(run, latest_report_key(KEY))["manifest"]["version"] == newer

        for body in late:  # the older version's event arrives late: its job finishes last
            run.sqs.send_message(QueueUrl=run.stack.physical_id("IntakeQueue"), MessageBody=body)
        drain(run)

        jobs = jobs_of(run, KEY)
        assert set(jobs) == {older, newer}
        for job in jobs.values():
            assert job.status == JobStatus.COMPLETED, read(run, job_report_key(job.job_id))["failures"]
            assert job.report_key == job_report_key(job.job_id)
            assert_report_agrees(read(run, job_report_key(job.job_id)), job)
        assert jobs[older].completed_at is not None and jobs[newer].completed_at is not None
        assert jobs[older].sequencer and jobs[newer].sequencer
        assert int(jobs[older].sequencer, 16) < int(jobs[newer].sequencer, 16)
        latest = read(run, latest_report_key(KEY))
        assert latest == read(run, job_report_key(jobs[newer].job_id))
        assert latest["imported"] == 3
        assert run.jobs.latest_job_id(bucket, KEY) == jobs[newer].job_id
        assert run.dlq_depths() == {"IntakeDLQ": 0, "ImportDLQ": 0}


def test_a_1024_byte_manifest_key_imports_and_its_reports_are_readable(tmp_path: Path) -> None:
    prefix = "generated/"
    key = prefix + "d" * (1024 - len(prefix) - len(".txt")) + ".txt"
    assert len(key.encode()) == 1024
    with pipeline() as run:
        result = run.run(key, manifest(tmp_path, 3, seed=3))

        assert result.job.status == JobStatus.COMPLETED
        assert result.job.succeeded == 3
        assert_report_agrees(result.report, result.job)
        pointer = latest_report_key(key)
        assert len(pointer.encode()) <= 1024
        assert pointer != f"reports/{key}.json"
        assert read(run, job_report_key(result.job.job_id)) == result.report
        assert run.jobs.latest_job_id(run.stack.bucket, key) == result.job.job_id
        assert len(result.things) == 3
