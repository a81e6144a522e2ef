"""Run Thingpress end to end on the embedded local stack: ``thingpress local import``, ``demo``, ``generate``.

Manifests are uploaded to the local intake bucket (moto) exactly as a user would upload them to S3;
the S3 notification lands in the IntakeQueue and the SQS event-source-mapping emulator drives the
real ManifestProvider and BulkImporter handlers until every queue is empty. The result is the job
report plus the things as the (emulated) IoT registry holds them, and the circuit-breaker states.

Local runs lift the template's IoT API quotas (``IotApiTps``): moto has none, and the pacing
itself is tested elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bulk_importer.rate_limit import DEFAULT_IOT_TPS
from layer_utils.cert_utils import DEFAULT_NAME_SOURCES
from layer_utils.circuit_state import get_circuit_status
from layer_utils.jobs import FINAL_STATUSES, Job, JobStore
from manifest_provider import vendors
from thingpress import remote
from thingpress.certfactory import Issued
from thingpress.check import certificate_files
from thingpress.console import (
    CliError,
    JobProgress,
    circuits_table,
    failures_table,
    handler_logs_to_stderr,
    jobs_table,
    out_console,
    print_json,
    spinner,
    things_table,
)
from thingpress.generate import Summary, generate, make_microchip_signer

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

    Raises ``CliError`` when neither exists.
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
    """Start the local stack from the template with local IoT quotas; yield it, stop it afterwards.

    Raises ``CliError`` when the stack cannot start.
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

    Returns the keys written.
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


def upload_settings(
    *,
    policies: Sequence[str] = (),
    thing_groups: Sequence[str] = (),
    thing_type: str | None = None,
    vendor: str | None = None,
    bundle_type: str | None = None,
) -> dict[str, str]:
    """Return the S3 user metadata that overrides the import settings for one upload."""
    metadata: dict[str, str] = {}
    if policies:
        metadata["thingpress-policies"] = ",".join(policies)
    if thing_groups:
        metadata["thingpress-thing-groups"] = ",".join(thing_groups)
    if thing_type:
        metadata["thingpress-thing-type"] = thing_type
    if vendor:
        metadata["thingpress-vendor"] = vendor
    if bundle_type:
        metadata["thingpress-bundle-type"] = bundle_type
    return metadata


@dataclass(frozen=True)
class Upload:
    """One manifest to drop into the bucket: its key, content and S3 user metadata."""

    key: str
    body: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)


class LocalRun:
    """Uploads manifests to a started local stack and runs the pipeline until every queue is empty.

    Takes the stack, whether to show live progress bars on stderr, and the time limit in seconds.
    """

    def __init__(self, stack: Any, *, show_progress: bool = True, max_seconds: float = 300.0) -> None:
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

        Takes the uploads and an optional ``thingpress.local.metrics_capture.MetricsCapture`` that
        records the metrics the run emits and samples queue depths for the dashboard (without one,
        the emitted metrics are captured and dropped, so stdout stays the command's own). Each report
        is ``JobStore.build_report`` plus ``key`` and ``things`` read back from IoT; an upload that
        never became a job gets status ``NOT_STARTED``. Raises ``CliError`` when the pipeline is
        still busy after the time limit.
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
        "succeeded": 0,
        "failed": 0,
        "duplicates": 0,
        "imported": [],
        "failures": [],
        "things": [],
    }


def circuit_status() -> dict[str, dict[str, Any]]:
    """Return the circuit breakers of this process (the local handlers run here) with the shown fields."""
    return {
        name: {field_name: status.get(field_name) for field_name in CIRCUIT_FIELDS}
        for name, status in get_circuit_status().items()
    }


def new_capture() -> Any:
    """Return a ``MetricsCapture`` for a local run (EMF lines are captured, not printed)."""
    from thingpress.local.metrics_capture import MetricsCapture  # noqa: PLC0415 - loads the local stack

    return MetricsCapture()


def write_dashboard(capture: Any, template: Path, out: Path) -> Path:
    """Render the template's dashboard from a run's captured metrics into the HTML page ``out``."""
    from thingpress.dashboard import render_dashboard  # noqa: PLC0415 - loads matplotlib

    return render_dashboard(capture, template, out)


# --- thingpress local import ----------------------------------------------------------------------


