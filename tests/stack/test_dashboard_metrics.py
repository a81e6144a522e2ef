"""The dashboard plots what the code really emits, and everything that matters that it emits is plotted.

The first tests check the EMF capture itself. The pipeline tests run the real handlers on the local
stack (one run shared by the three dashboard test modules) through a scenario that opens and closes a circuit
(RegisterCertificateWithoutCA throttles during the first importer invocation), imports a manifest
with good, garbage, duplicate and name-conflicting entries, and captures every EMF record; they
then compare the captured series with the template's DashboardBody, resolved with the parameter
defaults.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import sys
import threading
from collections.abc import Iterable
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from bulk_importer.admission import BAD_MAC, NOT_IMPORTING, UNKNOWN_JOB
from layer_utils import telemetry
from layer_utils.aws_utils import ErrorClass
from layer_utils.circuit import CircuitRegistry
from layer_utils.jobs import JobStore
from layer_utils.messages import (
    ImportEntry,
    ImportMessage,
    MessageSettings,
    encode_import_message,
    sign_import_message,
)
from testing.helpers import shared_circuit_registry
from thingpress.certfactory import make_ca, make_device_cert, make_device_certs
from thingpress.dashboard import MetricSpec, load_dashboard
from thingpress.generate import write_generated
from thingpress.local import EventSourceMappingEmulator, LocalStack, RunStats
from thingpress.local.layers import ApiCall, ServerLayer, StartResponse, WsgiApp, json_error_response
from thingpress.local.metrics_capture import (
    MetricsCapture,
    SeriesKey,
    parse_emf,
    parse_emf_line,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
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
    "JobsSwept": (),
    "ImportMessagesRefused": ("Reason",),
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


def test_capture_tee_flushes_and_closes_quietly_after_its_target_closed(tmp_path: Path) -> None:
    with (tmp_path / "stdout.txt").open("w") as out, redirect_stdout(out), MetricsCapture():
        tee = sys.stdout
    tee.flush()
    tee.close()
    assert tee.closed


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


# --- the pipeline scenario (shared with test_alarms and test_dashboard_render) --------------------

POLICY = "dashboard-test-policy"
GROUP = "dashboard-test-group"
THROTTLED_API = "RegisterCertificateWithoutCA"
THROTTLED_CIRCUIT = f"iot:{THROTTLED_API}"
PROVIDER = "ManifestProviderFunction"
IMPORTER = "BulkImporterFunction"
SWEEPER = "JobSweeperFunction"
GOOD_DEVICES = 6
PARAMETERS = {
    "PolicyNames": POLICY,
    "ThingGroupNames": GROUP,
    # One throttled call opens the register circuit; the injected clock decides when it may close.
    "CircuitBreakerConfig": json.dumps(
        {"default": {"threshold": 5, "timeout": 60}, THROTTLED_CIRCUIT: {"threshold": 1, "timeout": 1}}
    ),
    "MaxAttempts": "2",  # one botocore retry: Retries is emitted, the back-off stays short
    "CertsPerMessage": "2",
}
GARBAGE_LINE = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")


class ThrottleWindow(ServerLayer):
    """Answers one IoT API with AWS's ThrottlingException while ``active`` (in front of moto)."""

    def __init__(self, api: str) -> None:
        super().__init__()
        self.api = api
        self.active = True
        self.throttled = 0
        self._lock = threading.Lock()

    def handle(
        self, call: ApiCall, environ: dict[str, Any], start_response: StartResponse, app: WsgiApp
    ) -> Iterable[bytes]:
        if not (self.active and call.service == "iot" and call.operation == self.api):
            return app(environ, start_response)
        with self._lock:
            self.throttled += 1
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        return json_error_response(
            start_response,
            "400 Bad Request",
            {"x-amzn-ErrorType": "ThrottlingException"},
            {"message": "Rate exceeded"},
        )


