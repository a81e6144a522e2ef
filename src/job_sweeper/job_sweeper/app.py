"""JobSweeper Lambda handler: on an EventBridge schedule, finish the jobs that stopped making progress.

A thin shell around :mod:`job_sweeper.sweeper`: the scheduled event's content is not used, metrics
are flushed once per invocation and the per-API retry and throttle counts are emitted at the end.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from job_sweeper.sweeper import SweepConfig, sweep_jobs
from layer_utils.jobs import JobStore, store_for_function
from layer_utils.telemetry import count_in_invocation, end_invocation, logger, metrics, tracer

_runtime: tuple[SweepConfig, JobStore] | None = None


def runtime() -> tuple[SweepConfig, JobStore]:
    """Return the configuration and the job store, built once per execution environment.

    Returns:
        The configuration and the job store.

    Raises:
        ValueError: naming the environment variable, when the configuration is invalid.

    """
    global _runtime  # noqa: PLW0603 - one set of clients per execution environment
    if _runtime is None:
        config = SweepConfig.from_env()
        store = store_for_function(config.jobs_table)
        _runtime = (config, store)
    return _runtime


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Run one sweep; returns how many unfinished jobs were examined and the ones finished."""
    try:
        config, store = runtime()
        result = sweep_jobs(store, config, emit=count_in_invocation)
        logger.info("Sweep done", extra={"examined": result.examined, "swept": len(result.swept)})
        if result.failed:
            # The invocation fails, so the function's error alarm tells the operator.
            raise RuntimeError(f"{len(result.failed)} stuck jobs could not be finished: {result.failed[:10]}")
        return result.to_dict()
    finally:
        end_invocation()
