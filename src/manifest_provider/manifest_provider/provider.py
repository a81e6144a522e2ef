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

Every run first surveys the whole manifest (``EntryEvaluator.survey``: which certificates are valid,
where each first appears, which names they claim), then streams from its checkpoint. Duplicates and
thing-name conflicts are therefore decided with every entry in view, identically in every
continuation, without persisting anything; a conflict is reported for both entries. The vendor
parser's own iteration is guarded: an unexpected error ends the manifest with a reason (entries
before it are kept), never the function.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.aws_utils import handle_aws_error
from layer_utils.cert_utils import ParsedCertificate
from layer_utils.env import env_positive_int, env_required
from layer_utils.jobs import (
    DUPLICATE_ERROR_CLASS,
    MAX_RECORDS_PER_ITEM,
    FailureRecord,
    Job,
    JobStatus,
    JobStore,
    isoformat,
)
from layer_utils.messages import (
    DEFAULT_MAX_BATCH_BYTES,
    Checkpoint,
    ContinuationMessage,
    ImportEntry,
    ImportMessage,
    encode_continuation_message,
)
from layer_utils.telemetry import (
    CERTIFICATES_FAILED,
    CERTIFICATES_QUEUED,
    DIM_ERROR_CLASS,
    DUPLICATES_SKIPPED,
    FAILURE_SEND_FAILED,
    MANIFESTS_RECEIVED,
    emit_metric,
    logger,
)
from manifest_provider import vendors
from manifest_provider.evaluate import EntryEvaluator, Rejected
from manifest_provider.fanout import MessageSender
from manifest_provider.intake import ManifestRef, parse_intake_body
from manifest_provider.limits import Limits
from manifest_provider.packing import DEFAULT_MAX_MESSAGE_BYTES, MessagePacker
from manifest_provider.resources import load_trust_certificates, missing_targets
from manifest_provider.settings import ImportSettings

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

Emitter = Callable[[str, float, Mapping[str, str] | None], None]
"""Emits a count metric: name, value and extra dimensions (None for none)."""

HEAD_BYTES = 8192
"""How much of a manifest format detection looks at."""

_READ_CHUNK = 1024 * 1024
_INVALID_INPUT = "invalid_input"


def default_emit(name: str, value: float, dimensions: Mapping[str, str] | None) -> None:
    """Emit a count metric through ``telemetry.emit_metric``."""
    emit_metric(name, value, dimensions=dimensions)


