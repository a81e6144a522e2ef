"""Reconcile: compare what a job's ledger says it established in AWS IoT with what IoT holds now.

For every certificate a job imported, the ledger names the thing, the principal attachment, the
policies, the thing groups and the thing type; the certificate must be ACTIVE, attached to that
thing only, and the thing must have no other principal (the importer attaches exclusively). Each
difference is a `Drift`: something ``missing`` (deleted or detached since), ``extra`` (attached or
added since) or ``changed`` (thing type, certificate status). The functions take an IoT client, so
the CLI (``thingpress reconcile``) and a scheduled function share them.

After an undo (the job UNDONE or UNDO_PARTIAL, `reconcile_job`), what the undo removed is expected
gone and what the job found is expected present; an entry the undo left in place is expected as the
import left it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from botocore.exceptions import ClientError

from layer_utils.jobstore.ledger import ATTACHED, CREATED, FOUND, OUTCOME_IMPORTED, REGISTERED, LedgerEntry
from layer_utils.jobstore.lifecycle import UNDO_STATUSES

if TYPE_CHECKING:
    from layer_utils.jobs import Job, JobStore

__all__ = [
    "DRIFT_KINDS",
    "Drift",
    "Expectation",
    "Reconciliation",
    "reconcile",
    "reconcile_entry",
    "reconcile_job",
    "reconcile_undone",
    "reconcile_undone_entry",
]

DriftKind = Literal["missing", "extra", "changed"]
DRIFT_KINDS: Final = ("missing", "extra", "changed")
ACTIVE: Final = "ACTIVE"


@dataclass(frozen=True)
class Expectation:
    """What one ledger entry says IoT holds for one imported certificate.

    ``owns_thing``: the job created the thing, so its groups and type are exactly the ledger's (a
    thing it found may have had more groups and any type). ``owns_certificate``: the job registered
    the certificate, so its policies are exactly the ledger's.
    """

    certificate_id: str
    thing_name: str
    policies: tuple[str, ...] = ()
    thing_groups: tuple[str, ...] = ()
    thing_type: str | None = None
    owns_thing: bool = True
    owns_certificate: bool = True

    @classmethod
    def of(cls, entry: LedgerEntry) -> Expectation | None:
        """Return what an imported entry's ledger expects (None for a failed or only-tried entry)."""
        if entry.outcome != OUTCOME_IMPORTED:
            return None
        return cls(
            certificate_id=entry.certificate_id,
            thing_name=entry.thing_name,
            policies=(*entry.policies_attached, *entry.policies_found),
            thing_groups=(*entry.groups_added, *entry.groups_found),
            thing_type=entry.thing_type,
            owns_thing=entry.thing == CREATED,
            owns_certificate=entry.certificate == REGISTERED,
        )


