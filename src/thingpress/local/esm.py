"""An SQS event-source-mapping emulator that runs the stack's real handlers in-process.

`EventSourceMappingEmulator` polls the stack's queues on moto, builds the event Lambda's SQS poller
sends, invokes the function's handler and settles the batch as Lambda does: success deletes the
records; with ReportBatchItemFailures only the records not listed in ``batchItemFailures`` are
deleted; an exception, an invalid response or a timeout fails the whole batch. Failed records are
made visible again after `retry_visibility_seconds` (instead of the queue's visibility timeout, so
retries are immediate); moto itself moves a record whose receive count reached the redrive policy's
maxReceiveCount to the dead-letter queue on the next receive, as SQS does.

Scheduled functions (SAM `Schedule` events, `LocalStack.schedules`) never fire on their own;
`invoke_scheduled` runs one once with the event EventBridge sends, recorded like the other invocations.

Differences from Lambda, on purpose: MaximumBatchingWindowInSeconds is not waited for (a batch is
whatever the queue holds, up to BatchSize); invocations of one function run one at a time unless
`max_concurrency` allows more (ScalingConfig.MaximumConcurrency still caps it).

The events themselves (an SQS batch, a scheduled event) are built by `thingpress.local.events`.

Size: one class holds Lambda's whole polling, delivery and settling contract, which reads best together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from thingpress.local.events import scheduled_event, sqs_event
from thingpress.local.provision import EventSourceSpec, ScheduleSpec
from thingpress.local.stack import LocalStack

__all__ = ["EventSourceMappingEmulator", "Invocation", "RunStats", "scheduled_event"]

SQS_BATCH_LIMIT: Final = 10  # ReceiveMessage, DeleteMessageBatch and ChangeMessageVisibilityBatch cap
DEFAULT_MAXIMUM_CONCURRENCY: Final = 2  # AWS's lowest ScalingConfig.MaximumConcurrency
_DEPTH_ATTRIBUTES: Final = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)

BeforeInvoke = Callable[[str, dict[str, Any]], dict[str, Any]]
AfterInvoke = Callable[[str, dict[str, Any], Any], None]


@dataclass(frozen=True)
class Invocation:
    """One handler invocation by the emulator.

    `failed_records` counts the records that stay on the queue for this delivery (all of them on an
    `error`); `delivery` is 1, or 2 for the duplicate of a batch delivered twice. A scheduled
    invocation has no `queue` (empty) and no records.
    """

    function: str
    queue: str
    records: int
    failed_records: int
    response: Any
    error: BaseException | None
    started: float
    duration: float
    delivery: int = 1


@dataclass
class RunStats:
    """What one `run_until_idle()` did; `idle` is false when it stopped at a bound instead."""

    invocations: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    failed_records: int = 0
    errors: int = 0
    moved_to_dlq: dict[str, int] = field(default_factory=dict)
    idle: bool = False
    elapsed: float = 0.0

    @property
    def total_invocations(self) -> int:
        """The number of handler invocations of every function."""
        return sum(self.invocations.values())


class EventSourceMappingEmulator:
    """Feeds the stack's functions from their SQS event sources, as Lambda's event source mappings do.

    An exception raised by a fault-injection hook fails the whole batch, like a crash of the
    execution environment before or after the handler ran.

    Args:
        stack: The started `LocalStack`.
        clock: Seconds; used for contexts, durations and bounds.
        sleep: Waits on invisible messages.
        retry_visibility_seconds: The visibility given to failed records.
        max_concurrency: Concurrent invocations per event source; ``None`` means
            ScalingConfig.MaximumConcurrency, else capped by it.
        poll_interval: Seconds to wait before polling again when a round received nothing.
        before_invoke: Fault-injection hook; may replace the event.
        after_invoke: Fault-injection hook; sees the response or the exception.
        duplicate_delivery: True for a batch to deliver twice; a record is then deleted if either
            delivery succeeded for it.
        on_progress: Called with every `Invocation`.

    """

    def __init__(
        self,
        stack: LocalStack,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        retry_visibility_seconds: int = 0,
        max_concurrency: int | None = 1,
        poll_interval: float = 0.05,
        before_invoke: BeforeInvoke | None = None,
        after_invoke: AfterInvoke | None = None,
        duplicate_delivery: Callable[[str, dict[str, Any]], bool] | None = None,
        on_progress: Callable[[Invocation], None] | None = None,
    ) -> None:
        """Bind the emulator to a started stack; nothing is polled until `run_until_idle()`."""
        self.stack = stack
        self.clock = clock
        self.sleep = sleep
        self.retry_visibility_seconds = retry_visibility_seconds
        self.max_concurrency = max_concurrency
        self.poll_interval = poll_interval
        self.before_invoke = before_invoke
        self.after_invoke = after_invoke
        self.duplicate_delivery = duplicate_delivery
        self.on_progress = on_progress
        self.invocations: list[Invocation] = []
        self._lock = threading.Lock()
        self._sqs = stack.client("sqs")

    @property
    def sources(self) -> list[EventSourceSpec]:
        """The enabled SQS event sources of the stack."""
        return [source for source in self.stack.event_sources if source.enabled]

    def concurrency(self, source: EventSourceSpec) -> int:
        """Return how many invocations of `source` may run at once."""
        if self.max_concurrency is None:
            return source.maximum_concurrency or DEFAULT_MAXIMUM_CONCURRENCY
        if source.maximum_concurrency is None:
            return max(1, self.max_concurrency)
        return max(1, min(self.max_concurrency, source.maximum_concurrency))

    # --- queue access --------------------------------------------------------------------------------

    def queue_depth(self, queue_url: str) -> int:
        """Return the messages of a queue: visible, in flight and delayed."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=list(_DEPTH_ATTRIBUTES)
        )
        return sum(int(attributes["Attributes"].get(name, 0)) for name in _DEPTH_ATTRIBUTES)

    def receive(self, source: EventSourceSpec) -> list[dict[str, Any]]:
        """Receive up to BatchSize messages from the source queue (several receives if needed)."""
        messages: list[dict[str, Any]] = []
        while len(messages) < source.batch_size:
            response = self._sqs.receive_message(
                QueueUrl=source.queue_url,
                MaxNumberOfMessages=min(SQS_BATCH_LIMIT, source.batch_size - len(messages)),
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            received = response.get("Messages", [])
            if not received:
                break
            messages.extend(received)
        return messages

    def build_event(self, source: EventSourceSpec, messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Return the SQS event Lambda would pass for these received messages."""
        return sqs_event(messages, queue_arn=source.queue_arn, region=self.stack.region)

    # --- delivery --------------------------------------------------------------------------------------

    def deliver(self, source: EventSourceSpec, messages: Sequence[dict[str, Any]]) -> list[Invocation]:
        """Invoke the source's function with these messages and settle the batch.

        The batch is delivered twice when `duplicate_delivery` says so. Records that succeeded are
        deleted, failed ones are made visible again. A handler that cannot be loaded raises
        `LocalStackError`; settling failures raise botocore errors.

        Args:
            source: The event source.
            messages: The received messages.

        Returns:
            The invocations.

        """
        event = self.build_event(source, messages)
        deliveries = 2 if self.duplicate_delivery and self.duplicate_delivery(source.function, event) else 1
        failed = {message["MessageId"] for message in messages}
        invocations = []
        for delivery in range(1, deliveries + 1):
            invocation, failed_ids = self._invoke(source, event, delivery)
            failed &= failed_ids
            invocations.append(invocation)
        self._settle(source, messages, failed)
        return invocations

    def _record(self, invocation: Invocation) -> None:
        """Add an invocation to `invocations` and report it to `on_progress`."""
        with self._lock:
            self.invocations.append(invocation)
        if self.on_progress:
            self.on_progress(invocation)

    def _invoke(
        self, source: EventSourceSpec, event: dict[str, Any], delivery: int
    ) -> tuple[Invocation, set[str]]:
        ids = [record["messageId"] for record in event["Records"]]
        handler = self.stack.handler(source.function)
        context = self.stack.make_context(source.function, clock=self.clock)
        delivered = event
        response: Any = None
        error: BaseException | None = None
        try:
            if self.before_invoke:
                delivered = self.before_invoke(source.function, event)
            with self.stack.function_environment(source.function):
                response = handler(delivered, context)
        except Exception as exception:  # a handler exception fails the whole batch, as on Lambda
            error = exception
        if error is None and context.timed_out():
            error = TimeoutError(f"Task timed out after {context.timeout_seconds:.2f} seconds")
        failed_ids = set(ids)
        if error is None:
            failed_ids, error = self._failed_ids(source, response, ids)
        if self.after_invoke:
            try:
                self.after_invoke(source.function, delivered, error if error is not None else response)
            except Exception as exception:  # an injected crash after the handler: the batch is not settled
                error, failed_ids = exception, set(ids)
        invocation = Invocation(
            function=source.function,
            queue=source.queue,
            records=len(ids),
            failed_records=len(failed_ids),
            response=response,
            error=error,
            started=context.started,
            duration=self.clock() - context.started,
            delivery=delivery,
        )
        self._record(invocation)
        return invocation, failed_ids

    def invoke_scheduled(self, schedule: ScheduleSpec, *, at: datetime | None = None) -> Invocation:
        """Invoke a schedule's function once with the event EventBridge sends (`scheduled_event`).

        The invocation is recorded and reported to `on_progress` like the mappings' ones; an exception of
        the handler or a timeout is its `error` (the SQS hooks `before_invoke`/`after_invoke` do not
        apply). A handler that cannot be loaded raises `LocalStackError`.

        Args:
            schedule: One of the stack's `schedules`.
            at: The event time (default now).

        Returns:
            The invocation.

        """
        event = scheduled_event(self.stack, schedule, at or datetime.now(UTC))
        handler = self.stack.handler(schedule.function)
        context = self.stack.make_context(schedule.function, clock=self.clock)
        response: Any = None
        error: BaseException | None = None
        try:
            with self.stack.function_environment(schedule.function):
                response = handler(event, context)
        except Exception as exception:  # an asynchronous invocation's error is Lambda's, not ours
            error = exception
        if error is None and context.timed_out():
            error = TimeoutError(f"Task timed out after {context.timeout_seconds:.2f} seconds")
        invocation = Invocation(
            function=schedule.function,
            queue="",
            records=0,
            failed_records=0,
            response=response,
            error=error,
            started=context.started,
            duration=self.clock() - context.started,
        )
        self._record(invocation)
        return invocation

    @staticmethod
    def _failed_ids(
        source: EventSourceSpec, response: Any, ids: Sequence[str]
    ) -> tuple[set[str], BaseException | None]:
        if not source.report_batch_item_failures or response is None:
            return set(), None
        if not isinstance(response, dict):
            return set(ids), ValueError(f"Invalid batch response {response!r}: not a JSON object.")
        failures = response.get("batchItemFailures") or []
        if not isinstance(failures, list):
            return set(ids), ValueError("Invalid batch response: batchItemFailures is not a list.")
        failed: set[str] = set()
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not identifier or identifier not in ids:
                # Lambda fails the whole batch for an empty, null or unknown itemIdentifier.
                return set(ids), ValueError(
                    f"Invalid batch response: itemIdentifier {identifier!r} is not in the batch."
                )
            failed.add(identifier)
        return failed, None

    def _settle(self, source: EventSourceSpec, messages: Sequence[dict[str, Any]], failed: set[str]) -> None:
        done = [message for message in messages if message["MessageId"] not in failed]
        retry = [message for message in messages if message["MessageId"] in failed]
        for start in range(0, len(done), SQS_BATCH_LIMIT):
            chunk = done[start : start + SQS_BATCH_LIMIT]
            self._sqs.delete_message_batch(
                QueueUrl=source.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        self._make_visible(source, retry)

    def _make_visible(self, source: EventSourceSpec, messages: Sequence[dict[str, Any]]) -> None:
        """Make received messages visible again after `retry_visibility_seconds` (a failed delivery)."""
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            chunk = messages[start : start + SQS_BATCH_LIMIT]
            self._sqs.change_message_visibility_batch(
                QueueUrl=source.queue_url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": self.retry_visibility_seconds,
                    }
                    for i, m in enumerate(chunk)
                ],
            )

    # --- the loop --------------------------------------------------------------------------------------

    def idle(self) -> bool:
        """Return whether every enabled source queue is empty (nothing visible, in flight or delayed).

        moto computes a queue's counts one after another, so a message whose delay or visibility
        timeout ends between two of them is in none; by a second look it is visible (and stays so
        until received), so the queues count as empty only when two looks in a row find them so.
        """
        return all(self._empty() for _look in range(2))

    def _empty(self) -> bool:
        return all(self.queue_depth(source.queue_url) == 0 for source in self.sources)

    def _dead_letter_depths(self) -> dict[str, int]:
        urls = {source.dead_letter_queue_url for source in self.sources if source.dead_letter_queue_url}
        return {url: self.queue_depth(url) for url in sorted(urls)}

    def _queue_logical_id(self, url: str) -> str:
        return next(
            (lid for lid, attributes in self.stack.physical_ids.items() if attributes.get("QueueUrl") == url),
            url,
        )

    def run_until_idle(
        self,
        max_seconds: float = 60.0,
        max_invocations: int | None = None,
        until: Callable[[], bool] | None = None,
    ) -> RunStats:
        """Poll every enabled source round-robin until all their queues are empty and nothing runs.

        Raises what `deliver` raises. A stop at a bound lets the invocations already running finish.

        Args:
            max_seconds: Stop early (``idle`` false) after this much `clock` time.
            max_invocations: Stop early after this many batches.
            until: Stop early (``idle`` false) as soon as this returns true (a caller's own deadline).

        Returns:
            The run's statistics.

        """
        started = self.clock()
        first = len(self.invocations)
        dead_letters_before = self._dead_letter_depths()
        executors: dict[int, ThreadPoolExecutor] = {}
        running: dict[Future[list[Invocation]], int] = {}
        in_flight: dict[int, int] = {}
        batches = 0
        idle = False
        try:
            while True:
                for future in [future for future in running if future.done()]:
                    in_flight[running.pop(future)] -= 1
                    future.result()
                bounded = max_invocations is not None and batches >= max_invocations
                if bounded or self.clock() - started >= max_seconds or (until is not None and until()):
                    break
                progressed = False
                for index, source in enumerate(self.sources):
                    if until is not None and until():
                        break
                    limit = self.concurrency(source)
                    if in_flight.get(index, 0) >= limit:
                        continue
                    messages = self.receive(source)
                    if not messages:
                        continue
                    progressed = True
                    batches += 1
                    if limit == 1:
                        self.deliver(source, messages)
                    else:
                        executor = executors.setdefault(
                            index, ThreadPoolExecutor(limit, f"esm-{source.name}")
                        )
                        running[executor.submit(self.deliver, source, messages)] = index
                        in_flight[index] = in_flight.get(index, 0) + 1
                    if max_invocations is not None and batches >= max_invocations:
                        break
                if progressed:
                    continue
                if running:
                    wait(list(running), timeout=self.poll_interval, return_when=FIRST_COMPLETED)
                    continue
                if self.idle():
                    idle = True
                    break
                self.sleep(self.poll_interval)
            for future in list(running):
                future.result()
        finally:
            for executor in executors.values():
                executor.shutdown(wait=True)
        return self._stats(first, dead_letters_before, idle, self.clock() - started)

    def _stats(self, first: int, dead_letters_before: dict[str, int], idle: bool, elapsed: float) -> RunStats:
        stats = RunStats(idle=idle, elapsed=elapsed)
        with self._lock:
            invocations = self.invocations[first:]
        for invocation in invocations:
            stats.invocations[invocation.function] = stats.invocations.get(invocation.function, 0) + 1
            stats.records[invocation.function] = (
                stats.records.get(invocation.function, 0) + invocation.records
            )
            stats.failed_records += invocation.failed_records
            stats.errors += invocation.error is not None
        for url, before in dead_letters_before.items():
            moved = self.queue_depth(url) - before
            if moved > 0:
                stats.moved_to_dlq[self._queue_logical_id(url)] = moved
        return stats
