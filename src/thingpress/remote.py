"""Inspect and repair a deployed Thingpress stack: job status, reports, IoT read-back, DLQ redrive, sweep.

Everything takes boto3 clients, so it works against AWS, LocalStack or the embedded local stack
(set ``AWS_ENDPOINT_URL``). The report document is the same for a local run and a deployed stack:
the job's report (built from the job item and its outcome items, as written to
``reports/jobs/<job id>.json``) plus ``things``, read back from the IoT registry. The CLI commands over these
functions are in `thingpress.remote_cli`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from job_sweeper.sweeper import SweepConfig, SweepResult, sweep_jobs
from layer_utils.jobs import Job, JobStore
from layer_utils.messages import decode_message
from manifest_provider.intake import parse_intake_body
from thingpress.console import CliError
from thingpress.progress import Tick

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
    "UndoQueueUrl": "undo_queue",
}
_RESOURCES = {
    "ManifestBucket": "bucket",
    "JobsTable": "table",
    "IntakeQueue": "intake_queue",
    "IntakeDLQ": "intake_dlq",
    "ImportQueue": "import_queue",
    "ImportDLQ": "import_dlq",
    "UndoQueue": "undo_queue",
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
    undo_queue: str | None = None
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


def find_job(store: JobStore, job_or_key: str, bucket: str | None = None) -> Job:
    """Return the job whose id or manifest key is ``job_or_key``.

    For a key that repeats: the job whose report the key's pointer in ``bucket`` holds (the newest
    version's), else (no pointer yet, or no bucket) the newest job.

    Returns:
        The job.

    Raises:
        CliError: No job matches.

    """
    job = store.get_job(job_or_key)
    if job is not None:
        return job
    latest = store.latest_job_id(bucket, job_or_key) if bucket else None
    job = store.get_job(latest) if latest else None
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
    names = [entry["thing_name"] for entry in report.get("imported_entries") or [] if entry.get("thing_name")]
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
    progress: Tick | None = None,
) -> RedriveResult:
    """Move every message of ``dlq_url`` back to ``source_url``: receive, send, then delete, 10 at a time.

    Bodies and message attributes are kept. A message whose send fails stays in the DLQ (it becomes
    visible again after its visibility timeout) and is counted in ``failed``.

    Args:
        sqs: The SQS client.
        dlq_url: The dead-letter queue.
        source_url: The queue the messages go back to.
        before_send: Optional; sees the bodies of each batch before it is sent.
        progress: Optional; told the messages handled (moved or failed) of the DLQ's approximate
            depth at the start.

    Returns:
        The counts.

    """
    # SQS StartMessageMoveTask would do this server-side, but moto does not implement it.
    moved = failed = 0
    depth: int | None = None
    if progress is not None:
        attributes = sqs.get_queue_attributes(
            QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        depth = int(attributes.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))
        progress(0, depth)
    while True:
        if progress is not None:
            progress(moved + failed, max(depth or 0, moved + failed))
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            if progress is not None:
                progress(moved + failed, moved + failed)
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
