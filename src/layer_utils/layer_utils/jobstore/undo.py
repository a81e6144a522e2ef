"""The undo journal: an undo's checkpoint on the job item, its per-chunk outcome items and its report.

The protocol is docs/ARCHITECTURE.md, "Undo". ``UndoJournal`` is a base of ``JobStore``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.aws_utils import handle_aws_error
from layer_utils.jobstore.lifecycle import LIFECYCLE, JobStatus, Step, check, status_condition
from layer_utils.jobstore.model import JOB_REPORT_PREFIX, Job, isoformat, natural_key
from layer_utils.jobstore.table import JobTable

UNDO_PREFIX = "UNDO#"
"""Sort key prefix of an undo's per-chunk outcome items: ``UNDO#<run>#<chunk>``."""

UNDO_REPORT_SUFFIX = ".undo.json"


def undo_report_key(job_id: str) -> str:
    """Return the S3 key of a job's undo report: ``reports/jobs/<job id>.undo.json``."""
    return f"{JOB_REPORT_PREFIX}{job_id}{UNDO_REPORT_SUFFIX}"


class UndoJournal(JobTable):
    """An undo's writes to the JobsTable and its report; every method raises ``AwsOperationError``."""

    def report_bucket(self, manifest_bucket: str) -> str:
        """Return the bucket that holds the reports of the manifests of ``manifest_bucket`` (that one)."""
        return manifest_bucket

    def begin_undo(self, job: Job) -> dict[str, Any] | None:
        """Return the undo checkpoint to resume from, starting a new run when the last one finished.

        Returns:
            ``{"run": n, "next": chunk index, "done": False}``, or None when the job cannot be undone
            (its import is not over).

        """
        if job.status not in LIFECYCLE[Step.FINISH_UNDO].sources:
            return None
        current = dict(job.undo or {})
        if current and not current.get("done"):
            return current
        fresh = {
            "run": int(current.get("run", 0)) + 1,
            "next": 0,
            "done": False,
            "started_at": isoformat(self._now()),
        }
        return fresh if self.save_undo_checkpoint(job.job_id, fresh) else None

    def save_undo_checkpoint(self, job_id: str, checkpoint: Mapping[str, Any]) -> bool:
        """Store the undo's checkpoint (``run``, ``next``, ``done``); False when the job cannot be undone."""
        values: dict[str, Any] = {":undo": dict(checkpoint), ":now": isoformat(self._now())}
        condition = status_condition(Step.UNDO_CHECKPOINT, values)
        done = self._update(
            job_id,
            "SET #undo = :undo, updated_at = :now",
            condition=condition,
            names={"#status": "status", "#undo": "undo"},
            values=values,
        )
        return done is not None

    def record_undo_chunk(
        self,
        job_id: str,
        run: int,
        chunk: int,
        *,
        removed: Sequence[str],
        left: Sequence[Mapping[str, Any]],
        kept: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Put the outcome item of one undo chunk (a resumed chunk overwrites it with the same facts)."""
        item = {
            "pk": job_id,
            "sk": f"{UNDO_PREFIX}{run:04d}#{chunk:06d}",
            "removed": list(removed),
            "left": [dict(record) for record in left],
            "kept": [dict(record) for record in kept],
            "recorded_at": isoformat(self._now()),
            "expires_at": self._expires_at(),
        }
        try:
            self._ddb.put_item(TableName=self.table_name, Item=self._ser(item))
        except (ClientError, BotoCoreError) as error:
            handle_aws_error(error, "dynamodb:PutItem", {"job_id": job_id, "sk": item["sk"]})

    def undo_items(self, job_id: str, run: int) -> list[dict[str, Any]]:
        """Return the outcome items of one undo run, in chunk order."""
        prefix = f"{UNDO_PREFIX}{run:04d}#"
        return [item for item in self.iter_outcome_items(job_id) if str(item["sk"]).startswith(prefix)]

    def finish_undo(self, job: Job, checkpoint: Mapping[str, Any]) -> Job | None:
        """Write the undo report and set UNDONE (nothing left) or UNDO_PARTIAL.

        Returns:
            The job, or None when it changed status meanwhile.

        """
        run = int(checkpoint["run"])
        items = self.undo_items(job.job_id, run)
        removed = [action for item in items for action in item.get("removed", [])]
        left = sorted(
            (record for item in items for record in item.get("left", [])),
            key=lambda record: (natural_key(str(record.get("locator", ""))), str(record.get("resource", ""))),
        )
        kept = [record for item in items for record in item.get("kept", [])]
        status = JobStatus.UNDO_PARTIAL if left else JobStatus.UNDONE
        check(Step.FINISH_UNDO, job.status, status)
        report = {
            "job_id": job.job_id,
            "manifest": {"bucket": job.bucket, "key": job.key, "version": job.version},
            "status": str(status),
            "run": run,
            "started_at": checkpoint.get("started_at"),
            "finished_at": isoformat(self._now()),
            "removed": removed,
            "left": left,
            "kept": kept,
        }
        key = undo_report_key(job.job_id)
        try:
            self._s3.put_object(
                Bucket=self.report_bucket(job.bucket),
                Key=key,
                Body=json.dumps(report, indent=1, ensure_ascii=False).encode("utf-8"),
                ContentType="application/json",
            )
        except (ClientError, BotoCoreError) as error:
            handle_aws_error(error, "s3:PutObject", {"job_id": job.job_id, "key": key})
        values: dict[str, Any] = {
            ":status": str(status),
            ":undo": {**checkpoint, "done": True, "removed": len(removed), "left": len(left)},
            ":key": key,
            ":now": isoformat(self._now()),
        }
        condition = status_condition(Step.FINISH_UNDO, values)
        return self._update(
            job.job_id,
            "SET #status = :status, #undo = :undo, undo_report_key = :key, updated_at = :now",
            condition=condition,
            names={"#status": "status", "#undo": "undo"},
            values=values,
        )
