"""The UndoFunction's configuration (from the environment) and the services it talks to."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from layer_utils.env import env_positive_int, env_required
from layer_utils.rate_limit import quotas_from_json

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient
    from mypy_boto3_sqs import SQSClient

    from layer_utils.circuit import CircuitRegistry
    from layer_utils.jobs import JobStore
    from layer_utils.protected import Limiter

DEFAULT_UNDO_TPS: Mapping[str, float] = {
    # Reads before the writes (undo_worker.undo.plan_entry).
    "DescribeCertificate": 10.0,
    "ListPrincipalThings": 10.0,
    "ListAttachedPolicies": 15.0,
    "DescribeThing": 350.0,
    "ListThingPrincipals": 10.0,
    # The delete path, in its order.
    "DetachPolicy": 15.0,
    "RemoveThingFromThingGroup": 100.0,
    "DetachThingPrincipal": 100.0,
    "UpdateCertificate": 10.0,
    "DeleteCertificate": 10.0,
    "DeleteThing": 100.0,
}
"""AWS IoT Core default account quotas (requests per second) of every API the undo calls.

Source: AWS General Reference, "AWS IoT Core endpoints and quotas", API throttling limits
(https://docs.aws.amazon.com/general/latest/gr/iot-core.html); the thing APIs are also Service
Quotas codes of ``iotcore`` (DeleteThing L-889800F7, DetachThingPrincipal L-B5EE4A16,
RemoveThingFromThingGroup L-2A81A394, ListThingPrincipals L-FC3EF4D9, DescribeThing L-0EF0F5EE,
ListPrincipalThings L-C481616A), the certificate and policy APIs are DetachPolicy L-EC88D510,
UpdateCertificate L-77B523DC, DeleteCertificate L-EEB8F0B1. The template's ``UndoApiTps`` repeats
this table; raise both after a quota increase.
"""

TPS_ENV = "THINGPRESS_UNDO_TPS"
CONCURRENCY_ENV = "THINGPRESS_UNDO_MAX_CONCURRENCY"
DEFAULT_MAX_CONCURRENCY = 2
"""Default of ``THINGPRESS_UNDO_MAX_CONCURRENCY``: the undo event source's MaximumConcurrency."""
DEFAULT_DEADLINE_MARGIN_MS = 120_000
"""No chunk starts when less than this remains (capped at a quarter of the invocation's budget)."""
CONTINUE_DELAY_SECONDS = 30
"""Delay of a continuation sent after a throttled or open-circuit stop (a paused run continues at once)."""


def undo_rates(environ: Mapping[str, str] | None = None) -> dict[str, float]:
    """Return this invocation's share of each undo API's quota, in calls per second.

    ``THINGPRESS_UNDO_TPS`` (JSON, the account quota per API) overrides or extends
    ``DEFAULT_UNDO_TPS``; every quota is divided by ``THINGPRESS_UNDO_MAX_CONCURRENCY`` so that all
    concurrent undo invocations together stay under it.

    Raises:
        ValueError: a variable is malformed.

    """
    env = os.environ if environ is None else environ
    concurrency = env_positive_int(env, CONCURRENCY_ENV, DEFAULT_MAX_CONCURRENCY)
    quotas = quotas_from_json(env.get(TPS_ENV, ""), DEFAULT_UNDO_TPS, TPS_ENV)
    return {api: quota / concurrency for api, quota in quotas.items()}


@dataclass(frozen=True)
class UndoConfig:
    """The UndoFunction's settings: where its queue and table are, its rates and its deadline margin."""

    undo_queue_url: str
    jobs_table: str
    rates: Mapping[str, float] = field(default_factory=lambda: undo_rates({}))
    deadline_margin_ms: int = DEFAULT_DEADLINE_MARGIN_MS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UndoConfig:
        """Build the configuration from the environment (``environ``, default ``os.environ``).

        Reads ``THINGPRESS_UNDO_QUEUE_URL``, ``THINGPRESS_JOBS_TABLE``, ``THINGPRESS_UNDO_TPS`` and
        ``THINGPRESS_UNDO_MAX_CONCURRENCY``.

        Returns:
            The configuration.

        Raises:
            ValueError: naming the variable that is missing or invalid.

        """
        env = os.environ if environ is None else environ
        return cls(
            undo_queue_url=env_required(env, "THINGPRESS_UNDO_QUEUE_URL"),
            jobs_table=env_required(env, "THINGPRESS_JOBS_TABLE"),
            rates=undo_rates(env),
        )


@dataclass(frozen=True)
class UndoServices:
    """What the undo talks to: IoT and SQS clients, the job store, the limiter, circuits, metrics."""

    iot: IoTClient
    sqs: SQSClient
    jobs: JobStore
    limiter: Limiter
    registry: CircuitRegistry
    emit: Callable[[str, float, Mapping[str, str] | None], None]
