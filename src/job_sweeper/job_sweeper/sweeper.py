"""The JobSweeper domain: find jobs that will never finish on their own and finish them.

A job is stuck when it is not final and either

- its parsing lease expired ``max_lease_expiries`` times (the provider died on the manifest again
  and again: out of memory, out of time), or
- it made no progress (``updated_at``: every counter, checkpoint, lease and status change sets it)
  for ``stall_after``; this also catches jobs whose intake or import messages went to a DLQ,

and no provider holds its parsing lease live. A stuck job whose entries all settled only missed its
completion (REPORTING after a crash, or IMPORTING with ``settled = total``): it is completed as usual.
Any other stuck job is failed as the Scan saw it (``JobStore.abandon_job``, conditional on nothing
having changed since): the reason names why, the entries that had not settled are counted as
failed, and its report is written with every outcome recorded so far. The sweep counts the jobs it
finished in ``JobsSwept``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from layer_utils.aws_utils import AwsOperationError
from layer_utils.env import env_positive_int, env_required
from layer_utils.jobs import Job, JobStatus, JobStore
from layer_utils.telemetry import JOBS_SWEPT, logger

Emitter = Callable[[str, float, Mapping[str, str] | None], None]
"""Emits a count metric: name, value and extra dimensions (None for none)."""


@dataclass(frozen=True)
class SweepConfig:
    """When the sweep gives up on a job: after ``stall_after`` without progress, or ``max_lease_expiries``."""

    jobs_table: str
    stall_after: timedelta = timedelta(minutes=480)
    max_lease_expiries: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SweepConfig:
        """Read the configuration from the function's environment (``os.environ`` when None).

        The variables are ``THINGPRESS_JOBS_TABLE``, ``THINGPRESS_STALLED_JOB_MINUTES`` (default 480)
        and ``THINGPRESS_MAX_LEASE_EXPIRIES`` (default 10).

        Returns:
            The configuration.

        Raises:
            ValueError: naming the variable that is missing or invalid.

        """
        env = os.environ if environ is None else environ
        return cls(
            jobs_table=env_required(env, "THINGPRESS_JOBS_TABLE"),
            stall_after=timedelta(minutes=env_positive_int(env, "THINGPRESS_STALLED_JOB_MINUTES", 480)),
            max_lease_expiries=env_positive_int(env, "THINGPRESS_MAX_LEASE_EXPIRIES", 10),
        )


@dataclass(frozen=True)
class SweptJob:
    """A job the sweep finished: its id, manifest key, status before and after, and the reason."""

    job_id: str
    key: str
    was: str
    status: str
    reason: str | None


@dataclass
class SweepResult:
    """What one sweep did: how many unfinished jobs it examined and the ones it finished."""

    examined: int = 0
    swept: list[SweptJob] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # ids of stuck jobs an AWS error kept unfinished

    def to_dict(self) -> dict[str, object]:
        """Return the JSON form (the handler's response and the CLI's output)."""
        return {
            "examined": self.examined,
            "swept": [job.__dict__ for job in self.swept],
            "failed": list(self.failed),
        }


def stuck_because(job: Job, config: SweepConfig, now: datetime) -> str | None:
    """Return why ``job`` is stuck at ``now`` (a clause such as "no progress since …"), or None.

    A final job, a job whose parsing lease is live, and a job that progressed within
    ``config.stall_after`` with fewer than ``config.max_lease_expiries`` lease expiries are not stuck.
    """
    if job.is_final or (job.lease_until is not None and job.lease_until >= int(now.timestamp())):
        return None
    parsing = job.status in (JobStatus.RECEIVED, JobStatus.PARSING)
    if parsing and job.lease_expiries >= config.max_lease_expiries:
        return f"the parse lease expired {job.lease_expiries} times"
    last = job.updated_at or job.created_at
    if last is None:
        return "it has no record of any progress"
    if datetime.fromisoformat(last.replace("Z", "+00:00")) <= now - config.stall_after:
        return f"no progress since {last}"
    return None


def sweep_reason(job: Job, cause: str) -> str:
    """Return the reason (one sentence) a stuck job fails with: the cause and its unsettled entries."""
    unsettled = job.entries_known - job.settled
    if unsettled == 1:
        return f"The job was stopped because {cause}; 1 entry that had not settled is counted as failed."
    if unsettled:
        return (
            f"The job was stopped because {cause}; {unsettled} entries that had not settled are counted"
            " as failed."
        )
    return f"The job was stopped because {cause}."


def finish_stuck_job(store: JobStore, job: Job, cause: str) -> Job | None:
    """Bring one stuck job to a final status.

    A job whose entries all settled is completed as usual (``try_complete``); any other is failed
    with ``sweep_reason`` (``JobStore.abandon_job``).

    Returns:
        The final job, or None when it changed under the sweep.

    Raises:
        AwsOperationError: AWS failed.

    """
    settled_all = job.parsed and job.total is not None and job.settled == job.total
    if job.status == JobStatus.REPORTING or (job.status == JobStatus.IMPORTING and settled_all):
        return store.try_complete(job.job_id)
    return store.abandon_job(job, sweep_reason(job, cause))


def sweep_jobs(
    store: JobStore,
    config: SweepConfig,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    emit: Emitter,
) -> SweepResult:
    """Find the stuck jobs of the table and finish them; emit ``JobsSwept`` when any was finished.

    A stuck job that an AWS error kept from finishing is listed in ``failed`` and the sweep goes on
    with the others (the next sweep tries it again).

    Returns:
        What was examined and finished.

    Raises:
        AwsOperationError: the jobs cannot be listed.

    """
    now = clock()
    result = SweepResult()
    for job in store.list_unfinished_jobs():
        result.examined += 1
        cause = stuck_because(job, config, now)
        if cause is None:
            continue
        try:
            finished = finish_stuck_job(store, job, cause)
        except AwsOperationError as error:
            # One job's failure must not keep every later job unfinished, sweep after sweep.
            logger.error(
                "A stuck job could not be finished", extra={"job_id": job.job_id, "error": str(error)}
            )
            result.failed.append(job.job_id)
            continue
        if finished is None:
            logger.info("Stuck job moved before the sweep could finish it", extra={"job_id": job.job_id})
            continue
        result.swept.append(
            SweptJob(job.job_id, job.key, str(job.status), str(finished.status), finished.reason)
        )
        logger.warning(
            "Job swept",
            extra={
                "job_id": job.job_id,
                "key": job.key,
                "was": str(job.status),
                "status": str(finished.status),
                "reason": finished.reason,
            },
        )
    if result.swept:
        emit(JOBS_SWEPT, len(result.swept), None)
    return result
