"""Sending import messages to SQS in as few ``SendMessageBatch`` calls as the limits allow.

Messages are buffered until the next one would break a batch limit (10 messages, or the batch byte
budget) and then sent together. Entries SQS reports in ``Failed`` are retried with exponential
backoff and full jitter (only after a failure; there is no pacing sleep on the happy path); a
message still unsent after the last attempt is handed back to the caller, which records its entries
as failed. Errors of the whole call (throttling, network) are already retried by botocore; when they
persist they are raised, so the SQS record is retried from the last checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from layer_utils.messages import (
    DEFAULT_MAX_BATCH_BYTES,
    SQS_MAX_BATCH_ENTRIES,
    ImportMessage,
    body_size,
    encode_import_message,
)
from layer_utils.protected import SEND_OPERATION, protected_call
from layer_utils.telemetry import logger

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from layer_utils.circuit import CircuitRegistry


@dataclass
class SendReport:
    """What happened to the messages handed to the sender since the last ``take``."""

    sent: list[ImportMessage] = field(default_factory=list)
    failed: list[tuple[ImportMessage, str]] = field(default_factory=list)


class MessageSender:
    """Buffers import messages and sends them with ``SendMessageBatch``.

    Args:
        sqs: the SQS client.
        queue_url: the import queue.
        registry: the circuit registry the send call goes through.
        sleep: sleeps between attempts (injected so tests are instant).
        random: returns a float in [0, 1) for the jitter (injected so tests are deterministic).
        max_attempts: attempts per message.
        base_delay: the backoff base, in seconds.
        max_delay: the backoff cap, in seconds.
        max_batch_bytes: the batch byte budget.

    """

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        *,
        registry: CircuitRegistry,
        sleep: Callable[[float], None],
        random: Callable[[], float],
        max_attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        """Store the collaborators and limits; nothing is sent yet."""
        self._sqs = sqs
        self._queue_url = queue_url
        self._registry = registry
        self._sleep = sleep
        self._random = random
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._max_batch_bytes = max_batch_bytes
        self._buffer: list[tuple[ImportMessage, str]] = []
        self._buffer_bytes = 0
        self._report = SendReport()
        self.calls = 0
        """How many ``SendMessageBatch`` calls were made (including retries)."""

    @property
    def buffered(self) -> int:
        """How many messages wait to be sent."""
        return len(self._buffer)

    def add(self, message: ImportMessage) -> None:
        """Queue ``message``; sends the buffered batch first when the message would not fit in it.

        Args:
            message: the import message.

        Raises:
            AwsOperationError: SQS keeps refusing the call itself.
            CircuitOpenError: the send circuit is open.

        """
        body = encode_import_message(message)
        size = body_size(body)
        if self._buffer and (
            len(self._buffer) >= SQS_MAX_BATCH_ENTRIES or self._buffer_bytes + size > self._max_batch_bytes
        ):
            self.flush()
        self._buffer.append((message, body))
        self._buffer_bytes += size
        if len(self._buffer) >= SQS_MAX_BATCH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        """Send every buffered message.

        Raises:
            AwsOperationError: SQS keeps refusing the call itself.
            CircuitOpenError: the send circuit is open.

        """
        if not self._buffer:
            return
        batch, self._buffer, self._buffer_bytes = self._buffer, [], 0
        self._send(batch)

    def take(self) -> SendReport:
        """Return the messages sent and failed since the previous call, and forget them.

        Returns:
            The report.

        """
        report, self._report = self._report, SendReport()
        return report

    def _backoff(self, attempt: int) -> float:
        return self._random() * min(self._max_delay, self._base_delay * float(2**attempt))

    def _call(self, entries: list[dict[str, str]]) -> dict[str, Any]:
        self.calls += 1
        return protected_call(
            self._registry,
            SEND_OPERATION,
            lambda: dict(self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)),  # type: ignore[arg-type]
            context={"messages": len(entries)},
        )

    def _send(self, batch: list[tuple[ImportMessage, str]]) -> None:
        pending = {str(index): item for index, item in enumerate(batch)}
        last_error: dict[str, str] = {}
        for attempt in range(self._max_attempts):
            if attempt:
                self._sleep(self._backoff(attempt - 1))
            response = self._call([{"Id": key, "MessageBody": body} for key, (_m, body) in pending.items()])
            for success in response.get("Successful", []):
                item = pending.pop(str(success["Id"]), None)
                if item is not None:
                    self._report.sent.append(item[0])
            for failure in response.get("Failed", []):
                key = str(failure["Id"])
                detail = f"{failure.get('Code', 'unknown')}: {failure.get('Message', '')}".strip(": ")
                last_error[key] = detail
                if failure.get("SenderFault") and key in pending:
                    # The message itself is refused: retrying cannot help.
                    message = pending.pop(key)[0]
                    self._report.failed.append((message, detail))
            if not pending:
                return
            logger.warning(
                "SQS did not accept every message; retrying",
                extra={
                    "attempt": attempt + 1,
                    "unsent": len(pending),
                    "errors": sorted(set(last_error.values())),
                },
            )
        for key, (message, _body) in pending.items():
            self._report.failed.append((message, last_error.get(key, "not acknowledged by SQS")))
