"""The provider's settings object (read from the environment once) and its collaborators."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from layer_utils.circuit import CircuitRegistry
from layer_utils.env import env_bool, env_positive_int, env_required
from layer_utils.jobs import JobStore
from layer_utils.messages import DEFAULT_MAX_BATCH_BYTES
from layer_utils.telemetry import emit_metric
from manifest_provider.limits import Limits
from manifest_provider.overrides import UploaderAllowlist
from manifest_provider.packing import DEFAULT_MAX_MESSAGE_BYTES
from manifest_provider.settings import ImportSettings

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

Emitter = Callable[[str, float, Mapping[str, str] | None], None]
"""Emits a count metric: name, value and extra dimensions (None for none)."""


def default_emit(name: str, value: float, dimensions: Mapping[str, str] | None) -> None:
    """Emit a count metric through ``telemetry.emit_metric``."""
    emit_metric(name, value, dimensions=dimensions)


@dataclass(frozen=True)
class ProviderConfig:
    """Deployment configuration of the provider.

    ``environ`` is the source of the default import settings, parsed for every manifest so that a
    bad default fails that manifest's job with a clear reason instead of crashing the function.
    ``time_margin_ms`` is the remaining time below which the provider hands over to a continuation;
    ``checkpoint_every`` is the number of import messages between checkpoints.
    ``max_receive_count`` is the IntakeQueue's ``maxReceiveCount``: a record on that delivery that
    fails fails its job instead of going to the IntakeDLQ. ``uploader_allowlist`` is what an upload's S3
    metadata may choose beyond the default settings (``THINGPRESS_UPLOADER_ALLOWED_*``).
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
    uploader_allowlist: UploaderAllowlist = field(default_factory=UploaderAllowlist)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProviderConfig:
        """Read the configuration from ``THINGPRESS_*`` variables (``os.environ`` when None).

        Returns:
            The configuration.

        Raises:
            ValueError: naming the variable that is missing or invalid.

        """
        env = dict(os.environ if environ is None else environ)
        return cls(
            jobs_table=env_required(env, "THINGPRESS_JOBS_TABLE"),
            import_queue_url=env_required(env, "THINGPRESS_IMPORT_QUEUE_URL"),
            intake_queue_url=env_required(env, "THINGPRESS_INTAKE_QUEUE_URL"),
            trust_bucket=env.get("THINGPRESS_BUCKET", "").strip() or None,
            microchip_verifier_prefix=env.get("THINGPRESS_MICROCHIP_VERIFIER_PREFIX", "verifiers/microchip/"),
            trusted_ca_prefix=env.get("THINGPRESS_TRUSTED_CA_PREFIX", ""),
            allow_expired=env_bool(env, "THINGPRESS_ALLOW_EXPIRED"),
            certs_per_message=env_positive_int(env, "THINGPRESS_CERTS_PER_MESSAGE", 50),
            limits=Limits.from_env(env),
            environ=env,
            max_receive_count=env_positive_int(env, "THINGPRESS_MAX_RECEIVE_COUNT", 5),
            uploader_allowlist=UploaderAllowlist.from_env(env),
        )

    def default_settings(self) -> ImportSettings:
        """Return the import settings from the environment; raises ``ValueError`` for a bad value."""
        return ImportSettings.from_env(self.environ)


@dataclass
class Services:
    """The provider's collaborators: AWS clients, the job store, the clock, sleep, randomness, metrics.

    ``registry`` holds the circuits of the provider's protected calls (the handler builds it from
    the environment; the default is a local in-memory registry).
    """

    s3: S3Client
    sqs: SQSClient
    iot: IoTClient
    jobs: JobStore
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = random.random  # noqa: S311 - backoff jitter, not security
    emit: Emitter = default_emit
    registry: CircuitRegistry = field(default_factory=CircuitRegistry)


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
