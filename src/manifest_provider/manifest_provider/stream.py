"""Streaming: a prepared manifest's entries through evaluation into import messages and parse items.

The stream checkpoints through its run (``run.ManifestRun``) and hands over to a continuation when
the invocation runs short of time.
"""

from __future__ import annotations

from dataclasses import replace
from typing import BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.aws_utils import handle_aws_error
from layer_utils.jobs import DUPLICATE_ERROR_CLASS, MAX_RECORDS_PER_ITEM, FailureRecord
from layer_utils.messages import (
    Checkpoint,
    ContinuationMessage,
    ImportEntry,
    ImportMessage,
    encode_continuation_message,
)
from layer_utils.telemetry import FAILURE_SEND_FAILED, logger
from manifest_provider import vendors
from manifest_provider.config import RunResult
from manifest_provider.evaluate import Rejected
from manifest_provider.findings import load_findings, save_findings
from manifest_provider.prepare import PreparedManifest
from manifest_provider.run import LostLease, ManifestRun
from manifest_provider.spool import JobFailure

_INVALID_INPUT = "invalid_input"


class ManifestStream:
    """The entries of one prepared manifest, from the run's clean point to the end or a hand-over."""

    def __init__(self, run: ManifestRun, prepared: PreparedManifest) -> None:
        """Stream ``prepared`` within ``run`` (its lease, clean point and counters)."""
        self.run = run
        self.prepared = prepared
        self.packer = prepared.packer
        self.pending_failures: list[FailureRecord] = []
        self.pending_duplicates: list[FailureRecord] = []

    @property
    def next_chunk(self) -> int:
        """The number of the next import message."""
        return self.packer.next_chunk

    def stream(self, source: BinaryIO) -> RunResult:
        """Stream the manifest.

        Returns:
            The result, ``finished`` or ``continued``.

        Raises:
            JobFailure: the manifest is unreadable before anything was fanned out.
            LostLease: another invocation took the lease.
            AwsOperationError: AWS failed (the record is redelivered and resumes from the checkpoint).

        """
        run, prepared = self.run, self.prepared
        self._survey(source)
        if not run.resuming:
            run.save(
                run.checkpoint_state(self.next_chunk),
                vendor=prepared.parser.name,
                settings=prepared.settings.to_dict(),
                warnings=list(prepared.warnings),
            )
        start = run.clean_entries
        # Progress guarantee: a continuation always gets past its start before it may hand over.
        progress_floor = max(start, run.boundary or 0) + run.config.certs_per_message
        position = 0
        reason: str | None = None
        # The entries before the clean point were handled by earlier runs: they are counted, not read.
        options = replace(prepared.options, skip_before=start)
        try:
            for entry in vendors.guarded_entries(prepared.parser, source, options):
                if position < start:
                    position += 1
                    continue
                self._handle(self._classify(entry))
                position += 1
                run.entries_done = position
                if run.boundary is not None and position >= run.boundary:
                    self.drain()
                    run.boundary = None
                    run.save(run.checkpoint_state(self.next_chunk))
                elif run.since_checkpoint >= run.config.checkpoint_every:
                    self._checkpoint()
                if position >= progress_floor and run.remaining_ms() < run.config.time_margin_ms:
                    return self._hand_over()
        except vendors.ManifestFormatError as error:
            reason = str(error)
            if not run.resuming and run.entries_done == 0 and not run.counters.messages:
                raise JobFailure(reason) from None
        self.drain()
        total = max(run.entries_done, start)
        job_id = run.job.job_id
        parsed = run.services.jobs.mark_parsed(
            job_id, run.owner, total, run.checkpoint_state(self.next_chunk), reason=reason
        )
        if parsed is None:
            raise LostLease
        logger.info(
            "Manifest parsed",
            extra={"job_id": job_id, "total": total, "reason": reason, "sqs_calls": run.sender.calls},
        )
        run.services.jobs.try_complete(job_id)
        return run.result("finished")

    def _survey(self, source: BinaryIO) -> None:
        """Give the evaluator the survey's findings: the saved ones, or a survey's (then saved)."""
        run, evaluator = self.run, self.prepared.evaluator
        s3, job = run.services.s3, run.job
        bucket = run.services.jobs.report_bucket(job.bucket)
        if run.surveyed:
            found = load_findings(s3, bucket, job.job_id)
            if found is not None:
                try:
                    evaluator.restore(found)
                except ValueError:
                    logger.warning("Survey findings malformed; surveying again", extra={"job_id": job.job_id})
                else:
                    return
        evaluator.survey(vendors.guarded_entries(self.prepared.parser, source, self.prepared.options))
        # Saved before any checkpoint says so: a run that dies in between surveys again, identically.
        save_findings(s3, bucket, job.job_id, evaluator.findings())
        run.surveyed = True

    def _classify(self, entry: vendors.ManifestEntry) -> ImportEntry | FailureRecord:
        """Decide an entry's fate: an import entry, or a failure (or duplicate) record."""
        outcome = self.prepared.evaluator.evaluate(entry)
        if isinstance(outcome, Rejected):
            return FailureRecord(outcome.locator, outcome.fingerprint, outcome.reason, outcome.error_class)
        item = ImportEntry(
            outcome.locator,
            outcome.thing_name,
            outcome.fingerprint,
            outcome.certificate.pem(),
            outcome.name_source,
        )
        if not self.packer.fits(item):
            return FailureRecord(
                outcome.locator,
                outcome.fingerprint,
                f"{outcome.locator}: the certificate is too large for an import message.",
                _INVALID_INPUT,
            )
        return item

    def _handle(self, outcome: ImportEntry | FailureRecord) -> None:
        if isinstance(outcome, ImportEntry):
            message = self.packer.add(outcome)
            if message is not None:
                self._enqueue(message)
        else:
            target = (
                self.pending_duplicates
                if outcome.error_class == DUPLICATE_ERROR_CLASS
                else self.pending_failures
            )
            target.append(outcome)
            if len(target) >= MAX_RECORDS_PER_ITEM:
                self._flush_parse_item()

    def _enqueue(self, message: ImportMessage) -> None:
        self.run.sender.add(message)
        self.run.since_checkpoint += 1
        self._collect()

    def _collect(self) -> None:
        run = self.run
        report = run.sender.take()
        for message in report.sent:
            run.counters.messages += 1
            run.counters.queued += len(message.entries)
        for message, detail in report.failed:
            failures = [
                FailureRecord(
                    entry.locator,
                    entry.certificate_id,
                    f"{entry.locator}: the import message could not be sent to SQS ({detail}).",
                    FAILURE_SEND_FAILED,
                )
                for entry in message.entries
            ]
            if run.services.jobs.record_outcome(run.job.job_id, message.chunk, [], failures):
                self._count_failures(FAILURE_SEND_FAILED, len(failures))
            logger.error(
                "Import message could not be sent; its entries are recorded as failed",
                extra={
                    "job_id": run.job.job_id,
                    "chunk": message.chunk,
                    "entries": len(failures),
                    "error": detail,
                },
            )

    def _flush_parse_item(self) -> None:
        if not self.pending_failures and not self.pending_duplicates:
            return
        run = self.run
        failures, duplicates = self.pending_failures, self.pending_duplicates
        self.pending_failures, self.pending_duplicates = [], []
        recorded = run.services.jobs.record_parse_outcome(
            run.job.job_id, run.next_parse, failures, duplicates
        )
        run.next_parse += 1
        if recorded:
            for failure in failures:
                self._count_failures(failure.error_class, 1)
            run.counters.duplicates += len(duplicates)

    def _count_failures(self, error_class: str, count: int) -> None:
        failed = self.run.counters.failed
        failed[error_class] = failed.get(error_class, 0) + count

    def drain(self) -> None:
        """Send the partial message and the buffered batch, and record the partial parse item."""
        message = self.packer.flush()
        if message is not None:
            self._enqueue(message)
        self.run.sender.flush()
        self._collect()
        self._flush_parse_item()

    def _checkpoint(self, *, release: bool = False) -> None:
        run = self.run
        cut_needed = bool(self.packer.pending or self.pending_failures or self.pending_duplicates)
        if cut_needed:
            run.save(run.checkpoint_state(self.next_chunk, boundary=run.entries_done))
            self.drain()
        else:
            run.sender.flush()
            self._collect()
        run.save(run.checkpoint_state(self.next_chunk), release=release)

    def _hand_over(self) -> RunResult:
        """Checkpoint, release the lease and send the continuation message."""
        self._checkpoint(release=True)
        run = self.run
        job = run.job
        message = ContinuationMessage(
            job_id=job.job_id,
            bucket=job.bucket,
            key=job.key,
            version_id=run.start.version_id,
            etag=run.start.etag,
            checkpoint=Checkpoint(run.entries_done, run.clean_chunk),
        )
        try:
            run.services.sqs.send_message(
                QueueUrl=run.config.intake_queue_url, MessageBody=encode_continuation_message(message)
            )
        except (ClientError, BotoCoreError) as error:
            # The lease is released and the checkpoint saved: the redelivered record resumes from it.
            handle_aws_error(error, "sqs:SendMessage", {"job_id": job.job_id})
        logger.info(
            "Time budget reached; continuing in a new invocation",
            extra={"job_id": job.job_id, "entries_done": run.entries_done, "next_chunk": run.clean_chunk},
        )
        return run.result("continued")
