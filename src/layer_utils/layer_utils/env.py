"""Reading the functions' ``THINGPRESS_*`` environment variables.

In the layer because every function's settings object parses its environment with these helpers.
Every configuration error names the variable, so a bad deployment says which setting to fix.
"""

from __future__ import annotations

from collections.abc import Mapping


def env_required(environ: Mapping[str, str], name: str) -> str:
    """Return the variable ``name`` of ``environ``, stripped of surrounding white space.

    Raises:
        ValueError: the variable is unset, empty or only white space.

    """
    value = environ.get(name, "").strip()
    if not value:
        raise ValueError(f"{name} is not set.")
    return value


def env_positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """Return the variable ``name`` of ``environ`` as a positive integer, or ``default`` when unset or empty.

    Raises:
        ValueError: the value is not a whole number of at least 1.

    """
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}.") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}.")
    return value


def env_bool(environ: Mapping[str, str], name: str) -> bool:
    """Return the variable ``name`` of ``environ`` as a flag (unset or empty is False).

    Raises:
        ValueError: the value is none of ``true``, ``false``, ``1``, ``0``, ``yes`` and ``no``.

    """
    raw = environ.get(name, "")
    value = raw.strip().lower()
    if value in {"", "false", "0", "no"}:
        return False
    if value in {"true", "1", "yes"}:
        return True
    raise ValueError(f"{name} must be 'true' or 'false', got {raw!r}.")
