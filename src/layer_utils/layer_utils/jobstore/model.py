"""The job model: the JobsTable's keys and limits, a job snapshot and its outcome records.

The item layout is described in docs/ARCHITECTURE.md, "Jobs".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from layer_utils.jobstore.lifecycle import FINAL_STATUSES, JobStatus

JOB_SK = "JOB"
"""Sort key of the job item."""

CHUNK_PREFIX = "CHUNK#"
"""Sort key prefix of the importer's outcome items."""

PARSE_PREFIX = "PARSE#"
"""Sort key prefix of the provider's outcome items (parse failures and duplicates)."""

REPORT_PREFIX = "reports/"
"""Every report key starts with this prefix (see ``job_report_key`` and ``latest_report_key``)."""

JOB_REPORT_PREFIX = f"{REPORT_PREFIX}jobs/"
"""Each job's own report is ``reports/jobs/<job id>.json``."""

REPORT_SUFFIX = ".json"
"""Every report key ends with this suffix."""

MAX_S3_KEY_BYTES = 1024
"""S3's limit on an object key, in UTF-8 bytes."""

MAX_RECORDS_PER_ITEM = 200
"""Most failure or duplicate records one ``PARSE#`` item may hold (keeps items far below 400 KB)."""

MAX_REASON_BYTES = 600
"""Failure reasons longer than this (in UTF-8 bytes) are shortened before they are stored."""

MAX_LOCATOR_BYTES = 200
"""Locators longer than this (in UTF-8 bytes) are shortened before they are stored or reported."""

MAX_WARNINGS = 50
"""Most warnings (skipped trust files) a job records."""

DEFAULT_TTL = timedelta(days=90)
"""How long job and chunk items are kept (the DynamoDB TTL attribute ``expires_at``)."""

DUPLICATE_ERROR_CLASS = "duplicate"
"""The ``error_class`` of duplicate records."""

_HEX_DIGITS = frozenset("0123456789ABCDEF")
_NATURAL_RE = re.compile(r"(\d+)")


class JobNotFoundError(LookupError):
    """The job item does not exist (expired by TTL, or a message for an unknown job)."""


def job_id_for(bucket: str, key: str, version: str) -> str:
    """Return the job id of a manifest version (32 hex chars of a SHA-256).

    The digest is over bucket, key and version joined by newlines; ``version`` is the S3 version
    id when the bucket is versioned, else the object's ETag.
    """
    digest = hashlib.sha256(f"{bucket}\n{key}\n{version}".encode()).hexdigest()
    return digest[:32]


def job_report_key(job_id: str) -> str:
    """Return the S3 key of one job's own report: ``reports/jobs/<job id>.json``."""
    return f"{JOB_REPORT_PREFIX}{job_id}{REPORT_SUFFIX}"


def latest_report_key(manifest_key: str) -> str:
    """Return the S3 key of the pointer to the latest report of ``manifest_key``, within 1024 bytes.

    It is ``reports/<manifest key>.json`` when that fits in ``MAX_S3_KEY_BYTES``; a longer one keeps
    the start of the manifest key that fits, then ``~`` and the SHA-256 of the whole key (hex).
    """
    raw = manifest_key.encode("utf-8", errors="surrogatepass")
    direct = f"{REPORT_PREFIX}{manifest_key}{REPORT_SUFFIX}"
    if len(REPORT_PREFIX) + len(raw) + len(REPORT_SUFFIX) <= MAX_S3_KEY_BYTES:
        return direct
    tail = f"~{hashlib.sha256(raw).hexdigest()}{REPORT_SUFFIX}"
    room = MAX_S3_KEY_BYTES - len(REPORT_PREFIX) - len(tail)
    head = raw[:room].decode("utf-8", errors="ignore")
    return f"{REPORT_PREFIX}{head}{tail}"


