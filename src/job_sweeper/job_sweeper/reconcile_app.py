"""ReconcileFunction Lambda handler: on an optional EventBridge schedule, reconcile the recent jobs.

A thin shell around :mod:`job_sweeper.recent_drift`: the scheduled event's content is not used,
metrics are flushed once per invocation and the per-API retry and throttle counts are emitted at
the end.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from job_sweeper.recent_drift import RecentDriftConfig, reconcile_recent_jobs
from layer_utils.aws_utils import get_client
from layer_utils.jobs import JobStore, store_for_function
from layer_utils.telemetry import count_in_invocation, end_invocation, logger, metrics, tracer

_runtime: tuple[RecentDriftConfig, JobStore, Any] | None = None


def runtime() -> tuple[RecentDriftConfig, JobStore, Any]:
    """Return the configuration, the job store and the IoT client, built once per execution environment.

    Returns:
        The configuration, the job store and the IoT client.

    Raises:
        ValueError: naming the environment variable, when the configuration is invalid.

    """
    global _runtime  # noqa: PLW0603 - one set of clients per execution environment
    if _runtime is None:
        config = RecentDriftConfig.from_env()
        _runtime = (config, store_for_function(config.jobs_table), get_client("iot"))
    return _runtime


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Reconcile the recently finished jobs; returns the jobs checked, the drifting and the skipped."""
    try:
        config, store, iot = runtime()
        result = reconcile_recent_jobs(iot, store, config, emit=count_in_invocation)
        logger.info(
            "Reconcile done",
            extra={"checked": len(result.checked), "drifts": result.drifts, "skipped": len(result.skipped)},
        )
        return result.to_dict()
    finally:
        end_invocation()