class FakeClock:
    """The circuit registry's clock: moves only when the scenario says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Scenario:
    """What one captured pipeline run produced."""

    capture: MetricsCapture
    jobs: dict[str, dict[str, Any]]
    throttled_calls: int
    queue_names: set[str]
    function_names: set[str]
    circuits: dict[str, dict[str, Any]]


def mixed_manifest() -> bytes:
    """Generated-format manifest: good devices, a duplicate, a thing-name conflict and a garbage line."""
    ca = make_ca("Dashboard Test CA")
    devices = list(make_device_certs(GOOD_DEVICES, ca, cn_format="dash-device-{i}"))
    conflicting = make_device_cert("dash-device-1", ca)  # another certificate for an existing name
    out = io.BytesIO()
    write_generated(out, [*devices, devices[0], conflicting])
    return out.getvalue() + GARBAGE_LINE + b"\n"


# The import messages the importer must drop, one per ImportMessagesRefused reason.
REFUSALS = (UNKNOWN_JOB, NOT_IMPORTING, BAD_MAC)
UNDO_REFUSALS = ("unknown_job", "not_undoable", "stale")  # undo_worker.requests


def send_forged_import_messages(
    stack: LocalStack, emulator: EventSourceMappingEmulator, done_key: str
) -> RunStats:
    """Send the ImportQueue a message for each refusal reason and run the importer on them.

    A message for a job that does not exist, a late one for the finished job of ``done_key`` and one
    for a job that is parsing but signed with a guessed secret.
    """
    store = JobStore(stack.physical_id("JobsTable"), dynamodb=stack.client("dynamodb"), s3=stack.client("s3"))
    (done,) = [job for job in store.list_jobs() if job.key == done_key]
    _, parsing = store.create_job(stack.bucket, "generated/dashboard-parsing.txt", "v1")
    assert store.claim_parse(parsing.job_id, "dashboard-test", datetime.now(UTC) + timedelta(hours=1))
    forged = make_device_cert("dash-forged", make_ca("Forger CA"))
    entry = ImportEntry("line 1", "dash-forged", hashlib.sha256(forged.der()).hexdigest(), forged.pem())
    settings = MessageSettings(policies=(POLICY,), thing_groups=(GROUP,))
    job_ids = {UNKNOWN_JOB: "0" * 32, NOT_IMPORTING: done.job_id, BAD_MAC: parsing.job_id}
    sqs, queue_url = stack.client("sqs"), stack.physical_id("ImportQueue")
    for reason in REFUSALS:
        message = sign_import_message(ImportMessage(job_ids[reason], "000000", settings, (entry,)), "guessed")
        sqs.send_message(QueueUrl=queue_url, MessageBody=encode_import_message(message))
    return emulator.run_until_idle(max_seconds=60)


@functools.cache
def run_scenario() -> Scenario:
    """Run the pipeline on a fresh local stack and capture every metric it emits.

    Cached: the three dashboard test modules read the same run (tests only read the result).
    """
    with LocalStack(TEMPLATE, parameters=PARAMETERS) as stack:
        iot = stack.client("iot")
        iot.create_policy(
            policyName=POLICY,
            policyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
                }
            ),
        )
        iot.create_thing_group(thingGroupName=GROUP)
        s3 = stack.client("s3")
        keys = {"mixed": "generated/dashboard-mixed.txt", "unreadable": "incoming/dashboard-unreadable.bin"}
        # CN names only, so the two certificates that share a CN are a conflict, reported for both.
        s3.put_object(
            Bucket=stack.bucket,
            Key=keys["mixed"],
            Body=mixed_manifest(),
            Metadata={"thingpress-thing-name-source": "cn"},
        )
        s3.put_object(Bucket=stack.bucket, Key=keys["unreadable"], Body=b"\x00\x01 not a manifest \xff" * 4)
        clock = FakeClock()
        window = ThrottleWindow(THROTTLED_API)

        def after_invoke(function: str, _event: dict[str, Any], _outcome: Any) -> None:
            if function == IMPORTER and window.active:
                window.active = False  # the throttling lasted one importer invocation
                clock.now += 60  # past the register circuit's timeout: the next call probes

        capture = MetricsCapture()
        with shared_circuit_registry(CircuitRegistry(clock=clock)) as registry, window, capture:
            emulator = EventSourceMappingEmulator(
                stack, after_invoke=after_invoke, on_progress=capture.sampler(stack)
            )
            stats = emulator.run_until_idle(max_seconds=120)
            # A job whose parser vanished nine hours ago: the scheduled sweep finishes it.
            keys["stuck"] = "generated/dashboard-stuck.txt"
            long_ago = datetime.now(UTC) - timedelta(hours=9)
            old_store = JobStore(
                stack.physical_id("JobsTable"),
                dynamodb=stack.client("dynamodb"),
                s3=stack.client("s3"),
                clock=lambda: long_ago,
            )
            old_store.create_job(stack.bucket, keys["stuck"], "v1")
            refusal_stats = send_forged_import_messages(stack, emulator, keys["mixed"])
            (schedule,) = stack.schedules
            sweep = emulator.invoke_scheduled(schedule)
            # Undo the mixed job, and refuse an undo of a job that does not exist.
            pointer = s3.get_object(Bucket=stack.bucket, Key=f"reports/{keys['mixed']}.json")["Body"].read()
            undo_queue = stack.physical_id("UndoQueue")
            for job_id in (json.loads(pointer)["job_id"], "0" * 32):
                stack.client("sqs").send_message(
                    QueueUrl=undo_queue, MessageBody=json.dumps({"job_id": job_id})
                )
            undo_stats = emulator.run_until_idle(max_seconds=120)
            circuits = registry.status()
        assert stats.idle, stats
        assert refusal_stats.idle and refusal_stats.errors == refusal_stats.failed_records == 0, refusal_stats
        assert refusal_stats.records.get(IMPORTER) == len(REFUSALS), refusal_stats
        assert sweep.error is None, sweep.error
        assert undo_stats.idle and undo_stats.records.get("UndoFunction") == 2, undo_stats
        jobs = {}
        for name, key in keys.items():
            report = s3.get_object(Bucket=stack.bucket, Key=f"reports/{key}.json")["Body"].read()
            jobs[name] = json.loads(report)
        queue_names = {url.rsplit("/", 1)[1] for url in stack.client("sqs").list_queues()["QueueUrls"]}
        function_names = {spec.name for spec in stack.functions.values()}
        return Scenario(capture, jobs, window.throttled, queue_names, function_names, circuits)


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return run_scenario()


def _family(key: SeriesKey) -> tuple[str, str, frozenset[str]]:
    namespace, name, dimensions = key
    return namespace, name, frozenset(dimension for dimension, _ in dimensions)


def plotted_metrics() -> list[MetricSpec]:
    """Every metric row of the dashboard, resolved with the template's parameter defaults."""
    return [spec for widget in load_dashboard(TEMPLATE) for spec in widget.metrics]


