"""BulkImporter domain logic: one import message in, certificates in AWS IoT, one job outcome out.

For each SQS record (one import message, see ``layer_utils.messages``): the entries are imported
concurrently (``THINGPRESS_IMPORT_THREADS`` threads sharing the per-API rate limiter) with
:func:`bulk_importer.iot_import.import_certificate`, and no new entry starts once the time budget
runs low (the rest are *spilled*); the settled entries (imported, or failed for good, including
``exhausted`` after ``THINGPRESS_MAX_ENTRY_ATTEMPTS`` tries) are recorded with ONE
``JobStore.record_outcome`` call for the chunk; every unsettled entry goes back to the import queue
as ONE smaller message; ``JobStore.try_complete`` finishes the job when its last entry settles.
Nothing is ever dropped: if the re-enqueue fails, the record fails and SQS delivers it again.

Before any IoT call, the job is read (one GetItem) and :func:`bulk_importer.admission.refusal`
checks it; a refused message makes no IoT call and is dropped with a warning and a metric.

Why the unsettled entries travel as ONE re-enqueued message, recorded before it is sent, and how
its ``<chunk>.r<n>`` name makes redeliveries count every entry exactly once: docs/ARCHITECTURE.md,
"Messages".

The chunk's outcome item also carries each entry's ledger (what it made and found in AWS IoT,
docs/ARCHITECTURE.md, "Ledger"), including the partial ledger of entries re-enqueued after an
attempt that changed something. DynamoDB is called per record, never per certificate: the job read,
``record_outcome`` and ``try_complete``, plus one read of the chunk item on a redelivery. The
re-enqueued child is signed with the job's secret from that read.
"""

from __future__ import annotations

import math
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bulk_importer.admission import refusal
from bulk_importer.config import ImporterConfig, Services
from bulk_importer.iot_import import (
    CIRCUIT_OPEN,
    ArnContext,
    ImportOutcome,
    OutcomeStatus,
    import_certificate,
)
from layer_utils.aws_utils import ThingpressError
from layer_utils.jobs import FailureRecord, ImportedRecord, Job, JobNotFoundError
from layer_utils.jobstore.ledger import scope_of
from layer_utils.messages import (
    ImportEntry,
    ImportMessage,
    decode_message,
    encode_import_message,
    sign_import_message,
)
from layer_utils.protected import SEND_OPERATION, protected_call
from layer_utils.telemetry import (
    CERTIFICATES_FAILED,
    CERTIFICATES_IMPORTED,
    DIM_ERROR_CLASS,
    DIM_REASON,
    FAILURE_EXHAUSTED,
    IMPORT_MESSAGES_REFUSED,
    logger,
)

MAX_DELAY_SECONDS = 900
"""The SQS maximum for ``DelaySeconds``."""


# Values of the CertificatesFailed ErrorClass dimension (docs/ARCHITECTURE.md, "Metrics").
_FAILURE_DIMENSIONS = frozenset(
    {"invalid_input", "conflict", "not_found", "access_denied", "send_failed", FAILURE_EXHAUSTED, "unknown"}
)
_GENERATION = re.compile(r"\.r\d+")


class UnusableMessageError(ThingpressError):
    """The record's body is not an import message (not JSON, another schema or malformed)."""


class RequeueError(ThingpressError):
    """SQS refused the message that re-enqueues a record's unsettled entries."""

    retryable = True


@dataclass(frozen=True)
class RecordResult:
    """What processing one import message did.

    ``recorded`` is False when the chunk had been recorded before (a redelivery: nothing was counted
    again). ``requeued`` entries went back to the queue in ``requeue_chunk`` with
    ``requeue_attempt`` after ``delay_seconds``; ``spilled`` of them were never started.
    ``completed`` is True when this record finished the job. ``refused`` names why the message was
    refused before any IoT call (``unknown_job``, ``not_importing``, ``bad_mac``), else None.
    """

    job_id: str
    chunk: str
    attempt: int
    imported: int
    failed: int
    requeued: int
    spilled: int
    recorded: bool
    requeue_chunk: str | None
    requeue_attempt: int | None
    delay_seconds: int
    completed: bool
    iot_calls: int
    refused: str | None = None


