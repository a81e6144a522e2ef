"""Inspect and repair a deployed Thingpress stack: job status, reports, IoT read-back, DLQ redrive, sweep.

Everything takes boto3 clients, so it works against AWS, LocalStack or the embedded local stack
(set ``AWS_ENDPOINT_URL``). The report document is the same for a local run and a deployed stack:
the job report (``reports/<manifest key>.json`` once written, else the job item's counters and its
outcome items) plus ``things``, read back from the IoT registry.

Size: over 450 lines because each command of the deployed side has its own documented public function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from job_sweeper.sweeper import SweepConfig, SweepResult, sweep_jobs
from layer_utils.jobs import Job, JobStore
from layer_utils.messages import decode_message
from manifest_provider.intake import parse_intake_body
from thingpress.console import (
    CliError,
    failures_table,
    jobs_table,
    out_console,
    print_json,
    things_table,
)

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_iot import IoTClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

_OUTPUTS = {
    "ManifestBucketName": "bucket",
    "JobsTableName": "table",
    "IntakeQueueUrl": "intake_queue",
    "IntakeDLQUrl": "intake_dlq",
    "ImportQueueUrl": "import_queue",
    "ImportDLQUrl": "import_dlq",
}
_RESOURCES = {
    "ManifestBucket": "bucket",
    "JobsTable": "table",
    "IntakeQueue": "intake_queue",
    "IntakeDLQ": "intake_dlq",
    "ImportQueue": "import_queue",
    "ImportDLQ": "import_dlq",
}


@dataclass(frozen=True)
class Deployment:
    """The physical names of a Thingpress stack's bucket, jobs table and queues (URLs), and its parameters."""

    bucket: str
    table: str
    intake_queue: str | None = None
    intake_dlq: str | None = None
    import_queue: str | None = None
    import_dlq: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)


def resolve_stack(cloudformation: CloudFormationClient, stack: str) -> Deployment:
    """Return the deployment of CloudFormation stack ``stack``, from its outputs or else its resources.

    Returns:
        The deployment.

    Raises:
        CliError: The stack does not exist or lacks the bucket or the jobs table.

    """
    try:
        described = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        raise CliError(
            f"Stack {stack} not found: {error.response['Error'].get('Message', error)}."
        ) from error
    names: dict[str, str] = {}
    parameters = {
        str(parameter.get("ParameterKey")): str(parameter.get("ParameterValue", ""))
        for parameter in (described[0].get("Parameters", []) if described else [])
    }
    for output in described[0].get("Outputs", []) if described else []:
        field = _OUTPUTS.get(output.get("OutputKey", ""))
        if field and output.get("OutputValue"):
            names[field] = output["OutputValue"]
    if not {"bucket", "table"} <= names.keys():
        paginator = cloudformation.get_paginator("list_stack_resources")
        for page in paginator.paginate(StackName=stack):
            for resource in page["StackResourceSummaries"]:
                field = _RESOURCES.get(resource["LogicalResourceId"])
                if field and field not in names and resource.get("PhysicalResourceId"):
                    names[field] = resource["PhysicalResourceId"]
    if not {"bucket", "table"} <= names.keys():
        raise CliError(f"Stack {stack} has no ManifestBucket or JobsTable; is it a Thingpress stack?")
    return Deployment(**names, parameters=parameters)


def job_store(deployment: Deployment, *, dynamodb: DynamoDBClient, s3: S3Client) -> JobStore:
    """Return the ``layer_utils.jobs.JobStore`` of a deployment's jobs table (it emits no metrics)."""
    return JobStore(deployment.table, dynamodb=dynamodb, s3=s3, emit=lambda _name: None)


def sweep_config(deployment: Deployment) -> SweepConfig:
    """Return the sweep settings of a deployment, from its stack's parameters.

    They are ``StalledJobMinutes`` and ``MaxParseLeaseExpiries``; a parameter the stack does not
    have takes the JobSweeper's default. Raises ``ValueError`` for a value that is not a positive
    integer.
    """
    return SweepConfig.from_env(
        {
            "THINGPRESS_JOBS_TABLE": deployment.table,
            "THINGPRESS_STALLED_JOB_MINUTES": deployment.parameters.get("StalledJobMinutes", ""),
            "THINGPRESS_MAX_LEASE_EXPIRIES": deployment.parameters.get("MaxParseLeaseExpiries", ""),
        }
    )


def _no_metrics(_name: str, _value: float, _dimensions: Mapping[str, str] | None) -> None:
    """Drop a metric: the CLI publishes none (alarms watch the scheduled JobSweeper's ``JobsSwept``)."""


def run_sweep(store: JobStore, deployment: Deployment) -> SweepResult:
    """Run one sweep of a deployment's jobs now, as the scheduled JobSweeper does (no metric is emitted).

    An AWS failure raises ``AwsOperationError``.

    Returns:
        What was examined and finished.

    """
    return sweep_jobs(store, sweep_config(deployment), emit=_no_metrics)


