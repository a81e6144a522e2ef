"""The state of one circuit and the one primitive that changes it.

The states and their rules are in docs/ARCHITECTURE.md ("Circuit breakers"). Every change of state
starts a new *generation*: a call admitted in an older generation no longer counts (see
``machine``).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.circuit_breaker import CircuitState as StoreState

    from layer_utils.circuit.config import CircuitConfig


class State(enum.StrEnum):
    """Circuit state as reported by ``CircuitRegistry.status``."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


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


@dataclasses.dataclass
class Circuit:
    """Mutable state of one circuit; guarded by its registry's lock.

    Attributes:
        name: the circuit name.
        config: its settings.
        state: closed, open or half-open.
        consecutive_failures: the current failure streak.
        last_failure_time: when the last unhealthy failure happened.
        opened_at: when the circuit last opened (None while closed).
        probe_in_flight: whether the half-open probe is running.
        electing: whether a probe election in the fleet store is under way.
        probe_successes: consecutive successful probes in this half-open period.
        generation: incremented by every transition.
        store_seen: the fleet store's state as last read or written here.
        store_opened_at: the fleet store's ``opened_at`` as last read or written here.

    """

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


def change_state(
    circuit: Circuit, to_state: State, now: float, reason: str, *, remote: bool = False
) -> Transition:
    """Change a circuit's state (the caller holds the registry lock) and start a new generation.

    Args:
        circuit: the circuit.
        to_state: the new state.
        now: the registry clock's time.
        reason: why, in plain English.
        remote: whether the change was adopted from the fleet store.

    Returns:
        The transition to report.

    """
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
