"""Shared Powertools logger, metrics and tracer, the metric names, and AWS call counters.

Every Thingpress module logs through :data:`logger`, emits metrics through :func:`emit_metric`
and traces through :data:`tracer`, so the service name and metrics namespace are set in one place
(``POWERTOOLS_SERVICE_NAME``, default ``thingpress``; ``POWERTOOLS_METRICS_NAMESPACE``, default
``Thingpress``). The tracer disables itself outside Lambda or when ``POWERTOOLS_TRACE_DISABLED``
is true, so local runs and tests need no X-Ray daemon.

Retry and throttle counting (:func:`install_call_metrics`) aggregates in memory, per API, and is
written as EMF by :func:`flush_call_metrics`, which handlers call at the end of every invocation
together with :func:`emit_circuit_states` (both through :func:`end_invocation`, which is handed the
circuit status by the handler: this module imports nothing of the layer but ``errors``). Aggregating keeps
the per-call cost to one dictionary update under a lock and the log volume to one line per API per
invocation.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import Counter
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from layer_utils.errors import THROTTLING_CODES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from botocore.client import BaseClient

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME") or "thingpress"
METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Thingpress"

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
# An invocation with nothing to count (an s3:TestEvent, an import message redelivered after it was
# recorded) publishes no metric; that is expected, as the Powertools documentation notes for it.
warnings.filterwarnings("ignore", "No application metrics to publish")
tracer = Tracer(service=SERVICE_NAME)

# Metric names (docs/ARCHITECTURE.md, "Metrics").
MANIFESTS_RECEIVED = "ManifestsReceived"
MANIFESTS_COMPLETED = "ManifestsCompleted"
MANIFESTS_FAILED = "ManifestsFailed"
CERTIFICATES_QUEUED = "CertificatesQueued"
CERTIFICATES_IMPORTED = "CertificatesImported"
DUPLICATES_SKIPPED = "DuplicatesSkipped"
CERTIFICATES_FAILED = "CertificatesFailed"
THROTTLES = "Throttles"
RETRIES = "Retries"
CIRCUIT_STATE = "CircuitState"
CIRCUIT_OPENED = "CircuitOpened"
CIRCUIT_CLOSED = "CircuitClosed"
JOBS_SWEPT = "JobsSwept"
IMPORT_MESSAGES_REFUSED = "ImportMessagesRefused"

# Dimension names.
DIM_SERVICE = "service"
DIM_ERROR_CLASS = "ErrorClass"
DIM_API = "Api"
DIM_OPERATION = "Operation"
DIM_REASON = "Reason"

# Values of the ErrorClass dimension of CertificatesFailed that are not AWS error classes.
FAILURE_SEND_FAILED = "send_failed"
FAILURE_EXHAUSTED = "exhausted"

# CircuitState gauge values.
CIRCUIT_STATE_VALUES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}

_CALL_COUNTS: Counter[tuple[str, str]] = Counter()
_CALL_COUNTS_LOCK = threading.Lock()
_HOOK_ID = "thingpress-call-metrics"


def emit_metric(
    name: str,
    value: float = 1,
    unit: MetricUnit = MetricUnit.Count,
    dimensions: Mapping[str, str] | None = None,
) -> None:
    """Write one metric as a standalone EMF record to stdout.

    Args:
        name: the metric name, one of the constants of this module.
        value: the metric value.
        unit: the CloudWatch unit (``MetricUnit.NoUnit`` for gauges).
        dimensions: extra dimensions; the record's dimension set is exactly ``service`` plus these.

    Raises:
        ValueError: a dimension is named ``service`` (it is always set from the service name).

    """
    extra = dict(dimensions or {})
    if DIM_SERVICE in extra:
        raise ValueError("The 'service' dimension is set automatically and cannot be passed explicitly.")
    with single_metric(
        name=name,
        unit=unit,
        value=value,
        namespace=metrics.namespace,
        default_dimensions={DIM_SERVICE: SERVICE_NAME, **extra},
    ):
        pass


def count_in_invocation(name: str, value: float = 1, dimensions: Mapping[str, str] | None = None) -> None:
    """Count a metric the way the handlers do: plain counts in the invocation's metric set.

    A count without extra dimensions is added to :data:`metrics`, which ``metrics.log_metrics``
    writes once per invocation; a count with dimensions is written on its own (:func:`emit_metric`).

    Args:
        name: the metric name, one of the constants of this module.
        value: the count.
        dimensions: extra dimensions; None or empty for none.

    """
    if dimensions:
        emit_metric(name, value, dimensions=dimensions)
    else:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def emit_circuit_states(circuits: Mapping[str, Mapping[str, Any]]) -> None:
    """Emit the ``CircuitState`` gauge (0 closed, 1 half-open, 2 open) for every known circuit.

    Call at the end of every invocation so dashboards see the state even when nothing changes.

    Args:
        circuits: the circuit status, ``CircuitRegistry.status()``: per circuit name a mapping with
            its ``state``.

    """
    for operation, status in circuits.items():
        emit_metric(
            CIRCUIT_STATE,
            CIRCUIT_STATE_VALUES[str(status["state"])],
            MetricUnit.NoUnit,
            {DIM_OPERATION: operation},
        )


def _on_needs_retry(
    attempts: int = 1,
    response: tuple[Any, Mapping[str, Any]] | None = None,
    operation: Any = None,
    **_kwargs: Any,
) -> None:
    """Count one attempt's outcome; botocore emits ``needs-retry`` after every attempt.

    An attempt number above one means the attempt was a retry. A throttling error code (or HTTP 429)
    in the parsed response counts as a throttle. Returns None so botocore's retry handler decides.
    """
    api = str(getattr(operation, "name", "unknown"))
    throttled = False
    if response is not None:
        parsed = response[1]
        code = str(parsed.get("Error", {}).get("Code", ""))
        status = parsed.get("ResponseMetadata", {}).get("HTTPStatusCode")
        throttled = code in THROTTLING_CODES or status == 429
    if attempts > 1 or throttled:
        with _CALL_COUNTS_LOCK:
            if attempts > 1:
                _CALL_COUNTS[(RETRIES, api)] += 1
            if throttled:
                _CALL_COUNTS[(THROTTLES, api)] += 1


def install_call_metrics(client: BaseClient) -> BaseClient:
    """Count retries and throttles of every call the client makes, per API operation.

    Installing twice on the same client is harmless (the hook has a unique id).

    Args:
        client: a boto3 client.

    Returns:
        The same client, for chaining.

    """
    client.meta.events.register("needs-retry", _on_needs_retry, unique_id=_HOOK_ID)
    return client


def call_metric_counts() -> dict[tuple[str, str], int]:
    """Return the unflushed counts keyed by ``(metric name, API operation name)``."""
    with _CALL_COUNTS_LOCK:
        return dict(_CALL_COUNTS)


def flush_call_metrics() -> dict[tuple[str, str], int]:
    """Emit the aggregated ``Retries``/``Throttles`` counts (dimension ``Api``) and reset them.

    Returns:
        The counts that were emitted, keyed by ``(metric name, API operation name)``.

    """
    with _CALL_COUNTS_LOCK:
        counts = dict(_CALL_COUNTS)
        _CALL_COUNTS.clear()
    for (name, api), value in sorted(counts.items()):
        emit_metric(name, value, MetricUnit.Count, {DIM_API: api})
    return counts


def end_invocation(circuits: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Emit the circuit states and the aggregated call metrics: the last thing every handler does.

    Args:
        circuits: the function's circuit status (``CircuitRegistry.status()``); None when the
            function protects no call with a circuit.

    """
    emit_circuit_states(circuits or {})
    flush_call_metrics()