def message_job_ids(body: str) -> list[str]:
    """Return the ids of the jobs a queue message concerns (none for a body that is no Thingpress message).

    An S3 event names one job per manifest version, a continuation or import message its ``job_id``.
    """
    try:
        batch = parse_intake_body(body)
    except ValueError:
        try:
            return [decode_message(body).job_id]
        except ValueError:
            return []
    ids = [ref.job_id for ref in batch.manifests]
    if batch.continuation is not None:
        ids.append(batch.continuation.job_id)
    return ids


def find_job(store: JobStore, job_or_key: str) -> Job:
    """Return the job whose id or manifest key is ``job_or_key`` (the newest when a key repeats).

    Returns:
        The job.

    Raises:
        CliError: No job matches.

    """
    job = store.get_job(job_or_key)
    if job is not None:
        return job
    for candidate in store.list_jobs():  # newest first
        if candidate.key == job_or_key:
            return candidate
    raise CliError(f"No job with id or manifest key {job_or_key!r} in table {store.table_name}.")


def job_summary(job: Job) -> dict[str, Any]:
    """Return the counters of a job as a report-shaped dict (no entry lists) plus ``key`` for display."""
    return {**job.summary(), "key": job.key}


def job_report(store: JobStore, job: Job) -> dict[str, Any]:
    """Return the full report of ``job`` (``JobStore.build_report``: counters, imported, failures).

    Adds ``key`` (the manifest key) for display.
    """
    report = store.build_report(job)
    report["key"] = job.key
    return report


def _paginate(iot: IoTClient, operation: str, result_key: str, **kwargs: Any) -> Iterator[Any]:
    paginator = iot.get_paginator(operation)  # type: ignore[call-overload]
    for page in paginator.paginate(**kwargs):
        yield from page.get(result_key, [])


def read_thing(iot: IoTClient, thing_name: str) -> dict[str, Any]:
    """Read one thing back from the IoT registry; a missing thing raises botocore's ``ClientError``.

    Returns:
        ``thing_name``, ``certificate_id`` (None without a principal; the first when several),
        ``certificates`` (all), ``policies`` (attached to the certificate), ``thing_groups``,
        ``thing_type`` and ``attributes``.

    """
    described = iot.describe_thing(thingName=thing_name)
    principals = list(_paginate(iot, "list_thing_principals", "principals", thingName=thing_name))
    certificates = [principal.rsplit("/", 1)[-1] for principal in principals if ":cert/" in principal]
    policies: list[str] = []
    for principal in principals:
        for policy in _paginate(iot, "list_attached_policies", "policies", target=principal):
            if policy["policyName"] not in policies:
                policies.append(policy["policyName"])
    groups = [
        group["groupName"]
        for group in _paginate(iot, "list_thing_groups_for_thing", "thingGroups", thingName=thing_name)
    ]
    return {
        "thing_name": thing_name,
        "certificate_id": certificates[0] if certificates else None,
        "certificates": certificates,
        "policies": sorted(policies),
        "thing_groups": sorted(groups),
        "thing_type": described.get("thingTypeName"),
        "attributes": described.get("attributes", {}),
    }


def read_things(iot: IoTClient, thing_names: Iterable[str]) -> list[dict[str, Any]]:
    """Read each named thing back from IoT (see ``read_thing``), sorted by name; skip missing things."""
    things: list[dict[str, Any]] = []
    for name in sorted(set(thing_names)):
        try:
            things.append(read_thing(iot, name))
        except ClientError as error:
            if error.response["Error"].get("Code") != "ResourceNotFoundException":
                raise
    return things


def inventory(iot: IoTClient) -> list[dict[str, Any]]:
    """Read every thing of the registry back from IoT (see ``read_thing``), sorted by name."""
    return read_things(iot, (thing["thingName"] for thing in _paginate(iot, "list_things", "things")))


def with_things(iot: IoTClient, report: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``report`` plus ``things``: the job's imported things as the IoT registry holds them."""
    names = [entry["thing_name"] for entry in report.get("imported") or [] if entry.get("thing_name")]
    return {**report, "things": read_things(iot, names)}


@dataclass(frozen=True)
class RedriveResult:
    """How many messages moved from ``source`` (a DLQ) to ``destination``, and how many could not."""

    source: str
    destination: str
    moved: int
    failed: int


def redrive(
    sqs: SQSClient,
    dlq_url: str,
    source_url: str,
    *,
    before_send: Callable[[Sequence[str]], None] | None = None,
) -> RedriveResult:
    """Move every message of ``dlq_url`` back to ``source_url``: receive, send, then delete, 10 at a time.

    Bodies and message attributes are kept. A message whose send fails stays in the DLQ (it becomes
    visible again after its visibility timeout) and is counted in ``failed``.

    Args:
        sqs: The SQS client.
        dlq_url: The dead-letter queue.
        source_url: The queue the messages go back to.
        before_send: Optional; sees the bodies of each batch before it is sent.

    Returns:
        The counts.

    """
    # SQS StartMessageMoveTask would do this server-side, but moto does not implement it.
    moved = failed = 0
    while True:
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return RedriveResult(dlq_url, source_url, moved, failed)
        if before_send is not None:
            before_send([message["Body"] for message in messages])
        entries: list[Any] = []
        for index, message in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(index), "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                entry["MessageAttributes"] = message["MessageAttributes"]
            entries.append(entry)
        sent = sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
        done = [messages[int(result["Id"])] for result in sent.get("Successful", [])]
        failed += len(sent.get("Failed", []))
        if done:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]}
                    for i, message in enumerate(done)
                ],
            )
        moved += len(done)