def deadline(remaining_ms: Callable[[], int], margin_ms: int) -> Callable[[], bool]:
    """Return a check that is True once fewer than ``margin_ms`` milliseconds remain.

    ``remaining_ms`` is ``context.get_remaining_time_in_millis``. The margin is capped at a quarter of
    the time remaining now, so a short invocation still spends most of its time importing.

    """
    effective = min(margin_ms, remaining_ms() // 4)
    return lambda: remaining_ms() < effective


def requeue_chunk_name(chunk: str) -> str:
    """Return the chunk name of the message re-enqueueing part of ``chunk``.

    ``000012`` gives ``000012.r1``, ``000012.r1`` gives ``000012.r1.r2``. The name depends on the
    chunk name alone, so every run over the same message names its child the same way.
    """
    return f"{chunk}.r{len(_GENERATION.findall(chunk)) + 1}"


def backoff_seconds(attempt: int, base: float, rng: random.Random) -> int:
    """Return the SQS delay before try number ``attempt`` (1 for the first retry).

    The delay is exponential (``base * 2**(attempt - 1)``), capped at 900 s, with jitter: a uniform
    draw between half and all of it, at least one second.
    """
    ceiling = min(float(MAX_DELAY_SECONDS), base * 2.0 ** max(0, attempt - 1))
    return max(1, min(MAX_DELAY_SECONDS, math.ceil(rng.uniform(ceiling / 2, ceiling))))


def _entry_key(locator: str, certificate_id: str | None) -> tuple[str, str | None]:
    return locator, certificate_id


def _import_safely(
    services: Services, message: ImportMessage, entry: ImportEntry, arns: ArnContext, adopt: bool
) -> ImportOutcome:
    """Import one entry; an unexpected exception becomes a retryable ``unknown`` outcome, logged."""
    try:
        return import_certificate(
            services.iot,
            entry,
            message.settings,
            arns=arns,
            limiter=services.limiter,
            registry=services.registry,
            adopt=adopt,
        )
    except Exception as error:
        logger.exception(
            "Unexpected error while importing an entry",
            extra={"locator": entry.locator, "chunk": message.chunk},
        )
        reason = f"{entry.locator}: unexpected error while importing ({type(error).__name__}: {error})."
        return ImportOutcome(entry, OutcomeStatus.RETRY, 0, None, "unknown", reason)


def _run_entries(
    services: Services,
    message: ImportMessage,
    arns: ArnContext,
    config: ImporterConfig,
    out_of_time: Callable[[], bool],
) -> list[ImportOutcome | None]:
    """Import the entries on a thread pool, in order; entries never started are None (spilled)."""
    entries = message.entries
    outcomes: list[ImportOutcome | None] = [None] * len(entries)
    lock = threading.Lock()
    position = [0]

    def worker() -> None:
        while True:
            with lock:
                index = position[0]
                if index >= len(entries) or out_of_time():
                    return
                position[0] += 1
            outcomes[index] = _import_safely(
                services, message, entries[index], arns, config.adopt_existing_things
            )

    workers = max(1, min(config.threads, len(entries)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import") as pool:
        for future in [pool.submit(worker) for _ in range(workers)]:
            future.result()
    return outcomes


def _send(services: Services, config: ImporterConfig, message: ImportMessage, delay: int) -> None:
    """Send the re-enqueue message through the SQS circuit; raise when it was not accepted."""

    def send() -> None:
        response = services.sqs.send_message_batch(
            QueueUrl=config.import_queue_url,
            Entries=[{"Id": "requeue", "MessageBody": encode_import_message(message), "DelaySeconds": delay}],
        )
        failed = response.get("Failed") or []
        if failed:
            detail = failed[0]
            raise RequeueError(
                f"SQS refused re-enqueued chunk {message.chunk} of job {message.job_id} "
                f"({detail.get('Code')}: {detail.get('Message', '')})."
            )

    protected_call(
        services.registry, SEND_OPERATION, send, context={"job_id": message.job_id, "chunk": message.chunk}
    )


def _delay_for(
    services: Services, config: ImporterConfig, attempt: int, retried: Sequence[ImportOutcome]
) -> int:
    """Backoff for a child carrying retryable failures; at least the open time of a tripped circuit."""
    delay = backoff_seconds(attempt, config.base_delay_seconds, services.rng)
    for outcome in retried:
        if outcome.error_class == CIRCUIT_OPEN and outcome.api:
            timeout = math.ceil(services.registry.config(f"iot:{outcome.api}").timeout)
            delay = max(delay, min(MAX_DELAY_SECONDS, timeout))
    return delay


def _emit_metrics(services: Services, imported: int, failures: Sequence[FailureRecord]) -> None:
    if imported:
        services.emit(CERTIFICATES_IMPORTED, imported, None)
    by_class = Counter(
        failure.error_class if failure.error_class in _FAILURE_DIMENSIONS else "unknown"
        for failure in failures
    )
    for error_class, count in sorted(by_class.items()):
        services.emit(CERTIFICATES_FAILED, count, {DIM_ERROR_CLASS: error_class})


def decode_import_message(body: str) -> ImportMessage:
    """Decode a record body that must be an import message.

    Returns:
        The import message.

    Raises:
        UnusableMessageError: one sentence saying why the body is not an import message.

    """
    try:
        message = decode_message(body)
    except ValueError as error:
        raise UnusableMessageError(
            f"The import queue record is not a valid import message: {error}"
        ) from None
    if not isinstance(message, ImportMessage):
        raise UnusableMessageError(
            f"The import queue received a {type(message).__name__} for job {message.job_id}; "
            "only import messages belong there."
        )
    return message


def _refused(services: Services, message: ImportMessage, job: Job | None, reason: str) -> RecordResult:
    """Drop a refused message: a warning, the metric, and a result that says nothing was done."""
    logger.warning(
        "Import message refused before any IoT call; it is dropped",
        extra={
            "job_id": message.job_id,
            "chunk": message.chunk,
            "reason": reason,
            "job_status": None if job is None else str(job.status),
            "entries": len(message.entries),
        },
    )
    services.emit(IMPORT_MESSAGES_REFUSED, 1, {DIM_REASON: reason})
    return RecordResult(
        job_id=message.job_id,
        chunk=message.chunk,
        attempt=message.attempt,
        imported=0,
        failed=0,
        requeued=0,
        spilled=0,
        recorded=False,
        requeue_chunk=None,
        requeue_attempt=None,
        delay_seconds=0,
        completed=False,
        iot_calls=0,
        refused=reason,
    )


def handle_import_body(
    body: str,
    services: Services,
    config: ImporterConfig,
    *,
    arns: ArnContext,
    out_of_time: Callable[[], bool],
) -> RecordResult:
    """Process one import queue record: import, record the outcome, re-enqueue the rest, complete.

    ``arns`` says where the IoT resources live; ``out_of_time`` says when to stop starting entries.

    Returns:
        What happened (``refused`` set when the message was dropped before any IoT call).

    Raises:
        UnusableMessageError: the body is not an import message.
        JobNotFoundError: the job disappeared between the check and the recording.
        AwsOperationError: the outcome could not be recorded (also ``CircuitOpenError`` and
            ``RequeueError`` when the rest could not be re-enqueued): the caller must then fail the
            record so SQS delivers it again (processing is idempotent).

    """
    message = decode_import_message(body)
    logger.set_correlation_id(message.job_id)
    job = services.jobs.get_job(message.job_id)
    refused = refusal(message, job)
    if refused is not None or job is None:
        return _refused(services, message, job, refused or "unknown_job")
    outcomes = _run_entries(services, message, arns, config, out_of_time)
    services.calls_done()
    exhausted_at = message.attempt + 1 >= config.max_entry_attempts

    imported: list[ImportedRecord] = []
    failures: list[FailureRecord] = []
    partial: list[ImportedRecord] = []
    pending: list[int] = []
    scope = scope_of(message.settings.policies, message.settings.thing_groups, message.settings.thing_type)
    for index, (entry, outcome) in enumerate(zip(message.entries, outcomes, strict=True)):
        ledger = None if outcome is None else outcome.ledger(scope)
        if outcome is None:
            pending.append(index)
        elif outcome.status is OutcomeStatus.IMPORTED:
            imported.append(
                ImportedRecord(
                    entry.locator, entry.thing_name, entry.certificate_id, entry.name_source, ledger
                )
            )
        elif outcome.status is OutcomeStatus.FAILED:
            failures.append(
                FailureRecord(
                    entry.locator,
                    entry.certificate_id,
                    outcome.reason or "",
                    outcome.error_class or "",
                    entry.thing_name,
                    ledger,
                )
            )
        elif exhausted_at:
            reason = f"{(outcome.reason or entry.locator).removesuffix('.')}; gave up after "
            reason += f"{message.attempt + 1} attempts."
            failures.append(
                FailureRecord(
                    entry.locator, entry.certificate_id, reason, FAILURE_EXHAUSTED, entry.thing_name, ledger
                )
            )
        else:
            pending.append(index)
            if ledger:
                partial.append(
                    ImportedRecord(entry.locator, entry.thing_name, entry.certificate_id, None, ledger)
                )

    try:
        recorded = services.jobs.record_outcome(
            message.job_id,
            message.chunk,
            imported,
            failures,
            scope=scope,
            partial=[record.to_dict() for record in partial],
        )
    except JobNotFoundError:
        logger.error(
            "Job of an import message does not exist; the record will reach the dead-letter queue",
            extra={"job_id": message.job_id, "chunk": message.chunk},
        )
        raise
    if not recorded:
        settled = services.jobs.recorded_entries(message.job_id, message.chunk)
        pending = [
            index
            for index, entry in enumerate(message.entries)
            if _entry_key(entry.locator, entry.certificate_id) not in settled
        ]
        logger.info(
            "Chunk was recorded before (redelivery): nothing counted again",
            extra={"job_id": message.job_id, "chunk": message.chunk, "unsettled": len(pending)},
        )

    requeue_chunk: str | None = None
    requeue_attempt: int | None = None
    delay = 0
    spilled = sum(1 for index in pending if outcomes[index] is None)
    if pending:
        retried = [
            outcome
            for index in pending
            if (outcome := outcomes[index]) is not None and outcome.status is OutcomeStatus.RETRY
        ]
        requeue_chunk = requeue_chunk_name(message.chunk)
        requeue_attempt = message.attempt + 1 if retried else message.attempt
        delay = _delay_for(services, config, requeue_attempt, retried) if retried else 0
        child = ImportMessage(
            job_id=message.job_id,
            chunk=requeue_chunk,
            settings=message.settings,
            entries=tuple(message.entries[index] for index in pending),
            attempt=requeue_attempt,
        )
        child = sign_import_message(child, job.secret or "")
        _send(services, config, child, delay)

    if recorded:
        _emit_metrics(services, len(imported), failures)
        for failure in failures:
            logger.warning(
                failure.reason, extra={"locator": failure.locator, "error_class": failure.error_class}
            )
    completed = services.jobs.try_complete(message.job_id) is not None
    result = RecordResult(
        job_id=message.job_id,
        chunk=message.chunk,
        attempt=message.attempt,
        imported=len(imported) if recorded else 0,
        failed=len(failures) if recorded else 0,
        requeued=len(pending),
        spilled=spilled,
        recorded=recorded,
        requeue_chunk=requeue_chunk,
        requeue_attempt=requeue_attempt,
        delay_seconds=delay,
        completed=completed,
        iot_calls=sum(outcome.calls for outcome in outcomes if outcome is not None),
    )
    logger.info("Import message processed", extra=dict(result.__dict__))
    return result
