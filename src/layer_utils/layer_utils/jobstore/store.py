"""The job store: the job's lifecycle writes, completion and the report.

Every status change is checked against the transition table (``lifecycle.LIFECYCLE``), which also
gives each write its DynamoDB status condition. The protocol is described in docs/ARCHITECTURE.md,
"Jobs".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.aws_utils import handle_aws_error
from layer_utils.jobstore import report as reports
from layer_utils.jobstore.lifecycle import INITIAL_STATUS, JobStatus, Step, check, status_condition
from layer_utils.jobstore.model import (
    JOB_SK,
    MAX_WARNINGS,
    Job,
    isoformat,
    job_id_for,
    shorten,
)
from layer_utils.jobstore.table import is_conditional_failure
from layer_utils.jobstore.undo import UndoJournal
from layer_utils.messages import new_job_secret
from layer_utils.telemetry import MANIFESTS_COMPLETED, MANIFESTS_FAILED, logger


class JobStore(UndoJournal):
    """Reads and writes jobs in the JobsTable and writes their reports to S3.

    Every method raises ``AwsOperationError`` when DynamoDB or S3 fails.
    """

    def _step(
        self,
        job_id: str,
        step: Step,
        expression: str,
        values: dict[str, Any],
        *,
        also: str = "",
        total: bool = False,
    ) -> Job | None:
        """UpdateItem if the status is a source of ``step`` (and ``also``); None when the condition failed."""
        condition = status_condition(step, values)
        return self._update(
            job_id,
            expression,
            condition=f"{condition} AND {also}" if also else condition,
            names={"#status": "status", "#total": "total"} if total else {"#status": "status"},
            values=values,
        )

    def create_job(
        self,
        bucket: str,
        key: str,
        version: str,
        *,
        settings: Mapping[str, Any] | None = None,
        vendor: str | None = None,
        sequencer: str | None = None,
    ) -> tuple[bool, Job]:
        """Create the job of a manifest version unless it exists (the S3-event idempotency key).

        ``version`` is the version id or ETag; ``vendor`` is given when known; ``sequencer`` is the S3
        event's, which orders the versions of one key (``Job.rank``).

        Returns:
            ``(True, new job)`` or ``(False, existing job)``.

        """
        job_id = job_id_for(bucket, key, version)
        now = isoformat(self._now())
        item: dict[str, Any] = {
            "pk": job_id,
            "sk": JOB_SK,
            "bucket": bucket,
            "key": key,
            "version": version,
            "status": str(INITIAL_STATUS),
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
        if sequencer:
            item["sequencer"] = sequencer
        try:
            self._ddb.put_item(
                TableName=self.table_name,
                Item=self._ser(item),
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if not is_conditional_failure(error):
                handle_aws_error(error, "dynamodb:PutItem", {"job_id": job_id})
            old: Mapping[str, Any] | None = error.response.get("Item")  # type: ignore[assignment]
            existing = Job.from_item(self._deser(old)) if old else self.get_job(job_id)
            if existing is None:  # deleted between the put and the read: a TTL race, try again
                return self.create_job(
                    bucket, key, version, settings=settings, vendor=vendor, sequencer=sequencer
                )
            return False, existing
        except BotoCoreError as error:
            handle_aws_error(error, "dynamodb:PutItem", {"job_id": job_id})
        return True, Job.from_item(item)

    def claim_parse(self, job_id: str, owner: str, lease_until: datetime) -> Job | None:
        """Take the parsing lease of a job.

        Succeeds when the job is RECEIVED or PARSING and the lease is free, expired or held live by
        ``owner``. Taking over an expired lease (its holder died without finishing or releasing it)
        adds one to ``lease_expiries``, which the sweep compares with its maximum; that path costs a
        second UpdateItem, as does finding another invocation's live lease. The first claim gives the job
        its secret, which signs its import messages (later claims keep it).

        Returns:
            The job (status PARSING, with its checkpoint), or None when another live invocation holds the
            lease or the job is past parsing.

        """
        now = self._now()
        values: dict[str, Any] = {
            ":parsing": str(JobStatus.PARSING),
            ":owner": owner,
            ":until": int(lease_until.timestamp()),
            ":epoch": int(now.timestamp()),
            ":now": isoformat(now),
            ":secret": new_job_secret(),
        }
        claim = "SET #status = :parsing, lease_owner = :owner, lease_until = :until, updated_at = :now, "
        claim += "secret = if_not_exists(secret, :secret)"
        free = "(attribute_not_exists(lease_owner) OR (lease_owner = :owner AND lease_until >= :epoch))"
        claimed = self._step(job_id, Step.CLAIM_PARSE, claim, values, also=free)
        if claimed is not None:
            return claimed
        values[":one"] = 1
        return self._step(
            job_id, Step.CLAIM_PARSE, f"{claim} ADD lease_expiries :one", values, also="lease_until < :epoch"
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

        ``checkpoint`` is a JSON-like mapping the provider defines; ``release=True`` gives the lease up
        (before a continuation). ``vendor``, ``settings`` and ``warnings`` (sentences for the report, at
        most ``MAX_WARNINGS``, each shortened) are recorded when given.

        Returns:
            False when ``owner`` no longer holds the lease (another invocation took over: stop parsing).

        """
        sets = ["checkpoint = :checkpoint", "updated_at = :now"]
        values: dict[str, Any] = {
            ":checkpoint": dict(checkpoint),
            ":now": isoformat(self._now()),
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
        return (
            self._step(job_id, Step.SAVE_CHECKPOINT, expression, values, also="lease_owner = :owner")
            is not None
        )

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

        ``total`` counts every manifest entry, including failures and duplicates (already recorded as
        ``PARSE#`` items). ``reason`` is given when the manifest broke off part-way: the entries before it
        are still imported and the job then ends FAILED with that reason.

        Returns:
            The job, or None when ``owner`` lost the lease.

        """
        values: dict[str, Any] = {
            ":importing": str(JobStatus.IMPORTING),
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
        return self._step(
            job_id,
            Step.MARK_PARSED,
            "SET #status = :importing, parsed = :true, #total = :total, checkpoint = :checkpoint,"
            f" updated_at = :now{extra} REMOVE lease_owner, lease_until",
            values,
            also="lease_owner = :owner",
            total=True,
        )

    def try_complete(self, job_id: str) -> Job | None:
        """Finish the job if every entry is settled; safe to call after every batch by anyone.

        Claims REPORTING with ``#status = IMPORTING AND parsed = true AND settled = #total`` (an
        attribute-to-attribute comparison, which DynamoDB and moto support), writes the report and
        sets the final status. A caller that finds REPORTING (a crashed winner) finishes it too.

        Returns:
            The final job when this call set the final status (it emitted ``ManifestsCompleted``, or
            ``ManifestsFailed`` for a manifest that broke off part-way), else None.

        """
        values: dict[str, Any] = {
            ":reporting": str(JobStatus.REPORTING),
            ":true": True,
            ":now": isoformat(self._now()),
        }
        job = self._step(
            job_id,
            Step.CLAIM_REPORT,
            "SET #status = :reporting, completed_at = :now, updated_at = :now",
            values,
            also="parsed = :true AND settled = #total",
            total=True,
        )
        if job is None:
            job = self.get_job(job_id)
            if job is None or job.status != JobStatus.REPORTING:
                return None
            logger.info("Job found in REPORTING: writing its report again", extra={"job_id": job_id})
        return self._finish(job)

    def _finish(self, job: Job) -> Job | None:
        final = job.outcome_status
        check(Step.FINISH, job.status, final)
        report_key = self.write_report(job, status=final)
        values: dict[str, Any] = {
            ":final": str(final),
            ":report": report_key,
            ":now": isoformat(self._now()),
        }
        finished = self._step(
            job.job_id, Step.FINISH, "SET #status = :final, report_key = :report, updated_at = :now", values
        )
        if finished is None:
            return None
        self._emit(MANIFESTS_FAILED if final == JobStatus.FAILED else MANIFESTS_COMPLETED)
        logger.info(
            "Job finished",
            extra={
                "job_id": job.job_id,
                "status": str(final),
                "imported": finished.succeeded,
                "failed": finished.failed,
                "duplicates": finished.duplicates,
                "report_key": report_key,
            },
        )
        return finished

    def fail_job(self, job_id: str, reason: str) -> Job | None:
        """Mark a job FAILED with ``reason`` (one English sentence) and write its report.

        Only a job that is not final and not REPORTING can fail.

        Returns:
            The failed job when this call made the transition (it emitted ``ManifestsFailed``), else None.

        Raises:
            AwsOperationError: AWS failed (the job may then be FAILED without a report: ``ensure_report``
                repairs that on redelivery).

        """
        values: dict[str, Any] = {
            ":failed": str(JobStatus.FAILED),
            ":reason": shorten(reason),
            ":now": isoformat(self._now()),
        }
        job = self._step(
            job_id,
            Step.FAIL,
            "SET #status = :failed, reason = :reason, completed_at = :now, updated_at = :now"
            " REMOVE lease_owner, lease_until",
            values,
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
        snapshot is left alone. ``reason`` is one English sentence.

        Returns:
            The failed job when this call failed it (it emitted ``ManifestsFailed``), else None.

        Raises:
            ValueError: the job is REPORTING or final.
            AwsOperationError: AWS failed.

        """
        check(Step.ABANDON, job.status, JobStatus.FAILED)
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
        for the redriven messages to make progress.

        Returns:
            The job, or None when it does not exist or is final.

        """
        values: dict[str, Any] = {":now": isoformat(self._now()), ":zero": 0}
        expression = "SET updated_at = :now, lease_expiries = :zero"
        return self._step(job_id, Step.RESTART_PROGRESS_CLOCK, expression, values)

    def ensure_report(self, job: Job) -> Job:
        """Write the report of a final job that has none yet (``report_key`` unset).

        Returns:
            The job, with its report key.

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
        """Return ``report.build_report`` of a job's counters and outcome items (``status`` overrides)."""
        return reports.build_report(job, self.iter_outcome_items(job.job_id), status)

    def write_report(self, job: Job, status: JobStatus | None = None) -> str:
        """Write the job's own report, then the pointer if no newer version's report holds it.

        Returns:
            The job's report key (``report.put_job_report``; the pointer: ``report.publish_latest``).

        """
        body = reports.report_body(self.build_report(job, status))
        bucket = self.report_bucket(job.bucket)
        key = reports.put_job_report(self._s3, bucket, job, body)
        reports.publish_latest(self._s3, bucket, job, body)
        return key

    def latest_job_id(self, bucket: str, manifest_key: str) -> str | None:
        """Return the id of the job whose report is the latest of ``manifest_key`` (None before any)."""
        return reports.latest_job_id(self._s3, self.report_bucket(bucket), bucket, manifest_key)
