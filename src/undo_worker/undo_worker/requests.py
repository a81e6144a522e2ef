"""One undo request from the UndoQueue: parse it, run the undo, continue it in a new message if needed.

Body: ``{"job_id": "<job id>"}`` from an operator (the queue policy admits only them), or
``{"job_id": "<job id>", "run": n}``, the continuation this function sends itself. How a request
ends (docs/ARCHITECTURE.md, "Deployed undo"):

- the run finishes: the job is UNDONE or UNDO_PARTIAL and the undo report is written;
- the invocation is about to run out of time: the run stops between chunks (its checkpoint holds the
  progress) and a continuation ``{"job_id", "run"}`` is sent, so a job of any size is undone in as
  many invocations as it takes, each record acknowledged;
- a throttled or transient failure or an open circuit: if this invocation moved the checkpoint, a
  continuation is sent with a delay; if it made no progress, the record fails and SQS delivers it
  again (after ``maxReceiveCount`` deliveries without progress it goes to the dead-letter queue);
- the job does not exist or cannot be undone (its import is not over), or a continuation of a run
  that is over: one sentence is logged, ``UndoRequestsRefused`` counted and the record acknowledged,
  so it never loops;
- a body that is not an undo request fails the record on every delivery: it reaches the DLQ.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from layer_utils.circuit import CircuitOpenError
from layer_utils.errors import AwsOperationError
from layer_utils.jobs import Job
from layer_utils.telemetry import DIM_REASON, logger
from undo_worker.config import CONTINUE_DELAY_SECONDS, UndoConfig, UndoServices
from undo_worker.undo import UndoRefusedError, UndoResult, undo_job

UNDO_REQUESTS_REFUSED = "UndoRequestsRefused"
"""Metric: undo requests acknowledged without an undo (``Reason``: unknown_job, not_undoable, stale)."""


class UnusableRequestError(ValueError):
    """The body is not an undo request; the sentence says why."""


@dataclass(frozen=True)
class UndoRequest:
    """An undo request: the job, and the run a continuation carries on (None: an operator's request)."""

    job_id: str
    run: int | None = None

    def body(self) -> str:
        """Return the message body of this request."""
        document: dict[str, Any] = {"job_id": self.job_id}
        if self.run is not None:
            document["run"] = self.run
        return json.dumps(document)


def parse_request(body: str) -> UndoRequest:
    """Read an undo request from a message body.

    Returns:
        The request.

    Raises:
        UnusableRequestError: the body is not a JSON object with a job id (and an optional run number).

    """
    try:
        document = json.loads(body)
    except ValueError:
        raise UnusableRequestError("The undo request is not JSON.") from None
    if not isinstance(document, dict):
        raise UnusableRequestError('The undo request must be a JSON object such as {"job_id": "..."}.')
    job_id = document.get("job_id")
    if not isinstance(job_id, str) or not job_id.strip():
        raise UnusableRequestError("The undo request names no job_id.")
    run = document.get("run")
    if run is not None and (isinstance(run, bool) or not isinstance(run, int) or run < 1):
        raise UnusableRequestError(f"The undo request's run must be a positive integer, not {run!r}.")
    return UndoRequest(job_id.strip(), run)


def _progress(job: Job | None) -> tuple[int, int]:
    undo = (job.undo if job else None) or {}
    return int(undo.get("run", 0)), int(undo.get("next", 0))


def _stale(job: Job, request: UndoRequest) -> bool:
    """True for a continuation whose run is over or was superseded (an operator's request never is)."""
    if request.run is None:
        return False
    undo = job.undo or {}
    return int(undo.get("run", 0)) != request.run or bool(undo.get("done"))


def handle_request(
    request: UndoRequest,
    services: UndoServices,
    config: UndoConfig,
    *,
    cert_arn: Callable[[str], str],
    out_of_time: Callable[[], bool],
) -> str:
    """Run one undo request.

    Returns:
        How it ended: ``finished``, ``continued`` (a continuation was sent) or ``refused``.

    Raises:
        AwsOperationError: a failure before any progress (the record is retried by SQS).
        CircuitOpenError: a circuit was open before any progress (likewise).

    """
    jobs = services.jobs
    job = jobs.get_job(request.job_id)
    if job is None:
        return _refuse(services, "unknown_job", f"Undo refused: job {request.job_id} does not exist.")
    if _stale(job, request):
        return _refuse(
            services,
            "stale",
            f"Undo continuation of job {job.job_id} dropped: its run {request.run} is over.",
        )
    before = _progress(job)
    try:
        result = undo_job(
            jobs,
            job.job_id,
            iot=services.iot,
            cert_arn=cert_arn,
            limiter=services.limiter,
            registry=services.registry,
            emit=lambda name, value: services.emit(name, value, None),
            out_of_time=out_of_time,
        )
    except UndoRefusedError as error:
        return _refuse(services, "not_undoable", f"Undo refused: {error}")
    except (AwsOperationError, CircuitOpenError) as error:
        if isinstance(error, AwsOperationError) and not error.retryable:
            raise
        after = _progress(jobs.get_job(job.job_id))
        if after[1] <= (before[1] if after[0] == before[0] else 0):
            raise
        _continue(services, config, UndoRequest(job.job_id, after[0]), delay=CONTINUE_DELAY_SECONDS)
        logger.warning(
            "Undo stopped by a retryable failure after progress; continued in a new message",
            extra={"job_id": job.job_id, "run": after[0], "next_chunk": after[1], "error": str(error)},
        )
        return "continued"
    return _after_run(services, config, job.job_id, result)


def _after_run(services: UndoServices, config: UndoConfig, job_id: str, result: UndoResult) -> str:
    if result.paused:
        _continue(services, config, UndoRequest(job_id, result.run), delay=0)
        logger.info("Undo paused before the deadline; continued in a new message", extra={"run": result.run})
        return "continued"
    logger.info(
        "Undo finished",
        extra={
            "job_id": job_id,
            "status": result.status,
            "removed": len(result.removed),
            "left": len(result.left),
            "kept": len(result.kept),
        },
    )
    return "finished"


def _continue(services: UndoServices, config: UndoConfig, request: UndoRequest, *, delay: int) -> None:
    services.sqs.send_message(QueueUrl=config.undo_queue_url, MessageBody=request.body(), DelaySeconds=delay)


def _refuse(services: UndoServices, reason: str, sentence: str) -> str:
    logger.warning(sentence, extra={"reason": reason})
    services.emit(UNDO_REQUESTS_REFUSED, 1, {DIM_REASON: reason})
    return "refused"
