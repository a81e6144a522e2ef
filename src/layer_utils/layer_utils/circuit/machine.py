"""The circuit state machine: :class:`CircuitRegistry`, the circuits of one function.

Our own state machine, in front of Powertools' store: Powertools' ``CircuitBreakerHandler`` needs a
store for every circuit, reads the wall clock in whole seconds and keeps failure streaks in a module
global, so it can neither run in memory, take an injected clock, answer a status query nor tell a
stale call by its generation.

The rules (what counts, generations, configuration) are in docs/ARCHITECTURE.md, "Circuit
breakers". No lock is held while a protected call runs.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, TypeVar

from aws_lambda_powertools.utilities.circuit_breaker import CircuitState as StoreState

from layer_utils import telemetry
from layer_utils.circuit.config import (
    CONFIG_ENV,
    DEFAULT_STORE_CACHE_SECONDS,
    TABLE_ENV,
    CircuitConfig,
    parse_circuit_config_env,
)
from layer_utils.circuit.exceptions import CircuitOpenError
from layer_utils.circuit.fleet import Fleet, dynamodb_store
from layer_utils.circuit.state import Circuit, State, Transition, change_state
from layer_utils.circuit.transitions import log_and_emit_transition
from layer_utils.errors import ErrorClass, classify_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from aws_lambda_powertools.utilities.circuit_breaker.persistence import CircuitBreakerPersistenceLayer
    from mypy_boto3_dynamodb import DynamoDBClient

P = ParamSpec("P")
R = TypeVar("R")


class _Ticket(NamedTuple):
    """An admitted call: whether it is the half-open probe, and the circuit generation it saw."""

    probe: bool
    generation: int


class _Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


class CircuitRegistry:
    """The circuits of one function (or of one test).

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
        """Create an empty registry; circuits appear on first use."""
        self._clock = clock
        self._on_transition = on_transition
        self._store = store
        self._env = env
        self._lock = threading.Lock()
        self._fleet = None if store is None else Fleet(store, store_cache_seconds, self._lock, clock)
        self._circuits: dict[str, Circuit] = {}
        self._explicit: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, dynamodb: Callable[[], DynamoDBClient]
    ) -> CircuitRegistry:
        """Build a registry with the real clock, fleet-wide when ``THINGPRESS_CIRCUIT_TABLE`` is set.

        Args:
            env: the environment; default ``os.environ``.
            dynamodb: returns the DynamoDB client of the fleet store (called only when the table is set).

        Returns:
            The registry.

        """
        source = os.environ if env is None else env
        table = source.get(TABLE_ENV, "").strip()
        return cls(store=dynamodb_store(table, dynamodb()) if table else None, env=env)

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

    def _circuit(self, name: str) -> Circuit:
        """Return the circuit, creating it (and reading its configuration) on first use."""
        circuit = self._circuits.get(name)
        if circuit is not None:
            return circuit
        config = self._configured(name)
        with self._lock:
            circuit = self._circuits.get(name)
            if circuit is None:
                circuit = Circuit(name=name, config=config)
                self._circuits[name] = circuit
        if self._fleet is not None:
            self._fleet.configure(circuit)
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

        Args:
            name: the circuit.
            threshold: consecutive unhealthy failures that open it.
            timeout: seconds it stays open before a probe.
            success_threshold: consecutive successful probes that close it.
            count_classes: the error classes that count as unhealthy.

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
        if self._fleet is not None:
            self._fleet.configure(circuit)
        return config

    def config(self, name: str) -> CircuitConfig:
        """Return a circuit's configuration without creating the circuit.

        Asking how a failure would count must not make a circuit appear in the status and the
        ``CircuitState`` gauges; only protected calls and counted failures create one.
        """
        circuit = self._circuits.get(name)
        return circuit.config if circuit is not None else self._configured(name)

    # ---------------------------------------------------------------------------- transitions

    def _report(self, transitions: Iterable[Transition]) -> None:
        """Hand transitions to the sink, never letting the sink break the protected call."""
        for transition in transitions:
            try:
                self._on_transition(transition)
            except Exception:
                telemetry.logger.exception(
                    f"Reporting a transition of circuit {transition.circuit_name} failed."
                )

    def _sync(self, circuit: Circuit) -> None:
        """Adopt what other environments wrote to the fleet store, if there is one."""
        if self._fleet is not None:
            self._report(self._fleet.adopt(circuit))

    def _settle(self, transitions: list[Transition]) -> None:
        """Report local transitions and write them to the fleet store."""
        self._report(transitions)
        if self._fleet is not None and transitions:
            self._fleet.persist(transitions, self._circuits)

    # ------------------------------------------------------------------------------ admission

    def _admit(self, name: str) -> _Ticket:
        """Admit a call or raise :class:`CircuitOpenError`; never holds the lock across store I/O."""
        circuit = self._circuit(name)
        self._sync(circuit)
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
        won = self._fleet.elect(name, expected_opened_at) if self._fleet is not None and fleet_open else True
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
                change_state(circuit, State.HALF_OPEN, now, "timeout elapsed, admitting one probe")
            )
            circuit.probe_in_flight = True
            ticket = _Ticket(True, circuit.generation)
        self._report(transitions)
        return ticket

    # ------------------------------------------------------------------------------- outcomes

    @staticmethod
    def _fail_locked(circuit: Circuit, now: float, probe: bool, transitions: list[Transition]) -> None:
        """Count one unhealthy failure of a current-generation call (caller holds the lock)."""
        circuit.last_failure_time = now
        if circuit.state is State.CLOSED:
            circuit.consecutive_failures += 1
            if circuit.consecutive_failures >= circuit.config.threshold:
                transitions.append(
                    change_state(
                        circuit,
                        State.OPEN,
                        now,
                        f"{circuit.consecutive_failures} consecutive failures reached the threshold "
                        f"of {circuit.config.threshold}",
                    )
                )
        elif circuit.state is State.HALF_OPEN and probe:
            circuit.consecutive_failures += 1
            transitions.append(change_state(circuit, State.OPEN, now, "the probe failed"))

    @staticmethod
    def _succeed_locked(circuit: Circuit, now: float, probe: bool, transitions: list[Transition]) -> None:
        """Count one healthy answer of a current-generation call (caller holds the lock)."""
        if circuit.state is State.CLOSED:
            circuit.consecutive_failures = 0
        elif circuit.state is State.HALF_OPEN and probe:
            circuit.probe_in_flight = False
            circuit.probe_successes += 1
            if circuit.probe_successes >= circuit.config.success_threshold:
                transitions.append(
                    change_state(
                        circuit,
                        State.CLOSED,
                        now,
                        f"{circuit.probe_successes} consecutive probe(s) succeeded",
                    )
                )

    def _complete(self, name: str, ticket: _Ticket, outcome: _Outcome) -> None:
        """Apply a call's outcome; a ticket from an older generation changes nothing but the record."""
        circuit = self._circuit(name)
        transitions: list[Transition] = []
        with self._lock:
            now = self._clock()
            current = ticket.generation == circuit.generation
            if outcome is _Outcome.FAILURE:
                if current:
                    self._fail_locked(circuit, now, ticket.probe, transitions)
                else:
                    circuit.last_failure_time = now
            elif outcome is _Outcome.SUCCESS:
                if current:
                    self._succeed_locked(circuit, now, ticket.probe, transitions)
            elif ticket.probe and current and circuit.state is State.HALF_OPEN:
                circuit.probe_in_flight = False
        self._settle(transitions)

    def _outcome_of(self, name: str, error: BaseException) -> _Outcome:
        """Decide whether an exception from a protected call is a failure, healthy or neutral."""
        if not isinstance(error, Exception) or isinstance(error, CircuitOpenError):
            return _Outcome.NEUTRAL
        error_class = classify_error(error)
        if error_class in self._circuit(name).config.count_classes:
            return _Outcome.FAILURE
        if error_class is ErrorClass.UNKNOWN:
            return _Outcome.NEUTRAL
        return _Outcome.SUCCESS

    def _unadmitted(self, name: str) -> _Ticket:
        """Return the ticket of a call made now outside :meth:`call`: never the probe."""
        circuit = self._circuit(name)
        with self._lock:
            return _Ticket(False, circuit.generation)

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

        Args:
            name: the circuit.
            function: the protected call.
            fallback: called with the same arguments when the circuit rejects the call, or None.
            *args: the call's positional arguments.
            **kwargs: the call's keyword arguments.

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
        """Count one unhealthy failure of a call made now outside :meth:`call`.

        It counts only while the circuit is closed: an open or half-open circuit admits no such call
        (only its probe decides).
        """
        self._complete(name, self._unadmitted(name), _Outcome.FAILURE)

    def record_success(self, name: str) -> None:
        """Count one healthy answer of a call made now outside :meth:`call` (resets a closed streak)."""
        self._complete(name, self._unadmitted(name), _Outcome.SUCCESS)

    def is_open(self, name: str) -> bool:
        """Return whether a call on ``name`` would be rejected now.

        True while open and the timeout has not elapsed, or while half-open with the probe in
        flight.
        """
        circuit = self._circuit(name)
        self._sync(circuit)
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
                transitions.append(change_state(circuit, State.CLOSED, self._clock(), "reset"))
            circuit.consecutive_failures = 0
            circuit.last_failure_time = None
        self._settle(transitions)

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
