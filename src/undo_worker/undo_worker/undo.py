"""Undo a job: remove from AWS IoT only what its ledger says the job made, in dependency order.

Per entry, reads first (``DescribeCertificate``, ``ListPrincipalThings``, ``ListAttachedPolicies``,
``DescribeThing``, ``ListThingPrincipals``, only those the ledger needs), then the writes:
``DetachPolicy`` per policy the job attached, ``RemoveThingFromThingGroup`` per group it added,
``DetachThingPrincipal``, ``UpdateCertificate`` (INACTIVE) and ``DeleteCertificate`` for a
certificate it registered, ``DeleteThing`` for a thing it created. An entry changed since by someone
else (its certificate attached elsewhere or given other policies, its thing given other principals)
or whose thing lacks the ownership mark is left whole and listed with the reason. Every call is a
:func:`layer_utils.protected.protected_call` (rate limiter, circuit breaker). The protocol
(checkpoint per chunk, statuses, report) is docs/ARCHITECTURE.md, "Undo".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from layer_utils.errors import AwsOperationError, ErrorClass
from layer_utils.iot_names import OWNER_ATTRIBUTE
from layer_utils.jobs import Job, JobStore
from layer_utils.jobstore.ledger import ATTACHED, CREATED, FOUND, REGISTERED, LedgerEntry
from layer_utils.protected import Limiter, protected_call

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient

    from layer_utils.circuit import CircuitRegistry

UNDO_CHUNK = 50
"""Entries per checkpoint: a resumed undo repeats at most this many entries (idempotently)."""

UNDO_REMOVED = "UndoRemoved"
UNDO_LEFT = "UndoLeft"
UNDO_ENTRIES = "UndoEntries"
"""Metrics: resources removed, resources left (changed since or refused), entries processed."""


class UndoRefusedError(ValueError):
    """The job cannot be undone (its import is not over, or it does not exist)."""


@dataclass(frozen=True)
class Action:
    """One write of the undo: the IoT operation, its parameters and the sentence that tells it."""

    api: str
    params: dict[str, Any]
    text: str


@dataclass
class EntryPlan:
    """What undoing one ledger entry does (``actions``), keeps (existed before) and leaves (changed)."""

    entry: LedgerEntry
    actions: list[Action] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)
    left: list[dict[str, str]] = field(default_factory=list)


@dataclass
class UndoResult:
    """What an undo did (or, for a dry run, would do)."""

    job_id: str
    removed: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)
    left: list[dict[str, str]] = field(default_factory=list)
    status: str | None = None
    run: int | None = None
    paused: bool = False
    """True when ``out_of_time`` stopped the run before its end: call again to resume."""


class UndoCalls:
    """Makes the undo's IoT calls through the rate limiter and the circuit breakers."""

    def __init__(self, iot: IoTClient, limiter: Limiter | None, registry: CircuitRegistry) -> None:
        """Take the IoT client, the rate limiter (None: no limit) and the circuit registry."""
        self.iot = iot
        self.limiter = limiter
        self.registry = registry

    def call(self, api: str, **params: Any) -> Any:
        """Call the IoT operation ``api`` (its boto3 method by name); None when AWS says it is gone."""
        method = getattr(self.iot, _snake(api))
        try:
            return protected_call(
                self.registry, f"iot:{api}", lambda: method(**params), limiter=self.limiter, context=params
            )
        except AwsOperationError as error:
            if error.error_class is ErrorClass.NOT_FOUND:
                return None
            raise


def _snake(api: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in api).lstrip("_")


def _record(entry: LedgerEntry, resource: str, reason: str) -> dict[str, str]:
    return {
        "locator": entry.locator,
        "thing_name": entry.thing_name,
        "certificate_id": entry.certificate_id,
        "resource": resource,
        "reason": reason,
    }


