r"""The AWS IoT name rules: thing, thing group, thing type and policy names.

One set of rules: thing, thing group and thing type names are ``[a-zA-Z0-9:_-]+``, policy names
``[\w+=,.@-]+`` (ASCII), all at most 128 characters (docs/ARCHITECTURE.md, "Layer modules").
"""

from __future__ import annotations

import re

IOT_NAME_MAX_LENGTH = 128
"""The longest name AWS IoT accepts for a thing, thing group, thing type or policy."""

THING_NAME_MAX_LENGTH = IOT_NAME_MAX_LENGTH
"""The longest thing name AWS IoT accepts."""

THING_NAME_PATTERN = re.compile(rf"^[a-zA-Z0-9:_-]{{1,{IOT_NAME_MAX_LENGTH}}}$")
"""The thing names AWS IoT accepts (use ``fullmatch``)."""

OWNER_ATTRIBUTE = "thingpress-cert"
"""The thing attribute Thingpress sets at CreateThing: the id of the certificate it created the thing for.

It tells later which things Thingpress created, and for which certificate (see docs/ARCHITECTURE.md,
"Ownership"). Settings may not use this name, and one attribute of each limit is reserved for it.
"""

_IOT_NAME_RE = re.compile(r"[a-zA-Z0-9:_-]+")
_IOT_NAME_ALLOWED = "letters, digits, ':', '_' and '-'"
_IOT_POLICY_NAME_RE = re.compile(r"[\w+=,.@-]+", re.ASCII)
_IOT_POLICY_NAME_ALLOWED = "letters, digits, '_', '+', '=', ',', '.', '@' and '-'"


def require_name(value: str | None, what: str) -> str:
    """Return ``value`` if it is a non-blank string.

    Args:
        value: the name to check.
        what: what the name is, for the message, e.g. ``"Thing group name"``.

    Returns:
        The value, unchanged.

    Raises:
        ValueError: the value is None, empty or only whitespace.

    """
    if value is None or not value.strip():
        raise ValueError(f"{what} cannot be None or empty")
    return value


def _validate_iot_name(value: str | None, what: str, pattern: re.Pattern[str], allowed: str) -> str:
    """Check a name against an IoT name pattern and the 128-character limit.

    Args:
        value: the name.
        what: what the name is, for the message, e.g. ``"Thing group name"``.
        pattern: the characters allowed (matched with ``fullmatch``).
        allowed: the allowed characters, in words, for the message.

    Returns:
        The name, unchanged.

    Raises:
        ValueError: the name is empty, too long or has a forbidden character.

    """
    name = require_name(value, what)
    if len(name) > IOT_NAME_MAX_LENGTH:
        raise ValueError(
            f"{what} {name[:40]!r}... is {len(name)} characters long; the limit is {IOT_NAME_MAX_LENGTH}."
        )
    if not pattern.fullmatch(name):
        raise ValueError(f"{what} {name!r} is invalid: use only {allowed}.")
    return name


def thing_name_problem(name: str) -> str | None:
    """Say what is wrong with a thing name, as the end of a sentence, or None when it is valid.

    Args:
        name: the candidate thing name.

    Returns:
        For example ``"cannot be empty"``, or None.

    """
    if not name:
        return "cannot be empty"
    if _IOT_NAME_RE.fullmatch(name) is None:
        return f"contains characters other than {_IOT_NAME_ALLOWED}"
    if len(name) > THING_NAME_MAX_LENGTH:
        return f"is longer than {THING_NAME_MAX_LENGTH} characters ({len(name)})"
    return None


def is_valid_thing_name(name: str) -> bool:
    """Return whether ``name`` is a valid AWS IoT thing name (1-128 of letters, digits, ``:_-``)."""
    return THING_NAME_PATTERN.fullmatch(name) is not None


def validate_thing_name(name: str) -> str:
    """Check an AWS IoT thing name.

    Args:
        name: the thing name.

    Returns:
        The name, unchanged.

    Raises:
        ValueError: one sentence naming the name and the reason (empty, a character outside letters,
            digits, ``:``, ``_`` and ``-``, or over 128 characters).

    """
    problem = thing_name_problem(name)
    if problem is not None:
        raise ValueError(f"Thing name {name!r} {problem}.")
    return name


def validate_thing_group_name(value: str | None, what: str = "Thing group name") -> str:
    """Return ``value`` if it is a valid thing group name; otherwise raise ``ValueError`` naming ``what``."""
    return _validate_iot_name(value, what, _IOT_NAME_RE, _IOT_NAME_ALLOWED)


def validate_thing_type_name(value: str | None, what: str = "Thing type name") -> str:
    """Return ``value`` if it is a valid thing type name; otherwise raise ``ValueError`` naming ``what``."""
    return _validate_iot_name(value, what, _IOT_NAME_RE, _IOT_NAME_ALLOWED)


def validate_policy_name(value: str | None, what: str = "Policy name") -> str:
    """Return ``value`` if it is a valid policy name; otherwise raise ``ValueError`` naming ``what``."""
    return _validate_iot_name(value, what, _IOT_POLICY_NAME_RE, _IOT_POLICY_NAME_ALLOWED)
