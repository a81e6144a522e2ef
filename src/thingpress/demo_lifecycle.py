"""The demo's lifecycle of one manifest: import, reconcile, undo, reconcile (``thingpress demo``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from layer_utils.reconcile import reconcile_job
from thingpress import remote
from thingpress.localrun import new_capture
from thingpress.localserve import stack_deployment
from thingpress.localstate import RunningStack
from thingpress.undo_cli import UndoOptions, carry_out_undo


def demo_lifecycle(stack: Any, report: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Show the rest of one imported manifest's lifecycle: reconcile, undo (``--yes``), reconcile.

    It runs the commands' own code against the demo's stack, as ``--local`` reaches one:
    `layer_utils.reconcile.reconcile_job` and `thingpress.undo_cli.run_undo` (the undo goes to the
    stack's UndoQueue when its template has one, its functions running while the command waits, and
    otherwise runs in this process).

    Args:
        stack: The started local stack.
        report: The report of the manifest's finished import.

    Returns:
        The lines that tell the lifecycle, and the problems: drift after the import or after the undo,
        an undo that is not UNDONE, or a thing of the manifest still in IoT.

    """
    from thingpress.local import EventSourceMappingEmulator  # noqa: PLC0415 - loads moto

    lines: list[str] = []
    running = RunningStack(os.getpid(), stack.endpoint_url, stack.region, stack_deployment(stack))
    store = remote.job_store(running.deployment, dynamodb=running.client("dynamodb"), s3=running.client("s3"))
    iot, job_id = running.client("iot"), str(report["job_id"])
    key = remote.find_job(store, job_id).key
    lines.append(f"Lifecycle of {key}: import, reconcile, undo, reconcile")
    emulator = EventSourceMappingEmulator(stack, max_concurrency=None)

    def run_functions(_seconds: float) -> None:  # while the undo command waits for the UndoFunction
        with new_capture():  # their metrics (EMF) stay off stdout
            emulator.run_until_idle(max_seconds=5.0)

    problems: list[str] = []
    for moment in ("the import", "the undo"):
        if moment == "the undo":
            options = UndoOptions(as_json=True, yes=True, sleep=run_functions)  # as_json: no progress
            undone = carry_out_undo(running, running.deployment, store, job_id, options)
            status = "not followed" if undone is None else undone.status
            lines.append(f"Undo: {status}, {0 if undone is None else len(undone.removed)} resources removed.")
            if status != "UNDONE":
                problems.append(f"{key}: the undo did not end UNDONE.")
        job = remote.find_job(store, job_id)
        result = reconcile_job(iot, store, job)
        counts = ", ".join(f"{count} {kind}" for kind, count in result.counts().items())
        lines.append(f"Reconcile after {moment} ({job.status}): {result.entries} entries, drift: {counts}.")
        problems += [f"{key}: drift after {moment}: {drift.message}" for drift in result.drifts]
    left = {thing["thing_name"] for thing in remote.inventory(iot)} & {
        t["thing_name"] for t in report["things"]
    }
    problems += [f"{key}: thing {name} is still in IoT after the undo." for name in sorted(left)]
    return lines, problems
