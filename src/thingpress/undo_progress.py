"""How ``thingpress undo`` carries out and follows a real undo: in this process, or by polling the job item.

`undo_here` runs `undo_worker.undo.undo_job` against a local stack's endpoint (a template without
the UndoQueue); `follow_undo` polls the job item's undo checkpoint while the stack's UndoFunction
works, until `undo_finished`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from thingpress.console import CliError, err_console
from thingpress.progress import JobProgress

if TYPE_CHECKING:
    from layer_utils.jobs import Job, JobStore
    from thingpress.undo_cli import UndoOptions

POLL_SECONDS = 1.0
"""How often the job item is read while the UndoFunction works."""


def undo_here(
    store: JobStore, job: Job, iot: Any, cert_arn: Callable[[str], str], *, entries: int, show: bool
) -> None:
    """Undo the job in this process (a local stack without an UndoQueue), with progress on stderr.

    Raises:
        CliError: The undo stopped on a throttled or failing call or an open circuit (run it again: it
            resumes from its checkpoint), or was refused.

    """
    from layer_utils.circuit import CircuitOpenError, CircuitRegistry  # noqa: PLC0415
    from layer_utils.errors import AwsOperationError  # noqa: PLC0415
    from undo_worker.undo import UNDO_ENTRIES, UndoRefusedError, undo_job  # noqa: PLC0415

    done = 0
    with JobProgress(enabled=show) as progress:

        def emit(name: str, value: float) -> None:
            nonlocal done
            if name == UNDO_ENTRIES:
                done += int(value)
                progress.update(f"undo {job.key}", done, entries, "UNDOING")

        progress.update(f"undo {job.key}", 0, entries, "UNDOING")
        try:
            undo_job(
                store,
                job.job_id,
                iot=iot,
                cert_arn=cert_arn,
                limiter=None,
                registry=CircuitRegistry(),
                emit=emit,
            )
        except (AwsOperationError, CircuitOpenError) as error:
            raise CliError(
                f"The undo stopped ({error}); run it again to resume from its checkpoint."
            ) from None
        except UndoRefusedError as error:
            raise CliError(str(error)) from None


def undo_finished(job: Job, previous: Mapping[str, Any]) -> bool:
    """Return whether the undo requested after ``previous`` (the job's undo checkpoint then) has ended.

    A new request resumes an unfinished run (same ``run``) or starts the next one.
    """
    from layer_utils.jobstore.lifecycle import UNDO_STATUSES  # noqa: PLC0415

    undo = job.undo or {}
    if job.status not in UNDO_STATUSES or not undo.get("done"):
        return False
    run, before = int(undo.get("run", 0)), int(previous.get("run", 0))
    return run > before or (run == before and not previous.get("done"))


def follow_undo(
    store: JobStore,
    job: Job,
    previous: Mapping[str, Any],
    *,
    entries: int,
    show: bool,
    options: UndoOptions,
) -> None:
    """Poll the job item until the requested undo ended, with a progress bar on stderr.

    Raises:
        CliError: It has not ended after ``options.max_seconds`` (it goes on; ``thingpress report``
            shows it).

    """
    from undo_worker.undo import UNDO_CHUNK  # noqa: PLC0415

    started = options.clock()
    label = f"undo {job.key}"
    if show:
        err_console().print(f"Undo of job {job.job_id} requested; waiting for the UndoFunction.")
    with JobProgress(enabled=show) as progress:
        while True:
            current = store.get_job(job.job_id) or job
            if undo_finished(current, previous):
                progress.update(label, entries, entries, str(current.status))
                return
            undo = current.undo or {}
            stale = bool(undo.get("done")) and int(undo.get("run", 0)) == int(previous.get("run", 0))
            chunks = 0 if stale else int(undo.get("next", 0))
            progress.update(label, min(chunks * UNDO_CHUNK, entries), entries, "UNDOING")
            if options.clock() - started >= options.max_seconds:
                raise CliError(
                    f"The undo of job {job.job_id} has not ended after {options.max_seconds:.0f} seconds;"
                    " it goes on: see `thingpress report` for its status."
                )
            options.sleep(POLL_SECONDS)
