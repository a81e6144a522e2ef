"""thingpress local import and thingpress demo: the whole pipeline on the embedded local stack."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from thingpress import cli
from thingpress.generate import generate, make_microchip_signer

REPO_ROOT = Path(__file__).resolve().parents[2]
THINGPRESS = REPO_ROOT / ".venv" / "bin" / "thingpress"


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)


def local_import(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli.main(["local", "import", *argv, "--verify", "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def assert_things_complete(
    report: dict[str, Any], policies: list[str], groups: list[str], thing_type: str | None
) -> None:
    """Each imported thing has exactly its own certificate, the policies, groups and type (read from IoT)."""
    imported = {entry["thing_name"]: entry["certificate_id"] for entry in report["imported_entries"]}
    things = {thing["thing_name"]: thing for thing in report["things"]}
    assert set(things) == set(imported)
    for name, thing in things.items():
        assert thing["certificates"] == [imported[name]], name
        assert thing["policies"] == sorted(policies), name
        assert thing["thing_groups"] == sorted(groups), name
        assert thing["thing_type"] == thing_type, name


# --- real vendor manifests ------------------------------------------------------------------------


def test_espressif_with_policy_groups_and_type(
    capsys: pytest.CaptureFixture[str], shared_manifests: Path
) -> None:
    code, report = local_import(
        capsys,
        str(shared_manifests / "espressif" / "manifest-espressif.csv"),
        "--vendor",
        "espressif",
        "--policy",
        "fleet-policy",
        "--thing-group",
        "fleet",
        "--thing-group",
        "espressif-devices",
        "--thing-type",
        "expresslink",
    )
    assert code == 0
    assert (report["status"], report["total"], report["imported"], report["failed"]) == (
        "COMPLETED",
        7,
        7,
        0,
    )
    assert report["failures"] == []
    assert len(report["things"]) == 7
    assert "4BA2BB8764BD" in {thing["thing_name"] for thing in report["things"]}
    assert_things_complete(report, ["fleet-policy"], ["espressif-devices", "fleet"], "expresslink")
    assert "iot:RegisterCertificateWithoutCA" in report["circuits"]
    assert report["circuits"]["iot:RegisterCertificateWithoutCA"]["state"] == "closed"


def test_generated(capsys: pytest.CaptureFixture[str], shared_manifests: Path) -> None:
    # The shared generated certificates expired on 2025-09-13; the pipeline refuses expired
    # certificates unless told otherwise.
    code, report = local_import(
        capsys, str(shared_manifests / "generated" / "certificates_test.txt"), "--allow-expired"
    )
    assert code == 0
    assert (report["vendor"], report["total"], report["imported"], report["failed"]) == (
        "generated",
        100,
        100,
        0,
    )
    assert {thing["thing_name"] for thing in report["things"]} == {f"Device-{n}" for n in range(100)}
    assert_things_complete(report, [], [], None)


def test_infineon_e0e0(capsys: pytest.CaptureFixture[str], shared_manifests: Path) -> None:
    code, report = local_import(
        capsys, str(shared_manifests / "infineon" / "manifest-infineon.7z"), "--bundle-type", "E0E0"
    )
    assert code == 0
    assert (report["vendor"], report["total"], report["imported"], report["failed"]) == (
        "infineon",
        200,
        200,
        0,
    )
    assert len(report["things"]) == 200
    assert all(re.fullmatch(r"[0-9A-F]{20}", thing["thing_name"]) for thing in report["things"])


def test_microchip_tmngtlss_has_no_certificates(
    capsys: pytest.CaptureFixture[str], shared_manifests: Path
) -> None:
    microchip = shared_manifests / "microchip"
    code, report = local_import(
        capsys,
        str(microchip / "ECC608-TMNGTLSS-B.json"),
        "--vendor",
        "microchip",
        "--verifiers",
        str(microchip / "verifiers"),
    )
    assert code == 1
    assert (report["total"], report["imported"], report["failed"]) == (10, 0, 10)
    assert report["things"] == []
    assert len(report["failures"]) == 10
    assert all("no certificate in manifest entry" in failure["reason"] for failure in report["failures"])


# --- synthetic manifests ------------------------------------------------------------------------------


def test_bad_entries_exit_1_with_locators(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    signer = make_microchip_signer()
    verifiers = tmp_path / "verifiers"
    verifiers.mkdir()
    (verifiers / "signer.crt").write_text(signer.pem())
    manifest = tmp_path / "devices.json"
    summary = generate("microchip", 12, manifest, bad_fraction=0.25, signer=signer, seed=11)
    code, report = local_import(capsys, str(manifest), "--verifiers", str(verifiers), "--policy", "p")
    assert code == 1
    assert report["status"] == "COMPLETED_WITH_ERRORS"
    assert (report["total"], report["imported"], report["failed"]) == (12, 9, 3)
    assert {failure["locator"] for failure in report["failures"]} == set(summary.bad)
    assert sorted(thing["thing_name"] for thing in report["things"]) == sorted(summary.thing_names)
    assert_things_complete(report, ["p"], [], None)


def test_human_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "devices.csv"
    generate("espressif", 3, manifest, seed=12)
    capsys.readouterr()
    assert cli.main(["local", "import", str(manifest), "--vendor", "espressif"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "COMPLETED" in lines[0]  # the summary comes first
    assert "3 entries: 3 imported, 0 failed, 0 duplicates." in lines[1]
    assert "Things in AWS IoT (3, as the job recorded them; --verify reads them back)" in captured.out
    assert "Circuit breakers" not in captured.out  # every circuit is closed
    assert "{" not in lines[0]  # no handler log lines on stdout


def test_status_and_report_against_the_local_endpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from thingpress.localrun import LocalRun, Upload, local_stack

    manifest = tmp_path / "devices.txt"
    summary = generate("generated", 6, manifest, bad_fraction=0.5, seed=13)
    with local_stack(quiet=True) as stack:
        (report,) = LocalRun(stack, show_progress=False).run(
            [Upload("generated/devices.txt", manifest.read_bytes())], verify=True
        )
        assert os.environ["AWS_ENDPOINT_URL"] == stack.endpoint_url
        target = ["--bucket", stack.bucket, "--table", stack.physical_id("JobsTable"), "--json"]

        capsys.readouterr()
        assert cli.main(["status", *target]) == 0  # it did what was asked; --fail-on-errors gives 1
        (job,) = json.loads(capsys.readouterr().out)["jobs"]
        assert (job["job_id"], job["status"], job["imported"], job["failed"]) == (
            report["job_id"],
            "COMPLETED_WITH_ERRORS",
            3,
            3,
        )

        assert cli.main(["report", "generated/devices.txt", *target, "--fail-on-errors"]) == 1
        remote_report = json.loads(capsys.readouterr().out)
    assert remote_report["things"] == report["things"]
    assert remote_report["failures"] == report["failures"]
    assert {failure["locator"] for failure in remote_report["failures"]} == set(summary.bad)


def test_things_from_the_job_are_the_things_iot_holds(tmp_path: Path) -> None:
    """Without --verify the report's things come from the job's outcomes; IoT holds exactly those."""
    from thingpress.localrun import (
        LocalRun,
        Upload,
        ensure_iot_resources,
        local_stack,
        operator_settings,
        report_things,
    )

    manifest = tmp_path / "devices.txt"
    summary = generate("generated", 8, manifest, bad_fraction=0.25, seed=17)
    with local_stack(quiet=True) as stack:
        iot = stack.client("iot")
        ensure_iot_resources(iot, policies=["p"], thing_groups=["g2", "g1"], thing_type="t")
        stack.configure_function(
            "ManifestProviderFunction",
            environment=operator_settings(policies=["p"], thing_groups=["g2", "g1"], thing_type="t"),
        )
        (report,) = LocalRun(stack, show_progress=False).run(
            [Upload("generated/d.txt", manifest.read_bytes())]
        )
        verified = report_things(iot, report, verify=True)
    assert report["things_from"] == "job"
    assert verified["things_from"] == "iot"
    assert [thing["thing_name"] for thing in report["things"]] == sorted(summary.thing_names)
    shown = ("thing_name", "certificate_id", "certificates", "policies", "thing_groups", "thing_type")
    assert report["things"] == [{key: thing[key] for key in shown} for thing in verified["things"]]


# --- make demo --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_make_demo() -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_ENDPOINT_URL")}
    dashboard = REPO_ROOT / "out" / "demo-dashboard.html"
    dashboard.unlink(missing_ok=True)
    completed = subprocess.run(
        ["make", "--no-print-directory", "demo"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    assert re.search(r"^Demo OK", out, re.MULTILINE)
    assert out.index("Demo OK") < out.index("Jobs")  # the verdict comes first
    for heading in ("Jobs", "IoT inventory", "Entries not imported", "Next steps:"):
        assert heading in out
    assert "Circuit breakers" not in out  # shown only when one is not closed
    assert re.search(r"10 of \d+ things shown; --all shows every one\.", out)
    assert str(Path("out") / "demo-dashboard.html") in out
    assert "hint: " in out
    assert "Lifecycle of espressif/demo-espressif.csv" in out
    assert "Reconcile after the undo (UNDONE): 25 entries, drift: 0 missing, 0 extra, 0 changed." in out
    for key in ("espressif/", "infineon/", "microchip/", "generated/", "incoming/"):
        assert key in out
    assert "Traceback" not in completed.stderr
    assert dashboard.stat().st_size > 0


def test_every_import_setting_of_the_stack(
    capsys: pytest.CaptureFixture[str], shared_manifests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    realworld = shared_manifests / "realworld"
    devices = str(realworld / "infineon-optiga-trust-m-devices.pem")
    anchors = str(realworld / "infineon-optiga-trust-anchors.pem")
    code, report = local_import(
        capsys,
        devices,
        "--trusted-ca",
        anchors,
        "--thing-name-source",
        "fingerprint",
        "--thing-name-prefix",
        "ifx-",
    )
    assert code == 0
    assert report["imported"] == 3
    assert {thing["thing_name"] for thing in report["things"]} == {
        f"ifx-cert-{entry['certificate_id']}" for entry in report["imported_entries"]
    }
    assert report["settings"]["thing_name_source"] == "fingerprint"
    # The same THINGPRESS_* variables the deployed functions read are the defaults of check and import.
    unrelated = REPO_ROOT / "tests" / "testing" / "pipeline.py"  # not a certificate: skipped with a warning
    monkeypatch.setenv("THINGPRESS_THING_NAME_SOURCE", "vendor,cn")
    code, report = local_import(capsys, devices, "--trusted-ca", str(unrelated))
    assert code == 1
    assert report["settings"]["thing_name_source"] == "vendor,cn"
    assert report["imported"] == 0
    assert all("does not chain to a trusted CA" in failure["reason"] for failure in report["failures"])
    capsys.readouterr()
    assert cli.main(["check", devices, "--json"]) == 1
    checked = json.loads(capsys.readouterr().out)
    assert all("no thing name source (vendor,cn)" in problem["reason"] for problem in checked["failures"])


def test_the_demo_lifecycle_import_reconcile_undo_reconcile(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from testing.pipeline import pipeline
    from thingpress.demo_lifecycle import demo_lifecycle
    from thingpress.remote import with_things

    manifest = tmp_path / "lifecycle.csv"
    summary = generate("espressif", 4, manifest, seed=14)
    with pipeline() as p:
        result = p.run("espressif/lifecycle.csv", manifest.read_bytes())
        report = with_things(p.iot, result.report)
        assert len(report["things"]) == 4
        capsys.readouterr()

        lines, problems = demo_lifecycle(p.stack, report)
        assert problems == []
        out = "\n".join(lines)
        job = p.jobs.get_job(result.job.job_id)
        assert job is not None and str(job.status) == "UNDONE"
        assert not set(p.things()) & set(summary.thing_names)
    assert "Reconcile after the import (COMPLETED): 4 entries, drift: 0 missing, 0 extra, 0 changed." in out
    assert "Undo: UNDONE, 16 resources removed." in out  # per entry: principal, INACTIVE, certificate, thing
    assert "Reconcile after the undo (UNDONE): 4 entries, drift: 0 missing, 0 extra, 0 changed." in out
