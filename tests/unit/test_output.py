"""Output for people: failures grouped by reason with hints, row limits, literal text, 80 columns."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from layer_utils.schema import COUNTS, ENTRY_FIELDS, SCHEMA
from thingpress import cli
from thingpress.console import (
    ROW_LIMIT,
    failures_table,
    jobs_table,
    not_closed,
    print_circuits,
    print_failure_groups,
    things_table,
)
from thingpress.failures import group_failures
from thingpress.generate import generate

KID = "TCnpnzYB8M3CO776ByPJ2yX3KYo"
X5T = "Vx2ZhBEX46-zTyiIYEWQP6eFzCg90ugGjh5epGBM4OM"


def failure(locator: str, reason: str) -> dict[str, str]:
    return {"locator": locator, "reason": f"{locator}: {reason}"}


def render(*renderables: object, width: int = 80) -> str:
    stream = io.StringIO()
    console = Console(file=stream, width=width, markup=False, emoji=False, highlight=False)
    for renderable in renderables:
        console.print(renderable)
    return stream.getvalue()


def printed(function: object, *args: object, width: int = 80, **kwargs: object) -> str:
    stream = io.StringIO()
    console = Console(file=stream, width=width, markup=False, emoji=False, highlight=False)
    function(console, *args, **kwargs)  # type: ignore[operator]
    return stream.getvalue()


# --- grouping and hints -----------------------------------------------------------------------------


def test_reasons_group_by_kind_with_counts_largest_first() -> None:
    failures = [
        failure(f"line {n}", f"Certificate expired on 2025-09-{n:02d}T18:29:36Z.") for n in range(1, 8)
    ]
    failures += [failure("line 9", "duplicate of line 1."), failure("line 10", "duplicate of line 2.")]
    groups = group_failures(failures)
    assert [(group.label, group.count) for group in groups] == [
        ("Certificate expired", 7),
        ("Duplicate of an earlier entry (the same certificate)", 2),
    ]
    assert groups[0].locators[:2] == ["line 1", "line 2"]
    assert groups[0].example == "Certificate expired on 2025-09-01T18:29:36Z."


@pytest.mark.parametrize(
    ("reason", "option"),
    [
        ("Certificate expired on 2025-09-13T18:29:36Z.", "--allow-expired"),
        (f"no trusted signer matches kid {KID} and x5t#S256 {X5T}.", "--verifiers"),
        ("the signature does not verify with signer 'signer 5'.", "--verifiers"),
        (
            "no thing name source (vendor,cn) gives a legal name of its own: the vendor gives no device "
            "identifier; the subject CN twin-1 is shared with line 2, so it names neither.",
            "--thing-name-source",
        ),
        (
            "no thing name source (vendor,cn) gives a legal name of its own: the subject CN 'Infineon IoT "
            "Node' names a product, not one device (it has no digit).",
            "--thing-name-source",
        ),
        (
            "thing name ab12 from the vendor's device identifier is also claimed by row 7 with a different "
            "certificate; neither is imported.",
            "--thing-name-source",
        ),
        ("Certificate does not chain to a trusted CA: unable to get local issuer.", "--trusted-ca"),
    ],
)
def test_a_hint_names_the_option_that_helps(reason: str, option: str) -> None:
    (group,) = group_failures([failure("entry 1", reason), failure("entry 2", reason)])
    assert group.count == 2
    assert group.hint is not None
    assert option in group.hint


@pytest.mark.parametrize("reason", ["duplicate of line 1.", "the payload is not valid JSON."])
def test_no_hint_where_no_option_helps(reason: str) -> None:
    (group,) = group_failures([failure("entry 1", reason)])
    assert group.hint is None


def test_unknown_reasons_that_differ_only_in_details_group_together() -> None:
    groups = group_failures(
        [
            failure("row 1", "x5c[0] is not a readable certificate: error 12 at 'abc'."),
            failure("row 2", "x5c[1] is not a readable certificate: error 7 at 'def'."),
            failure("row 3", "the payload is not valid JSON."),
        ]
    )
    assert [group.count for group in groups] == [2, 1]
    assert groups[0].label == "xNc[N] is not a readable certificate: error N at '…'"


def test_grouped_output_is_short_and_carries_the_hint() -> None:
    failures = [failure(f"line {n}", "Certificate expired on 2025-09-13T18:29:36Z.") for n in range(1, 101)]
    out = printed(print_failure_groups, failures)
    assert "100 entries: Certificate expired" in out
    assert "line 1, line 2, line 3 and 97 more" in out
    assert "--allow-expired" in out
    assert len(out.splitlines()) <= 8
    assert "line 50" not in out


# --- row limits and circuits ----------------------------------------------------------------------


def thing(n: int) -> dict[str, object]:
    return {
        "thing_name": f"device-{n:03d}",
        "certificate_id": f"{n:064x}",
        "policies": ["p"],
        "thing_groups": ["g"],
        "thing_type": "t",
    }


def test_inventory_shows_ten_rows_unless_all() -> None:
    things = [thing(n) for n in range(25)]
    limited = render(things_table(things))
    assert f"device-{ROW_LIMIT - 1:03d}" in limited
    assert f"device-{ROW_LIMIT:03d}" not in limited
    assert f"{ROW_LIMIT} of 25 things shown; --all shows every one." in limited
    everything = render(things_table(things, limit=None))
    assert all(f"device-{n:03d}" in everything for n in range(25))
    assert "--all" not in everything


def test_failures_table_limit() -> None:
    failures = [failure(f"row {n}", "bad.") for n in range(15)]
    assert "row 12" not in render(failures_table(failures, limit=ROW_LIMIT))
    assert "row 14" in render(failures_table(failures))


def test_circuits_print_only_when_one_is_not_closed() -> None:
    closed = {"iot:CreateThing": {"state": "closed", "consecutive_failures": 0}}
    assert printed(print_circuits, closed) == ""
    troubled = {**closed, "iot:AttachPolicy": {"state": "open", "consecutive_failures": 5}}
    assert list(not_closed(troubled)) == ["iot:AttachPolicy"]
    out = printed(print_circuits, troubled)
    assert "iot:AttachPolicy" in out
    assert "iot:CreateThing" not in out


# --- literal text and 80 columns ------------------------------------------------------------------

MARKUP = "[/bogus] [bold red]loud[/] :smile:"


def test_untrusted_text_prints_literally_in_every_table() -> None:
    entry = {"locator": MARKUP, "reason": f"{MARKUP}: thing name '{MARKUP}' is bad.", "key": MARKUP}
    job = {"key": MARKUP, "vendor": MARKUP, "status": "COMPLETED", "total": 1, "imported": 1}
    things = [{**thing(1), "thing_name": MARKUP, "thing_type": MARKUP}]
    out = render(failures_table([entry]), things_table(things), jobs_table([job]), width=300) + printed(
        print_failure_groups, [entry], width=300
    )
    assert out.count("[/bogus]") >= 6
    assert "[bold red]loud[/]" in out
    assert ":smile:" in out


def test_check_prints_markup_from_a_csv_column_literally(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "devices.csv"
    generate("espressif", 3, manifest, seed=1)
    lines = manifest.read_text().splitlines(keepends=True)
    lines[1] = "[/bogus]," + lines[1].split(",", 1)[1]
    manifest.write_text("".join(lines))
    for extra in ([], ["--all"]):
        code = cli.main(["check", str(manifest), "--thing-name-source", "vendor", *extra])
        captured = capsys.readouterr()
        assert code == 1, captured.err
        assert "'[/bogus]'" in captured.out
        assert all(line.startswith("check devices.csv: ") for line in captured.err.splitlines())  # progress


def column_texts(table_output: str) -> list[str]:
    """Return the text of each column of a rendered table body, its wrapped lines joined."""
    columns: list[str] = []
    for line in table_output.splitlines():
        if not line.startswith("│"):
            continue
        cells = line.strip("│").split("│")
        columns += [""] * (len(cells) - len(columns))
        for index, cell in enumerate(cells):
            columns[index] += cell.strip()
    return columns


def test_tables_at_80_columns_cut_no_cell() -> None:
    long_key = "incoming/a-rather-long-manifest-name-from-the-vendor-portal.json"
    job = {"key": long_key, "vendor": "microchip", "status": "COMPLETED_WITH_ERRORS", "total": 120}
    entry = {"locator": "entry 10 (uniqueId 01235305d966e82401)", "reason": f"x5t#S256 {X5T}."}
    wide = {**thing(7), "thing_name": "cert-" + "ab" * 32, "thing_groups": ["thingpress-demo-group"]}
    cases = [
        (jobs_table([job]), [long_key, "microchip", "COMPLETED_WITH_ERRORS", "120"]),
        (failures_table([entry]), ["entry10(uniqueId01235305d966e82401)", f"x5t#S256{X5T}."]),
        (things_table([wide]), ["cert-" + "ab" * 32, "0000000000000000…", "p", "thingpress-demo-group", "t"]),
    ]
    for table, cells in cases:
        out = render(table, width=80)
        assert max(len(line) for line in out.splitlines()) <= 80
        assert [text.replace(" ", "") for text in column_texts(out)][: len(cells)] == cells


# --- one JSON vocabulary (offline commands; tests/stack/test_json_vocabulary.py runs all of them) ----


def test_check_and_generate_json_speak_the_schema(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "m.txt"
    assert (
        cli.main(
            [
                "generate",
                "--vendor",
                "generated",
                "--count",
                "5",
                "--bad-fraction",
                "0.4",
                "--out",
                str(manifest),
                "--json",
            ]
        )
        == 0
    )
    generated = json.loads(capsys.readouterr().out)
    assert cli.main(["check", str(manifest), "--json"]) == 1
    checked = json.loads(capsys.readouterr().out)
    for document in (generated, checked):
        assert document["schema"] == SCHEMA
        assert set(COUNTS) <= document.keys()
        for entry in document["failures"]:
            assert set(ENTRY_FIELDS) <= entry.keys()
    assert [generated[name] for name in COUNTS] == [checked[name] for name in COUNTS] == [5, 3, 2, 0]
    assert {entry["locator"] for entry in generated["failures"]} == {
        entry["locator"] for entry in checked["failures"]
    }
