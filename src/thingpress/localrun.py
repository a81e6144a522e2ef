"""Thingpress on the embedded local stack: start it, prepare IoT and the bucket, run uploads to the end.

Manifests are uploaded to the local intake bucket (moto) exactly as a user would upload them to S3;
the S3 notification lands in the IntakeQueue and the SQS event-source-mapping emulator drives the
real ManifestProvider and BulkImporter handlers until every queue is empty (`LocalRun`). The result
is the job report plus the things as the (emulated) IoT registry holds them.

Local runs lift the template's IoT API quotas (``IotApiTps``, `LOCAL_IOT_TPS`): moto has none, and
the pacing itself is tested elsewhere.

Size: the run loop, its progress, its time limit and its report share one class's state (`LocalRun`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from bulk_importer.rate_limit import DEFAULT_IOT_TPS
from layer_utils.jobs import Job, JobStore
from layer_utils.schema import IMPORTED_ENTRIES
from manifest_provider import vendors
from thingpress import remote
from thingpress.check import certificate_files
from thingpress.console import CliError, handler_logs_to_stderr, spinner
from thingpress.progress import JobProgress
from thingpress.runlimit import LocalRunTimeout, local_timeout, timeout_message

if TYPE_CHECKING:
    from thingpress.local import LocalStack

PROVIDER = "ManifestProviderFunction"
IMPORTER = "BulkImporterFunction"
DEFAULT_VERIFIER_PREFIX = "verifiers/microchip/"
LOCAL_TRUSTED_CA_PREFIX = "trusted-cas/"
"""Where ``local import --trusted-ca`` puts trust anchors (``<prefix><vendor>/``) in the local bucket."""

LOCAL_IOT_TPS = {api: 1000 for api in DEFAULT_IOT_TPS}
"""IoT API rates used locally (requests per second per API): every API the importer calls, lifted."""

DEMO_POLICY_DOCUMENT = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["iot:Connect", "iot:Publish", "iot:Subscribe", "iot:Receive"],
            "Resource": "*",
        }
    ],
}
"""The permissive policy document the local commands create for a named policy that does not exist."""

CIRCUIT_FIELDS = ("state", "consecutive_failures", "threshold", "timeout", "opened_at")
"""The circuit-breaker fields shown in tables."""

_REFRESH_SECONDS = 0.2


def find_template(start: Path | None = None) -> Path:
    """Return ``template.yaml`` of the current directory, else of the source checkout this module is in.

    Args:
        start: The directory to look in first (default the current one).

    Returns:
        The template path.

    Raises:
        CliError: Neither exists.

    """
    candidates = [
        (start or Path.cwd()) / "template.yaml",
        Path(__file__).resolve().parents[2] / "template.yaml",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CliError("template.yaml not found; run thingpress from the project root.")


@contextmanager
def local_stack(template: Path | None = None, *, quiet: bool = False) -> Iterator[Any]:
    """Start the local stack from the template with local IoT quotas; stop it afterwards.

    Args:
        template: The template (default: `find_template`).
        quiet: Show no spinner.

    Yields:
        The started stack.

    Raises:
        CliError: The stack cannot start.

    """
    from thingpress.cfn import TemplateError  # noqa: PLC0415
    from thingpress.local import LocalStack, LocalStackError  # noqa: PLC0415 - loads moto

    path = template or find_template()
    try:
        with spinner("Starting the local AWS stack…", enabled=not quiet):
            stack = LocalStack(path, parameters={"IotApiTps": json.dumps(LOCAL_IOT_TPS)})
            stack.start()
    except (LocalStackError, TemplateError) as error:
        raise CliError(f"The local stack cannot start: {error}") from error
    try:
        yield stack
    finally:
        stack.stop()


def _exists(error: ClientError) -> bool:
    return error.response["Error"].get("Code") == "ResourceAlreadyExistsException"


def ensure_iot_resources(
    iot: Any, *, policies: Sequence[str] = (), thing_groups: Sequence[str] = (), thing_type: str | None = None
) -> None:
    """Create the named policies (``DEMO_POLICY_DOCUMENT``), thing groups and thing type when absent."""
    for policy in policies:
        try:
            iot.create_policy(policyName=policy, policyDocument=json.dumps(DEMO_POLICY_DOCUMENT))
        except ClientError as error:
            if not _exists(error):
                raise
    for group in thing_groups:
        try:
            iot.create_thing_group(thingGroupName=group)
        except ClientError as error:
            if not _exists(error):
                raise
    if thing_type:
        try:
            iot.create_thing_type(thingTypeName=thing_type)
        except ClientError as error:
            if not _exists(error):
                raise


def upload_verifiers(stack: Any, directory: Path) -> list[str]:
    """Upload every certificate file in ``directory`` under the provider's Microchip verifier prefix.

    Returns:
        The keys written.

    """
    prefix = (
        stack.function_env(PROVIDER).get("THINGPRESS_MICROCHIP_VERIFIER_PREFIX") or DEFAULT_VERIFIER_PREFIX
    )
    s3 = stack.client("s3")
    keys = []
    for path in certificate_files(directory):
        key = f"{prefix}{path.name}"
        s3.put_object(Bucket=stack.bucket, Key=key, Body=path.read_bytes())
        keys.append(key)
    return keys


def upload_trusted_cas(stack: Any, paths: Sequence[Path]) -> str:
    """Upload trust anchor files under a trusted-CA prefix, for every vendor; return the prefix."""
    prefix = LOCAL_TRUSTED_CA_PREFIX
    s3 = stack.client("s3")
    for vendor in (parser.name for parser in vendors.PARSERS):
        for index, path in enumerate(paths):
            s3.put_object(
                Bucket=stack.bucket, Key=f"{prefix}{vendor}/{index}-{path.name}", Body=path.read_bytes()
            )
    return prefix


def upload_settings(*, vendor: str | None = None, bundle_type: str | None = None) -> dict[str, str]:
    """Return the S3 user metadata of one upload: how its manifest is read (vendor, Infineon bundle).

    These keys need no allowlist; what the stack grants is the operator's (`operator_settings`).
    """
    metadata: dict[str, str] = {}
    if vendor:
        metadata["thingpress-vendor"] = vendor
    if bundle_type:
        metadata["thingpress-bundle-type"] = bundle_type
    return metadata


def operator_settings(
    *, policies: Sequence[str] = (), thing_groups: Sequence[str] = (), thing_type: str | None = None
) -> dict[str, str]:
    """Return the ManifestProvider environment that makes these the stack's own settings.

    The local commands act as the operator: they configure the function as the template's
    ``PolicyNames``, ``ThingGroupNames`` and ``ThingTypeName`` would, instead of asking for them as an
    uploader (S3 metadata, which the stack refuses beyond its allowlists).
    """
    return {
        "THINGPRESS_POLICIES": ",".join(policies),
        "THINGPRESS_THING_GROUPS": ",".join(thing_groups),
        "THINGPRESS_THING_TYPE": thing_type or "",
    }


@dataclass(frozen=True)
class Upload:
    """One manifest to drop into the bucket: its key, content and S3 user metadata."""

    key: str
    body: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)


class LocalRun:
    """Uploads manifests to a started local stack and runs the pipeline until every queue is empty.

    Args:
        stack: The started local stack.
        show_progress: Show progress on stderr (live bars on a terminal, else plain lines).
        timeout: The time limit of a run in seconds; None: `local_timeout` of the entries the jobs
            have so far (it grows as the provider reads the manifests).
        clock: Seconds (monotonic): the time limit and the progress rates run on it.

    """

    def __init__(
        self,
        stack: Any,
        *,
        show_progress: bool = True,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Bind to the stack; nothing runs until `run`."""
        self.stack = stack
        self.show_progress = show_progress
        self.timeout = timeout
        self.clock = clock
        self.s3 = stack.client("s3")
        self.iot = stack.client("iot")
        self.store = JobStore(
            stack.physical_id("JobsTable"), dynamodb=stack.client("dynamodb"), s3=stack.client("s3")
        )
        self._refresh_lock = threading.Lock()
        self._last_refresh: float | None = None
        self._entries = 0
        self._job_ids: dict[str, str] = {}

    def jobs_by_key(self, keys: Sequence[str]) -> dict[str, Job]:
        """Return the newest job of each of ``keys`` that has one."""
        found: dict[str, Job] = {}
        for job in self.store.list_jobs():  # newest first
            if job.key in keys and job.key not in found:
                found[job.key] = job
        return found

    def _jobs_now(self, keys: Sequence[str]) -> dict[str, Job]:
        """Return the jobs of ``keys``: one Scan until every key has a job, then a GetItem per job."""
        if len(self._job_ids) < len(keys):
            jobs = self.jobs_by_key(keys)
            self._job_ids = {key: job.job_id for key, job in jobs.items()}
            return jobs
        found = {key: self.store.get_job(job_id) for key, job_id in self._job_ids.items()}
        return {key: job for key, job in found.items() if job is not None}

    def limit(self) -> float:
        """Return the time limit now: ``timeout``, else `local_timeout` of the entries known so far."""
        return self.timeout if self.timeout is not None else local_timeout(self._entries, LOCAL_IOT_TPS)

    def _refresh(self, progress: JobProgress, keys: Sequence[str], *, force: bool = False) -> None:
        with self._refresh_lock:
            now = self.clock()
            if not force and self._last_refresh is not None and now - self._last_refresh < _REFRESH_SECONDS:
                return
            self._last_refresh = now
            jobs = self._jobs_now(keys)
            self._entries = sum(job.entries_known for job in jobs.values())
            for key in keys:
                job = jobs.get(key)
                if job is None:
                    progress.update(key, 0, None, "waiting")
                else:
                    progress.update(key, job.settled, job.total if job.parsed else None, str(job.status))

    def run(
        self, uploads: Sequence[Upload], *, capture: Any = None, verify: bool = False
    ) -> list[dict[str, Any]]:
        """Upload the manifests, run the pipeline to completion and return one report per upload.

        Each report is ``JobStore.build_report`` plus ``key``, ``things`` and ``things_from``
        (`report_things`), and ``pending`` while the job is not final; an upload that never became a
        job gets status ``NOT_STARTED``. Progress is refreshed after every invocation and, while
        invocations run, five times a second.

        Args:
            uploads: The manifests.
            capture: A ``thingpress.local.metrics_capture.MetricsCapture`` that records the metrics the
                run emits and samples queue depths for the dashboard; without one, the emitted metrics are
                captured and dropped, so stdout stays the command's own.
            verify: Read every imported thing back from IoT (4 calls per thing) instead of taking the
                things from the job's outcomes.

        Returns:
            The reports.

        Raises:
            LocalRunTimeout: The pipeline is still busy after the time limit (`limit`); it carries the
                partial reports, each with ``pending``, the entries not settled yet (None while unknown).

        """
        from thingpress.local import EventSourceMappingEmulator  # noqa: PLC0415 - loads moto

        keys = [upload.key for upload in uploads]
        self.stack.handler(PROVIDER)  # import the handlers (and their loggers) before redirecting logs
        self.stack.handler(IMPORTER)
        started = self.clock()
        for upload in uploads:
            self.s3.put_object(
                Bucket=self.stack.bucket, Key=upload.key, Body=upload.body, Metadata=dict(upload.metadata)
            )
        with contextlib.ExitStack() as context:
            progress = context.enter_context(JobProgress(enabled=self.show_progress, clock=self.clock))
            context.enter_context(handler_logs_to_stderr())
            self._refresh(progress, keys, force=True)

            def on_progress(_: Any) -> None:
                self._refresh(progress, keys)

            def out_of_time() -> bool:
                self._refresh(progress, keys)
                return self.clock() - started >= self.limit()

            # The handlers print their metrics (EMF) to stdout, as on Lambda: capture them, always.
            context.enter_context(capture if capture is not None else new_capture())
            if capture is not None:
                on_progress = capture.sampler(self.stack, then=on_progress)
            emulator = EventSourceMappingEmulator(self.stack, max_concurrency=None, on_progress=on_progress)
            stats = emulator.run_until_idle(max_seconds=float("inf"), until=out_of_time)
            elapsed = self.clock() - started
            self._refresh(progress, keys, force=True)
        reports = self._reports(uploads, partial=not stats.idle, verify=verify)
        if not stats.idle and any("pending" in report for report in reports):
            pending = [report["pending"] for report in reports if "pending" in report]
            message = timeout_message(elapsed, self.timeout, pending)
            raise LocalRunTimeout(message, reports)
        return reports

    def _reports(self, uploads: Sequence[Upload], *, partial: bool, verify: bool) -> list[dict[str, Any]]:
        jobs = self.jobs_by_key([upload.key for upload in uploads])
        reports = []
        for upload in uploads:
            job = jobs.get(upload.key)
            if job is None:
                reports.append(_not_started(upload.key) | ({"pending": None} if partial else {}))
                continue
            report = report_things(self.iot, remote.job_report(self.store, job), verify=verify)
            if not job.is_final:
                report["pending"] = job.total - job.settled if job.parsed and job.total is not None else None
            reports.append(report)
        return reports


