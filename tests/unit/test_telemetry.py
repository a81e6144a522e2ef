"""Tests for layer_utils.telemetry: EMF metrics and the retry/throttle counters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from layer_utils import telemetry
from layer_utils.aws_utils import clear_client_cache, get_client
from layer_utils.circuit import CircuitRegistry
from testing.helpers import emf_records


class FakeResponse:
    """Raw body for botocore's AWSResponse."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_kwargs: Any) -> Iterator[bytes]:
        yield self._body


def iot_response(status: int, body: dict[str, Any], error_type: str | None = None) -> AWSResponse:
    headers = {"x-amzn-RequestId": "req-1", "Content-Type": "application/json"}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
    return AWSResponse(
        "https://iot.us-east-1.amazonaws.com/things/x",
        status,
        headers,
        FakeResponse(json.dumps(body).encode()),  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_IOT", raising=False)
    # Retries without backoff sleeps: the test is about counting, not waiting.
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda _self, _ctx: 0)
    clear_client_cache()
    telemetry.flush_call_metrics()
    yield
    telemetry.flush_call_metrics()
    clear_client_cache()


def test_singletons() -> None:
    assert telemetry.SERVICE_NAME == "thingpress"
    assert telemetry.metrics.namespace == "Thingpress"
    assert telemetry.logger.service == "thingpress"
    assert telemetry.tracer.disabled is True  # type: ignore[attr-defined]


