"""The dashboard plots what the code really emits, and everything that matters that it emits is plotted.

The first tests check the EMF capture itself. The pipeline tests run the real handlers on the local
stack (one stack per module) through a scenario that opens and closes a circuit
(RegisterCertificateWithoutCA throttles during the first importer invocation), imports a manifest
with good, garbage, duplicate and name-conflicting entries, and captures every EMF record; they
then compare the captured series with the template's DashboardBody, resolved with the parameter
defaults.
"""

from __future__ import annotations

import io
import json
import sys
import threading
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from layer_utils import telemetry
from thingpress.local.metrics_capture import (
    MetricsCapture,
    parse_emf,
    parse_emf_line,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "template.yaml"
NAMESPACE = "Thingpress"  # the MetricsNamespace parameter's default
SERVICE = "thingpress"  # the ServiceName parameter's default
AWS_NAMESPACES = ("AWS/SQS", "AWS/Lambda")

# The ARCHITECTURE metrics table: name → extra dimension names.
CONTRACT: dict[str, tuple[str, ...]] = {
    "ManifestsReceived": (),
    "ManifestsCompleted": (),
    "ManifestsFailed": (),
    "CertificatesQueued": (),
    "CertificatesImported": (),
    "DuplicatesSkipped": (),
    "CertificatesFailed": ("ErrorClass",),
    "Throttles": ("Api",),
    "Retries": ("Api",),
    "CircuitState": ("Operation",),
    "CircuitOpened": ("Operation",),
    "CircuitClosed": ("Operation",),
}


# --- the capture ------------------------------------------------------------------------------------


def test_capture_parses_powertools_single_metric_and_hides_it_from_stdout() -> None:
    out = io.StringIO()
    with redirect_stdout(out), MetricsCapture() as capture:
        telemetry.emit_metric("CircuitOpened", 1, dimensions={"Operation": "iot:CreateThing"})
        print("an ordinary line")
    assert out.getvalue() == "an ordinary line\n"
    (datum,) = capture.data
    assert datum.namespace == telemetry.METRICS_NAMESPACE
    assert datum.name == "CircuitOpened"
    assert datum.dimension_map == {"service": telemetry.SERVICE_NAME, "Operation": "iot:CreateThing"}
    assert (datum.value, datum.unit) == (1.0, "Count")
    assert datum.timestamp > 1.6e9
    assert capture.emitted() == {datum.key: [datum]}


def test_capture_parses_a_flushed_metric_set_with_several_metrics() -> None:
    metrics = Metrics(namespace="Elsewhere", service="svc")
    metrics.add_metric(name="A", unit=MetricUnit.Count, value=2)
    metrics.add_metric(name="A", unit=MetricUnit.Count, value=3)
    metrics.add_metric(name="B", unit=MetricUnit.Milliseconds, value=7.5)
    with redirect_stdout(io.StringIO()), MetricsCapture() as capture:
        metrics.flush_metrics()
    values = sorted((d.name, d.value, d.unit, d.dimensions) for d in capture.data)
    assert values == [
        ("A", 2.0, "Count", (("service", "svc"),)),
        ("A", 3.0, "Count", (("service", "svc"),)),
        ("B", 7.5, "Milliseconds", (("service", "svc"),)),
    ]
    assert {d.namespace for d in capture.data} == {"Elsewhere"}


def test_capture_echo_forwards_emf_and_restores_stdout() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        with MetricsCapture(echo=True) as capture:
            telemetry.emit_metric("Retries", 4, dimensions={"Api": "CreateThing"})
        assert sys.stdout is out
    assert json.loads(out.getvalue())["Retries"] == [4.0]
    assert len(capture.data) == 1


def test_capture_keeps_lines_of_concurrent_threads_apart() -> None:
    out = io.StringIO()

    def work(index: int) -> None:
        for _ in range(25):
            telemetry.emit_metric("Throttles", index, dimensions={"Api": f"Api{index}"})
            print(f"log line from {index}")

    with redirect_stdout(out), MetricsCapture() as capture:
        threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(capture.data) == 200
    assert all(d.value == float(d.dimension_map["Api"][3:]) for d in capture.data)
    lines = out.getvalue().splitlines()
    assert len(lines) == 200
    assert all(line.startswith("log line from ") for line in lines)


def test_capture_passes_partial_and_json_non_emf_lines_through() -> None:
    out = io.StringIO()
    with redirect_stdout(out), MetricsCapture() as capture:
        sys.stdout.write("progress ")
        sys.stdout.write("50%")
        sys.stdout.write("\n")
        print(json.dumps({"level": "INFO", "message": "a structured log line"}))
        sys.stdout.write('{"unfinished": ')
    assert out.getvalue().splitlines() == [
        "progress 50%",
        '{"level": "INFO", "message": "a structured log line"}',
        '{"unfinished": ',
    ]
    assert capture.data == []


def test_parse_emf_expands_dimension_sets_and_value_lists() -> None:
    document = {
        "_aws": {
            "Timestamp": 1_700_000_000_000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "N",
                    "Dimensions": [["service"], ["service", "Api"]],
                    "Metrics": [{"Name": "M", "Unit": "Count"}],
                }
            ],
        },
        "service": "s",
        "Api": "CreateThing",
        "M": [1, 2],
    }
    data = parse_emf(document)
    assert sorted((d.dimensions, d.value) for d in data) == [
        ((("Api", "CreateThing"), ("service", "s")), 1.0),
        ((("Api", "CreateThing"), ("service", "s")), 2.0),
        ((("service", "s"),), 1.0),
        ((("service", "s"),), 2.0),
    ]
    assert {d.timestamp for d in data} == {1_700_000_000.0}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"_aws": {"Timestamp": 1}}, "not EMF"),
        ({"_aws": {"Timestamp": "x", "CloudWatchMetrics": []}}, "timestamp"),
        ({"_aws": {"Timestamp": 1, "CloudWatchMetrics": [{"Metrics": []}]}}, "Namespace"),
        (
            {"_aws": {"Timestamp": 1, "CloudWatchMetrics": [{"Namespace": "N", "Metrics": [{"Name": "M"}]}]}},
            "no value",
        ),
        (
            {
                "_aws": {
                    "Timestamp": 1,
                    "CloudWatchMetrics": [
                        {"Namespace": "N", "Dimensions": [["d"]], "Metrics": [{"Name": "M"}]}
                    ],
                },
                "M": 1,
            },
            "lacks the string dimension",
        ),
        (
            {
                "_aws": {
                    "Timestamp": 1,
                    "CloudWatchMetrics": [{"Namespace": "N", "Metrics": [{"Name": "M"}]}],
                },
                "M": "1",
            },
            "non-numeric",
        ),
    ],
)
def test_parse_emf_rejects_broken_documents(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_emf(document)


def test_parse_emf_line_ignores_text_and_plain_json() -> None:
    assert parse_emf_line("hello") is None
    assert parse_emf_line('{"message": "x"}') is None
    assert parse_emf_line('{"_aws": oops') is None
    assert parse_emf_line("[1, 2]") is None
