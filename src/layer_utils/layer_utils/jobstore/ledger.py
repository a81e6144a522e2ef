"""The ledger: per entry, what an import created in AWS IoT and what it found there already.

The importer stores it compactly inside the outcome items it writes anyway (no DynamoDB call per
certificate); ``read_ledger`` expands and merges it. The stored shape is docs/ARCHITECTURE.md,
"Ledger".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from layer_utils.jobstore.model import CHUNK_PREFIX

REGISTERED = "registered"
CREATED = "created"
ATTACHED = "attached"
FOUND = "found"
"""Ledger states: the job made the resource (registered, created, attached) or found it there."""

OUTCOME_IMPORTED = "imported"
OUTCOME_FAILED = "failed"
OUTCOME_RETRIED = "retried"
"""What became of a ledger's entry: imported, failed for good, or only tried (never settled)."""

_CODES = {REGISTERED: "r", CREATED: "c", ATTACHED: "a", FOUND: "f"}
_STATES = {code: state for state, code in _CODES.items()}


@dataclass
class LedgerMarks:
    """What one import attempt did to one entry's resources, as the importer observed it.

    ``certificate``, ``thing`` and ``principal`` are None (not reached), ``FOUND`` or the made state
    (``REGISTERED``, ``CREATED``, ``ATTACHED``). The policy and group lists hold names of the
    settings' policies and groups that the attempt attached/added, or found already there.
    """

    certificate: str | None = None
    thing: str | None = None
    principal: str | None = None
    policies_attached: list[str] = field(default_factory=list)
    policies_found: list[str] = field(default_factory=list)
    groups_added: list[str] = field(default_factory=list)
    groups_found: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Whether the attempt neither made nor found anything."""
        return not (self.certificate or self.thing or self.principal)


def scope_of(policies: Sequence[str], thing_groups: Sequence[str], thing_type: str | None) -> dict[str, Any]:
    """Return the ``scope`` an outcome item stores once: the settings its ledgers' bitmasks index."""
    return {"p": list(policies), "g": list(thing_groups), "y": thing_type}


def _mask(names: Iterable[str], order: Sequence[str]) -> int:
    return sum(1 << index for index, name in enumerate(order) if name in set(names))


def _names(mask: int, order: Sequence[str]) -> tuple[str, ...]:
    return tuple(name for index, name in enumerate(order) if mask >> index & 1)


