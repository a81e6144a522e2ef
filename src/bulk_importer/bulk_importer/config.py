"""The BulkImporter's configuration (from the environment) and the services it talks to."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bulk_importer.rate_limit import account_quotas_from_env, rates_from_env
from layer_utils.circuit import CircuitRegistry
from layer_utils.env import env_bool, env_positive_int, env_required
from layer_utils.jobs import JobStore
from layer_utils.protected import Limiter

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient
    from mypy_boto3_sqs import SQSClient

DEFAULT_THREADS = 8
DEFAULT_MAX_ENTRY_ATTEMPTS = 8
DEFAULT_DEADLINE_MARGIN_MS = 60_000
"""Stop starting entries when less than this remains (capped at a quarter of the invocation's budget)."""
DEFAULT_BASE_DELAY_SECONDS = 2.0

Emit = Callable[[str, float, Mapping[str, str] | None], None]
"""Emits a count metric: name, value, extra dimensions (None for none)."""


@dataclass(frozen=True)
class ImporterConfig:
    """The importer's settings.

    ``import_queue_url`` and ``jobs_table`` locate the resources; ``threads`` is the worker threads
    per record; ``max_entry_attempts`` the tries before a retryable failure is final;
    ``deadline_margin_ms`` the time kept free at the end of an invocation; ``base_delay_seconds``
    the first re-enqueue backoff (doubled per attempt, capped at 900 s, with jitter); ``rates`` this
    invocation's share of each IoT API quota, in calls per second (``rate_limit.rates_from_env``);
    ``adopt_existing_things`` whether an existing thing Thingpress did not create may be used (the
    operator's ``AdoptExistingThings``; by default it is a conflict); ``budget_table`` the fleet rate
    budget's table (``THINGPRESS_RATE_BUDGET_TABLE``; when set, each invocation runs the account
    ``quotas`` at the share the budget grants it and ``rates`` is not used).
    """

    import_queue_url: str
    jobs_table: str
    threads: int = DEFAULT_THREADS
    max_entry_attempts: int = DEFAULT_MAX_ENTRY_ATTEMPTS
    deadline_margin_ms: int = DEFAULT_DEADLINE_MARGIN_MS
    base_delay_seconds: float = DEFAULT_BASE_DELAY_SECONDS
    rates: Mapping[str, float] = field(default_factory=lambda: rates_from_env({}))
    adopt_existing_things: bool = False
    budget_table: str | None = None
    quotas: Mapping[str, float] = field(default_factory=lambda: account_quotas_from_env({}))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImporterConfig:
        """Build the configuration from the environment.

        Reads ``THINGPRESS_IMPORT_QUEUE_URL``, ``THINGPRESS_JOBS_TABLE``, ``THINGPRESS_IMPORT_THREADS``,
        ``THINGPRESS_MAX_ENTRY_ATTEMPTS``, ``THINGPRESS_IOT_TPS``, ``THINGPRESS_MAX_CONCURRENCY``,
        ``THINGPRESS_ADOPT_EXISTING_THINGS`` and ``THINGPRESS_RATE_BUDGET_TABLE``.

        Args:
            environ: The environment; ``os.environ`` when None.

        Returns:
            The configuration.

        Raises:
            ValueError: naming the variable that is missing or invalid.

        """
        env = os.environ if environ is None else environ
        return cls(
            import_queue_url=env_required(env, "THINGPRESS_IMPORT_QUEUE_URL"),
            jobs_table=env_required(env, "THINGPRESS_JOBS_TABLE"),
            threads=env_positive_int(env, "THINGPRESS_IMPORT_THREADS", DEFAULT_THREADS),
            max_entry_attempts=env_positive_int(
                env, "THINGPRESS_MAX_ENTRY_ATTEMPTS", DEFAULT_MAX_ENTRY_ATTEMPTS
            ),
            rates=rates_from_env(env),
            adopt_existing_things=env_bool(env, "THINGPRESS_ADOPT_EXISTING_THINGS"),
            budget_table=env.get("THINGPRESS_RATE_BUDGET_TABLE", "").strip() or None,
            quotas=account_quotas_from_env(env),
        )


@dataclass(frozen=True)
class Services:
    """What the importer talks to.

    ``iot`` and ``sqs`` are boto3 clients, ``jobs`` the job store (it alone reads and writes the
    JobsTable), ``limiter`` the per-API rate limiter shared by every thread, ``rng`` the source of
    backoff jitter, ``emit`` the metric emitter and ``registry`` the circuits of the importer's
    protected calls (the handler builds it from the environment). ``calls_done`` is called when a
    record's IoT calls are done (the handler pauses its fleet-budget lease, so others take its share
    while it records the outcome).
    """

    iot: IoTClient
    sqs: SQSClient
    jobs: JobStore
    limiter: Limiter
    rng: random.Random
    emit: Emit
    registry: CircuitRegistry = field(default_factory=CircuitRegistry)
    calls_done: Callable[[], None] = field(default=lambda: None)