def plan_entry(calls: UndoCalls, entry: LedgerEntry, cert_arn: str) -> EntryPlan:
    """Read the entry's resources in AWS IoT and decide what undoing it removes.

    Args:
        calls: the protected IoT calls.
        entry: the ledger entry.
        cert_arn: the ARN of the entry's certificate.

    Returns:
        The plan; nothing is written.

    """
    plan = EntryPlan(entry)
    cert_id, thing = entry.certificate_id, entry.thing_name
    for resource, state in (
        (f"certificate {cert_id}", entry.certificate),
        (f"thing {thing}", entry.thing),
        (f"attachment of certificate {cert_id} to thing {thing}", entry.principal),
    ):
        if state == FOUND:
            plan.kept.append(_record(entry, resource, "existed before the import"))
    plan.kept.extend(
        _record(entry, f"{what} {name}", "existed before the import")
        for what, names in (
            ("policy attachment", entry.policies_found),
            ("group membership", entry.groups_found),
        )
        for name in names
    )
    certificate = calls.call("DescribeCertificate", certificateId=cert_id) if entry.certificate else None
    status = (certificate or {}).get("certificateDescription", {}).get("status")
    reasons: list[tuple[str, str]] = []
    cert_things: list[str] = []
    if certificate is not None:
        cert_things = list((calls.call("ListPrincipalThings", principal=cert_arn) or {}).get("things", []))
        elsewhere = sorted(name for name in cert_things if name != thing)
        if elsewhere:
            reasons.append((f"certificate {cert_id}", f"it is now attached to thing {elsewhere[0]}"))
        if entry.certificate == REGISTERED:
            listed = calls.call("ListAttachedPolicies", target=cert_arn) or {}
            foreign = sorted(
                str(policy["policyName"])
                for policy in listed.get("policies", [])
                if policy["policyName"] not in entry.policies_attached
            )
            if foreign:
                reasons.append(
                    (
                        f"certificate {cert_id}",
                        f"it now has policies the import did not attach: {', '.join(foreign)}",
                    )
                )
    described = (
        calls.call("DescribeThing", thingName=thing) if entry.thing == CREATED or entry.groups_added else None
    )
    principals: list[str] = []
    if described is not None and entry.thing == CREATED:
        owner = (described.get("attributes") or {}).get(OWNER_ATTRIBUTE)
        if owner != cert_id:
            reasons.append((f"thing {thing}", f"it lacks the ownership mark {OWNER_ATTRIBUTE}={cert_id}"))
        principals = list((calls.call("ListThingPrincipals", thingName=thing) or {}).get("principals", []))
        others = sorted(arn for arn in principals if arn != cert_arn)
        if others:
            reasons.append((f"thing {thing}", f"it now has other principals: {', '.join(others)}"))
    if reasons:
        plan.left.extend(_record(entry, resource, f"left in place: {reason}") for resource, reason in reasons)
        return plan
    if certificate is not None:
        plan.actions.extend(
            Action(
                "DetachPolicy",
                {"policyName": name, "target": cert_arn},
                f"detach policy {name} from certificate {cert_id}",
            )
            for name in entry.policies_attached
        )
    if described is not None:
        plan.actions.extend(
            Action(
                "RemoveThingFromThingGroup",
                {"thingGroupName": group, "thingName": thing},
                f"remove thing {thing} from thing group {group}",
            )
            for group in entry.groups_added
        )
    if certificate is not None and entry.principal == ATTACHED and thing in cert_things:
        plan.actions.append(
            Action(
                "DetachThingPrincipal",
                {"thingName": thing, "principal": cert_arn},
                f"detach certificate {cert_id} from thing {thing}",
            )
        )
    if certificate is not None and entry.certificate == REGISTERED:
        if status == "ACTIVE":
            plan.actions.append(
                Action(
                    "UpdateCertificate",
                    {"certificateId": cert_id, "newStatus": "INACTIVE"},
                    f"set certificate {cert_id} INACTIVE",
                )
            )
        plan.actions.append(
            Action("DeleteCertificate", {"certificateId": cert_id}, f"delete certificate {cert_id}")
        )
    if described is not None and entry.thing == CREATED:
        plan.actions.append(Action("DeleteThing", {"thingName": thing}, f"delete thing {thing}"))
    return plan


def run_plan(calls: UndoCalls, plan: EntryPlan) -> list[str]:
    """Make the plan's writes in order; a write AWS refuses for good stops the entry and is listed.

    Returns:
        The sentences of the writes made (or found done already).

    Raises:
        AwsOperationError: a throttled or transient failure (retry the chunk later).
        CircuitOpenError: a circuit is open (retry the chunk later).

    """
    done: list[str] = []
    for action in plan.actions:
        try:
            calls.call(action.api, **action.params)
        except AwsOperationError as error:
            if error.retryable:
                raise
            detail = f"{error.code}: {error.message}" if error.message else error.code
            plan.left.append(_record(plan.entry, action.text, f"{action.api} failed ({detail})"))
            break
        done.append(action.text)
    return done


