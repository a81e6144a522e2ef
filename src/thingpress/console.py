"""Terminal output for the ``thingpress`` CLI: one-line errors, JSON, spinners and tables.

Human-readable output goes through rich; spinners (and `thingpress.progress`) always go to stderr so
that ``--json`` output on stdout stays exactly one JSON document. Output for people puts the summary
first, groups failures by reason (`thingpress.failures`), shows at most ``ROW_LIMIT`` rows of a long
list unless told ``--all``, and prints every text literally (`lit`): nothing from a manifest is read
as rich markup.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from layer_utils.schema import COUNTS
from thingpress.failures import group_failures


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
    """Return a rich console writing to ``file`` (default stdout).

    It is as wide as the terminal, or ``$COLUMNS``, else 160 columns when not a terminal. Rich markup
    is off: untrusted text (anything from a manifest, a vendor or an uploader) prints literally.
    """
    stream = file or sys.stdout
    columns = os.environ.get("COLUMNS", "").strip()
    width = None if stream.isatty() or columns.isdigit() else _PIPE_WIDTH
    return Console(file=stream, highlight=False, markup=False, emoji=False, width=width)


def err_console() -> Console:
    """Return a rich console writing to stderr (progress and notes)."""
    return Console(stderr=True, highlight=False)


def print_json(document: Any, file: TextIO | None = None) -> None:
    """Write ``document`` as one JSON document (indented, sorted keys) and a newline to ``file``."""
    stream = file or sys.stdout
    stream.write(json.dumps(document, indent=2, sort_keys=True, default=str))
    stream.write("\n")
    stream.flush()


@contextmanager
def spinner(message: str, *, enabled: bool = True) -> Iterator[None]:
    """Show ``message`` with a spinner on stderr while the body runs (nothing when disabled)."""
    if not enabled:
        yield
        return
    with err_console().status(message):
        yield


_VERBOSE_LOGS: ContextVar[bool] = ContextVar("thingpress_verbose_logs", default=False)


@contextmanager
def handler_logs(*, verbose: bool) -> Iterator[None]:
    """Keep the handlers' logs out of a CLI command's output unless ``verbose`` (``-v``).

    Without ``verbose`` every log record is dropped in the block (``logging.disable``), including those
    of loggers created inside it. With ``verbose`` the records go to stderr at the loggers' own levels:
    the loggers that exist now are redirected here, and `handler_logs_to_stderr` (which the commands
    call after importing the handlers) then redirects at every level too.
    """
    token = _VERBOSE_LOGS.set(verbose)
    previous = logging.root.manager.disable
    if not verbose:
        logging.disable(logging.CRITICAL)
    try:
        with handler_logs_to_stderr() if verbose else nullcontext():
            yield
    finally:
        logging.disable(previous)
        _VERBOSE_LOGS.reset(token)


@contextmanager
def handler_logs_to_stderr(level: int = logging.WARNING) -> Iterator[None]:
    """Send log records that would go to stdout to stderr instead, at ``level`` and above, in the block.

    The local stack runs the Lambda handlers in this process, and Powertools logs to the stdout of
    the moment its logger was made; this keeps stdout for the command's own output (one JSON
    document with ``--json``). Every stream handler not already writing to stderr is redirected.
    Inside ``handler_logs(verbose=True)`` (``-v``) every level passes, whatever ``level`` says.
    """
    if _VERBOSE_LOGS.get():
        level = logging.NOTSET
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


ROW_LIMIT = 10
"""How many rows of a long list (inventory, failed entries) people see without ``--all``."""

_LOCATORS_SHOWN = 3


def lit(value: object) -> Text:
    """Return ``value`` as literal text for a table cell or ``print``: never read as rich markup."""
    return Text("" if value is None else str(value))


def _count(value: object) -> str:
    return "-" if value is None else str(value)


def counts_text(document: Mapping[str, Any], *, imported_word: str = "imported") -> str:
    """Return the four counts of a report or ``--json`` document as one phrase.

    For example ``120 entries: 115 imported, 5 failed, 0 duplicates``.
    """
    total = document.get("total")
    entries = "? entries" if total is None else f"{total} {'entry' if total == 1 else 'entries'}"
    return (
        f"{entries}: {_count(document.get('imported'))} {imported_word}, "
        f"{_count(document.get('failed'))} failed, {_count(document.get('duplicates'))} duplicates"
    )


def _table(title: object | None = None, caption: object | None = None) -> Table:
    return Table(
        title=None if title is None else lit(title), caption=None if caption is None else lit(caption)
    )


def _more(shown: int, total: int, noun: str) -> str | None:
    if shown >= total:
        return None
    return f"{shown} of {total} {noun} shown; --all shows every one."


def jobs_table(reports: Sequence[Mapping[str, Any]], *, title: str = "Jobs") -> Table:
    """Return a table with one row per job report: manifest, vendor, status and the four counts."""
    table = _table(title)
    table.add_column("manifest", overflow="fold")
    table.add_column("vendor", overflow="fold")
    table.add_column("status", overflow="fold")
    for column in COUNTS:
        table.add_column(column, justify="right")
    for report in reports:
        table.add_row(
            lit(report.get("key", "")),
            lit(report.get("vendor") or ""),
            lit(report.get("status", "")),
            *(lit(_count(report.get(column))) for column in COUNTS),
        )
    return table


def failures_table(
    failures: Sequence[Mapping[str, Any]], *, title: str = "Failed entries", limit: int | None = None
) -> Table:
    """Return a table of failed entries: locator and reason (and the manifest when present).

    Args:
        failures: The entries (``locator``, ``reason``, maybe ``key``).
        title: The title.
        limit: Show at most this many rows (None: every one); a caption says how many were left out.

    Returns:
        The table.

    """
    shown = failures if limit is None else failures[:limit]
    table = _table(title, _more(len(shown), len(failures), "failed entries"))
    with_key = any("key" in failure for failure in failures)
    if with_key:
        table.add_column("manifest", overflow="fold")
    table.add_column("locator", overflow="fold")
    table.add_column("reason", overflow="fold", ratio=3)
    for failure in shown:
        locator, reason = str(failure.get("locator", "")), str(failure.get("reason", ""))
        # Pipeline reasons start with the locator (one sentence per entry); it has its own column here.
        cells = [lit(locator), lit(reason.removeprefix(f"{locator}: "))]
        if with_key:
            cells.insert(0, lit(failure.get("key", "")))
        table.add_row(*cells)
    return table


def print_failure_groups(
    console: Console, failures: Sequence[Mapping[str, Any]], *, title: str = "Failed entries by reason"
) -> None:
    """Print failed entries grouped by reason: count, label, a few locators, one reason in full, hint.

    Args:
        console: Where to print.
        failures: The failed entries (``locator`` and ``reason``).
        title: The heading.

    """
    if not failures:
        return
    console.print(lit(f"{title}:"))
    for group in group_failures(failures):
        console.print(lit(f"  {group.count} {'entry' if group.count == 1 else 'entries'}: {group.label}"))
        shown = ", ".join(group.locators[:_LOCATORS_SHOWN])
        if group.count > _LOCATORS_SHOWN:
            shown += f" and {group.count - _LOCATORS_SHOWN} more"
        _print_indented(console, shown)
        if group.example != group.label:
            _print_indented(console, f"e.g. {group.locators[0]}: {group.example}")
        if group.hint:
            _print_indented(console, f"hint: {group.hint}")


def _print_indented(console: Console, text: str, indent: int = 6) -> None:
    """Print ``text`` literally, wrapped to the console's width with every line indented."""
    margin = " " * indent
    wrapped = textwrap.fill(
        text, width=max(console.width, indent + 20), initial_indent=margin, subsequent_indent=margin
    )
    console.print(lit(wrapped), soft_wrap=True)


