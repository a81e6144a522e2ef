"""The template's dashboard drawn from the metrics of a local run, as one HTML page.

`render_dashboard` draws every widget that has data in the metrics a local run captured
(`thingpress.local.metrics_capture.MetricsCapture`) into one HTML page with an embedded SVG per
widget (matplotlib, SVG canvas with real ``<text>``, no pyplot state). A local run lasts seconds,
not hours, so values are aggregated with the widget's statistic over short bins instead of its 60 s
period (the period itself once the run spans 20 of them). A ``Sum`` is the sum in each bin, as
CloudWatch shows the sum in each period, and its axis says so ("count per 0.5 s"): a run of 120
certificates never shows more than 120 anywhere. Every y axis carries the metric's unit (from the
EMF or sampled unit: ms, count, ...) and the statistic. Widgets of ``AWS/SQS`` and ``AWS/Lambda``
metrics are drawn from the local stand-ins the capture sampled (queue attributes read from moto,
the emulator's invocations) and say so. Widgets without data (nothing emitted in this run, or an
AWS-only metric such as ``ApproximateAgeOfOldestMessage`` or Lambda ``Throttles``) are not drawn:
they are named in one compact list under the charts.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from matplotlib import rc_context
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator

from thingpress.dashboard.circuits import CIRCUIT_STATES, circuit_html, circuit_status_table
from thingpress.dashboard.specs import MetricSpec, WidgetSpec, load_dashboard
from thingpress.local.metrics_capture import MetricDatum, MetricsCapture, SeriesKey

__all__ = [
    "STATUS_AWS_ONLY",
    "STATUS_DATA",
    "STATUS_NO_DATA",
    "PlotLine",
    "plot_line",
    "render_dashboard",
]

STATUS_DATA: Final = "data"
STATUS_NO_DATA: Final = "no-data"
STATUS_AWS_ONLY: Final = "aws-only"

_MIN_BIN_SECONDS: Final = 0.1
_TARGET_BINS: Final = 20
_PIXELS_PER_UNIT: Final = 0.55  # inches per dashboard grid unit (24 units wide)
# CloudWatch unit names as an axis shows them; "None" (a gauge) has no unit of its own.
_UNITS: Final = {
    "Seconds": "s",
    "Milliseconds": "ms",
    "Microseconds": "us",
    "Count": "count",
    "Count/Second": "count/s",
    "Bytes": "bytes",
    "Percent": "%",
    "None": "",
}


# --- aggregation ----------------------------------------------------------------------------------


def _aggregate(values: Sequence[float], stat: str) -> float:
    if stat == "Sum":
        return math.fsum(values)
    if stat == "Maximum":
        return max(values)
    if stat == "Minimum":
        return min(values)
    if stat == "SampleCount":
        return float(len(values))
    if stat.startswith("p") and stat[1:].replace(".", "", 1).isdigit():
        ordered = sorted(values)
        rank = max(0, math.ceil(float(stat[1:]) / 100.0 * len(ordered)) - 1)
        return ordered[rank]
    return statistics.fmean(values)


def _bin_seconds(span: float, period: int) -> float:
    if span >= _TARGET_BINS * period:
        return float(period)
    raw = max(span / _TARGET_BINS, _MIN_BIN_SECONDS)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(float(step * magnitude) for step in (1, 2, 5, 10) if step * magnitude >= raw)


@dataclass(frozen=True)
class PlotLine:
    """One drawn line: bin start times (seconds after ``start``), values, and the raw total and count.

    ``total`` is the sum of the raw values for ``Sum`` statistics, else their maximum; ``units`` are
    the CloudWatch units its values were emitted with.
    """

    label: str
    times: list[float]
    values: list[float]
    total: float
    count: int
    units: frozenset[str] = frozenset()


def plot_line(spec: MetricSpec, data: Sequence[MetricDatum], start: float, width: float) -> PlotLine:
    """Aggregate a series the way its widget draws it.

    Values are grouped in bins and reduced with the metric's statistic: a ``Sum`` is the sum in
    each bin (as CloudWatch shows the sum in each period, so no bin exceeds the total) and empty
    bins count 0; other statistics skip empty bins.

    Args:
        spec: The metric.
        data: Its values.
        start: The time origin (epoch seconds).
        width: The bin width (seconds).

    Returns:
        The line.

    """
    bins: dict[int, list[float]] = {}
    for datum in data:
        bins.setdefault(int((datum.timestamp - start) // width), []).append(datum.value)
    times: list[float] = []
    values: list[float] = []
    for index in range(max(bins) + 1 if bins else 0):
        chunk = bins.get(index)
        if chunk is not None:
            value = _aggregate(chunk, spec.stat)
            times.append(index * width)
            values.append(value)
        elif spec.stat == "Sum":  # nothing counted in this bin; other statistics have no value there
            times.append(index * width)
            values.append(0.0)
    total = (
        math.fsum(d.value for d in data) if spec.stat == "Sum" else max((d.value for d in data), default=0)
    )
    return PlotLine(spec.label, times, values, total, len(data), frozenset(d.unit for d in data))


def _status(widget: WidgetSpec, series: Mapping[SeriesKey, Sequence[MetricDatum]]) -> str:
    if any(series.get(spec.key) for spec in widget.metrics):
        return STATUS_DATA
    if all(spec.aws_published for spec in widget.metrics):
        return STATUS_AWS_ONLY
    return STATUS_NO_DATA


# --- drawing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Panel:
    widget: WidgetSpec
    status: str
    svg: str
    lines: tuple[tuple[MetricSpec, int, float], ...]
    local_standins: bool
    bin_seconds: float


def _svg_style() -> contextlib.AbstractContextManager[None]:
    """Text stays text in the SVG (searchable, testable) and its ids are the same on every run."""
    return rc_context({"svg.fonttype": "none", "svg.hashsalt": "thingpress", "font.family": "DejaVu Sans"})


def _svg(figure: Figure) -> str:
    FigureCanvasSVG(figure)  # attaches the SVG canvas: no pyplot, no global backend
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _unit_names(units: Iterable[str]) -> list[str]:
    return sorted({_UNITS.get(unit, unit.lower()) for unit in units} - {""})


def _y_label(widget: WidgetSpec, units: Sequence[str], width: float) -> str:
    """Return a widget's y-axis label: the unit of its values and the statistic.

    A ``Sum`` is the sum over one bin, so its unit names the bin ("count per 0.5 s").

    Args:
        widget: The widget.
        units: The CloudWatch units of the values drawn (``Count``, ``Milliseconds``...).
        width: The bin width (seconds).

    Returns:
        The label, for example ``count per 0.5 s (Sum)`` or ``ms (p50, p99)``.

    """
    names = _unit_names(units)
    if {spec.name for spec in widget.metrics} == {"CircuitState"}:
        unit = "circuit state"
    else:
        unit = ", ".join(names) or "value"
    stats = sorted({spec.stat for spec in widget.metrics})
    if stats == ["Sum"]:
        per = "min" if width == 60 else f"{width:g} s"
        return f"{unit} per {per} (Sum)"
    return f"{unit} ({', '.join(stats)})"


def _decorate(
    axes: Any, widget: WidgetSpec, *, units: Sequence[str], top: float, width: float, span: float
) -> None:
    axes.set_xlim(-width / 4, max(span, width) + width / 4)  # every widget shows the whole run
    for label, value in widget.horizontal_annotations:
        axes.axhline(value, color="tab:red", linestyle="--", linewidth=1.0)
        axes.annotate(
            label,
            (0.0, value),
            xycoords=("axes fraction", "data"),
            color="tab:red",
            fontsize=8,
            xytext=(3, -10),
            textcoords="offset points",
        )
    if {spec.name for spec in widget.metrics} == {"CircuitState"}:
        axes.yaxis.set_major_locator(FixedLocator(sorted(CIRCUIT_STATES)))
        axes.set_yticklabels([CIRCUIT_STATES[state].replace("_", "-") for state in sorted(CIRCUIT_STATES)])
    elif set(units) <= {"Count", "None"}:  # counts and gauges: whole numbers only
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    if widget.y_min is not None or widget.y_max is not None:
        low = widget.y_min if widget.y_min is not None else 0.0
        high = widget.y_max if widget.y_max is not None else low + 1.0
        margin = (high - low) * 0.08
        axes.set_ylim(low - margin, high + margin)
    else:  # counts, depths, durations: never negative, zero in sight, the top is the highest value
        axes.set_ylim(0, top if top > 0 else 1.0)
    axes.set_ylabel(_y_label(widget, units, width), fontsize=8).set_gid("y-label")
    axes.set_xlabel(f"time since the first metric (s; {width:g} s bins)", fontsize=8).set_gid("x-label")
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)


def _chart(
    widget: WidgetSpec, drawn: Sequence[tuple[MetricSpec, PlotLine]], *, width: float, span: float
) -> str:
    figure = Figure(
        figsize=(max(4.0, widget.width * _PIXELS_PER_UNIT), max(2.6, widget.height * _PIXELS_PER_UNIT)),
        dpi=100,
        layout="constrained",
    )
    axes = figure.add_subplot()
    axes.set_title(widget.title, fontsize=10, loc="left")
    for index, (spec, line) in enumerate(drawn):
        unit = "".join(f" {name}" for name in _unit_names(line.units) if name != "count")
        label = f"{line.label} ({'total' if spec.stat == 'Sum' else 'max'} {line.total:.4g}{unit})"
        (artist,) = axes.step(
            line.times, line.values, where="post", marker="o", markersize=3, linewidth=1.4, label=label
        )
        artist.set_clip_on(False)  # a line at the top of the axis stays whole
        artist.set_gid(f"series-{index}")
    units = sorted({unit for _, line in drawn for unit in line.units})
    top = max(value for _, line in drawn for value in line.values)
    _decorate(axes, widget, units=units, top=top, width=width, span=span)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if all(spec.aws_published for spec in widget.metrics):
        axes.set_xlabel(
            f"{axes.get_xlabel()}\nlocal stand-in: sampled from moto and the ESM emulator", fontsize=8
        )
    return _svg(figure)


def _draw(
    widget: WidgetSpec, series: Mapping[SeriesKey, list[MetricDatum]], start: float, width: float, span: float
) -> _Panel:
    status = _status(widget, series)
    lines: list[tuple[MetricSpec, int, float]] = []
    drawn: list[tuple[MetricSpec, PlotLine]] = []
    for spec in widget.metrics:
        line = plot_line(spec, series.get(spec.key, []), start, width)
        lines.append((spec, line.count, line.total))
        if line.count:
            drawn.append((spec, line))
    local = status == STATUS_DATA and all(spec.aws_published for spec in widget.metrics)
    if status != STATUS_DATA:  # listed under the charts, not drawn
        return _Panel(widget, status, "", tuple(lines), local, width)
    with _svg_style():
        svg = _chart(widget, drawn, width=width, span=span)
    return _Panel(widget, status, svg, tuple(lines), local, width)


# --- the page -------------------------------------------------------------------------------------


def _panel_html(panel: _Panel) -> str:
    image = base64.b64encode(panel.svg.encode("utf-8")).decode("ascii")
    title = html.escape(panel.widget.title, quote=True)
    items = "".join(
        f"<li>{html.escape(spec.namespace)} <b>{html.escape(spec.name)}</b> "
        f"{html.escape(', '.join(f'{k}={v}' for k, v in spec.dimensions))} [{html.escape(spec.stat)}]: "
        + (f"{count} value(s)" if count else "no data")
        + "</li>"
        for spec, count, _total in panel.lines
    )
    note = "local stand-in for an AWS metric" if panel.local_standins else "emitted by the code"
    periods = sorted({spec.period for spec in panel.widget.metrics if spec.stat == "Sum"})
    if periods and periods != [panel.bin_seconds]:
        note += (
            f"; sums per {panel.bin_seconds:g} s bin here, per {', '.join(map(str, periods))} s on CloudWatch"
        )
    return (
        f"<figure class='widget' data-title=\"{title}\" data-status='{panel.status}' "
        f"style='grid-column: span {panel.widget.width}'>"
        f"<img alt=\"{title}\" src='data:image/svg+xml;base64,{image}'>"
        f"<figcaption><b>{title}</b> ({html.escape(note)})<details><summary>metrics</summary><ul>{items}</ul>"
        "</details></figcaption></figure>"
    )


def _empty_html(panels: Sequence[_Panel]) -> str:
    """One compact list of the widgets without data, each with the metrics it would show."""
    if not panels:
        return ""

    def item(panel: _Panel) -> str:
        names = ", ".join(sorted({f"{spec.namespace} {spec.name}" for spec in panel.widget.metrics}))
        aws = " <i>(AWS-only: no local equivalent)</i>" if panel.status == STATUS_AWS_ONLY else ""
        return (
            f"<li data-title=\"{html.escape(panel.widget.title, quote=True)}\" data-status='{panel.status}' "
            f'title="{html.escape(names, quote=True)}">{html.escape(panel.widget.title)}{aws}</li>'
        )

    return f"<div class='no-data'><b>No data for:</b><ul>{''.join(item(p) for p in panels)}</ul></div>"


_STYLE: Final = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
.grid { display: grid; grid-template-columns: repeat(24, 1fr); gap: 12px; }
.widget { margin: 0; border: 1px solid #ddd; padding: 6px; }
.widget img { width: 100%; height: auto; }
figcaption { font-size: 0.8em; }
.no-data { font-size: 0.9em; margin-top: 1em; color: #444; }
.no-data ul { display: inline; padding: 0; margin: 0 0 0 0.4em; }
.no-data li { display: inline; }
.no-data li + li::before { content: " · "; }
table.circuits { border-collapse: collapse; font-size: 0.9em; margin-bottom: 1em; }
table.circuits td, table.circuits th { border: 1px solid #ccc; padding: 2px 8px; }
"""


