import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from layer_utils import jobs as j
from layer_utils.aws_utils import AwsOperationError
from testing.helpers import create_jobs_table

TABLE = "JobsTable"
BUCKET = "intake"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Serialised:
    """DynamoDB applies each conditional write atomically; moto does not lock across threads.

    This wrapper makes every call atomic (as DynamoDB is) while threads still interleave between calls.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name == "get_paginator":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call


class FailingPut:
    """An S3 client whose first ``failures`` put_object calls raise a throttling error."""

    def __init__(self, client: Any, failures: int) -> None:
        self._client = client
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_object(self, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "PutObject")
        return self._client.put_object(**kwargs)


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_jobs_table(ddb, TABLE)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield {"ddb": ddb, "s3": s3}


@pytest.fixture
def emitted() -> list[str]:
    return []


@pytest.fixture
def store(aws: dict[str, Any], emitted: list[str]) -> j.JobStore:
    return j.JobStore(TABLE, dynamodb=aws["ddb"], s3=aws["s3"], clock=Clock(), emit=emitted.append)


def ok(i: int) -> j.ImportedRecord:
    return j.ImportedRecord(f"row {i}", f"thing-{i}", f"{i:064x}")


def bad(i: int, reason: str = "certificate has expired") -> j.FailureRecord:
    return j.FailureRecord(f"row {i}", f"{i:064x}", reason, "invalid_input")


def failure(locator: str, certificate_id: str | None, reason: str, error_class: str) -> dict[str, Any]:
    """Return a report entry of a failed (or duplicate) record, which names no thing."""
    return {
        "locator": locator,
        "thing_name": None,
        "certificate_id": certificate_id,
        "reason": reason,
        "error_class": error_class,
    }


def parse_to_importing(store: j.JobStore, total: int, key: str = "espressif/m.csv") -> j.Job:
    created, job = store.create_job(BUCKET, key, "v1", settings={"policies": ["p"]}, vendor="espressif")
    assert created
    owner = "inv-1"
    assert store.claim_parse(job.job_id, owner, datetime(2025, 1, 2, 4, tzinfo=UTC)) is not None
    parsed = store.mark_parsed(job.job_id, owner, total, {"entries_done": total, "next_chunk": 1})
    assert parsed is not None
    assert parsed.status == j.JobStatus.IMPORTING
    return parsed


def read_report(aws: dict[str, Any], key: str) -> dict[str, Any]:
    body = aws["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return json.loads(body)


def test_job_id_is_deterministic() -> None:
    a = j.job_id_for("b", "k", "v")
    assert a == j.job_id_for("b", "k", "v")
    assert len(a) == 32
    assert a != j.job_id_for("b", "k", "v2")
    assert a != j.job_id_for("b", "k\nv", "")


def test_create_job_is_idempotent(store: j.JobStore) -> None:
    created, job = store.create_job(BUCKET, "espressif/a.csv", "etag1", settings={"policies": ["p"]})
    assert created
    assert job.status == j.JobStatus.RECEIVED
    assert job.created_at == "2025-01-02T03:04:05.000Z"
    again, existing = store.create_job(BUCKET, "espressif/a.csv", "etag1")
    assert not again
    assert existing.job_id == job.job_id
    assert existing.settings == {"policies": ["p"]}
    assert store.get_job(job.job_id) == existing
    assert store.get_job("nope") is None


def test_parse_lease(store: j.JobStore) -> None:
    clock = store._clock
    assert isinstance(clock, Clock)
    _, job = store.create_job(BUCKET, "k", "v")
    until = clock.now + timedelta(minutes=16)
    claimed = store.claim_parse(job.job_id, "a", until)
    assert claimed is not None
    assert claimed.status == j.JobStatus.PARSING
    assert claimed.lease_owner == "a"
    # A duplicate event while the lease is live: no claim.
    assert store.claim_parse(job.job_id, "b", until) is None
    assert store.save_checkpoint(job.job_id, "a", {"entries_done": 10, "next_chunk": 1}, lease_until=until)
    assert store.save_checkpoint(job.job_id, "b", {"entries_done": 99, "next_chunk": 9}) is False
    # After expiry (a crash) another invocation resumes from the checkpoint.
    clock.now = until + timedelta(seconds=1)
    resumed = store.claim_parse(job.job_id, "b", clock.now + timedelta(minutes=16))
    assert resumed is not None
    assert resumed.checkpoint == {"entries_done": 10, "next_chunk": 1}
    assert store.save_checkpoint(job.job_id, "a", {"entries_done": 11, "next_chunk": 1}) is False
    # Releasing the lease lets the continuation claim at once.
    assert store.save_checkpoint(
        job.job_id, "b", {"entries_done": 20, "next_chunk": 2}, release=True, vendor="generated"
    )
    cont = store.claim_parse(job.job_id, "c", clock.now + timedelta(minutes=16))
    assert cont is not None
    assert cont.vendor == "generated"
    assert store.mark_parsed(job.job_id, "b", 5, {}) is None
    done = store.mark_parsed(job.job_id, "c", 30, {"entries_done": 30, "next_chunk": 3})
    assert done is not None
    assert done.lease_owner is None
    assert done.total == 30
    assert store.claim_parse(job.job_id, "d", clock.now + timedelta(minutes=16)) is None


def test_record_outcome_is_idempotent(store: j.JobStore) -> None:
    job = parse_to_importing(store, 3)
    assert store.record_outcome(job.job_id, "000000", [ok(1), ok(2)], [bad(3)])
    assert not store.record_outcome(job.job_id, "000000", [ok(1), ok(2)], [bad(3)])
    current = store.get_job(job.job_id)
    assert current is not None
    assert (current.succeeded, current.failed, current.settled) == (2, 1, 3)


def test_record_outcome_for_unknown_job(store: j.JobStore) -> None:
    with pytest.raises(j.JobNotFoundError, match="does not exist"):
        store.record_outcome("0" * 32, "000000", [ok(1)], [])


def test_completion_and_report(store: j.JobStore, aws: dict[str, Any], emitted: list[str]) -> None:
    job = parse_to_importing(store, 12)
    assert store.record_parse_outcome(
        job.job_id,
        0,
        [j.FailureRecord("row 10", None, "no certificate in manifest entry", "invalid_input")],
        [j.FailureRecord("row 11", "ab" * 32, "duplicate of row 1", j.DUPLICATE_ERROR_CLASS)],
    )
    assert store.try_complete(job.job_id) is None  # 2 of 12 settled
    assert store.record_outcome(job.job_id, "000001", [ok(i) for i in range(9, 1, -1)], [bad(1)])
    assert store.record_outcome(job.job_id, "000000", [ok(0)], [])
    final = store.try_complete(job.job_id)
    assert final is not None
    assert final.status == j.JobStatus.COMPLETED_WITH_ERRORS
    assert final.report_key == f"reports/jobs/{final.job_id}.json"
    assert read_report(aws, final.report_key) == read_report(aws, "reports/espressif/m.csv.json")
    assert emitted == ["ManifestsCompleted"]
    assert store.try_complete(job.job_id) is None
    assert emitted == ["ManifestsCompleted"]

    report = read_report(aws, "reports/espressif/m.csv.json")
    assert report["job_id"] == job.job_id
    assert report["manifest"] == {"bucket": BUCKET, "key": "espressif/m.csv", "version": "v1"}
    assert report["vendor"] == "espressif"
    assert report["status"] == "COMPLETED_WITH_ERRORS"
    assert (report["total"], report["imported"], report["failed"], report["duplicates"]) == (12, 9, 2, 1)
    assert report["created_at"] == "2025-01-02T03:04:05.000Z"
    assert report["completed_at"] == "2025-01-02T03:04:05.000Z"
    assert [r["locator"] for r in report["imported_entries"]] == [
        f"row {i}" for i in [0, 2, 3, 4, 5, 6, 7, 8, 9]
    ]
    assert report["imported_entries"][0] == {
        "locator": "row 0",
        "thing_name": "thing-0",
        "certificate_id": f"{0:064x}",
        "reason": None,
        "error_class": None,
    }
    assert report["schema"] == "thingpress/1"
    assert report["failures"] == [
        failure("row 1", f"{1:064x}", "certificate has expired", "invalid_input"),
        failure("row 10", None, "no certificate in manifest entry", "invalid_input"),
    ]
    assert report["duplicate_entries"] == [failure("row 11", "ab" * 32, "duplicate of row 1", "duplicate")]


def test_all_succeeded_is_completed(store: j.JobStore) -> None:
    job = parse_to_importing(store, 1)
    store.record_outcome(job.job_id, "000000", [ok(1)], [])
    final = store.try_complete(job.job_id)
    assert final is not None
    assert final.status == j.JobStatus.COMPLETED


def test_zero_entries_completes(store: j.JobStore, aws: dict[str, Any]) -> None:
    job = parse_to_importing(store, 0)
    final = store.try_complete(job.job_id)
    assert final is not None
    assert final.status == j.JobStatus.COMPLETED
    assert read_report(aws, final.report_key or "")["total"] == 0


def test_completion_race_has_one_winner(aws: dict[str, Any]) -> None:
    emitted: list[str] = []
    lock = threading.Lock()

    def emit(name: str) -> None:
        with lock:
            emitted.append(name)

    # moto's in-process mocks are not thread-safe (AWS is): serialise both clients, not the race.
    store = j.JobStore(
        TABLE, dynamodb=Serialised(aws["ddb"]), s3=Serialised(aws["s3"]), clock=Clock(), emit=emit
    )
    job = parse_to_importing(store, 16)
    barrier = threading.Barrier(8)
    results: list[j.Job | None] = []

    errors: list[BaseException] = []

    def importer(n: int) -> None:
        barrier.wait()
        try:
            store.record_outcome(job.job_id, f"{n:06d}", [ok(2 * n), ok(2 * n + 1)], [])
            result = store.try_complete(job.job_id)
        except BaseException as error:  # a thread's failure must fail the test, not only warn
            with lock:
                errors.append(error)
            return
        with lock:
            results.append(result)

    threads = [threading.Thread(target=importer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert emitted == ["ManifestsCompleted"]
    assert sum(r is not None for r in results) == 1
    final = store.get_job(job.job_id)
    assert final is not None
    assert final.status == j.JobStatus.COMPLETED
    assert final.succeeded == 16


def test_crashed_reporting_winner_is_finished_by_next_caller(aws: dict[str, Any], emitted: list[str]) -> None:
    s3 = FailingPut(aws["s3"], failures=1)
    store = j.JobStore(TABLE, dynamodb=aws["ddb"], s3=s3, clock=Clock(), emit=emitted.append)
    job = parse_to_importing(store, 1)
    store.record_outcome(job.job_id, "000000", [ok(1)], [])
    with pytest.raises(AwsOperationError):
        store.try_complete(job.job_id)
    stuck = store.get_job(job.job_id)
    assert stuck is not None
    assert stuck.status == j.JobStatus.REPORTING
    assert emitted == []
    # The redelivered batch is already recorded; its try_complete finishes the job.
    assert not store.record_outcome(job.job_id, "000000", [ok(1)], [])
    final = store.try_complete(job.job_id)
    assert final is not None
    assert final.status == j.JobStatus.COMPLETED
    assert emitted == ["ManifestsCompleted"]
    assert read_report(aws, "reports/espressif/m.csv.json")["imported"] == 1


def test_large_failure_lists_are_split(store: j.JobStore, aws: dict[str, Any]) -> None:
    job = parse_to_importing(store, 1000)
    failures = [bad(i, "x" * 400) for i in range(1000)]
    size = j.MAX_RECORDS_PER_ITEM
    for index, batch in enumerate(failures[i : i + size] for i in range(0, len(failures), size)):
        assert len(batch) <= j.MAX_RECORDS_PER_ITEM
        assert store.record_parse_outcome(job.job_id, index, batch)
    with pytest.raises(ValueError, match="at most 200"):
        store.record_parse_outcome(job.job_id, 99, failures[:201])
    final = store.try_complete(job.job_id)
    assert final is not None
    assert final.failed == 1000
    report = read_report(aws, final.report_key or "")
    assert len(report["failures"]) == 1000
    assert report["failures"][0]["locator"] == "row 0"
    assert report["failures"][-1]["locator"] == "row 999"


def test_fail_job_writes_report_once(store: j.JobStore, aws: dict[str, Any], emitted: list[str]) -> None:
    _, job = store.create_job(BUCKET, "x/unknown.bin", "v")
    failed = store.fail_job(job.job_id, "The manifest format is not recognised.")
    assert failed is not None
    assert failed.status == j.JobStatus.FAILED
    assert failed.report_key == f"reports/jobs/{failed.job_id}.json"
    assert read_report(aws, failed.report_key) == read_report(aws, "reports/x/unknown.bin.json")
    assert store.fail_job(job.job_id, "again") is None
    assert emitted == ["ManifestsFailed"]
    report = read_report(aws, "reports/x/unknown.bin.json")
    assert report["status"] == "FAILED"
    assert report["reason"] == "The manifest format is not recognised."
    assert store.try_complete(job.job_id) is None


def test_ensure_report_repairs_a_failed_job_without_report(aws: dict[str, Any], emitted: list[str]) -> None:
    s3 = FailingPut(aws["s3"], failures=1)
    store = j.JobStore(TABLE, dynamodb=aws["ddb"], s3=s3, clock=Clock(), emit=emitted.append)
    _, job = store.create_job(BUCKET, "k", "v")
    with pytest.raises(AwsOperationError):
        store.fail_job(job.job_id, "Bad.")
    current = store.get_job(job.job_id)
    assert current is not None
    assert current.status == j.JobStatus.FAILED
    assert current.report_key is None
    repaired = store.ensure_report(current)
    assert repaired.report_key == f"reports/jobs/{repaired.job_id}.json"
    assert read_report(aws, "reports/k.json")["reason"] == "Bad."


def test_list_jobs(store: j.JobStore) -> None:
    clock = store._clock
    assert isinstance(clock, Clock)
    _, first = store.create_job(BUCKET, "a", "1")
    clock.now += timedelta(seconds=1)
    _, second = store.create_job(BUCKET, "b", "1")
    store.record_outcome(first.job_id, "000000", [ok(1)], [])
    assert [job.job_id for job in store.list_jobs()] == [second.job_id, first.job_id]


def test_lease_takeovers_are_counted(store: j.JobStore) -> None:
    clock = store._clock
    assert isinstance(clock, Clock)
    _, job = store.create_job(BUCKET, "k", "v")
    until = clock.now + timedelta(minutes=16)
    assert store.claim_parse(job.job_id, "a", until) is not None
    # Its own redelivery while the lease is live and a released lease's continuation: no expiry.
    assert store.claim_parse(job.job_id, "a", until) is not None
    assert store.save_checkpoint(job.job_id, "a", {"entries_done": 1}, release=True)
    claimed = store.claim_parse(job.job_id, "b", until)
    assert claimed is not None
    assert claimed.lease_expiries == 0
    # The holder died: whoever claims after the expiry, itself included, counts one expiry.
    clock.now = until + timedelta(seconds=1)
    again = store.claim_parse(job.job_id, "b", clock.now + timedelta(minutes=16))
    assert again is not None
    assert again.lease_expiries == 1
    clock.now += timedelta(minutes=17)
    other = store.claim_parse(job.job_id, "c", clock.now + timedelta(minutes=16))
    assert other is not None
    assert (other.lease_owner, other.lease_expiries) == ("c", 2)
    assert store.claim_parse(job.job_id, "d", clock.now) is None  # c's lease is live: not counted
    current = store.get_job(job.job_id)
    assert current is not None
    assert current.lease_expiries == 2


def test_list_unfinished_jobs(store: j.JobStore) -> None:
    done = parse_to_importing(store, 0, key="a")
    assert store.try_complete(done.job_id) is not None
    importing = parse_to_importing(store, 2, key="b")
    _, received = store.create_job(BUCKET, "c", "1")
    _, failed = store.create_job(BUCKET, "d", "1")
    store.fail_job(failed.job_id, "Bad.")
    assert {job.job_id for job in store.list_unfinished_jobs()} == {importing.job_id, received.job_id}


def test_abandon_job_counts_unsettled_entries_and_writes_the_report(
    store: j.JobStore, aws: dict[str, Any], emitted: list[str]
) -> None:
    job = parse_to_importing(store, 5)
    assert store.record_outcome(job.job_id, "000000", [ok(1), ok(2)], [bad(3)])
    snapshot = store.get_job(job.job_id)
    assert snapshot is not None
    assert snapshot.entries_known - snapshot.settled == 2

    failed = store.abandon_job(snapshot, "The job was stopped because no progress since then.")

    assert failed is not None
    assert (failed.status, failed.total, failed.settled) == (j.JobStatus.FAILED, 5, 5)
    assert (failed.succeeded, failed.failed, failed.unsettled) == (2, 3, 2)
    assert failed.report_key == f"reports/jobs/{failed.job_id}.json"
    assert emitted == ["ManifestsFailed"]
    report = read_report(aws, "reports/espressif/m.csv.json")
    assert (report["status"], report["reason"]) == (
        "FAILED",
        "The job was stopped because no progress since then.",
    )
    assert (report["total"], report["imported"], report["failed"], report["unsettled"]) == (5, 2, 3, 2)
    assert [r["locator"] for r in report["imported_entries"]] == ["row 1", "row 2"]
    assert [r["locator"] for r in report["failures"]] == ["row 3"]
    assert store.abandon_job(snapshot, "again") is None  # final now
    assert store.try_complete(job.job_id) is None


def test_abandon_job_leaves_a_job_that_moved_alone(store: j.JobStore) -> None:
    clock = store._clock
    assert isinstance(clock, Clock)
    job = parse_to_importing(store, 2)
    clock.now += timedelta(seconds=1)
    assert store.record_outcome(job.job_id, "000000", [ok(1)], [])
    assert store.abandon_job(job, "stale snapshot") is None
    _, parsing = store.create_job(BUCKET, "p", "1")
    live = store.claim_parse(parsing.job_id, "a", clock.now + timedelta(minutes=5))
    assert live is not None
    assert store.abandon_job(live, "the lease is live") is None
    clock.now += timedelta(minutes=6)
    expired = store.abandon_job(live, "The job was stopped.")
    assert expired is not None
    assert (expired.status, expired.total, expired.unsettled, expired.lease_owner) == (
        j.JobStatus.FAILED,
        0,
        0,
        None,
    )
    with pytest.raises(ValueError, match="not FAILED"):
        store.abandon_job(expired, "twice")


def test_abandon_job_of_a_parsing_job_counts_the_entries_read(store: j.JobStore) -> None:
    clock = store._clock
    assert isinstance(clock, Clock)
    _, job = store.create_job(BUCKET, "p", "1")
    assert store.claim_parse(job.job_id, "a", clock.now)
    assert store.save_checkpoint(job.job_id, "a", {"entries_done": 4, "next_chunk": 2})
    assert store.record_outcome(job.job_id, "000000", [ok(1), ok(2)], [])
    clock.now += timedelta(seconds=1)
    snapshot = store.get_job(job.job_id)
    assert snapshot is not None
    failed = store.abandon_job(snapshot, "The job was stopped.")
    assert failed is not None
    assert (failed.total, failed.succeeded, failed.failed, failed.unsettled) == (4, 2, 2, 2)


def test_restart_progress_clock(store: j.JobStore) -> None:
    clock = store._clock
    assert isinstance(clock, Clock)
    _, job = store.create_job(BUCKET, "k", "v")
    assert store.claim_parse(job.job_id, "a", clock.now)
    clock.now += timedelta(hours=1)
    assert store.claim_parse(job.job_id, "b", clock.now)
    clock.now += timedelta(hours=1)
    restarted = store.restart_progress_clock(job.job_id)
    assert restarted is not None
    assert (restarted.updated_at, restarted.lease_expiries) == ("2025-01-02T05:04:05.000Z", 0)
    assert store.restart_progress_clock("0" * 32) is None
    store.fail_job(job.job_id, "Bad.")
    assert store.restart_progress_clock(job.job_id) is None


def test_natural_key() -> None:
    assert sorted(["row 10", "row 9", "line 2"], key=j.natural_key) == ["line 2", "row 9", "row 10"]


def test_manifest_broken_part_way_ends_failed_after_imports(
    store: j.JobStore, aws: dict[str, Any], emitted: list[str]
) -> None:
    _, job = store.create_job(BUCKET, "generated/x.txt", "v")
    assert store.claim_parse(job.job_id, "a", datetime(2025, 1, 2, 4, tzinfo=UTC)) is not None
    parsed = store.mark_parsed(job.job_id, "a", 2, {}, reason="line 3: the file is truncated.")
    assert parsed is not None
    assert store.try_complete(job.job_id) is None
    store.record_outcome(job.job_id, "000000", [ok(1), ok(2)], [])
    final = store.try_complete(job.job_id)
    assert final is not None
    assert final.status == j.JobStatus.FAILED
    assert emitted == ["ManifestsFailed"]
    report = read_report(aws, final.report_key or "")
    assert report["reason"] == "line 3: the file is truncated."
    assert report["imported"] == 2


def test_a_full_parse_item_stays_far_below_dynamodb_item_size_whatever_the_text() -> None:
    # Four-byte characters in every locator and reason: the bound is on UTF-8 bytes, not characters.
    wide = "\U0001f600" * 5000
    failures = [
        j.FailureRecord(f"file {i} {wide}", "ab" * 32, f"{wide} reason", "invalid_input") for i in range(200)
    ]
    duplicates = [j.FailureRecord(f"file {i} {wide}", "ab" * 32, wide, "duplicate") for i in range(199)]
    item = {"failures": [f.to_dict() for f in failures], "duplicates": [d.to_dict() for d in duplicates]}
    size = len(json.dumps(item, ensure_ascii=False).encode("utf-8"))
    assert size < 400 * 1024 * 0.95
    first = failures[0].to_dict()
    assert len(first["locator"].encode()) <= j.MAX_LOCATOR_BYTES
    assert len(first["reason"].encode()) <= j.MAX_REASON_BYTES
    assert first["reason"].endswith("…")
    assert j.shorten("lone \ud800 surrogate") == "lone ? surrogate"


def test_lifecycle_table_is_the_documented_state_machine() -> None:
    s = j.JobStatus
    assert {status: j.lifecycle_next(status) for status in s} == {
        s.RECEIVED: {s.PARSING, s.FAILED, s.RECEIVED},
        s.PARSING: {s.PARSING, s.IMPORTING, s.FAILED},
        s.IMPORTING: {s.REPORTING, s.FAILED, s.IMPORTING},
        s.REPORTING: {s.COMPLETED, s.COMPLETED_WITH_ERRORS, s.FAILED, s.REPORTING},
        # Only an undo moves a job on from the end of its import (and may run again).
        s.COMPLETED: {s.COMPLETED, s.UNDONE, s.UNDO_PARTIAL},
        s.COMPLETED_WITH_ERRORS: {s.COMPLETED_WITH_ERRORS, s.UNDONE, s.UNDO_PARTIAL},
        s.FAILED: {s.FAILED, s.UNDONE, s.UNDO_PARTIAL},
        s.UNDONE: {s.UNDONE, s.UNDO_PARTIAL},
        s.UNDO_PARTIAL: {s.UNDONE, s.UNDO_PARTIAL},
    }
    assert {s.COMPLETED, s.COMPLETED_WITH_ERRORS, s.FAILED, s.UNDONE, s.UNDO_PARTIAL} == j.FINAL_STATUSES
    assert j.LIFECYCLE[j.Step.MARK_PARSED].allows(s.PARSING, s.IMPORTING)
    assert not j.LIFECYCLE[j.Step.MARK_PARSED].allows(s.RECEIVED, s.IMPORTING)
    assert not j.LIFECYCLE[j.Step.FINISH].allows(s.REPORTING, s.IMPORTING)


def test_an_illegal_transition_is_refused(store: j.JobStore) -> None:
    with pytest.raises(j.IllegalTransitionError, match="Only a PARSING job"):
        j.check_transition(j.Step.MARK_PARSED, j.JobStatus.RECEIVED)
    with pytest.raises(j.IllegalTransitionError, match="cannot move a job from REPORTING to IMPORTING"):
        j.check_transition(j.Step.FINISH, j.JobStatus.REPORTING, j.JobStatus.IMPORTING)
    _, job = store.create_job(BUCKET, "espressif/m.csv", "v1")
    # DynamoDB refuses it too: the store's status condition comes from the same table.
    assert store.mark_parsed(job.job_id, "owner", 0, {}) is None
    assert store.try_complete(job.job_id) is None
    assert store.get_job(job.job_id).status == j.JobStatus.RECEIVED  # type: ignore[union-attr]