def encode(marks: LedgerMarks, scope: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the compact stored form of ``marks`` (None when there is nothing to record).

    Args:
        marks: what the attempt did.
        scope: the item's ``scope_of`` (policies and groups are stored as bitmasks over it).

    Returns:
        ``{"c", "t", "a": one-letter states, "p", "pf", "g", "gf": bitmasks}``, zero and None omitted.

    """
    if marks.empty:
        return None
    data: dict[str, Any] = {}
    for key, state in (("c", marks.certificate), ("t", marks.thing), ("a", marks.principal)):
        if state:
            data[key] = _CODES[state]
    for key, names, order in (
        ("p", marks.policies_attached, scope["p"]),
        ("pf", marks.policies_found, scope["p"]),
        ("g", marks.groups_added, scope["g"]),
        ("gf", marks.groups_found, scope["g"]),
    ):
        mask = _mask(names, order)
        if mask:
            data[key] = mask
    return data


@dataclass(frozen=True)
class LedgerEntry:
    """One entry's ledger, expanded: what the job created (and so may undo) and what it found.

    ``certificate`` is ``registered``/``found``/None, ``thing`` ``created``/``found``/None,
    ``principal`` ``attached``/``found``/None. ``thing_type`` is the type the job gave a thing it
    created (None otherwise). ``outcome`` is ``imported``, ``failed`` or ``retried``.
    """

    locator: str
    thing_name: str
    certificate_id: str
    outcome: str
    certificate: str | None = None
    thing: str | None = None
    principal: str | None = None
    policies_attached: tuple[str, ...] = ()
    policies_found: tuple[str, ...] = ()
    groups_added: tuple[str, ...] = ()
    groups_found: tuple[str, ...] = ()
    thing_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the report's form of the ledger (without locator, names and outcome)."""
        return {
            "certificate": self.certificate,
            "thing": self.thing,
            "principal": self.principal,
            "policies_attached": list(self.policies_attached),
            "policies_found": list(self.policies_found),
            "groups_added": list(self.groups_added),
            "groups_found": list(self.groups_found),
            "thing_type_set": self.thing_type,
        }

    def merge(self, later: LedgerEntry) -> LedgerEntry:
        """Return the ledger of both attempts: what either made counts as made by the job."""

        def state(mine: str | None, theirs: str | None) -> str | None:
            made = [value for value in (mine, theirs) if value and value != FOUND]
            return made[0] if made else (mine or theirs)

        policies = tuple(dict.fromkeys((*self.policies_attached, *later.policies_attached)))
        groups = tuple(dict.fromkeys((*self.groups_added, *later.groups_added)))
        return LedgerEntry(
            locator=later.locator,
            thing_name=later.thing_name,
            certificate_id=later.certificate_id,
            outcome=later.outcome,
            certificate=state(self.certificate, later.certificate),
            thing=state(self.thing, later.thing),
            principal=state(self.principal, later.principal),
            policies_attached=policies,
            policies_found=tuple(
                name
                for name in dict.fromkeys((*self.policies_found, *later.policies_found))
                if name not in policies
            ),
            groups_added=groups,
            groups_found=tuple(
                name
                for name in dict.fromkeys((*self.groups_found, *later.groups_found))
                if name not in groups
            ),
            thing_type=self.thing_type or later.thing_type,
        )


def decode(record: Mapping[str, Any], scope: Mapping[str, Any], outcome: str) -> LedgerEntry | None:
    """Return the expanded ledger of a stored record (None when it carries no ``l``)."""
    data = record.get("l")
    if not data:
        return None
    policies, groups = scope.get("p") or [], scope.get("g") or []
    thing = _STATES.get(data.get("t", ""))
    return LedgerEntry(
        locator=str(record["locator"]),
        thing_name=str(record.get("thing_name") or ""),
        certificate_id=str(record.get("certificate_id") or ""),
        outcome=outcome,
        certificate=_STATES.get(data.get("c", "")),
        thing=thing,
        principal=_STATES.get(data.get("a", "")),
        policies_attached=_names(int(data.get("p", 0)), policies),
        policies_found=_names(int(data.get("pf", 0)), policies),
        groups_added=_names(int(data.get("g", 0)), groups),
        groups_found=_names(int(data.get("gf", 0)), groups),
        thing_type=scope.get("y") if thing == CREATED else None,
    )


def read_ledger(items: Iterable[Mapping[str, Any]]) -> Iterator[LedgerEntry]:
    """Yield the merged ledger of every entry that made or found something, from a job's outcome items.

    Args:
        items: the job's outcome items in sort-key order (a chunk before its ``.r<n>`` children).

    Yields:
        One ``LedgerEntry`` per entry: its settled record merged with the ``partial`` ledgers of its
        earlier retried attempts; entries only ever retried come last, as ``retried``.

    """
    pending: dict[tuple[str, str], LedgerEntry] = {}
    for item in items:
        if not str(item.get("sk", "")).startswith(CHUNK_PREFIX):
            continue
        scope = item.get("scope") or {}
        for record in item.get("partial", []):
            entry = decode(record, scope, OUTCOME_RETRIED)
            if entry is not None:
                key = (entry.locator, entry.certificate_id)
                pending[key] = pending[key].merge(entry) if key in pending else entry
        for name, outcome in (("imported", OUTCOME_IMPORTED), ("failures", OUTCOME_FAILED)):
            for record in item.get(name, []):
                key = (str(record["locator"]), str(record.get("certificate_id") or ""))
                entry = decode(record, scope, outcome)
                earlier = pending.pop(key, None)
                if earlier is not None:
                    entry = earlier.merge(entry) if entry else _settled(earlier, outcome)
                if entry is not None:
                    yield entry
    yield from pending.values()


def _settled(entry: LedgerEntry, outcome: str) -> LedgerEntry:
    return LedgerEntry(**{**entry.__dict__, "outcome": outcome})
