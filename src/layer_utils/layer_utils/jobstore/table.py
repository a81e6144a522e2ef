"""Item access to the JobsTable: reads, conditional updates and exactly-once outcome recording.

``JobTable`` is the base of ``JobStore``; nothing else reads or writes the table. The item layout is
described in docs/ARCHITECTURE.md, "Jobs".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.aws_utils import handle_aws_error
from layer_utils.jobstore.ledger import LedgerEntry, read_ledger
from layer_utils.jobstore.lifecycle import FINAL_STATUSES, JobStatus
from layer_utils.jobstore.model import (
    CHUNK_PREFIX,
    DEFAULT_TTL,
    JOB_SK,
    MAX_RECORDS_PER_ITEM,
    PARSE_PREFIX,
    FailureRecord,
    ImportedRecord,
    Job,
    JobNotFoundError,
    isoformat,
)
from layer_utils.telemetry import emit_metric

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client


def _plain(value: Any) -> Any:
    """Turn the Decimals of a deserialised item into ints/floats, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, set, frozenset)):
        return [_plain(v) for v in value]
    return value


def is_conditional_failure(error: ClientError) -> bool:
    """Return whether ``error`` is DynamoDB refusing a write because its condition failed."""
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class JobTable:
    """Reads and writes the items of the JobsTable; ``JobStore`` adds the job's lifecycle.

    Clients, the clock and the metric emitter are injected so tests need no patching. Every method
    raises ``AwsOperationError`` when DynamoDB fails.

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
            if is_conditional_failure(error):
                return None
            handle_aws_error(error, "dynamodb:UpdateItem", {"job_id": job_id})
        except BotoCoreError as error:
            handle_aws_error(error, "dynamodb:UpdateItem", {"job_id": job_id})
        return Job.from_item(self._deser(response["Attributes"]))

    # ------------------------------------------------------------------------------ reads

    def get_job(self, job_id: str) -> Job | None:
        """Return the job (strongly consistent read), or None when it does not exist."""
        try:
            response = self._ddb.get_item(
                TableName=self.table_name, Key=self._key(job_id), ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            handle_aws_error(error, "dynamodb:GetItem", {"job_id": job_id})
        item = response.get("Item")
        return None if item is None else Job.from_item(self._deser(item))

    def list_jobs(self) -> list[Job]:
        """Return every job in the table, newest first (a paginated Scan; meant for the CLI)."""
        jobs = self._scan_jobs("sk = :job", {":job": JOB_SK})
        return sorted(jobs, key=lambda job: (job.created_at or "", job.job_id), reverse=True)

    def list_unfinished_jobs(self) -> list[Job]:
        """Return every job that is not final, oldest first (a Scan filtered on the job's status)."""
        finals = [status for status in JobStatus if status in FINAL_STATUSES]
        values: dict[str, Any] = {":job": JOB_SK}
        values.update({f":final_{index}": str(status) for index, status in enumerate(finals)})
        placeholders = ", ".join(f":final_{index}" for index in range(len(finals)))
        jobs = self._scan_jobs(
            f"sk = :job AND NOT (#status IN ({placeholders}))", values, names={"#status": "status"}
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
        """Yield every chunk and parse outcome item of a job (a paginated, consistent Query)."""
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

    def ledger(self, job_id: str) -> Iterator[LedgerEntry]:
        """Yield the ledger of every entry of a job that made or found something in AWS IoT.

        One paginated Query of the job's outcome items (``ledger.read_ledger`` merges retried
        attempts); entries recorded before the ledger existed yield nothing.

        Returns:
            The entries' ``LedgerEntry`` (a lazy iterator).

        Raises:
            AwsOperationError: DynamoDB failed.

        """
        return read_ledger(self.iter_outcome_items(job_id))

    def recorded_entries(self, job_id: str, chunk: str) -> frozenset[tuple[str, str | None]]:
        """Return the entries the outcome item of an import chunk recorded (a consistent read).

        Args:
            job_id: the job.
            chunk: the import message's chunk name.

        Returns:
            The ``(locator, certificate_id)`` of every imported and failed entry of ``CHUNK#<chunk>``.

        Raises:
            AwsOperationError: DynamoDB failed.
            RuntimeError: the chunk item does not exist (it is read only after it was recorded).

        """
        try:
            response = self._ddb.get_item(
                TableName=self.table_name, Key=self._key(job_id, CHUNK_PREFIX + chunk), ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            handle_aws_error(error, "dynamodb:GetItem", {"job_id": job_id, "chunk": chunk})
        raw = response.get("Item")
        if raw is None:
            raise RuntimeError(f"Chunk {chunk} of job {job_id} was recorded but its item cannot be read.")
        item = self._deser(raw)
        return frozenset(
            (str(record["locator"]), record.get("certificate_id"))
            for name in ("imported", "failures")
            for record in item.get(name, [])
        )

    # ------------------------------------------------------------------------------ outcomes

    def record_outcome(
        self,
        job_id: str,
        chunk: str,
        imported: Sequence[ImportedRecord],
        failures: Sequence[FailureRecord],
        *,
        scope: Mapping[str, Any] | None = None,
        partial: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        """Record the outcome of one import chunk, exactly once.

        One TransactWriteItems puts the item ``CHUNK#<chunk>`` (condition ``attribute_not_exists(sk)``)
        and adds ``succeeded``, ``failed`` and ``settled`` to the job. ``scope`` (``ledger.scope_of``)
        and ``partial`` (``{locator, thing_name, certificate_id, l}`` of entries re-enqueued after an
        attempt that changed AWS IoT) complete the ledger (docs/ARCHITECTURE.md, "Ledger").

        Returns:
            False when the chunk was recorded before (a redelivery: nothing changes).

        Raises:
            JobNotFoundError: the job does not exist.

        """
        extra: dict[str, Any] = {}
        if scope is not None:
            extra["scope"] = dict(scope)
        if partial:
            extra["partial"] = [dict(record) for record in partial]
        return self._record(job_id, CHUNK_PREFIX + chunk, imported, failures, (), extra=extra)

    def record_parse_outcome(
        self,
        job_id: str,
        index: int,
        failures: Sequence[FailureRecord],
        duplicates: Sequence[FailureRecord] = (),
    ) -> bool:
        """Record a batch of the provider's failures and duplicates as item ``PARSE#<index>``, once.

        ``index`` is deterministic: a resumed parse writes the same numbers. At most
        ``MAX_RECORDS_PER_ITEM`` failures and as many duplicates; ``failed``, ``duplicates`` and ``settled``
        are added to the job in the same transaction.

        Returns:
            False when the item exists already.

        Raises:
            ValueError: too many records.
            JobNotFoundError: the job does not exist.

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
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        item = {
            **(extra or {}),
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
