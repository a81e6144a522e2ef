"""The scheduled reconcile: compare the ledgers of recently finished jobs with AWS IoT.

Every run lists the jobs (``JobStore.list_jobs``, newest first) that reached COMPLETED,
COMPLETED_WITH_ERRORS, UNDONE or UNDO_PARTIAL within the lookback (their last change, ``updated_at``:
the completion, or the undo's end) and reconciles each (`layer_utils.reconcile.reconcile_job`). The
reads go straight to IoT, not through the rate limiter, so a run is bounded: it checks at most
``max_entries`` ledger entries and skips (and logs) a job that would exceed them. It emits
``ReconcileDrift`` (the number of drifts, 0 when none, so the alarm sees data) and
``ReconcileJobsChecked``, and logs one line per drifting job.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from layer_utils.env import env_positive_int, env_required
from layer_utils.jobs import Job, JobStatus, JobStore
from layer_utils.reconcile import reconcile_job
from layer_utils.telemetry import logger

RECONCILE_DRIFT = "ReconcileDrift"
RECONCILE_JOBS_CHECKED = "ReconcileJobsChecked"

Emitter = Callable[[str, float, Mapping[str, str] | None], None]
"""Emits a count metric: name, value and extra dimensions (None for none)."""

RECONCILED_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.UNDONE, JobStatus.UNDO_PARTIAL}
)


@dataclass(frozen=True)
class RecentDriftConfig:
    """Which jobs a run checks (finished within ``lookback``) and how many ledger entries at most."""

    jobs_table: str
    lookback: timedelta = timedelta(hours=24)
    max_entries: int = 2000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RecentDriftConfig:
        """Read the configuration from the function's environment (``os.environ`` when None).

        The variables are ``THINGPRESS_JOBS_TABLE``, ``THINGPRESS_RECONCILE_LOOKBACK_HOURS`` (default
        24) and ``THINGPRESS_RECONCILE_MAX_ENTRIES`` (default 2000).

        Returns:
            The configuration.

        Raises:
            ValueError: naming the variable that is missing or invalid.

        """
        env = os.environ if environ is None else environ
        return cls(
            jobs_table=env_required(env, "THINGPRESS_JOBS_TABLE"),
            lookback=timedelta(hours=env_positive_int(env, "THINGPRESS_RECONCILE_LOOKBACK_HOURS", 24)),
            max_entries=env_positive_int(env, "THINGPRESS_RECONCILE_MAX_ENTRIES", 2000),
        )


@dataclass
class RecentDriftResult:
    """What one run did: the jobs checked, the drifting ones (id, key, counts) and the jobs skipped."""

    checked: list[str] = field(default_factory=list)
    entries: int = 0
    drifts: int = 0
    drifting: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (the handler's response)."""
        return {
            "checked": list(self.checked),
            "entries": self.entries,
            "drifts": self.drifts,
            "drifting": list(self.drifting),
            "skipped": list(self.skipped),
        }


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def finished_recently(job: Job, since: datetime) -> bool:
    """Whether ``job`` is completed or undone and its last change (completion, undo) is after ``since``."""
    if job.status not in RECONCILED_STATUSES:
        return False
    last = _moment(job.updated_at or job.completed_at)
    return last is not None and last >= since


def reconcile_recent_jobs(
    iot: Any,
    store: JobStore,
    config: RecentDriftConfig,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    emit: Emitter,
) -> RecentDriftResult:
    """Reconcile the jobs finished within the lookback, newest first, up to ``max_entries`` entries.

    Args:
        iot: An IoT client.
        store: The job store.
        config: The lookback and the entry budget.
        clock: The current time.
        emit: Emits ``ReconcileDrift`` and ``ReconcileJobsChecked``.

    Returns:
        What was checked, the drifting jobs and the jobs skipped for the budget.

    Raises:
        AwsOperationError: the jobs or a ledger cannot be read.
        botocore.exceptions.ClientError: an IoT read failed.

    """
    since = clock() - config.lookback
    result = RecentDriftResult()
    for job in store.list_jobs():
        if not finished_recently(job, since):
            continue
        if result.entries + job.entries_known > config.max_entries:
            result.skipped.append(job.job_id)
            continue
        found = reconcile_job(iot, store, job)
        result.checked.append(job.job_id)
        result.entries += found.entries
        if found.drifts:
            result.drifts += len(found.drifts)
            drifting = {"job_id": job.job_id, "key": job.key, "status": str(job.status), **found.counts()}
            result.drifting.append(drifting)
            logger.warning("Job drifted from its ledger", extra=drifting)
    if result.skipped:
        logger.warning(
            "Jobs not reconciled in this run: they exceed its entry budget",
            extra={"max_entries": config.max_entries, "skipped": result.skipped[:50]},
        )
    emit(RECONCILE_DRIFT, result.drifts, None)
    emit(RECONCILE_JOBS_CHECKED, len(result.checked), None)
    return result