def things_table(
    things: Sequence[Mapping[str, Any]], *, title: str = "IoT inventory", limit: int | None = ROW_LIMIT
) -> Table:
    """Return a table of things read back from IoT: name, certificate, policies, groups and type.

    ``limit`` caps the rows (None: every thing); a caption says how many were left out.
    """
    shown = things if limit is None else things[:limit]
    table = _table(title, _more(len(shown), len(things), "things"))
    for column in ("thing", "certificate", "policies", "thing groups", "thing type"):
        table.add_column(column, overflow="fold")
    for thing in shown:
        certificate = str(thing.get("certificate_id") or "-")
        table.add_row(
            lit(thing.get("thing_name", "")),
            lit(certificate[:16] + "…" if len(certificate) > 16 else certificate),
            lit(", ".join(thing.get("policies") or []) or "-"),
            lit(", ".join(thing.get("thing_groups") or []) or "-"),
            lit(thing.get("thing_type") or "-"),
        )
    return table


def not_closed(circuits: Mapping[str, Any]) -> dict[str, Any]:
    """Return the circuits whose state is not ``closed`` (a plain value counts as the state)."""
    return {
        name: value
        for name, value in circuits.items()
        if (value.get("state") if isinstance(value, Mapping) else value) != "closed"
    }


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
    table = _table(title, None if rows else "no circuit has seen a call")
    table.add_column("circuit", overflow="fold")
    for field in fields:
        table.add_column(field, overflow="fold")
    for name in sorted(rows):
        table.add_row(lit(name), *(lit(rows[name].get(field, "")) for field in fields))
    return table


def print_circuits(console: Console, circuits: Mapping[str, Any]) -> None:
    """Print the circuit breakers that are not closed (nothing when every one is closed)."""
    troubled = not_closed(circuits)
    if troubled:
        console.print(circuits_table(troubled, title="Circuit breakers not closed"))
