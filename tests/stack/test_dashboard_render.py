"""The dashboard drawn locally: one SVG chart per widget with data, the empty widgets in one list.

The full render uses the captured run of test_dashboard_metrics (real handlers on the local stack,
a circuit that opens and closes); the smaller tests use hand-made captures and templates. The charts
are read back from the page as a browser gets them: the SVGs' axis texts (units, tick values) are
parsed, and, where a Chromium is installed, the page is rendered to pixels.
"""

from __future__ import annotations

import base64
import html
import re
import shutil
import subprocess
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from test_dashboard_metrics import (
    IMPORTER,
    PROVIDER,
    SWEEPER,
    TEMPLATE,
    THROTTLED_CIRCUIT,
    Scenario,
    run_scenario,
)
from thingpress.dashboard import (
    STATUS_AWS_ONLY,
    STATUS_DATA,
    STATUS_NO_DATA,
    DashboardError,
    MetricSpec,
    WidgetSpec,
    circuit_status_table,
    load_dashboard,
    plot_line,
    render_dashboard,
)
from thingpress.local.metrics_capture import LOCAL_SOURCE, MetricDatum, MetricsCapture

FIGURE = re.compile(
    r"<figure class='widget' data-title=\"(?P<title>[^\"]*)\" data-status='(?P<status>[^']*)'[^>]*>"
    r"<img alt=\"[^\"]*\" src='data:image/svg\+xml;base64,(?P<svg>[^']*)'>"
)
EMPTY_LIST = re.compile(r"<div class='no-data'><b>No data for:</b><ul>(?P<items>.*?)</ul></div>")
EMPTY_ITEM = re.compile(r"<li data-title=\"(?P<title>[^\"]*)\" data-status='(?P<status>[^']*)'")
SVG = "{http://www.w3.org/2000/svg}"
# Widgets the local run has no stand-in for: CloudWatch computes them from SQS/Lambda internals.
AWS_ONLY = {"Age of oldest message (seconds)", "Function throttles"}
UNIT = re.compile(r"^(count per ([\d.]+ s|min) \(Sum\)|(count|ms|circuit state) \([\w, ]+\))$")


@dataclass(frozen=True)
class Chart:
    """What a drawn chart shows: its axis labels, y tick labels and how many series it draws."""

    status: str
    y_label: str
    x_label: str
    y_ticks: list[str]
    legend: list[str]
    series: int

    @property
    def y_max(self) -> float:
        """The highest numeric y tick."""
        return max(float(tick) for tick in self.y_ticks)


def _texts(element: ET.Element) -> list[str]:
    return ["".join(text.itertext()).strip() for text in element.iter(f"{SVG}text")]


def parse_chart(status: str, svg: str) -> Chart:
    """Read a chart's SVG as matplotlib wrote it: text kept as ``<text>``, our gids on the artists."""
    root = ET.fromstring(svg)
    groups = {group.get("id"): group for group in root.iter(f"{SVG}g")}
    y_axis = groups["matplotlib.axis_2"]
    ticks = [" ".join(_texts(g)) for g in y_axis.iter(f"{SVG}g") if (g.get("id") or "").startswith("ytick_")]
    legend = [" ".join(_texts(g)) for g in root.iter(f"{SVG}g") if (g.get("id") or "").startswith("legend")]
    return Chart(
        status=status,
        y_label=" ".join(_texts(groups["y-label"])),
        x_label=" ".join(_texts(groups["x-label"])),
        y_ticks=ticks,
        legend=legend,
        series=sum(1 for name in groups if (name or "").startswith("series-")),
    )


def charts(page: str) -> dict[str, Chart]:
    """The drawn charts of a page, by widget title."""
    found = {
        html.unescape(match["title"]): parse_chart(match["status"], base64.b64decode(match["svg"]).decode())
        for match in FIGURE.finditer(page)
    }
    assert len(found) == len(FIGURE.findall(page)), "two widgets share a title"
    return found


def empty_widgets(page: str) -> dict[str, str]:
    """The widgets listed as having no data, by title, with their status."""
    lists = EMPTY_LIST.findall(page)
    if not lists:
        return {}
    (items,) = lists
    under = page.index("<div class='no-data'>")
    assert under > max(page.index("<div class='grid'>"), page.rfind("</figure>")), "not under the charts"
    return {html.unescape(m["title"]): m["status"] for m in EMPTY_ITEM.finditer(items)}


def widget_totals(capture: MetricsCapture, widgets: list[WidgetSpec]) -> dict[str, float]:
    """Per widget of Sum metrics, the largest total one of its series reached in the run."""
    series = capture.series()
    return {
        widget.title: max(sum(d.value for d in series.get(spec.key, [])) for spec in widget.metrics)
        for widget in widgets
        if {spec.stat for spec in widget.metrics} == {"Sum"}
    }


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return run_scenario()