def local_import_command(
    manifest: Path,
    *,
    vendor: str | None,
    policies: Sequence[str],
    thing_groups: Sequence[str],
    thing_type: str | None,
    verifiers: Path | None,
    bundle_type: str | None,
    allow_expired: bool = False,
    trusted_cas: Sequence[Path] = (),
    name_sources: Sequence[str] = DEFAULT_NAME_SOURCES,
    thing_name_prefix: str = "",
    dashboard: Path | None = None,
    as_json: bool,
) -> int:
    """Run ``thingpress local import``: import one manifest through the local stack and print the report.

    The import settings (expiry, trust anchors, thing-name sources and prefix) configure the local
    ManifestProvider exactly as the stack's parameters configure the deployed one. With
    ``dashboard`` the template's CloudWatch dashboard is drawn from the run's metrics into that HTML
    file. Returns 0 when every entry was imported, 1 when some failed (or the job
    failed). Raises ``CliError`` when the stack cannot start or the pipeline does not finish.
    """
    body = manifest.read_bytes()
    key = f"{vendor or 'incoming'}/{manifest.name}"
    metadata = upload_settings(
        policies=policies,
        thing_groups=thing_groups,
        thing_type=thing_type,
        vendor=vendor,
        bundle_type=bundle_type,
    )
    template = find_template()
    capture = new_capture() if dashboard is not None else None
    with local_stack(template, quiet=as_json) as stack:
        environment = {
            "THINGPRESS_ALLOW_EXPIRED": "true" if allow_expired else "false",
            "THINGPRESS_THING_NAME_SOURCE": ",".join(name_sources),
            "THINGPRESS_THING_NAME_PREFIX": thing_name_prefix,
        }
        if trusted_cas:
            environment["THINGPRESS_TRUSTED_CA_PREFIX"] = upload_trusted_cas(stack, trusted_cas)
        stack.configure_function(PROVIDER, environment=environment)
        ensure_iot_resources(
            stack.client("iot"), policies=policies, thing_groups=thing_groups, thing_type=thing_type
        )
        if verifiers is not None:
            upload_verifiers(stack, verifiers)
        (report,) = LocalRun(stack, show_progress=not as_json).run(
            [Upload(key, body, metadata)], capture=capture
        )
        circuits = circuit_status()
    if capture is not None and dashboard is not None:
        report["dashboard"] = str(write_dashboard(capture, template, dashboard))
    if as_json:
        print_json({**report, "circuits": circuits})
    else:
        remote.print_report(report, title=f"Job {report.get('job_id', '-')}")
        out_console().print(circuits_table(circuits))
        if dashboard is not None:
            out_console().print(f"Dashboard: {report['dashboard']}")
    return remote.report_exit_code([report])


# --- thingpress generate ----------------------------------------------------------------------------


def load_or_make_signer(prefix: Path) -> tuple[Issued, bool]:
    """Return the Microchip signer stored at ``<prefix>.crt`` and ``.key``, or a new one written there.

    Returns the signer and whether it was created. Raises ``CliError`` when only one of the files
    exists or they cannot be read.
    """
    cert_path, key_path = prefix.with_name(prefix.name + ".crt"), prefix.with_name(prefix.name + ".key")
    if cert_path.exists() != key_path.exists():
        raise CliError(f"Signer needs both {cert_path} and {key_path}; only one exists.")
    if cert_path.exists():
        try:
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except ValueError as error:
            raise CliError(
                f"Signer {cert_path} or {key_path} is not a PEM certificate and key: {error}"
            ) from error
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CliError(f"Signer key {key_path} is not an EC key (ES256 needs P-256).")
        return Issued(certificate, key), False
    signer = make_microchip_signer()
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_text(signer.pem(), encoding="ascii")
    key_path.write_text(signer.key_pem(), encoding="ascii")
    key_path.chmod(0o600)
    return signer, True


def generate_command(
    vendor: str, count: int, out: Path, *, bad_fraction: float, signer: Path | None, seed: int
) -> int:
    """Run ``thingpress generate``: write a synthetic manifest (and, for Microchip, its signer).

    For Microchip the signer is read from, or created at, ``<signer>.crt``/``<signer>.key``
    (default ``<out without suffix>-signer``); pass the certificate's directory to ``--verifiers``.
    Returns 0. Raises ``CliError`` for ``--signer`` with another vendor.
    """
    if signer is not None and vendor != "microchip":
        raise CliError("--signer applies to --vendor microchip only.")
    out.parent.mkdir(parents=True, exist_ok=True)
    console = out_console()
    chosen: Issued | None = None
    if vendor == "microchip":
        prefix = signer or out.with_name(out.stem + "-signer")
        chosen, created = load_or_make_signer(prefix)
        verb = "Wrote" if created else "Used"
        console.print(f"{verb} manifest signer {prefix.name}.crt in {prefix.parent} (pass it to --verifiers)")
    summary = generate(vendor, count, out, bad_fraction=bad_fraction, signer=chosen, seed=seed)
    console.print(
        f"Wrote {summary.count} {vendor} entries to {out}: "
        f"{len(summary.thing_names)} good, {len(summary.bad)} damaged."
    )
    for locator, kind in summary.bad.items():
        console.print(f"  {locator}: {kind}")
    return 0


# --- thingpress demo ----------------------------------------------------------------------------------

DEMO_POLICY = "thingpress-demo-policy"
DEMO_GROUP = "thingpress-demo-group"
DEMO_TYPE = "thingpress-demo-type"


