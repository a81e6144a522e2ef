"""Invocation-side faults: an event-source-mapping emulator that duplicates, redelivers and crashes.

See `thingpress.local.faults` for the fault kinds.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from thingpress.local.esm import EventSourceMappingEmulator, Invocation, RunStats
from thingpress.local.layers import mark_harness_client
from thingpress.local.provision import EventSourceSpec
from thingpress.local.stack import LocalStack

__all__ = [
    "CrashAfter",
    "EmulatorFaults",
    "FaultyEmulator",
    "SimulatedCrash",
    "function_client",
]

_CONTEXT_KEYS: Final = "thingpress_crash_keys"


class SimulatedCrash(BaseException):
    """The invocation's process died; raised inside a handler by a `CrashAfter` hook.

    A `BaseException` so that the handler's own ``except Exception`` (per-record error handling,
    Powertools' batch processor) cannot swallow it, just as it could not outlive a dead process.
    """


@dataclass(frozen=True)
class CrashAfter:
    """Crash an invocation of `function` after the `after`-th successful `operation` call.

    The count runs over all invocations from the emulator's start; `times` crashes happen in all,
    each `after` calls after the previous one. Once an invocation crashed, its remaining calls for
    the same import entries (thing name, certificate id or PEM) crash too, as a dead process would
    make none.
    """

    after: int
    function: str = "BulkImporterFunction"
    service: str = "iot"
    operation: str = "CreateThing"
    times: int = 1


@dataclass(frozen=True)
class EmulatorFaults:
    """Invocation-side faults of a `FaultyEmulator`.

    `duplicate_delivery_rate`: probability that a batch of one of `duplicate_functions` is
    delivered twice; `duplicate_batches`: the 1-based numbers of the batches of each of those
    functions that are delivered twice for sure. `duplicate_s3_event_rate`: probability that an S3
    notification seen by one of `s3_event_functions` is sent to its queue again (once per
    notification). `visibility_expiries`: how many times a record of a running
    `visibility_function` invocation becomes visible and is delivered concurrently, starting at its
    `visibility_after`-th invocation. `crash`: see `CrashAfter`.
    """

    duplicate_delivery_rate: float = 0.0
    duplicate_batches: frozenset[int] = frozenset()
    duplicate_functions: tuple[str, ...] = ("BulkImporterFunction",)
    duplicate_s3_event_rate: float = 0.0
    s3_event_functions: tuple[str, ...] = ("ManifestProviderFunction",)
    visibility_expiries: int = 0
    visibility_function: str = "BulkImporterFunction"
    visibility_after: int = 1
    crash: CrashAfter | None = None


def _entry_keys(body: str) -> set[str]:
    """Return the identifiers (thing names, certificate ids and PEMs) of an import message body."""
    try:
        document = json.loads(body)
    except ValueError:
        return set()
    entries = document.get("entries") if isinstance(document, dict) else None
    keys: set[str] = set()
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            for name in ("thing_name", "certificate_id", "certificate_pem"):
                value = entry.get(name)
                if isinstance(value, str) and value:
                    keys.add(value.strip())
    return keys


def _call_keys(params: Mapping[str, Any]) -> set[str]:
    """Return the entry identifiers an IoT call's parameters refer to."""
    keys = set()
    for name in ("thingName", "certificateId", "certificatePem"):
        value = params.get(name)
        if isinstance(value, str):
            keys.add(value.strip())
    for name in ("target", "principal"):
        value = params.get(name)
        if isinstance(value, str):
            keys.add(value.rpartition("/")[2])
    return keys


