"""The ManifestProvider domain: one manifest from S3 to import messages, with a truthful job record.

For each manifest version (docs/ARCHITECTURE.md, "Flow" and "Jobs"):

1. The job is created with a conditional put (the idempotency key for duplicate S3 events) and the
   parsing lease is claimed, so two deliveries never fan out twice; a stale lease (a crashed
   invocation) is taken over and parsing resumes from the checkpoint.
2. One GetObject reads the body (spooled to a bounded-memory temporary file) and the user metadata
   (per-upload setting overrides). The vendor is the override or ``vendors.detect``.
3. Before anything is sent, every referenced policy, thing group and thing type must exist.
4. Entries stream through validation, thing naming and duplicate detection (after a survey of the
   whole manifest); valid ones are packed
   into import messages and sent with ``SendMessageBatch``; failures and duplicates are recorded in
   bounded ``PARSE#<n>`` items.
5. When the invocation runs short of time the provider checkpoints and sends itself a continuation
   message; at the end it marks the job parsed and tries to complete it.

Determinism is what makes crashes harmless: from a saved checkpoint (entries done, next chunk number,
next parse item number) the same entries always produce the same chunk ids with the same content and
the same ``PARSE#`` items, and recording an outcome twice is a no-op. A checkpoint taken mid-message
is saved in two phases: first the intent (the previous clean point plus the ``boundary`` where the
partial message and parse item are cut), then the partial items are sent, then the clean point. A run
resuming from an intent regenerates everything from the previous clean point with the same cut.

The first run surveys the whole manifest (``EntryEvaluator.survey``: which certificates are valid,
where each first appears, which names they claim) and saves its findings (``findings``); every run
then streams from its checkpoint, and a continuation restores the findings instead of surveying and
counts the entries before its checkpoint unread (``ParseOptions.skip_before``), so it costs only its
new entries. Duplicates and thing-name conflicts are therefore decided with every entry in view,
identically in every continuation; a conflict is reported for both entries. The vendor
parser's own iteration is guarded: an unexpected error ends the manifest with a reason (entries
before it are kept), never the function.

This module is the orchestration; ``spool`` reads the manifest, ``prepare`` decides how to read it,
``stream`` fans it out and ``run`` holds the lease, the checkpoints and the endings.
"""

from __future__ import annotations

from collections.abc import Callable

from layer_utils.jobs import JobStatus
from layer_utils.messages import ContinuationMessage
from layer_utils.telemetry import MANIFESTS_RECEIVED, logger
from manifest_provider.config import ProviderConfig, RunResult, Services
from manifest_provider.intake import ManifestRef, parse_intake_body
from manifest_provider.prepare import prepare_manifest
from manifest_provider.run import LostLease, ManifestRun, lease_until
from manifest_provider.spool import JobFailure, open_manifest
from manifest_provider.stream import ManifestStream

__all__ = ["ProviderConfig", "RunResult", "Services", "attempts_reason", "handle_intake_body"]


def handle_intake_body(
    body: str,
    services: Services,
    config: ProviderConfig,
    *,
    owner: str,
    remaining_ms: Callable[[], int],
    attempt: int = 1,
) -> list[RunResult]:
    """Process one intake queue message: start the manifests an S3 event names, or continue one.

    On the last delivery (``attempt >= config.max_receive_count``) any exception fails the job
    concerned with a reason (``fail_after_attempts``) instead of propagating.

    Args:
        body: the message body.
        services: the services.
        config: the configuration.
        owner: a unique owner id for the parsing lease (the SQS message id).
        remaining_ms: returns the invocation's remaining milliseconds.
        attempt: the delivery number of the message (SQS ``ApproximateReceiveCount``).

    Returns:
        One result per manifest.

    Raises:
        ValueError: the body is none of the intake message kinds.
        AwsOperationError: on earlier deliveries, AWS failed in a way worth retrying (so does whatever
            else processing raised).

    """
    batch = parse_intake_body(body)
    for reason in batch.ignored:
        logger.info("Intake event ignored", extra={"reason": reason})
    final_attempt = attempt if attempt >= config.max_receive_count else None
    subjects: list[ManifestRef | ContinuationMessage] = list(batch.manifests)
    if batch.continuation is not None:
        subjects.append(batch.continuation)
    results: list[RunResult] = []
    for subject in subjects:
        try:
            if isinstance(subject, ManifestRef):
                result = start_manifest(
                    subject,
                    services,
                    config,
                    owner=owner,
                    remaining_ms=remaining_ms,
                    final_attempt=final_attempt,
                )
            else:
                result = continue_manifest(
                    subject,
                    services,
                    config,
                    owner=owner,
                    remaining_ms=remaining_ms,
                    final_attempt=final_attempt,
                )
        except Exception as error:
            if final_attempt is None:
                raise
            result = fail_after_attempts(
                subject, error, services, config, owner=owner, remaining_ms=remaining_ms, attempt=attempt
            )
        results.append(result)
    return results


