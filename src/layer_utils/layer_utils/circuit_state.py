"""Circuit breakers for the AWS operations Thingpress depends on.

A circuit per operation name (``"<service>:<Operation>"``) moves between three states:

* ``closed``: calls run; consecutive unhealthy failures are counted and ``threshold`` of them
  open the circuit.
* ``open``: calls fail fast with :class:`CircuitOpenError` (or return the fallback) until
  ``timeout`` seconds have passed since the circuit opened.
* ``half_open``: exactly one probe call at a time is admitted; every other caller fails fast.
  ``success_threshold`` consecutive successful probes close the circuit; a failed probe reopens
  it with a fresh timeout.

Only unhealthy failures count: by default errors that :func:`layer_utils.aws_utils.classify_error`
classifies ``throttled`` or ``transient`` (which includes ``TimeoutError``/``ConnectionError``).
A call whose dependency answered with another AWS error (not found, already exists, invalid
input, conflict, access denied) counts as a healthy answer. Errors of class ``unknown`` (for
example a bug in the protected function) and :class:`CircuitOpenError` of a nested circuit are
neutral: they neither count nor reset the failure streak, and a neutral probe frees the probe slot.
An exception marked ``circuit_recorded = True`` (by ``aws_utils.handle_aws_error``) was already
accounted for and is not counted again.

Configuration per circuit: the built-in defaults, then ``THINGPRESS_CIRCUIT_CONFIG`` (JSON
``{"default": {...}, "<circuit name>": {...}}`` with keys ``threshold``, ``timeout``,
``success_threshold``, ``count_classes``), read when a circuit is first used, then explicit
:func:`configure_circuit` calls.

No lock is held while a protected call runs: the registry lock only guards the in-memory state.
Every transition is logged as one structured line; opening and closing also emit the
``CircuitOpened``/``CircuitClosed`` metrics (dimension ``Operation``).

Fleet-wide mode (``THINGPRESS_CIRCUIT_TABLE`` set, or a store passed to :class:`CircuitRegistry`)
shares open/half-open/closed through Powertools' ``CircuitBreakerDynamoDBPersistence``: a trip is
written to the table, every environment reads it (through Powertools' short local cache) and a
conditional write elects a single prober across the fleet. Failure streaks stay per environment,
as in Powertools. Transitions adopted from the table are logged but emit no metric (the
environment that made the transition already did). Store failures are logged and the local
breaker carries on (fail open, as Powertools does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import json
import math
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, TypeVar

# Own state machine in front of Powertools' store: its handler has no injectable clock and no status query.
from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerConfig
from aws_lambda_powertools.utilities.circuit_breaker import CircuitState as StoreState
from aws_lambda_powertools.utilities.circuit_breaker.persistence import (
    CircuitBreakerDynamoDBPersistence,
    CircuitBreakerPersistenceLayer,
)

from layer_utils import telemetry
from layer_utils.aws_utils import ErrorClass, ThingpressError, classify_error, get_client

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

P = ParamSpec("P")
R = TypeVar("R")

CONFIG_ENV = "THINGPRESS_CIRCUIT_CONFIG"
TABLE_ENV = "THINGPRESS_CIRCUIT_TABLE"
DEFAULT_COUNT_CLASSES = frozenset({ErrorClass.THROTTLED, ErrorClass.TRANSIENT})
DEFAULT_STORE_CACHE_SECONDS = 5
_CONFIG_KEYS = frozenset({"threshold", "timeout", "success_threshold", "count_classes"})


class State(enum.StrEnum):
    """Circuit state as reported by :func:`get_circuit_status`."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(ThingpressError):
    """The circuit is open (or its single half-open probe is in flight): the call was not made.

    Attributes:
        circuit_name: the circuit that rejected the call.
        opened_at: when the circuit opened (epoch seconds), if known.
        retryable: always true: retry the work later.

    """

    retryable = True

    def __init__(self, circuit_name: str, opened_at: float | None = None) -> None:
        self.circuit_name = circuit_name
        self.opened_at = opened_at
        super().__init__(f"The circuit for {circuit_name} is open, so the call was not made; retry later.")