def test_emit_metric_exact_dimensions(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.emit_metric(
        telemetry.CERTIFICATES_FAILED, 3, dimensions={telemetry.DIM_ERROR_CLASS: "conflict"}
    )
    telemetry.emit_metric(telemetry.CERTIFICATES_IMPORTED)
    first, second = emf_records(capsys.readouterr().out)
    directive = first["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Thingpress"
    assert directive["Metrics"] == [{"Name": "CertificatesFailed", "Unit": "Count"}]
    assert [sorted(d) for d in directive["Dimensions"]] == [["ErrorClass", "service"]]
    assert first["service"] == "thingpress"
    assert first["ErrorClass"] == "conflict"
    assert first["CertificatesFailed"] == [3.0]
    directive = second["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [["service"]]
    assert second["CertificatesImported"] == [1.0]


def test_emit_metric_refuses_service_dimension() -> None:
    with pytest.raises(ValueError, match="'service' dimension is set automatically"):
        telemetry.emit_metric(telemetry.RETRIES, dimensions={"service": "other"})


def test_metric_names_match_contract() -> None:
    assert {
        telemetry.MANIFESTS_RECEIVED,
        telemetry.MANIFESTS_COMPLETED,
        telemetry.MANIFESTS_FAILED,
        telemetry.CERTIFICATES_QUEUED,
        telemetry.CERTIFICATES_IMPORTED,
        telemetry.DUPLICATES_SKIPPED,
        telemetry.CERTIFICATES_FAILED,
        telemetry.THROTTLES,
        telemetry.RETRIES,
        telemetry.CIRCUIT_STATE,
        telemetry.CIRCUIT_OPENED,
        telemetry.CIRCUIT_CLOSED,
    } == {
        "ManifestsReceived",
        "ManifestsCompleted",
        "ManifestsFailed",
        "CertificatesQueued",
        "CertificatesImported",
        "DuplicatesSkipped",
        "CertificatesFailed",
        "Throttles",
        "Retries",
        "CircuitState",
        "CircuitOpened",
        "CircuitClosed",
    }
    assert (telemetry.DIM_ERROR_CLASS, telemetry.DIM_API, telemetry.DIM_OPERATION) == (
        "ErrorClass",
        "Api",
        "Operation",
    )


def test_count_in_invocation_aggregates_plain_counts_and_writes_dimensioned_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        telemetry.count_in_invocation("CertificatesImported", 3)
        telemetry.count_in_invocation("CertificatesImported")
        telemetry.count_in_invocation("CertificatesFailed", 2, {"ErrorClass": "conflict"})
        records = emf_records(capsys.readouterr().out)
        metric_set = telemetry.metrics.serialize_metric_set()
    finally:
        telemetry.metrics.clear_metrics()
    assert [(r["CertificatesFailed"], r["ErrorClass"]) for r in records] == [([2.0], "conflict")]
    assert metric_set["CertificatesImported"] == [3.0, 1.0]
    assert "CertificatesFailed" not in metric_set


def test_end_invocation_emits_circuit_states_and_flushes_call_metrics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = CircuitRegistry(clock=lambda: 100.0, env={}, on_transition=lambda _t: None)
    registry.configure("iot:CreateThing")
    telemetry._on_needs_retry(attempts=2, operation=type("Op", (), {"name": "CreateThing"})())
    telemetry.end_invocation(registry.status())
    records = emf_records(capsys.readouterr().out)
    assert {(r.get("Operation"), r.get("Api")) for r in records} == {
        ("iot:CreateThing", None),
        (None, "CreateThing"),
    }
    assert telemetry.call_metric_counts() == {}


def test_emit_circuit_states(capsys: pytest.CaptureFixture[str]) -> None:
    now = [100.0]
    registry = CircuitRegistry(clock=lambda: now[0], env={}, on_transition=lambda _t: None)
    registry.configure("iot:CreateThing", threshold=1, timeout=10)
    registry.configure("iot:AttachPolicy", threshold=1, timeout=10)
    registry.configure("sqs:SendMessageBatch")
    registry.record_failure("iot:CreateThing")
    registry.record_failure("iot:AttachPolicy")
    now[0] = 111.0
    assert registry.call("iot:AttachPolicy", lambda: 1, None) == 1  # probe succeeds: closed
    registry.record_failure("iot:AttachPolicy")
    now[0] = 122.0
    registry._admit("iot:AttachPolicy")
    telemetry.emit_circuit_states(registry.status())
    records = emf_records(capsys.readouterr().out)
    values = {r["Operation"]: r["CircuitState"] for r in records}
    assert values == {"iot:CreateThing": [2.0], "iot:AttachPolicy": [1.0], "sqs:SendMessageBatch": [0.0]}
    for record in records:
        directive = record["_aws"]["CloudWatchMetrics"][0]
        assert directive["Metrics"] == [{"Name": "CircuitState", "Unit": "None"}]
        assert [sorted(d) for d in directive["Dimensions"]] == [["Operation", "service"]]


def test_call_metrics_count_throttles_and_retries(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("THINGPRESS_MAX_ATTEMPTS", "3")
    client = get_client("iot")
    responses = [
        iot_response(429, {"message": "Rate exceeded"}, "ThrottlingException"),
        iot_response(429, {"message": "Rate exceeded"}, "ThrottlingException"),
        iot_response(200, {"thingName": "x", "thingArn": "arn:aws:iot:us-east-1:123456789012:thing/x"}),
        iot_response(503, {"message": "down"}, "ServiceUnavailableException"),
        iot_response(503, {"message": "down"}, "ServiceUnavailableException"),
        iot_response(503, {"message": "down"}, "ServiceUnavailableException"),
    ]
    client.meta.events.register("before-send.iot", lambda **_kw: responses.pop(0), unique_id="test-send")
    assert client.create_thing(thingName="x")["thingName"] == "x"
    with pytest.raises(ClientError):
        client.describe_thing(thingName="x")
    assert responses == []
    assert telemetry.call_metric_counts() == {
        ("Throttles", "CreateThing"): 2,
        ("Retries", "CreateThing"): 2,
        ("Retries", "DescribeThing"): 2,
    }
    capsys.readouterr()
    flushed = telemetry.flush_call_metrics()
    assert flushed == {
        ("Throttles", "CreateThing"): 2,
        ("Retries", "CreateThing"): 2,
        ("Retries", "DescribeThing"): 2,
    }
    records = emf_records(capsys.readouterr().out)
    seen = {(r["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], r["Api"]): r for r in records}
    assert set(seen) == set(flushed)
    throttles = seen[("Throttles", "CreateThing")]
    assert throttles["Throttles"] == [2.0]
    assert [sorted(d) for d in throttles["_aws"]["CloudWatchMetrics"][0]["Dimensions"]] == [
        ["Api", "service"]
    ]
    assert telemetry.call_metric_counts() == {}
    assert telemetry.flush_call_metrics() == {}


def test_throttle_without_retry_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINGPRESS_MAX_ATTEMPTS", "1")
    client = get_client("iot")
    telemetry.install_call_metrics(client)  # a second install must not double count
    client.meta.events.register(
        "before-send.iot",
        lambda **_kw: iot_response(400, {"message": "Rate exceeded"}, "ThrottlingException"),
        unique_id="test-send",
    )
    with pytest.raises(ClientError) as caught:
        client.register_certificate_without_ca(certificatePem="pem", status="ACTIVE")
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert telemetry.call_metric_counts() == {("Throttles", "RegisterCertificateWithoutCA"): 1}
