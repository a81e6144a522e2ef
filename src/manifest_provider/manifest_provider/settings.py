"""Import settings: what every certificate and thing of a manifest gets.

Defaults come from the environment (``THINGPRESS_POLICIES``, ``THINGPRESS_THING_GROUPS``,
``THINGPRESS_THING_TYPE``, ``THINGPRESS_THING_ATTRIBUTES``, ``THINGPRESS_THING_NAME_SOURCE``,
``THINGPRESS_THING_NAME_PREFIX``, ``THINGPRESS_INFINEON_BUNDLE_TYPE``); one upload can override them
with S3 user metadata (``thingpress-policies``, ``thingpress-thing-groups``,
``thingpress-thing-type``, ``thingpress-attributes``, ``thingpress-thing-name-source``,
``thingpress-thing-name-prefix``, ``thingpress-vendor``, ``thingpress-bundle-type``), read from the
GetObject response the provider makes anyway. Every value is validated with a clear English error;
what an upload may change at all is :mod:`manifest_provider.overrides`' decision.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from layer_utils.aws_utils import (
    validate_policy_name,
    validate_thing_group_name,
    validate_thing_type_name,
)
from layer_utils.cert_utils import DEFAULT_NAME_SOURCES, parse_name_sources
from layer_utils.iot_names import OWNER_ATTRIBUTE
from layer_utils.messages import MessageSettings

BUNDLE_TYPES = ("E0E0", "E0E1", "E0E2")
"""The Infineon certificate bundles."""

MAX_POLICIES = 10
"""AWS IoT attaches at most 10 policies to a certificate."""

MAX_THING_GROUPS = 10
"""AWS IoT puts a thing in at most 10 thing groups."""

MAX_ATTRIBUTES_TYPED = 50
"""A thing with a thing type has at most 50 attributes."""

MAX_ATTRIBUTES_UNTYPED = 3
"""A thing without a thing type has at most 3 attributes."""

RESERVED_ATTRIBUTES = 1
"""Attributes of each limit kept for Thingpress: the ownership attribute ``OWNER_ATTRIBUTE``."""

MAX_ATTRIBUTE_NAME = 128
MAX_ATTRIBUTE_VALUE = 800

_ATTRIBUTE_NAME_RE = re.compile(r"[a-zA-Z0-9_.,@/:#-]+")
_ATTRIBUTE_VALUE_RE = re.compile(r"[a-zA-Z0-9_.,@/:#=\[\]-]*")
_PREFIX_RE = re.compile(r"[a-zA-Z0-9:_-]*")
_VENDOR_RE = re.compile(r"[a-z0-9_-]+")

ENV_POLICIES = "THINGPRESS_POLICIES"
ENV_THING_GROUPS = "THINGPRESS_THING_GROUPS"
ENV_THING_TYPE = "THINGPRESS_THING_TYPE"
ENV_ATTRIBUTES = "THINGPRESS_THING_ATTRIBUTES"
ENV_NAME_SOURCE = "THINGPRESS_THING_NAME_SOURCE"
ENV_NAME_PREFIX = "THINGPRESS_THING_NAME_PREFIX"
ENV_BUNDLE_TYPE = "THINGPRESS_INFINEON_BUNDLE_TYPE"

META_POLICIES = "thingpress-policies"
META_THING_GROUPS = "thingpress-thing-groups"
META_THING_TYPE = "thingpress-thing-type"
META_ATTRIBUTES = "thingpress-attributes"
META_NAME_SOURCE = "thingpress-thing-name-source"
META_NAME_PREFIX = "thingpress-thing-name-prefix"
META_VENDOR = "thingpress-vendor"
META_BUNDLE_TYPE = "thingpress-bundle-type"
METADATA_KEYS = (
    META_POLICIES,
    META_THING_GROUPS,
    META_THING_TYPE,
    META_ATTRIBUTES,
    META_NAME_SOURCE,
    META_NAME_PREFIX,
    META_VENDOR,
    META_BUNDLE_TYPE,
)
"""The S3 user-metadata keys that override settings for one upload."""


def _name_list(
    raw: str, validate: Callable[[str | None, str], str], what: str, limit: int
) -> tuple[str, ...]:
    """Split a comma-separated list, validate each name and drop repeats (order kept)."""
    if not raw.strip():
        return ()
    names: list[str] = []
    for part in raw.split(","):
        name = validate(part.strip(), what)
        if name not in names:
            names.append(name)
    if len(names) > limit:
        raise ValueError(f"At most {limit} {what.lower()}s can be given; got {len(names)}.")
    return tuple(names)


def parse_policies(raw: str) -> tuple[str, ...]:
    """Parse a comma-separated list of policy names; raises ``ValueError`` for a bad name."""
    return _name_list(raw, validate_policy_name, "Policy name", MAX_POLICIES)


def parse_thing_groups(raw: str) -> tuple[str, ...]:
    """Parse a comma-separated list of thing group names; raises ``ValueError`` for a bad name."""
    return _name_list(raw, validate_thing_group_name, "Thing group name", MAX_THING_GROUPS)


def parse_thing_type(raw: str) -> str | None:
    """Parse a thing type name (blank means none); raises ``ValueError`` for a bad name."""
    if not raw.strip():
        return None
    return validate_thing_type_name(raw.strip())


def parse_attributes(raw: str) -> dict[str, str]:
    """Parse thing attributes: a JSON object of string names to string values (blank means none).

    Returns:
        The attributes.

    Raises:
        ValueError: bad JSON, a non-object, a non-string value, or a name or value that AWS IoT would
            refuse.

    """
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"Thing attributes are not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise ValueError("Thing attributes must be a JSON object of names to string values.")
    return validate_attributes(data)


def validate_attribute_name(name: object) -> str:
    """Check a thing attribute name against the AWS IoT rules; raises ``ValueError`` naming it."""
    if name == OWNER_ATTRIBUTE:
        raise ValueError(
            f"Thing attribute name {name!r} is reserved: Thingpress marks the things it creates with it."
        )
    if not isinstance(name, str) or not _ATTRIBUTE_NAME_RE.fullmatch(name) or len(name) > MAX_ATTRIBUTE_NAME:
        raise ValueError(
            f"Thing attribute name {name!r} is invalid: use 1 to {MAX_ATTRIBUTE_NAME} letters, digits "
            "and the characters _ . , @ / : # -."
        )
    return name


def validate_attributes(data: Mapping[str, Any]) -> dict[str, str]:
    """Check thing attributes against the AWS IoT rules.

    Names are 1-128 of letters, digits and ``_.,@/:#-``; values are strings of up to 800 of letters,
    digits and ``_.,@/:#=[]-``.

    Returns:
        The attributes as a plain dict.

    Raises:
        ValueError: naming the bad attribute.

    """
    attributes: dict[str, str] = {}
    for name, value in data.items():
        validate_attribute_name(name)
        if not isinstance(value, str):
            raise ValueError(
                f"Thing attribute {name!r} must have a string value, not {type(value).__name__}."
            )
        if not _ATTRIBUTE_VALUE_RE.fullmatch(value) or len(value) > MAX_ATTRIBUTE_VALUE:
            raise ValueError(
                f"Thing attribute {name!r} has an invalid value: use up to {MAX_ATTRIBUTE_VALUE} letters, "
                "digits and the characters _ . , @ / : # = [ ] -."
            )
        attributes[name] = value
    return attributes


def parse_name_source(raw: str) -> str:
    """Parse the ordered thing-name sources, e.g. ``vendor,cn,fingerprint`` (blank: that default).

    Returns:
        The normalised comma-separated list.

    Raises:
        ValueError: the list is invalid.

    """
    return ",".join(parse_name_sources(raw) if raw.strip() else DEFAULT_NAME_SOURCES)


def parse_name_prefix(raw: str) -> str:
    """Parse the thing-name prefix; raises ``ValueError`` unless it is thing-name characters only."""
    if not _PREFIX_RE.fullmatch(raw) or len(raw) > 64:
        raise ValueError(
            f"Thing name prefix {raw!r} is invalid: use at most 64 letters, digits, ':', '_' and '-'."
        )
    return raw


def parse_bundle_type(raw: str) -> str:
    """Parse the Infineon bundle type (blank means ``E0E0``); raises ``ValueError`` for another value."""
    value = raw.strip().upper() or "E0E0"
    if value not in BUNDLE_TYPES:
        raise ValueError(f"Infineon bundle type {raw!r} is invalid: use one of {', '.join(BUNDLE_TYPES)}.")
    return value


def parse_vendor(raw: str) -> str | None:
    """Parse a vendor override (blank means detect); raises ``ValueError`` for a malformed name."""
    value = raw.strip().lower()
    if not value:
        return None
    if not _VENDOR_RE.fullmatch(value):
        raise ValueError(f"Vendor {raw!r} is invalid: a vendor name is lower-case letters and digits.")
    return value


@dataclass(frozen=True)
class ImportSettings:
    """The settings of one manifest import.

        ``policies`` attached to every certificate, ``thing_groups`` every thing joins, its
        ``thing_type`` and static ``attributes``, where thing names come from (``thing_name_source``, the
    ordered comma-separated sources)
        and their ``thing_name_prefix``, an optional ``vendor`` override of format detection and the
        Infineon ``bundle_type``.
    """

    policies: tuple[str, ...] = ()
    thing_groups: tuple[str, ...] = ()
    thing_type: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    thing_name_source: str = ",".join(DEFAULT_NAME_SOURCES)
    thing_name_prefix: str = ""
    vendor: str | None = None
    bundle_type: str = "E0E0"

    def __post_init__(self) -> None:
        """Check the attribute count against the thing type (2 without a type, 49 with one).

        AWS IoT allows 3 and 50; one of each is reserved for the ownership attribute.

        Raises:
            ValueError: too many attributes.

        """
        limit = (MAX_ATTRIBUTES_TYPED if self.thing_type else MAX_ATTRIBUTES_UNTYPED) - RESERVED_ATTRIBUTES
        if len(self.attributes) > limit:
            kind = "with a thing type" if self.thing_type else "without a thing type"
            raise ValueError(
                f"A thing {kind} can have at most {limit} attributes; {len(self.attributes)} were given."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImportSettings:
        """Build the default settings from the environment (``os.environ`` when None).

        Returns:
            The settings.

        Raises:
            ValueError: naming the variable and the problem for an invalid value.

        """
        env = os.environ if environ is None else environ
        parsers: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
            ("policies", ENV_POLICIES, parse_policies),
            ("thing_groups", ENV_THING_GROUPS, parse_thing_groups),
            ("thing_type", ENV_THING_TYPE, parse_thing_type),
            ("attributes", ENV_ATTRIBUTES, parse_attributes),
            ("thing_name_source", ENV_NAME_SOURCE, parse_name_source),
            ("thing_name_prefix", ENV_NAME_PREFIX, parse_name_prefix),
            ("bundle_type", ENV_BUNDLE_TYPE, parse_bundle_type),
        )
        values: dict[str, Any] = {}
        for attribute, variable, parse in parsers:
            try:
                values[attribute] = parse(env.get(variable, ""))
            except ValueError as error:
                raise ValueError(f"{variable}: {error}") from None
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{ENV_ATTRIBUTES}: {error}") from None

    def with_overrides(self, metadata: Mapping[str, str]) -> ImportSettings:
        """Return these settings with the upload's S3 user-metadata overrides applied.

        ``metadata`` is the ``Metadata`` of the GetObject response (keys are lower case; other keys are
        ignored). A present key replaces the default, an empty value clears it.

        Raises:
            ValueError: naming the metadata key, for an unknown ``thingpress-*`` key or a bad value.

        """
        parsers: dict[str, tuple[str, Callable[[str], Any]]] = {
            META_POLICIES: ("policies", parse_policies),
            META_THING_GROUPS: ("thing_groups", parse_thing_groups),
            META_THING_TYPE: ("thing_type", parse_thing_type),
            META_ATTRIBUTES: ("attributes", parse_attributes),
            META_NAME_SOURCE: ("thing_name_source", parse_name_source),
            META_NAME_PREFIX: ("thing_name_prefix", parse_name_prefix),
            META_VENDOR: ("vendor", parse_vendor),
            META_BUNDLE_TYPE: ("bundle_type", parse_bundle_type),
        }
        changes: dict[str, Any] = {}
        for raw_key, raw_value in sorted(metadata.items()):
            key = raw_key.lower()
            if not key.startswith("thingpress-"):
                continue
            if key not in parsers:
                raise ValueError(
                    f"S3 metadata key {key!r} is not a Thingpress setting: "
                    f"use one of {', '.join(METADATA_KEYS)}."
                )
            attribute, parse = parsers[key]
            try:
                changes[attribute] = parse(raw_value)
            except ValueError as error:
                raise ValueError(f"S3 metadata {key!r}: {error}") from None
        if not changes:
            return self
        try:
            return replace(self, **changes)
        except ValueError as error:
            raise ValueError(f"S3 metadata: {error}") from None

    @property
    def name_sources(self) -> tuple[str, ...]:
        """The thing-name sources in the order they are tried."""
        return tuple(self.thing_name_source.split(","))

    def message_settings(self) -> MessageSettings:
        """Return the part of the settings that travels in every import message."""
        return MessageSettings(self.policies, self.thing_groups, self.thing_type, dict(self.attributes))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form, for the job record and the report."""
        return {
            **self.message_settings().to_dict(),
            "thing_name_source": self.thing_name_source,
            "thing_name_prefix": self.thing_name_prefix,
            "vendor": self.vendor,
            "bundle_type": self.bundle_type,
        }