@dataclasses.dataclass(frozen=True)
class CircuitConfig:
    """Settings of one circuit.

    Attributes:
        threshold: consecutive unhealthy failures that open a closed circuit.
        timeout: seconds an open circuit waits before admitting a probe.
        success_threshold: consecutive successful probes that close a half-open circuit.
        count_classes: the error classes that count as unhealthy failures.

    Raises:
        ValueError: a value is out of range.

    """

    threshold: int = 5
    timeout: float = 60.0
    success_threshold: int = 1
    count_classes: frozenset[ErrorClass] = DEFAULT_COUNT_CLASSES

    def __post_init__(self) -> None:
        """Check the values."""
        for field, value in (("threshold", self.threshold), ("success_threshold", self.success_threshold)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Circuit {field} must be a positive integer, got {value!r}.")
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not math.isfinite(self.timeout)
            or self.timeout <= 0
        ):
            raise ValueError(f"Circuit timeout must be a positive number of seconds, got {self.timeout!r}.")

    def merged(self, overrides: Mapping[str, Any], source: str) -> CircuitConfig:
        """Return a copy with the given keys replaced.

        Args:
            overrides: any of ``threshold``, ``timeout``, ``success_threshold``, ``count_classes``
                (a list of error class names).
            source: where the overrides come from, for error messages.

        Returns:
            The new configuration.

        Raises:
            ValueError: an unknown key, an unknown error class or an out-of-range value.

        """
        unknown = set(overrides) - _CONFIG_KEYS
        if unknown:
            raise ValueError(
                f"{source} has unknown circuit setting(s) {sorted(unknown)}; "
                f"allowed are {sorted(_CONFIG_KEYS)}."
            )
        changes = dict(overrides)
        if "count_classes" in changes:
            changes["count_classes"] = parse_count_classes(changes["count_classes"], source)
        try:
            return dataclasses.replace(self, **changes)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None


def parse_count_classes(value: Iterable[str] | str, source: str = "count_classes") -> frozenset[ErrorClass]:
    """Convert error class names to a set of :class:`ErrorClass`.

    Raises:
        ValueError: the value is not a list of known error class names.

    """
    if isinstance(value, str):
        raise ValueError(f"{source}: count_classes must be a list of error class names, got {value!r}.")
    classes = []
    for item in value:
        try:
            classes.append(ErrorClass(item))
        except ValueError:
            allowed = ", ".join(c.value for c in ErrorClass)
            raise ValueError(f"{source}: unknown error class {item!r}; use one of {allowed}.") from None
    return frozenset(classes)


def parse_circuit_config_env(raw: str | None) -> dict[str, dict[str, Any]]:
    """Parse the ``THINGPRESS_CIRCUIT_CONFIG`` JSON.

    Args:
        raw: the variable's value; None or blank means no configuration.

    Returns:
        Settings per circuit name, plus ``"default"``.

    Raises:
        ValueError: the value is not a JSON object of objects.

    """
    if raw is None or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{CONFIG_ENV} is not valid JSON: {exc.msg} at position {exc.pos}.") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{CONFIG_ENV} must be a JSON object mapping circuit names to objects of settings.")
    return data


@dataclasses.dataclass(frozen=True)
class Transition:
    """A circuit state change, handed to the registry's transition sink.

    Attributes:
        circuit_name: the circuit.
        from_state: the state before.
        to_state: the state after.
        at: when it happened (registry clock, epoch seconds).
        consecutive_failures: the failure streak at the time.
        reason: why, in plain English.
        remote: true when adopted from the fleet-wide store rather than decided here.

    """

    circuit_name: str
    from_state: State
    to_state: State
    at: float
    consecutive_failures: int
    reason: str
    remote: bool = False


def log_and_emit_transition(transition: Transition) -> None:
    """Default transition sink: one structured log line, plus the open/close metric.

    ``CircuitOpened``/``CircuitClosed`` (dimension ``Operation``) are emitted for local
    transitions to open/closed; half-open transitions and transitions adopted from the fleet store
    are only logged.
    """
    fields = {
        "circuit": transition.circuit_name,
        "from_state": transition.from_state.value,
        "to_state": transition.to_state.value,
        "consecutive_failures": transition.consecutive_failures,
        "remote": transition.remote,
    }
    message = (
        f"Circuit {transition.circuit_name} changed from {transition.from_state.value} "
        f"to {transition.to_state.value}: {transition.reason}"
    )
    if transition.to_state is State.OPEN:
        telemetry.logger.warning(message, extra=fields)
    else:
        telemetry.logger.info(message, extra=fields)
    if transition.remote:
        return
    metric = {State.OPEN: telemetry.CIRCUIT_OPENED, State.CLOSED: telemetry.CIRCUIT_CLOSED}.get(
        transition.to_state
    )
    if metric is not None:
        telemetry.emit_metric(metric, 1, dimensions={telemetry.DIM_OPERATION: transition.circuit_name})


