"""``thingpress local up``/``down``: a local stack in its own process, reached later with --local."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from thingpress import cli
from thingpress.generate import generate
from thingpress.localserve import OperatorSettings, settings_conflict
from thingpress.localstate import STATE_FILE, RunningStack, find_running, write_state
from thingpress.remote import Deployment

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_PATHS = ("src/layer_utils", "src/manifest_provider", "src/bulk_importer", "src/job_sweeper", "src")
POLICY, GROUP, TYPE = "up-policy", "up-group", "up-type"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_json_document(stream: IO[str]) -> dict[str, Any]:
    """Read lines until they form one JSON document (``local up --json`` prints it when ready)."""
    text = ""
    while True:
        line = stream.readline()
        if not line:
            raise AssertionError(f"local up exited before it was ready; printed {text!r}")
        text += line
        try:
            document: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError:
            continue
        return document


def listening(endpoint: str) -> bool:
    parts = urllib.parse.urlsplit(endpoint)
    with socket.socket() as probe:
        return probe.connect_ex((parts.hostname or "", parts.port or 0)) == 0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, dict[str, Any]]]:
    """A ``local up`` process serving from ``tmp_path/state``; killed if a test leaves it running."""
    state = tmp_path / "state"
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(REPO_ROOT / path) for path in SOURCE_PATHS),
    }
    with (tmp_path / "up.err").open("w") as errors:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "thingpress.cli", "local", "up", "--state", str(state), "--json"),
                *("--policy", POLICY, "--thing-group", GROUP, "--thing-type", TYPE),
            ],
            cwd=REPO_ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            assert process.stdout is not None
            yield process, state, read_json_document(process.stdout)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


@pytest.mark.slow
def test_import_then_status_and_report_reach_the_running_stack_until_down(
    served: tuple[subprocess.Popen[str], Path, dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    process, state, ready = served
    assert (state / STATE_FILE).is_file()
    assert ready["pid"] == process.pid
    assert listening(ready["endpoint"])
    manifest = tmp_path / "devices.csv"
    summary = generate("espressif", 4, manifest, seed=21)

    code, out, _ = run_cli(
        capsys,
        "local",
        "import",
        str(manifest),
        "--vendor",
        "espressif",
        "--local",
        "--state",
        str(state),
        "--json",
    )
    assert code == 0
    imported = json.loads(out)
    assert imported["status"] == "COMPLETED"
    assert sorted(thing["thing_name"] for thing in imported["things"]) == sorted(summary.thing_names)

    code, out, _ = run_cli(capsys, "status", "--local", "--state", str(state), "--json")
    assert code == 0
    status = json.loads(out)
    assert status["table"] == ready["deployment"]["table"]
    assert [(job["key"], job["status"]) for job in status["jobs"]] == [("espressif/devices.csv", "COMPLETED")]

    code, out, _ = run_cli(
        capsys, "report", "espressif/devices.csv", "--local", "--state", str(state), "--json"
    )
    assert code == 0
    report = json.loads(out)
    assert report["job_id"] == imported["job_id"]
    assert {
        (t["thing_name"], tuple(t["policies"]), tuple(t["thing_groups"]), t["thing_type"])
        for t in report["things"]
    } == {(name, (POLICY,), (GROUP,), TYPE) for name in summary.thing_names}

    code, out, err = run_cli(
        capsys,
        "local",
        "import",
        str(manifest),
        "--local",
        "--state",
        str(state),
        "--thing-type",
        "other-type",
    )
    assert code == 2
    assert "thing type" in err

    code, out, _ = run_cli(capsys, "local", "down", "--state", str(state))
    assert code == 0
    assert "Stopped the local stack" in out
    assert process.wait(timeout=60) == 0
    assert not (state / STATE_FILE).exists()
    assert not listening(ready["endpoint"])
    code, _, err = run_cli(capsys, "status", "--local", "--state", str(state))
    assert code == 2
    assert "No local stack is running" in err


def test_a_state_file_whose_process_is_gone_is_no_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state = tmp_path / "state"
    write_state(
        state,
        RunningStack(
            pid=gone.pid, endpoint="http://127.0.0.1:9", region="us-east-1", deployment=Deployment("b", "t")
        ),
    )
    assert find_running(state) is None
    code, _, err = run_cli(capsys, "report", "some-job", "--local", "--state", str(state))
    assert code == 2
    assert err.startswith("thingpress: No local stack is running from")
    code, out, _ = run_cli(capsys, "local", "down", "--state", str(state))
    assert code == 0
    assert "removed its state" in out
    assert not (state / STATE_FILE).exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--local", "--stack", "thingpress"],
        ["report", "job", "--local", "--region", "eu-west-1"],
        ["status", "--state", "somewhere"],
    ],
)
def test_local_does_not_combine_with_a_deployed_target(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("thingpress: ")


def test_an_import_may_leave_operator_settings_to_the_running_stack_but_not_change_them() -> None:
    running = OperatorSettings(policies=("p",), thing_type="t", thing_name_prefix="lab-").describe()
    assert settings_conflict(running, OperatorSettings()) is None
    assert settings_conflict(running, OperatorSettings(policies=("p",), thing_type="t")) is None
    assert settings_conflict(running, OperatorSettings(policies=("q",))) == "policies"
    assert settings_conflict(running, OperatorSettings(thing_name_prefix="other-")) == "thing_name_prefix"
    assert settings_conflict(running, OperatorSettings(allow_expired=True)) == "allow_expired"
