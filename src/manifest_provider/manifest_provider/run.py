"""The run/checkpoint protocol: one invocation's lease on a job, its checkpoints and its endings.

The checkpoint fields and the two-phase cut are described in docs/ARCHITECTURE.md, "Jobs".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from layer_utils.jobs import Job, isoformat
from layer_utils.telemetry import (
    CERTIFICATES_FAILED,
    CERTIFICATES_QUEUED,
    DIM_ERROR_CLASS,
    DUPLICATES_SKIPPED,
    logger,
)
from manifest_provider.config import ProviderConfig, RunResult, Services
from manifest_provider.fanout import MessageSender


class LostLease(Exception):
    """Another invocation took the parsing lease over: stop without touching the job."""


def lease_until(services: Services, config: ProviderConfig, remaining_ms: Callable[[], int]) -> datetime:
    """Return when a lease taken now expires: the invocation's remaining time plus the slack."""
    return services.clock() + timedelta(milliseconds=remaining_ms(), seconds=config.lease_slack_seconds)


@dataclass(frozen=True)
class ResumePoint:
    """Where a run starts, read from the job's checkpoint (the start of the manifest when it has none).

    ``entries``, ``chunk`` and ``parse`` are the last clean point; ``boundary`` is set while a cut
    is in progress; ``surveyed`` says the survey's findings are saved (``findings``).
    """

    resuming: bool
    version_id: str | None
    etag: str | None
    parse_time: datetime
    entries: int
    chunk: int
    parse: int
    boundary: int | None
    surveyed: bool = False

    @classmethod
    def from_job(cls, job: Job, version_id: str | None, etag: str | None, now: datetime) -> ResumePoint:
        """Read the resume point of a claimed job; the other arguments serve a fresh start."""
        checkpoint = dict(job.checkpoint or {})
        boundary = checkpoint.get("boundary")
        return cls(
            resuming=bool(checkpoint),
            version_id=checkpoint.get("version_id", version_id),
            etag=checkpoint.get("etag", etag),
            parse_time=(
                datetime.fromisoformat(str(checkpoint["parse_time"]).replace("Z", "+00:00"))
                if "parse_time" in checkpoint
                else now
            ),
            entries=int(checkpoint.get("entries_done", 0)),
            chunk=int(checkpoint.get("next_chunk", 0)),
            parse=int(checkpoint.get("next_parse", 0)),
            boundary=None if boundary is None else int(boundary),
            surveyed=bool(checkpoint.get("surveyed", False)),
        )


@dataclass
class Counters:
    """What a run queued, sent, skipped as duplicates and failed (by error class)."""

    queued: int = 0
    messages: int = 0
    duplicates: int = 0
    failed: dict[str, int] = field(default_factory=dict)


class FanOut(Protocol):
    """What ending a run needs from the entries already streamed (``stream.ManifestStream``)."""

    @property
    def next_chunk(self) -> int:
        """The number of the next import message."""
        ...

    def drain(self) -> None:
        """Send the partial message and batch and record the partial parse item."""
        ...