def report_things(iot: Any, report: Mapping[str, Any], *, verify: bool) -> dict[str, Any]:
    """Return ``report`` plus its imported things: from the job's outcomes, or read back from IoT.

    An imported outcome is written only once the importer has registered the certificate, attached it
    to the thing and applied the job's settings, so without ``verify`` each thing is its outcome's
    name and certificate with the job's policies, groups and type (``things_from`` ``"job"``; what
    else IoT holds for the thing is not shown). With ``verify`` every thing is read back from IoT
    (``remote.with_things``, 4 calls per thing; ``things_from`` ``"iot"``).

    Args:
        iot: The IoT client (used with ``verify`` only).
        report: The job report (``remote.job_report``).
        verify: Read the things back from IoT.

    Returns:
        The report with ``things`` (sorted by name) and ``things_from``.

    """
    if verify:
        return {**remote.with_things(iot, report), "things_from": "iot"}
    settings = report.get("settings") or {}
    things = {
        entry["thing_name"]: {
            "thing_name": entry["thing_name"],
            "certificate_id": entry["certificate_id"],
            "certificates": [entry["certificate_id"]],
            "policies": sorted(settings.get("policies") or []),
            "thing_groups": sorted(settings.get("thing_groups") or []),
            "thing_type": settings.get("thing_type"),
        }
        for entry in report.get(IMPORTED_ENTRIES) or []
        if entry.get("thing_name")
    }
    return {**report, "things": [things[name] for name in sorted(things)], "things_from": "job"}


