"""The circuit breaker's exception."""

from __future__ import annotations

from layer_utils.errors import ThingpressError


class CircuitOpenError(ThingpressError):
    """The circuit is open (or its single half-open probe is in flight): the call was not made.

    Attributes:
        circuit_name: the circuit that rejected the call.
        opened_at: when the circuit opened (epoch seconds), if known.
        retryable: always true: retry the work later.

    """

    retryable = True

    def __init__(self, circuit_name: str, opened_at: float | None = None) -> None:
        """Create the error for the circuit that rejected the call."""
        self.circuit_name = circuit_name
        self.opened_at = opened_at
        super().__init__(f"The circuit for {circuit_name} is open, so the call was not made; retry later.")
