"""The JobsTable data model: one job per manifest version, its counters, completion and report.

Layout (docs/ARCHITECTURE.md, "Jobs"): partition key ``pk`` = job id, sort key ``sk``. The job item
has ``sk = "JOB"``; every recorded batch outcome is a chunk item ``sk = "CHUNK#<chunk>"`` (importer)
or ``sk = "PARSE#<n>"`` (the provider's per-entry failures and duplicates). Counters live on the job
item and only ever move together with the put of a new chunk item, in one transaction, so a
redelivered batch can never be counted twice. Every item carries the TTL attribute ``expires_at``.

Completion: ``settled`` counts every entry that reached a final outcome (imported, failed or skipped
as a duplicate). When the provider has parsed the whole manifest (``parsed = true``, ``total`` known)
and ``settled = total``, exactly one caller wins the conditional ``IMPORTING → REPORTING`` transition,
writes ``reports/<manifest key>.json`` and sets the final status with the condition
``status = REPORTING``; only the caller whose final update succeeds emits ``ManifestsCompleted``. A
caller that finds ``REPORTING`` (the winner crashed) writes the same report again and finishes it.

Parsing is protected by a lease (``lease_owner``, ``lease_until`` in epoch seconds): one provider
invocation parses at a time; a duplicate S3 event while the lease is live does nothing, one after the
lease expired (the parser crashed) resumes from the saved ``checkpoint`` and counts one more
``lease_expiries``. Every write sets ``updated_at``, the job's progress clock: the sweep fails a job
that stops making progress (``abandon_job``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.aws_utils import handle_aws_error
from layer_utils.telemetry import MANIFESTS_COMPLETED, MANIFESTS_FAILED, emit_metric, logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

JOB_SK = "JOB"
"""Sort key of the job item."""

CHUNK_PREFIX = "CHUNK#"
"""Sort key prefix of the importer's outcome items."""

PARSE_PREFIX = "PARSE#"
"""Sort key prefix of the provider's outcome items (parse failures and duplicates)."""

REPORT_PREFIX = "reports/"
"""Reports are written to ``reports/<manifest key>.json`` in the manifest's bucket."""

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

_NATURAL_RE = re.compile(r"(\d+)")


class JobStatus(enum.StrEnum):
    """The life cycle of a job (``str()`` is the stored value)."""

    RECEIVED = "RECEIVED"
    PARSING = "PARSING"
    IMPORTING = "IMPORTING"
    REPORTING = "REPORTING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    FAILED = "FAILED"


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.FAILED})
"""Statuses a job never leaves."""


class JobNotFoundError(LookupError):
    """The job item does not exist (expired by TTL, or a message for an unknown job)."""


def job_id_for(bucket: str, key: str, version: str) -> str:
    """Return the job id of a manifest version (32 hex chars of a SHA-256).

    The digest is over bucket, key and version joined by newlines; ``version`` is the S3 version
    id when the bucket is versioned, else the object's ETag.
    """
    digest = hashlib.sha256(f"{bucket}\n{key}\n{version}".encode()).hexdigest()
    return digest[:32]


def report_key_for(manifest_key: str) -> str:
    """Return the S3 key of the report for ``manifest_key``."""
    return f"{REPORT_PREFIX}{manifest_key}.json"


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

    def to_dict(self) -> dict[str, str]:
        """Return the stored and reported form."""
        data = {
            "locator": shorten(self.locator, MAX_LOCATOR_BYTES),
            "thing_name": self.thing_name,
            "certificate_id": self.certificate_id,
        }
        if self.name_source is not None:
            data["name_source"] = self.name_source
        return data


@dataclass(frozen=True)
class FailureRecord:
    """One entry that failed (or was skipped as a duplicate), with the reason and its error class."""

    locator: str
    certificate_id: str | None
    reason: str
    error_class: str

    def to_dict(self) -> dict[str, str | None]:
        """Return the stored form (the reason is shortened to ``MAX_REASON_BYTES``)."""
        return {
            "locator": shorten(self.locator, MAX_LOCATOR_BYTES),
            "certificate_id": self.certificate_id,
            "reason": shorten(self.reason),
            "error_class": self.error_class,
        }


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

        ``status`` overrides the stored status (the final status while REPORTING).
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
            "succeeded": self.succeeded,
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
        )


