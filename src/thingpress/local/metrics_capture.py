"""Capture the CloudWatch metrics a local run emits, and sample what AWS would measure itself.

Powertools writes every metric as an Embedded Metric Format (EMF) JSON document with ``print()``
(``single_metric`` and ``Metrics.flush_metrics``); on Lambda, CloudWatch Logs turns those stdout
lines into metrics. The local stack runs the handlers in this process, so :class:`MetricsCapture`
installs a tee on ``sys.stdout`` for the duration of a ``with`` block: EMF lines are parsed into
:class:`MetricDatum` values (and, by default, not echoed), every other line passes through
unchanged. Powertools has no output hook for metrics, and a stdout tee needs no patching.

Metrics of the ``AWS/SQS`` and ``AWS/Lambda`` namespaces are published by AWS, not by the code.
:meth:`MetricsCapture.sampler` returns an ``on_progress`` callback for the
:class:`~thingpress.local.esm.EventSourceMappingEmulator` that records the local equivalents
after every invocation, marked ``source="local"``: the visible and in-flight messages of every
queue of the stack (moto's ``GetQueueAttributes``), and per function the invocation's errors,
duration and the number of its invocations running at that moment.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TextIO

from thingpress.local.layers import mark_harness_client

if TYPE_CHECKING:
    from thingpress.local.esm import Invocation
    from thingpress.local.stack import LocalStack

__all__ = [
    "EMF_SOURCE",
    "LOCAL_SOURCE",
    "MetricDatum",
    "MetricsCapture",
    "SeriesKey",
    "parse_emf",
    "parse_emf_line",
]

EMF_SOURCE: Final = "emf"
LOCAL_SOURCE: Final = "local"

LAMBDA_MAX_SECONDS: Final = 900.0
SQS_NAMESPACE: Final = "AWS/SQS"
LAMBDA_NAMESPACE: Final = "AWS/Lambda"
# Queue attributes sampled per invocation, by the CloudWatch metric they stand for.
_QUEUE_METRICS: Final = {
    "ApproximateNumberOfMessagesVisible": "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible": "ApproximateNumberOfMessagesNotVisible",
}

SeriesKey = tuple[str, str, frozenset[tuple[str, str]]]
"""What identifies one CloudWatch metric: namespace, metric name and its dimensions (name, value)."""


@dataclass(frozen=True)
class MetricSeries:
    """What names one CloudWatch metric: its namespace, name and dimensions.

    ``dimensions`` are ``(name, value)`` pairs sorted by name. Both what the code emitted
    (:class:`MetricDatum`) and what the dashboard plots (``thingpress.dashboard.MetricSpec``) are
    series, so their :attr:`key` compare.
    """

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]

    @property
    def key(self) -> SeriesKey:
        """The series key: namespace, name and the set of dimensions."""
        return (self.namespace, self.name, frozenset(self.dimensions))

    @property
    def dimension_map(self) -> dict[str, str]:
        """The dimensions as a dict."""
        return dict(self.dimensions)


@dataclass(frozen=True)
class MetricDatum(MetricSeries):
    """One metric value, as CloudWatch would store it.

    ``timestamp`` is epoch seconds; ``source`` is ``"emf"`` for what the code emitted, ``"local"``
    for a local stand-in of a metric AWS publishes itself.
    """

    value: float
    unit: str
    timestamp: float
    source: str = EMF_SOURCE


def _values(raw: Any, where: str) -> list[float]:
    items = raw if isinstance(raw, list) else [raw]
    values = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise ValueError(f"EMF metric {where} has the non-numeric value {item!r}.")
        values.append(float(item))
    return values


def parse_emf(document: Mapping[str, Any]) -> list[MetricDatum]:
    """Turn one EMF document into its metric values, one per dimension set, metric and value.

    Args:
        document: The decoded JSON object.

    Returns:
        The values (empty when it declares no metric).

    Raises:
        ValueError: The document is not valid EMF: no ``_aws`` metadata, a directive without a
            namespace, a dimension or metric that has no value in the document, or a non-numeric value.

    """
    metadata = document.get("_aws")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("CloudWatchMetrics"), list):
        raise ValueError("The document has no _aws.CloudWatchMetrics metadata, so it is not EMF.")
    timestamp = metadata.get("Timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise ValueError(f"The EMF timestamp {timestamp!r} is not a number of milliseconds.")
    data: list[MetricDatum] = []
    for directive in metadata["CloudWatchMetrics"]:
        namespace = directive.get("Namespace") if isinstance(directive, Mapping) else None
        if not isinstance(namespace, str) or not namespace:
            raise ValueError("An EMF directive has no Namespace.")
        dimension_sets = directive.get("Dimensions") or [[]]
        for definition in directive.get("Metrics") or []:
            name = definition.get("Name") if isinstance(definition, Mapping) else None
            if not isinstance(name, str) or name not in document:
                raise ValueError(f"The EMF metric {name!r} has no value in the document.")
            values = _values(document[name], name)
            unit = str(definition.get("Unit", "None"))
            for dimension_names in dimension_sets:
                missing = [d for d in dimension_names if not isinstance(document.get(d), str)]
                if missing:
                    raise ValueError(f"The EMF metric {name} lacks the string dimension(s) {missing}.")
                dimensions = tuple(sorted((d, str(document[d])) for d in dimension_names))
                data.extend(
                    MetricDatum(namespace, name, dimensions, value, unit, timestamp / 1000.0)
                    for value in values
                )
    return data


def parse_emf_line(line: str) -> list[MetricDatum] | None:
    """Parse one output line into its metric values.

    A JSON object with ``_aws`` metadata that is not valid EMF raises ``ValueError`` (see
    `parse_emf`): the code printed a broken metric, which must not pass unnoticed.

    Args:
        line: The line.

    Returns:
        The values, or None when the line is not EMF.

    """
    text = line.strip()
    if not text.startswith("{") or '"_aws"' not in text:
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(document, dict) or "_aws" not in document:
        return None
    return parse_emf(document)


class _LineState(threading.local):
    """Per-thread state of the tee: the pending JSON candidate line, or a line being passed through."""

    def __init__(self) -> None:
        self.pending = ""
        self.passing = False


class _EmfTee(io.TextIOBase):
    """A text stream that hands complete EMF lines to a sink and forwards everything else.

    ``print()`` writes the text and the newline in two calls and threads interleave, so the
    partial line is kept per thread. A line that does not start with ``{`` is forwarded at once.
    """

    def __init__(self, target: TextIO, sink: Callable[[str], bool]) -> None:
        super().__init__()
        self.target = target
        self._sink = sink
        self._state = _LineState()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase declares it as a plain attribute
        """The target's encoding."""
        return str(getattr(self.target, "encoding", "utf-8"))

    def isatty(self) -> bool:
        """Return whether the target is a terminal."""
        return bool(self.target.isatty())

    def fileno(self) -> int:
        """Return the target's file descriptor (raises what the target raises)."""
        return self.target.fileno()

    def writable(self) -> bool:
        """Return True: the tee is always writable."""
        return True

    def write(self, text: str) -> int:
        """Forward or collect ``text``; return its length."""
        state = self._state
        rest = text
        while rest:
            if not state.pending and not state.passing and not rest.startswith("{"):
                state.passing = True
            line, newline, rest = rest.partition("\n")
            if state.passing:
                self.target.write(line + newline)
                state.passing = not newline
                continue
            state.pending += line
            if newline:
                complete, state.pending = state.pending, ""
                if not self._sink(complete):
                    self.target.write(complete + "\n")
        return len(text)

    def flush(self) -> None:
        """Flush the target unless it is closed (a pending partial JSON line waits for its newline).

        The tee may outlive its target: at interpreter exit it is closed, which flushes it, after
        the stream it wrote to (pytest's capture file, for one) has been closed.
        """
        if not self.target.closed:
            self.target.flush()

    def drain(self) -> None:
        """Forward this thread's pending partial line, if any."""
        if self._state.pending:
            pending, self._state.pending = self._state.pending, ""
            if not self._sink(pending):
                self.target.write(pending)


@dataclass
class _StackFacts:
    """What the dashboard needs from the stack that ran: physical ids, parameters, region, name."""

    physical_ids: dict[str, dict[str, Any]] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    stack_name: str = "thingpress"


class MetricsCapture:
    """Collects the EMF metrics printed while active, and local samples of AWS-published metrics.

    Use it as a context manager; it may be entered more than once. ``data`` holds the emitted
    values, ``samples`` the local stand-ins; both are appended to from any thread.

    Args:
        echo: Also forward EMF lines to the real stdout (default False, as CloudWatch Logs would
            not show them either).
        clock: Epoch seconds, for the local samples.

    """

    def __init__(self, *, echo: bool = False, clock: Callable[[], float] = time.time) -> None:
        """Create an inactive capture with no data."""
        self.echo = echo
        self.clock = clock
        self.data: list[MetricDatum] = []
        self.samples: list[MetricDatum] = []
        self.stack = _StackFacts()
        self._lock = threading.Lock()
        self._tee: _EmfTee | None = None
        self._redirect: contextlib.AbstractContextManager[Any] | None = None

    # --- the stdout tee ------------------------------------------------------------------------------

    def __enter__(self) -> MetricsCapture:
        """Start capturing: replace ``sys.stdout`` by the tee. Raises RuntimeError when already active."""
        if self._tee is not None:
            raise RuntimeError("This MetricsCapture is already active.")
        self._tee = _EmfTee(sys.stdout, self._take_line)
        self._redirect = contextlib.redirect_stdout(self._tee)
        self._redirect.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop capturing and restore ``sys.stdout``."""
        if self._tee is None or self._redirect is None:
            raise RuntimeError("MetricsCapture was exited without being entered.")
        self._tee.drain()
        self._redirect.__exit__(exc_type, exc, traceback)
        self._tee = None
        self._redirect = None

    def _take_line(self, line: str) -> bool:
        """Record an EMF line; return True when it was EMF (and should not be echoed)."""
        parsed = parse_emf_line(line)
        if parsed is None:
            return False
        self.add(parsed)
        return not self.echo

    def add(self, data: Iterable[MetricDatum]) -> None:
        """Record metric values (local samples go to ``samples``, everything else to ``data``)."""
        items = list(data)
        with self._lock:
            for datum in items:
                (self.samples if datum.source == LOCAL_SOURCE else self.data).append(datum)

    def feed(self, text: str) -> None:
        """Record the EMF lines of already-captured output (for example a Lambda log); skip the rest."""
        for line in text.splitlines():
            parsed = parse_emf_line(line)
            if parsed is not None:
                self.add(parsed)

    # --- views ---------------------------------------------------------------------------------------

    def emitted(self) -> dict[SeriesKey, list[MetricDatum]]:
        """Return the emitted (EMF) values grouped by series, in emission order."""
        return _group(self.data)

    def sampled(self) -> dict[SeriesKey, list[MetricDatum]]:
        """Return the local samples of AWS-published metrics grouped by series."""
        return _group(self.samples)

    def series(self) -> dict[SeriesKey, list[MetricDatum]]:
        """Return every value, emitted and sampled, grouped by series."""
        return _group([*self.data, *self.samples])

    # --- local samples of AWS metrics -----------------------------------------------------------------

    def bind_stack(self, stack: LocalStack) -> None:
        """Remember the stack's physical ids, parameters, region and name (to resolve the dashboard)."""
        self.stack = _StackFacts(
            physical_ids={key: dict(value) for key, value in stack.physical_ids.items()},
            parameters=dict(stack.parameters),
            region=stack.region,
            stack_name=stack.stack_name,
        )

    def sampler(
        self, stack: LocalStack, then: Callable[[Invocation], None] | None = None
    ) -> Callable[[Invocation], None]:
        """Return an ``on_progress`` callback that samples the stack after every invocation.

        Each call records, at the capture's clock: per queue of the stack,
        ``ApproximateNumberOfMessagesVisible`` and ``ApproximateNumberOfMessagesNotVisible``; per
        function, ``Errors`` (1 when the invocation failed, else 0), ``Duration`` (milliseconds, the
        emulator's measure) and ``ConcurrentExecutions`` (invocations of that function finished
        within the duration of this one, this one included: what ran at the same time, as far as
        the emulator tells).

        Args:
            stack: The started stack.
            then: A callback to chain, if any.

        Returns:
            The callback.

        """
        self.bind_stack(stack)
        sqs = mark_harness_client(stack.client("sqs"))  # fault and quota layers leave it alone
        queues = {
            str(attributes["QueueName"]): str(attributes["QueueUrl"])
            for attributes in stack.physical_ids.values()
            if "QueueUrl" in attributes and "QueueName" in attributes
        }
        functions = {logical_id: spec.name for logical_id, spec in stack.functions.items()}
        finished: list[tuple[str, float, float]] = []
        finished_lock = threading.Lock()

        def sample(invocation: Invocation) -> None:
            now = self.clock()
            data: list[MetricDatum] = []
            for queue_name, url in sorted(queues.items()):
                attributes = sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=list(_QUEUE_METRICS.values())
                )["Attributes"]
                queue = (("QueueName", queue_name),)
                for metric, attribute in _QUEUE_METRICS.items():
                    value = float(attributes.get(attribute, 0))
                    data.append(MetricDatum(SQS_NAMESPACE, metric, queue, value, "Count", now, LOCAL_SOURCE))
            started = now - invocation.duration
            with finished_lock:
                # No Lambda invocation lasts longer than 15 minutes: older ones cannot overlap.
                finished[:] = [item for item in finished if item[2] > now - LAMBDA_MAX_SECONDS]
                finished.append((invocation.function, started, now))
                overlapping = sum(1 for fn, _, end in finished if fn == invocation.function and end > started)
            function = (("FunctionName", functions.get(invocation.function, invocation.function)),)
            for metric, value, unit in (
                ("Errors", float(invocation.error is not None), "Count"),
                ("Duration", invocation.duration * 1000.0, "Milliseconds"),
                ("ConcurrentExecutions", float(overlapping), "Count"),
            ):
                data.append(MetricDatum(LAMBDA_NAMESPACE, metric, function, value, unit, now, LOCAL_SOURCE))
            self.add(data)
            if then is not None:
                then(invocation)

        return sample


def _group(data: Iterable[MetricDatum]) -> dict[SeriesKey, list[MetricDatum]]:
    grouped: dict[SeriesKey, list[MetricDatum]] = {}
    for datum in data:
        grouped.setdefault(datum.key, []).append(datum)
    return grouped
