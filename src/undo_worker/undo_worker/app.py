"""UndoFunction Lambda handler: undo requests from the UndoQueue in, a job's IoT resources removed.

A thin shell around :mod:`undo_worker.requests`: Powertools' ``BatchProcessor`` reports a failed
record back to SQS (``ReportBatchItemFailures``), metrics are flushed once per invocation and the
circuit states and the per-API retry and throttle counts are emitted at its end. Clients come from
the layer's client factory; the rate limiter (the delete APIs' quotas, this invocation's share) and
the circuit registry live as long as the execution environment.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from layer_utils.aws_utils import get_client
from layer_utils.cert_utils import certificate_arn, parse_function_arn
from layer_utils.circuit import CircuitRegistry
from layer_utils.jobs import store_for_function
from layer_utils.rate_limit import RateLimiter
from layer_utils.telemetry import count_in_invocation, end_invocation, logger, metrics, tracer
from undo_worker.config import UndoConfig, UndoServices
from undo_worker.requests import UnusableRequestError, handle_request, parse_request

_runtime: tuple[UndoConfig, UndoServices] | None = None


def runtime() -> tuple[UndoConfig, UndoServices]:
    """Return the configuration and the services, built once per execution environment.

    Raises:
        ValueError: naming the environment variable, when the configuration is invalid.

    """
    global _runtime  # noqa: PLW0603 - one set of clients per execution environment
    if _runtime is None:
        config = UndoConfig.from_env()
        services = UndoServices(
            iot=get_client("iot"),
            sqs=get_client("sqs"),
            jobs=store_for_function(config.jobs_table),
            limiter=RateLimiter(config.rates),
            registry=CircuitRegistry.from_env(dynamodb=lambda: get_client("dynamodb")),
            emit=count_in_invocation,
        )
        _runtime = (config, services)
    return _runtime


def _deadline(context: LambdaContext, margin_ms: int) -> Any:
    effective = min(margin_ms, context.get_remaining_time_in_millis() // 4)
    return lambda: context.get_remaining_time_in_millis() < effective


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Process a batch of undo requests; returns the ``batchItemFailures`` response."""
    try:
        config, services = runtime()
        partition, region, account = parse_function_arn(context.invoked_function_arn)
        out_of_time = _deadline(context, config.deadline_margin_ms)

        def cert_arn(certificate_id: str) -> str:
            return certificate_arn(certificate_id, region=region, account=account, partition=partition)

        def record_handler(record: SQSRecord) -> None:
            try:
                request = parse_request(record.body)
            except UnusableRequestError as error:
                logger.error(
                    "Unusable undo request; it goes to the dead-letter queue after maxReceiveCount",
                    extra={"message_id": record.message_id, "reason": str(error)},
                )
                raise
            logger.set_correlation_id(request.job_id)
            handle_request(request, services, config, cert_arn=cert_arn, out_of_time=out_of_time)

        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return dict(
            process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
        )
    finally:
        end_invocation(None if _runtime is None else _runtime[1].registry.status())
