"""The circuits of a local run as its captured metrics report them: a summary and its HTML table."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any, Final

from thingpress.local.metrics_capture import MetricsCapture

__all__ = ["CIRCUIT_STATES", "circuit_html", "circuit_status_table"]

CIRCUIT_STATES: Final = {0: "closed", 1: "half_open", 2: "open"}
"""The ``CircuitState`` gauge's values, by name."""


def circuit_status_table(captured: MetricsCapture) -> dict[str, dict[str, Any]]:
    """Summarise the circuits as the captured metrics report them, one entry per operation.

    Args:
        captured: The capture of a run.

    Returns:
        Per circuit name (the ``Operation`` dimension), sorted by name: ``state`` (the last
        ``CircuitState`` gauge as ``closed``/``half_open``/``open``, or None when no gauge was
        emitted), ``worst_state`` (the highest gauge value seen, as a name), ``opened`` and ``closed``
        (how many ``CircuitOpened``/``CircuitClosed`` were emitted), ``reports`` (how many gauge
        values) and ``last_reported`` (epoch seconds of the last metric).

    """
    rows: dict[str, dict[str, Any]] = {}
    worst: dict[str, int] = {}
    for datum in sorted(captured.data, key=lambda d: d.timestamp):
        operation = datum.dimension_map.get("Operation")
        if operation is None or datum.name not in ("CircuitState", "CircuitOpened", "CircuitClosed"):
            continue
        row = rows.setdefault(
            operation,
            {
                "state": None,
                "worst_state": None,
                "opened": 0,
                "closed": 0,
                "reports": 0,
                "last_reported": None,
            },
        )
        row["last_reported"] = datum.timestamp
        if datum.name == "CircuitOpened":
            row["opened"] += int(datum.value)
        elif datum.name == "CircuitClosed":
            row["closed"] += int(datum.value)
        else:
            row["state"] = CIRCUIT_STATES.get(int(datum.value), f"{datum.value:g}")
            row["reports"] += 1
            worst[operation] = max(worst.get(operation, 0), int(datum.value))
            row["worst_state"] = CIRCUIT_STATES.get(worst[operation], str(worst[operation]))
    return dict(sorted(rows.items()))


def circuit_html(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """Return the summary of `circuit_status_table` as an HTML table (or a sentence when empty)."""
    if not rows:
        return "<p>No circuit metrics were emitted.</p>"
    header = "".join(
        f"<th>{name}</th>"
        for name in ("operation", "last state", "worst state", "opened", "closed", "gauge reports")
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(value))}</td>"
            for value in (
                name,
                row["state"],
                row["worst_state"],
                row["opened"],
                row["closed"],
                row["reports"],
            )
        )
        + "</tr>"
        for name, row in rows.items()
    )
    return f"<table class='circuits'><tr>{header}</tr>{body}</table>"
