"""The JobSweeper: stuck jobs end final with a reason and a report; fresh and progressing ones are left."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from job_sweeper import sweeper as sw
from layer_utils import jobs as j
from layer_utils.aws_utils import AwsOperationError
from testing.helpers import create_jobs_table, emf_records

TABLE = "JobsTable"
BUCKET = "intake"
START = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
CONFIG = sw.SweepConfig(jobs_table=TABLE, stall_after=timedelta(minutes=60), max_lease_expiries=3)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class World:
    """A JobsTable and bucket on moto, a job store on an injected clock, and the emitted metrics."""

    def __init__(self, ddb: Any, s3: Any) -> None:
        self.ddb, self.s3 = ddb, s3
        self.clock = Clock()
        self.store_metrics: list[str] = []
        self.metrics: list[tuple[str, float, Any]] = []
        self.store = j.JobStore(TABLE, dynamodb=ddb, s3=s3, clock=self.clock, emit=self.store_metrics.append)

    def sweep(self, after: timedelta = timedelta()) -> sw.SweepResult:
        self.clock.now += after
        return sw.sweep_jobs(
            self.store,
            CONFIG,
            clock=self.clock,
            emit=lambda name, value, dims: self.metrics.append((name, value, dims)),
        )

    def job(self, job_id: str) -> j.Job:
        job = self.store.get_job(job_id)
        assert job is not None
        return job

    def report(self, key: str) -> dict[str, Any]:
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=f"reports/{key}.json")["Body"].read())


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_jobs_table(ddb, TABLE)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield World(ddb, s3)


def imported(i: int) -> j.ImportedRecord:
    return j.ImportedRecord(f"line {i}", f"thing-{i}", f"{i:064x}")


def importing_job(world: World, key: str, total: int) -> j.Job:
    _, job = world.store.create_job(BUCKET, key, "v1", vendor="generated")
    assert world.store.claim_parse(job.job_id, "parser", world.clock.now + timedelta(minutes=15))
    parsed = world.store.mark_parsed(job.job_id, "parser", total, {"entries_done": total, "next_chunk": 2})
    assert parsed is not None
    return parsed


def crash_parsers(world: World, job_id: str, times: int) -> None:
    """Let ``times`` parsers claim the job and die (each lease runs out before the next claim)."""
    for attempt in range(times + 1):
        lease = world.clock.now + timedelta(minutes=16)
        assert world.store.claim_parse(job_id, f"parser-{attempt}", lease) is not None
        world.clock.now = lease + timedelta(seconds=1)


def test_a_job_whose_parse_lease_keeps_expiring_is_failed_with_a_report(world: World) -> None:
    _, job = world.store.create_job(BUCKET, "generated/oom.txt", "v1")
    crash_parsers(world, job.job_id, 3)
    assert world.job(job.job_id).lease_expiries == 3

    result = world.sweep()

    assert [(s.job_id, s.was, s.status) for s in result.swept] == [(job.job_id, "PARSING", "FAILED")]
    swept = world.job(job.job_id)
    assert swept.status == j.JobStatus.FAILED
    assert swept.reason == "The job was stopped because the parse lease expired 3 times."
    report = world.report("generated/oom.txt")
    assert (report["status"], report["reason"], report["total"]) == ("FAILED", swept.reason, 0)
    assert world.metrics == [("JobsSwept", 1, None)]
    assert world.store_metrics == ["ManifestsFailed"]
    assert world.sweep().swept == []  # final now: nothing more to do
    assert world.metrics == [("JobsSwept", 1, None)]


def test_an_importing_job_without_progress_keeps_its_settled_entries(world: World) -> None:
    job = importing_job(world, "generated/dlq.txt", 5)
    failure = j.FailureRecord("line 4", None, "line 4: not a certificate.", "invalid_input")
    assert world.store.record_outcome(job.job_id, "000000", [imported(1), imported(2)], [failure])
    last_progress = world.job(job.job_id).updated_at
    # Chunk 000001 went to the ImportDLQ: nothing happens for an hour.
    assert world.sweep(timedelta(minutes=59)).swept == []

    result = world.sweep(timedelta(minutes=1))

    (swept,) = result.swept
    assert (swept.was, swept.status) == ("IMPORTING", "FAILED")
    reason = (
        f"The job was stopped because no progress since {last_progress}; "
        "2 entries that had not settled are counted as failed."
    )
    assert swept.reason == reason
    report = world.report("generated/dlq.txt")
    assert (report["status"], report["reason"]) == ("FAILED", reason)
    assert (report["total"], report["imported"], report["failed"], report["unsettled"]) == (5, 2, 3, 2)
    assert [entry["thing_name"] for entry in report["imported_entries"]] == ["thing-1", "thing-2"]
    assert report["failures"] == [
        {
            "locator": "line 4",
            "thing_name": None,
            "certificate_id": None,
            "reason": "line 4: not a certificate.",
            "error_class": "invalid_input",
        }
    ]


def test_fresh_progressing_and_leased_jobs_are_left_alone(world: World) -> None:
    _, received = world.store.create_job(BUCKET, "generated/forgotten.txt", "v1")
    # A slow parser that holds its lease live: never swept under it, however often leases expired.
    _, leased = world.store.create_job(BUCKET, "generated/slow.txt", "v1")
    crash_parsers(world, leased.job_id, 3)
    assert world.store.claim_parse(leased.job_id, "live", world.clock.now + timedelta(hours=3))
    # Two expired leases, the last claim 51 minutes before the sweep: below both limits.
    _, crashed_twice = world.store.create_job(BUCKET, "generated/twice.txt", "v1")
    crash_parsers(world, crashed_twice.job_id, 2)
    progressing = importing_job(world, "generated/busy.txt", 3)
    world.clock.now += timedelta(minutes=30)
    assert world.store.record_outcome(progressing.job_id, "000000", [imported(1)], [])

    result = world.sweep(timedelta(minutes=5))

    assert result.examined == 4
    assert [s.job_id for s in result.swept] == [received.job_id]
    assert world.job(received.job_id).reason == (
        "The job was stopped because no progress since 2025-03-04T05:06:07.000Z."
    )
    assert world.job(leased.job_id).status == j.JobStatus.PARSING
    assert world.job(crashed_twice.job_id).status == j.JobStatus.PARSING
    assert world.job(progressing.job_id).status == j.JobStatus.IMPORTING
    assert world.metrics == [("JobsSwept", 1, None)]


def test_jobs_that_only_missed_their_completion_are_completed_normally(world: World) -> None:
    settled = importing_job(world, "generated/settled.txt", 1)
    assert world.store.record_outcome(settled.job_id, "000000", [imported(1)], [])
    reporting = importing_job(world, "generated/reporting.txt", 0)
    # The completing invocation died between the REPORTING claim and the report.
    world.ddb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": reporting.job_id}, "sk": {"S": "JOB"}},
        UpdateExpression="SET #s = :r",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":r": {"S": "REPORTING"}},
    )

    result = world.sweep(timedelta(hours=2))

    assert sorted((s.key, s.was, s.status, s.reason) for s in result.swept) == [
        ("generated/reporting.txt", "REPORTING", "COMPLETED", None),
        ("generated/settled.txt", "IMPORTING", "COMPLETED", None),
    ]
    assert world.report("generated/settled.txt")["imported"] == 1
    assert world.report("generated/reporting.txt")["status"] == "COMPLETED"


def test_a_job_that_moves_during_the_sweep_is_left_for_the_next(world: World) -> None:
    job = importing_job(world, "generated/race.txt", 2)
    world.clock.now += timedelta(hours=2)

    class RacingStore(j.JobStore):
        def list_unfinished_jobs(self) -> list[j.Job]:
            jobs = super().list_unfinished_jobs()
            self.record_outcome(job.job_id, "000000", [imported(1)], [])  # an importer, just now
            return jobs

    racing = RacingStore(TABLE, dynamodb=world.ddb, s3=world.s3, clock=world.clock, emit=lambda _: None)
    result = sw.sweep_jobs(racing, CONFIG, clock=world.clock, emit=lambda *_: None)
    assert (result.examined, result.swept) == (1, [])
    assert world.job(job.job_id).status == j.JobStatus.IMPORTING


@pytest.mark.parametrize(
    ("settled", "expected"),
    [
        (3, "The job was stopped because the cause."),
        (2, "The job was stopped because the cause; 1 entry that had not settled is counted as failed."),
        (0, "The job was stopped because the cause; 3 entries that had not settled are counted as failed."),
    ],
)
def test_sweep_reason_is_one_sentence(settled: int, expected: str) -> None:
    job = j.Job("id", BUCKET, "k", "v", j.JobStatus.IMPORTING, total=3, parsed=True, settled=settled)
    assert sw.sweep_reason(job, "the cause") == expected


def test_config_from_env() -> None:
    config = sw.SweepConfig.from_env(
        {
            "THINGPRESS_JOBS_TABLE": "t",
            "THINGPRESS_STALLED_JOB_MINUTES": "90",
            "THINGPRESS_MAX_LEASE_EXPIRIES": "4",
        }
    )
    assert config == sw.SweepConfig("t", timedelta(minutes=90), 4)
    assert sw.SweepConfig.from_env({"THINGPRESS_JOBS_TABLE": "t"}) == sw.SweepConfig("t")
    with pytest.raises(ValueError, match="THINGPRESS_JOBS_TABLE is not set"):
        sw.SweepConfig.from_env({})
    with pytest.raises(ValueError, match="THINGPRESS_STALLED_JOB_MINUTES must be a positive integer"):
        sw.SweepConfig.from_env({"THINGPRESS_JOBS_TABLE": "t", "THINGPRESS_STALLED_JOB_MINUTES": "0"})


def test_lambda_handler_sweeps_and_emits_the_metric(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from job_sweeper import app
    from thingpress.local.context import FakeLambdaContext

    monkeypatch.setenv("THINGPRESS_JOBS_TABLE", TABLE)
    monkeypatch.setattr(app, "_runtime", None)
    # The handler runs on the real clock: one job nine hours old, one created just now.
    for key, age in (("generated/old.txt", timedelta(hours=9)), ("generated/fresh.txt", timedelta())):
        store = j.JobStore(
            TABLE, dynamodb=world.ddb, s3=world.s3, clock=lambda age=age: datetime.now(UTC) - age
        )
        store.create_job(BUCKET, key, "v1")
    stuck = j.job_id_for(BUCKET, "generated/old.txt", "v1")
    capsys.readouterr()

    response = app.lambda_handler({"detail-type": "Scheduled Event"}, FakeLambdaContext("JobSweeperFunction"))

    assert response["examined"] == 2
    (swept,) = response["swept"]
    assert (swept["job_id"], swept["status"]) == (stuck, "FAILED")
    metrics = {
        name: document[name]
        for document in emf_records(capsys.readouterr().out)
        for name in ("JobsSwept", "ManifestsFailed")
        if name in document
    }
    assert metrics == {"JobsSwept": [1.0], "ManifestsFailed": [1.0]}


def test_one_job_that_cannot_be_finished_does_not_stop_the_sweep(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = importing_job(world, "generated/poison-job.txt", 2)
    second = importing_job(world, "generated/next-job.txt", 2)
    real = world.store.abandon_job

    def abandon(job: j.Job, reason: str) -> j.Job | None:
        if job.job_id == first.job_id:
            raise AwsOperationError("dynamodb:UpdateItem", "InternalServerError", "boom")
        return real(job, reason)

    monkeypatch.setattr(world.store, "abandon_job", abandon)
    result = world.sweep(timedelta(hours=2))
    assert result.failed == [first.job_id]
    assert [swept.job_id for swept in result.swept] == [second.job_id]
    assert world.job(second.job_id).status == j.JobStatus.FAILED
    assert world.job(first.job_id).status == j.JobStatus.IMPORTING
    monkeypatch.setattr(world.store, "abandon_job", real)
    assert [swept.job_id for swept in world.sweep().swept] == [first.job_id]