def _chunks(entries: list[LedgerEntry], size: int) -> Iterator[tuple[int, list[LedgerEntry]]]:
    for index in range(0, len(entries), size):
        yield index // size, entries[index : index + size]


def undo_job(
    jobs: JobStore,
    job_id: str,
    *,
    iot: IoTClient,
    cert_arn: Callable[[str], str],
    limiter: Limiter | None,
    registry: CircuitRegistry,
    emit: Callable[[str, float], None] = lambda _name, _value: None,
    dry_run: bool = False,
    chunk_size: int = UNDO_CHUNK,
    out_of_time: Callable[[], bool] = lambda: False,
) -> UndoResult:
    """Undo a job, resuming from its checkpoint; a dry run plans every entry and writes nothing.

    Args:
        jobs: the job store.
        job_id: the job.
        iot: the IoT client.
        cert_arn: the ARN of a certificate id.
        limiter: the rate limiter (with the delete APIs' quotas), or None.
        registry: the circuit registry.
        emit: emits a count metric (name, value).
        dry_run: plan only.
        chunk_size: entries per checkpoint.
        out_of_time: asked before each chunk; True stops the run there (``paused``, resumable).

    Returns:
        What was removed, kept and left (a real run: from the start of this undo run, across resumes);
        a paused run has only its ``run`` and ``paused`` set.

    Raises:
        UndoRefusedError: the job does not exist or its import is not over.
        AwsOperationError: a retryable failure (resume later: the checkpoint keeps the progress).
        CircuitOpenError: a circuit is open (resume later).

    """
    job = jobs.get_job(job_id)
    if job is None:
        raise UndoRefusedError(f"Job {job_id} does not exist.")
    entries = sorted(jobs.ledger(job_id), key=lambda entry: (entry.locator, entry.certificate_id))
    calls = UndoCalls(iot, limiter, registry)
    result = UndoResult(job_id)
    if dry_run:
        _refuse_unless_undoable(job)
        for entry in entries:
            plan = plan_entry(calls, entry, cert_arn(entry.certificate_id))
            result.removed.extend(action.text for action in plan.actions)
            result.kept.extend(plan.kept)
            result.left.extend(plan.left)
        return result
    checkpoint = jobs.begin_undo(job)
    if checkpoint is None:
        _refuse_unless_undoable(job)
        raise UndoRefusedError(f"Job {job_id} changed while its undo started; try again.")
    result.run = int(checkpoint["run"])
    for index, chunk in _chunks(entries, chunk_size):
        if index < int(checkpoint["next"]):
            continue
        if out_of_time():
            result.paused = True
            return result
        removed: list[str] = []
        plans = []
        for entry in chunk:
            plan = plan_entry(calls, entry, cert_arn(entry.certificate_id))
            removed.extend(run_plan(calls, plan))
            plans.append(plan)
        left = [record for plan in plans for record in plan.left]
        kept = [record for plan in plans for record in plan.kept]
        jobs.record_undo_chunk(job_id, int(checkpoint["run"]), index, removed=removed, left=left, kept=kept)
        checkpoint = {**checkpoint, "next": index + 1}
        if not jobs.save_undo_checkpoint(job_id, checkpoint):
            raise UndoRefusedError(f"Job {job_id} changed during its undo.")
        emit(UNDO_ENTRIES, len(chunk))
        emit(UNDO_REMOVED, len(removed))
        emit(UNDO_LEFT, len(left))
    finished = jobs.finish_undo(jobs.get_job(job_id) or job, checkpoint)
    items = jobs.undo_items(job_id, int(checkpoint["run"]))
    result.removed = [text for item in items for text in item.get("removed", [])]
    result.left = [record for item in items for record in item.get("left", [])]
    result.kept = [record for item in items for record in item.get("kept", [])]
    result.status = None if finished is None else str(finished.status)
    return result


def _refuse_unless_undoable(job: Job) -> None:
    if not job.is_final:
        raise UndoRefusedError(
            f"Job {job.job_id} is {job.status}: only a job whose import is over can be undone."
        )