def render_dashboard(captured: MetricsCapture, template_path: str | Path, out_path: str | Path) -> Path:
    """Draw the template's dashboard from a capture into an HTML page with one SVG per widget.

    The widgets with data are drawn in the dashboard's order (top to bottom, left to right), each as
    wide as on the dashboard; the widgets without data (nothing in this run, or AWS-only metrics the
    run has no stand-in for) are named in one list under them. Raises what `load_dashboard` raises,
    and ``OSError`` when the page cannot be written.

    Args:
        captured: The capture of a local run; its bound stack gives the physical names the dashboard's
            queue and function dimensions resolve to.
        template_path: The template.
        out_path: The page (``.html``); its parent directory is created.

    Returns:
        The written path.

    """
    stack = captured.stack
    widgets = load_dashboard(
        template_path,
        physical_ids=stack.physical_ids,
        parameters=stack.parameters,
        region=stack.region,
        stack_name=stack.stack_name,
    )
    data = [*captured.data, *captured.samples]
    start = min((d.timestamp for d in data), default=time.time())
    span = max((d.timestamp for d in data), default=start) - start
    periods = [spec.period for widget in widgets for spec in widget.metrics] or [60]
    width = _bin_seconds(span, min(periods))
    series = captured.series()
    panels = [
        _draw(widget, series, start, width, span) for widget in sorted(widgets, key=lambda w: (w.y, w.x))
    ]
    summary = (
        f"{len(captured.data)} emitted metric values in {len(captured.emitted())} series, "
        f"{len(captured.samples)} local samples of AWS metrics, over {span:.1f} s "
        f"(bins of {width:g} s; a Sum is the sum in each bin)."
    )
    charts = "".join(_panel_html(panel) for panel in panels if panel.status == STATUS_DATA)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>Thingpress dashboard (local run)</title><style>{_STYLE}</style></head><body>"
        f"<h1>Thingpress dashboard (local run of {html.escape(stack.stack_name)})</h1>"
        f"<p>{html.escape(summary)}</p><h2>Circuits</h2>{circuit_html(circuit_status_table(captured))}"
        f"<h2>Widgets</h2><div class='grid'>{charts}</div>"
        f"{_empty_html([panel for panel in panels if panel.status != STATUS_DATA])}"
        "</body></html>"
    )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