def _not_started(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "status": "NOT_STARTED",
        "reason": "The manifest never became a job (no S3 event reached the ManifestProvider).",
        "total": None,
        "imported": 0,
        "failed": 0,
        "duplicates": 0,
        "imported_entries": [],
        "failures": [],
        "duplicate_entries": [],
        "things": [],
    }


_STATE_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}


def circuit_status(stack: LocalStack) -> dict[str, dict[str, Any]]:
    """Return the circuit breakers of the stack's functions (their handlers run here), shown fields only.

    Each function has its own registry (in its ``Services``); a circuit two functions share by name
    (``sqs:SendMessageBatch``) is shown in its worse state.

    Args:
        stack: the local stack whose functions ran.

    Returns:
        Per circuit name, the fields of ``CIRCUIT_FIELDS``.

    """
    merged: dict[str, dict[str, Any]] = {}
    for spec in stack.functions.values():
        runtime = getattr(sys.modules.get(spec.handler.rsplit(".", 1)[0]), "_runtime", None)
        registry = getattr(runtime[1], "registry", None) if runtime is not None else None
        if registry is None:
            continue
        for name, status in registry.status().items():
            shown = {field_name: status.get(field_name) for field_name in CIRCUIT_FIELDS}
            previous = merged.get(name)
            if previous is None or (
                _STATE_SEVERITY[str(shown["state"])],
                shown.get("consecutive_failures") or 0,
            ) > (_STATE_SEVERITY[str(previous["state"])], previous.get("consecutive_failures") or 0):
                merged[name] = shown
    return dict(sorted(merged.items()))


def new_capture() -> Any:
    """Return a ``MetricsCapture`` for a local run (EMF lines are captured, not printed)."""
    from thingpress.local.metrics_capture import MetricsCapture  # noqa: PLC0415 - loads the local stack

    return MetricsCapture()


def write_dashboard(capture: Any, template: Path, out: Path) -> Path:
    """Render the template's dashboard from a run's captured metrics into the HTML page ``out``."""
    from thingpress.dashboard import render_dashboard  # noqa: PLC0415 - loads matplotlib

    return render_dashboard(capture, template, out)