def _plain(value: Any) -> Any:
    """Turn the Decimals of a deserialised item into ints/floats, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, set, frozenset)):
        return [_plain(v) for v in value]
    return value


def _is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class JobStore:
    """Reads and writes jobs in the JobsTable and writes their reports to S3.

    Clients, the clock and the metric emitter are injected so tests need no patching.
    """

    def __init__(
        self,
        table_name: str,
        *,
        dynamodb: DynamoDBClient,
        s3: S3Client,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        ttl: timedelta = DEFAULT_TTL,
        emit: Callable[[str], None] = emit_metric,
    ) -> None:
        """Take the table name, DynamoDB and S3 clients, clock, items' time to live and emitter.

        ``clock`` returns aware datetimes; ``emit`` emits a count metric by name.
        """
        self.table_name = table_name
        self._ddb = dynamodb
        self._s3 = s3
        self._clock = clock
        self._ttl = ttl
        self._emit = emit
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()

    # ------------------------------------------------------------------------------ helpers

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _expires_at(self) -> int:
        return int((self._now() + self._ttl).timestamp())

    def _key(self, job_id: str, sk: str = JOB_SK) -> dict[str, Any]:
        return {"pk": {"S": job_id}, "sk": {"S": sk}}

    def _ser(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {name: self._serializer.serialize(value) for name, value in values.items()}

    def _deser(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {name: _plain(self._deserializer.deserialize(value)) for name, value in item.items()}

    def _update(
        self,
        job_id: str,
        expression: str,
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> Job | None:
        """Run one UpdateItem on the job item; return the new job, or None when the condition failed."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": self._key(job_id),
            "UpdateExpression": expression,
            "ReturnValues": "ALL_NEW",
        }
        if condition:
            request["ConditionExpression"] = condition
        if names:
            request["ExpressionAttributeNames"] = dict(names)
        if values:
            request["ExpressionAttributeValues"] = self._ser(values)
        try:
            response = self._ddb.update_item(**request)
        except ClientError as error:
            if _is_conditional_failure(error):
                return None
            handle_aws_error(error, "dynamodb:UpdateItem", {"job_id": job_id})
        except BotoCoreError as error:
            handle_aws_error(error, "dynamodb:UpdateItem", {"job_id": job_id})
        return Job.from_item(self._deser(response["Attributes"]))

    # ------------------------------------------------------------------------------ reads

    def get_job(self, job_id: str) -> Job | None:
        """Return the job (strongly consistent read), or None when it does not exist.

        Raises ``AwsOperationError`` for a DynamoDB failure.
        """
        try:
            response = self._ddb.get_item(
                TableName=self.table_name, Key=self._key(job_id), ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            handle_aws_error(error, "dynamodb:GetItem", {"job_id": job_id})
        item = response.get("Item")
        return None if item is None else Job.from_item(self._deser(item))

    def list_jobs(self) -> list[Job]:
        """Return every job in the table, newest first (a paginated Scan; meant for the CLI).

        Raises ``AwsOperationError`` for a DynamoDB failure.
        """
        jobs = self._scan_jobs("sk = :job", {":job": JOB_SK})
        return sorted(jobs, key=lambda job: (job.created_at or "", job.job_id), reverse=True)

    def list_unfinished_jobs(self) -> list[Job]:
        """Return every job that is not final, oldest first (a Scan filtered on the job's status).

        Raises ``AwsOperationError`` for a DynamoDB failure.
        """
        jobs = self._scan_jobs(
            "sk = :job AND NOT (#status IN (:completed, :with_errors, :failed))",
            {
                ":job": JOB_SK,
                ":completed": str(JobStatus.COMPLETED),
                ":with_errors": str(JobStatus.COMPLETED_WITH_ERRORS),
                ":failed": str(JobStatus.FAILED),
            },
            names={"#status": "status"},
        )
        return sorted(jobs, key=lambda job: (job.created_at or "", job.job_id))

    def _scan_jobs(
        self, condition: str, values: Mapping[str, Any], names: Mapping[str, str] | None = None
    ) -> list[Job]:
        """Return the job items a paginated Scan with this filter finds."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": condition,
            "ExpressionAttributeValues": self._ser(values),
        }
        if names:
            request["ExpressionAttributeNames"] = dict(names)
        jobs: list[Job] = []
        try:
            for page in self._ddb.get_paginator("scan").paginate(**request):
                jobs.extend(Job.from_item(self._deser(item)) for item in page.get("Items", []))
        except (ClientError, BotoCoreError) as error:
            handle_aws_error(error, "dynamodb:Scan")
        return jobs

    def iter_outcome_items(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Yield every chunk and parse outcome item of a job (a paginated, consistent Query).

        Raises ``AwsOperationError`` for a DynamoDB failure.
        """
        paginator = self._ddb.get_paginator("query")
        try:
            for page in paginator.paginate(
                TableName=self.table_name,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": job_id}},
                ConsistentRead=True,
            ):
                for raw in page.get("Items", []):
                    item = self._deser(raw)
                    if item["sk"] != JOB_SK:
                        yield item
        except (ClientError, BotoCoreError) as error:
            handle_aws_error(error, "dynamodb:Query", {"job_id": job_id})

    # ------------------------------------------------------------------------------ life cycle

    def create_job(
        self,
        bucket: str,
        key: str,
        version: str,
        *,
        settings: Mapping[str, Any] | None = None,
        vendor: str | None = None,
    ) -> tuple[bool, Job]:
        """Create the job of a manifest version unless it exists (the S3-event idempotency key).

        Takes the manifest's bucket, key and version (version id or ETag), the import settings and
        the vendor when known. Returns ``(True, new job)`` or ``(False, existing job)``. Raises
        ``AwsOperationError`` for a DynamoDB failure.
        """
        job_id = job_id_for(bucket, key, version)
        now = isoformat(self._now())
        item: dict[str, Any] = {
            "pk": job_id,
            "sk": JOB_SK,
            "bucket": bucket,
            "key": key,
            "version": version,
            "status": str(JobStatus.RECEIVED),
            "succeeded": 0,
            "failed": 0,
            "duplicates": 0,
            "settled": 0,
            "parsed": False,
            "settings": dict(settings or {}),
            "created_at": now,
            "updated_at": now,
            "expires_at": self._expires_at(),
        }
        if vendor is not None:
            item["vendor"] = vendor
        try:
            self._ddb.put_item(
                TableName=self.table_name,
                Item=self._ser(item),
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                handle_aws_error(error, "dynamodb:PutItem", {"job_id": job_id})
            old: Mapping[str, Any] | None = error.response.get("Item")  # type: ignore[assignment]
            existing = Job.from_item(self._deser(old)) if old else self.get_job(job_id)
            if existing is None:  # deleted between the put and the read: a TTL race, try again
                return self.create_job(bucket, key, version, settings=settings, vendor=vendor)
            return False, existing
        except BotoCoreError as error:
            handle_aws_error(error, "dynamodb:PutItem", {"job_id": job_id})
        return True, Job.from_item(item)

    def claim_parse(self, job_id: str, owner: str, lease_until: datetime) -> Job | None:
        """Take the parsing lease of a job.

        Succeeds when the job is RECEIVED or PARSING and the lease is free, expired or held live by
        ``owner``. Taking over an expired lease (its holder died without finishing or releasing it)
        adds one to ``lease_expiries``, which the sweep compares with its maximum; that path costs a
        second UpdateItem, as does finding another invocation's live lease. Takes the job id, the
        owner id and when the lease expires. Returns the job (status PARSING, with its checkpoint),
        or None when another live invocation holds the lease or the job is past parsing. Raises
        ``AwsOperationError`` for a DynamoDB failure.
        """
        now = self._now()
        values = {
            ":parsing": str(JobStatus.PARSING),
            ":received": str(JobStatus.RECEIVED),
            ":owner": owner,
            ":until": int(lease_until.timestamp()),
            ":epoch": int(now.timestamp()),
            ":now": isoformat(now),
        }
        claim = "SET #status = :parsing, lease_owner = :owner, lease_until = :until, updated_at = :now"
        claimed = self._update(
            job_id,
            claim,
            condition=(
                "#status IN (:received, :parsing) AND (attribute_not_exists(lease_owner)"
                " OR (lease_owner = :owner AND lease_until >= :epoch))"
            ),
            names={"#status": "status"},
            values=values,
        )
        if claimed is not None:
            return claimed
        return self._update(
            job_id,
            f"{claim} ADD lease_expiries :one",
            condition="#status IN (:received, :parsing) AND lease_until < :epoch",
            names={"#status": "status"},
            values={**values, ":one": 1},
        )

    def save_checkpoint(
        self,
        job_id: str,
        owner: str,
        checkpoint: Mapping[str, Any],
        *,
        lease_until: datetime | None = None,
        release: bool = False,
        vendor: str | None = None,
        settings: Mapping[str, Any] | None = None,
        warnings: Sequence[str] | None = None,
    ) -> bool:
        """Store the parser's checkpoint while holding the lease.

        Takes the job id, the lease owner, the checkpoint (a JSON-like mapping the provider defines),
        optionally a new lease expiry, ``release=True`` to give the lease up (before a continuation),
        and the vendor, settings and warnings (sentences for the report, e.g. a skipped trust file;
        at most ``MAX_WARNINGS`` are kept, each shortened) to record. Returns False when ``owner``
        no longer holds the lease (another invocation took over: stop parsing). Raises
        ``AwsOperationError`` for a DynamoDB failure.
        """
        sets = ["checkpoint = :checkpoint", "updated_at = :now"]
        values: dict[str, Any] = {
            ":checkpoint": dict(checkpoint),
            ":now": isoformat(self._now()),
            ":parsing": str(JobStatus.PARSING),
            ":owner": owner,
        }
        if vendor is not None:
            sets.append("vendor = :vendor")
            values[":vendor"] = vendor
        if settings is not None:
            sets.append("settings = :settings")
            values[":settings"] = dict(settings)
        if warnings:
            sets.append("warnings = :warnings")
            values[":warnings"] = [shorten(warning) for warning in warnings[:MAX_WARNINGS]]
        expression = "SET " + ", ".join(sets)
        if release:
            expression += " REMOVE lease_owner, lease_until"
        elif lease_until is not None:
            expression += ", lease_until = :until"
            values[":until"] = int(lease_until.timestamp())
        job = self._update(
            job_id,
            expression,
            condition="#status = :parsing AND lease_owner = :owner",
            names={"#status": "status"},
            values=values,
        )
        return job is not None

    def mark_parsed(
        self,
        job_id: str,
        owner: str,
        total: int,
        checkpoint: Mapping[str, Any],
        *,
        reason: str | None = None,
    ) -> Job | None:
        """Record that the manifest was parsed and fanned out: PARSING → IMPORTING.

        Takes the job id, the lease owner, ``total`` (every manifest entry, including failures and
        duplicates; the provider's own outcomes were recorded as ``PARSE#`` items already), the
        final checkpoint and, when the manifest broke off part-way, the ``reason``: the entries
        before it are still imported and the job then ends FAILED with that reason. Returns the
        job, or None when ``owner`` lost the lease. Raises ``AwsOperationError`` for a DynamoDB
        failure.
        """
        values: dict[str, Any] = {
            ":importing": str(JobStatus.IMPORTING),
            ":parsing": str(JobStatus.PARSING),
            ":true": True,
            ":total": total,
            ":checkpoint": dict(checkpoint),
            ":owner": owner,
            ":now": isoformat(self._now()),
        }
        extra = ""
        if reason:
            extra = ", reason = :reason"
            values[":reason"] = shorten(reason)
        return self._update(
            job_id,
            "SET #status = :importing, parsed = :true, #total = :total, checkpoint = :checkpoint,"
            f" updated_at = :now{extra} REMOVE lease_owner, lease_until",
            condition="#status = :parsing AND lease_owner = :owner",
            names={"#status": "status", "#total": "total"},
            values=values,
        )

    # ------------------------------------------------------------------------------ outcomes

    def record_outcome(
        self,
        job_id: str,
        chunk: str,
        imported: Sequence[ImportedRecord],
        failures: Sequence[FailureRecord],
    ) -> bool:
        """Record the outcome of one import chunk, exactly once.

        One TransactWriteItems puts the item ``CHUNK#<chunk>`` (condition ``attribute_not_exists(sk)``)
        and adds ``succeeded``, ``failed`` and ``settled`` to the job. Returns False when the chunk
        was recorded before (a redelivery: nothing changes). Raises ``JobNotFoundError`` when the
        job does not exist, ``AwsOperationError`` for a DynamoDB failure.
        """
        return self._record(job_id, CHUNK_PREFIX + chunk, imported, failures, ())

    def record_parse_outcome(
        self,
        job_id: str,
        index: int,
        failures: Sequence[FailureRecord],
        duplicates: Sequence[FailureRecord] = (),
    ) -> bool:
        """Record a batch of the provider's failures and duplicates as item ``PARSE#<index>``, once.

        Takes the job id, the item number (deterministic: a resumed parse writes the same numbers)
        and at most ``MAX_RECORDS_PER_ITEM`` failures and as many duplicates. Adds ``failed``,
        ``duplicates`` and ``settled`` to the job in the same transaction. Returns False when the
        item exists already. Raises ``ValueError`` for too many records, ``JobNotFoundError`` when
        the job does not exist and ``AwsOperationError`` for a DynamoDB failure.
        """
        if len(failures) > MAX_RECORDS_PER_ITEM or len(duplicates) > MAX_RECORDS_PER_ITEM:
            raise ValueError(
                f"A parse outcome item holds at most {MAX_RECORDS_PER_ITEM} failures and as many duplicates."
            )
        return self._record(job_id, f"{PARSE_PREFIX}{index:06d}", (), failures, duplicates)

    def _record(
        self,
        job_id: str,
        sk: str,
        imported: Sequence[ImportedRecord],
        failures: Sequence[FailureRecord],
        duplicates: Sequence[FailureRecord],
    ) -> bool:
        item = {
            "pk": job_id,
            "sk": sk,
            "imported": [record.to_dict() for record in imported],
            "failures": [record.to_dict() for record in failures],
            "duplicates": [record.to_dict() for record in duplicates],
            "recorded_at": isoformat(self._now()),
            "expires_at": self._expires_at(),
        }
        settled = len(imported) + len(failures) + len(duplicates)
        try:
            self._ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": self._ser(item),
                            "ConditionExpression": "attribute_not_exists(sk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": self._key(job_id),
                            "UpdateExpression": (
                                "ADD succeeded :ok, failed :failed, duplicates :dup, settled :settled"
                                " SET updated_at = :now"
                            ),
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": self._ser(
                                {
                                    ":ok": len(imported),
                                    ":failed": len(failures),
                                    ":dup": len(duplicates),
                                    ":settled": settled,
                                    ":now": isoformat(self._now()),
                                }
                            ),
                        }
                    },
                ]
            )
        except ClientError as error:
            codes = [reason.get("Code") for reason in error.response.get("CancellationReasons", [])]
            if error.response.get("Error", {}).get("Code") == "TransactionCanceledException" and codes:
                if codes[0] == "ConditionalCheckFailed":
                    return False
                if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                    raise JobNotFoundError(f"Job {job_id} does not exist.") from error
            handle_aws_error(error, "dynamodb:TransactWriteItems", {"job_id": job_id, "sk": sk})
        except BotoCoreError as error:
            handle_aws_error(error, "dynamodb:TransactWriteItems", {"job_id": job_id, "sk": sk})
        return True

    # ------------------------------------------------------------------------------ completion

    def try_complete(self, job_id: str) -> Job | None:
        """Finish the job if every entry is settled; safe to call after every batch by anyone.

        Claims REPORTING with ``#status = IMPORTING AND parsed = true AND settled = #total`` (an
        attribute-to-attribute comparison, which DynamoDB and moto support), writes the report and
        sets the final status. A caller that finds REPORTING (a crashed winner) finishes it too.
        Returns the final job when this call set the final status (it emitted ``ManifestsCompleted``,
        or ``ManifestsFailed`` for a manifest that broke off part-way), else None. Raises
        ``AwsOperationError`` for an AWS failure.
        """
        now = self._now()
        job = self._update(
            job_id,
            "SET #status = :reporting, completed_at = :now, updated_at = :now",
            condition="#status = :importing AND parsed = :true AND settled = #total",
            names={"#status": "status", "#total": "total"},
            values={
                ":reporting": str(JobStatus.REPORTING),
                ":importing": str(JobStatus.IMPORTING),
                ":true": True,
                ":now": isoformat(now),
            },
        )
        if job is None:
            job = self.get_job(job_id)
            if job is None or job.status != JobStatus.REPORTING:
                return None
            logger.info("Job found in REPORTING: writing its report again", extra={"job_id": job_id})
        return self._finish(job)

    def _finish(self, job: Job) -> Job | None:
        final = job.outcome_status
        report_key = self.write_report(job, status=final)
        finished = self._update(
            job.job_id,
            "SET #status = :final, report_key = :report, updated_at = :now",
            condition="#status = :reporting",
            names={"#status": "status"},
            values={
                ":final": str(final),
                ":report": report_key,
                ":reporting": str(JobStatus.REPORTING),
                ":now": isoformat(self._now()),
            },
        )
        if finished is None:
            return None
        self._emit(MANIFESTS_FAILED if final == JobStatus.FAILED else MANIFESTS_COMPLETED)
        logger.info(
            "Job finished",
            extra={
                "job_id": job.job_id,
                "status": str(final),
                "succeeded": finished.succeeded,
                "failed": finished.failed,
                "duplicates": finished.duplicates,
                "report_key": report_key,
            },
        )
        return finished

    def fail_job(self, job_id: str, reason: str) -> Job | None:
        """Mark a job FAILED with ``reason`` (one English sentence) and write its report.

        Only a job that is not final and not REPORTING can fail. Returns the failed job when this
        call made the transition (it emitted ``ManifestsFailed``), else None. Raises
        ``AwsOperationError`` for an AWS failure (the job may then be FAILED without a report:
        ``ensure_report`` repairs that on redelivery).
        """
        now = isoformat(self._now())
        job = self._update(
            job_id,
            "SET #status = :failed, reason = :reason, completed_at = :now, updated_at = :now"
            " REMOVE lease_owner, lease_until",
            condition="#status IN (:received, :parsing, :importing)",
            names={"#status": "status"},
            values={
                ":failed": str(JobStatus.FAILED),
                ":reason": shorten(reason),
                ":now": now,
                ":received": str(JobStatus.RECEIVED),
                ":parsing": str(JobStatus.PARSING),
                ":importing": str(JobStatus.IMPORTING),
            },
        )
        if job is None:
            return None
        self._emit(MANIFESTS_FAILED)
        logger.warning("Job failed", extra={"job_id": job_id, "reason": reason})
        return self.ensure_report(job)

    def abandon_job(self, job: Job, reason: str) -> Job | None:
        """Fail a stuck job exactly as ``job`` (a snapshot) shows it, and write its report.

        The job's entries that have not settled (``entries_known - settled``) are counted as failed
        and recorded in ``unsettled``, so the counters add up to ``total``; the outcome items already
        recorded stay in the report. The update is conditional on the snapshot's status,
        ``updated_at`` and ``settled`` and on no live parsing lease, so a job that moved since the
        snapshot is left alone. Takes the snapshot and the reason (one English sentence). Returns
        the failed job when this call failed it (it emitted ``ManifestsFailed``), else None. Raises
        ``ValueError`` for a job that is REPORTING or final, ``AwsOperationError`` for an AWS failure.
        """
        if job.status not in (JobStatus.RECEIVED, JobStatus.PARSING, JobStatus.IMPORTING):
            raise ValueError(f"Only a RECEIVED, PARSING or IMPORTING job can be abandoned, not {job.status}.")
        now = self._now()
        total = job.entries_known
        unsettled = total - job.settled
        reason = f"{job.reason} {reason}" if job.reason else reason
        seen = "updated_at = :seen" if job.updated_at else "attribute_not_exists(updated_at)"
        values: dict[str, Any] = {
            ":failed": str(JobStatus.FAILED),
            ":reason": shorten(reason),
            ":now": isoformat(now),
            ":total": total,
            ":unsettled": unsettled,
            ":status": str(job.status),
            ":settled": job.settled,
            ":epoch": int(now.timestamp()),
        }
        if job.updated_at:
            values[":seen"] = job.updated_at
        failed = self._update(
            job.job_id,
            "SET #status = :failed, reason = :reason, completed_at = :now, updated_at = :now,"
            " #total = :total, settled = :total, unsettled = :unsettled"
            " REMOVE lease_owner, lease_until ADD failed :unsettled",
            condition=(
                f"#status = :status AND {seen} AND settled = :settled"
                " AND (attribute_not_exists(lease_until) OR lease_until < :epoch)"
            ),
            names={"#status": "status", "#total": "total"},
            values=values,
        )
        if failed is None:
            return None
        self._emit(MANIFESTS_FAILED)
        logger.warning(
            "Stuck job failed",
            extra={"job_id": job.job_id, "reason": failed.reason, "unsettled": unsettled},
        )
        return self.ensure_report(failed)

    def restart_progress_clock(self, job_id: str) -> Job | None:
        """Give an unfinished job a fresh start before its dead-lettered messages are redriven.

        Sets ``updated_at`` to now and ``lease_expiries`` to 0, so the sweep waits a full stall time
        for the redriven messages to make progress. Returns the job, or None when it does not exist
        or is final. Raises ``AwsOperationError`` for a DynamoDB failure.
        """
        return self._update(
            job_id,
            "SET updated_at = :now, lease_expiries = :zero",
            condition="#status IN (:received, :parsing, :importing, :reporting)",
            names={"#status": "status"},
            values={
                ":now": isoformat(self._now()),
                ":zero": 0,
                ":received": str(JobStatus.RECEIVED),
                ":parsing": str(JobStatus.PARSING),
                ":importing": str(JobStatus.IMPORTING),
                ":reporting": str(JobStatus.REPORTING),
            },
        )

    def ensure_report(self, job: Job) -> Job:
        """Write the report of a final job that has none yet (``report_key`` unset); return the job.

        Raises ``AwsOperationError`` for an AWS failure.
        """
        if not job.is_final or job.report_key:
            return job
        report_key = self.write_report(job)
        updated = self._update(
            job.job_id,
            "SET report_key = :report, updated_at = :now",
            names=None,
            values={":report": report_key, ":now": isoformat(self._now())},
        )
        return updated or job

    # ------------------------------------------------------------------------------ report

    def build_report(self, job: Job, status: JobStatus | None = None) -> dict[str, Any]:
        """Return the report document of a job from its counters and all its outcome items.

        ``status`` overrides the job's stored status (the final status while REPORTING). Lists are
        sorted deterministically (natural order of locators, then certificate id and reason).
        """
        imported: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        duplicates: list[dict[str, Any]] = []
        for item in self.iter_outcome_items(job.job_id):
            imported.extend(item.get("imported", []))
            failures.extend(_report_failure(record) for record in item.get("failures", []))
            duplicates.extend(_report_failure(record) for record in item.get("duplicates", []))
        imported.sort(key=lambda r: (natural_key(r["locator"]), r["certificate_id"]))
        failures.sort(key=_failure_sort_key)
        duplicates.sort(key=_failure_sort_key)
        return {
            **job.summary(status),
            "imported": imported,
            "failures": failures,
            "duplicate_entries": duplicates,
        }

    def write_report(self, job: Job, status: JobStatus | None = None) -> str:
        """Write ``reports/<manifest key>.json`` to the manifest's bucket; return the report key.

        Raises ``AwsOperationError`` for an AWS failure.
        """
        report = self.build_report(job, status)
        key = report_key_for(job.key)
        body = json.dumps(report, indent=1, ensure_ascii=False).encode("utf-8")
        try:
            self._s3.put_object(Bucket=job.bucket, Key=key, Body=body, ContentType="application/json")
        except (ClientError, BotoCoreError) as error:
            handle_aws_error(error, "s3:PutObject", {"job_id": job.job_id, "key": key})
        return key


def _report_failure(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "locator": record["locator"],
        "certificate_id": record.get("certificate_id"),
        "reason": record["reason"],
    }


def _failure_sort_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return (natural_key(record["locator"]), record.get("certificate_id") or "", record["reason"])