# --- commands ----------------------------------------------------------------------------------------


def _deployment(stack: str | None, bucket: str | None, table: str | None) -> Deployment:
    if stack:
        return resolve_stack(boto3.client("cloudformation"), stack)
    if bucket is None or table is None:
        raise CliError("Name the deployment with --stack, or with both --bucket and --table.")
    return Deployment(bucket=bucket, table=table)


def print_report(report: Mapping[str, Any], *, title: str | None = None) -> None:
    """Print one job report for people: counts, failures with locators, things read back from IoT."""
    console = out_console()
    console.print(jobs_table([report], title=title or f"Job {report.get('job_id')}"))
    if report.get("reason"):
        console.print(f"Reason: {report['reason']}")
    if report.get("failures"):
        console.print(failures_table(report["failures"]))
    if report.get("things"):
        console.print(things_table(report["things"]))


def report_exit_code(reports: Sequence[Mapping[str, Any]]) -> int:
    """Return 0 when every report is COMPLETED without failures, else 1."""
    good = all(report.get("status") == "COMPLETED" and not report.get("failed") for report in reports)
    return 0 if good else 1


def status_command(*, stack: str | None, bucket: str | None, table: str | None, as_json: bool) -> int:
    """Run ``thingpress status``: list every job (newest first) with its status and counts.

    An unknown stack raises ``CliError``.

    Returns:
        0 when every job completed without failures, 1 otherwise.

    """
    deployment = _deployment(stack, bucket, table)
    store = job_store(deployment, dynamodb=boto3.client("dynamodb"), s3=boto3.client("s3"))
    summaries = [job_summary(job) for job in store.list_jobs()]
    if as_json:
        print_json({"bucket": deployment.bucket, "table": deployment.table, "jobs": summaries})
    else:
        out_console().print(jobs_table(summaries, title=f"Jobs in {deployment.table}"))
    return report_exit_code(summaries)


def report_command(
    job_or_key: str, *, stack: str | None, bucket: str | None, table: str | None, as_json: bool
) -> int:
    """Run ``thingpress report``: one job's report with the things read back from IoT.

    No matching job raises ``CliError``.

    Returns:
        0 when the job completed without failures, 1 otherwise.

    """
    deployment = _deployment(stack, bucket, table)
    store = job_store(deployment, dynamodb=boto3.client("dynamodb"), s3=boto3.client("s3"))
    report = with_things(boto3.client("iot"), job_report(store, find_job(store, job_or_key)))
    if as_json:
        print_json(report)
    else:
        print_report(report)
    return report_exit_code([report])


def redrive_command(*, stack: str | None, queue: str | None, to: str | None, as_json: bool) -> int:
    """Run ``thingpress redrive``: move DLQ messages back to their source queues and report the counts.

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
    sqs = boto3.client("sqs")
    pairs: list[tuple[str, str]] = []
    deployment: Deployment | None = None
    if stack:
        deployment = resolve_stack(boto3.client("cloudformation"), stack)
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
        job_store(deployment, dynamodb=boto3.client("dynamodb"), s3=boto3.client("s3"))
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

    results = [redrive(sqs, dlq, source, before_send=restart_jobs) for dlq, source in pairs]
    swept = run_sweep(store, deployment) if store is not None and deployment is not None else SweepResult()
    if as_json:
        print_json(
            {
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


def print_swept(result: SweepResult) -> None:
    """Print, for people, the jobs a sweep finished with their new status and reason."""
    console = out_console()
    console.print(f"Jobs finished by the sweep: {len(result.swept)} of {result.examined} unfinished")
    for job in result.swept:
        console.print(f"  {job.key} ({job.job_id}): {job.was} -> {job.status}. {job.reason or ''}".rstrip())


def sweep_command(*, stack: str | None, bucket: str | None, table: str | None, as_json: bool) -> int:
    """Run ``thingpress sweep``: finish the jobs that stopped making progress now, as the JobSweeper does.

    The limits are the stack's ``StalledJobMinutes`` and ``MaxParseLeaseExpiries`` (the defaults with
    ``--bucket`` and ``--table``). An unknown stack raises ``CliError``.

    Returns:
        0 when no job was stuck, 1 when the sweep finished some.

    """
    deployment = _deployment(stack, bucket, table)
    store = job_store(deployment, dynamodb=boto3.client("dynamodb"), s3=boto3.client("s3"))
    result = run_sweep(store, deployment)
    if as_json:
        print_json(result.to_dict())
    else:
        print_swept(result)
    return 1 if result.swept else 0
