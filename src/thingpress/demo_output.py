"""What ``thingpress demo`` shows: the run's outcome as one JSON document, or for people.

People see the verdict first, the jobs, the entries not imported grouped by reason, at most
``ROW_LIMIT`` things of the inventory (every one with ``--all``), the circuit breakers that are not
closed, and the next steps: the dashboard and how to run one's own and the real manifests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layer_utils.schema import DUPLICATE_ENTRIES, FAILURES, SCHEMA, sum_counts
from thingpress.console import (
    ROW_LIMIT,
    failures_table,
    jobs_table,
    lit,
    out_console,
    print_circuits,
    print_failure_groups,
    things_table,
)


@dataclass
class DemoRun:
    """What a demo run produced: the job reports, the IoT inventory, the circuits and the dashboard.

    ``lifecycle`` tells one manifest's lifecycle (import, reconcile, undo, reconcile:
    `thingpress.demo.demo_lifecycle`). ``unexpected`` lists how the jobs differ from what the
    generated manifests must produce (empty when every job ended with exactly the expected counts
    and things).
    """

    reports: list[dict[str, Any]]
    things: list[dict[str, Any]]
    circuits: dict[str, Any]
    unexpected: list[str]
    dashboard: Path | None = None
    lifecycle: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the ``thingpress demo --json`` document: the summed counts, each job's report, things."""
        return {
            "schema": SCHEMA,
            "ok": not self.unexpected,
            "unexpected": list(self.unexpected),
            **sum_counts(self.reports),
            "jobs": self.reports,
            "things": self.things,
            "circuits": self.circuits,
            "dashboard": None if self.dashboard is None else str(self.dashboard),
            "lifecycle": list(self.lifecycle),
        }


NEXT_STEPS = (
    "Check a manifest of your own offline:   thingpress check MANIFEST",
    "Import it on the local stack:           thingpress local import MANIFEST --policy P",
    'Real vendor manifests, with the flags each needs: ../shared/manifests and README, "The first hour"',
    "  thingpress check ../shared/manifests/espressif/manifest-espressif.csv",
    "  thingpress check ../shared/manifests/microchip/ECC608C-TNGTLSU-B.json "
    "--verifiers ../shared/manifests/microchip/verifiers",
)
"""What the demo suggests doing next (after the dashboard's path)."""


def print_demo(run: DemoRun, *, show_all: bool = False) -> None:
    """Print a demo run for people: the verdict first, the jobs, what was not imported, the inventory.

    Then the circuit breakers that are not closed, and the next steps.
    """
    console = out_console()
    if run.unexpected:
        console.print(lit(f"Demo FAILED: {len(run.unexpected)} unexpected results."))
        for problem in run.unexpected:
            console.print(lit(f"  unexpected: {problem}"))
    else:
        totals = sum_counts(run.reports)
        console.print(
            lit(
                f"Demo OK: {len(run.reports)} manifests, {totals['imported']} devices imported, "
                f"{totals['failed']} bad entries rejected as expected."
            )
        )
    console.print(jobs_table(run.reports, title="Jobs"))
    rejected = [
        {"key": report.get("key"), **failure}
        for report in run.reports
        for failure in [*(report.get(FAILURES) or []), *(report.get(DUPLICATE_ENTRIES) or [])]
    ]
    print_failure_groups(
        console, rejected, title="Entries not imported (the bad ones are expected), by reason"
    )
    if show_all and rejected:
        console.print(failures_table(rejected, title="Entries not imported"))
    console.print(
        things_table(
            run.things,
            title=f"IoT inventory ({len(run.things)} things, read back from IoT)",
            limit=None if show_all else ROW_LIMIT,
        )
    )
    print_circuits(console, run.circuits)
    for line in run.lifecycle:
        console.print(lit(line))
    console.print(lit("Next steps:"))
    if run.dashboard is not None:
        console.print(lit(f"  Open the dashboard drawn from this run's metrics: {run.dashboard}"))
    for step in NEXT_STEPS:
        console.print(lit(f"  {step}"))