@pytest.fixture(scope="module")
def rendered(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dashboard") / "nested" / "dashboard.html"
    assert render_dashboard(scenario.capture, TEMPLATE, out) == out
    return out


def test_every_widget_is_drawn_or_listed_once(rendered: Path) -> None:
    page = rendered.read_text(encoding="utf-8")
    titles = [widget.title for widget in load_dashboard(TEMPLATE)]
    drawn, empty = charts(page), empty_widgets(page)
    assert sorted([*drawn, *empty]) == sorted(titles)
    assert {title for title, status in empty.items() if status == STATUS_AWS_ONLY} == AWS_ONLY
    assert set(empty) == AWS_ONLY  # the scenario gives every other widget data
    for title, chart in drawn.items():
        assert chart.status == STATUS_DATA, title
        assert chart.series >= 1, title
        assert len(chart.legend) == 1, title


def test_every_chart_carries_its_unit_and_no_sum_exceeds_its_total(
    scenario: Scenario, rendered: Path
) -> None:
    drawn = charts(rendered.read_text(encoding="utf-8"))
    stack = scenario.capture.stack
    widgets = load_dashboard(TEMPLATE, physical_ids=stack.physical_ids, stack_name=stack.stack_name)
    totals = widget_totals(scenario.capture, widgets)
    for title, chart in drawn.items():
        assert UNIT.match(chart.y_label), (title, chart.y_label)
        assert chart.x_label.startswith("time since the first metric (s;"), title
        if title in totals:
            assert chart.y_label.startswith("count per "), title
            assert chart.y_max <= max(totals[title], 1), (title, chart.y_ticks, totals[title])
    assert drawn["Function duration p50 and p99"].y_label == "ms (p50, p99)"
    assert drawn["Circuit state per operation (0 closed, 1 half-open, 2 open)"].y_ticks == [
        "closed",
        "half-open",
        "open",
    ]


def test_page_tells_where_the_data_comes_from(rendered: Path) -> None:
    page = rendered.read_text(encoding="utf-8")
    assert "local stand-in for an AWS metric" in page
    assert "emitted by the code" in page
    assert "(AWS-only: no local equivalent)" in page
    assert "AWS/SQS ApproximateAgeOfOldestMessage" in page


def test_circuit_table_reports_the_open_and_close(scenario: Scenario, rendered: Path) -> None:
    rows = circuit_status_table(scenario.capture)
    row = rows[THROTTLED_CIRCUIT]
    assert (row["state"], row["worst_state"]) == ("closed", "open")
    assert row["opened"] >= 1
    assert row["closed"] >= 1
    assert all(other["worst_state"] == "closed" for name, other in rows.items() if name != THROTTLED_CIRCUIT)
    page = rendered.read_text(encoding="utf-8")
    assert f"<td>{THROTTLED_CIRCUIT}</td><td>closed</td><td>open</td>" in page


def test_local_samples_cover_the_stacks_queues_and_functions(scenario: Scenario) -> None:
    samples = scenario.capture.sampled()
    queues = {dict(dims)["QueueName"] for (namespace, _, dims) in samples if namespace == "AWS/SQS"}
    assert queues == scenario.queue_names
    functions = {dict(dims)["FunctionName"] for (namespace, _, dims) in samples if namespace == "AWS/Lambda"}
    assert functions == scenario.function_names
    names = scenario.capture.stack.physical_ids
    expected = {names[function]["Ref"] for function in (PROVIDER, IMPORTER, SWEEPER, "UndoFunction")}
    assert expected == functions


def _datum(name: str, value: float, at: float, **dimensions: str) -> MetricDatum:
    dims = tuple(sorted({"service": "thingpress", **dimensions}.items()))
    return MetricDatum("Thingpress", name, dims, value, "Count", at)


def _duration(function: str, millis: float, at: float) -> MetricDatum:
    dims = (("FunctionName", function),)
    return MetricDatum("AWS/Lambda", "Duration", dims, millis, "Milliseconds", at, LOCAL_SOURCE)


def _imported_120(start: float, seconds: float) -> list[MetricDatum]:
    """120 certificates imported one by one, evenly over ``seconds``, and a manifest at either end."""
    return [
        *(_datum("CertificatesImported", 1, start + i * seconds / 120) for i in range(120)),
        _datum("ManifestsReceived", 1, start),
        _datum("ManifestsCompleted", 1, start + seconds),
    ]


@pytest.mark.parametrize(
    ("seconds", "unit"),
    [(5.0, "count per 0.5 s (Sum)"), (1.0, "count per 0.1 s (Sum)"), (3600.0, "count per min (Sum)")],
)
def test_120_certificates_never_show_more_than_120(tmp_path: Path, seconds: float, unit: str) -> None:
    capture = MetricsCapture()
    capture.add(_imported_120(1000.0, seconds))
    page = render_dashboard(capture, TEMPLATE, tmp_path / "d.html").read_text(encoding="utf-8")
    throughput = charts(page)["Import throughput (per minute)"]
    assert throughput.y_label == unit
    assert 1 <= throughput.y_max <= 120, throughput.y_ticks
    assert throughput.legend == ["imported (total 120)"]
    assert "per 60 s on CloudWatch" in page if seconds < 3600 else "per 60 s on CloudWatch" not in page


def test_duration_chart_carries_milliseconds(tmp_path: Path) -> None:
    capture = MetricsCapture()
    capture.add(
        [
            *(_duration("BulkImporterFunction", 100.0 * (i + 1), 1000.0 + i / 10) for i in range(10)),
            _duration("ManifestProviderFunction", 250.0, 1000.2),
        ]
    )
    page = render_dashboard(capture, TEMPLATE, tmp_path / "d.html").read_text(encoding="utf-8")
    duration = charts(page)["Function duration p50 and p99"]
    assert duration.y_label == "ms (p50, p99)"
    assert duration.series == 4  # p50 and p99 of the two functions that ran
    assert "BulkImporter p99 (max 1000 ms)" in duration.legend[0]
    assert 900 <= duration.y_max <= 1000


def test_widgets_without_data_collapse_into_one_list_under_the_charts(tmp_path: Path) -> None:
    capture = MetricsCapture()
    capture.add(_imported_120(1000.0, 5.0))
    page = render_dashboard(capture, TEMPLATE, tmp_path / "d.html").read_text(encoding="utf-8")
    titles = [widget.title for widget in load_dashboard(TEMPLATE)]
    assert sorted(charts(page)) == ["Import throughput (per minute)", "Manifests"]
    empty = empty_widgets(page)
    assert sorted(empty) == sorted(set(titles) - {"Import throughput (per minute)", "Manifests"})
    assert empty["Circuit transitions"] == STATUS_NO_DATA
    assert {title for title, status in empty.items() if status == STATUS_AWS_ONLY} == {
        "Queue depth (visible messages)",
        "Messages in flight (not visible)",
        "Function errors",
        "Function duration p50 and p99",
        "Function concurrent executions",
        *AWS_ONLY,
    }


def test_empty_capture_draws_no_chart(tmp_path: Path) -> None:
    out = render_dashboard(MetricsCapture(), TEMPLATE, tmp_path / "empty.html")
    page = out.read_text(encoding="utf-8")
    assert charts(page) == {}
    empty = empty_widgets(page)
    assert empty["Manifests"] == STATUS_NO_DATA
    assert empty["Queue depth (visible messages)"] == STATUS_AWS_ONLY
    assert len(empty) == len(load_dashboard(TEMPLATE))
    assert "No circuit metrics were emitted." in page


def test_summary_bins_and_circuit_table_of_a_hand_made_capture(tmp_path: Path) -> None:
    capture = MetricsCapture()
    capture.add(
        [
            _datum("CertificatesImported", 5, 1000.0),
            _datum("CertificatesImported", 5, 1000.5),
            _datum("CircuitState", 2, 1000.0, Operation="iot:CreateThing"),
            _datum("CircuitState", 0, 1010.0, Operation="iot:CreateThing"),
        ]
    )
    page = render_dashboard(capture, TEMPLATE, tmp_path / "d.html").read_text(encoding="utf-8")
    assert "4 emitted metric values in 2 series, 0 local samples of AWS metrics, over 10.0 s" in page
    assert "(bins of 0.5 s; a Sum is the sum in each bin)" in page
    assert circuit_status_table(capture)["iot:CreateThing"] == {
        "state": "closed",
        "worst_state": "open",
        "opened": 0,
        "closed": 0,
        "reports": 2,
        "last_reported": 1010.0,
    }


def test_plot_line_draws_the_sum_per_bin_and_other_statistics_without_gaps_filled() -> None:
    imported = MetricSpec(
        "Thingpress", "CertificatesImported", (("service", "thingpress"),), "Sum", 60, "imported"
    )
    data = [_datum("CertificatesImported", 5, 1000.0), _datum("CertificatesImported", 3, 1000.2)]
    data.append(_datum("CertificatesImported", 1, 1002.1))
    line = plot_line(imported, data, 1000.0, 0.5)
    assert line.times == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert line.values == [8.0, 0.0, 0.0, 0.0, 1.0]  # the sum in each bin, as CloudWatch per period
    assert (line.total, line.count, line.units) == (9.0, 3, frozenset({"Count"}))
    state = MetricSpec("Thingpress", "CircuitState", (("service", "thingpress"),), "Maximum", 60, "state")
    gauge = [
        _datum("CircuitState", 2, 1000.1),
        _datum("CircuitState", 1, 1000.3),
        _datum("CircuitState", 0, 1002.0),
    ]
    line = plot_line(state, gauge, 1000.0, 0.5)
    assert (line.times, line.values, line.total) == ([0.0, 2.0], [2.0, 0.0], 2.0)
    p99 = MetricSpec("AWS/Lambda", "Duration", (), "p99", 60, "p99")
    durations = [
        MetricDatum("AWS/Lambda", "Duration", (), float(v), "Milliseconds", 1000.0) for v in range(1, 101)
    ]
    assert plot_line(p99, durations, 1000.0, 1.0).values == [99.0]


DASHBOARD_TEMPLATE = """\
Parameters:
  Namespace: {{Type: String, Default: Thingpress}}
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Board:
    Type: AWS::CloudWatch::Dashboard
    Properties:
      DashboardBody: !Sub |
        {{"widgets": [{{"type": "text", "properties": {{"markdown": "hi"}}}},
          {{"type": "metric", "x": 0, "y": 0, "width": 12, "height": 6,
           "properties": {{"title": "T", "stat": "Sum", "period": 60, "metrics": [{rows}]}}}}]}}
"""


def _board(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(DASHBOARD_TEMPLATE.format(rows=rows)), encoding="utf-8")
    return path


def test_load_dashboard_expands_the_dot_shorthand_and_resolves_names(tmp_path: Path) -> None:
    rows = (
        '["${Namespace}", "A", "service", "s", "Api", "X"],'
        ' [".", ".", ".", ".", "Api", "Y", {"stat": "Maximum"}],'
        ' ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "${Queue.QueueName}"]'
    )
    (widget,) = load_dashboard(_board(tmp_path, rows), physical_ids={"Queue": {"QueueName": "real-queue"}})
    first, second, queue = widget.metrics
    assert first.dimension_map == {"service": "s", "Api": "X"}
    assert (first.stat, first.period, first.label) == ("Sum", 60, "A")
    assert (second.namespace, second.name, second.dimension_map) == (
        "Thingpress",
        "A",
        {"service": "s", "Api": "Y"},
    )
    assert second.stat == "Maximum"
    assert queue.dimension_map == {"QueueName": "real-queue"}
    (unresolved,) = load_dashboard(_board(tmp_path, rows))
    assert unresolved.metrics[2].dimension_map == {"QueueName": "Queue"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ('["N", "A", "service"]', "dimension name without a value"),
        ('["N", "A", "d", "1", "d", "2"]', "repeats a dimension name"),
        ('[{"expression": "SUM(METRICS())"}]', "math expression"),
        ('["N"]', "needs a namespace, a metric name"),
    ],
)
def test_load_dashboard_rejects_malformed_rows(tmp_path: Path, rows: str, message: str) -> None:
    with pytest.raises(DashboardError, match=message):
        load_dashboard(_board(tmp_path, rows))