def attempts_reason(attempts: int, error: BaseException) -> str:
    """Return the reason a job fails with after ``attempts`` failed deliveries ending in ``error``.

    One sentence with the first line of the error's message (at most 200 characters), never a
    traceback.
    """
    lines = str(error).strip().splitlines()
    detail = " ".join(lines[0].split()).rstrip(".") if lines else ""
    if len(detail) > 200:
        detail = detail[:199] + "…"
    return (
        f"The manifest could not be processed after {attempts} attempts: "
        f"{detail or f'an unexpected {type(error).__name__}'}."
    )


def fail_after_attempts(
    subject: ManifestRef | ContinuationMessage,
    error: Exception,
    services: Services,
    config: ProviderConfig,
    *,
    owner: str,
    remaining_ms: Callable[[], int],
    attempt: int,
) -> RunResult:
    """End the job of an intake record whose last delivery failed with ``error`` outside a parse run.

    ``subject`` is the manifest or continuation the record names; ``attempt`` the delivery number. A
    job that does not exist yet is created so that it can carry the reason. A final job gets its
    report if it has none; a parsed job tries completion; a job still parsing is claimed and failed
    like a run that breaks off (``run.ManifestRun.fail``: the entries fanned out before the checkpoint
    still settle), unless another invocation holds its lease live.

    Returns:
        The result.

    Raises:
        Exception: ``error`` itself, when the job cannot be ended either (the record then goes to the
            IntakeDLQ and the sweep finishes the job).

    """
    reason = attempts_reason(attempt, error)
    logger.error(
        "Intake record failed on its last delivery; failing its job",
        extra={"error": reason, "error_type": type(error).__name__, "attempt": attempt},
    )
    try:
        if isinstance(subject, ManifestRef):
            created, job = services.jobs.create_job(
                subject.bucket, subject.key, subject.version, sequencer=subject.sequencer
            )
            if created:
                services.emit(MANIFESTS_RECEIVED, 1, None)
            version_id, etag = subject.version_id, subject.etag
        else:
            found = services.jobs.get_job(subject.job_id)
            if found is None:
                raise error
            job, version_id, etag = found, subject.version_id, subject.etag
        logger.set_correlation_id(job.job_id)
        if job.is_final:
            services.jobs.ensure_report(job)
            return RunResult(job.job_id, "duplicate")
        if job.status in (JobStatus.IMPORTING, JobStatus.REPORTING):
            services.jobs.try_complete(job.job_id)
            return RunResult(job.job_id, "duplicate")
        run = _claim(job.job_id, version_id, etag, services, config, owner=owner, remaining_ms=remaining_ms)
        if run is None:
            return RunResult(job.job_id, "busy")
        return run.fail(reason)
    except Exception as second:
        if second is not error:
            logger.exception("The job could not be failed; the record goes to the dead-letter queue")
        raise error from None


def start_manifest(
    ref: ManifestRef,
    services: Services,
    config: ProviderConfig,
    *,
    owner: str,
    remaining_ms: Callable[[], int],
    final_attempt: int | None = None,
) -> RunResult:
    """Handle the S3 event of one manifest version; duplicates of a started job change nothing.

    ``final_attempt`` is the delivery number on the record's last delivery (see ``ManifestRun``).

    Returns:
        The run result.

    Raises:
        AwsOperationError: AWS failed in a way worth retrying.

    """
    created, job = services.jobs.create_job(ref.bucket, ref.key, ref.version, sequencer=ref.sequencer)
    logger.set_correlation_id(job.job_id)
    if created:
        services.emit(MANIFESTS_RECEIVED, 1, None)
        logger.info("Manifest received", extra={"bucket": ref.bucket, "key": ref.key, "version": ref.version})
    elif job.is_final:
        services.jobs.ensure_report(job)
        return RunResult(job.job_id, "duplicate")
    elif job.status == JobStatus.REPORTING:
        services.jobs.try_complete(job.job_id)
        return RunResult(job.job_id, "duplicate")
    elif job.status == JobStatus.IMPORTING:
        return RunResult(job.job_id, "duplicate")
    return _claim_and_run(
        job.job_id,
        ref.version_id,
        ref.etag,
        services,
        config,
        owner=owner,
        remaining_ms=remaining_ms,
        busy_message="Manifest is being parsed by another invocation",
        final_attempt=final_attempt,
    )


