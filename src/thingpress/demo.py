"""The local commands: ``thingpress local import``, ``generate`` and ``demo``.

``local import`` and ``demo`` run the pipeline on the embedded local stack (`thingpress.localrun`)
and print the job reports (summary first, failures grouped by reason), the things as the (emulated)
IoT registry holds them, and the circuit breakers that are not closed; ``generate`` writes a
synthetic manifest. Every ``--json`` document speaks ``layer_utils.schema``.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from layer_utils.cert_utils import DEFAULT_NAME_SOURCES
from layer_utils.jobs import FINAL_STATUSES
from layer_utils.schema import FAILURES, SCHEMA, counts, entry
from thingpress import remote, remote_cli
from thingpress.certfactory import Issued
from thingpress.console import (
    ROW_LIMIT,
    CliError,
    lit,
    out_console,
    print_circuits,
    print_json,
    spinner,
)
from thingpress.demo_lifecycle import demo_lifecycle
from thingpress.demo_output import DemoRun, print_demo
from thingpress.generate import Summary, generate, make_microchip_signer
from thingpress.localrun import (
    PROVIDER,
    LocalRun,
    Upload,
    circuit_status,
    ensure_iot_resources,
    find_template,
    local_stack,
    new_capture,
    operator_settings,
    upload_settings,
    upload_verifiers,
    write_dashboard,
)
from thingpress.localserve import OperatorSettings, import_to_running
from thingpress.localstate import find_running, require_running, state_dir
from thingpress.progress import JobProgress
from thingpress.runlimit import LocalRunTimeout

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
    verify: bool = False,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    as_json: bool,
    use_local: bool = False,
    local_state: Path | None = None,
    show_all: bool = False,
) -> int:
    """Run ``thingpress local import``: import one manifest through the local stack and print the report.

    People see the summary first, the entries not imported grouped by reason, the first
    ``ROW_LIMIT`` things (every one with ``show_all``) and the circuit breakers that are not closed.

    The import settings (policies, groups, type, expiry, trust anchors, thing-name sources and prefix)
    configure the local ManifestProvider exactly as the stack's parameters configure the deployed one:
    the command is the operator, not an uploader. With ``dashboard``
    the template's CloudWatch dashboard is drawn from the run's metrics into that HTML file. A stack
    that cannot start or a pipeline that does not finish raises ``CliError``. The report's things come
    from the job's outcomes; with ``verify`` they are read back from IoT (`localrun.report_things`).

    When a stack started by ``thingpress local up`` runs from the state folder ``local_state``
    (`thingpress.localstate.state_dir`), the manifest goes to that stack instead (required with
    ``use_local``), whose operator settings these must match (`thingpress.localserve.import_to_running`).
    Progress goes to stderr.

    Returns:
        0 when every entry was imported, 1 when some failed (or the job failed).

    Raises:
        CliError: ``--dashboard`` with a running stack, or no running stack with ``use_local``.
        LocalRunTimeout: The run was still busy after ``timeout`` seconds of ``clock`` (default:
            `thingpress.runlimit.local_timeout` of the manifest's entries); the partial report, with
            the entries still pending, has been printed.

    """
    body = manifest.read_bytes()
    key = f"{vendor or 'incoming'}/{manifest.name}"
    metadata = upload_settings(vendor=vendor, bundle_type=bundle_type)
    settings = OperatorSettings(
        policies=tuple(policies),
        thing_groups=tuple(thing_groups),
        thing_type=thing_type or None,
        allow_expired=allow_expired,
        trusted_cas=tuple(trusted_cas),
        name_sources=tuple(name_sources),
        thing_name_prefix=thing_name_prefix,
    )
    folder = state_dir(local_state)
    running = require_running(folder) if use_local else find_running(folder)
    if running is not None:
        if dashboard is not None:
            raise CliError(
                "--dashboard draws a fresh stack's metrics; it does not apply to a running local stack."
            )
        report = import_to_running(
            running,
            manifest,
            key=key,
            metadata=metadata,
            settings=settings,
            verifiers=verifiers,
            show_progress=not as_json,
            max_seconds=timeout,
            verify=verify,
        )
        if as_json:
            print_json({"schema": SCHEMA, **report})
        else:
            remote_cli.print_report(report, title=f"Job {report.get('job_id', '-')}", show_all=show_all)
        return remote_cli.report_exit_code([report])
    template = find_template()
    capture = new_capture() if dashboard is not None else None
    with local_stack(template, quiet=as_json) as stack:
        settings.apply(stack)
        if verifiers is not None:
            upload_verifiers(stack, verifiers)
        run = LocalRun(stack, show_progress=not as_json, timeout=timeout, clock=clock)
        try:
            (report,) = run.run([Upload(key, body, metadata)], capture=capture, verify=verify)
        except LocalRunTimeout as stopped:
            _print_partial(stopped.reports[0], circuit_status(stack), as_json=as_json)
            raise
        circuits = circuit_status(stack)
    if capture is not None and dashboard is not None:
        report["dashboard"] = str(write_dashboard(capture, template, dashboard))
    if as_json:
        print_json({"schema": SCHEMA, **report, "circuits": circuits})
    else:
        remote_cli.print_report(report, title=f"Job {report.get('job_id', '-')}", show_all=show_all)
        console = out_console()
        print_circuits(console, circuits)
        if dashboard is not None:
            console.print(lit(f"Dashboard: {report['dashboard']}"))
    return remote_cli.report_exit_code([report])


def _print_partial(report: dict[str, Any], circuits: Mapping[str, Any], *, as_json: bool) -> None:
    """Print the report of a local import that hit its time limit, with the entries still pending."""
    if as_json:
        print_json({"schema": SCHEMA, **report, "circuits": circuits, "timed_out": True})
        return
    remote_cli.print_report(
        report, title=f"Job {report.get('job_id', '-')} (partial: stopped at the time limit)"
    )
    pending = report.get("pending")
    out_console().print(f"Still pending: {'unknown' if pending is None else f'{pending:,}'} entries.")


# --- thingpress generate ----------------------------------------------------------------------------


def load_or_make_signer(prefix: Path) -> tuple[Issued, bool]:
    """Return the Microchip signer stored at ``<prefix>.crt`` and ``.key``, or a new one written there.

    Args:
        prefix: The path of both files without their suffix.

    Returns:
        The signer and whether it was created.

    Raises:
        CliError: Only one of the files exists, or they cannot be read.

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
    vendor: str,
    count: int,
    out: Path,
    *,
    bad_fraction: float,
    signer: Path | None,
    seed: int,
    as_json: bool = False,
) -> int:
    """Run ``thingpress generate``: write a synthetic manifest (and, for Microchip, its signer).

    Progress, with rate and time left, goes to stderr (`thingpress.progress.JobProgress`).

    For Microchip the signer is read from, or created at, ``<signer>.crt``/``<signer>.key`` (default
    ``<out without suffix>-signer``); pass the certificate's directory to ``--verifiers``. The counts
    say what an import of the manifest should report (`generate_document`).

    Returns:
        0.

    Raises:
        CliError: ``--signer`` with another vendor.

    """
    if signer is not None and vendor != "microchip":
        raise CliError("--signer applies to --vendor microchip only.")
    out.parent.mkdir(parents=True, exist_ok=True)
    console = out_console()
    chosen: Issued | None = None
    signer_path: Path | None = None
    if vendor == "microchip":
        prefix = signer or out.with_name(out.stem + "-signer")
        chosen, created = load_or_make_signer(prefix)
        signer_path = prefix.with_name(prefix.name + ".crt")
        if not as_json:
            verb = "Wrote" if created else "Used"
            console.print(
                lit(f"{verb} manifest signer {signer_path.name} in {prefix.parent} (pass it to --verifiers)")
            )
    with JobProgress() as progress:
        summary = generate(
            vendor,
            count,
            out,
            bad_fraction=bad_fraction,
            signer=chosen,
            seed=seed,
            progress=progress.tick(f"generate {out.name}"),
        )
    if as_json:
        print_json(generate_document(summary, out, signer_path))
        return 0
    kinds = Counter(summary.bad.values())
    damage = ", ".join(f"{number} {kind}" for kind, number in kinds.most_common())
    console.print(
        lit(
            f"Wrote {summary.count} {vendor} entries to {out}: {len(summary.thing_names)} good, "
            f"{len(summary.bad)} damaged{f' ({damage})' if damage else ''}."
        )
    )
    for locator, kind in list(summary.bad.items())[:ROW_LIMIT]:
        console.print(lit(f"  {locator}: {kind}"))
    if len(summary.bad) > ROW_LIMIT:
        console.print(
            lit(f"  and {len(summary.bad) - ROW_LIMIT} more damaged entries (--json lists every one)")
        )
    return 0


