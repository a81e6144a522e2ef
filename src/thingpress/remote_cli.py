"""The ``status``, ``report``, ``redrive`` and ``sweep`` commands over `thingpress.remote`, with printing.

Clients come from one boto3 session per command (`aws_session`), made with ``--profile`` and the
region from ``--region``, ``AWS_REGION``, ``AWS_DEFAULT_REGION`` or the profile's configuration, as
the AWS CLI resolves them. ``AWS_ENDPOINT_URL`` points them at LocalStack or the embedded local stack.
With ``--local`` (``local``), the clients and names are those of the stack ``thingpress local up``
serves (`thingpress.localstate`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ProfileNotFound

from job_sweeper.sweeper import SweepResult
from layer_utils.jobs import JobStore
from layer_utils.schema import DUPLICATE_ENTRIES, FAILURES, SCHEMA, sum_counts
from thingpress.console import (
    ROW_LIMIT,
    CliError,
    counts_text,
    failures_table,
    jobs_table,
    lit,
    out_console,
    print_failure_groups,
    print_json,
    things_table,
)
from thingpress.localstate import RunningStack, require_running
from thingpress.progress import JobProgress
from thingpress.remote import (
    Deployment,
    find_job,
    job_report,
    job_store,
    job_summary,
    message_job_ids,
    redrive,
    resolve_stack,
    run_sweep,
    with_things,
)

NO_REGION = "No AWS region: pass --region or set AWS_REGION."
NO_CREDENTIALS = "No AWS credentials found: configure a profile (aws configure) or pass --profile."


def aws_session(*, region: str | None = None, profile: str | None = None) -> boto3.Session:
    """Return the boto3 session a command talks to a deployed stack with.

    The region is ``region`` (``--region``), else ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` or the
    profile's configured region (botocore's own lookup). The credentials are the profile's
    (``profile``, else ``AWS_PROFILE`` or the default chain).

    Returns:
        A session with a region and credentials.

    Raises:
        CliError: The profile does not exist, or there is no region or no credentials (exit code 2).

    """
    try:
        session = boto3.Session(profile_name=profile or None)
        resolved = region or os.environ.get("AWS_REGION", "").strip() or session.region_name
        if not resolved:
            raise CliError(NO_REGION)
        credentials = session.get_credentials()
    except ProfileNotFound as error:
        name = error.kwargs.get("profile")
        raise CliError(f"No AWS profile named {name!r}: check --profile or AWS_PROFILE.") from None
    except BotoCoreError as error:
        raise CliError(f"AWS configuration error: {error}.") from None
    if credentials is None:
        raise CliError(NO_CREDENTIALS)
    return boto3.Session(profile_name=profile or None, region_name=resolved)


def _deployment(
    session: boto3.Session, stack: str | None, bucket: str | None, table: str | None
) -> Deployment:
    if stack:
        return resolve_stack(session.client("cloudformation"), stack)
    if bucket is None or table is None:
        raise CliError("Name the deployment with --stack, or with both --bucket and --table.")
    return Deployment(bucket=bucket, table=table)


def _connect(
    stack: str | None,
    bucket: str | None,
    table: str | None,
    *,
    region: str | None,
    profile: str | None,
    local: Path | None = None,
) -> tuple[boto3.Session | RunningStack, Deployment, JobStore]:
    """Open the session, find the deployment and build its job store (one place for every command).

    With ``local`` (a state folder) the session and deployment are those of the stack ``thingpress
    local up`` runs from it (`thingpress.localstate.require_running`).

    Returns:
        The session (or running local stack) that makes clients, the deployment and its job store.

    """
    session: boto3.Session | RunningStack
    if local is not None:
        session = require_running(local)
        deployment = session.deployment
    else:
        session = aws_session(region=region, profile=profile)
        deployment = _deployment(session, stack, bucket, table)
    return (
        session,
        deployment,
        job_store(deployment, dynamodb=session.client("dynamodb"), s3=session.client("s3")),
    )


def print_report(report: Mapping[str, Any], *, title: str | None = None, show_all: bool = False) -> None:
    """Print one job report for people: the summary, then what was not imported, then the things.

    The entries not imported (failures and duplicates) are grouped by reason with hints; with
    ``show_all`` every one is listed too, and every thing read back from IoT (else the first
    ``ROW_LIMIT``).
    """
    console = out_console()
    heading = title or f"Job {report.get('job_id')}"
    vendor = report.get("vendor") or "vendor not known"
    console.print(lit(f"{heading}: {report.get('key', '')} ({vendor}) {report.get('status', '')}"))
    console.print(lit(f"  {counts_text(report)}."))
    if report.get("reason"):
        console.print(lit(f"Reason: {report['reason']}"))
    for warning in report.get("warnings") or []:
        console.print(lit(f"Warning: {warning}"))
    rejected = [*(report.get(FAILURES) or []), *(report.get(DUPLICATE_ENTRIES) or [])]
    print_failure_groups(console, rejected, title="Entries not imported, by reason")
    if show_all and rejected:
        console.print(failures_table(rejected, title="Entries not imported"))
    things = report.get("things") or []
    if things:
        console.print(
            things_table(
                things,
                title=(
                    f"Things in AWS IoT ({len(things)}, as the job recorded them; --verify reads them back)"
                    if report.get("things_from") == "job"
                    else f"Things in AWS IoT ({len(things)}, read back)"
                ),
                limit=None if show_all else ROW_LIMIT,
            )
        )


def report_exit_code(reports: Sequence[Mapping[str, Any]]) -> int:
    """Return 0 when every report is COMPLETED without failures, else 1."""
    good = all(report.get("status") == "COMPLETED" and not report.get("failed") for report in reports)
    return 0 if good else 1


def status_command(
    *,
    stack: str | None,
    bucket: str | None,
    table: str | None,
    as_json: bool,
    region: str | None = None,
    profile: str | None = None,
    local: Path | None = None,
) -> int:
    """Run ``thingpress status``: list every job (newest first) with its status and counts.

    An unknown stack raises ``CliError``.

    Returns:
        0 when every job completed without failures, 1 otherwise.

    """
    _session, deployment, store = _connect(stack, bucket, table, region=region, profile=profile, local=local)
    summaries = [job_summary(job) for job in store.list_jobs()]
    if as_json:
        print_json(
            {
                "schema": SCHEMA,
                "bucket": deployment.bucket,
                "table": deployment.table,
                **sum_counts(summaries),
                "jobs": summaries,
            }
        )
    else:
        console = out_console()
        console.print(
            lit(f"{len(summaries)} jobs in {deployment.table}: {counts_text(sum_counts(summaries))}.")
        )
        if summaries:
            console.print(jobs_table(summaries, title=f"Jobs in {deployment.table}"))
    return report_exit_code(summaries)


def report_command(
    job_or_key: str,
    *,
    stack: str | None,
    bucket: str | None,
    table: str | None,
    as_json: bool,
    region: str | None = None,
    profile: str | None = None,
    local: Path | None = None,
    show_all: bool = False,
) -> int:
    """Run ``thingpress report``: one job's report with the things read back from IoT.

    No matching job raises ``CliError``.

    Returns:
        0 when the job completed without failures, 1 otherwise.

    """
    session, deployment, store = _connect(stack, bucket, table, region=region, profile=profile, local=local)
    job = find_job(store, job_or_key, deployment.bucket)
    report = with_things(session.client("iot"), job_report(store, job))
    if as_json:
        print_json(report)
    else:
        print_report(report, show_all=show_all)
    return report_exit_code([report])


def redrive_command(
    *,
    stack: str | None,
    queue: str | None,
    to: str | None,
    as_json: bool,
    region: str | None = None,
    profile: str | None = None,
) -> int:
    """Run ``thingpress redrive``: move DLQ messages back to their source queues and report the counts.

    Progress (messages moved, rate, time left) goes to stderr, one task per dead-letter queue.

    With ``stack`` both DLQs are redriven; before a message is sent back, the unfinished jobs it
    concerns get a fresh progress clock (``JobStore.restart_progress_clock``), so the sweep waits a
    full ``StalledJobMinutes`` for it; then one sweep runs (`run_sweep`), so every job that cannot
    finish is final.

    Returns:
        0 when every message moved, 1 when some could not be sent.

    Raises:
        CliError: The stack has no dead-letter queues, or the queues are not named (an unknown stack
            too).

    """
    session = aws_session(region=region, profile=profile)
    sqs = session.client("sqs")
    pairs: list[tuple[str, str]] = []
    deployment: Deployment | None = None
    if stack:
        deployment = resolve_stack(session.client("cloudformation"), stack)
        for dlq, source in (
            (deployment.intake_dlq, deployment.intake_queue),
            (deployment.import_dlq, deployment.import_queue),
        ):
            if dlq and source:
                pairs.append((dlq, source))
        if not pairs:
            raise CliError(f"Stack {stack} has no dead-letter queues to redrive.")
    else:
        if queue is None or to is None:
            raise CliError("Name the queues with --stack, or with both --queue and --to.")
        pairs.append((queue, to))
    store = (
        job_store(deployment, dynamodb=session.client("dynamodb"), s3=session.client("s3"))
        if deployment is not None
        else None
    )
    seen: set[str] = set()
    restarted: list[str] = []

    def restart_jobs(bodies: Sequence[str]) -> None:
        if store is None:
            return
        for body in bodies:
            for job_id in message_job_ids(body):
                if job_id not in seen:
                    seen.add(job_id)
                    if store.restart_progress_clock(job_id) is not None:
                        restarted.append(job_id)

    with JobProgress(unit="messages") as progress:
        results = [
            redrive(
                sqs,
                dlq,
                source,
                before_send=restart_jobs,
                progress=progress.tick(f"redrive {_queue_name(dlq)}"),
            )
            for dlq, source in pairs
        ]
    swept = run_sweep(store, deployment) if store is not None and deployment is not None else SweepResult()
    if as_json:
        print_json(
            {
                "schema": SCHEMA,
                "moved": sum(result.moved for result in results),
                "failed": sum(result.failed for result in results),
                "queues": [result.__dict__ for result in results],
                "restarted": sorted(restarted),
                "swept": swept.to_dict()["swept"],
            }
        )
    else:
        console = out_console()
        for result in results:
            console.print(
                f"{result.source} -> {result.destination}: moved {result.moved}, failed {result.failed}"
            )
        if store is not None:
            console.print(f"Unfinished jobs given a fresh start: {len(restarted)}")
            print_swept(swept)
    return 1 if any(result.failed for result in results) else 0


def _queue_name(url: str) -> str:
    """Return the name of a queue from its URL (its last path segment)."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def print_swept(result: SweepResult) -> None:
    """Print, for people, the jobs a sweep finished with their new status and reason."""
    console = out_console()
    console.print(f"Jobs finished by the sweep: {len(result.swept)} of {result.examined} unfinished")
    for job in result.swept:
        console.print(f"  {job.key} ({job.job_id}): {job.was} -> {job.status}. {job.reason or ''}".rstrip())


def sweep_command(
    *,
    stack: str | None,
    bucket: str | None,
    table: str | None,
    as_json: bool,
    region: str | None = None,
    profile: str | None = None,
    local: Path | None = None,
) -> int:
    """Run ``thingpress sweep``: finish the jobs that stopped making progress now, as the JobSweeper does.

    The limits are the stack's ``StalledJobMinutes`` and ``MaxParseLeaseExpiries`` (the defaults with
    ``--bucket`` and ``--table``). An unknown stack raises ``CliError``.

    Returns:
        0 when no job was stuck, 1 when the sweep finished some.

    """
    _session, deployment, store = _connect(stack, bucket, table, region=region, profile=profile, local=local)
    result = run_sweep(store, deployment)
    if as_json:
        print_json({"schema": SCHEMA, **result.to_dict()})
    else:
        print_swept(result)
    return 1 if result.swept else 0
