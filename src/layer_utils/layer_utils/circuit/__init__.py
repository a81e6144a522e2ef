"""The circuit breaker, one circuit per AWS operation (``"<service>:<Operation>"``).

In the style of Powertools' utilities: ``config`` (settings), ``state`` and ``machine`` (the state
machine and :class:`CircuitRegistry`), ``fleet`` (fleet-wide state through Powertools' persistence),
``transitions`` (logging and metrics of state changes) and ``exceptions``. Functions get their
registry through their ``Services``; the module-level default registry lives only behind
``layer_utils.circuit_state``. The contract is in docs/ARCHITECTURE.md ("Circuit breakers").
"""

from layer_utils.circuit.config import CircuitConfig, parse_circuit_config_env, parse_count_classes
from layer_utils.circuit.exceptions import CircuitOpenError
from layer_utils.circuit.machine import CircuitRegistry
from layer_utils.circuit.state import State, Transition
from layer_utils.circuit.transitions import log_and_emit_transition

__all__ = [
    "CircuitConfig",
    "CircuitOpenError",
    "CircuitRegistry",
    "State",
    "Transition",
    "log_and_emit_transition",
    "parse_circuit_config_env",
    "parse_count_classes",
]
