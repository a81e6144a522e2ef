"""Failed entries grouped by reason, with counts and, where a setting would help, a hint.

Every reason is one sentence that starts with the entry's locator and names entry-specific details
(dates, hashes, names). `group_failures` strips the locator and files each reason under a kind: a
known kind (``KINDS``: expiry, unverifiable Microchip signatures, thing naming, ...) has a fixed
label and maybe a hint naming the option that changes the outcome; any other reason is its own
kind, with hashes, quoted text and numbers masked so that reasons differing only in those group
together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Kind:
    """A known kind of failure: how to recognise its reason, its label and the hint (None: no hint)."""

    pattern: re.Pattern[str]
    label: str
    hint: str | None = None


_VERIFIERS_HINT = (
    "The entries' signatures cannot be checked: pass --verifiers DIR with the vendor's manifest signer "
    "certificates (for example ../shared/manifests/microchip/verifiers)."
)
_NAME_HINT = (
    "Choose where thing names come from with --thing-name-source (for example vendor,cn,fingerprint: "
    "the certificate's fingerprint always gives a unique name)."
)

KINDS: tuple[Kind, ...] = (
    Kind(
        re.compile(r"^Certificate expired on "),
        "Certificate expired",
        "Pass --allow-expired to import expired device certificates (AWS IoT accepts them).",
    ),
    Kind(re.compile(r"^Certificate is not valid before "), "Certificate not valid yet"),
    Kind(
        re.compile(r"^no trusted signer matches kid "),
        "No trusted Microchip signer matches the entry's kid and x5t#S256",
        _VERIFIERS_HINT,
    ),
    Kind(
        re.compile(r"^the signature does not verify with signer "),
        "The Microchip signature does not verify",
        "Either the entry was altered after signing, or the certificates in --verifiers are not the "
        "ones that signed the manifest: pass --verifiers DIR with the vendor's manifest signers.",
    ),
    Kind(
        re.compile(r"^the signer .* is not valid at "),
        "The Microchip signer certificate is not valid now",
        _VERIFIERS_HINT,
    ),
    Kind(
        re.compile(r"^no thing name source \(.*the subject CN .* is shared with "),
        "No legal thing name of its own: the subject CN is shared with other certificates",
        _NAME_HINT,
    ),
    Kind(re.compile(r"^no thing name source \("), "No thing name source gives a legal name", _NAME_HINT),
    Kind(
        re.compile(r"^thing name .* from the vendor's device identifier is also claimed by "),
        "Two certificates claim the same vendor device identifier",
        _NAME_HINT,
    ),
    Kind(
        re.compile(r"^Certificate does not chain to a trusted CA"),
        "Certificate does not chain to a trusted CA",
        "Pass the vendor's CA certificates with --trusted-ca FILE (or leave --trusted-ca out to skip "
        "the chain check).",
    ),
    Kind(re.compile(r"^duplicate of "), "Duplicate of an earlier entry (the same certificate)"),
    Kind(
        re.compile(r"^no certificate in manifest entry"),
        "No certificate in the manifest entry",
        "The vendor shipped keys without device certificates for these entries (Microchip TrustFLEX "
        "manifests do): there is nothing to register; ask the vendor for the certificates.",
    ),
    Kind(
        re.compile(r"^thing .* already exists and "),
        "The thing already exists and was not made by Thingpress",
    ),
    Kind(
        re.compile(r" was not called because the circuit .* is open"),
        "An AWS IoT call was skipped because its circuit breaker is open",
    ),
)

_MASKS = (
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),
    (re.compile(r"\b[0-9A-Fa-f]{16,}\b|[A-Za-z0-9_\-+/=]{20,}"), "…"),
    (re.compile(r"\d+"), "N"),
)


def strip_locator(reason: str, locator: str) -> str:
    """Return ``reason`` without its leading ``<locator>: `` (reasons start with their entry's locator)."""
    return reason.removeprefix(f"{locator}: ") if locator else reason


def classify(reason: str) -> tuple[str, str | None]:
    """Return the label and hint of a reason already stripped of its locator.

    Returns:
        A known kind's label and hint, else the reason with details masked and no hint.

    """
    for kind in KINDS:
        if kind.pattern.search(reason):
            return kind.label, kind.hint
    label = reason
    for pattern, replacement in _MASKS:
        label = pattern.sub(replacement, label)
    return label.rstrip("."), None


@dataclass
class FailureGroup:
    """Failed entries that share a kind: its label, hint, count, locators and one reason in full."""

    label: str
    hint: str | None
    example: str
    locators: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many entries the group holds."""
        return len(self.locators)


def group_failures(failures: Iterable[Mapping[str, Any]]) -> list[FailureGroup]:
    """Group failed entries (``locator`` and ``reason``) by kind, the largest group first.

    Groups of equal size keep the order in which their first entry came.

    Returns:
        The groups.

    """
    groups: dict[str, FailureGroup] = {}
    for failure in failures:
        locator = str(failure.get("locator") or "")
        reason = strip_locator(str(failure.get("reason") or ""), locator)
        label, hint = classify(reason)
        group = groups.get(label)
        if group is None:
            group = groups[label] = FailureGroup(label, hint, reason)
        group.locators.append(locator)
    return sorted(groups.values(), key=lambda group: -group.count)
