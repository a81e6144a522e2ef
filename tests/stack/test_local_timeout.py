"""local import's time limit: it scales with the entries; hitting it prints the partial report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from layer_utils.jobs import JobStore
from thingpress import cli
from thingpress.generate import generate
from thingpress.localrun import LOCAL_IOT_TPS, PROVIDER, LocalRun, Upload, local_stack
from thingpress.runlimit import TIMEOUT_BASE_SECONDS, LocalRunTimeout, local_timeout

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRIES = 40


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)


def test_a_run_stopped_at_its_limit_reports_what_was_imported_and_what_is_pending(tmp_path: Path) -> None:
    manifest = tmp_path / "devices.txt"
    summary = generate("generated", ENTRIES, manifest, seed=21)
    with local_stack(quiet=True) as stack:
        # One entry per import message, so the importers settle the job a few entries at a time.
        stack.configure_function(PROVIDER, environment={"THINGPRESS_CERTS_PER_MESSAGE": "1"})
        store = JobStore(
            stack.physical_id("JobsTable"), dynamodb=stack.client("dynamodb"), s3=stack.client("s3")
        )

        def settled_clock() -> float:
            """'Seconds' are the entries settled so far: the limit below falls after ten of them."""
            return float(sum(job.settled for job in store.list_jobs()))

        run = LocalRun(stack, show_progress=False, timeout=10, clock=settled_clock)
        with pytest.raises(LocalRunTimeout) as stopped:
            run.run([Upload("generated/devices.txt", manifest.read_bytes())])
        (report,) = stopped.value.reports
        (job,) = store.list_jobs()

    assert report["status"] == "IMPORTING"
    assert report["total"] == ENTRIES
    assert report["imported"] >= 10
    assert report["failed"] == report["duplicates"] == 0
    assert report["pending"] == ENTRIES - job.settled > 0
    imported = {entry["thing_name"] for entry in report["imported_entries"]}
    assert len(imported) == report["imported"]
    assert imported <= set(summary.thing_names)
    assert {thing["thing_name"] for thing in report["things"]} == imported  # read back from IoT
    assert str(stopped.value) == (
        f"The local pipeline stopped at its --timeout after {report['imported']} s with "
        f"{report['pending']} entries still pending; the partial report shows what was imported so far "
        "(raise --timeout to wait longer)."
    )


def test_the_default_limit_grows_with_the_entries_the_jobs_have(tmp_path: Path) -> None:
    manifest = tmp_path / "devices.txt"
    generate("generated", ENTRIES, manifest, seed=22)
    with local_stack(quiet=True) as stack:
        run = LocalRun(stack, show_progress=False)
        assert run.limit() == TIMEOUT_BASE_SECONDS
        (report,) = run.run([Upload("generated/devices.txt", manifest.read_bytes())])
    assert report["status"] == "COMPLETED"
    assert "pending" not in report
    assert run.limit() == local_timeout(ENTRIES, LOCAL_IOT_TPS) > TIMEOUT_BASE_SECONDS


def test_local_import_timeout_prints_the_partial_report_and_one_sentence(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "devices.txt"
    generate("generated", 5, manifest, seed=23)
    capsys.readouterr()
    code = cli.main(["local", "import", str(manifest), "--timeout", "0", "--json"])
    captured = capsys.readouterr()
    assert code == 2
    report = json.loads(captured.out)  # stdout is still exactly one JSON document
    assert report["timed_out"] is True
    assert report["status"] == "NOT_STARTED"
    assert report["pending"] is None
    assert report["things"] == []
    last = captured.err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"thingpress: The local pipeline stopped at its --timeout after \d+ s with entries still pending; "
        r"the partial report shows what was imported so far \(raise --timeout to wait longer\)\.",
        last,
    ), last
