"""Progress of long commands on stderr, with rate and ETA: live bars on a terminal, plain lines otherwise.

`JobProgress` shows one task per label (a manifest, a queue). On a terminal it is a rich live display
(bar, count, rate, time left); when stderr is not a terminal (CI logs, ``2> file``) it writes one
plain line per task every ``interval`` seconds, when a task's status changes and when it finishes,
for example ``check: 40,000/100,000 certificates, 3,850/s, ETA 16 s``. Rate and time left are rich's
own estimates (``Task.speed`` over the last 30 s, ``Task.time_remaining``) in both modes; the clock
is injectable, so tests need no sleeping. Progress never touches stdout: ``--json`` output stays one
document.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

PLAIN_INTERVAL_SECONDS = 10.0
"""How often a plain progress line is written for a task that is still moving."""

_FORWARD_SECONDS = 0.1


class Tick(Protocol):
    """A progress callback: ``done`` of ``total`` (None while unknown) and a short status."""

    def __call__(self, done: int, total: int | None, status: str = "") -> None:
        """Report the progress so far."""


def format_rate(per_second: float) -> str:
    """Return a rate for people: ``3,850/s``, or ``2.5/s`` below ten a second."""
    return f"{per_second:,.0f}/s" if per_second >= 10 else f"{per_second:.1f}/s"


def format_seconds(seconds: float) -> str:
    """Return a duration for people: ``16 s``, ``3 min 27 s``, ``1 h 02 min``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RateColumn(ProgressColumn):
    """A rich column with the task's rate as ``3,850/s`` (rich's own estimate, ``Task.speed``)."""

    def render(self, task: Task) -> Text:
        """Render the rate, or nothing while it is unknown."""
        speed = task.finished_speed or task.speed
        return Text(format_rate(speed) if speed else "", style="progress.data.speed")


@dataclass
class _Shown:
    """What the last plain line of a task said, and when it was written."""

    at: float
    done: int
    total: int | None
    status: str


class JobProgress:
    """Progress of one task per label on stderr: live bars on a terminal, else periodic plain lines.

    Use as a context manager; ``update(label, done, total, status)`` creates the task on first use and
    is cheap enough to call for every entry (rich sees at most ten updates a second per task). A count
    that goes down starts the task afresh (a second pass): its clock, rate and time left restart. When
    ``enabled`` is false every call is a no-op. On leaving, every task's last state is shown.

    Args:
        enabled: Show anything at all.
        unit: What is counted, for people (``certificates``, ``messages``).
        stream: Where progress goes (default stderr).
        clock: Seconds (monotonic); drives rates, time left and the plain-line interval.
        interval: Seconds between two plain lines of a task that is still moving.
        live: Force the live display (True) or plain lines (False); default: live when ``stream`` is a
            terminal.

    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        unit: str = "certificates",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = PLAIN_INTERVAL_SECONDS,
        live: bool | None = None,
    ) -> None:
        """Set up the display; nothing shows until entered."""
        self._enabled = enabled
        self._unit = unit
        self._stream = stream or sys.stderr
        self._clock = clock
        self._interval = interval
        console = Console(file=self._stream, highlight=False)
        self._live = console.is_terminal if live is None else live
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit, markup=False),
            RateColumn(),
            TimeRemainingColumn(elapsed_when_finished=True),
            TextColumn("{task.fields[status]}", markup=False),
            console=console,
            get_time=clock,
            disable=not (enabled and self._live),
            redirect_stdout=False,  # stdout is the command's own (one JSON document with --json)
            redirect_stderr=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._latest: dict[str, tuple[int, int | None, str]] = {}
        self._forwarded: dict[str, float] = {}
        self._shown: dict[str, _Shown] = {}

    def __enter__(self) -> JobProgress:
        """Start the live display (when enabled and live) and return self."""
        if self._enabled and self._live:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Show every task's last state and stop the live display."""
        if not self._enabled:
            return
        for label in self._tasks:
            self._forward(label)
            if not self._live:
                self._line_if_changed(label)
        if self._live:
            self._progress.stop()

    def tick(self, label: str) -> Tick:
        """Return a callback that updates the task of ``label`` (for domain code that takes a `Tick`)."""

        def report(done: int, total: int | None, status: str = "") -> None:
            self.update(label, done, total, status)

        return report

    def update(self, label: str, done: int, total: int | None, status: str = "") -> None:
        """Set the task of ``label`` to ``done`` of ``total`` (None while unknown) with a status text."""
        if not self._enabled:
            return
        state = (done, total, status)
        previous = self._latest.get(label)
        self._latest[label] = state
        if label not in self._tasks:
            self._tasks[label] = self._progress.add_task(label, total=total, completed=done, status=status)
            self._forwarded[label] = self._clock()
        elif (
            previous is not None
            and (previous[1], previous[2]) == (total, status)
            and (total is None or done < total)
            and self._clock() - self._forwarded[label] < _FORWARD_SECONDS
        ):
            return
        self._forward(label, restart=previous is not None and done < previous[0])
        if not self._live:
            self._plain(label)

    def _forward(self, label: str, *, restart: bool = False) -> None:
        done, total, status = self._latest[label]
        if restart:
            self._progress.reset(self._tasks[label], total=total, completed=done, status=status)
        else:
            self._progress.update(self._tasks[label], completed=done, total=total, status=status)
        self._forwarded[label] = self._clock()

    def _plain(self, label: str) -> None:
        done, total, status = self._latest[label]
        shown = self._shown.get(label)
        finished = total is not None and done >= total
        if (
            shown is None
            or status != shown.status
            or (finished and (shown.done, shown.total) != (done, total))
            or self._clock() - shown.at >= self._interval
        ):
            self._write_line(label)

    def _line_if_changed(self, label: str) -> None:
        shown = self._shown.get(label)
        if shown is None or (shown.done, shown.total, shown.status) != self._latest[label]:
            self._write_line(label)

    def _write_line(self, label: str) -> None:
        done, total, status = self._latest[label]
        self._stream.write(self.describe(label) + "\n")
        self._stream.flush()
        self._shown[label] = _Shown(self._clock(), done, total, status)

    def describe(self, label: str) -> str:
        """Return the plain line of a task: count, rate and time left (or time taken), and status.

        For example ``check: 40,000/100,000 certificates, 3,850/s, ETA 16 s`` while it runs and
        ``check: 100,000/100,000 certificates in 26 s (3,846/s)`` when done.
        """
        task = self._progress.tasks[self._tasks[label]]
        done, total, status = self._latest[label]
        count = f"{done:,}" if total is None else f"{done:,}/{total:,}"
        parts = [f"{label}: {count} {self._unit}"]
        if total is not None and done >= total:
            elapsed = task.finished_time if task.finished_time is not None else task.elapsed or 0.0
            parts[0] += f" in {format_seconds(elapsed)}"
            if done and elapsed:
                parts[0] += f" ({format_rate(done / elapsed)})"
        else:
            speed = task.speed
            if speed:
                parts.append(format_rate(speed))
            remaining = task.time_remaining
            if total is not None and remaining is not None:
                parts.append(f"ETA {format_seconds(remaining)}")
        if status:
            parts.append(status)
        return ", ".join(parts)
