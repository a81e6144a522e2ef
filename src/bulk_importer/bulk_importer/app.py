"""BulkImporter Lambda handler: import queue records in, certificates in AWS IoT Core out.

A thin shell around :mod:`bulk_importer.importer`: Powertools' ``BatchProcessor`` reports each
failed record back to SQS (``ReportBatchItemFailures``) for redelivery, the logger carries the job id
as correlation id, metrics are flushed once per invocation, and the circuit states and the per-API
retry and throttle counts are emitted at the end of every invocation.

A record whose body is not an import message cannot be attributed to a job (its job id may be
unreadable), so it is reported as a batch item failure: SQS redelivers it until ``maxReceiveCount``
and then moves it to the ImportDLQ, whose alarm tells the operator. It never fails its siblings.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from bulk_importer.config import ImporterConfig, Services
from bulk_importer.fleet_budget import DynamoBudgetStore, FleetBudget, FleetLease
from bulk_importer.importer import (
    UnusableMessageError,
    deadline,
    handle_import_body,
)
from bulk_importer.iot_import import ArnContext
from layer_utils.aws_utils import get_client
from layer_utils.circuit import CircuitRegistry
from layer_utils.jobs import store_for_function
from layer_utils.rate_limit import RateLimiter
from layer_utils.telemetry import count_in_invocation, end_invocation, logger, metrics, tracer

_runtime: tuple[ImporterConfig, Services] | None = None
_budget: FleetBudget | None = None


def runtime() -> tuple[ImporterConfig, Services]:
    """Return the configuration and services, built once per execution environment.

    The rate limiter and the circuit registry live as long as the execution environment, so their
    state carries over from one invocation to the next.

    Returns:
        The configuration and the services.

    Raises:
        ValueError: naming the environment variable, when the configuration is invalid.

    """
    global _runtime, _budget  # noqa: PLW0603 - one set of clients per execution environment
    if _runtime is None:
        config = ImporterConfig.from_env()
        jobs = store_for_function(config.jobs_table)
        services = Services(
            iot=get_client("iot"),
            sqs=get_client("sqs"),
            jobs=jobs,
            limiter=RateLimiter(config.rates),
            rng=random.Random(),  # noqa: S311 - backoff jitter, not security  # nosec B311
            emit=count_in_invocation,
            registry=CircuitRegistry.from_env(dynamodb=lambda: get_client("dynamodb")),
        )
        if config.budget_table:
            store = DynamoBudgetStore(get_client("dynamodb"), config.budget_table)
            _budget = FleetBudget(store, config.quotas)
        _runtime = (config, services)
    return _runtime


@tracer.capture_method
def process_record(
    record: SQSRecord,
    config: ImporterConfig,
    services: Services,
    arns: ArnContext,
    out_of_time: Callable[[], bool],
) -> None:
    """Process one import record; an exception marks it failed so SQS delivers it again."""
    try:
        handle_import_body(record.body, services, config, arns=arns, out_of_time=out_of_time)
    except UnusableMessageError as error:
        logger.set_correlation_id(None)
        logger.error(
            "Unusable import queue record; it goes to the dead-letter queue after maxReceiveCount",
            extra={"message_id": record.message_id, "reason": str(error)},
        )
        raise


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Process a batch of import queue records; returns the ``batchItemFailures`` response."""
    lease: FleetLease | None = None
    try:
        config, services = runtime()
        if _budget is not None:
            # One budget entry per invocation (not per execution environment: the local stack runs
            # concurrent invocations in one process), held while the batch is processed.
            lease, limiter = _budget.invocation(context.aws_request_id)
            services = replace(services, limiter=limiter, calls_done=lease.pause)
        arns = ArnContext.from_function_arn(context.invoked_function_arn)
        out_of_time = deadline(context.get_remaining_time_in_millis, config.deadline_margin_ms)

        def record_handler(record: SQSRecord) -> None:
            process_record(record, config, services, arns, out_of_time)

        # One processor per invocation: its state is per batch, and the local stack runs concurrent
        # invocations in one process. A batch whose records all failed is still answered with
        # batchItemFailures rather than an exception, so the invocation's metrics and logs are complete.
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return dict(
            process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
        )
    finally:
        if lease is not None:
            lease.release()
        end_invocation(None if _runtime is None else _runtime[1].registry.status())