@dataclass(frozen=True)
class DemoManifest:
    """One demo manifest: where it goes, what the generator wrote and so what the job must report."""

    upload: Upload
    summary: Summary

    def problems(self, report: Mapping[str, Any]) -> list[str]:
        """Return how ``report`` differs from what this manifest must produce (empty when it matches)."""
        key = self.upload.key
        expected = {
            "total": self.summary.count,
            "succeeded": len(self.summary.thing_names),
            "failed": len(self.summary.bad),
            "duplicates": 0,
        }
        problems = [
            f"{key}: {name} is {report.get(name)}, expected {value}."
            for name, value in expected.items()
            if report.get(name) != value
        ]
        if report.get("status") not in FINAL_STATUSES:
            problems.append(f"{key}: the job ended in status {report.get('status')}, not a final one.")
        imported = sorted(thing["thing_name"] for thing in report.get("things") or [])
        if imported != sorted(self.summary.thing_names):
            problems.append(f"{key}: the things in IoT are not the manifest's good entries.")
        for thing in report.get("things") or []:
            complete = (
                thing.get("certificate_id")
                and thing.get("policies") == [DEMO_POLICY]
                and thing.get("thing_groups") == [DEMO_GROUP]
                and thing.get("thing_type") == DEMO_TYPE
            )
            if not complete:
                problems.append(
                    f"{key}: thing {thing.get('thing_name')} lacks its certificate, policy, group or type."
                )
        return problems


def build_demo_manifests(workdir: Path, count: int, signer: Issued) -> list[DemoManifest]:
    """Generate the demo manifests in ``workdir``: one per vendor format and one with bad entries.

    Returns them with their upload keys and metadata (demo policy, group and type).
    """
    metadata = upload_settings(policies=[DEMO_POLICY], thing_groups=[DEMO_GROUP], thing_type=DEMO_TYPE)
    plan = (
        ("espressif", "espressif/demo-espressif.csv", 0.0, 1),
        ("infineon", "infineon/demo-infineon.7z", 0.0, 2),
        ("microchip", "microchip/demo-microchip.json", 0.0, 3),
        ("generated", "generated/demo-generated.txt", 0.0, 4),
        ("microchip", "incoming/demo-with-bad-entries.json", 0.2, 5),
    )
    manifests = []
    for vendor, key, bad_fraction, seed in plan:
        path = workdir / key.replace("/", "-")
        summary = generate(vendor, count, path, bad_fraction=bad_fraction, signer=signer, seed=seed)
        manifests.append(DemoManifest(Upload(key, path.read_bytes(), metadata), summary))
    return manifests


def run_demo(
    *, count: int = 25, template: Path | None = None, dashboard: Path | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run the demo on a fresh local stack and print its summary.

    Takes the certificates per manifest, the template (default: found from the current
    directory) and where to draw the dashboard from the run's metrics (None: not drawn). Returns
    the job reports and the list of problems (empty when every job ended with exactly the expected
    counts and things). Raises ``CliError`` when the stack cannot start or the pipeline does not
    finish.
    """
    console = out_console()
    template = template or find_template()
    capture = new_capture() if dashboard is not None else None
    with tempfile.TemporaryDirectory(prefix="thingpress-demo-") as scratch, local_stack(template) as stack:
        iot = stack.client("iot")
        ensure_iot_resources(iot, policies=[DEMO_POLICY], thing_groups=[DEMO_GROUP], thing_type=DEMO_TYPE)
        signer = make_microchip_signer()
        signer_path = Path(scratch) / "verifiers" / "demo-signer.crt"
        signer_path.parent.mkdir()
        signer_path.write_text(signer.pem(), encoding="ascii")
        upload_verifiers(stack, signer_path.parent)
        with spinner(f"Generating {count} devices per manifest…"):
            manifests = build_demo_manifests(Path(scratch), count, signer)
        reports = LocalRun(stack).run([manifest.upload for manifest in manifests], capture=capture)
        things = remote.inventory(iot)
        circuits = circuit_status()
    problems = [
        problem
        for manifest, report in zip(manifests, reports, strict=True)
        for problem in manifest.problems(report)
    ]
    if len(things) != sum(len(manifest.summary.thing_names) for manifest in manifests):
        problems.append(f"IoT holds {len(things)} things, not the number of good entries.")
    console.print(jobs_table(reports, title="Jobs"))
    failures = [
        {"key": report.get("key"), **failure}
        for report in reports
        for failure in report.get("failures") or []
    ]
    if failures:
        console.print(failures_table(failures, title="Failed entries (the bad ones are expected)"))
    console.print(things_table(things, title=f"IoT inventory ({len(things)} things, read back from IoT)"))
    console.print(circuits_table(circuits))
    if capture is not None and dashboard is not None:
        console.print(
            f"Dashboard drawn from the run's metrics: {write_dashboard(capture, template, dashboard)}"
        )
    return reports, problems


def demo_command(*, count: int = 25, dashboard: Path | None = None) -> int:
    """Run ``thingpress demo`` (see ``run_demo``). Returns 0 when every job ended as expected, else 1."""
    reports, problems = run_demo(count=count, dashboard=dashboard)
    console = out_console()
    for problem in problems:
        console.print(f"[red]unexpected:[/] {problem}")
    if problems:
        console.print(f"Demo FAILED: {len(problems)} unexpected results.")
        return 1
    imported = sum(int(report.get("succeeded") or 0) for report in reports)
    failed = sum(int(report.get("failed") or 0) for report in reports)
    console.print(
        f"Demo OK: {len(reports)} manifests, {imported} devices imported, "
        f"{failed} bad entries rejected as expected."
    )
    return 0