@dataclass(frozen=True)
class Drift:
    """One difference between a ledger entry and IoT.

    Attributes:
        kind: ``missing``, ``extra`` or ``changed``.
        resource: ``certificate``, ``thing``, ``principal``, ``policy``, ``thing_group`` or ``thing_type``.
        thing_name: The entry's thing.
        certificate_id: The entry's certificate.
        expected: What the ledger says (None for an extra resource).
        actual: What IoT holds (None for a missing resource).

    """

    kind: DriftKind
    resource: str
    thing_name: str
    certificate_id: str
    expected: str | None = None
    actual: str | None = None

    @property
    def message(self) -> str:
        """One English sentence for people."""
        subject = f"thing {self.thing_name} / certificate {self.certificate_id[:12]}"
        what = self.resource.replace("_", " ")
        if self.kind == "missing":
            return f"{subject}: {what} {self.expected} is missing."
        if self.kind == "extra":
            return f"{subject}: extra {what} {self.actual}."
        return f"{subject}: {what} is {self.actual}, the ledger says {self.expected}."

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (with ``message``)."""
        return {
            "kind": self.kind,
            "resource": self.resource,
            "thing_name": self.thing_name,
            "certificate_id": self.certificate_id,
            "expected": self.expected,
            "actual": self.actual,
            "message": self.message,
        }


def _not_found(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ResourceNotFoundException"


def _pages(iot: Any, operation: str, result_key: str, **kwargs: Any) -> Iterator[Any]:
    for page in iot.get_paginator(operation).paginate(**kwargs):
        yield from page.get(result_key, [])


def _certificate_id(principal: str) -> str:
    return principal.rsplit("/", 1)[-1]


def _compare_sets(
    make: Callable[..., Drift],
    resource: str,
    expected: Iterable[str],
    actual: Iterable[str],
    *,
    extra: bool = True,
) -> list[Drift]:
    wanted, held = set(expected), set(actual)
    missing = [make("missing", resource, expected=name) for name in sorted(wanted - held)]
    return missing + [make("extra", resource, actual=name) for name in sorted(held - wanted) if extra]


def reconcile_entry(iot: Any, expectation: Expectation) -> list[Drift]:
    """Return how IoT differs from one ledger entry (empty when it matches).

    Raises:
        botocore.exceptions.ClientError: An IoT call failed for another reason than a missing resource.

    """
    thing, certificate = expectation.thing_name, expectation.certificate_id

    def make(
        kind: DriftKind, resource: str, *, expected: str | None = None, actual: str | None = None
    ) -> Drift:
        return Drift(kind, resource, thing, certificate, expected=expected, actual=actual)

    drifts: list[Drift] = []
    arn: str | None = None
    try:
        described = iot.describe_certificate(certificateId=certificate)["certificateDescription"]
        arn = str(described["certificateArn"])
        if described.get("status") != ACTIVE:
            drifts.append(
                make("changed", "certificate", expected=ACTIVE, actual=str(described.get("status")))
            )
    except ClientError as error:
        if not _not_found(error):
            raise
        drifts.append(make("missing", "certificate", expected=certificate))
    try:
        thing_type = iot.describe_thing(thingName=thing).get("thingTypeName")
    except ClientError as error:
        if not _not_found(error):
            raise
        drifts.append(make("missing", "thing", expected=thing))
    else:
        if expectation.owns_thing and (thing_type or None) != expectation.thing_type:
            drifts.append(make("changed", "thing_type", expected=expectation.thing_type, actual=thing_type))
        principals = [
            _certificate_id(p) for p in _pages(iot, "list_thing_principals", "principals", thingName=thing)
        ]
        drifts += _compare_sets(make, "principal", [certificate], principals)
        groups = [
            g["groupName"] for g in _pages(iot, "list_thing_groups_for_thing", "thingGroups", thingName=thing)
        ]
        drifts += _compare_sets(
            make, "thing_group", expectation.thing_groups, groups, extra=expectation.owns_thing
        )
    if arn is not None:
        policies = [p["policyName"] for p in _pages(iot, "list_attached_policies", "policies", target=arn)]
        drifts += _compare_sets(
            make, "policy", expectation.policies, policies, extra=expectation.owns_certificate
        )
        others = [
            name for name in _pages(iot, "list_principal_things", "things", principal=arn) if name != thing
        ]
        drifts += [make("extra", "thing", actual=name) for name in sorted(others)]
    return drifts


@dataclass(frozen=True)
class Reconciliation:
    """The drift of one job: how many imported entries were compared, and every difference.

    After an undo, ``undone`` counts the entries whose made resources are expected gone and ``left``
    holds the undo's records of what it left in place (expected present, with the reason).
    """

    entries: int
    drifts: tuple[Drift, ...]
    undone: int = 0
    left: tuple[Mapping[str, str], ...] = ()

    def counts(self) -> dict[str, int]:
        """Return the number of drifts of each kind (``missing``, ``extra``, ``changed``)."""
        return {kind: sum(drift.kind == kind for drift in self.drifts) for kind in DRIFT_KINDS}


def reconcile(iot: Any, ledger: Iterable[LedgerEntry]) -> Reconciliation:
    """Compare every imported entry of a job's ledger with IoT (`reconcile_entry`), in ledger order.

    Args:
        iot: An IoT client.
        ledger: The job's ledger (``JobStore.ledger``); failed and only-tried entries are skipped.

    Returns:
        The entries compared and their drift.

    """
    expectations = [e for e in map(Expectation.of, ledger) if e is not None]
    drifts = tuple(drift for expectation in expectations for drift in reconcile_entry(iot, expectation))
    return Reconciliation(len(expectations), drifts)


def _exists(call: Callable[[], Any]) -> Any:
    """Return ``call()``, or None when IoT says the resource does not exist."""
    try:
        return call()
    except ClientError as error:
        if not _not_found(error):
            raise
        return None


def reconcile_undone_entry(iot: Any, entry: LedgerEntry) -> list[Drift]:
    """Return how IoT differs from an entry the undo removed: what the job made must be gone.

    What the job found (``found`` in the ledger: existed before the import) must still be there. A
    made resource still present is ``extra``; a found one gone is ``missing``.

    Raises:
        botocore.exceptions.ClientError: An IoT call failed for another reason than a missing resource.

    """
    thing, certificate = entry.thing_name, entry.certificate_id

    def make(
        kind: DriftKind, resource: str, *, expected: str | None = None, actual: str | None = None
    ) -> Drift:
        return Drift(kind, resource, thing, certificate, expected=expected, actual=actual)

    drifts: list[Drift] = []
    described = (
        _exists(lambda: iot.describe_certificate(certificateId=certificate)["certificateDescription"])
        if entry.certificate
        else None
    )
    if entry.certificate == REGISTERED and described is not None:
        drifts.append(make("extra", "certificate", actual=certificate))
    if entry.certificate == FOUND and described is None:
        drifts.append(make("missing", "certificate", expected=certificate))
    present = _exists(lambda: iot.describe_thing(thingName=thing)) if entry.thing else None
    if entry.thing == CREATED and present is not None:
        drifts.append(make("extra", "thing", actual=thing))
    if entry.thing == FOUND and present is None:
        drifts.append(make("missing", "thing", expected=thing))
    if present is not None and entry.principal in (ATTACHED, FOUND):
        principals = {
            _certificate_id(p) for p in _pages(iot, "list_thing_principals", "principals", thingName=thing)
        }
        if entry.principal == ATTACHED and certificate in principals:
            drifts.append(make("extra", "principal", actual=certificate))
        if entry.principal == FOUND and certificate not in principals:
            drifts.append(make("missing", "principal", expected=certificate))
    if present is not None and (entry.groups_added or entry.groups_found):
        groups = {
            g["groupName"] for g in _pages(iot, "list_thing_groups_for_thing", "thingGroups", thingName=thing)
        }
        drifts += _after_undo(make, "thing_group", entry.groups_added, entry.groups_found, groups)
    if described is not None and (entry.policies_attached or entry.policies_found):
        arn = described["certificateArn"]
        policies = {p["policyName"] for p in _pages(iot, "list_attached_policies", "policies", target=arn)}
        drifts += _after_undo(make, "policy", entry.policies_attached, entry.policies_found, policies)
    return drifts


def _after_undo(
    make: Callable[..., Drift], resource: str, made: Sequence[str], found: Sequence[str], held: set[str]
) -> list[Drift]:
    extra = [make("extra", resource, actual=name) for name in sorted(set(made) & held)]
    return extra + [make("missing", resource, expected=name) for name in sorted(set(found) - held)]


def reconcile_undone(
    iot: Any, ledger: Iterable[LedgerEntry], left: Sequence[Mapping[str, str]]
) -> Reconciliation:
    """Compare a job's ledger with IoT after an undo whose last run left ``left`` in place.

    An entry the undo left (any record of ``left`` names its locator and certificate) is expected as
    the import left it (`reconcile_entry`; a failed entry is skipped, as before an undo); every other
    entry, imported or failed, is expected undone (`reconcile_undone_entry`).

    Args:
        iot: An IoT client.
        ledger: The job's ledger.
        left: The records of what the undo's last run left in place (``locator``, ``certificate_id``,
            ``resource``, ``reason``).

    Returns:
        The entries compared, their drift, how many were undone and the records of ``left``.

    """
    left_entries = {(record.get("locator"), record.get("certificate_id")) for record in left}
    drifts: list[Drift] = []
    compared = undone = 0
    for entry in ledger:
        if (entry.locator, entry.certificate_id) in left_entries:
            expectation = Expectation.of(entry)
            if expectation is not None:
                compared += 1
                drifts += reconcile_entry(iot, expectation)
        else:
            compared += 1
            undone += 1
            drifts += reconcile_undone_entry(iot, entry)
    return Reconciliation(compared, tuple(drifts), undone=undone, left=tuple(left))


def reconcile_job(iot: Any, jobs: JobStore, job: Job) -> Reconciliation:
    """Reconcile one job: `reconcile`, or after an undo (UNDONE, UNDO_PARTIAL) `reconcile_undone`.

    Args:
        iot: An IoT client.
        jobs: The job store.
        job: The job.

    Returns:
        The reconciliation.

    """
    ledger = jobs.ledger(job.job_id)
    if job.status not in UNDO_STATUSES or not job.undo:
        return reconcile(iot, ledger)
    items = jobs.undo_items(job.job_id, int(job.undo["run"]))
    left = [record for item in items for record in item.get("left", [])]
    return reconcile_undone(iot, ledger, left)
