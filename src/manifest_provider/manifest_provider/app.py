"""ManifestProvider Lambda handler: intake queue records in, import messages out.

A thin shell around :mod:`manifest_provider.provider`: Powertools' ``BatchProcessor`` reports each
failed record (transient AWS errors) back to SQS for redelivery, the logger carries the job id as
correlation id, metrics are flushed once per invocation and the circuit states are emitted at the end
of every invocation. The record's ``ApproximateReceiveCount`` tells the provider when a delivery is
the last one before the IntakeDLQ (``THINGPRESS_MAX_RECEIVE_COUNT``), so that it fails the job instead.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from layer_utils.aws_utils import get_client
from layer_utils.circuit import CircuitRegistry
from layer_utils.jobs import store_for_function
from layer_utils.telemetry import count_in_invocation, end_invocation, logger, metrics, tracer
from manifest_provider.config import ProviderConfig, Services
from manifest_provider.provider import handle_intake_body

_runtime: tuple[ProviderConfig, Services] | None = None


def runtime() -> tuple[ProviderConfig, Services]:
    """Return the configuration and services, built once per execution environment.

    Returns:
        The configuration and the services (whose circuit registry lives as long as the environment).

    Raises:
        ValueError: naming the environment variable, when the configuration is invalid.

    """
    global _runtime  # noqa: PLW0603 - one set of clients per execution environment
    if _runtime is None:
        config = ProviderConfig.from_env()
        jobs = store_for_function(config.jobs_table)
        services = Services(
            s3=get_client("s3"),
            sqs=get_client("sqs"),
            iot=get_client("iot"),
            jobs=jobs,
            emit=count_in_invocation,
            registry=CircuitRegistry.from_env(dynamodb=lambda: get_client("dynamodb")),
        )
        _runtime = (config, services)
    return _runtime


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    """Process one intake record; an exception marks it failed so SQS delivers it again.

    On the record's last delivery the provider fails the job instead of raising, so the record is
    acknowledged rather than moved to the IntakeDLQ.
    """
    config, services = runtime()
    results = handle_intake_body(
        record.body,
        services,
        config,
        # The lease owner is the SQS message: its redelivery after a failure takes its own lease back
        # at once, while another message for the same manifest (a duplicate S3 event) finds it busy.
        owner=record.message_id,
        remaining_ms=lambda_context.get_remaining_time_in_millis,
        attempt=int(record.attributes.get("ApproximateReceiveCount") or 1),
    )
    for result in results:
        logger.info("Intake record processed", extra=dict(result.__dict__))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Process a batch of intake queue records; returns the ``batchItemFailures`` response."""
    # One processor per invocation: the local stack may run invocations of a function concurrently,
    # and a batch whose every record failed is reported like any other (all items), not raised.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    try:
        return dict(
            process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
        )
    finally:
        end_invocation(None if _runtime is None else _runtime[1].registry.status())
