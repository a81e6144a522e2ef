"""The optional scheduled reconcile: nothing without ``ReconcileSchedule``, its schedule and alarm with it."""

from __future__ import annotations

import pytest

from testing.policies import ResolvedTemplate

SCHEDULED = ("ReconcileFunction", "ReconcileRole", "ReconcileLogGroup", "ReconcileDriftAlarm")


def enabled(parameters: dict[str, str]) -> set[str]:
    stack = ResolvedTemplate(parameters)
    return {name for name in stack.template["Resources"] if stack.resolver.resource_enabled(name)}


def test_without_a_schedule_there_is_no_reconcile_function_schedule_or_alarm() -> None:
    resources = enabled({})
    assert not resources & set(SCHEDULED)
    assert "JobSweeperFunction" in resources


@pytest.mark.parametrize("schedule", ["rate(1 day)", "cron(0 3 * * ? *)"])
def test_with_a_schedule_the_function_runs_on_it_and_the_alarm_watches_drift(schedule: str) -> None:
    parameters = {"ReconcileSchedule": schedule, "ReconcileLookbackHours": "6"}
    assert enabled(parameters) >= set(SCHEDULED)
    stack = ResolvedTemplate(parameters)
    function = stack.template["Resources"]["ReconcileFunction"]["Properties"]
    (event,) = function["Events"].values()
    assert event["Type"] == "Schedule"
    assert stack.resolve(event["Properties"]["Schedule"], "ReconcileFunction") == schedule
    environment = stack.resolve(function["Environment"]["Variables"], "ReconcileFunction")
    assert environment["THINGPRESS_RECONCILE_LOOKBACK_HOURS"] == "6"
    alarm = stack.resolve(stack.template["Resources"]["ReconcileDriftAlarm"]["Properties"], "alarm")
    assert (alarm["MetricName"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "ReconcileDrift",
        "GreaterThanThreshold",
        0,
    )
    assert alarm["Namespace"] == stack.resolve({"Ref": "MetricsNamespace"}, "alarm")
