"""What an uploader may override: the operator's allowlists, read from the environment once.

An upload's S3 user metadata may change its import settings (:mod:`manifest_provider.settings`).
The keys that only choose how the uploaded manifest is read (``thingpress-vendor``,
``thingpress-bundle-type``, ``thingpress-thing-name-source``) need no permission. The keys that decide
what the stack grants in IoT are checked here against the stack's own settings and the operator's
allowlists (comma-separated, empty by default):

- ``thingpress-policies`` and ``thingpress-thing-groups`` keep every one of the stack's own and add
  only names of ``THINGPRESS_UPLOADER_ALLOWED_POLICIES`` / ``..._THING_GROUPS``;
- ``thingpress-thing-type`` is the stack's own or one of ``THINGPRESS_UPLOADER_ALLOWED_THING_TYPES``;
- ``thingpress-attributes`` keeps the stack's own attributes with their values, except those whose
  key is in ``THINGPRESS_UPLOADER_ALLOWED_ATTRIBUTE_KEYS``, and adds only allowlisted keys;
- ``thingpress-thing-name-prefix`` is the stack's own or exactly one of
  ``THINGPRESS_UPLOADER_ALLOWED_NAME_PREFIXES``.

docs/TRUST-MODEL.md gives the reasons.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from layer_utils.aws_utils import validate_policy_name, validate_thing_group_name, validate_thing_type_name
from manifest_provider.settings import (
    META_ATTRIBUTES,
    META_NAME_PREFIX,
    META_POLICIES,
    META_THING_GROUPS,
    META_THING_TYPE,
    ImportSettings,
    parse_name_prefix,
    validate_attribute_name,
)

ENV_ALLOWED_POLICIES = "THINGPRESS_UPLOADER_ALLOWED_POLICIES"
ENV_ALLOWED_THING_GROUPS = "THINGPRESS_UPLOADER_ALLOWED_THING_GROUPS"
ENV_ALLOWED_THING_TYPES = "THINGPRESS_UPLOADER_ALLOWED_THING_TYPES"
ENV_ALLOWED_ATTRIBUTE_KEYS = "THINGPRESS_UPLOADER_ALLOWED_ATTRIBUTE_KEYS"
ENV_ALLOWED_NAME_PREFIXES = "THINGPRESS_UPLOADER_ALLOWED_NAME_PREFIXES"


def _names(raw: str, validate: Callable[[str], object]) -> frozenset[str]:
    """Split a comma-separated list (blanks dropped), checking each name with ``validate``."""
    names = frozenset(part.strip() for part in raw.split(",") if part.strip())
    for name in names:
        validate(name)
    return names


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(repr(value) for value in values)


def _one_or_many(values: Collection[str], singular: str, plural: str) -> str:
    return f"{singular if len(values) == 1 else plural} {_quoted(values)}"


def _sentence(key: str, parts: list[str]) -> list[str]:
    """Return the refusal sentence of one metadata key (none when ``parts`` is empty)."""
    return [f"S3 metadata {key!r} {'; '.join(parts)}."] if parts else []


@dataclass(frozen=True)
class UploaderAllowlist:
    """The values an uploader may choose beyond the stack's own settings (empty: none)."""

    policies: frozenset[str] = frozenset()
    thing_groups: frozenset[str] = frozenset()
    thing_types: frozenset[str] = frozenset()
    attribute_keys: frozenset[str] = frozenset()
    name_prefixes: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UploaderAllowlist:
        """Read the allowlists from ``THINGPRESS_UPLOADER_ALLOWED_*`` (``os.environ`` when None).

        Returns:
            The allowlists.

        Raises:
            ValueError: naming the variable and the name AWS IoT would refuse.

        """
        env = os.environ if environ is None else environ
        readers: tuple[tuple[str, str, Callable[[str], object]], ...] = (
            ("policies", ENV_ALLOWED_POLICIES, validate_policy_name),
            ("thing_groups", ENV_ALLOWED_THING_GROUPS, validate_thing_group_name),
            ("thing_types", ENV_ALLOWED_THING_TYPES, validate_thing_type_name),
            ("attribute_keys", ENV_ALLOWED_ATTRIBUTE_KEYS, validate_attribute_name),
            ("name_prefixes", ENV_ALLOWED_NAME_PREFIXES, parse_name_prefix),
        )
        values: dict[str, frozenset[str]] = {}
        for attribute, variable, validate in readers:
            try:
                values[attribute] = _names(env.get(variable, ""), validate)
            except ValueError as error:
                raise ValueError(f"{variable}: {error}") from None
        return cls(**values)

    def refusals(self, own: ImportSettings, chosen: ImportSettings) -> list[str]:
        """Return one sentence per metadata key whose override the operator has not allowed.

        Args:
            own: the stack's own settings (from its parameters).
            chosen: the settings after the upload's S3 metadata was applied.

        Returns:
            The refusals, naming the metadata key and the refused values; empty when all is allowed.

        """
        return [
            *self._list_refusals(
                META_POLICIES,
                own.policies,
                chosen.policies,
                self.policies,
                ("policy", "policies", "UploaderAllowedPolicies"),
            ),
            *self._list_refusals(
                META_THING_GROUPS,
                own.thing_groups,
                chosen.thing_groups,
                self.thing_groups,
                ("thing group", "thing groups", "UploaderAllowedThingGroups"),
            ),
            *self._type_refusals(own.thing_type, chosen.thing_type),
            *self._attribute_refusals(own.attributes, chosen.attributes),
            *self._prefix_refusals(own.thing_name_prefix, chosen.thing_name_prefix),
        ]

    @staticmethod
    def _list_refusals(
        key: str,
        own: tuple[str, ...],
        chosen: tuple[str, ...],
        allowed: frozenset[str],
        nouns: tuple[str, str, str],
    ) -> list[str]:
        singular, plural, parameter = nouns
        unlisted = [name for name in chosen if name not in own and name not in allowed]
        dropped = [name for name in own if name not in chosen]
        parts = []
        if unlisted:
            parts.append(f"asks for {_one_or_many(unlisted, singular, plural)}, not in {parameter}")
        if dropped:
            parts.append(f"leaves out the stack's own {_one_or_many(dropped, singular, plural)}")
        return _sentence(key, parts)

    def _type_refusals(self, own: str | None, chosen: str | None) -> list[str]:
        if chosen == own:
            return []
        if chosen is None:
            return _sentence(META_THING_TYPE, [f"clears the stack's own thing type {own!r}"])
        if chosen in self.thing_types:
            return []
        return _sentence(
            META_THING_TYPE, [f"asks for thing type {chosen!r}, not in UploaderAllowedThingTypes"]
        )

    def _attribute_refusals(self, own: Mapping[str, str], chosen: Mapping[str, str]) -> list[str]:
        fixed = {name: value for name, value in own.items() if name not in self.attribute_keys}
        unlisted = [name for name in chosen if name not in own and name not in self.attribute_keys]
        changed = [name for name, value in fixed.items() if name in chosen and chosen[name] != value]
        dropped = [name for name in fixed if name not in chosen]
        parts = []
        if unlisted:
            names = _one_or_many(unlisted, "attribute", "attributes")
            parts.append(f"sets {names}, not in UploaderAllowedAttributeKeys")
        if changed:
            parts.append(f"changes the stack's own {_one_or_many(changed, 'attribute', 'attributes')}")
        if dropped:
            parts.append(f"leaves out the stack's own {_one_or_many(dropped, 'attribute', 'attributes')}")
        return _sentence(META_ATTRIBUTES, parts)

    def _prefix_refusals(self, own: str, chosen: str) -> list[str]:
        if chosen == own or chosen in self.name_prefixes:
            return []
        return _sentence(
            META_NAME_PREFIX, [f"asks for thing-name prefix {chosen!r}, not in UploaderAllowedNamePrefixes"]
        )
