"""The job lifecycle: one transition table that every ``JobStore`` write consults.

The statuses and their order are described in docs/ARCHITECTURE.md, "Jobs". Each ``Step`` is one
kind of ``JobStore`` write; ``LIFECYCLE`` says from which statuses it may start and which status it
leaves behind. ``JobStore`` builds its DynamoDB status conditions from this table, so a write the
table does not allow is refused by DynamoDB as well as by ``check``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from types import MappingProxyType


class JobStatus(enum.StrEnum):
    """The life cycle of a job (``str()`` is the stored value)."""

    RECEIVED = "RECEIVED"
    PARSING = "PARSING"
    IMPORTING = "IMPORTING"
    REPORTING = "REPORTING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    FAILED = "FAILED"
    UNDONE = "UNDONE"
    UNDO_PARTIAL = "UNDO_PARTIAL"


INITIAL_STATUS = JobStatus.RECEIVED
"""The status ``create_job`` gives a new job."""

IMPORT_STATUSES = (JobStatus.PARSING, JobStatus.IMPORTING)
"""The statuses in which a job's import messages are acted on.

The provider sends them only after ``CLAIM_PARSE`` (PARSING), and every entry has settled once
``CLAIM_REPORT`` leaves IMPORTING: a message of a job in any other status is unknown or late.
"""


class Step(enum.StrEnum):
    """A kind of write to the job item, named after the ``JobStore`` method that makes it."""

    CLAIM_PARSE = "claim_parse"
    SAVE_CHECKPOINT = "save_checkpoint"
    MARK_PARSED = "mark_parsed"
    CLAIM_REPORT = "claim_report"
    FINISH = "finish"
    FAIL = "fail"
    ABANDON = "abandon"
    RESTART_PROGRESS_CLOCK = "restart_progress_clock"
    UNDO_CHECKPOINT = "undo_checkpoint"
    FINISH_UNDO = "finish_undo"


@dataclass(frozen=True)
class Transition:
    """Where a step may start (``sources``) and the statuses it may leave (``targets``).

    An empty ``targets`` means the step keeps the job's status.
    """

    sources: tuple[JobStatus, ...]
    targets: tuple[JobStatus, ...] = ()

    def allows(self, source: JobStatus, target: JobStatus) -> bool:
        """Return whether this step may move a job from ``source`` to ``target``."""
        if source not in self.sources:
            return False
        return target == source if not self.targets else target in self.targets


_UNFINISHED = (JobStatus.RECEIVED, JobStatus.PARSING, JobStatus.IMPORTING)
UNDO_STATUSES = (JobStatus.UNDONE, JobStatus.UNDO_PARTIAL)
"""The statuses an undo leaves; an import's final statuses and these may be undone (again)."""
_UNDOABLE = (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.FAILED, *UNDO_STATUSES)

LIFECYCLE: Mapping[Step, Transition] = MappingProxyType(
    {
        Step.CLAIM_PARSE: Transition((JobStatus.RECEIVED, JobStatus.PARSING), (JobStatus.PARSING,)),
        Step.SAVE_CHECKPOINT: Transition((JobStatus.PARSING,)),
        Step.MARK_PARSED: Transition((JobStatus.PARSING,), (JobStatus.IMPORTING,)),
        Step.CLAIM_REPORT: Transition((JobStatus.IMPORTING,), (JobStatus.REPORTING,)),
        Step.FINISH: Transition(
            (JobStatus.REPORTING,),
            (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.FAILED),
        ),
        Step.FAIL: Transition(_UNFINISHED, (JobStatus.FAILED,)),
        Step.ABANDON: Transition(_UNFINISHED, (JobStatus.FAILED,)),
        Step.RESTART_PROGRESS_CLOCK: Transition((*_UNFINISHED, JobStatus.REPORTING)),
        Step.UNDO_CHECKPOINT: Transition(_UNDOABLE),
        Step.FINISH_UNDO: Transition(_UNDOABLE, UNDO_STATUSES),
    }
)
"""The transition table: every write to a job item's status, and where it may happen."""


def next_statuses(status: JobStatus) -> frozenset[JobStatus]:
    """Return the statuses a job in ``status`` can reach in one step (itself when a step keeps it)."""
    reachable: set[JobStatus] = set()
    for transition in LIFECYCLE.values():
        if status in transition.sources:
            reachable.update(transition.targets or (status,))
    return frozenset(reachable)


FINAL_STATUSES = frozenset(
    status for status in JobStatus if not next_statuses(status) - {status, *UNDO_STATUSES}
)
"""Statuses whose import is over (COMPLETED, COMPLETED_WITH_ERRORS, FAILED, and after an undo UNDONE
and UNDO_PARTIAL): only an undo moves a job on from them."""


class IllegalTransitionError(ValueError):
    """A step was asked to move a job where the transition table does not allow it."""


def check(step: Step, source: JobStatus, target: JobStatus | None = None) -> None:
    """Refuse a move the transition table does not allow.

    Args:
        step: the kind of write.
        source: the job's status before it.
        target: the status after it; None for the step's only target (or the source when it keeps it).

    Raises:
        IllegalTransitionError: ``step`` may not move a job from ``source`` to ``target``.

    """
    transition = LIFECYCLE[step]
    if target is None:
        target = transition.targets[0] if len(transition.targets) == 1 else source
    if source not in transition.sources:
        names = [str(status) for status in transition.sources]
        allowed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise IllegalTransitionError(f"Only a {allowed} job can take the step {step}, not {source}.")
    if not transition.allows(source, target):
        raise IllegalTransitionError(f"The step {step} cannot move a job from {source} to {target}.")


def status_condition(step: Step, values: MutableMapping[str, object]) -> str:
    """Return the DynamoDB condition that the job's status is one of ``step``'s sources.

    Args:
        step: the kind of write.
        values: the request's expression attribute values; the sources are added as ``:from_<n>``.

    Returns:
        ``#status = :from_0`` for one source, else ``#status IN (:from_0, …)``.

    """
    names = []
    for index, status in enumerate(LIFECYCLE[step].sources):
        values[f":from_{index}"] = str(status)
        names.append(f":from_{index}")
    if len(names) == 1:
        return f"#status = {names[0]}"
    return f"#status IN ({', '.join(names)})"
