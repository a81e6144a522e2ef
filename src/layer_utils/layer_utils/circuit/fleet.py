"""Fleet-wide circuit state through Powertools' circuit-breaker persistence.

A trip is written to the store, every environment reads it (through Powertools' short local cache)
and a conditional write elects a single prober across the fleet. Failure streaks stay per
environment, as in Powertools. Store failures are logged and the local breaker carries on (fail open,
as Powertools does). The contract is in docs/ARCHITECTURE.md ("Circuit breakers").
"""

from __future__ import annotations

import functools
import math
import os
import uuid
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerConfig
from aws_lambda_powertools.utilities.circuit_breaker import CircuitState as StoreState
from aws_lambda_powertools.utilities.circuit_breaker.persistence import CircuitBreakerDynamoDBPersistence

from layer_utils import telemetry
from layer_utils.circuit.state import Circuit, State, Transition, change_state

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable, Mapping

    from aws_lambda_powertools.utilities.circuit_breaker.persistence import CircuitBreakerPersistenceLayer
    from mypy_boto3_dynamodb import DynamoDBClient


def dynamodb_store(table: str, dynamodb: DynamoDBClient) -> CircuitBreakerPersistenceLayer:
    """Return Powertools' DynamoDB persistence for the circuit table.

    Args:
        table: the table name (``THINGPRESS_CIRCUIT_TABLE``).
        dynamodb: the DynamoDB client, injected by the handler.

    Returns:
        The persistence layer.

    """
    return CircuitBreakerDynamoDBPersistence(table_name=table, boto3_client=dynamodb)


class Fleet:
    """Synchronises one registry's circuits with the fleet store.

    Args:
        store: the Powertools persistence layer.
        cache_seconds: how long Powertools caches the store's state locally.
        lock: the registry lock that guards the circuits.
        clock: the registry clock.

    """

    def __init__(
        self,
        store: CircuitBreakerPersistenceLayer,
        cache_seconds: int,
        lock: threading.Lock,
        clock: Callable[[], float],
    ) -> None:
        """Bind the store to the registry's lock and clock; this environment gets a unique owner id."""
        self.store = store
        self._cache_seconds = cache_seconds
        self._lock = lock
        self._clock = clock
        self.owner = f"{os.getpid()}#{uuid.uuid4().hex}"

    def configure(self, circuit: Circuit) -> None:
        """Hand a circuit's settings to the store (recovery timeout, probe lease, cache age)."""
        self.store.configure(
            CircuitBreakerConfig(
                failure_threshold=circuit.config.threshold,
                recovery_timeout=max(1, math.ceil(circuit.config.timeout)),
                success_threshold=circuit.config.success_threshold,
                local_cache_max_age=self._cache_seconds,
            ),
            circuit.name,
        )

    def adopt(self, circuit: Circuit) -> list[Transition]:
        """Adopt the transitions other environments wrote to the store.

        Returns:
            The adopted transitions, to report.

        """
        record = self.store.get_state(circuit.name)
        transitions: list[Transition] = []
        with self._lock:
            now = self._clock()
            previous = circuit.store_seen
            circuit.store_seen = record.state
            if record.state is StoreState.CLOSED:
                if previous not in (None, StoreState.CLOSED) and circuit.state is not State.CLOSED:
                    transitions.append(
                        change_state(circuit, State.CLOSED, now, "another environment closed it", remote=True)
                    )
                    circuit.store_opened_at = None
            elif record.half_open_owner != self.owner:
                opened_at = float(record.opened_at) if record.opened_at is not None else now
                if circuit.state is State.CLOSED:
                    circuit.store_opened_at = record.opened_at
                    transitions.append(
                        change_state(circuit, State.OPEN, now, "another environment opened it", remote=True)
                    )
                    circuit.opened_at = opened_at
                elif (
                    circuit.state is State.OPEN
                    and record.opened_at is not None
                    and record.opened_at != circuit.store_opened_at
                ):
                    circuit.store_opened_at = record.opened_at
                    circuit.opened_at = max(opened_at, circuit.opened_at or opened_at)
        return transitions

    def elect(self, name: str, expected_opened_at: int) -> bool:
        """Try to become the fleet's single prober; a store failure counts as won (fail open).

        Returns:
            Whether this environment may probe.

        """
        try:
            return self.store.try_acquire_half_open(name, self.owner, expected_opened_at)
        except Exception:
            telemetry.logger.warning(
                f"Electing the probe of circuit {name} in the fleet store failed; probing locally.",
                exc_info=True,
            )
            return True

    def persist(self, transitions: Iterable[Transition], circuits: Mapping[str, Circuit]) -> None:
        """Write local open/close decisions to the store.

        Args:
            transitions: the local transitions.
            circuits: the registry's circuits by name.

        """
        store = self.store
        for transition in transitions:
            name = transition.circuit_name
            circuit = circuits[name]
            opened_at = int(transition.at)
            if transition.to_state is State.OPEN and transition.from_state is State.CLOSED:
                write = functools.partial(store.save_open, name, transition.consecutive_failures, opened_at)
                if self._write(f"{name} opened", write):
                    self._note(circuit, StoreState.OPEN, opened_at)
            elif transition.to_state is State.OPEN:
                if self._write(f"{name} reopened", functools.partial(store.save_reopen, name, opened_at)):
                    self._note(circuit, StoreState.OPEN, opened_at)
            elif transition.to_state is State.CLOSED and self._write(
                f"{name} closed", functools.partial(store.save_closed, name)
            ):
                self._note(circuit, StoreState.CLOSED, None)

    def _note(self, circuit: Circuit, state: StoreState, opened_at: int | None) -> None:
        """Remember what this environment wrote to the store."""
        with self._lock:
            circuit.store_seen = state
            circuit.store_opened_at = opened_at

    @staticmethod
    def _write(what: str, write: Callable[[], None]) -> bool:
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