class _Ticket(NamedTuple):
    """An admitted call: whether it is the half-open probe, and the circuit generation it saw."""

    probe: bool
    generation: int


class _Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


@dataclasses.dataclass
class _Circuit:
    """Mutable state of one circuit; guarded by the registry lock."""

    name: str
    config: CircuitConfig
    state: State = State.CLOSED
    consecutive_failures: int = 0
    last_failure_time: float | None = None
    opened_at: float | None = None
    probe_in_flight: bool = False
    electing: bool = False
    probe_successes: int = 0
    generation: int = 0
    store_seen: StoreState | None = None
    store_opened_at: int | None = None


class CircuitRegistry:
    """The circuits of one process (or of one test).

    Args:
        clock: returns the current time in epoch seconds; inject a fake one in tests.
        on_transition: called (outside the lock) for every transition; default logs and emits metrics.
        store: a Powertools circuit-breaker persistence layer for fleet-wide state, or None.
        env: the environment to read ``THINGPRESS_CIRCUIT_CONFIG`` from; default ``os.environ``.
        store_cache_seconds: how long Powertools caches the store's state locally.

    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        on_transition: Callable[[Transition], None] = log_and_emit_transition,
        store: CircuitBreakerPersistenceLayer | None = None,
        env: Mapping[str, str] | None = None,
        store_cache_seconds: int = DEFAULT_STORE_CACHE_SECONDS,
    ) -> None:
        self._clock = clock
        self._on_transition = on_transition
        self._store = store
        self._env = env
        self._store_cache_seconds = store_cache_seconds
        self._owner = f"{os.getpid()}#{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._circuits: dict[str, _Circuit] = {}
        self._explicit: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CircuitRegistry:
        """Build a registry with the real clock, fleet-wide when ``THINGPRESS_CIRCUIT_TABLE`` is set.

        Returns:
            The registry.

        """
        source = os.environ if env is None else env
        table = source.get(TABLE_ENV, "").strip()
        store = (
            CircuitBreakerDynamoDBPersistence(table_name=table, boto3_client=get_client("dynamodb"))
            if table
            else None
        )
        return cls(store=store, env=env)

    # ------------------------------------------------------------------------- configuration

    def _configured(self, name: str, explicit: Mapping[str, Any] | None = None) -> CircuitConfig:
        """Compute a circuit's configuration from defaults, the environment and explicit settings."""
        env = os.environ if self._env is None else self._env
        settings = parse_circuit_config_env(env.get(CONFIG_ENV))
        config = CircuitConfig()
        if "default" in settings:
            config = config.merged(settings["default"], f"{CONFIG_ENV} entry 'default'")
        if name in settings:
            config = config.merged(settings[name], f"{CONFIG_ENV} entry {name!r}")
        if explicit is None:
            with self._lock:
                explicit = dict(self._explicit.get(name, {}))
        if explicit:
            config = config.merged(explicit, f"configure_circuit({name!r})")
        return config

    def _store_configure(self, circuit: _Circuit) -> None:
        """Hand a circuit's settings to the fleet store (recovery timeout, probe lease, cache age)."""
        if self._store is None:
            return
        self._store.configure(
            CircuitBreakerConfig(
                failure_threshold=circuit.config.threshold,
                recovery_timeout=max(1, math.ceil(circuit.config.timeout)),
                success_threshold=circuit.config.success_threshold,
                local_cache_max_age=self._store_cache_seconds,
            ),
            circuit.name,
        )

    def _circuit(self, name: str) -> _Circuit:
        """Return the circuit, creating it (and reading its configuration) on first use."""
        circuit = self._circuits.get(name)
        if circuit is not None:
            return circuit
        config = self._configured(name)
        with self._lock:
            circuit = self._circuits.get(name)
            if circuit is None:
                circuit = _Circuit(name=name, config=config)
                self._circuits[name] = circuit
        self._store_configure(circuit)
        return circuit

    def configure(
        self,
        name: str,
        *,
        threshold: int | None = None,
        timeout: float | None = None,
        success_threshold: int | None = None,
        count_classes: Iterable[ErrorClass | str] | None = None,
    ) -> CircuitConfig:
        """Override settings of one circuit; None keeps the value from the environment or default.

        Returns:
            The circuit's resulting configuration.

        Raises:
            ValueError: a value is out of range or an error class is unknown.

        """
        overrides: dict[str, Any] = {
            key: value
            for key, value in (
                ("threshold", threshold),
                ("timeout", timeout),
                ("success_threshold", success_threshold),
            )
            if value is not None
        }
        if count_classes is not None:
            overrides["count_classes"] = [str(c) for c in count_classes]
        with self._lock:
            merged = {**self._explicit.get(name, {}), **overrides}
        config = self._configured(name, merged)
        circuit = self._circuit(name)
        with self._lock:
            self._explicit[name] = merged
            circuit.config = config
        self._store_configure(circuit)
        return config

    def config(self, name: str) -> CircuitConfig:
        """Return a circuit's configuration without creating the circuit.

        Asking how a failure would count must not make a circuit appear in the status and the
        ``CircuitState`` gauges; only protected calls and counted failures create one.
        """
        circuit = self._circuits.get(name)
        return circuit.config if circuit is not None else self._configured(name)

    # ---------------------------------------------------------------------------- transitions

    def _transition(
        self, circuit: _Circuit, to_state: State, now: float, reason: str, *, remote: bool = False
    ) -> Transition:
        """Change state (caller holds the lock) and return the transition to report."""
        transition = Transition(
            circuit.name, circuit.state, to_state, now, circuit.consecutive_failures, reason, remote
        )
        circuit.state = to_state
        circuit.generation += 1
        circuit.probe_in_flight = False
        circuit.probe_successes = 0
        if to_state is State.OPEN:
            circuit.opened_at = now
        elif to_state is State.CLOSED:
            circuit.opened_at = None
            circuit.consecutive_failures = 0
        return transition

    def _report(self, transitions: Iterable[Transition]) -> None:
        """Hand transitions to the sink, never letting the sink break the protected call."""
        for transition in transitions:
            try:
                self._on_transition(transition)
            except Exception:
                telemetry.logger.exception(
                    f"Reporting a transition of circuit {transition.circuit_name} failed."
                )

    def _persist(self, what: str, write: Callable[[], None]) -> bool:
        """Run a store write; a failure is logged and the local state carries on (fail open).

        Returns:
            Whether the write succeeded.

        """
        try:
            write()
        except Exception:
            telemetry.logger.warning(
                f"Writing circuit state to the fleet store failed ({what}).", exc_info=True
            )
            return False
        return True

    def _sync_from_store(self, circuit: _Circuit) -> None:
        """Adopt transitions other environments wrote to the fleet store."""
        if self._store is None:
            return
        record = self._store.get_state(circuit.name)
        transitions: list[Transition] = []
        with self._lock:
            now = self._clock()
            previous = circuit.store_seen
            circuit.store_seen = record.state
            if record.state is StoreState.CLOSED:
                if previous not in (None, StoreState.CLOSED) and circuit.state is not State.CLOSED:
                    transitions.append(
                        self._transition(
                            circuit, State.CLOSED, now, "another environment closed it", remote=True
                        )
                    )
                    circuit.store_opened_at = None
            elif record.half_open_owner != self._owner:
                opened_at = float(record.opened_at) if record.opened_at is not None else now
                if circuit.state is State.CLOSED:
                    circuit.store_opened_at = record.opened_at
                    transitions.append(
                        self._transition(
                            circuit, State.OPEN, now, "another environment opened it", remote=True
                        )
                    )
                    circuit.opened_at = opened_at
                elif (
                    circuit.state is State.OPEN
                    and record.opened_at is not None
                    and record.opened_at != circuit.store_opened_at
                ):
                    circuit.store_opened_at = record.opened_at
                    circuit.opened_at = max(opened_at, circuit.opened_at or opened_at)
        self._report(transitions)

    # ------------------------------------------------------------------------------ admission

    def _admit(self, name: str) -> _Ticket:
        """Admit a call or raise :class:`CircuitOpenError`; never holds the lock across store I/O."""
        circuit = self._circuit(name)
        self._sync_from_store(circuit)
        with self._lock:
            if circuit.state is State.CLOSED:
                return _Ticket(False, circuit.generation)
            if circuit.state is State.HALF_OPEN:
                if circuit.probe_in_flight:
                    raise CircuitOpenError(name, circuit.opened_at)
                circuit.probe_in_flight = True
                return _Ticket(True, circuit.generation)
            now = self._clock()
            opened_at = circuit.opened_at if circuit.opened_at is not None else now
            if circuit.electing or now < opened_at + circuit.config.timeout:
                raise CircuitOpenError(name, circuit.opened_at)
            circuit.electing = True
            generation = circuit.generation
            fleet_open = circuit.store_seen in (StoreState.OPEN, StoreState.HALF_OPEN)
            expected_opened_at = (
                circuit.store_opened_at if circuit.store_opened_at is not None else int(opened_at)
            )
        won = True
        if self._store is not None and fleet_open:
            try:
                won = self._store.try_acquire_half_open(name, self._owner, expected_opened_at)
            except Exception:
                telemetry.logger.warning(
                    f"Electing the probe of circuit {name} in the fleet store failed; probing locally.",
                    exc_info=True,
                )
        transitions: list[Transition] = []
        with self._lock:
            circuit.electing = False
            now = self._clock()
            if circuit.generation != generation or circuit.state is not State.OPEN:
                raise CircuitOpenError(name, circuit.opened_at)
            if not won:
                # Another environment is probing: wait a fresh timeout (or its result in the store).
                circuit.opened_at = now
                raise CircuitOpenError(name, circuit.opened_at)
            transitions.append(
                self._transition(circuit, State.HALF_OPEN, now, "timeout elapsed, admitting one probe")
            )
            circuit.probe_in_flight = True
            ticket = _Ticket(True, circuit.generation)
        self._report(transitions)
        return ticket

    # ------------------------------------------------------------------------------- outcomes

    def _fail_locked(self, circuit: _Circuit, now: float, transitions: list[Transition]) -> None:
        """Count one unhealthy failure (caller holds the lock)."""
        circuit.last_failure_time = now
        if circuit.state is State.CLOSED:
            circuit.consecutive_failures += 1
            if circuit.consecutive_failures >= circuit.config.threshold:
                transitions.append(
                    self._transition(
                        circuit,
                        State.OPEN,
                        now,
                        f"{circuit.consecutive_failures} consecutive failures reached the threshold "
                        f"of {circuit.config.threshold}",
                    )
                )
        elif circuit.state is State.HALF_OPEN:
            circuit.consecutive_failures += 1
            transitions.append(self._transition(circuit, State.OPEN, now, "the probe failed"))

    def _succeed_locked(
        self, circuit: _Circuit, now: float, probe: bool, transitions: list[Transition]
    ) -> None:
        """Count one healthy answer (caller holds the lock)."""
        if circuit.state is State.CLOSED:
            circuit.consecutive_failures = 0
        elif circuit.state is State.HALF_OPEN and probe:
            circuit.probe_in_flight = False
            circuit.probe_successes += 1
            if circuit.probe_successes >= circuit.config.success_threshold:
                transitions.append(
                    self._transition(
                        circuit,
                        State.CLOSED,
                        now,
                        f"{circuit.probe_successes} consecutive probe(s) succeeded",
                    )
                )

    def _persist_transitions(self, transitions: Iterable[Transition]) -> None:
        """Write local open/close decisions to the fleet store."""
        store = self._store
        if store is None:
            return
        for transition in transitions:
            name = transition.circuit_name
            circuit = self._circuits[name]
            opened_at = int(transition.at)
            if transition.to_state is State.OPEN and transition.from_state is State.CLOSED:
                write = functools.partial(store.save_open, name, transition.consecutive_failures, opened_at)
                if self._persist(f"{name} opened", write):
                    self._note_store(circuit, StoreState.OPEN, opened_at)
            elif transition.to_state is State.OPEN:
                if self._persist(f"{name} reopened", functools.partial(store.save_reopen, name, opened_at)):
                    self._note_store(circuit, StoreState.OPEN, opened_at)
            elif transition.to_state is State.CLOSED and self._persist(
                f"{name} closed", functools.partial(store.save_closed, name)
            ):
                self._note_store(circuit, StoreState.CLOSED, None)

    def _note_store(self, circuit: _Circuit, state: StoreState, opened_at: int | None) -> None:
        """Remember what this environment wrote to the store."""
        with self._lock:
            circuit.store_seen = state
            circuit.store_opened_at = opened_at

    def _complete(self, name: str, ticket: _Ticket | None, outcome: _Outcome) -> None:
        """Apply a call's outcome; a ticket from an older generation changes nothing but the record."""
        circuit = self._circuit(name)
        transitions: list[Transition] = []
        with self._lock:
            now = self._clock()
            current = ticket is None or ticket.generation == circuit.generation
            if outcome is _Outcome.FAILURE:
                if current:
                    self._fail_locked(circuit, now, transitions)
                else:
                    circuit.last_failure_time = now
            elif outcome is _Outcome.SUCCESS:
                if current:
                    self._succeed_locked(circuit, now, ticket is not None and ticket.probe, transitions)
            elif ticket is not None and ticket.probe and current and circuit.state is State.HALF_OPEN:
                circuit.probe_in_flight = False
        self._report(transitions)
        self._persist_transitions(transitions)

    def _outcome_of(self, name: str, error: BaseException) -> _Outcome:
        """Decide whether an exception from a protected call is a failure, healthy or neutral."""
        if not isinstance(error, Exception) or isinstance(error, CircuitOpenError):
            return _Outcome.NEUTRAL
        error_class = classify_error(error)
        if error_class in self._circuit(name).config.count_classes:
            return _Outcome.NEUTRAL if getattr(error, "circuit_recorded", False) else _Outcome.FAILURE
        if error_class is ErrorClass.UNKNOWN:
            return _Outcome.NEUTRAL
        return _Outcome.SUCCESS

    # ----------------------------------------------------------------------------- public API

    def call(
        self,
        name: str,
        function: Callable[P, R],
        fallback: Callable[P, R] | None,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run ``function`` through the circuit ``name``.

        Returns:
            The function's result, or the fallback's when the circuit rejects the call.

        Raises:
            CircuitOpenError: the circuit rejected the call and there is no fallback.

        """
        try:
            ticket = self._admit(name)
        except CircuitOpenError:
            if fallback is None:
                raise
            return fallback(*args, **kwargs)
        try:
            result = function(*args, **kwargs)
        except BaseException as error:
            self._complete(name, ticket, self._outcome_of(name, error))
            raise
        self._complete(name, ticket, _Outcome.SUCCESS)
        return result

    def record_failure(self, name: str) -> None:
        """Count one unhealthy failure of ``name`` (outside the decorator, e.g. ``handle_aws_error``)."""
        self._complete(name, None, _Outcome.FAILURE)

    def record_success(self, name: str) -> None:
        """Count one healthy answer of ``name``; do not call from inside a decorated function."""
        self._complete(name, None, _Outcome.SUCCESS)

    def is_open(self, name: str) -> bool:
        """Return whether a call on ``name`` would be rejected now.

        True while open and the timeout has not elapsed, or while half-open with the probe in
        flight.
        """
        circuit = self._circuit(name)
        self._sync_from_store(circuit)
        with self._lock:
            if circuit.state is State.HALF_OPEN:
                return circuit.probe_in_flight
            if circuit.state is State.OPEN:
                opened_at = circuit.opened_at if circuit.opened_at is not None else 0.0
                return circuit.electing or self._clock() < opened_at + circuit.config.timeout
            return False

    def reset(self, name: str) -> None:
        """Close ``name`` and clear its counters (operators and tests)."""
        circuit = self._circuit(name)
        transitions: list[Transition] = []
        with self._lock:
            if circuit.state is not State.CLOSED:
                transitions.append(self._transition(circuit, State.CLOSED, self._clock(), "reset"))
            circuit.consecutive_failures = 0
            circuit.last_failure_time = None
        self._report(transitions)
        self._persist_transitions(transitions)

    def status(self) -> dict[str, dict[str, Any]]:
        """Return every known circuit's state and settings.

        Returns:
            Per circuit name: ``state`` (``closed``/``open``/``half_open``),
            ``consecutive_failures``, ``last_failure_time`` and ``opened_at`` (epoch seconds or
            None), ``threshold``, ``timeout``, ``success_threshold``, ``probe_in_flight``.

        """
        with self._lock:
            return {
                name: {
                    "state": c.state.value,
                    "consecutive_failures": c.consecutive_failures,
                    "last_failure_time": c.last_failure_time,
                    "opened_at": c.opened_at,
                    "threshold": c.config.threshold,
                    "timeout": c.config.timeout,
                    "success_threshold": c.config.success_threshold,
                    "probe_in_flight": c.probe_in_flight,
                }
                for name, c in self._circuits.items()
            }


# ------------------------------------------------------------------------ module-level interface

_default_holder: list[CircuitRegistry] = []
_default_lock = threading.Lock()


def default_registry() -> CircuitRegistry:
    """Return the process-wide registry, built from the environment on first use."""
    with _default_lock:
        if not _default_holder:
            _default_holder.append(CircuitRegistry.from_env())
        return _default_holder[0]


def set_default_registry(registry: CircuitRegistry | None) -> CircuitRegistry | None:
    """Replace the process-wide registry (None: rebuild from the environment on next use).

    Returns:
        The previous registry, if one had been built.

    """
    with _default_lock:
        previous = _default_holder[0] if _default_holder else None
        _default_holder.clear()
        if registry is not None:
            _default_holder.append(registry)
        return previous


@contextlib.contextmanager
def use_registry(registry: CircuitRegistry) -> Iterator[CircuitRegistry]:
    """Make ``registry`` the process-wide registry for the duration of a ``with`` block."""
    previous = set_default_registry(registry)
    try:
        yield registry
    finally:
        set_default_registry(previous)


def with_circuit_breaker(
    operation_name: str,
    fallback_function: Callable[P, R] | None = None,
    *,
    registry: CircuitRegistry | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Protect a function with the circuit ``operation_name``.

    Args:
        operation_name: the circuit name, e.g. ``iot:CreateThing``.
        fallback_function: called with the same arguments instead of raising
            :class:`CircuitOpenError` when the circuit rejects a call.
        registry: the registry to use; default the process-wide one at call time.

    Returns:
        The decorator.

    """

    def decorator(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            active = registry if registry is not None else default_registry()
            return active.call(operation_name, function, fallback_function, *args, **kwargs)

        return wrapper

    return decorator


def configure_circuit(
    operation_name: str,
    threshold: int | None = None,
    timeout: float | None = None,
    success_threshold: int | None = None,
    count_classes: Iterable[ErrorClass | str] | None = None,
) -> CircuitConfig:
    """Override a circuit's settings (None keeps the environment's value or the default).

    Defaults: threshold 5, timeout 60 s, success_threshold 1, count_classes throttled+transient.

    Returns:
        The circuit's resulting configuration.

    Raises:
        ValueError: a value is out of range or an error class is unknown.

    """
    return default_registry().configure(
        operation_name,
        threshold=threshold,
        timeout=timeout,
        success_threshold=success_threshold,
        count_classes=count_classes,
    )


def get_circuit_config(operation_name: str) -> CircuitConfig:
    """Return a circuit's configuration (without creating the circuit)."""
    return default_registry().config(operation_name)


def get_circuit_status() -> dict[str, dict[str, Any]]:
    """Return every known circuit's state (see :meth:`CircuitRegistry.status`)."""
    return default_registry().status()


def circuit_is_open(name: str) -> bool:
    """Return whether a call on the circuit would be rejected now."""
    return default_registry().is_open(name)


def record_failure(name: str) -> None:
    """Count one unhealthy failure of the circuit."""
    default_registry().record_failure(name)


def record_success(name: str) -> None:
    """Count one healthy answer of the circuit (not from inside a decorated function)."""
    default_registry().record_success(name)


def reset_circuit(name: str) -> None:
    """Close the circuit and clear its counters."""
    default_registry().reset(name)
