"""Every sample event in events/ runs through `thingpress invoke` against the local stack.

The success samples run as `thingpress invoke` runs them (`invoke_sample`): it uploads the manifest
an S3 event names from events/ (and events/verifiers/), and gives unsigned sample import messages a
job and its signature; each test then follows the job to its end state, things in IoT included.
Other tests map a sample onto the local stack by hand (their own manifest, or a job they create).
The handlers run in a subprocess from the `sam build` output when there is one, else from the source.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from layer_utils.jobs import JobStatus, JobStore, job_id_for
from thingpress import invoke
from thingpress.generate import Summary, generate, make_microchip_signer
from thingpress.localrun import local_stack

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS = REPO_ROOT / "events"
TEMPLATE = REPO_ROOT / "template.yaml"
BUILD_DIR = REPO_ROOT / ".aws-sam" / "build"
THINGPRESS = REPO_ROOT / ".venv" / "bin" / "thingpress"
PROVIDER = "ManifestProviderFunction"
IMPORTER = "BulkImporterFunction"
SWEEPER = "JobSweeperFunction"
NO_FAILURES: dict[str, Any] = {"batchItemFailures": []}

SUCCESS_SAMPLES = {
    "provider-s3-espressif.json": PROVIDER,
    "provider-s3-infineon.json": PROVIDER,
    "provider-s3-microchip.json": PROVIDER,
    "provider-s3-generated.json": PROVIDER,
    "provider-s3-incoming.json": PROVIDER,
    "provider-s3-test-event.json": PROVIDER,
    "importer-batch.json": IMPORTER,
    "sweeper-schedule.json": SWEEPER,
}
FAILURE_SAMPLES = {
    "provider-continuation-failure.json": PROVIDER,
    "importer-batch-failure.json": IMPORTER,
}
COVERED = set(SUCCESS_SAMPLES) | set(FAILURE_SAMPLES)
MANIFESTS = {
    # the manifest each provider success sample names, in events/, with its vendor and entry count
    "provider-s3-espressif.json": ("manifest-espressif.csv", "espressif", 2),
    "provider-s3-infineon.json": ("manifest-infineon.7z", "infineon", 3),
    "provider-s3-microchip.json": ("ECC608-TMNGTLSS-B.json", "microchip", 3),
    "provider-s3-generated.json": ("certificates_test.txt", "generated", 3),
    "provider-s3-incoming.json": ("batch 2025-01 devices.csv", "espressif", 3),
}


def load_event(name: str) -> dict[str, Any]:
    event = json.loads((EVENTS / name).read_text())
    assert isinstance(event, dict)
    return event


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    with local_stack(TEMPLATE, quiet=True) as running:
        yield running


@pytest.fixture
def store(stack: Any) -> JobStore:
    return JobStore(stack.physical_id("JobsTable"), dynamodb=stack.client("dynamodb"), s3=stack.client("s3"))


def drain(stack: Any, queue: str) -> list[dict[str, Any]]:
    """Receive and delete every visible message of a queue; return their bodies.

    (moto allows one PurgeQueue a minute per queue.)
    """
    sqs = stack.client("sqs")
    url = stack.physical_id(queue)
    bodies: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


@pytest.fixture(autouse=True)
def _empty_queues(stack: Any) -> Iterator[None]:
    yield
    for queue in ("IntakeQueue", "ImportQueue", "IntakeDLQ", "ImportDLQ"):
        drain(stack, queue)


def run(stack: Any, function: str, event: dict[str, Any]) -> invoke.Invocation:
    return invoke.invoke(function, event, template=TEMPLATE, build_dir=BUILD_DIR, stack=stack)


def drain_import_queue(stack: Any) -> list[dict[str, Any]]:
    """Receive and delete every import message; return their entries in chunk order."""
    bodies = sorted(drain(stack, "ImportQueue"), key=lambda body: body["chunk"])
    return [entry for body in bodies for entry in body["entries"]]


def upload_for_event(stack: Any, event: dict[str, Any], body: bytes) -> tuple[str, str]:
    """Upload ``body`` at the key the S3 notification names; point the event at that object version."""
    notification = json.loads(event["Records"][0]["body"])
    s3_object = notification["Records"][0]["s3"]["object"]
    key = urllib.parse.unquote_plus(s3_object["key"])
    put = stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body)
    s3_object.update(versionId=put["VersionId"], eTag=put["ETag"].strip('"'), size=len(body))
    event["Records"][0]["body"] = json.dumps(notification)
    return key, put["VersionId"]


def test_every_event_file_is_covered() -> None:
    manifests = {manifest for manifest, _, _ in MANIFESTS.values()}
    assert {path.name for path in EVENTS.iterdir() if path.is_file()} == COVERED | manifests
    assert [path.name for path in (EVENTS / "verifiers").iterdir()] == ["events-signer.crt"]
    assert all(name.endswith("-failure.json") for name in FAILURE_SAMPLES)
    assert not any("failure" in name for name in SUCCESS_SAMPLES)


# --- what `thingpress invoke` prepares and how it judges the outcome ------------------------------------


def invoke_sample(
    stack: Any, function: str, name: str, upload: Path | None = None, sources: tuple[Path, ...] = (EVENTS,)
) -> invoke.Invocation:
    """Run a sample as `thingpress invoke` does: manifests from events/ or ``upload``, verifiers too."""
    return invoke.invoke(
        function,
        load_event(name),
        template=TEMPLATE,
        build_dir=BUILD_DIR,
        stack=stack,
        sources=sources,
        upload=upload,
        verifiers=EVENTS / "verifiers" if sources else None,
    )


def import_queued(stack: Any) -> invoke.Invocation:
    """Run the BulkImporter on every message of the ImportQueue, as one SQS batch (then delete them)."""
    sqs = stack.client("sqs")
    url = stack.physical_id("ImportQueue")
    records: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            records.append(
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{url.rsplit('/', 1)[-1]}",
                    "awsRegion": "us-east-1",
                }
            )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert records, "the provider queued no import message"
    return run(stack, IMPORTER, {"Records": records})


def assert_things_in_iot(stack: Any, imported: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """Each imported entry is a thing in IoT with exactly its certificate, policies and groups."""
    iot = stack.client("iot")
    for entry in imported:
        principals = iot.list_thing_principals(thingName=entry["thing_name"])["principals"]
        assert [principal.rsplit("/", 1)[-1] for principal in principals] == [entry["certificate_id"]]
        policies = iot.list_attached_policies(target=principals[0])["policies"]
        assert [policy["policyName"] for policy in policies] == list(settings.get("policies") or [])
        groups = iot.list_thing_groups_for_thing(thingName=entry["thing_name"])["thingGroups"]
        assert [group["groupName"] for group in groups] == list(settings.get("thing_groups") or [])


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_provider_success_sample_imports_its_manifest(stack: Any, store: JobStore, name: str) -> None:
    manifest, vendor, count = MANIFESTS[name]
    outcome = invoke_sample(stack, PROVIDER, name)

    assert outcome.response == NO_FAILURES
    assert outcome.problem is None
    (job,) = outcome.jobs
    assert (job.vendor, job.status, job.total, job.failed) == (vendor, JobStatus.IMPORTING, count, 0)
    stored = stack.client("s3").get_object(Bucket=stack.bucket, Key=job.key, VersionId=job.version)
    assert stored["Body"].read() == (EVENTS / manifest).read_bytes()

    # The messages it queued, run through the importer: the job completes and IoT holds its things.
    imported = import_queued(stack)
    assert imported.response == NO_FAILURES
    assert imported.problem is None
    done = store.get_job(job.job_id)
    assert done is not None
    assert (done.status, done.succeeded, done.failed) == (JobStatus.COMPLETED, count, 0)
    report = store.build_report(done)
    assert len(report["imported_entries"]) == count
    assert_things_in_iot(stack, report["imported_entries"], {})


def test_importer_success_sample_gets_a_signed_job(stack: Any, store: JobStore) -> None:
    event = load_event("importer-batch.json")
    messages = [json.loads(record["body"]) for record in event["Records"]]
    assert all("mac" not in message for message in messages)  # a sample cannot know a job's secret
    entries = [entry for message in messages for entry in message["entries"]]

    outcome = invoke_sample(stack, IMPORTER, "importer-batch.json")

    assert outcome.error is None, outcome.error
    assert outcome.response == NO_FAILURES
    assert outcome.problem is None
    (job,) = outcome.jobs
    assert job.job_id != messages[0]["job_id"]  # a new job, made for this run
    assert (job.key, job.status, job.total, job.succeeded, job.failed) == (
        f"invoke/{messages[0]['job_id']}",
        JobStatus.COMPLETED,
        len(entries),
        len(entries),
        0,
    )
    assert job.report_key == f"reports/jobs/{job.job_id}.json"
    assert_things_in_iot(stack, entries, messages[0]["settings"])


def test_espressif_sample_succeeds_with_its_manifest(stack: Any, store: JobStore) -> None:
    outcome = invoke_sample(stack, PROVIDER, "provider-s3-espressif.json")

    assert outcome.response == NO_FAILURES
    assert outcome.problem is None
    (job,) = outcome.jobs
    assert (job.key, job.vendor, job.status, job.total, job.failed) == (
        "espressif/manifest-espressif.csv",
        "espressif",
        JobStatus.IMPORTING,
        2,
        0,
    )
    stored = stack.client("s3").get_object(Bucket=stack.bucket, Key=job.key, VersionId=job.version)
    assert stored["Body"].read() == (EVENTS / "manifest-espressif.csv").read_bytes()
    assert len(drain_import_queue(stack)) == 2


def test_upload_option_replaces_the_manifest(stack: Any, tmp_path: Path) -> None:
    manifest = tmp_path / "mine.txt"
    generate("generated", 3, manifest, bad_fraction=0.34, seed=23)
    outcome = invoke_sample(stack, PROVIDER, "provider-s3-generated.json", upload=manifest)

    (job,) = outcome.jobs
    assert (job.key, job.total, job.failed) == ("generated/certificates_test.txt", 3, 1)
    assert outcome.problem == (
        f"Job {job.job_id} for generated/certificates_test.txt has 1 failed entries (status IMPORTING)."
    )


def test_missing_manifest_is_a_failed_job(stack: Any) -> None:
    outcome = invoke_sample(stack, PROVIDER, "provider-s3-infineon.json", sources=())  # nothing uploaded

    assert outcome.response == NO_FAILURES
    (job,) = outcome.jobs
    assert job.status == JobStatus.FAILED
    assert outcome.problem is not None
    assert outcome.problem.startswith(f"Job {job.job_id} for infineon/manifest-infineon.7z ended FAILED: ")
    assert "no longer exists" in outcome.problem


def test_failure_samples_are_judged_failures(stack: Any) -> None:
    for function, name in (
        (IMPORTER, "importer-batch-failure.json"),
        (PROVIDER, "provider-continuation-failure.json"),
    ):
        outcome = invoke_sample(stack, function, name)
        job_id = json.loads(load_event(name)["Records"][0]["body"])["job_id"]
        assert outcome.unknown_jobs == (job_id,), name
        assert outcome.problem is not None
        assert outcome.problem.startswith(f"The event names job {job_id}, which is not in"), name


def test_batch_item_failures_are_a_problem() -> None:
    spec = invoke.FunctionSpec("F", "m.f", Path(), (), from_build=False)
    failed = invoke.Invocation(
        {"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]}, None, None, spec
    )
    assert failed.problem == "2 record(s) of the event failed (batchItemFailures: a, b)."
    raised = invoke.Invocation(None, {"errorType": "KeyError"}, None, spec)
    assert raised.problem == "The F handler raised KeyError."
    assert invoke.Invocation(NO_FAILURES, None, None, spec).problem is None


def test_events_use_the_bucket_placeholder() -> None:
    for name in COVERED - {"importer-batch.json", "importer-batch-failure.json", "sweeper-schedule.json"}:
        assert invoke.EXAMPLE_BUCKET in (EVENTS / name).read_text(), name


# --- ManifestProvider: S3 notifications ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_name", "vendor", "filename"),
    [
        ("provider-s3-espressif.json", "espressif", "m.csv"),
        ("provider-s3-infineon.json", "infineon", "m.7z"),
        ("provider-s3-microchip.json", "microchip", "m.json"),
        ("provider-s3-generated.json", "generated", "m.txt"),
        ("provider-s3-incoming.json", "espressif", "m.csv"),
    ],
)
def test_provider_s3_event(
    stack: Any, store: JobStore, tmp_path: Path, event_name: str, vendor: str, filename: str
) -> None:
    signer = make_microchip_signer()
    verifier_prefix = stack.function_env(PROVIDER)["THINGPRESS_MICROCHIP_VERIFIER_PREFIX"]
    stack.client("s3").put_object(Bucket=stack.bucket, Key=f"{verifier_prefix}events.crt", Body=signer.pem())
    manifest = tmp_path / filename
    summary: Summary = generate(vendor, 8, manifest, bad_fraction=0.25, signer=signer, seed=21)
    event = load_event(event_name)
    key, version = upload_for_event(stack, event, manifest.read_bytes())

    outcome = run(stack, PROVIDER, event)

    assert outcome.error is None, outcome.error
    assert outcome.response == NO_FAILURES
    job = store.get_job(job_id_for(stack.bucket, key, version))
    assert job is not None
    assert (job.vendor, job.total, job.failed, job.parsed) == (vendor, 8, 2, True)
    assert job.status == JobStatus.IMPORTING
    entries = drain_import_queue(stack)
    assert [entry["thing_name"] for entry in entries] == list(summary.thing_names)
    failures = store.build_report(job)["failures"]
    assert {failure["locator"] for failure in failures} == set(summary.bad)


def test_provider_s3_test_event(stack: Any, store: JobStore) -> None:
    before = len(store.list_jobs())
    outcome = run(stack, PROVIDER, load_event("provider-s3-test-event.json"))
    assert outcome.error is None, outcome.error
    assert outcome.response == NO_FAILURES
    assert len(store.list_jobs()) == before
    assert drain_import_queue(stack) == []


def test_provider_continuation(stack: Any, store: JobStore, tmp_path: Path) -> None:
    manifest = tmp_path / "certificates.txt"
    summary = generate("generated", 12, manifest, seed=22)
    event = load_event("provider-continuation-failure.json")  # made to succeed: the test creates its job
    message = json.loads(event["Records"][0]["body"])
    put = stack.client("s3").put_object(Bucket=stack.bucket, Key=message["key"], Body=manifest.read_bytes())
    # The job the continuation refers to: received, and its earlier parser's lease has run out.
    _, job = store.create_job(stack.bucket, message["key"], put["VersionId"])
    assert store.claim_parse(job.job_id, "crashed-invocation", datetime.now(UTC) - timedelta(seconds=1))
    message.update(job_id=job.job_id, version_id=put["VersionId"], etag=put["ETag"].strip('"'))
    event["Records"][0]["body"] = json.dumps(message)

    outcome = run(stack, PROVIDER, event)

    assert outcome.error is None, outcome.error
    assert outcome.response == NO_FAILURES
    resumed = store.get_job(job.job_id)
    assert resumed is not None
    assert (resumed.status, resumed.total, resumed.parsed) == (JobStatus.IMPORTING, 12, True)
    assert [entry["thing_name"] for entry in drain_import_queue(stack)] == list(summary.thing_names)


# --- BulkImporter ---------------------------------------------------------------------------------------


# --- JobSweeper -----------------------------------------------------------------------------------------


def test_sweeper_schedule(stack: Any, store: JobStore) -> None:
    # The handler runs on the real clock: a job whose parser vanished nine hours ago, and a fresh one.
    ages = {"generated/vanished.txt": timedelta(hours=9), "generated/just-now.txt": timedelta()}
    for key, age in ages.items():
        JobStore(
            store.table_name,
            dynamodb=stack.client("dynamodb"),
            s3=stack.client("s3"),
            clock=lambda age=age: datetime.now(UTC) - age,
        ).create_job(stack.bucket, key, "v1")
    stuck, fresh = (job_id_for(stack.bucket, key, "v1") for key in ages)

    outcome = run(stack, SWEEPER, load_event("sweeper-schedule.json"))

    assert outcome.error is None, outcome.error
    assert stuck in {swept["job_id"] for swept in outcome.response["swept"]}
    swept = store.get_job(stuck)
    assert swept is not None
    assert swept.status == JobStatus.FAILED
    assert (swept.reason or "").startswith("The job was stopped because no progress since ")
    report = json.loads(
        stack.client("s3")
        .get_object(Bucket=stack.bucket, Key="reports/generated/vanished.txt.json")["Body"]
        .read()
    )
    assert (report["status"], report["reason"]) == ("FAILED", swept.reason)
    left = store.get_job(fresh)
    assert left is not None
    assert left.status == JobStatus.RECEIVED


# --- how the code is located ----------------------------------------------------------------------------


def test_build_output_is_what_runs(stack: Any, tmp_path: Path) -> None:
    build = tmp_path / "build"
    shutil.copytree(REPO_ROOT / "src" / "manifest_provider", build / PROVIDER)
    shutil.copytree(REPO_ROOT / "src" / "layer_utils", build / "UtilsLayer" / "python")
    outcome = invoke.invoke(
        PROVIDER, load_event("provider-s3-test-event.json"), template=TEMPLATE, build_dir=build, stack=stack
    )
    assert outcome.spec.from_build
    assert outcome.response == NO_FAILURES
    assert outcome.module_file is not None
    assert Path(outcome.module_file).is_relative_to(build / PROVIDER)


def test_cli_against_the_endpoint(stack: Any) -> None:
    if not THINGPRESS.exists():
        pytest.skip(f"{THINGPRESS} is not installed (run make install)")
    environment = {**os.environ, **stack.function_env(PROVIDER)}
    completed = subprocess.run(
        [str(THINGPRESS), "invoke", PROVIDER, str(EVENTS / "provider-s3-test-event.json")],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == NO_FAILURES


CLI_CASES = [
    *((function, name, 0, "") for name, function in sorted(SUCCESS_SAMPLES.items())),
    (IMPORTER, "importer-batch-failure.json", 1, "thingpress invoke: The event names job "),
    (PROVIDER, "provider-continuation-failure.json", 1, "thingpress invoke: The event names job "),
]


def run_cli_invoke(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run `thingpress invoke` in its own process and local stack, as from a shell (one stack per process)."""
    environment = {key: value for key, value in os.environ.items() if key != "AWS_ENDPOINT_URL"}
    environment["PYTHONPATH"] = os.pathsep.join(str(REPO_ROOT / "src" / part) for part in ("", "layer_utils"))
    return subprocess.run(
        [sys.executable, "-m", "thingpress.cli", *argv],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("function", "name", "status", "says"), CLI_CASES)
def test_cli_exit_status(function: str, name: str, status: int, says: str) -> None:
    completed = run_cli_invoke("invoke", function, str(EVENTS / name))
    assert completed.returncode == status, completed.stderr
    response = json.loads(completed.stdout)
    assert response == NO_FAILURES if function != SWEEPER else "swept" in response
    lines = [line for line in completed.stderr.splitlines() if line.startswith("thingpress invoke:")]
    assert lines == (
        [line for line in completed.stderr.splitlines() if line.startswith(says)] if says else []
    )
    assert len(lines) == (1 if says else 0)
    assert '"level"' not in completed.stderr  # the handler's log lines show only with -v


def test_cli_verbose_shows_the_handler_logs_on_stderr() -> None:
    completed = run_cli_invoke("-v", "invoke", IMPORTER, str(EVENTS / "importer-batch.json"))
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == NO_FAILURES
    logs = [json.loads(line) for line in completed.stderr.splitlines() if line.startswith('{"level"')]
    assert logs
    assert {log["service"] for log in logs} == {"thingpress"}
