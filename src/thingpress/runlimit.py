"""The time limit of a local run (``thingpress local import --timeout``) and what hitting it says.

By default the limit scales with the entries the run's jobs have (`local_timeout`); it is light to
import, so the CLI can show the formula in ``--help`` without loading the emulator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from thingpress.console import CliError
from thingpress.progress import format_seconds

TIMEOUT_BASE_SECONDS = 120.0
"""The default limit before any entry is known: start-up, parsing and the reports."""

EMULATED_ENTRIES_PER_SECOND = 5.0
"""The slowest rate the embedded stack imports entries at, with margin: 8 to 15 a second were measured
for 20,000 entries on two cores shared with a load average of 10 to 25."""

PER_ENTRY_APIS = ("RegisterCertificateWithoutCA", "CreateThing", "AttachThingPrincipal")
"""The IoT APIs the importer calls once for every entry."""


def local_timeout(entries: int, iot_tps: Mapping[str, float]) -> float:
    """Return the default time limit of a local run of ``entries`` entries, in seconds.

    ``TIMEOUT_BASE_SECONDS + entries / min(slowest per-entry IoT quota, EMULATED_ENTRIES_PER_SECOND)``.
    With the local quotas (1,000 calls per second) the emulator is the bound: 120 s plus 200 ms an
    entry, 4,120 s for 20,000 entries.

    Args:
        entries: The entries known so far (of every job of the run).
        iot_tps: The IoT quotas of the run, in calls per second per API.

    Returns:
        The limit in seconds.

    """
    quota = min(iot_tps[api] for api in PER_ENTRY_APIS)
    return TIMEOUT_BASE_SECONDS + entries / min(quota, EMULATED_ENTRIES_PER_SECOND)


TIMEOUT_HELP = (
    "stop waiting after SECONDS, print the partial report and exit 2 (default: "
    f"{TIMEOUT_BASE_SECONDS:.0f} + entries / {EMULATED_ENTRIES_PER_SECOND:.0f}, the emulator's slowest "
    "import rate per second; the local IoT quotas are lifted to 1,000 calls/s, so they are not the bound)"
)
"""The ``--timeout`` help of ``local import``: the formula of `local_timeout`."""


class LocalRunTimeout(CliError):
    """The local pipeline was still busy at the time limit; ``reports`` are the partial reports."""

    def __init__(self, message: str, reports: list[dict[str, Any]]) -> None:
        """Keep the message (exit code 2) and the partial reports."""
        super().__init__(message)
        self.reports = reports


def timeout_message(elapsed: float, timeout: float | None, pending: Sequence[int | None]) -> str:
    """Return the one sentence of a local run that hit its time limit.

    Args:
        elapsed: The seconds the run took.
        timeout: The ``--timeout`` given; None for the default limit.
        pending: The entries not yet settled of each unfinished job (None while unknown).

    Returns:
        The sentence.

    """
    known = [count for count in pending if count is not None]
    what = f"{sum(known):,} entries still pending" if len(known) == len(pending) else "entries still pending"
    limit = "its --timeout" if timeout is not None else "its default time limit"
    return (
        f"The local pipeline stopped at {limit} after {format_seconds(elapsed)} with {what}; "
        "the partial report shows what was imported so far (raise --timeout to wait longer)."
    )
