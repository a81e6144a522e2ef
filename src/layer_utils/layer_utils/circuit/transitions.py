"""Transition logging: the default sink of ``CircuitRegistry``."""

from __future__ import annotations

from layer_utils import telemetry
from layer_utils.circuit.state import State, Transition


def log_and_emit_transition(transition: Transition) -> None:
    """Log a transition as one structured line, and emit the open/close metric.

    ``CircuitOpened``/``CircuitClosed`` (dimension ``Operation``) are emitted for local
    transitions to open/closed; half-open transitions and transitions adopted from the fleet store
    are only logged.

    Args:
        transition: the state change.

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
