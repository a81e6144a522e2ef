"""Every alarm watches a metric that really exists, and tells someone.

Alarms on the Thingpress namespace must read series the code emits (captured from a local run of
the real handlers, the scenario of test_dashboard_metrics); alarms on AWS namespaces must name the
stack's own queues and functions; every alarm must notify the SNS alarm topic.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from layer_utils import telemetry
from test_dashboard_metrics import NAMESPACE, REFUSALS, SERVICE, TEMPLATE, Scenario, run_scenario
from thingpress.cfn import load_template
from thingpress.dashboard import AlarmSpec, load_alarms

IOT_WRITE_CIRCUITS = {
    "iot:RegisterCertificateWithoutCA",
    "iot:CreateThing",
    "iot:AttachThingPrincipal",
    "iot:AttachPolicy",
    "iot:AddThingToThingGroup",
}
# Metric-math functions and operators that may appear in an alarm expression.
MATH_WORDS = {"MAX", "MIN", "SUM", "AVG", "IF", "FILL", "AND", "OR", "NOT", "METRICS", "ABS", "CEIL", "FLOOR"}


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return run_scenario()


@pytest.fixture(scope="module")
def alarms(scenario: Scenario) -> list[AlarmSpec]:
    facts = scenario.capture.stack
    return load_alarms(TEMPLATE, physical_ids=facts.physical_ids, parameters=facts.parameters)


def test_the_template_has_the_expected_alarms(alarms: list[AlarmSpec]) -> None:
    assert {alarm.logical_id for alarm in alarms} >= {
        "IntakeDLQAlarm",
        "ImportDLQAlarm",
        "CircuitOpenAlarm",
        "ManifestProviderErrorsAlarm",
        "BulkImporterErrorsAlarm",
        "ImportQueueAgeAlarm",
        "StuckImportAlarm",
        "JobSweeperErrorsAlarm",
        "JobsSweptAlarm",
        "ImportMessagesRefusedAlarm",
    }


def test_thingpress_alarm_metrics_are_emitted_series(scenario: Scenario, alarms: list[AlarmSpec]) -> None:
    emitted = scenario.capture.emitted()
    checked = 0
    for alarm in alarms:
        for metric in alarm.metrics:
            if metric.namespace in ("AWS/SQS", "AWS/Lambda"):
                continue
            assert metric.namespace == NAMESPACE, (alarm.logical_id, metric)
            assert metric.dimension_map.get("service") == SERVICE, (alarm.logical_id, metric)
            assert emitted.get(metric.key), (
                f"{alarm.logical_id} reads {metric.name} {metric.dimension_map}, never emitted"
            )
            checked += 1
    assert checked >= 6  # five circuit gauges and CertificatesImported


def test_aws_alarm_metrics_name_the_stacks_queues_and_functions(
    scenario: Scenario, alarms: list[AlarmSpec]
) -> None:
    checked = 0
    for alarm in alarms:
        for metric in alarm.metrics:
            if metric.namespace == "AWS/SQS":
                assert set(metric.dimension_map) == {"QueueName"}, (alarm.logical_id, metric)
                assert metric.dimension_map["QueueName"] in scenario.queue_names, (alarm.logical_id, metric)
                assert metric.name in {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"}
            elif metric.namespace == "AWS/Lambda":
                assert set(metric.dimension_map) == {"FunctionName"}, (alarm.logical_id, metric)
                assert metric.dimension_map["FunctionName"] in scenario.function_names, (
                    alarm.logical_id,
                    metric,
                )
                assert metric.name == "Errors"
            else:
                continue
            checked += 1
    assert checked >= 6


def test_circuit_open_alarm_covers_every_iot_write_circuit_at_the_open_value(alarms: list[AlarmSpec]) -> None:
    (alarm,) = [alarm for alarm in alarms if alarm.logical_id == "CircuitOpenAlarm"]
    assert {
        m.dimension_map["Operation"] for m in alarm.metrics if m.name == "CircuitState"
    } == IOT_WRITE_CIRCUITS
    assert {(m.stat, m.period) for m in alarm.metrics} == {("Maximum", 60)}
    assert alarm.threshold == telemetry.CIRCUIT_STATE_VALUES["open"]
    assert alarm.comparison == "GreaterThanOrEqualToThreshold"


def test_circuit_open_alarm_fires_on_the_captured_run(scenario: Scenario, alarms: list[AlarmSpec]) -> None:
    """The scenario opened the register circuit: the alarm's MAX over its inputs reached the threshold."""
    (alarm,) = [alarm for alarm in alarms if alarm.logical_id == "CircuitOpenAlarm"]
    emitted = scenario.capture.emitted()
    highest = max(d.value for metric in alarm.metrics for d in emitted.get(metric.key, []))
    assert highest >= alarm.threshold


def test_refused_messages_alarm_covers_every_reason_and_fires_on_the_captured_run(
    scenario: Scenario, alarms: list[AlarmSpec]
) -> None:
    """The scenario sent one forged or late import message per reason: any of them reaches the threshold."""
    (alarm,) = [alarm for alarm in alarms if alarm.logical_id == "ImportMessagesRefusedAlarm"]
    assert {m.name for m in alarm.metrics} == {telemetry.IMPORT_MESSAGES_REFUSED}
    assert sorted(m.dimension_map["Reason"] for m in alarm.metrics) == sorted(REFUSALS)
    assert {(m.stat, m.period) for m in alarm.metrics} == {("Sum", 300)}
    assert (alarm.threshold, alarm.comparison) == (1, "GreaterThanOrEqualToThreshold")
    emitted = scenario.capture.emitted()
    for metric in alarm.metrics:
        assert sum(d.value for d in emitted[metric.key]) >= alarm.threshold, metric


def test_expressions_only_reference_declared_queries(alarms: list[AlarmSpec]) -> None:
    expressions = 0
    for alarm in alarms:
        ids = {metric.metric_id for metric in alarm.metrics}
        for expression in alarm.expressions:
            words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression)) - MATH_WORDS
            assert words, expression
            assert words <= ids, f"{alarm.logical_id}: {expression} references {sorted(words - ids)}"
            assert ids <= words, f"{alarm.logical_id}: {expression} ignores {sorted(ids - words)}"
            expressions += 1
    assert expressions >= 2


def _sns_topics(template: dict[str, Any]) -> set[str]:
    return {lid for lid, res in template["Resources"].items() if res.get("Type") == "AWS::SNS::Topic"}


def test_every_alarm_notifies_the_sns_topic() -> None:
    template = load_template(TEMPLATE)
    topics = _sns_topics(template)
    assert topics
    alarms = {
        lid: res for lid, res in template["Resources"].items() if res.get("Type") == "AWS::CloudWatch::Alarm"
    }
    assert alarms
    for logical_id, resource in alarms.items():
        properties = resource["Properties"]
        for key in ("AlarmActions", "OKActions"):
            actions = properties.get(key) or []
            assert actions, f"{logical_id} has no {key}"
            for action in actions:
                assert isinstance(action, dict) and action.get("Ref") in topics, (logical_id, key, action)


def test_resolved_alarm_actions_point_at_the_topic(scenario: Scenario, alarms: list[AlarmSpec]) -> None:
    (logical_id,) = _sns_topics(load_template(TEMPLATE))
    topic = scenario.capture.stack.physical_ids[logical_id]["Ref"]
    for alarm in alarms:
        assert alarm.alarm_actions == (topic,), alarm.logical_id
        assert alarm.ok_actions == (topic,), alarm.logical_id