class _CrashHooks:
    """The botocore hooks of a `CrashAfter` and the bookkeeping of running invocations."""

    def __init__(self, crash: CrashAfter) -> None:
        self.crash = crash
        self._lock = threading.Lock()
        self._successes = 0
        self.fired = 0
        self._running: dict[int, set[str]] = {}
        self._dead: set[int] = set()

    def started(self, token: int, event: Mapping[str, Any]) -> None:
        keys: set[str] = set()
        for record in event.get("Records", []):
            keys |= _entry_keys(str(record.get("body", "")))
        with self._lock:
            self._running[token] = keys

    def finished(self, token: int) -> None:
        with self._lock:
            self._running.pop(token, None)
            self._dead.discard(token)

    def finished_dead(self) -> None:
        """Forget the invocations that crashed (their handlers have returned)."""
        with self._lock:
            for token in self._dead:
                self._running.pop(token, None)
            self._dead.clear()

    def before_parameters(
        self, params: Mapping[str, Any], context: dict[str, Any] | None = None, **_kwargs: Any
    ) -> None:
        keys = _call_keys(params)
        if context is not None:
            # after-call gets no parameters; the request context carries them over.
            context[_CONTEXT_KEYS] = keys
        with self._lock:
            dead = any(keys & self._running.get(token, set()) for token in self._dead)
        if dead:
            raise SimulatedCrash("The invocation had already crashed.")

    def after_call(
        self, http_response: Any = None, context: Mapping[str, Any] | None = None, **_kwargs: Any
    ) -> None:
        if http_response is None or not 200 <= int(getattr(http_response, "status_code", 500)) < 300:
            return
        keys: set[str] = set((context or {}).get(_CONTEXT_KEYS, set()))
        with self._lock:
            if self.fired >= self.crash.times:
                return
            self._successes += 1
            if self._successes < self.crash.after * (self.fired + 1):
                return
            self.fired += 1
            self._dead |= {token for token, entries in self._running.items() if keys & entries}
        raise SimulatedCrash(
            f"{self.crash.function} crashed after {self._successes} {self.crash.operation} calls."
        )

    def attach(self, client: Any) -> None:
        events = client.meta.events
        events.register(
            f"before-parameter-build.{self.crash.service}",
            self.before_parameters,
            unique_id=f"thingpress-crash-before-{id(self)}",
        )
        events.register(
            f"after-call.{self.crash.service}.{self.crash.operation}",
            self.after_call,
            unique_id=f"thingpress-crash-after-{id(self)}",
        )


def function_client(stack: LocalStack, function: str, service: str) -> Any:
    """Return the cached layer client a function's handler uses for `service`.

    The layer's `get_client` caches one client per service and configuration; asked under the
    function's environment it returns the very client the handler will use.
    """
    from layer_utils.aws_utils import get_client  # noqa: PLC0415 - only where a function's client is needed

    with stack.function_environment(function):
        return get_client(service)