class ManifestRun:
    """One invocation's hold on one manifest: the lease, the clean point, the counters and the endings."""

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
        """Start a run on a claimed job.

        Args:
            job: the job as claimed (status PARSING, with its checkpoint).
            version_id: the object version to read on a fresh start.
            etag: the object ETag to read on a fresh start.
            services: the provider's collaborators.
            config: the provider's settings.
            owner: the lease owner.
            remaining_ms: returns the invocation's remaining milliseconds.
            final_attempt: the delivery number on the intake record's last delivery (None before):
                the run then fails the job on any exception, keeping the entries handled so far.

        """
        self.job = job
        self.final_attempt = final_attempt
        self.services = services
        self.config = config
        self.owner = owner
        self.remaining_ms = remaining_ms
        self.start = ResumePoint.from_job(job, version_id, etag, services.clock())
        # The last clean checkpoint: every entry before it is settled or in a sent message.
        self.clean_entries = self.start.entries
        self.clean_chunk = self.start.chunk
        self.clean_parse = self.start.parse
        self.boundary = self.start.boundary
        self.surveyed = self.start.surveyed
        self.entries_done = self.clean_entries
        self.next_parse = self.clean_parse
        self.since_checkpoint = 0
        self.counters = Counters()
        self.sender = MessageSender(
            services.sqs,
            config.import_queue_url,
            registry=services.registry,
            sleep=services.sleep,
            random=services.random,
            max_attempts=config.send_attempts,
            max_batch_bytes=config.max_batch_bytes,
        )

    @property
    def resuming(self) -> bool:
        """Whether the run continues from a checkpoint."""
        return self.start.resuming

    def checkpoint_state(self, next_chunk: int, boundary: int | None = None) -> dict[str, Any]:
        """Return the checkpoint of the run's progress, or with ``boundary`` the intent of a cut there."""
        state: dict[str, Any] = {
            "entries_done": self.entries_done,
            "next_chunk": next_chunk,
            "next_parse": self.next_parse,
            "parse_time": isoformat(self.start.parse_time),
            "version_id": self.start.version_id,
            "etag": self.start.etag,
        }
        if self.surveyed:
            state["surveyed"] = True
        if boundary is not None:
            # The intent of a cut: resume from the previous clean point and cut again at `boundary`.
            state.update(
                entries_done=self.clean_entries,
                next_chunk=self.clean_chunk,
                next_parse=self.clean_parse,
                boundary=boundary,
            )
        return state

    def save(self, state: Mapping[str, Any], *, release: bool = False, **extra: Any) -> None:
        """Store ``state`` under the lease (renewing or releasing it); a state without a cut is clean.

        Raises:
            LostLease: another invocation holds the lease now.

        """
        lease = None if release else lease_until(self.services, self.config, self.remaining_ms)
        if not self.services.jobs.save_checkpoint(
            self.job.job_id, self.owner, state, lease_until=lease, release=release, **extra
        ):
            raise LostLease
        if "boundary" not in state:
            self.clean_entries = int(state["entries_done"])
            self.clean_chunk = int(state["next_chunk"])
            self.clean_parse = int(state["next_parse"])
            self.since_checkpoint = 0

    def fail(self, reason: str, fanout: FanOut | None = None) -> RunResult:
        """Fail the job with ``reason``: before any fan-out outright, after some keeping the entries so far.

        After a fan-out started the job is marked parsed with the entries so far (they still settle)
        and the reason, so it ends FAILED with a report listing them. A run resuming from a cut intent
        cannot know which of its messages went out, so that job fails outright.

        Args:
            reason: one English sentence.
            fanout: the entries streamed so far, when streaming began.

        Returns:
            The ``failed`` result.

        """
        started = self.resuming or self.entries_done > 0 or self.counters.messages > 0
        if started and self.boundary is None:
            if fanout is not None:
                fanout.drain()
            next_chunk = self.clean_chunk if fanout is None else fanout.next_chunk
            parsed = self.services.jobs.mark_parsed(
                self.job.job_id,
                self.owner,
                self.entries_done,
                self.checkpoint_state(next_chunk),
                reason=reason,
            )
            if parsed is not None:
                self.services.jobs.try_complete(self.job.job_id)
        else:
            self.services.jobs.fail_job(self.job.job_id, reason)
        logger.warning("Manifest failed", extra={"job_id": self.job.job_id, "reason": reason})
        return self.result("failed")

    def result(self, outcome: str) -> RunResult:
        """Return the run's result with ``outcome`` and its counters."""
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

    def emit_counters(self) -> None:
        """Emit the run's queued, duplicate and failure counts."""
        emit = self.services.emit
        if self.counters.queued:
            emit(CERTIFICATES_QUEUED, self.counters.queued, None)
        if self.counters.duplicates:
            emit(DUPLICATES_SKIPPED, self.counters.duplicates, None)
        for error_class, count in sorted(self.counters.failed.items()):
            emit(CERTIFICATES_FAILED, count, {DIM_ERROR_CLASS: error_class})