def _env_bool(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value in {"", "false", "0", "no"}:
        return False
    if value in {"true", "1", "yes"}:
        return True
    raise ValueError(f"{name} must be 'true' or 'false', got {raw!r}.")


@dataclass(frozen=True)
class ProviderConfig:
    """Deployment configuration of the provider.

    ``environ`` is the source of the default import settings, parsed for every manifest so that a
    bad default fails that manifest's job with a clear reason instead of crashing the function.
    ``time_margin_ms`` is the remaining time below which the provider hands over to a continuation;
    ``checkpoint_every`` is the number of import messages between checkpoints.
    ``max_receive_count`` is the IntakeQueue's ``maxReceiveCount``: a record on that delivery that
    fails fails its job instead of going to the IntakeDLQ.
    """

    jobs_table: str
    import_queue_url: str
    intake_queue_url: str
    trust_bucket: str | None = None
    microchip_verifier_prefix: str = "verifiers/microchip/"
    trusted_ca_prefix: str = ""
    allow_expired: bool = False
    certs_per_message: int = 50
    limits: Limits = field(default_factory=Limits)
    environ: Mapping[str, str] = field(default_factory=dict)
    time_margin_ms: int = 60_000
    checkpoint_every: int = 100
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    send_attempts: int = 5
    spool_memory_bytes: int = 8 * 1024 * 1024
    lease_slack_seconds: int = 60
    max_receive_count: int = 5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProviderConfig:
        """Read the configuration from ``THINGPRESS_*`` variables (``os.environ`` when None).

        Raises ``ValueError`` naming the variable when one is missing or invalid.
        """
        env = dict(os.environ if environ is None else environ)
        return cls(
            jobs_table=env_required(env, "THINGPRESS_JOBS_TABLE"),
            import_queue_url=env_required(env, "THINGPRESS_IMPORT_QUEUE_URL"),
            intake_queue_url=env_required(env, "THINGPRESS_INTAKE_QUEUE_URL"),
            trust_bucket=env.get("THINGPRESS_BUCKET", "").strip() or None,
            microchip_verifier_prefix=env.get("THINGPRESS_MICROCHIP_VERIFIER_PREFIX", "verifiers/microchip/"),
            trusted_ca_prefix=env.get("THINGPRESS_TRUSTED_CA_PREFIX", ""),
            allow_expired=_env_bool(env.get("THINGPRESS_ALLOW_EXPIRED", ""), "THINGPRESS_ALLOW_EXPIRED"),
            certs_per_message=env_positive_int(env, "THINGPRESS_CERTS_PER_MESSAGE", 50),
            limits=Limits.from_env(env),
            environ=env,
            max_receive_count=env_positive_int(env, "THINGPRESS_MAX_RECEIVE_COUNT", 5),
        )

    def default_settings(self) -> ImportSettings:
        """Return the import settings from the environment; raises ``ValueError`` for a bad value."""
        return ImportSettings.from_env(self.environ)


@dataclass
class Services:
    """The provider's collaborators: AWS clients, the job store, the clock, sleep, randomness, metrics."""

    s3: S3Client
    sqs: SQSClient
    iot: IoTClient
    jobs: JobStore
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = random.random
    emit: Emitter = default_emit


@dataclass
class RunResult:
    """What one invocation did with one manifest.

    ``outcome`` is ``finished`` (parsed to the end), ``continued`` (handed to a continuation),
    ``failed`` (the job failed before fan-out), ``duplicate`` (the job exists and needs nothing),
    ``busy`` (another invocation holds the parsing lease) or ``lost_lease``.
    """

    job_id: str
    outcome: str
    queued: int = 0
    failed: int = 0
    duplicates: int = 0
    messages: int = 0
    sqs_calls: int = 0
    entries_done: int = 0


class _JobFailure(Exception):
    """The manifest cannot be processed; ``str()`` is the reason (one English sentence)."""


class _LostLease(Exception):
    """Another invocation took the parsing lease over: stop without touching the job."""


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

    Takes the message body, the services, the configuration, a unique owner id for the parsing
    lease (the SQS message id), a function returning the invocation's remaining milliseconds and
    the delivery number of the message (SQS ``ApproximateReceiveCount``). On the last delivery
    (``attempt >= config.max_receive_count``) any exception fails the job concerned with a reason
    (``fail_after_attempts``) instead of propagating. Returns one result per manifest. Raises
    ``ValueError`` for a body that is none of the intake message kinds, and on earlier deliveries
    ``AwsOperationError`` for AWS failures worth retrying and whatever else processing raised.
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

    Takes the manifest or continuation the record names, the error, the services, configuration,
    the lease owner, the remaining-time function and the delivery number. A job that does not exist
    yet is created so that it can carry the reason. A final job gets its report if it has none; a
    parsed job tries completion; a job still parsing is claimed and failed like a run that breaks off
    (``ManifestRun.fail``: the entries fanned out before the checkpoint still settle), unless another
    invocation holds its lease live. Returns the result. Raises ``error`` when the job cannot be
    ended either (the record then goes to the IntakeDLQ and the sweep finishes the job).
    """
    reason = attempts_reason(attempt, error)
    logger.error(
        "Intake record failed on its last delivery; failing its job",
        extra={"error": reason, "error_type": type(error).__name__, "attempt": attempt},
    )
    try:
        if isinstance(subject, ManifestRef):
            created, job = services.jobs.create_job(subject.bucket, subject.key, subject.version)
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


def _lease_until(services: Services, config: ProviderConfig, remaining_ms: Callable[[], int]) -> datetime:
    return services.clock() + timedelta(milliseconds=remaining_ms(), seconds=config.lease_slack_seconds)


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
    Returns the run result. Raises ``AwsOperationError`` for AWS failures worth retrying.
    """
    created, job = services.jobs.create_job(ref.bucket, ref.key, ref.version)
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
    Returns the run result. Raises ``AwsOperationError`` for AWS failures worth retrying.
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
    return run.run()


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
    claimed = services.jobs.claim_parse(job_id, owner, _lease_until(services, config, remaining_ms))
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


@dataclass
class _Counters:
    queued: int = 0
    messages: int = 0
    duplicates: int = 0
    failed: dict[str, int] = field(default_factory=dict)


class ManifestRun:
    """One invocation's work on one manifest, from the job's checkpoint to the end or a hand-over."""

    def __init__(
        self,
        job: Job,
        *,
        version_id: str | None,
        etag: str | None,
        services: Services,
        config: ProviderConfig,
        owner: str,
        remaining_ms: Callable[[], int],
        final_attempt: int | None = None,
    ) -> None:
        """Take the claimed job, the object version to read, the services, configuration and lease owner.

        ``final_attempt``, the delivery number on the intake record's last delivery (None before),
        makes ``run`` fail the job on any exception instead of raising it, keeping the entries
        handled so far.
        """
        self.job = job
        self.final_attempt = final_attempt
        self.services = services
        self.config = config
        self.owner = owner
        self.remaining_ms = remaining_ms
        checkpoint = dict(job.checkpoint or {})
        self.resuming = bool(checkpoint)
        self.version_id: str | None = checkpoint.get("version_id", version_id)
        self.etag: str | None = checkpoint.get("etag", etag)
        self.parse_time = (
            datetime.fromisoformat(str(checkpoint["parse_time"]).replace("Z", "+00:00"))
            if "parse_time" in checkpoint
            else services.clock()
        )
        # The last clean checkpoint: every entry before it is settled or in a sent message.
        self.clean_entries = int(checkpoint.get("entries_done", 0))
        self.clean_chunk = int(checkpoint.get("next_chunk", 0))
        self.clean_parse = int(checkpoint.get("next_parse", 0))
        boundary = checkpoint.get("boundary")
        self.boundary: int | None = None if boundary is None else int(boundary)
        self.entries_done = self.clean_entries
        self.next_parse = self.clean_parse
        self.since_checkpoint = 0
        self.counters = _Counters()
        self.sender = MessageSender(
            services.sqs,
            config.import_queue_url,
            sleep=services.sleep,
            random=services.random,
            max_attempts=config.send_attempts,
            max_batch_bytes=config.max_batch_bytes,
        )
        self.pending_failures: list[FailureRecord] = []
        self.pending_duplicates: list[FailureRecord] = []
        self.packer: MessagePacker | None = None
        self.evaluator: EntryEvaluator | None = None

    # --------------------------------------------------------------------------- entry point

    def run(self) -> RunResult:
        """Parse (or continue parsing) the manifest; return what happened.

        Raises ``AwsOperationError`` for AWS failures worth retrying (the SQS record then fails and
        is redelivered; the next attempt resumes from the checkpoint), and whatever else parsing
        raised; on the record's last delivery it fails the job instead (``fail``) and raises only
        what ending the job raises.
        """
        try:
            with self._open() as (source, metadata):
                parser, options = self._prepare(source, metadata)
                return self._stream(parser, source, options)
        except _JobFailure as failure:
            return self.fail(str(failure))
        except _LostLease:
            logger.warning(
                "Parsing lease lost to another invocation; stopping", extra={"job_id": self.job.job_id}
            )
            return self._result("lost_lease")
        except Exception as error:
            if self.final_attempt is None:
                raise
            logger.error(
                "Manifest run failed on the record's last delivery; failing the job",
                extra={"job_id": self.job.job_id, "error_type": type(error).__name__},
            )
            return self.fail(attempts_reason(self.final_attempt, error))
        finally:
            self._emit_counters()

    # --------------------------------------------------------------------------- preparation

    def _open(self) -> _Spool:
        job = self.job
        request: dict[str, Any] = {"Bucket": job.bucket, "Key": job.key}
        if self.version_id:
            request["VersionId"] = self.version_id
        elif self.etag:
            request["IfMatch"] = f'"{self.etag}"'
        try:
            response = self.services.s3.get_object(**request)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "NoSuchVersion", "404", "NotFound", "NoSuchBucket"}:
                raise _JobFailure(f"The manifest s3://{job.bucket}/{job.key} no longer exists.") from None
            if code in {"PreconditionFailed", "412"}:
                raise _JobFailure(
                    f"The manifest s3://{job.bucket}/{job.key} was replaced before it could be read; "
                    "the new version is processed as its own job."
                ) from None
            if code in {"AccessDenied", "403"}:
                raise _JobFailure(f"Access to the manifest s3://{job.bucket}/{job.key} was denied.") from None
            handle_aws_error(error, "s3:GetObject", {"key": job.key})
        except BotoCoreError as error:
            handle_aws_error(error, "s3:GetObject", {"key": job.key})
        limit = self.config.limits.max_manifest_bytes
        length = int(response.get("ContentLength", 0))
        if length > limit:
            raise _JobFailure(f"The manifest is {length} bytes, more than the limit of {limit} bytes.")
        spool = _Spool(self.config.spool_memory_bytes, dict(response.get("Metadata", {})))
        try:
            spool.fill(response["Body"], limit)
        except _JobFailure:
            spool.close()
            raise
        except (BotoCoreError, OSError) as error:
            spool.close()
            if isinstance(error, BotoCoreError):
                handle_aws_error(error, "s3:GetObject", {"key": job.key})
            raise
        return spool

    def _prepare(
        self, source: BinaryIO, metadata: Mapping[str, str]
    ) -> tuple[vendors.VendorParser, vendors.ParseOptions]:
        try:
            settings = self.config.default_settings().with_overrides(metadata)
        except ValueError as error:
            raise _JobFailure(f"The import settings are invalid: {error}") from None
        head = source.read(HEAD_BYTES)
        source.seek(0)
        try:
            parser = (
                vendors.get_parser(settings.vendor) if settings.vendor else vendors.detect(self.job.key, head)
            )
        except (ValueError, vendors.ManifestFormatError) as error:
            raise _JobFailure(str(error)) from None
        if not self.resuming:
            problems = missing_targets(self.services.iot, settings)
            if problems:
                raise _JobFailure(" ".join(problems))
        bucket = self.config.trust_bucket or self.job.bucket
        verifiers: tuple[ParsedCertificate, ...] = ()
        warnings: list[str] = []
        if parser.name == "microchip" and self.config.microchip_verifier_prefix:
            material = load_trust_certificates(
                self.services.s3, bucket, self.config.microchip_verifier_prefix
            )
            verifiers = material.certificates
            warnings.extend(material.warnings)
        trusted: tuple[ParsedCertificate, ...] | None = None
        if self.config.trusted_ca_prefix:
            material = load_trust_certificates(
                self.services.s3, bucket, f"{self.config.trusted_ca_prefix}{parser.name}/"
            )
            trusted = material.certificates
            warnings.extend(material.warnings)
        self.evaluator = EntryEvaluator(
            name_sources=settings.name_sources,
            thing_name_prefix=settings.thing_name_prefix,
            trusted_cas=trusted,
            allow_expired=self.config.allow_expired,
            at=self.parse_time,
        )
        self.packer = MessagePacker(
            self.job.job_id,
            settings.message_settings(),
            max_entries=self.config.certs_per_message,
            max_bytes=self.config.max_message_bytes,
            first_chunk=self.clean_chunk,
        )
        if not self.resuming:
            self._save(
                self._checkpoint_state(),
                vendor=parser.name,
                settings=settings.to_dict(),
                warnings=warnings,
            )
        options = vendors.ParseOptions(
            bundle_type=settings.bundle_type,
            microchip_verifiers=verifiers,
            limits=self.config.limits,
            now=self.parse_time,
        )
        return parser, options

    # --------------------------------------------------------------------------- streaming

    def _stream(
        self, parser: vendors.VendorParser, source: BinaryIO, options: vendors.ParseOptions
    ) -> RunResult:
        start = self.clean_entries
        # Progress guarantee: a continuation always gets past its start before it may hand over.
        progress_floor = max(start, self.boundary or 0) + self.config.certs_per_message
        position = 0
        reason: str | None = None
        if self.evaluator is None:
            raise RuntimeError("The entry evaluator is not set up before entries are streamed.")
        self.evaluator.survey(vendors.guarded_entries(parser, source, options))
        try:
            for entry in vendors.guarded_entries(parser, source, options):
                if position < start:
                    position += 1
                    continue
                self._handle(self._classify(entry))
                position += 1
                self.entries_done = position
                if self.boundary is not None and position >= self.boundary:
                    self._drain()
                    self.boundary = None
                    self._save(self._checkpoint_state())
                elif self.since_checkpoint >= self.config.checkpoint_every:
                    self._checkpoint()
                if position >= progress_floor and self.remaining_ms() < self.config.time_margin_ms:
                    return self._hand_over()
        except vendors.ManifestFormatError as error:
            reason = str(error)
            if not self.resuming and self.entries_done == 0 and not self.counters.messages:
                raise _JobFailure(reason) from None
        self._drain()
        total = max(self.entries_done, start)
        parsed = self.services.jobs.mark_parsed(
            self.job.job_id, self.owner, total, self._checkpoint_state(), reason=reason
        )
        if parsed is None:
            raise _LostLease
        logger.info(
            "Manifest parsed",
            extra={
                "job_id": self.job.job_id,
                "total": total,
                "reason": reason,
                "sqs_calls": self.sender.calls,
            },
        )
        self.services.jobs.try_complete(self.job.job_id)
        return self._result("finished")

    def _classify(self, entry: vendors.ManifestEntry) -> ImportEntry | FailureRecord:
        """Decide an entry's fate: an import entry, or a failure (or duplicate) record."""
        if self.evaluator is None or self.packer is None:
            raise RuntimeError(
                "The evaluator and message packer are not set up before entries are classified."
            )
        outcome = self.evaluator.evaluate(entry)
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
            if self.packer is None:
                raise RuntimeError("The message packer is not set up before entries are packed.")
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
        self.sender.add(message)
        self.since_checkpoint += 1
        self._collect()

    def _collect(self) -> None:
        report = self.sender.take()
        for message in report.sent:
            self.counters.messages += 1
            self.counters.queued += len(message.entries)
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
            if self.services.jobs.record_outcome(self.job.job_id, message.chunk, [], failures):
                self._count_failures(FAILURE_SEND_FAILED, len(failures))
            logger.error(
                "Import message could not be sent; its entries are recorded as failed",
                extra={
                    "job_id": self.job.job_id,
                    "chunk": message.chunk,
                    "entries": len(failures),
                    "error": detail,
                },
            )

    def _flush_parse_item(self) -> None:
        if not self.pending_failures and not self.pending_duplicates:
            return
        failures, duplicates = self.pending_failures, self.pending_duplicates
        self.pending_failures, self.pending_duplicates = [], []
        recorded = self.services.jobs.record_parse_outcome(
            self.job.job_id, self.next_parse, failures, duplicates
        )
        self.next_parse += 1
        if recorded:
            for failure in failures:
                self._count_failures(failure.error_class, 1)
            self.counters.duplicates += len(duplicates)

    def _count_failures(self, error_class: str, count: int) -> None:
        self.counters.failed[error_class] = self.counters.failed.get(error_class, 0) + count

    def _drain(self) -> None:
        """Send the partial message and the buffered batch, and record the partial parse item."""
        if self.packer is None:
            raise RuntimeError("The message packer is not set up before entries are packed.")
        message = self.packer.flush()
        if message is not None:
            self._enqueue(message)
        self.sender.flush()
        self._collect()
        self._flush_parse_item()

    # --------------------------------------------------------------------------- checkpoints

    def _checkpoint_state(self, boundary: int | None = None) -> dict[str, Any]:
        state: dict[str, Any] = {
            "entries_done": self.entries_done,
            "next_chunk": self.packer.next_chunk if self.packer is not None else self.clean_chunk,
            "next_parse": self.next_parse,
            "parse_time": isoformat(self.parse_time),
            "version_id": self.version_id,
            "etag": self.etag,
        }
        if boundary is not None:
            # The intent of a cut: resume from the previous clean point and cut again at `boundary`.
            state.update(
                entries_done=self.clean_entries,
                next_chunk=self.clean_chunk,
                next_parse=self.clean_parse,
                boundary=boundary,
            )
        return state

    def _save(self, state: Mapping[str, Any], *, release: bool = False, **extra: Any) -> None:
        lease = None if release else _lease_until(self.services, self.config, self.remaining_ms)
        if not self.services.jobs.save_checkpoint(
            self.job.job_id, self.owner, state, lease_until=lease, release=release, **extra
        ):
            raise _LostLease
        if "boundary" not in state:
            self.clean_entries = int(state["entries_done"])
            self.clean_chunk = int(state["next_chunk"])
            self.clean_parse = int(state["next_parse"])
            self.since_checkpoint = 0

    def _checkpoint(self, *, release: bool = False) -> None:
        if self.packer is None:
            raise RuntimeError("The message packer is not set up before entries are packed.")
        cut_needed = bool(self.packer.pending or self.pending_failures or self.pending_duplicates)
        if cut_needed:
            self._save(self._checkpoint_state(boundary=self.entries_done))
            self._drain()
        else:
            self.sender.flush()
            self._collect()
        self._save(self._checkpoint_state(), release=release)

    def _hand_over(self) -> RunResult:
        """Checkpoint, release the lease and send the continuation message."""
        self._checkpoint(release=True)
        message = ContinuationMessage(
            job_id=self.job.job_id,
            bucket=self.job.bucket,
            key=self.job.key,
            version_id=self.version_id,
            etag=self.etag,
            checkpoint=Checkpoint(self.entries_done, self.clean_chunk),
        )
        try:
            self.services.sqs.send_message(
                QueueUrl=self.config.intake_queue_url, MessageBody=encode_continuation_message(message)
            )
        except (ClientError, BotoCoreError) as error:
            # The lease is released and the checkpoint saved: the redelivered record resumes from it.
            handle_aws_error(error, "sqs:SendMessage", {"job_id": self.job.job_id})
        logger.info(
            "Time budget reached; continuing in a new invocation",
            extra={
                "job_id": self.job.job_id,
                "entries_done": self.entries_done,
                "next_chunk": self.clean_chunk,
            },
        )
        return self._result("continued")

    # --------------------------------------------------------------------------- endings

    def fail(self, reason: str) -> RunResult:
        """Fail the job with ``reason``: before any fan-out outright, after some keeping the entries so far.

        Returns the ``failed`` result. After a fan-out started the job is marked parsed with the
        entries so far (they still settle) and the reason, so it ends FAILED with a report listing
        them. A run resuming from a
        cut intent cannot know which of its messages went out, so that job fails outright.
        """
        started = self.resuming or self.entries_done > 0 or self.counters.messages > 0
        if started and self.boundary is None:
            if self.packer is not None:
                self._drain()
            parsed = self.services.jobs.mark_parsed(
                self.job.job_id, self.owner, self.entries_done, self._checkpoint_state(), reason=reason
            )
            if parsed is not None:
                self.services.jobs.try_complete(self.job.job_id)
        else:
            self.services.jobs.fail_job(self.job.job_id, reason)
        logger.warning("Manifest failed", extra={"job_id": self.job.job_id, "reason": reason})
        return self._result("failed")

    def _result(self, outcome: str) -> RunResult:
        return RunResult(
            job_id=self.job.job_id,
            outcome=outcome,
            queued=self.counters.queued,
            failed=sum(self.counters.failed.values()),
            duplicates=self.counters.duplicates,
            messages=self.counters.messages,
            sqs_calls=self.sender.calls,
            entries_done=self.entries_done,
        )

    def _emit_counters(self) -> None:
        emit = self.services.emit
        if self.counters.queued:
            emit(CERTIFICATES_QUEUED, self.counters.queued, None)
        if self.counters.duplicates:
            emit(DUPLICATES_SKIPPED, self.counters.duplicates, None)
        for error_class, count in sorted(self.counters.failed.items()):
            emit(CERTIFICATES_FAILED, count, {DIM_ERROR_CLASS: error_class})


class _Spool:
    """The manifest body in a bounded-memory temporary file, and the object's user metadata."""

    def __init__(self, memory_bytes: int, metadata: dict[str, str]) -> None:
        self.file: IO[bytes] = cast(
            IO[bytes],
            tempfile.SpooledTemporaryFile(max_size=memory_bytes),  # noqa: SIM115 - closed by close()/__exit__
        )
        self.metadata = metadata

    def fill(self, body: Any, limit: int) -> None:
        """Copy the S3 body in; raises ``_JobFailure`` when it is larger than ``limit`` bytes."""
        copied = 0
        while chunk := body.read(_READ_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise _JobFailure(f"The manifest is larger than the limit of {limit} bytes.")
            self.file.write(chunk)
        self.file.seek(0)

    def close(self) -> None:
        """Delete the temporary file."""
        self.file.close()

    def __enter__(self) -> tuple[BinaryIO, dict[str, str]]:
        """Return the seekable file and the metadata."""
        return cast(BinaryIO, self.file), self.metadata

    def __exit__(self, *_exc: object) -> None:
        """Delete the temporary file."""
        self.close()
