"""Every command's ``--json`` speaks one vocabulary (``layer_utils.schema``), as the deployed report does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from layer_utils.schema import COUNTS, ENTRY_FIELDS, ENTRY_LISTS, SCHEMA
from thingpress import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
OLD_WORDS = {"succeeded", "problems", "valid", "invalid", "entries", "valid_entries"}


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli.main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out)


def entry_lists(document: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Return every entry list of a document, and of the job reports it holds."""
    lists = [document[name] for name in ENTRY_LISTS if name in document]
    for job in document.get("jobs") or []:
        lists += [job[name] for name in ENTRY_LISTS if name in job]
    return lists


def test_every_command_speaks_the_same_words(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thingpress.localrun import LocalRun, Upload, local_stack

    monkeypatch.chdir(REPO_ROOT)
    manifest = tmp_path / "devices.txt"
    documents: dict[str, dict[str, Any]] = {}
    _, documents["generate"] = run_json(
        capsys,
        "generate",
        "--vendor",
        "generated",
        "--count",
        "6",
        "--bad-fraction",
        "0.5",
        "--out",
        str(manifest),
    )
    _, documents["check"] = run_json(capsys, "check", str(manifest))
    _, documents["local import"] = run_json(capsys, "local", "import", str(manifest))
    _, documents["demo"] = run_json(capsys, "demo", "--count", "2")
    with local_stack(quiet=True) as stack:
        LocalRun(stack, show_progress=False).run([Upload("generated/devices.txt", manifest.read_bytes())])
        target = ["--bucket", stack.bucket, "--table", stack.physical_id("JobsTable")]
        _, documents["status"] = run_json(capsys, "status", *target)
        _, documents["report"] = run_json(capsys, "report", "generated/devices.txt", *target)
        # The commands without import counts carry the schema too.
        others = {
            "reconcile": run_json(capsys, "reconcile", "generated/devices.txt", *target)[1],
            "undo --dry-run": run_json(capsys, "undo", "generated/devices.txt", "--dry-run", *target)[1],
            "sweep": run_json(capsys, "sweep", *target)[1],
        }
    for command, document in others.items():
        assert document["schema"] == SCHEMA, command

    for command, document in documents.items():
        assert document["schema"] == SCHEMA, command
        assert set(COUNTS) <= document.keys(), command
        assert not OLD_WORDS & document.keys(), command
        for entries in entry_lists(document):
            for entry in entries:
                assert set(ENTRY_FIELDS) <= entry.keys() <= {*ENTRY_FIELDS, "name_source", "ledger"}, (
                    command,
                    entry,
                )
    # One manifest, the same counts whoever tells them.
    for command in ("generate", "check", "local import", "status", "report"):
        assert [documents[command][name] for name in COUNTS] == [6, 3, 3, 0], command
    assert {entry["locator"] for entry in documents["report"]["failures"]} == {
        entry["locator"] for entry in documents["check"]["failures"]
    }
    assert documents["demo"]["ok"] is True
    assert documents["demo"]["imported"] == sum(job["imported"] for job in documents["demo"]["jobs"])
