"""The report of a job (its counters and every outcome recorded for it) and where S3 keeps it.

Each job's report is written to its own key, and a copy to the manifest key's pointer, which moves
only forward (see docs/ARCHITECTURE.md, "Jobs").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.aws_utils import handle_aws_error
from layer_utils.jobstore.ledger import read_ledger
from layer_utils.jobstore.lifecycle import JobStatus
from layer_utils.jobstore.model import (
    Job,
    job_report_key,
    latest_report_key,
    manifest_digest,
    natural_key,
    version_rank,
)
from layer_utils.schema import DUPLICATE_ENTRIES, FAILURES, IMPORTED_ENTRIES, SCHEMA, entry
from layer_utils.telemetry import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def build_report(
    job: Job, items: Iterable[Mapping[str, Any]], status: JobStatus | None = None
) -> dict[str, Any]:
    """Return the report document of a job.

    Args:
        job: the job snapshot (its counters and settings).
        items: every chunk and parse outcome item of the job.
        status: overrides the job's stored status (the final status while REPORTING).

    Returns:
        The report in the vocabulary of ``layer_utils.schema`` (``schema``, the counts, and
        ``imported_entries``, ``failures`` and ``duplicate_entries`` in the entry shape); lists are
        sorted by the natural order of locators, then certificate id and reason.
        Imported and failed entries that made or found something in AWS IoT carry their ``ledger``.

    """
    items = list(items)
    ledgers = {(entry.locator, entry.certificate_id): entry.to_dict() for entry in read_ledger(items)}
    imported: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    for item in items:
        imported.extend(_with_ledger(entry(record), ledgers) for record in item.get("imported", []))
        failures.extend(_with_ledger(entry(record), ledgers) for record in item.get("failures", []))
        duplicates.extend(entry(record) for record in item.get("duplicates", []))
    imported.sort(key=lambda r: (natural_key(r["locator"]), r["certificate_id"]))
    failures.sort(key=_failure_sort_key)
    duplicates.sort(key=_failure_sort_key)
    return {
        "schema": SCHEMA,
        **job.summary(status),
        IMPORTED_ENTRIES: imported,
        FAILURES: failures,
        DUPLICATE_ENTRIES: duplicates,
    }


def _with_ledger(record: dict[str, Any], ledgers: Mapping[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    ledger = ledgers.get((record["locator"], record.get("certificate_id") or ""))
    if ledger is not None:
        record["ledger"] = ledger
    return record


def _failure_sort_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return (natural_key(record["locator"]), record.get("certificate_id") or "", record["reason"])


# ------------------------------------------------------------------------------ S3: job reports, pointers

_META_KIND = "thingpress-report"
_META_JOB = "thingpress-job-id"
_META_MANIFEST = "thingpress-manifest-sha256"
_META_SEQUENCER = "thingpress-sequencer"
_META_CREATED = "thingpress-created-at"
_KIND_JOB = "job"
_KIND_LATEST = "latest"

MAX_POINTER_ATTEMPTS = 5
"""How often a pointer write is retried when another writer changed the pointer in between."""

_LOST_RACE = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"})
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


def report_body(report: Mapping[str, Any]) -> bytes:
    """Return the JSON document of a report as stored in S3."""
    return json.dumps(report, indent=1, ensure_ascii=False).encode("utf-8")


def _metadata(job: Job, kind: str) -> dict[str, str]:
    metadata = {
        _META_KIND: kind,
        _META_JOB: job.job_id,
        _META_MANIFEST: manifest_digest(job.bucket, job.key),
        _META_CREATED: job.created_at or "",
    }
    if job.sequencer:
        metadata[_META_SEQUENCER] = job.sequencer
    return metadata


def put_job_report(s3: S3Client, bucket: str, job: Job, body: bytes) -> str:
    """Write the job's own report (``job_report_key``), replacing any object there.

    Returns:
        The report key.

    Raises:
        AwsOperationError: S3 failed.

    """
    key = job_report_key(job.job_id)
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            Metadata=_metadata(job, _KIND_JOB),
        )
    except (ClientError, BotoCoreError) as error:
        handle_aws_error(error, "s3:PutObject", {"job_id": job.job_id, "key": key})
    return key


def _head(s3: S3Client, bucket: str, key: str) -> Mapping[str, Any] | None:
    """Return the HeadObject response of ``key``, or None when it does not exist."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in _MISSING:
            return None
        handle_aws_error(error, "s3:HeadObject", {"key": key})
    except BotoCoreError as error:
        handle_aws_error(error, "s3:HeadObject", {"key": key})


def _may_replace(job: Job, current: Mapping[str, str]) -> bool:
    """Whether ``job``'s report may replace the pointer whose metadata is ``current``."""
    kind = current.get(_META_KIND)
    if kind is None:  # written before pointers existed
        return True
    if kind != _KIND_LATEST or current.get(_META_MANIFEST) != manifest_digest(job.bucket, job.key):
        logger.warning(
            "The pointer key of this manifest holds another object; the pointer is not written",
            extra={"job_id": job.job_id, "kind": kind},
        )
        return False
    if current.get(_META_JOB) == job.job_id:
        return True
    return job.rank > version_rank(current.get(_META_SEQUENCER), current.get(_META_CREATED))


def publish_latest(s3: S3Client, bucket: str, job: Job, body: bytes) -> bool:
    """Make ``body`` (the job's report) the manifest key's latest report unless a newer version's is.

    The pointer (``latest_report_key``) is replaced only by the report of the same job or of a newer
    version (``Job.rank``), with a conditional PutObject on the ETag read (``IfNoneMatch`` when there
    is none), so two jobs finishing at once cannot move it back: the one that loses the race reads
    the pointer again and decides again.

    Returns:
        Whether the pointer now holds this job's report.

    Raises:
        AwsOperationError: S3 failed, or the pointer kept changing for ``MAX_POINTER_ATTEMPTS`` tries.

    """
    key = latest_report_key(job.key)
    for _attempt in range(MAX_POINTER_ATTEMPTS):
        head = _head(s3, bucket, key)
        request: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Body": body,
            "ContentType": "application/json",
            "Metadata": _metadata(job, _KIND_LATEST),
            "IfNoneMatch": "*",
        }
        if head is not None:
            if not _may_replace(job, head.get("Metadata") or {}):
                return False
            del request["IfNoneMatch"]
            request["IfMatch"] = str(head["ETag"])
        try:
            s3.put_object(**request)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _LOST_RACE:
                last: ClientError | BotoCoreError = error
                continue
            handle_aws_error(error, "s3:PutObject", {"job_id": job.job_id, "key": key})
        except BotoCoreError as error:
            handle_aws_error(error, "s3:PutObject", {"job_id": job.job_id, "key": key})
        return True
    handle_aws_error(last, "s3:PutObject", {"job_id": job.job_id, "key": key})


def latest_job_id(s3: S3Client, bucket: str, manifest_bucket: str, manifest_key: str) -> str | None:
    """Return the id of the job whose report the pointer of a manifest key holds (None: no pointer).

    ``bucket`` holds the reports, ``manifest_bucket`` the manifest.

    Raises:
        AwsOperationError: S3 failed.

    """
    head = _head(s3, bucket, latest_report_key(manifest_key))
    metadata: Mapping[str, str] = (head or {}).get("Metadata") or {}
    if metadata.get(_META_KIND) != _KIND_LATEST:
        return None
    if metadata.get(_META_MANIFEST) != manifest_digest(manifest_bucket, manifest_key):
        return None
    return metadata.get(_META_JOB)
