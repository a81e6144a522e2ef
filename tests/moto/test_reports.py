"""Report keys and the per-key pointer: one report per job, a pointer that never moves back."""

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from layer_utils import jobs as j
from layer_utils.jobstore import report as reports
from layer_utils.jobstore.model import version_rank
from testing.helpers import create_jobs_table

TABLE = "JobsTable"
BUCKET = "intake"
KEY = "espressif/m.csv"


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_jobs_table(ddb, TABLE)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield {"ddb": ddb, "s3": s3}


@pytest.fixture
def store(aws: dict[str, Any]) -> j.JobStore:
    clock = lambda: datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)  # noqa: E731
    return j.JobStore(TABLE, dynamodb=aws["ddb"], s3=aws["s3"], clock=clock, emit=lambda _name: None)


def read(aws: dict[str, Any], key: str) -> dict[str, Any]:
    return json.loads(aws["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read())


def new_job(store: j.JobStore, version: str, sequencer: str | None, key: str = KEY) -> j.Job:
    _, job = store.create_job(BUCKET, key, version, sequencer=sequencer)
    return job


def finish(store: j.JobStore, job: j.Job) -> j.Job:
    """Fail the job, which writes its report and then the pointer."""
    failed = store.fail_job(job.job_id, f"Version {job.version} failed.")
    assert failed is not None
    return failed


def test_short_keys_keep_their_pointer_and_long_ones_are_cut_and_hashed() -> None:
    assert j.latest_report_key("espressif/m.csv") == "reports/espressif/m.csv.json"
    assert j.job_report_key("ab" * 16) == f"reports/jobs/{'ab' * 16}.json"
    fits = "k" * (1024 - len("reports/.json"))
    assert j.latest_report_key(fits) == f"reports/{fits}.json"
    for long_key in ("k" * 1024, "é" * 512, "k" * 1000 + "€" * 8):
        pointer = j.latest_report_key(long_key)
        assert len(pointer.encode()) <= 1024
        assert pointer.startswith("reports/kk") or pointer.startswith("reports/éé")
        assert pointer.endswith(".json")
    # Two long keys that share their first 1000 bytes still get two pointers.
    assert j.latest_report_key("k" * 1024 + "a") != j.latest_report_key("k" * 1024 + "b")


@pytest.mark.parametrize("newer_finishes_first", [True, False])
def test_pointer_ends_at_the_newer_version_whatever_order_the_jobs_finish(
    store: j.JobStore, aws: dict[str, Any], newer_finishes_first: bool
) -> None:
    older = new_job(store, "v1", "0055AED6DCD90281E5")
    newer = new_job(store, "v2", "0055AED6DCD90281E6")
    order = [newer, older] if newer_finishes_first else [older, newer]
    finished = {job.job_id: finish(store, job) for job in order}

    for job in (older, newer):
        assert finished[job.job_id].report_key == j.job_report_key(job.job_id)
        assert read(aws, j.job_report_key(job.job_id))["job_id"] == job.job_id
    latest = read(aws, j.latest_report_key(KEY))
    assert latest == read(aws, j.job_report_key(newer.job_id))
    assert latest["manifest"]["version"] == "v2"
    assert store.latest_job_id(BUCKET, KEY) == newer.job_id


def test_sequencers_compare_as_hexadecimal_values() -> None:
    # AWS: right-pad the shorter sequencer with zeros, then compare the strings.
    assert version_rank("9", None) > version_rank("0A", None)
    assert version_rank("0A", None) == version_rank("0a00", None)
    assert version_rank("0A1", None) > version_rank("0A", None)
    assert version_rank("0062E9A1B2C3D4E5F6", None) > version_rank("0062E9A1B2C3D4E5", None)
    assert version_rank(None, "2025-01-02T00:00:00.000Z") < version_rank("0", None)
    assert version_rank("not hex", "b") == version_rank(None, "b")
    assert version_rank("01", "a") < version_rank("01", "b")


def test_the_same_job_rewrites_its_pointer(store: j.JobStore, aws: dict[str, Any]) -> None:
    job = finish(store, new_job(store, "v1", "01"))
    assert reports.publish_latest(aws["s3"], BUCKET, job, b'{"again": true}')
    assert read(aws, j.latest_report_key(KEY)) == {"again": True}


class RacingS3:
    """An S3 client on which another writer publishes its report right after the pointer is read."""

    def __init__(self, s3: Any, rival: Callable[[], None]) -> None:
        self._s3 = s3
        self._rival: Callable[[], None] | None = rival
        self.puts: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def head_object(self, **kwargs: Any) -> Any:
        head = self._s3.head_object(**kwargs)
        if self._rival is not None:
            rival, self._rival = self._rival, None
            rival()
        return head

    def put_object(self, **kwargs: Any) -> Any:
        self.puts.append(kwargs)
        return self._s3.put_object(**kwargs)


def test_a_pointer_changed_between_read_and_write_is_read_again(
    store: j.JobStore, aws: dict[str, Any]
) -> None:
    finish(store, new_job(store, "v1", "01"))
    older = new_job(store, "v2", "02")
    newer = new_job(store, "v3", "03")
    racing = RacingS3(aws["s3"], lambda: reports.publish_latest(aws["s3"], BUCKET, newer, b'{"v": 3}'))

    # The older job read v1's pointer; v3 replaced it before v2's write: the conditional write fails,
    # v2 reads the pointer again and leaves v3's report in place.
    assert not reports.publish_latest(racing, BUCKET, older, b'{"v": 2}')  # type: ignore[arg-type]
    assert [put.get("IfMatch") is not None for put in racing.puts] == [True]
    assert read(aws, j.latest_report_key(KEY)) == {"v": 3}
    assert store.latest_job_id(BUCKET, KEY) == newer.job_id


def test_a_pointer_never_replaces_another_kind_of_report(store: j.JobStore, aws: dict[str, Any]) -> None:
    victim = finish(store, new_job(store, "v1", "01"))
    # A manifest named jobs/<job id> has the victim's own report key as its pointer key.
    crafted = finish(store, new_job(store, "v1", "99", key=f"jobs/{victim.job_id}"))
    assert j.latest_report_key(crafted.key) == j.job_report_key(victim.job_id)
    assert read(aws, j.job_report_key(victim.job_id))["job_id"] == victim.job_id
    assert store.latest_job_id(BUCKET, crafted.key) is None


def test_a_report_written_before_pointers_existed_is_replaced(store: j.JobStore, aws: dict[str, Any]) -> None:
    aws["s3"].put_object(Bucket=BUCKET, Key=j.latest_report_key(KEY), Body=b'{"old": true}')
    job = finish(store, new_job(store, "v1", None))
    assert read(aws, j.latest_report_key(KEY))["job_id"] == job.job_id
    assert store.latest_job_id(BUCKET, KEY) == job.job_id
    assert store.latest_job_id(BUCKET, "no/such/key.csv") is None


def test_the_largest_outcome_items_fit_in_dynamodb(store: j.JobStore) -> None:
    """Every field at its cap, as many records as an item holds: moto refuses items over 400 KB."""
    _, job = store.create_job(BUCKET, "k" * 1024, "v1")
    locator = "€" * 200  # shortened to MAX_LOCATOR_BYTES
    reason = "€" * 400  # shortened to MAX_REASON_BYTES
    most = j.MAX_RECORDS_PER_ITEM
    failures = [j.FailureRecord(f"{i} {locator}", "ab" * 32, reason, "invalid_input") for i in range(most)]
    duplicates = [j.FailureRecord(f"{i} {locator}", "ab" * 32, reason, "duplicate") for i in range(most)]
    assert store.record_parse_outcome(job.job_id, 0, failures, duplicates)
    per_message = 200  # the template's CertsPerMessage MaxValue
    imported = [
        j.ImportedRecord(f"{i} {locator}", "t" * 128, "ab" * 32, "fingerprint") for i in range(per_message)
    ]
    assert store.record_outcome(job.job_id, "000000", imported, [])
    assert store.record_outcome(job.job_id, "000001", [], failures[:per_message])
