"""The template's CloudWatch dashboard and alarms: read as metric specs, and drawn from a local run.

`specs` reads the dashboard and alarms of ``template.yaml``; `render` draws the dashboard from the
metrics a local run captured, with the circuit summary of `circuits`.
"""

from thingpress.dashboard.circuits import circuit_status_table
from thingpress.dashboard.render import (
    STATUS_AWS_ONLY,
    STATUS_DATA,
    STATUS_NO_DATA,
    PlotLine,
    plot_line,
    render_dashboard,
)
from thingpress.dashboard.specs import (
    AWS_NAMESPACES,
    AlarmSpec,
    DashboardError,
    MetricSpec,
    WidgetSpec,
    load_alarms,
    load_dashboard,
)

__all__ = [
    "AWS_NAMESPACES",
    "STATUS_AWS_ONLY",
    "STATUS_DATA",
    "STATUS_NO_DATA",
    "AlarmSpec",
    "DashboardError",
    "MetricSpec",
    "PlotLine",
    "WidgetSpec",
    "circuit_status_table",
    "load_alarms",
    "load_dashboard",
    "plot_line",
    "render_dashboard",
]
