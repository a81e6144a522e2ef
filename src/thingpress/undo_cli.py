"""``thingpress undo``: remove what one job made in AWS IoT, after a dry run or a confirmation.

The plan (``--dry-run``, and the question a real undo asks) is `undo_worker.undo.undo_job` with
``dry_run=True``, run here with the operator's own credentials: only reads. A real undo is an SQS
message ``{"job_id": ...}`` to the stack's UndoQueue (``--stack``: the ``UndoQueueUrl`` output;
``--local``: the queue of the stack ``thingpress local up`` serves); the UndoFunction runs it, and
this command follows the job item's undo checkpoint until the job is UNDONE or UNDO_PARTIAL, then
prints the undo report. A local stack whose template has no UndoQueue is undone in this process,
against its endpoint. Exit codes: 0 UNDONE (and every dry run, and ``--no-wait``), 1 UNDO_PARTIAL,
2 usage or environment (no such job or stack, the job's import not over, no confirmation).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from layer_utils.schema import SCHEMA
from thingpress import cli_local
from thingpress.cli_options import add_remote_target, example, remote_target
from thingpress.console import (
    CliError,
    handler_logs_to_stderr,
    out_console,
    print_json,
)
from thingpress.undo_progress import follow_undo, undo_here

if TYPE_CHECKING:
    from layer_utils.jobs import Job, JobStore
    from thingpress.remote import Deployment

WAIT_SECONDS = 900.0
"""How long a real undo is followed before the command gives up waiting (the undo goes on)."""
REMOVED_SHOWN = 24
"""Removals a real undo prints (a dry run prints every one; the undo report holds every one)."""


def add_undo_command(commands: Any) -> None:
    """Add ``thingpress undo`` to the command's subparsers.

    Args:
        commands: The subparsers of ``thingpress``.

    """
    undo = commands.add_parser(
        "undo",
        help="remove what a job made in IoT: exit 0 UNDONE, 1 UNDO_PARTIAL (--dry-run: plan only)",
        epilog=example(
            "thingpress undo espressif/devices.csv --local --dry-run",
            "thingpress undo 3733d1b82ebbde85faa0a6f718496459 --stack thingpress --yes",
        ),
    )
    undo.add_argument(
        "job", metavar="JOB_ID_OR_MANIFEST_KEY", help="a job id, or the manifest's key in the bucket"
    )
    add_remote_target(undo)
    undo.add_argument("--dry-run", action="store_true", help="print what would be removed; change nothing")
    undo.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    undo.add_argument("--no-wait", action="store_true", help="return once the undo is requested")

    def handler(args: argparse.Namespace) -> int:
        stack, bucket, table = remote_target(args)
        with handler_logs_to_stderr(logging.ERROR):  # the CLI reports AWS failures itself
            return undo_command(
                args.job,
                stack=stack,
                bucket=bucket,
                table=table,
                local=cli_local.local_folder(args),
                region=args.region,
                profile=args.profile,
                as_json=args.json,
                dry_run=args.dry_run,
                yes=args.yes,
                wait=not args.no_wait,
            )

    undo.set_defaults(handler=handler)


@dataclass
class UndoView:
    """What an undo removed, left and kept (or, for a dry run, would): the command's output."""

    job_id: str
    key: str
    status: str
    dry_run: bool
    removed: list[str] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    report_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the ``--json`` document."""
        return {
            "job_id": self.job_id,
            "key": self.key,
            "status": self.status,
            "dry_run": self.dry_run,
            "counts": {"removed": len(self.removed), "left": len(self.left), "kept": len(self.kept)},
            "removed": self.removed,
            "left": [dict(record) for record in self.left],
            "kept": [dict(record) for record in self.kept],
            "report_key": self.report_key,
        }

    def summary(self) -> str:
        """Return the one-sentence summary printed first."""
        if self.dry_run:
            return (
                f"Dry run of the undo of job {self.job_id} ({self.key}, {self.status}): it would remove"
                f" {len(self.removed)} resources and leave {len(self.left)} in place; {len(self.kept)} the"
                " import found already there stay. Nothing was changed."
            )
        return (
            f"Undo of job {self.job_id} ({self.key}): {self.status}. Removed {len(self.removed)} resources,"
            f" left {len(self.left)} in place; {len(self.kept)} the import found already there stay."
        )

    def print(self) -> None:
        """Print the summary, what was (would be) removed, and what was (would be) left, with reasons."""
        console = out_console()
        console.print(self.summary())
        if self.removed:
            console.print("Would remove:" if self.dry_run else "Removed:")
            shown = self.removed if self.dry_run else self.removed[:REMOVED_SHOWN]
            for text in shown:
                console.print(f"  {text}")
            if len(shown) < len(self.removed):
                console.print(
                    f"  … and {len(self.removed) - len(shown)} more (every one is in the undo report)"
                )
        if self.left:
            title = "Would leave in place" if self.dry_run else "Left in place"
            table = Table(title=title)
            for column in ("locator", "thing", "resource", "reason"):
                table.add_column(column)
            for record in self.left:
                table.add_row(
                    *(str(record.get(name, "")) for name in ("locator", "thing_name", "resource", "reason"))
                )
            console.print(table)
        if self.report_key:
            console.print(f"Undo report: {self.report_key}")


def plan_undo(store: JobStore, job: Job, iot: Any, cert_arn: Callable[[str], str]) -> UndoView:
    """Run the undo as a dry run (reads only).

    Returns:
        What it would remove, leave and keep.

    Raises:
        CliError: The job's import is not over.

    """
    from layer_utils.circuit import CircuitRegistry  # noqa: PLC0415
    from undo_worker.undo import UndoRefusedError, undo_job  # noqa: PLC0415

    try:
        planned = undo_job(
            store,
            job.job_id,
            iot=iot,
            cert_arn=cert_arn,
            limiter=None,
            registry=CircuitRegistry(),
            dry_run=True,
        )
    except UndoRefusedError as error:
        raise CliError(str(error)) from None
    return UndoView(
        job.job_id, job.key, str(job.status), True, planned.removed, list(planned.left), list(planned.kept)
    )


def arn_maker(iot: Any, sts: Any) -> Callable[[str], str]:
    """Return the certificate ARN of a certificate id in the account and region of the clients."""
    from layer_utils.cert_utils import certificate_arn  # noqa: PLC0415

    identity = sts.get_caller_identity()
    account, partition = str(identity["Account"]), str(identity["Arn"]).split(":")[1]
    region = iot.meta.region_name
    return lambda certificate_id: certificate_arn(
        certificate_id, region=region, account=account, partition=partition
    )


def confirm(view: UndoView, *, interactive: bool, ask: Callable[[str], str]) -> None:
    """Ask the operator to confirm a real undo (y/N).

    Raises:
        CliError: No terminal to ask on, or the answer is not yes (nothing was changed).

    """
    if not interactive:
        raise CliError(
            f"Undo of job {view.job_id} needs confirmation and there is no terminal to ask on:"
            " pass --yes (see --dry-run for what it removes)."
        )
    answer = ask(
        f"Undo job {view.job_id} ({view.key}): remove {len(view.removed)} resources from AWS IoT,"
        f" leave {len(view.left)} in place? [y/N] "
    )
    if answer.strip().lower() not in {"y", "yes"}:
        raise CliError("Undo cancelled; nothing was changed.")


def _ask_on_stderr(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return sys.stdin.readline()


@dataclass(frozen=True)
class UndoOptions:
    """How ``thingpress undo`` runs: output, dry run, confirmation and how it follows the undo.

    Attributes:
        as_json: Print one JSON document.
        dry_run: Print the plan only.
        yes: Do not ask for confirmation.
        wait: Follow the undo until it ends.
        interactive: Whether a person can answer (None: stdin is a terminal).
        ask: Asks the question and returns the answer.
        clock: Seconds, for the wait's deadline.
        sleep: Waits between polls (the demo runs the local stack's functions meanwhile).
        max_seconds: How long to follow the undo.

    """

    as_json: bool = False
    dry_run: bool = False
    yes: bool = False
    wait: bool = True
    interactive: bool | None = None
    ask: Callable[[str], str] = _ask_on_stderr
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    max_seconds: float = WAIT_SECONDS


def undo_command(
    job_or_key: str,
    *,
    stack: str | None,
    bucket: str | None,
    table: str | None,
    region: str | None = None,
    profile: str | None = None,
    local: Path | None = None,
    **options: Any,
) -> int:
    """Run ``thingpress undo`` against the deployment the options name (see `run_undo`).

    Args:
        job_or_key: The job id or manifest key.
        stack: The CloudFormation stack (``--stack``).
        bucket: The intake bucket (``--bucket``, dry run only).
        table: The jobs table (``--table``, dry run only).
        region: The AWS region.
        profile: The AWS profile.
        local: The state folder of a ``local up`` stack (``--local``).
        **options: The fields of `UndoOptions`.

    Returns:
        0 UNDONE (or a dry run, or not waited for), 1 UNDO_PARTIAL.

    Raises:
        CliError: A real undo without a stack's UndoQueue or a local stack (and see `run_undo`).

    """
    from thingpress.remote_cli import _connect  # noqa: PLC0415

    chosen = UndoOptions(**options)
    if not chosen.dry_run and stack is None and local is None:
        raise CliError(
            "A real undo runs in the stack's UndoFunction: name the stack with --stack (or use --local);"
            " --bucket with --table allows --dry-run only."
        )
    session, deployment, store = _connect(stack, bucket, table, region=region, profile=profile, local=local)
    if not chosen.dry_run and deployment.undo_queue is None and local is None:
        raise CliError(f"Stack {stack} has no UndoQueue: deploy a Thingpress version with the undo path.")
    return run_undo(session, deployment, store, job_or_key, chosen)


def run_undo(
    session: Any, deployment: Deployment, store: JobStore, job_or_key: str, options: UndoOptions
) -> int:
    """Plan the undo of one job; then (no dry run) confirm, request it, follow it and print its report.

    See `carry_out_undo` for the arguments.

    Returns:
        0 UNDONE (or a dry run, or not waited for), 1 UNDO_PARTIAL.

    """
    view = carry_out_undo(session, deployment, store, job_or_key, options)
    if view is None:
        return 0
    _show(view, options.as_json)
    return 0 if view.dry_run or view.status == "UNDONE" else 1


def carry_out_undo(
    session: Any, deployment: Deployment, store: JobStore, job_or_key: str, options: UndoOptions
) -> UndoView | None:
    """Plan the undo of one job; then (no dry run) confirm, request it and follow it.

    The request goes to ``deployment.undo_queue``; without one (a local stack whose template has no
    UndoQueue) the undo runs in this process against the session's endpoint.

    Args:
        session: Makes the clients (a boto3 session or a running local stack).
        deployment: The deployment.
        store: Its job store.
        job_or_key: The job id or manifest key.
        options: How to run.

    Returns:
        The plan (a dry run) or what the undo did; None when it was requested and not waited for
        (the request is printed).

    Raises:
        CliError: No such job, its import not over, no confirmation, or the undo not ended in time.

    """
    from thingpress.remote import find_job  # noqa: PLC0415

    job = find_job(store, job_or_key, deployment.bucket)
    iot = session.client("iot")
    cert_arn = arn_maker(iot, session.client("sts"))
    view = plan_undo(store, job, iot, cert_arn)
    if options.dry_run:
        return view
    if not options.yes:
        interactive = sys.stdin.isatty() if options.interactive is None else options.interactive
        confirm(view, interactive=interactive, ask=options.ask)
    previous = dict(job.undo or {})
    entries = sum(1 for _ in store.ledger(job.job_id))
    if deployment.undo_queue is None:
        undo_here(store, job, iot, cert_arn, entries=entries, show=not options.as_json)
    else:
        session.client("sqs").send_message(
            QueueUrl=deployment.undo_queue, MessageBody=json.dumps({"job_id": job.job_id})
        )
        if not options.wait:
            if options.as_json:
                print_json(
                    {
                        "schema": SCHEMA,
                        "job_id": job.job_id,
                        "key": job.key,
                        "requested": True,
                        "status": str(job.status),
                    }
                )
            else:
                out_console().print(
                    f"Undo of job {job.job_id} ({job.key}) requested; follow it with `thingpress report`."
                )
            return None
        follow_undo(store, job, previous, entries=entries, show=not options.as_json, options=options)
    finished = store.get_job(job.job_id)
    if finished is None or not finished.undo_report_key:
        raise CliError(f"Job {job.job_id} has no undo report.")
    report = json.loads(
        session.client("s3").get_object(Bucket=finished.bucket, Key=finished.undo_report_key)["Body"].read()
    )
    return UndoView(
        finished.job_id,
        finished.key,
        str(report["status"]),
        False,
        list(report.get("removed", [])),
        list(report.get("left", [])),
        list(report.get("kept", [])),
        report_key=f"s3://{finished.bucket}/{finished.undo_report_key}",
    )


def _show(view: UndoView, as_json: bool) -> None:
    if as_json:
        print_json({"schema": SCHEMA, **view.to_json()})
    else:
        view.print()
