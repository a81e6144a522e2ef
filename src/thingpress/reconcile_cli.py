"""``thingpress reconcile``: a job's ledger against AWS IoT, printed as drift, with an exit code for scripts.

Exit codes: 0 no drift, 1 drift, 2 usage or environment error (no such job or stack, no AWS
credentials). The comparison is `layer_utils.reconcile`; the deployment is reached as by ``status``
and ``report`` (``--stack``, ``--bucket`` with ``--table``, or ``--local``). After an undo the
expectation is the undo's (`layer_utils.reconcile.reconcile_job`): what it removed must be gone, and
what it left in place is listed with its reason and expected present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from layer_utils.jobstore.lifecycle import UNDO_STATUSES
from layer_utils.reconcile import Reconciliation, reconcile_job
from layer_utils.schema import SCHEMA
from thingpress.console import out_console, print_json
from thingpress.remote import find_job
from thingpress.remote_cli import _connect


def drift_table(result: Reconciliation, *, title: str) -> Table:
    """Return a table of the drift: kind, resource, thing, certificate, the ledger's and IoT's value."""
    table = Table(title=title)
    for column in ("kind", "resource", "thing", "certificate", "ledger", "IoT"):
        table.add_column(column)
    for drift in result.drifts:
        table.add_row(
            drift.kind,
            drift.resource.replace("_", " "),
            drift.thing_name,
            drift.certificate_id[:16] + "…",
            drift.expected or "-",
            drift.actual or "-",
        )
    return table


def left_table(left: Any, *, title: str) -> Table:
    """Return a table of what an undo left in place: locator, thing, resource and the reason."""
    table = Table(title=title)
    for column in ("locator", "thing", "resource", "reason"):
        table.add_column(column)
    for record in left:
        table.add_row(
            str(record.get("locator", "")),
            str(record.get("thing_name", "")),
            str(record.get("resource", "")),
            str(record.get("reason", "")),
        )
    return table


def reconcile_command(
    job_or_key: str,
    *,
    stack: str | None,
    bucket: str | None,
    table: str | None,
    as_json: bool,
    region: str | None = None,
    profile: str | None = None,
    local: Path | None = None,
) -> int:
    """Run ``thingpress reconcile``: compare the ledger of one job with IoT and print the drift.

    No matching job raises ``CliError``.

    Returns:
        0 when IoT holds exactly what the ledger says, 1 when it drifted.

    """
    session, deployment, store = _connect(stack, bucket, table, region=region, profile=profile, local=local)
    job = find_job(store, job_or_key, deployment.bucket)
    result = reconcile_job(session.client("iot"), store, job)
    document: dict[str, Any] = {
        "job_id": job.job_id,
        "key": job.key,
        "status": str(job.status),
        "entries": result.entries,
        "drift": result.counts(),
        "drifts": [drift.to_dict() for drift in result.drifts],
        "undone": result.undone,
        "left": [dict(record) for record in result.left],
    }
    if as_json:
        print_json({"schema": SCHEMA, **document})
    else:
        console = out_console()
        counts = ", ".join(f"{count} {kind}" for kind, count in result.counts().items())
        if job.status in UNDO_STATUSES:
            console.print(
                f"Job {job.job_id} is {job.status}: {result.undone} entries expected undone,"
                f" {len(result.left)} resources left in place by the undo (expected present)."
            )
            if result.left:
                console.print(left_table(result.left, title="Left in place by the undo"))
        if result.drifts:
            console.print(drift_table(result, title=f"Drift of job {job.job_id} ({job.key})"))
            console.print(
                f"{len(result.drifts)} differences over {result.entries} imported entries: {counts}."
            )
        else:
            console.print(
                f"No drift: what the undo removed is gone and the rest is as recorded, over the"
                f" {result.entries} entries of job {job.job_id} ({job.key})."
                if job.status in UNDO_STATUSES
                else f"No drift: IoT holds what job {job.job_id} ({job.key}) recorded for its"
                f" {result.entries} imported entries."
            )
    return 1 if result.drifts else 0
