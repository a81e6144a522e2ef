"""Thingpress on the embedded local stack: start it, prepare IoT and the bucket, run uploads to the end.

Manifests are uploaded to the local intake bucket (moto) exactly as a user would upload them to S3;
the S3 notification lands in the IntakeQueue and the SQS event-source-mapping emulator drives the
real ManifestProvider and BulkImporter handlers until every queue is empty (`LocalRun`). The result
is the job report plus the things as the (emulated) IoT registry holds them.

Local runs lift the template's IoT API quotas (``IotApiTps``, `LOCAL_IOT_TPS`): moto has none, and
the pacing itself is tested elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from bulk_importer.rate_limit import DEFAULT_IOT_TPS
from layer_utils.jobs import Job, JobStore
from manifest_provider import vendors
from thingpress import remote
from thingpress.check import certificate_files
from thingpress.console import CliError, JobProgress, handler_logs_to_stderr, spinner

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
        show_progress: Show live progress bars on stderr.
        max_seconds: The time limit of a run.

    """

    def __init__(self, stack: Any, *, show_progress: bool = True, max_seconds: float = 300.0) -> None:
        """Bind to the stack; nothing runs until `run`."""
        self.stack = stack
        self.show_progress = show_progress
        self.max_seconds = max_seconds
        self.s3 = stack.client("s3")
        self.iot = stack.client("iot")
        self.store = JobStore(
            stack.physical_id("JobsTable"), dynamodb=stack.client("dynamodb"), s3=stack.client("s3")
        )
        self._refresh_lock = threading.Lock()
        self._last_refresh = 0.0

    def jobs_by_key(self, keys: Sequence[str]) -> dict[str, Job]:
        """Return the newest job of each of ``keys`` that has one."""
        found: dict[str, Job] = {}
        for job in self.store.list_jobs():  # newest first
            if job.key in keys and job.key not in found:
                found[job.key] = job
        return found

    def _refresh(self, progress: JobProgress, keys: Sequence[str], *, force: bool = False) -> None:
        with self._refresh_lock:
            now = time.monotonic()
            if not force and now - self._last_refresh < _REFRESH_SECONDS:
                return
            self._last_refresh = now
            jobs = self.jobs_by_key(keys)
            for key in keys:
                job = jobs.get(key)
                if job is None:
                    progress.update(key, 0, None, "waiting")
                else:
                    progress.update(key, job.settled, job.total, str(job.status))

    def run(self, uploads: Sequence[Upload], *, capture: Any = None) -> list[dict[str, Any]]:
        """Upload the manifests, run the pipeline to completion and return one report per upload.

        Each report is ``JobStore.build_report`` plus ``key`` and ``things`` read back from IoT; an upload
        that never became a job gets status ``NOT_STARTED``.

        Args:
            uploads: The manifests.
            capture: A ``thingpress.local.metrics_capture.MetricsCapture`` that records the metrics the
                run emits and samples queue depths for the dashboard; without one, the emitted metrics are
                captured and dropped, so stdout stays the command's own.

        Returns:
            The reports.

        Raises:
            CliError: The pipeline is still busy after the time limit.

        """
        from thingpress.local import EventSourceMappingEmulator  # noqa: PLC0415 - loads moto

        keys = [upload.key for upload in uploads]
        self.stack.handler(PROVIDER)  # import the handlers (and their loggers) before redirecting logs
        self.stack.handler(IMPORTER)
        for upload in uploads:
            self.s3.put_object(
                Bucket=self.stack.bucket, Key=upload.key, Body=upload.body, Metadata=dict(upload.metadata)
            )
        with contextlib.ExitStack() as context:
            progress = context.enter_context(JobProgress(enabled=self.show_progress))
            context.enter_context(handler_logs_to_stderr())
            self._refresh(progress, keys, force=True)

            def on_progress(_: Any) -> None:
                self._refresh(progress, keys)

            # The handlers print their metrics (EMF) to stdout, as on Lambda: capture them, always.
            context.enter_context(capture if capture is not None else new_capture())
            if capture is not None:
                on_progress = capture.sampler(self.stack, then=on_progress)
            emulator = EventSourceMappingEmulator(self.stack, max_concurrency=None, on_progress=on_progress)
            stats = emulator.run_until_idle(max_seconds=self.max_seconds)
            self._refresh(progress, keys, force=True)
        if not stats.idle:
            raise CliError(f"The local pipeline was still busy after {self.max_seconds:.0f} seconds.")
        jobs = self.jobs_by_key(keys)
        reports = []
        for upload in uploads:
            job = jobs.get(upload.key)
            if job is None:
                reports.append(_not_started(upload.key))
                continue
            report = remote.with_things(self.iot, remote.job_report(self.store, job))
            reports.append(report)
        return reports


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
