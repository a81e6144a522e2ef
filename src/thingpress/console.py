"""Terminal output for the ``thingpress`` CLI: one-line errors, JSON, progress bars and tables.

Human-readable output goes through rich; progress always goes to stderr so that ``--json`` output on
stdout stays exactly one JSON document.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table


class CliError(Exception):
    """A user or environment error: printed as one line on stderr, never as a traceback.

    ``exit_code`` is 2 (usage or environment) unless told otherwise.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        """Create the error with its message and exit code."""
        super().__init__(message)
        self.exit_code = exit_code


_PIPE_WIDTH = 160


def out_console(file: TextIO | None = None) -> Console:
    """Return a rich console writing to ``file`` (default stdout); 160 columns wide when not a terminal."""
    stream = file or sys.stdout
    width = None if stream.isatty() else _PIPE_WIDTH
    return Console(file=stream, highlight=False, width=width)


def err_console() -> Console:
    """Return a rich console writing to stderr (progress and notes)."""
    return Console(stderr=True, highlight=False)


def print_json(document: Any, file: TextIO | None = None) -> None:
    """Write ``document`` as one JSON document (indented, sorted keys) and a newline to ``file``."""
    stream = file or sys.stdout
    stream.write(json.dumps(document, indent=2, sort_keys=True, default=str))
    stream.write("\n")
    stream.flush()


class JobProgress:
    """Live progress bars, one per job, on stderr.

    Use as a context manager; ``update(label, done, total)`` creates the bar on first use. When
    ``enabled`` is false every call is a no-op (``--json`` mode).
    """

    def __init__(self, *, enabled: bool = True, console: Console | None = None) -> None:
        """Create the bars on ``console`` (default: stderr); nothing shows until entered."""
        self._enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]:<22}"),
            TimeElapsedColumn(),
            console=console or err_console(),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> JobProgress:
        """Start the live display (when enabled) and return self."""
        if self._enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the live display."""
        if self._enabled:
            self._progress.stop()

    def update(self, label: str, done: int, total: int | None, status: str = "") -> None:
        """Set the bar of ``label`` to ``done`` of ``total`` (None while unknown) and its status text."""
        if not self._enabled:
            return
        task = self._tasks.get(label)
        if task is None:
            task = self._progress.add_task(label, total=total, status=status)
            self._tasks[label] = task
        self._progress.update(task, completed=done, total=total, status=status)


@contextmanager
def spinner(message: str, *, enabled: bool = True) -> Iterator[None]:
    """Show ``message`` with a spinner on stderr while the body runs (nothing when disabled)."""
    if not enabled:
        yield
        return
    with err_console().status(message):
        yield


@contextmanager
def handler_logs_to_stderr(level: int = logging.WARNING) -> Iterator[None]:
    """Send log records that would go to stdout to stderr instead, at ``level`` and above, in the block.

    The local stack runs the Lambda handlers in this process, and Powertools logs to the stdout of
    the moment its logger was made; this keeps stdout for the command's own output (one JSON
    document with ``--json``). Every stream handler not already writing to stderr is redirected.
    """
    loggers = [logging.getLogger()]
    loggers += [item for item in logging.root.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    swapped: list[tuple[logging.StreamHandler[Any], Any, int]] = []
    for logger in loggers:
        for handler in logger.handlers:
            if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
                continue
            if handler.stream not in (sys.stderr, sys.__stderr__):
                swapped.append((handler, handler.stream, handler.level))
                _swap_stream(handler, sys.stderr)
                handler.setLevel(max(level, handler.level))
    try:
        yield
    finally:
        for handler, stream, previous in swapped:
            _swap_stream(handler, stream)
            handler.setLevel(previous)


def _swap_stream(handler: logging.StreamHandler[Any], stream: Any) -> None:
    # Unlike StreamHandler.setStream, do not flush the old stream: it may be closed already.
    handler.acquire()
    try:
        handler.stream = stream
    finally:
        handler.release()


def jobs_table(reports: Sequence[Mapping[str, Any]], *, title: str = "Jobs") -> Table:
    """Return a table with one row per job report: manifest, vendor, status and the counts."""
    table = Table(title=title)
    for column in ("manifest", "vendor", "status"):
        table.add_column(column)
    for column in ("total", "imported", "failed", "duplicates"):
        table.add_column(column, justify="right")
    for report in reports:
        table.add_row(
            str(report.get("key", "")),
            str(report.get("vendor") or ""),
            str(report.get("status", "")),
            _count(report.get("total")),
            _count(report.get("imported")),
            _count(report.get("failed")),
            _count(report.get("duplicates")),
        )
    return table


def _count(value: object) -> str:
    return "-" if value is None else str(value)


def failures_table(failures: Sequence[Mapping[str, Any]], *, title: str = "Failures") -> Table:
    """Return a table of failed entries: locator and reason (and the manifest when present)."""
    table = Table(title=title)
    with_key = any("key" in failure for failure in failures)
    if with_key:
        table.add_column("manifest")
    table.add_column("locator")
    table.add_column("reason", overflow="fold")
    for failure in failures:
        locator, reason = str(failure.get("locator", "")), str(failure.get("reason", ""))
        # Pipeline reasons start with the locator (one sentence per entry); it has its own column here.
        reason = reason.removeprefix(f"{locator}: ")
        cells = [locator, reason]
        if with_key:
            cells.insert(0, str(failure.get("key", "")))
        table.add_row(*cells)
    return table


def things_table(things: Sequence[Mapping[str, Any]], *, title: str = "IoT inventory") -> Table:
    """Return a table of things read back from IoT: name, certificate, policies, groups and type."""
    table = Table(title=title)
    table.add_column("thing")
    table.add_column("certificate")
    table.add_column("policies")
    table.add_column("thing groups")
    table.add_column("thing type")
    for thing in things:
        certificate = str(thing.get("certificate_id") or "-")
        table.add_row(
            str(thing.get("thing_name", "")),
            certificate[:16] + "…" if len(certificate) > 16 else certificate,
            ", ".join(thing.get("policies") or []) or "-",
            ", ".join(thing.get("thing_groups") or []) or "-",
            str(thing.get("thing_type") or "-"),
        )
    return table


def circuits_table(circuits: Mapping[str, Any], *, title: str = "Circuit breakers") -> Table:
    """Return a table of circuit-breaker states: one row per circuit, one column per reported field.

    ``circuits`` maps a circuit name to a mapping of fields (or to a plain value, shown as ``state``).
    """
    rows = {
        name: value if isinstance(value, Mapping) else {"state": value} for name, value in circuits.items()
    }
    fields: list[str] = []
    for value in rows.values():
        fields.extend(str(key) for key in value if str(key) not in fields)
    table = Table(title=title)
    table.add_column("circuit")
    for field in fields:
        table.add_column(field)
    for name in sorted(rows):
        table.add_row(name, *(str(rows[name].get(field, "")) for field in fields))
    if not rows:
        table.caption = "no circuit has seen a call"
    return table
