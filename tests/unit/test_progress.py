"""thingpress.progress and thingpress.runlimit: progress lines, rich's rate and time left, the local limit."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from thingpress.check import check_manifest
from thingpress.generate import generate
from thingpress.localrun import LOCAL_IOT_TPS
from thingpress.progress import JobProgress, RateColumn, format_rate, format_seconds
from thingpress.runlimit import EMULATED_ENTRIES_PER_SECOND, TIMEOUT_BASE_SECONDS, local_timeout


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain(clock: FakeClock, stream: io.StringIO, **kwargs: object) -> JobProgress:
    return JobProgress(stream=stream, clock=clock, live=False, **kwargs)  # type: ignore[arg-type]


def test_plain_lines_carry_count_rate_and_eta_every_interval() -> None:
    clock, stream = FakeClock(), io.StringIO()
    with plain(clock, stream, interval=10.0) as progress:
        progress.update("check", 0, 100_000)
        for second in range(1, 26):
            clock.now += 1
            progress.update("check", second * 4_000, 100_000)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "check: 0/100,000 certificates",
        "check: 40,000/100,000 certificates, 4,000/s, ETA 15 s",
        "check: 80,000/100,000 certificates, 4,000/s, ETA 5 s",
        "check: 100,000/100,000 certificates in 25 s (4,000/s)",
    ]


def test_updates_between_lines_write_nothing() -> None:
    clock, stream = FakeClock(), io.StringIO()
    progress = plain(clock, stream, interval=10.0)
    progress.update("generate", 0, 1_000)
    for done in range(1, 500):
        clock.now += 0.01
        progress.update("generate", done, 1_000)
    assert stream.getvalue().splitlines() == ["generate: 0/1,000 certificates"]


def test_a_status_change_writes_a_line_at_once_and_exit_shows_the_last_state() -> None:
    clock, stream = FakeClock(), io.StringIO()
    with plain(clock, stream, interval=60.0) as progress:
        progress.update("espressif/a.csv", 0, None, "waiting")
        clock.now += 2
        progress.update("espressif/a.csv", 0, None, "PARSING")
        clock.now += 2
        progress.update("espressif/a.csv", 500, 2_000, "IMPORTING")
        clock.now += 10
        progress.update("espressif/a.csv", 1_500, 2_000, "IMPORTING")
    assert stream.getvalue().splitlines() == [
        "espressif/a.csv: 0 certificates, waiting",
        "espressif/a.csv: 0 certificates, PARSING",
        "espressif/a.csv: 500/2,000 certificates, IMPORTING",
        "espressif/a.csv: 1,500/2,000 certificates, 100/s, ETA 5 s, IMPORTING",
    ]


def test_unknown_total_shows_the_rate_without_eta() -> None:
    clock, stream = FakeClock(), io.StringIO()
    with plain(clock, stream, interval=5.0, unit="messages") as progress:
        progress.update("dlq", 0, None)
        for second in range(1, 7):
            clock.now += 1
            progress.update("dlq", second * 5, None)
    assert stream.getvalue().splitlines() == [
        "dlq: 0 messages",
        "dlq: 25 messages, 5.0/s",
        "dlq: 30 messages, 5.0/s",
    ]


def test_tick_feeds_the_task_of_its_label() -> None:
    clock, stream = FakeClock(), io.StringIO()
    with plain(clock, stream) as progress:
        tick = progress.tick("generate")
        tick(0, 10)
        clock.now += 2
        tick(10, 10)
    assert stream.getvalue().splitlines()[-1] == "generate: 10/10 certificates in 2 s (5.0/s)"


def test_disabled_writes_nothing() -> None:
    stream = io.StringIO()
    with JobProgress(enabled=False, stream=stream, live=False) as progress:
        progress.update("check", 5, 10)
    assert stream.getvalue() == ""


def test_not_a_terminal_means_plain_lines_uncut() -> None:
    clock, stream = FakeClock(), io.StringIO()
    label = "incoming/" + "a-very-long-manifest-name-" * 6 + ".csv"
    with JobProgress(stream=stream, clock=clock) as progress:  # a StringIO is not a terminal
        progress.update(label, 55, 100)
    assert stream.getvalue() == f"{label}: 55/100 certificates\n"


def test_live_display_shows_rate_and_time_left_columns() -> None:
    clock, stream = FakeClock(), io.StringIO()
    with JobProgress(stream=stream, clock=clock, live=True) as progress:
        progress.update("check", 0, 1_000)
        for _ in range(5):
            clock.now += 1
            progress.update("check", round((clock.now - 1000.0) * 100), 1_000)
    final = stream.getvalue()
    assert "500/1000" in final
    assert "100/s" in final
    assert "0:00:05" in final  # rich's TimeRemainingColumn


def test_rate_column_renders_rich_speed() -> None:
    clock = FakeClock()
    progress = Progress(console=Console(file=io.StringIO()), get_time=clock, disable=True)
    task_id = progress.add_task("x", total=None)
    column = RateColumn()
    assert column.render(progress.tasks[task_id]).plain == ""
    for _ in range(3):
        clock.now += 2
        progress.update(task_id, advance=7_700)
    assert column.render(progress.tasks[task_id]).plain == "3,850/s"


@pytest.mark.parametrize(
    ("rate", "text"), [(3_850.4, "3,850/s"), (12.0, "12/s"), (2.54, "2.5/s"), (0.05, "0.1/s")]
)
def test_format_rate(rate: float, text: str) -> None:
    assert format_rate(rate) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0 s"), (16.4, "16 s"), (207, "3 min 27 s"), (3_720, "1 h 02 min")]
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_check_manifest_reports_both_passes(tmp_path: Path) -> None:
    manifest = tmp_path / "devices.csv"
    generate("espressif", 5, manifest, seed=1)
    seen: list[tuple[int, int | None, str]] = []

    result = check_manifest(
        manifest, progress=lambda done, total, status="": seen.append((done, total, status))
    )

    assert result.total == 5
    survey = [call for call in seen if call[2] == "pass 1 of 2"]
    evaluation = [call for call in seen if call[2] == "pass 2 of 2"]
    assert seen == survey + evaluation
    assert [done for done, _, _ in survey] == [0, 1, 2, 3, 4, 5, 5]
    assert {total for _, total, _ in survey[:-1]} == {None}
    assert survey[-1] == (5, 5, "pass 1 of 2")
    assert [(done, total) for done, total, _ in evaluation] == [(n, 5) for n in range(6)] + [(5, 5)]


@pytest.mark.parametrize(
    ("vendor", "total"), [("espressif", 4), ("generated", 4), ("microchip", 4), ("infineon", 12)]
)
def test_generate_reports_every_certificate(tmp_path: Path, vendor: str, total: int) -> None:
    seen: list[tuple[int, int | None]] = []

    summary = generate(
        vendor, 4, tmp_path / "out", progress=lambda done, total, status="": seen.append((done, total))
    )

    assert summary.count == 4
    done = [count for count, _ in seen]
    assert done == sorted(done)
    assert set(done) == set(range(total + 1))  # Infineon: four per bundle type, three bundle types
    assert {reported for _, reported in seen} == {total}


def test_the_default_local_timeout_scales_with_the_entries_and_the_quota() -> None:
    assert local_timeout(0, LOCAL_IOT_TPS) == TIMEOUT_BASE_SECONDS
    assert local_timeout(20_000, LOCAL_IOT_TPS) == TIMEOUT_BASE_SECONDS + 20_000 / EMULATED_ENTRIES_PER_SECOND
    assert local_timeout(40_000, LOCAL_IOT_TPS) - TIMEOUT_BASE_SECONDS == 2 * (
        local_timeout(20_000, LOCAL_IOT_TPS) - TIMEOUT_BASE_SECONDS
    )
    # Under AWS's default quotas RegisterCertificateWithoutCA (10 calls/s) would be the bound instead.
    slow = {**LOCAL_IOT_TPS, "RegisterCertificateWithoutCA": 2.0}
    assert local_timeout(20_000, slow) == TIMEOUT_BASE_SECONDS + 20_000 / 2.0
