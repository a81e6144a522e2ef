"""Tests for layer_utils.circuit_state: the circuit breaker state machine, concurrency and fleet mode."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.circuit_breaker.persistence import CircuitBreakerDynamoDBPersistence
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from layer_utils import circuit_state
from layer_utils.aws_utils import NotFoundError, ThingpressError, ThrottledError, handle_aws_error
from layer_utils.circuit_state import (
    CircuitOpenError,
    CircuitRegistry,
    Transition,
    circuit_is_open,
    configure_circuit,
    get_circuit_status,
    record_failure,
    record_success,
    reset_circuit,
    with_circuit_breaker,
)
from layer_utils.protected import protected_call
from testing.helpers import emf_records

NAME = "iot:RegisterCertificateWithoutCA"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "req-1"},
        },
        "RegisterCertificateWithoutCA",
    )


def throttle() -> ClientError:
    return client_error("ThrottlingException", 400)


def raiser(error: BaseException) -> Callable[[], None]:
    def fail() -> None:
        raise error

    return fail


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THINGPRESS_CIRCUIT_CONFIG", raising=False)
    monkeypatch.delenv("THINGPRESS_CIRCUIT_TABLE", raising=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def transitions() -> list[Transition]:
    return []


@pytest.fixture
def registry(clock: Clock, transitions: list[Transition]) -> CircuitRegistry:
    return CircuitRegistry(clock=clock, on_transition=transitions.append, env={})


@dataclass
class HeldCall:
    """A call running inside the circuit on its own thread until released."""

    thread: threading.Thread
    results: list[str] = field(default_factory=list)
    runs: int = 0


@contextmanager
def held_call(registry: CircuitRegistry, value: str) -> Iterator[HeldCall]:
    """Start ``registry.call(NAME, ...)`` on a thread and hold it inside the circuit for the block.

    The call returns ``value`` once the block ends; the thread is then joined.
    """
    entered, release = threading.Event(), threading.Event()

    def held() -> str:
        call.runs += 1
        entered.set()
        assert release.wait(10)
        return value

    call = HeldCall(threading.Thread(target=lambda: call.results.append(registry.call(NAME, held, None))))
    call.thread.start()
    try:
        assert entered.wait(10)
        yield call
    finally:
        release.set()
        call.thread.join(10)


def trip(registry: CircuitRegistry, name: str = NAME) -> None:
    for _ in range(registry.config(name).threshold):
        with pytest.raises(ClientError):
            registry.call(name, raiser(throttle()), None)
    assert registry.status()[name]["state"] == "open"


def states(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(t.from_state.value, t.to_state.value) for t in transitions]


# ------------------------------------------------------------------------------------- state machine


def test_opens_at_threshold_and_fails_fast(registry: CircuitRegistry, clock: Clock) -> None:
    registry.configure(NAME, threshold=3, timeout=30)
    for _ in range(2):
        with pytest.raises(ClientError):
            registry.call(NAME, raiser(throttle()), None)
    assert registry.status()[NAME]["state"] == "closed"
    assert registry.status()[NAME]["consecutive_failures"] == 2
    with pytest.raises(EndpointConnectionError):
        registry.call(NAME, raiser(EndpointConnectionError(endpoint_url="https://iot")), None)
    status = registry.status()[NAME]
    assert status["state"] == "open"
    assert status["opened_at"] == 1000.0
    assert status["last_failure_time"] == 1000.0
    calls: list[int] = []
    with pytest.raises(CircuitOpenError) as caught:
        registry.call(NAME, lambda: calls.append(1), None)
    assert calls == []
    assert caught.value.circuit_name == NAME
    assert caught.value.retryable is True
    assert isinstance(caught.value, ThingpressError)
    assert "The circuit for iot:RegisterCertificateWithoutCA is open" in str(caught.value)
    assert registry.is_open(NAME)
    assert registry.call(NAME, lambda x: x * 2, lambda x: -x, 21) == -21


def test_success_resets_failure_streak(registry: CircuitRegistry) -> None:
    registry.configure(NAME, threshold=3)
    for _ in range(2):
        with pytest.raises(ClientError):
            registry.call(NAME, raiser(throttle()), None)
    assert registry.call(NAME, lambda: "ok", None) == "ok"
    assert registry.status()[NAME]["consecutive_failures"] == 0
    for _ in range(2):
        with pytest.raises(ClientError):
            registry.call(NAME, raiser(throttle()), None)
    assert registry.status()[NAME]["state"] == "closed"


@pytest.mark.parametrize(
    "error",
    [
        client_error("ResourceNotFoundException", 404),
        client_error("ResourceAlreadyExistsException", 409),
        client_error("InvalidRequestException", 400),
        client_error("CertificateValidationException", 400),
        client_error("ConditionalCheckFailedException", 400),
        NotFoundError(NAME, "ResourceNotFoundException", "gone"),
        KeyError("a bug in the protected function"),
    ],
)
def test_non_health_errors_never_trip(registry: CircuitRegistry, error: Exception) -> None:
    registry.configure(NAME, threshold=1)
    for _ in range(5):
        with pytest.raises(type(error)):
            registry.call(NAME, raiser(error), None)
    status = registry.status()[NAME]
    assert status["state"] == "closed"
    assert status["consecutive_failures"] == 0
    assert status["last_failure_time"] is None


def test_healthy_aws_answer_breaks_streak_but_unknown_error_does_not(registry: CircuitRegistry) -> None:
    registry.configure(NAME, threshold=3)
    for _ in range(2):
        with pytest.raises(ClientError):
            registry.call(NAME, raiser(throttle()), None)
    with pytest.raises(KeyError):
        registry.call(NAME, raiser(KeyError("bug")), None)
    assert registry.status()[NAME]["consecutive_failures"] == 2
    with pytest.raises(ClientError):
        registry.call(NAME, raiser(client_error("ResourceNotFoundException", 404)), None)
    assert registry.status()[NAME]["consecutive_failures"] == 0


def test_count_classes_configurable(registry: CircuitRegistry) -> None:
    registry.configure(NAME, threshold=2, count_classes=["not_found"])
    for _ in range(2):
        with pytest.raises(ClientError):
            registry.call(NAME, raiser(throttle()), None)
    assert registry.status()[NAME]["consecutive_failures"] == 0
    for _ in range(2):
        with pytest.raises(ClientError):
            registry.call(NAME, raiser(client_error("ResourceNotFoundException", 404)), None)
    assert registry.status()[NAME]["state"] == "open"


def test_half_open_probe_success_closes(
    registry: CircuitRegistry, clock: Clock, transitions: list[Transition]
) -> None:
    registry.configure(NAME, threshold=2, timeout=30)
    trip(registry)
    clock.now = 1029.9
    with pytest.raises(CircuitOpenError):
        registry.call(NAME, lambda: None, None)
    clock.now = 1030.0
    assert not registry.is_open(NAME)
    assert registry.call(NAME, lambda: "probe ok", None) == "probe ok"
    assert registry.status()[NAME]["state"] == "closed"
    assert registry.status()[NAME]["opened_at"] is None
    assert states(transitions) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_failed_probe_reopens_with_fresh_timeout(
    registry: CircuitRegistry, clock: Clock, transitions: list[Transition]
) -> None:
    registry.configure(NAME, threshold=1, timeout=10)
    trip(registry)
    clock.now = 1011.0
    with pytest.raises(ClientError):
        registry.call(NAME, raiser(throttle()), None)
    status = registry.status()[NAME]
    assert status["state"] == "open"
    assert status["opened_at"] == 1011.0
    clock.now = 1020.0  # 10 s after the first opening, 9 s after the reopening
    with pytest.raises(CircuitOpenError):
        registry.call(NAME, lambda: None, None)
    clock.now = 1021.0
    assert registry.call(NAME, lambda: 1, None) == 1
    assert states(transitions) == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_success_threshold_needs_consecutive_probes(registry: CircuitRegistry, clock: Clock) -> None:
    registry.configure(NAME, threshold=1, timeout=10, success_threshold=3)
    trip(registry)
    clock.now = 1010.0
    for _ in range(2):
        registry.call(NAME, lambda: None, None)
        assert registry.status()[NAME]["state"] == "half_open"
    with pytest.raises(ClientError):
        registry.call(NAME, raiser(throttle()), None)
    assert registry.status()[NAME]["state"] == "open"
    clock.now = 1020.0
    for _ in range(2):
        registry.call(NAME, lambda: None, None)
    assert registry.status()[NAME]["state"] == "half_open"
    registry.call(NAME, lambda: None, None)
    assert registry.status()[NAME]["state"] == "closed"


def test_neutral_probe_frees_the_slot(registry: CircuitRegistry, clock: Clock) -> None:
    registry.configure(NAME, threshold=1, timeout=10)
    trip(registry)
    clock.now = 1010.0
    with pytest.raises(KeyError):
        registry.call(NAME, raiser(KeyError("bug")), None)
    status = registry.status()[NAME]
    assert status["state"] == "half_open"
    assert status["probe_in_flight"] is False
    registry.call(NAME, lambda: None, None)
    assert registry.status()[NAME]["state"] == "closed"


def test_handle_aws_error_inside_decorator_counts_once(registry: CircuitRegistry, clock: Clock) -> None:
    registry.configure(NAME, threshold=10, timeout=10)

    @with_circuit_breaker(NAME, registry=registry)
    def register() -> None:
        try:
            raise throttle()
        except ClientError as error:
            handle_aws_error(error, NAME)

    for expected in (1, 2, 3):
        with pytest.raises(ThingpressError):
            register()
        assert registry.status()[NAME]["consecutive_failures"] == expected


def test_handle_aws_error_failed_probe_reopens_once(
    registry: CircuitRegistry, clock: Clock, transitions: list[Transition]
) -> None:
    registry.configure(NAME, threshold=1, timeout=10)
    trip(registry)
    clock.now = 1010.0

    def probe() -> None:
        try:
            raise throttle()
        except ClientError as error:
            handle_aws_error(error, NAME)

    with pytest.raises(ThingpressError):
        registry.call(NAME, probe, None)
    status = registry.status()[NAME]
    assert status["state"] == "open"
    assert status["opened_at"] == 1010.0
    assert status["probe_in_flight"] is False
    assert states(transitions)[-2:] == [("open", "half_open"), ("half_open", "open")]


def test_stale_call_does_not_reopen_half_open_circuit(
    registry: CircuitRegistry, clock: Clock, transitions: list[Transition]
) -> None:
    """A slow call admitted before a trip fails after the circuit went half-open: the probe decides."""
    registry.configure(NAME, threshold=2, timeout=10)
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow() -> None:
        entered.set()
        assert release.wait(10)
        raise throttle()

    def run_slow() -> None:
        try:
            protected_call(registry, NAME, slow)
        except BaseException as error:
            errors.append(error)

    call_a = threading.Thread(target=run_slow)
    call_a.start()
    assert entered.wait(10)
    trip(registry)
    clock.now = 1010.0
    with held_call(registry, "probe ok") as probe:
        release.set()
        call_a.join(10)
        assert [type(error) for error in errors] == [ThrottledError]
        status = registry.status()[NAME]
        assert (status["state"], status["probe_in_flight"]) == ("half_open", True)
        assert status["consecutive_failures"] == 2
        assert registry.is_open(NAME)
    assert probe.results == ["probe ok"]
    assert registry.status()[NAME]["state"] == "closed"
    assert states(transitions) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_record_failure_never_reopens_a_half_open_circuit(registry: CircuitRegistry, clock: Clock) -> None:
    registry.configure(NAME, threshold=1, timeout=10)
    trip(registry)
    clock.now = 1010.0
    with held_call(registry, "probe ok") as probe:
        registry.record_failure(NAME)
        assert registry.status()[NAME]["state"] == "half_open"
    assert probe.results == ["probe ok"]
    assert registry.status()[NAME]["state"] == "closed"


def test_reset(registry: CircuitRegistry, transitions: list[Transition]) -> None:
    registry.configure(NAME, threshold=1)
    trip(registry)
    registry.reset(NAME)
    status = registry.status()[NAME]
    assert status["state"] == "closed"
    assert status["consecutive_failures"] == 0
    assert states(transitions)[-1] == ("open", "closed")


# ----------------------------------------------------------------------------------------- threads


def test_concurrent_failures_are_counted_exactly(registry: CircuitRegistry) -> None:
    registry.configure(NAME, threshold=1_000_000)
    threads_count, per_thread = 32, 200
    barrier = threading.Barrier(threads_count)

    def hammer(index: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            if (index + i) % 2:
                registry.record_failure(NAME)
            else:
                with pytest.raises(ClientError):
                    registry.call(NAME, raiser(throttle()), None)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = registry.status()[NAME]
    assert status["consecutive_failures"] == threads_count * per_thread
    assert status["state"] == "closed"


def test_concurrent_trip_opens_exactly_once(registry: CircuitRegistry, transitions: list[Transition]) -> None:
    registry.configure(NAME, threshold=100)
    barrier = threading.Barrier(32)

    def hammer() -> None:
        barrier.wait()
        for _ in range(10):
            registry.record_failure(NAME)

    threads = [threading.Thread(target=hammer) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert states(transitions) == [("closed", "open")]
    assert transitions[0].consecutive_failures == 100


def test_exactly_one_half_open_probe(registry: CircuitRegistry, clock: Clock) -> None:
    registry.configure(NAME, threshold=1, timeout=10)
    trip(registry)
    clock.now = 1010.0
    rejected: list[BaseException] = []
    other_runs: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def other() -> None:
        barrier.wait()
        for _ in range(20):
            try:
                registry.call(NAME, lambda: other_runs.append(2), None)
            except CircuitOpenError as error:
                with lock:
                    rejected.append(error)

    with held_call(registry, "recovered") as probe:
        others = [threading.Thread(target=other) for _ in range(16)]
        for thread in others:
            thread.start()
        for thread in others:
            thread.join()
        assert len(rejected) == 16 * 20
        assert (probe.runs, other_runs) == (1, [])
        assert registry.status()[NAME]["state"] == "half_open"
        assert registry.status()[NAME]["probe_in_flight"] is True
        assert registry.is_open(NAME)
        assert probe.thread.is_alive()
    assert probe.results == ["recovered"]
    assert registry.status()[NAME]["state"] == "closed"
    assert registry.call(NAME, lambda: "normal", None) == "normal"


def test_slow_call_does_not_block_other_callers(registry: CircuitRegistry) -> None:
    with held_call(registry, "slow") as slow:
        assert registry.call(NAME, lambda: "fast", None) == "fast"
        registry.record_failure(NAME)
        assert registry.status()[NAME]["consecutive_failures"] == 1
        assert slow.thread.is_alive()
    assert slow.results == ["slow"]


# --------------------------------------------------------------------------------- configuration


def test_env_configuration(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    monkeypatch.setenv(
        "THINGPRESS_CIRCUIT_CONFIG",
        json.dumps(
            {
                "default": {"threshold": 7, "timeout": 90},
                "iot:AttachPolicy": {"threshold": 2, "success_threshold": 2, "count_classes": ["throttled"]},
            }
        ),
    )
    registry = CircuitRegistry(clock=clock, on_transition=lambda _t: None)
    registry.record_success("iot:CreateThing")
    status = registry.status()
    assert (status["iot:CreateThing"]["threshold"], status["iot:CreateThing"]["timeout"]) == (7, 90)
    assert status["iot:CreateThing"]["success_threshold"] == 1
    policy = registry.config("iot:AttachPolicy")
    assert (policy.threshold, policy.timeout, policy.success_threshold) == (2, 90, 2)
    assert {c.value for c in policy.count_classes} == {"throttled"}
    with pytest.raises(EndpointConnectionError):
        registry.call("iot:AttachPolicy", raiser(EndpointConnectionError(endpoint_url="https://iot")), None)
    assert registry.status()["iot:AttachPolicy"]["consecutive_failures"] == 0
    configured = registry.configure("iot:AttachPolicy", threshold=4)
    assert (configured.threshold, configured.success_threshold) == (4, 2)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "THINGPRESS_CIRCUIT_CONFIG is not valid JSON"),
        ('["a"]', "must be a JSON object mapping circuit names"),
        ('{"default": {"treshold": 3}}', "unknown circuit setting"),
        ('{"default": {"threshold": 0}}', "threshold must be a positive integer"),
        ('{"default": {"timeout": -1}}', "timeout must be a positive number of seconds"),
        ('{"default": {"count_classes": ["slow"]}}', "unknown error class 'slow'"),
        ('{"default": {"count_classes": "throttled"}}', "count_classes must be a list"),
    ],
)
def test_invalid_env_configuration(monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    monkeypatch.setenv("THINGPRESS_CIRCUIT_CONFIG", value)
    registry = CircuitRegistry(on_transition=lambda _t: None)
    with pytest.raises(ValueError, match=message):
        registry.config(NAME)


def test_invalid_explicit_configuration_keeps_previous(registry: CircuitRegistry) -> None:
    registry.configure(NAME, threshold=3)
    with pytest.raises(ValueError, match="success_threshold must be a positive integer"):
        registry.configure(NAME, success_threshold=0)
    assert registry.config(NAME).threshold == 3
    assert registry.config(NAME).success_threshold == 1


# ------------------------------------------------------------------------------ telemetry of transitions


def test_transitions_emit_metrics_and_logs(
    clock: Clock, capsys: pytest.CaptureFixture[str], read_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    registry = CircuitRegistry(clock=clock, env={})
    registry.configure(NAME, threshold=1, timeout=5)
    capsys.readouterr()
    with pytest.raises(ClientError):
        registry.call(NAME, raiser(throttle()), None)
    clock.now = 1005.0
    registry.call(NAME, lambda: None, None)
    records = emf_records(capsys.readouterr().out)
    assert [r["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] for r in records] == [
        "CircuitOpened",
        "CircuitClosed",
    ]
    for record in records:
        directive = record["_aws"]["CloudWatchMetrics"][0]
        assert directive["Namespace"] == "Thingpress"
        assert [sorted(d) for d in directive["Dimensions"]] == [["Operation", "service"]]
        assert record["Operation"] == NAME
        assert record["service"] == "thingpress"
    logs = [line for line in read_logs() if line.get("circuit") == NAME]
    assert [(line["from_state"], line["to_state"]) for line in logs] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert logs[0]["level"] == "WARNING"
    assert "1 consecutive failures reached the threshold of 1" in logs[0]["message"]


def test_failing_sink_does_not_break_calls(clock: Clock) -> None:
    def broken(_transition: Transition) -> None:
        raise RuntimeError("sink down")

    registry = CircuitRegistry(clock=clock, on_transition=broken, env={})
    registry.configure(NAME, threshold=1)
    with pytest.raises(ClientError):
        registry.call(NAME, raiser(throttle()), None)
    assert registry.status()[NAME]["state"] == "open"


# --------------------------------------------------------------------------------- module interface


def test_module_level_functions_use_default_registry(registry: CircuitRegistry, clock: Clock) -> None:
    calls: list[str] = []

    @with_circuit_breaker("sqs:SendMessageBatch", fallback_function=lambda item: f"later {item}")
    def send(item: str) -> str:
        calls.append(item)
        return f"sent {item}"

    previous = circuit_state.set_default_registry(registry)
    try:
        assert circuit_state.default_registry() is registry
        config = configure_circuit("sqs:SendMessageBatch", threshold=2, timeout=15)
        assert (config.threshold, config.timeout) == (2, 15)
        assert send("a") == "sent a"
        record_failure("sqs:SendMessageBatch")
        record_success("sqs:SendMessageBatch")
        record_failure("sqs:SendMessageBatch")
        assert not circuit_is_open("sqs:SendMessageBatch")
        record_failure("sqs:SendMessageBatch")
        assert circuit_is_open("sqs:SendMessageBatch")
        assert send("b") == "later b"
        status = get_circuit_status()["sqs:SendMessageBatch"]
        assert status == {
            "state": "open",
            "consecutive_failures": 2,
            "last_failure_time": 1000.0,
            "opened_at": 1000.0,
            "threshold": 2,
            "timeout": 15,
            "success_threshold": 1,
            "probe_in_flight": False,
        }
        reset_circuit("sqs:SendMessageBatch")
        assert send("c") == "sent c"
    finally:
        circuit_state.set_default_registry(previous)
    assert calls == ["a", "c"]
    assert circuit_state.default_registry() is not registry


def test_default_registry_from_env_is_local_without_table() -> None:
    previous = circuit_state.set_default_registry(None)
    try:
        registry = circuit_state.default_registry()
        assert registry is circuit_state.default_registry()
        assert registry._store is None
    finally:
        circuit_state.set_default_registry(previous)


# -------------------------------------------------------------------------------------- fleet mode


@pytest.fixture
def circuit_table() -> Iterator[str]:
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName="circuits",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield "circuits"


def fleet_registry(table: str, clock: Clock, transitions: list[Transition]) -> CircuitRegistry:
    store = CircuitBreakerDynamoDBPersistence(
        table_name=table, boto3_client=boto3.client("dynamodb", region_name="us-east-1")
    )
    registry = CircuitRegistry(
        clock=clock, on_transition=transitions.append, store=store, env={}, store_cache_seconds=0
    )
    registry.configure(NAME, threshold=2, timeout=30)
    return registry


def stored_state(table: str) -> str:
    item = boto3.client("dynamodb", region_name="us-east-1").get_item(
        TableName=table, Key={"id": {"S": NAME}}
    )["Item"]
    return str(item["state"]["S"])


def test_fleet_mode_shares_state_between_environments(circuit_table: str, clock: Clock) -> None:
    seen_a: list[Transition] = []
    seen_b: list[Transition] = []
    env_a = fleet_registry(circuit_table, clock, seen_a)
    env_b = fleet_registry(circuit_table, clock, seen_b)
    assert env_b.call(NAME, lambda: "ok", None) == "ok"

    trip(env_a)
    assert stored_state(circuit_table) == "OPEN"
    calls: list[str] = []
    with pytest.raises(CircuitOpenError):
        env_b.call(NAME, lambda: calls.append("b"), None)
    assert calls == []
    assert env_b.status()[NAME]["state"] == "open"
    assert env_b.status()[NAME]["opened_at"] == 1000.0
    assert [(t.to_state.value, t.remote) for t in seen_b] == [("open", True)]

    clock.now = 1030.0
    with held_call(env_b, "probe ok") as probe:
        assert stored_state(circuit_table) == "HALF_OPEN"
        with pytest.raises(CircuitOpenError):
            env_a.call(NAME, lambda: calls.append("a"), None)
        assert env_a.status()[NAME]["state"] == "open"
    assert probe.results == ["probe ok"]
    assert stored_state(circuit_table) == "CLOSED"
    assert env_a.call(NAME, lambda: "a ok", None) == "a ok"
    assert env_a.status()[NAME]["state"] == "closed"
    assert [(t.to_state.value, t.remote) for t in seen_a] == [("open", False), ("closed", True)]
    assert [(t.to_state.value, t.remote) for t in seen_b] == [
        ("open", True),
        ("half_open", False),
        ("closed", False),
    ]
    assert calls == []


def test_fleet_failed_probe_reopens_for_everyone(circuit_table: str, clock: Clock) -> None:
    env_a = fleet_registry(circuit_table, clock, [])
    env_b = fleet_registry(circuit_table, clock, [])
    trip(env_a)
    clock.now = 1030.0
    with pytest.raises(ClientError):
        env_a.call(NAME, raiser(throttle()), None)
    assert stored_state(circuit_table) == "OPEN"
    clock.now = 1031.0
    with pytest.raises(CircuitOpenError):
        env_b.call(NAME, lambda: None, None)
    assert env_b.status()[NAME]["opened_at"] == 1030.0
    clock.now = 1060.0
    assert env_b.call(NAME, lambda: "recovered", None) == "recovered"
    assert stored_state(circuit_table) == "CLOSED"


def test_fleet_store_outage_fails_open(clock: Clock) -> None:
    with mock_aws():
        store = CircuitBreakerDynamoDBPersistence(
            table_name="missing-table", boto3_client=boto3.client("dynamodb", region_name="us-east-1")
        )
        registry = CircuitRegistry(
            clock=clock, on_transition=lambda _t: None, store=store, env={}, store_cache_seconds=0
        )
        registry.configure(NAME, threshold=1, timeout=10)
        assert registry.call(NAME, lambda: "ok", None) == "ok"
        trip(registry)
        with pytest.raises(CircuitOpenError):
            registry.call(NAME, lambda: None, None)
        clock.now = 1010.0
        assert registry.call(NAME, lambda: "probe", None) == "probe"
        assert registry.status()[NAME]["state"] == "closed"