def continue_manifest(
    message: ContinuationMessage,
    services: Services,
    config: ProviderConfig,
    *,
    owner: str,
    remaining_ms: Callable[[], int],
    final_attempt: int | None = None,
) -> RunResult:
    """Handle a continuation message: resume parsing from the job's checkpoint.

    ``final_attempt`` is the delivery number on the record's last delivery (see ``ManifestRun``).

    Returns:
        The run result.

    Raises:
        AwsOperationError: AWS failed in a way worth retrying.

    """
    logger.set_correlation_id(message.job_id)
    return _claim_and_run(
        message.job_id,
        message.version_id,
        message.etag,
        services,
        config,
        owner=owner,
        remaining_ms=remaining_ms,
        busy_message="Continuation needs nothing: the job is past parsing or leased",
        final_attempt=final_attempt,
    )


def _claim_and_run(
    job_id: str,
    version_id: str | None,
    etag: str | None,
    services: Services,
    config: ProviderConfig,
    *,
    owner: str,
    remaining_ms: Callable[[], int],
    busy_message: str,
    final_attempt: int | None,
) -> RunResult:
    """Take the parsing lease and parse; ``busy`` (logging ``busy_message``) when it cannot be taken."""
    run = _claim(
        job_id,
        version_id,
        etag,
        services,
        config,
        owner=owner,
        remaining_ms=remaining_ms,
        final_attempt=final_attempt,
    )
    if run is None:
        logger.info(busy_message, extra={"job_id": job_id})
        return RunResult(job_id, "busy")
    return run_manifest(run)


def _claim(
    job_id: str,
    version_id: str | None,
    etag: str | None,
    services: Services,
    config: ProviderConfig,
    *,
    owner: str,
    remaining_ms: Callable[[], int],
    final_attempt: int | None = None,
) -> ManifestRun | None:
    """Take the parsing lease; return the run on the claimed job, or None when another holds it."""
    claimed = services.jobs.claim_parse(job_id, owner, lease_until(services, config, remaining_ms))
    if claimed is None:
        return None
    return ManifestRun(
        claimed,
        version_id=version_id,
        etag=etag,
        services=services,
        config=config,
        owner=owner,
        remaining_ms=remaining_ms,
        final_attempt=final_attempt,
    )


def run_manifest(run: ManifestRun) -> RunResult:
    """Parse (or continue parsing) the manifest of a claimed run: spool, prepare, stream.

    Returns:
        What happened.

    Raises:
        AwsOperationError: AWS failed in a way worth retrying (the SQS record then fails and is
            redelivered; the next attempt resumes from the checkpoint). On the record's last
            delivery the run fails the job instead (``ManifestRun.fail``) and raises only what
            ending the job raises.

    """
    job = run.job
    stream: ManifestStream | None = None
    try:
        with open_manifest(
            run.services.s3,
            job.bucket,
            job.key,
            version_id=run.start.version_id,
            etag=run.start.etag,
            limit=run.config.limits.max_manifest_bytes,
            memory_bytes=run.config.spool_memory_bytes,
        ) as (source, metadata):
            prepared = prepare_manifest(
                source,
                metadata,
                job_id=job.job_id,
                secret=job.secret or "",
                bucket=job.bucket,
                key=job.key,
                resuming=run.resuming,
                parse_time=run.start.parse_time,
                first_chunk=run.clean_chunk,
                services=run.services,
                config=run.config,
            )
            stream = ManifestStream(run, prepared)
            return stream.stream(source)
    except JobFailure as failure:
        return run.fail(str(failure), stream)
    except LostLease:
        logger.warning("Parsing lease lost to another invocation; stopping", extra={"job_id": job.job_id})
        return run.result("lost_lease")
    except Exception as error:
        if run.final_attempt is None:
            raise
        logger.error(
            "Manifest run failed on the record's last delivery; failing the job",
            extra={"job_id": job.job_id, "error_type": type(error).__name__},
        )
        return run.fail(attempts_reason(run.final_attempt, error), stream)
    finally:
        run.emit_counters()