class FaultyEmulator(EventSourceMappingEmulator):
    """An `EventSourceMappingEmulator` that injects the invocation-side faults of `EmulatorFaults`.

    The emulator's own SQS client is marked as the harness's, so server-side layers leave the
    polling alone. `crashes` lists the invocations that died of `SimulatedCrash`;
    `visibility_redeliveries` counts the concurrent deliveries caused by an expired visibility
    timeout; `duplicate_s3_events` the notifications sent twice.

    Args:
        stack: The started stack.
        faults: The faults to inject (default none).
        seed: The seed of every random choice.
        **options: The emulator's keyword options; its own `before_invoke`, `after_invoke`,
            `duplicate_delivery` and `on_progress` still run.

    """

    def __init__(
        self, stack: LocalStack, faults: EmulatorFaults | None = None, *, seed: int = 0, **options: Any
    ) -> None:
        """Bind to the stack; attach the crash hooks to the crashing function's client."""
        self.faults = faults or EmulatorFaults()
        self._random = random.Random(seed)  # noqa: S311 - reproducible fault choices, not secrets  # nosec B311
        self._faults_lock = threading.Lock()
        self._user_before = options.pop("before_invoke", None)
        self._user_after = options.pop("after_invoke", None)
        self._user_duplicate = options.pop("duplicate_delivery", None)
        super().__init__(
            stack,
            before_invoke=self._before,
            after_invoke=self._after,
            duplicate_delivery=self._duplicate,
            **options,
        )
        mark_harness_client(self._sqs)
        self.crashes: list[Invocation] = []
        self.visibility_redeliveries = 0
        self.duplicate_s3_events = 0
        self._duplicated_bodies: set[str] = set()
        self._invocation_counts: Counter[str] = Counter()
        self._batch_counts: Counter[str] = Counter()
        self._expiries_left = self.faults.visibility_expiries
        self._extra: list[threading.Thread] = []
        self._extra_errors: list[BaseException] = []
        self._crash: _CrashHooks | None = None
        crash = self.faults.crash
        if crash is not None:
            self._crash = _CrashHooks(crash)
            self._crash.attach(function_client(stack, crash.function, crash.service))

    @property
    def crashes_fired(self) -> int:
        """How many crashes were injected."""
        return self._crash.fired if self._crash is not None else 0

    def _source_for(self, event: Mapping[str, Any]) -> EventSourceSpec | None:
        records = event.get("Records") or []
        arn = records[0].get("eventSourceARN") if records else None
        return next((source for source in self.sources if source.queue_arn == arn), None)

    # --- hooks -------------------------------------------------------------------------------------

    def _duplicate(self, function: str, event: dict[str, Any]) -> bool:
        if self._user_duplicate is not None and self._user_duplicate(function, event):
            return True
        if function not in self.faults.duplicate_functions:
            return False
        with self._faults_lock:
            self._batch_counts[function] += 1
            if self._batch_counts[function] in self.faults.duplicate_batches:
                return True
            return bool(self.faults.duplicate_delivery_rate) and (
                self._random.random() < self.faults.duplicate_delivery_rate
            )

    def _before(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        if self._user_before is not None:
            event = self._user_before(function, event)
        with self._faults_lock:
            self._invocation_counts[function] += 1
            count = self._invocation_counts[function]
        if function in self.faults.s3_event_functions and self.faults.duplicate_s3_event_rate:
            self._duplicate_s3_events(event)
        if self._crash is not None and function == self._crash.crash.function:
            self._crash.started(id(event), event)
        if function == self.faults.visibility_function and count >= self.faults.visibility_after:
            self._expire_visibility(event)
        return event

    def _after(self, function: str, event: dict[str, Any], outcome: Any) -> None:
        if self._crash is not None:
            self._crash.finished(id(event))
        if self._user_after is not None:
            self._user_after(function, event, outcome)

    def _duplicate_s3_events(self, event: Mapping[str, Any]) -> None:
        source = self._source_for(event)
        if source is None:
            return
        for record in event.get("Records", []):
            body = str(record.get("body", ""))
            if '"aws:s3"' not in body:
                continue
            with self._faults_lock:
                if body in self._duplicated_bodies:
                    continue
                self._duplicated_bodies.add(body)
                chosen = self._random.random() < self.faults.duplicate_s3_event_rate
                if chosen:
                    self.duplicate_s3_events += 1
            if chosen:
                self._sqs.send_message(QueueUrl=source.queue_url, MessageBody=body)

    def _expire_visibility(self, event: Mapping[str, Any]) -> None:
        records = event.get("Records") or []
        source = self._source_for(event)
        with self._faults_lock:
            if self._expiries_left <= 0 or not records or source is None:
                return
            self._expiries_left -= 1
            record = self._random.choice(records)
        self._sqs.change_message_visibility(
            QueueUrl=source.queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
        )
        message = self._receive_message(source, str(record["messageId"]))
        if message is None:
            # The poller received it first: it is being delivered concurrently all the same.
            with self._faults_lock:
                self.visibility_redeliveries += 1
            return
        thread = threading.Thread(
            target=self._deliver_extra, args=(source, [message]), name="esm-visibility-expiry", daemon=True
        )
        with self._faults_lock:
            self.visibility_redeliveries += 1
            self._extra.append(thread)
        thread.start()

    def _receive_message(self, source: EventSourceSpec, message_id: str) -> dict[str, Any] | None:
        """Receive one specific message that was just made visible; release any other."""
        for _ in range(10):
            received = self._sqs.receive_message(
                QueueUrl=source.queue_url,
                MaxNumberOfMessages=1,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not received:
                return None
            message: dict[str, Any] = received[0]
            if message["MessageId"] == message_id:
                return message
            self._sqs.change_message_visibility(
                QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        return None

    def _deliver_extra(self, source: EventSourceSpec, messages: Sequence[dict[str, Any]]) -> None:
        try:
            self.deliver(source, messages)
        except BaseException as error:  # re-raised by run_until_idle in the caller's thread
            with self._faults_lock:
                self._extra_errors.append(error)

    # --- delivery ----------------------------------------------------------------------------------

    def deliver(self, source: EventSourceSpec, messages: Sequence[dict[str, Any]]) -> list[Invocation]:
        """Deliver a batch as the base emulator does; an invocation that crashed fails the whole batch.

        After a `SimulatedCrash` the batch's records become visible again after
        `retry_visibility_seconds` (Lambda: after the visibility timeout) and the crash is recorded.

        Args:
            source: The event source.
            messages: The received messages.

        Returns:
            The invocations.

        """
        started = self.clock()
        try:
            return super().deliver(source, messages)
        except SimulatedCrash as crash:
            self._make_visible(source, messages)
            invocation = Invocation(
                function=source.function,
                queue=source.queue,
                records=len(messages),
                failed_records=len(messages),
                response=None,
                error=crash,
                started=started,
                duration=self.clock() - started,
            )
            with self._faults_lock:
                self.crashes.append(invocation)
            if self._crash is not None:
                self._crash.finished_dead()
            self._record(invocation)
            return [invocation]

    def run_until_idle(
        self,
        max_seconds: float = 60.0,
        max_invocations: int | None = None,
        until: Callable[[], bool] | None = None,
    ) -> RunStats:
        """Run as the base emulator does, then wait for concurrent redeliveries and re-raise their errors."""
        stats = super().run_until_idle(max_seconds=max_seconds, max_invocations=max_invocations, until=until)
        with self._faults_lock:
            threads = list(self._extra)
        for thread in threads:
            thread.join()
        with self._faults_lock:
            errors = list(self._extra_errors)
            self._extra_errors.clear()
        if errors:
            raise errors[0]
        return stats