def manifest_digest(bucket: str, manifest_key: str) -> str:
    """Return the SHA-256 (hex) that names a manifest key in its pointer's metadata."""
    return hashlib.sha256(f"{bucket}\n{manifest_key}".encode("utf-8", errors="surrogatepass")).hexdigest()


def version_rank(sequencer: str | None, created_at: str | None) -> tuple[int, str, str]:
    """Return the order of a manifest version among the versions of its key: greater is newer.

    ``sequencer`` is the S3 event's sequencer of the version. AWS compares two sequencers of one key
    by right-padding the shorter with zeros and comparing the strings; stripping trailing zeros
    orders them the same way (``0`` is the lowest digit). A version without a (hexadecimal)
    sequencer ranks below every version with one, and versions that tie are ordered by their job's
    ``created_at``.
    """
    digits = (sequencer or "").upper()
    if not digits or any(char not in _HEX_DIGITS for char in digits):
        return 0, "", created_at or ""
    return 1, digits.rstrip("0"), created_at or ""


def isoformat(moment: datetime) -> str:
    """Return ``moment`` as ISO 8601 UTC with a ``Z`` suffix (millisecond precision)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Return a sort key that orders embedded numbers numerically (``row 9`` before ``row 10``)."""
    return tuple((1, int(part)) if part.isdigit() else (0, part) for part in _NATURAL_RE.split(text))


def shorten(text: str, limit: int = MAX_REASON_BYTES) -> str:
    """Return ``text`` cut to at most ``limit`` UTF-8 bytes (ending with an ellipsis when cut).

    Bounds every string an uploader controls before it reaches a DynamoDB item (whose size counts
    bytes) or a report, and replaces what UTF-8 cannot encode (lone surrogates) with ``?``.
    """
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= limit:
        return encoded.decode("utf-8")
    ellipsis = "…"
    room = limit - len(ellipsis.encode("utf-8"))
    return encoded[:room].decode("utf-8", errors="ignore") + ellipsis


@dataclass(frozen=True)
class ImportedRecord:
    """One registered certificate in a chunk outcome, and the source that named its thing."""

    locator: str
    thing_name: str
    certificate_id: str
    name_source: str | None = None
    ledger: Mapping[str, Any] | None = None
    """The compact ledger (``jobstore.ledger.encode``), stored as ``l``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the stored form."""
        data: dict[str, Any] = {
            "locator": shorten(self.locator, MAX_LOCATOR_BYTES),
            "thing_name": self.thing_name,
            "certificate_id": self.certificate_id,
        }
        if self.name_source is not None:
            data["name_source"] = self.name_source
        if self.ledger:
            data["l"] = dict(self.ledger)
        return data


@dataclass(frozen=True)
class FailureRecord:
    """One entry that failed (or was skipped as a duplicate), with the reason and its error class."""

    locator: str
    certificate_id: str | None
    reason: str
    error_class: str
    thing_name: str | None = None
    ledger: Mapping[str, Any] | None = None
    """What the failed entry left in AWS IoT (``jobstore.ledger.encode``), stored as ``l``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the stored form (the reason is shortened to ``MAX_REASON_BYTES``)."""
        data: dict[str, Any] = {
            "locator": shorten(self.locator, MAX_LOCATOR_BYTES),
            "certificate_id": self.certificate_id,
            "reason": shorten(self.reason),
            "error_class": self.error_class,
        }
        if self.ledger:
            data["thing_name"] = self.thing_name
            data["l"] = dict(self.ledger)
        return data