def generate_document(summary: Summary, out: Path, signer: Path | None) -> dict[str, Any]:
    """Return the ``thingpress generate --json`` document.

    The counts are what an import of the manifest should report: ``imported`` the good entries,
    ``failed`` the damaged ones; ``failures`` lists each damaged entry with, as ``reason``, what was
    done to it; ``thing_names`` the expected names of the good entries, in manifest order.
    """
    return {
        "schema": SCHEMA,
        "vendor": summary.vendor,
        "manifest": str(out),
        "signer": None if signer is None else str(signer),
        **counts(summary.count, len(summary.thing_names), len(summary.bad), 0),
        "thing_names": list(summary.thing_names),
        FAILURES: [entry({"locator": locator, "reason": kind}) for locator, kind in summary.bad.items()],
    }


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
        expected: dict[str, int | None] = {
            "total": self.summary.count,
            "imported": len(self.summary.thing_names),
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

    Returns:
        The manifests with their upload keys (the demo policy, group and type are the stack's own:
        `run_demo` configures them as the operator).

    """
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
        manifests.append(DemoManifest(Upload(key, path.read_bytes()), summary))
    return manifests


def run_demo(
    *, count: int = 25, template: Path | None = None, dashboard: Path | None = None, quiet: bool = False
) -> DemoRun:
    """Run the demo on a fresh local stack: every vendor format, and one manifest with bad entries.

    A stack that cannot start or a pipeline that does not finish raises ``CliError``.

    Args:
        count: The certificates per manifest.
        template: The template (default: found from the current directory).
        dashboard: Where to draw the dashboard from the run's metrics; None: not drawn.
        quiet: Show no spinner or progress.

    Returns:
        The run, with what differs from the expected outcome.

    """
    template = template or find_template()
    capture = new_capture() if dashboard is not None else None
    with (
        tempfile.TemporaryDirectory(prefix="thingpress-demo-") as scratch,
        local_stack(template, quiet=quiet) as stack,
    ):
        iot = stack.client("iot")
        ensure_iot_resources(iot, policies=[DEMO_POLICY], thing_groups=[DEMO_GROUP], thing_type=DEMO_TYPE)
        stack.configure_function(
            PROVIDER,
            environment=operator_settings(
                policies=[DEMO_POLICY], thing_groups=[DEMO_GROUP], thing_type=DEMO_TYPE
            ),
        )
        signer = make_microchip_signer()
        signer_path = Path(scratch) / "verifiers" / "demo-signer.crt"
        signer_path.parent.mkdir()
        signer_path.write_text(signer.pem(), encoding="ascii")
        upload_verifiers(stack, signer_path.parent)
        with spinner(f"Generating {count} devices per manifest…", enabled=not quiet):
            manifests = build_demo_manifests(Path(scratch), count, signer)
        reports = LocalRun(stack, show_progress=not quiet).run(
            [manifest.upload for manifest in manifests], capture=capture, verify=True
        )
        things = remote.inventory(iot)
        circuits = circuit_status(stack)
        lifecycle, problems = demo_lifecycle(stack, reports[0])  # thingpress.demo_lifecycle
    unexpected = [
        problem
        for manifest, report in zip(manifests, reports, strict=True)
        for problem in manifest.problems(report)
    ]
    if len(things) != sum(len(manifest.summary.thing_names) for manifest in manifests):
        unexpected.append(f"IoT holds {len(things)} things, not the number of good entries.")
    drawn = write_dashboard(capture, template, dashboard) if capture is not None and dashboard else None
    return DemoRun(reports, things, circuits, unexpected + problems, drawn, lifecycle)


def demo_command(
    *, count: int = 25, dashboard: Path | None = None, show_all: bool = False, as_json: bool = False
) -> int:
    """Run ``thingpress demo`` (see `run_demo`) and print it. Returns 0 when every job ended as expected."""
    run = run_demo(count=count, dashboard=dashboard, quiet=as_json)
    if as_json:
        print_json(run.to_dict())
    else:
        print_demo(run, show_all=show_all)
    return 1 if run.unexpected else 0