def test_load_dashboard_needs_exactly_one_dashboard(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text("Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n", encoding="utf-8")
    with pytest.raises(DashboardError, match="0 dashboards"):
        load_dashboard(path)


BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
BOX = (640, 320)  # CSS pixels per chart in the contact sheet


def colored_pixels(image: np.ndarray) -> int:
    """Count clearly coloured pixels: plotted lines are coloured, text and frames are grey or black."""
    spread = image.max(axis=2) - image.min(axis=2)
    return int(np.count_nonzero(spread > 0.25))


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (Debian package: chromium)")
def test_a_headless_browser_draws_every_chart(rendered: Path, tmp_path: Path) -> None:
    """Each chart's SVG, as the page embeds it, rendered by Chromium, shows its coloured lines."""
    page = rendered.read_text(encoding="utf-8")
    images = [match["svg"] for match in FIGURE.finditer(page)]
    width, height = BOX
    sheet = tmp_path / "sheet.html"
    sheet.write_text(
        "<html><body style='margin:0;background:white'>"
        + "".join(
            f"<img style='position:absolute;left:0;top:{i * height}px;width:{width}px;height:{height}px' "
            f"src='data:image/svg+xml;base64,{svg}'>"
            for i, svg in enumerate(images)
        )
        + "</body></html>",
        encoding="utf-8",
    )
    shot = tmp_path / "sheet.png"
    command = [BROWSER or "", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += [f"--window-size={width},{height * len(images)}", f"--screenshot={shot}", sheet.as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    pixels = imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (height * len(images), width)
    titles = [html.unescape(match["title"]) for match in FIGURE.finditer(page)]
    for index, title in enumerate(titles):
        assert colored_pixels(pixels[index * height : (index + 1) * height]) > 50, title
