"""Public face of the circuit breaker, with a process-wide default registry.

The breaker lives in :mod:`layer_utils.circuit`; this thin module re-exports it and keeps the
documented module-level API (``configure_circuit``, ``get_circuit_status``, ``with_circuit_breaker``,
``record_failure``...) over a default registry built from the environment on first use. Function code
does not use the default: each function's ``Services`` carries its own registry. See
docs/ARCHITECTURE.md, "Circuit breakers".
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from layer_utils.circuit import (
    CircuitConfig,
    CircuitOpenError,
    CircuitRegistry,
    State,
    Transition,
    log_and_emit_transition,
    parse_circuit_config_env,
    parse_count_classes,
)
from layer_utils.circuit.config import CONFIG_ENV, DEFAULT_COUNT_CLASSES, TABLE_ENV
from layer_utils.clients import get_client

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from layer_utils.errors import ErrorClass

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_COUNT_CLASSES",
    "TABLE_ENV",
    "CircuitConfig",
    "CircuitOpenError",
    "CircuitRegistry",
    "State",
    "Transition",
    "circuit_is_open",
    "configure_circuit",
    "default_registry",
    "get_circuit_config",
    "get_circuit_status",
    "log_and_emit_transition",
    "parse_circuit_config_env",
    "parse_count_classes",
    "record_failure",
    "record_success",
    "reset_circuit",
    "set_default_registry",
    "with_circuit_breaker",
]

P = ParamSpec("P")
R = TypeVar("R")

# ------------------------------------------------------------------------ module-level interface

_default_holder: list[CircuitRegistry] = []
_default_lock = threading.Lock()


def default_registry() -> CircuitRegistry:
    """Return the process-wide registry, built from the environment on first use."""
    with _default_lock:
        if not _default_holder:
            _default_holder.append(CircuitRegistry.from_env(dynamodb=lambda: get_client("dynamodb")))
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
    """Count one unhealthy failure of a call made now outside the breaker (only while closed)."""
    default_registry().record_failure(name)


def record_success(name: str) -> None:
    """Count one healthy answer of the circuit (not from inside a decorated function)."""
    default_registry().record_success(name)


def reset_circuit(name: str) -> None:
    """Close the circuit and clear its counters."""
    default_registry().reset(name)
