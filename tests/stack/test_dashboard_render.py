"""The dashboard drawn locally: one image per widget, with the run's data where the run has some.

The full render uses the captured run of test_dashboard_metrics (real handlers on the local stack,
a circuit that opens and closes); the smaller tests use hand-made captures and templates.
"""

from __future__ import annotations

import base64
import html
import io
import re
import textwrap
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
    circuit_status_table,
    load_dashboard,
    plot_line,
    render_dashboard,
)
from thingpress.local.metrics_capture import MetricDatum, MetricsCapture

FIGURE = re.compile(
    r"<figure class='widget' data-title=\"(?P<title>[^\"]*)\" data-status='(?P<status>[^']*)'[^>]*>"
    r"<img alt=\"[^\"]*\" src='data:image/png;base64,(?P<png>[^']*)'>"
)
# Widgets the local run has no stand-in for: CloudWatch computes them from SQS/Lambda internals.
AWS_ONLY = {"Age of oldest message (seconds)", "Function throttles"}


def figures(page: str) -> dict[str, tuple[str, bytes]]:
    found = {
        html.unescape(match["title"]): (match["status"], base64.b64decode(match["png"]))
        for match in FIGURE.finditer(page)
    }
    assert len(found) == len(FIGURE.findall(page)), "two widgets share a title"
    return found


def colored_pixels(png: bytes) -> int:
    """Count clearly coloured pixels: plotted lines are coloured, placeholder text is grey or black."""
    image = imread(io.BytesIO(png), format="png")[..., :3]
    spread = image.max(axis=2) - image.min(axis=2)
    return int(np.count_nonzero(spread > 0.25))


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return run_scenario()


@pytest.fixture(scope="module")
def rendered(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dashboard") / "nested" / "dashboard.html"
    assert render_dashboard(scenario.capture, TEMPLATE, out) == out
    return out


def test_page_has_one_image_per_widget(rendered: Path) -> None:
    page = rendered.read_text(encoding="utf-8")
    titles = [widget.title for widget in load_dashboard(TEMPLATE)]
    drawn = figures(page)
    assert sorted(drawn) == sorted(titles)
    for title, (_, png) in drawn.items():
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), title
        assert imread(io.BytesIO(png), format="png").shape[1] >= 400, title


def test_widgets_with_local_data_show_it_and_the_rest_say_why_not(rendered: Path) -> None:
    drawn = figures(rendered.read_text(encoding="utf-8"))
    for title, (status, png) in drawn.items():
        if title in AWS_ONLY:
            assert status == STATUS_AWS_ONLY, title
            assert colored_pixels(png) == 0, title
        else:
            assert status == STATUS_DATA, title
            assert colored_pixels(png) > 50, title


def test_page_tells_where_the_data_comes_from(rendered: Path) -> None:
    page = rendered.read_text(encoding="utf-8")
    assert "local stand-in for an AWS metric" in page
    assert "emitted by the code" in page
    assert "AWS-only: CloudWatch publishes these" in page
    assert "ApproximateAgeOfOldestMessage" in page


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
    assert {names[PROVIDER]["Ref"], names[IMPORTER]["Ref"], names[SWEEPER]["Ref"]} == functions


def _datum(name: str, value: float, at: float, **dimensions: str) -> MetricDatum:
    dims = tuple(sorted({"service": "thingpress", **dimensions}.items()))
    return MetricDatum("Thingpress", name, dims, value, "Count", at)


def test_empty_capture_renders_placeholders(tmp_path: Path) -> None:
    out = render_dashboard(MetricsCapture(), TEMPLATE, tmp_path / "empty.html")
    drawn = figures(out.read_text(encoding="utf-8"))
    statuses = {title: status for title, (status, _) in drawn.items()}
    assert statuses["Manifests"] == STATUS_NO_DATA
    assert statuses["Queue depth (visible messages)"] == STATUS_AWS_ONLY
    assert set(statuses.values()) == {STATUS_NO_DATA, STATUS_AWS_ONLY}
    assert "No circuit metrics were emitted." in out.read_text(encoding="utf-8")


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
    assert "(bins of 0.5 s; Sum shown per minute)" in page
    assert circuit_status_table(capture)["iot:CreateThing"] == {
        "state": "closed",
        "worst_state": "open",
        "opened": 0,
        "closed": 0,
        "reports": 2,
        "last_reported": 1010.0,
    }


def test_plot_line_draws_sum_per_minute_and_other_statistics_without_gaps_filled() -> None:
    imported = MetricSpec(
        "Thingpress", "CertificatesImported", (("service", "thingpress"),), "Sum", 60, "imported"
    )
    data = [_datum("CertificatesImported", 5, 1000.0), _datum("CertificatesImported", 3, 1000.2)]
    data.append(_datum("CertificatesImported", 1, 1002.1))
    line = plot_line(imported, data, 1000.0, 0.5)
    assert line.times == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert line.values == [960.0, 0.0, 0.0, 0.0, 120.0]  # 8 in half a second is 960 a minute
    assert (line.total, line.count) == (9.0, 3)
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
