"""The template's CloudWatch dashboard and alarms read as metric specs.

`load_dashboard` and `load_alarms` read ``template.yaml``, resolve the intrinsics (``!Sub`` of the
DashboardBody, ``!Ref``/``!GetAtt`` of the alarms) and return what each widget plots and what each
alarm watches, so tests can compare them with what the code really emits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from thingpress.cfn import Resolver, load_template
from thingpress.local.metrics_capture import MetricSeries

__all__ = [
    "AWS_NAMESPACES",
    "AlarmSpec",
    "DashboardError",
    "MetricSpec",
    "WidgetSpec",
    "load_alarms",
    "load_dashboard",
]

AWS_NAMESPACES: Final = ("AWS/SQS", "AWS/Lambda")
"""Namespaces of metrics AWS publishes itself (the code never emits them)."""


class DashboardError(Exception):
    """The dashboard or an alarm in the template cannot be read; the message says which and why."""


@dataclass(frozen=True)
class MetricSpec(MetricSeries):
    """One metric a widget plots or an alarm watches.

    ``stat`` and ``period`` are the effective ones (the row's own, else the widget's);
    ``metric_id`` is the alarm's query id.
    """

    stat: str
    period: int
    label: str = ""
    metric_id: str = ""

    @property
    def aws_published(self) -> bool:
        """Whether AWS publishes this metric (an ``AWS/*`` namespace)."""
        return self.namespace in AWS_NAMESPACES


@dataclass(frozen=True)
class WidgetSpec:
    """One metric widget of the dashboard: where it sits, its title, options and metrics."""

    title: str
    metrics: tuple[MetricSpec, ...]
    x: int
    y: int
    width: int
    height: int
    view: str
    stacked: bool
    horizontal_annotations: tuple[tuple[str, float], ...]
    y_min: float | None
    y_max: float | None


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm: the metrics it reads, its math and threshold, and its actions."""

    logical_id: str
    description: str
    metrics: tuple[MetricSpec, ...]
    expressions: tuple[str, ...]
    threshold: float
    comparison: str
    evaluation_periods: int
    datapoints_to_alarm: int
    treat_missing_data: str
    alarm_actions: tuple[str, ...]
    ok_actions: tuple[str, ...]


# --- reading the template ---------------------------------------------------------------------------


class _AnyAttribute(dict[str, Any]):
    """Physical-id stand-in for a resource not created locally: every attribute is its logical id."""

    def __init__(self, logical_id: str) -> None:
        super().__init__()
        self.logical_id = logical_id

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return self.logical_id


def _resolver(
    template: Mapping[str, Any],
    physical_ids: Mapping[str, Mapping[str, Any]] | None,
    parameters: Mapping[str, str] | None,
    region: str,
    stack_name: str,
) -> Resolver:
    known = {key: dict(value) for key, value in (physical_ids or {}).items()}
    ids: dict[str, dict[str, Any]] = {
        logical_id: known.get(logical_id) or _AnyAttribute(logical_id)
        for logical_id in template.get("Resources") or {}
    }
    return Resolver(template, parameters, region=region, stack_name=stack_name, physical_ids=ids)


def _dimensions(pairs: Sequence[Any], where: str) -> tuple[tuple[str, str], ...]:
    if len(pairs) % 2:
        raise DashboardError(f"{where} has a dimension name without a value.")
    names = [str(name) for name in pairs[0::2]]
    if len(set(names)) != len(names):
        raise DashboardError(f"{where} repeats a dimension name.")
    return tuple(sorted(zip(names, (str(value) for value in pairs[1::2]), strict=True)))


def _metric_row(
    row: Any, previous: Sequence[str], widget: Mapping[str, Any], where: str
) -> tuple[MetricSpec, list[str]]:
    if not isinstance(row, list) or not row:
        raise DashboardError(f"{where} is not a metric array.")
    options = row[-1] if isinstance(row[-1], dict) else {}
    fields = list(row[:-1] if options else row)
    if not fields and "expression" in options:
        raise DashboardError(f"{where} is a math expression, which the local renderer does not draw.")
    # "." repeats the value at the same position of the previous row (CloudWatch's shorthand).
    fields = [previous[i] if value == "." and i < len(previous) else value for i, value in enumerate(fields)]
    if len(fields) < 2 or not all(isinstance(value, str) for value in fields):
        raise DashboardError(f"{where} needs a namespace, a metric name and dimension pairs.")
    spec = MetricSpec(
        namespace=fields[0],
        name=fields[1],
        dimensions=_dimensions(fields[2:], where),
        stat=str(options.get("stat") or widget.get("stat") or "Average"),
        period=int(options.get("period") or widget.get("period") or 300),
        label=str(options.get("label") or fields[1]),
    )
    return spec, fields


def _widget(raw: Mapping[str, Any], index: int) -> WidgetSpec:
    properties = raw.get("properties") or {}
    title = str(properties.get("title") or f"widget {index}")
    where = f"Dashboard widget {index} ({title})"
    metrics: list[MetricSpec] = []
    previous: list[str] = []
    for row_index, row in enumerate(properties.get("metrics") or []):
        spec, previous = _metric_row(row, previous, properties, f"{where}, metric {row_index}")
        metrics.append(spec)
    horizontal = (properties.get("annotations") or {}).get("horizontal") or []
    left = (properties.get("yAxis") or {}).get("left") or {}
    return WidgetSpec(
        title=title,
        metrics=tuple(metrics),
        x=int(raw.get("x", 0)),
        y=int(raw.get("y", 0)),
        width=int(raw.get("width", 6)),
        height=int(raw.get("height", 6)),
        view=str(properties.get("view", "timeSeries")),
        stacked=bool(properties.get("stacked", False)),
        horizontal_annotations=tuple((str(a.get("label", "")), float(a["value"])) for a in horizontal),
        y_min=None if left.get("min") is None else float(left["min"]),
        y_max=None if left.get("max") is None else float(left["max"]),
    )


def load_dashboard(
    template_path: str | Path,
    *,
    physical_ids: Mapping[str, Mapping[str, Any]] | None = None,
    parameters: Mapping[str, str] | None = None,
    region: str = "us-east-1",
    stack_name: str = "thingpress",
) -> list[WidgetSpec]:
    """Return the metric widgets of the template's ``AWS::CloudWatch::Dashboard``, in template order.

    A body that cannot be resolved raises ``TemplateError``, an unreadable template ``OSError``.

    Args:
        template_path: The template.
        physical_ids: ``Ref`` and attributes per logical id of created resources; a resource without
            one resolves to its logical id.
        parameters: Parameter overrides.
        region: The region.
        stack_name: The stack name.

    Returns:
        The widgets.

    Raises:
        DashboardError: The template has no single dashboard, its body is not JSON or a metric row is
            malformed.

    """
    template = load_template(template_path)
    resources: Mapping[str, Any] = template.get("Resources") or {}
    dashboards = [lid for lid, res in resources.items() if res.get("Type") == "AWS::CloudWatch::Dashboard"]
    if len(dashboards) != 1:
        raise DashboardError(
            f"The template has {len(dashboards)} dashboards; the renderer needs exactly one."
        )
    logical_id = dashboards[0]
    resolver = _resolver(template, physical_ids, parameters, region, stack_name)
    body = (resources[logical_id].get("Properties") or {}).get("DashboardBody")
    text = resolver.resolve(body, where=f"Resources.{logical_id}.Properties.DashboardBody")
    try:
        document = json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise DashboardError(f"The DashboardBody of {logical_id} is not valid JSON: {error}") from None
    return [
        _widget(raw, index)
        for index, raw in enumerate(document.get("widgets") or [])
        if raw.get("type") == "metric"
    ]


def _alarm_metric(stat: Mapping[str, Any], metric_id: str, where: str) -> MetricSpec:
    metric = stat.get("Metric") or {}
    if "Namespace" not in metric or "MetricName" not in metric:
        raise DashboardError(f"{where} has no Namespace or MetricName.")
    return MetricSpec(
        namespace=str(metric["Namespace"]),
        name=str(metric["MetricName"]),
        dimensions=tuple(sorted((str(d["Name"]), str(d["Value"])) for d in metric.get("Dimensions") or [])),
        stat=str(stat.get("Stat", "")),
        period=int(stat.get("Period", 60)),
        metric_id=metric_id,
    )


def _alarm(logical_id: str, properties: Mapping[str, Any]) -> AlarmSpec:
    where = f"Alarm {logical_id}"
    metrics: list[MetricSpec] = []
    expressions: list[str] = []
    if "MetricName" in properties:
        stat = {
            "Metric": {key: properties.get(key) for key in ("Namespace", "MetricName", "Dimensions")},
            "Stat": properties.get("Statistic") or properties.get("ExtendedStatistic", ""),
            "Period": properties.get("Period", 60),
        }
        metrics.append(_alarm_metric(stat, "m1", where))
    for query in properties.get("Metrics") or []:
        query_id = str(query.get("Id", ""))
        if "Expression" in query:
            expressions.append(str(query["Expression"]))
        elif "MetricStat" in query:
            metrics.append(_alarm_metric(query["MetricStat"], query_id, f"{where}, query {query_id}"))
        else:
            raise DashboardError(f"{where}, query {query_id} has neither MetricStat nor Expression.")
    if not metrics:
        raise DashboardError(f"{where} reads no metric.")
    evaluation = int(properties.get("EvaluationPeriods", 1))
    return AlarmSpec(
        logical_id=logical_id,
        description=str(properties.get("AlarmDescription", "")),
        metrics=tuple(metrics),
        expressions=tuple(expressions),
        threshold=float(properties.get("Threshold", math.nan)),
        comparison=str(properties.get("ComparisonOperator", "")),
        evaluation_periods=evaluation,
        datapoints_to_alarm=int(properties.get("DatapointsToAlarm", evaluation)),
        treat_missing_data=str(properties.get("TreatMissingData", "missing")),
        alarm_actions=tuple(str(action) for action in properties.get("AlarmActions") or []),
        ok_actions=tuple(str(action) for action in properties.get("OKActions") or []),
    )


def load_alarms(
    template_path: str | Path,
    *,
    physical_ids: Mapping[str, Mapping[str, Any]] | None = None,
    parameters: Mapping[str, str] | None = None,
    region: str = "us-east-1",
    stack_name: str = "thingpress",
) -> list[AlarmSpec]:
    """Return the template's ``AWS::CloudWatch::Alarm`` resources (those whose condition holds).

    Arguments as for :func:`load_dashboard`. Raises :class:`DashboardError` for an alarm that
    reads no metric or has a malformed query, ``TemplateError`` when a property cannot be resolved.
    """
    template = load_template(template_path)
    resolver = _resolver(template, physical_ids, parameters, region, stack_name)
    alarms = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::CloudWatch::Alarm" or not resolver.resource_enabled(logical_id):
            continue
        properties = resolver.resolve(
            resource.get("Properties") or {}, where=f"Resources.{logical_id}.Properties"
        )
        alarms.append(_alarm(logical_id, properties))
    return alarms