def code_metrics() -> list[MetricSpec]:
    return [spec for spec in plotted_metrics() if spec.namespace not in AWS_NAMESPACES]


def test_scenario_really_happened(scenario: Scenario) -> None:
    mixed, unreadable = scenario.jobs["mixed"], scenario.jobs["unreadable"]
    assert mixed["status"] == "COMPLETED_WITH_ERRORS"
    assert (mixed["imported"], mixed["duplicates"]) == (GOOD_DEVICES - 1, 1)
    assert mixed["failed"] == 3  # the two certificates of the name conflict and the garbage line
    assert unreadable["status"] == "FAILED"
    stuck = scenario.jobs["stuck"]
    assert stuck["status"] == "FAILED"
    assert stuck["reason"].startswith("The job was stopped because no progress since ")
    assert scenario.throttled_calls >= 2  # a call and its retry
    assert scenario.circuits[THROTTLED_CIRCUIT]["state"] == "closed"


def test_every_plotted_code_metric_is_emitted_with_the_same_namespace_name_and_dimension_names(
    scenario: Scenario,
) -> None:
    emitted_families = {_family(key) for key in scenario.capture.emitted()}
    missing = sorted(
        f"{spec.name} {sorted(spec.dimension_map)}"
        for spec in code_metrics()
        if _family(spec.key) not in emitted_families
    )
    assert not missing, f"plotted but never emitted in this shape: {missing}"


def test_every_emitted_series_is_plotted_exactly(scenario: Scenario) -> None:
    plotted = {spec.key for spec in plotted_metrics()}
    emitted = scenario.capture.emitted()
    assert {datum.namespace for data in emitted.values() for datum in data} == {NAMESPACE}
    unplotted = sorted(
        f"{name} {dict(dimensions)}"
        for (_, name, dimensions) in emitted
        if (NAMESPACE, name, dimensions) not in plotted
    )
    assert not unplotted, f"emitted but not on the dashboard: {unplotted}"


EXERCISED = [
    ("ManifestsReceived", {}),
    ("ManifestsCompleted", {}),
    ("ManifestsFailed", {}),
    ("CertificatesQueued", {}),
    ("CertificatesImported", {}),
    ("DuplicatesSkipped", {}),
    ("CertificatesFailed", {"ErrorClass": "invalid_input"}),
    ("CertificatesFailed", {"ErrorClass": "conflict"}),
    ("Throttles", {"Api": THROTTLED_API}),
    ("Retries", {"Api": THROTTLED_API}),
    ("CircuitOpened", {"Operation": THROTTLED_CIRCUIT}),
    ("CircuitClosed", {"Operation": THROTTLED_CIRCUIT}),
    *[
        ("CircuitState", {"Operation": f"iot:{api}"})
        for api in (
            "RegisterCertificateWithoutCA",
            "CreateThing",
            "AttachThingPrincipal",
            "AttachPolicy",
            "AddThingToThingGroup",
        )
    ],
    ("CircuitState", {"Operation": "sqs:SendMessageBatch"}),
    ("JobsSwept", {}),
    *[("ImportMessagesRefused", {"Reason": reason}) for reason in REFUSALS],
]