@dataclass(frozen=True)
class Job:
    """A snapshot of a job item."""

    job_id: str
    bucket: str
    key: str
    version: str
    status: JobStatus
    vendor: str | None = None
    total: int | None = None
    succeeded: int = 0
    failed: int = 0
    duplicates: int = 0
    settled: int = 0
    parsed: bool = False
    checkpoint: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    updated_at: str | None = None
    completed_at: str | None = None
    report_key: str | None = None
    reason: str | None = None
    lease_owner: str | None = None
    lease_until: int | None = None
    warnings: tuple[str, ...] = ()
    lease_expiries: int = 0
    unsettled: int = 0
    sequencer: str | None = None
    undo: dict[str, Any] | None = None
    """The undo checkpoint (``jobstore.undo``): ``run``, ``next``, ``done``, ``started_at``, counts."""
    undo_report_key: str | None = None
    secret: str | None = field(default=None, repr=False)
    """The key of the job's import message MACs (``layer_utils.messages``); never reported or logged."""

    @property
    def rank(self) -> tuple[int, str, str]:
        """The order of this job's manifest version among its key's versions (``version_rank``)."""
        return version_rank(self.sequencer, self.created_at)

    @property
    def is_final(self) -> bool:
        """Whether the job reached COMPLETED, COMPLETED_WITH_ERRORS or FAILED."""
        return self.status in FINAL_STATUSES

    @property
    def entries_known(self) -> int:
        """How many entries the job is known to have, never fewer than it settled.

        ``total`` once the manifest is parsed, else the entries its checkpoint says were read.
        """
        if self.parsed and self.total is not None:
            known = self.total
        else:
            known = int((self.checkpoint or {}).get("entries_done", 0))
        return max(known, self.settled)

    @property
    def outcome_status(self) -> JobStatus:
        """The final status once every entry settled.

        FAILED when the manifest itself failed part-way (``reason`` set by ``mark_parsed``: the
        entries before the problem were still imported), else COMPLETED when nothing failed, else
        COMPLETED_WITH_ERRORS.
        """
        if self.reason:
            return JobStatus.FAILED
        return JobStatus.COMPLETED if self.failed == 0 else JobStatus.COMPLETED_WITH_ERRORS

    def summary(self, status: JobStatus | None = None) -> dict[str, Any]:
        """Return the report's counters of this job (everything but the entry lists).

        ``status`` overrides the stored status (the final status while REPORTING). The counters are
        named as in ``layer_utils.schema``: ``succeeded`` is reported as ``imported``.
        """
        return {
            "job_id": self.job_id,
            "manifest": {"bucket": self.bucket, "key": self.key, "version": self.version},
            "vendor": self.vendor,
            "settings": dict(self.settings),
            "status": str(status or self.status),
            "reason": self.reason,
            "warnings": list(self.warnings),
            "total": self.total,
            "imported": self.succeeded,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "unsettled": self.unsettled,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Job:
        """Build a job from a deserialised DynamoDB item."""
        total = item.get("total")
        lease_until = item.get("lease_until")
        return cls(
            job_id=str(item["pk"]),
            bucket=str(item["bucket"]),
            key=str(item["key"]),
            version=str(item["version"]),
            status=JobStatus(item["status"]),
            vendor=item.get("vendor"),
            total=None if total is None else int(total),
            succeeded=int(item.get("succeeded", 0)),
            failed=int(item.get("failed", 0)),
            duplicates=int(item.get("duplicates", 0)),
            settled=int(item.get("settled", 0)),
            parsed=bool(item.get("parsed", False)),
            checkpoint=item.get("checkpoint"),
            settings=dict(item.get("settings") or {}),
            created_at=item.get("created_at"),
            updated_at=item.get("updated_at"),
            completed_at=item.get("completed_at"),
            report_key=item.get("report_key"),
            reason=item.get("reason"),
            lease_owner=item.get("lease_owner"),
            lease_until=None if lease_until is None else int(lease_until),
            warnings=tuple(str(warning) for warning in item.get("warnings") or ()),
            lease_expiries=int(item.get("lease_expiries", 0)),
            unsettled=int(item.get("unsettled", 0)),
            sequencer=item.get("sequencer"),
            secret=item.get("secret"),
            undo=item.get("undo"),
            undo_report_key=item.get("undo_report_key"),
        )
