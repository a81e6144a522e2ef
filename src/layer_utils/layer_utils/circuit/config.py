"""Circuit settings: :class:`CircuitConfig` and the parsers of ``THINGPRESS_CIRCUIT_CONFIG``.

Per circuit: the built-in defaults, then ``THINGPRESS_CIRCUIT_CONFIG`` (JSON
``{"default": {...}, "<circuit name>": {...}}`` with keys ``threshold``, ``timeout``,
``success_threshold``, ``count_classes``), then explicit ``configure`` calls.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

from layer_utils.errors import ErrorClass

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

CONFIG_ENV = "THINGPRESS_CIRCUIT_CONFIG"
TABLE_ENV = "THINGPRESS_CIRCUIT_TABLE"
DEFAULT_COUNT_CLASSES = frozenset({ErrorClass.THROTTLED, ErrorClass.TRANSIENT})
DEFAULT_STORE_CACHE_SECONDS = 5
_CONFIG_KEYS = frozenset({"threshold", "timeout", "success_threshold", "count_classes"})


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

    Args:
        value: the names.
        source: where they come from, for error messages.

    Returns:
        The error classes.

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