@pytest.mark.parametrize(
    ("name", "extra"), EXERCISED, ids=[f"{n}-{'-'.join(e.values())}" for n, e in EXERCISED]
)
def test_exercised_series_is_emitted_and_plotted_identically(
    scenario: Scenario, name: str, extra: dict[str, str]
) -> None:
    key: SeriesKey = (NAMESPACE, name, frozenset({"service": SERVICE, **extra}.items()))
    assert key in {spec.key for spec in plotted_metrics()}, f"{name} {extra} is not on the dashboard"
    assert scenario.capture.emitted().get(key), f"{name} {extra} was not emitted"


def test_circuit_values_tell_the_story(scenario: Scenario) -> None:
    emitted = scenario.capture.emitted()
    dims = frozenset({"service": SERVICE, "Operation": THROTTLED_CIRCUIT}.items())
    states = [d.value for d in sorted(emitted[(NAMESPACE, "CircuitState", dims)], key=lambda d: d.timestamp)]
    assert 2.0 in states and states[-1] == 0.0, states
    assert states.index(2.0) < len(states) - 1
    assert sum(d.value for d in emitted[(NAMESPACE, "CircuitOpened", dims)]) >= 1
    assert sum(d.value for d in emitted[(NAMESPACE, "CircuitClosed", dims)]) >= 1
    units = {(d.name, d.unit) for data in emitted.values() for d in data}
    assert ("CircuitState", "None") in units
    assert all(unit == "Count" for name, unit in units if name != "CircuitState")


def test_counts_match_the_reports(scenario: Scenario) -> None:
    emitted = scenario.capture.emitted()

    def total(name: str, **extra: str) -> float:
        return sum(
            d.value
            for d in emitted.get((NAMESPACE, name, frozenset({"service": SERVICE, **extra}.items())), [])
        )

    assert total("ManifestsReceived") == 2
    assert total("ManifestsCompleted") == 1
    assert total("ManifestsFailed") == 2  # the unreadable manifest and the swept job
    assert total("JobsSwept") == 1
    assert {reason: total("ImportMessagesRefused", Reason=reason) for reason in REFUSALS} == dict.fromkeys(
        REFUSALS, 1
    )
    assert total("CertificatesImported") == GOOD_DEVICES - 1
    assert total("CertificatesQueued") == GOOD_DEVICES - 1
    assert total("DuplicatesSkipped") == 1
    assert total("CertificatesFailed", ErrorClass="invalid_input") == 1
    assert total("CertificatesFailed", ErrorClass="conflict") == 2


def test_every_contract_metric_is_plotted_with_its_dimensions() -> None:
    plotted = {(spec.name, frozenset(spec.dimension_map)) for spec in code_metrics()}
    for name, extra in CONTRACT.items():
        assert (name, frozenset({"service", *extra})) in plotted, f"{name} is not on the dashboard"
    assert {spec.namespace for spec in code_metrics()} == {NAMESPACE}
    assert {spec.dimension_map["service"] for spec in code_metrics()} == {SERVICE}


def test_plotted_dimension_values_are_ones_the_code_can_emit() -> None:
    iot = set(botocore.session.get_session().get_service_model("iot").operation_names)
    sqs = set(botocore.session.get_session().get_service_model("sqs").operation_names)
    failure_classes = {c.value for c in ErrorClass} | {
        telemetry.FAILURE_SEND_FAILED,
        telemetry.FAILURE_EXHAUSTED,
    }
    for spec in code_metrics():
        dims = spec.dimension_map
        if "Api" in dims:
            assert dims["Api"] in iot, spec
        if "Operation" in dims:
            service, _, operation = dims["Operation"].partition(":")
            assert operation in {"iot": iot, "sqs": sqs}[service], spec
        if "ErrorClass" in dims:
            assert dims["ErrorClass"] in failure_classes, spec
        if "Reason" in dims:
            assert dims["Reason"] in (UNDO_REFUSALS if spec.name == "UndoRequestsRefused" else REFUSALS), spec
    plotted_classes = {
        spec.dimension_map["ErrorClass"] for spec in code_metrics() if spec.name == "CertificatesFailed"
    }
    # Every per-certificate failure class: not the retryable ones (they are retried, then "exhausted").
    expected = failure_classes - {"throttled", "transient", "already_exists"}
    assert plotted_classes == expected
