"""Server-side faults: a `ServerLayer` that fails, drops or blacks out the functions' requests.

See `thingpress.local.faults` for the fault kinds.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from thingpress.local.layers import (
    ApiCall,
    ServerLayer,
    StartResponse,
    WsgiApp,
    drain_body,
    json_error_response,
)

__all__ = [
    "DEFAULT_FAULT_SERVICES",
    "FaultInjector",
    "FaultPlan",
    "Outage",
    "OutageReport",
    "error_response",
]

DEFAULT_FAULT_SERVICES: Final = frozenset({"iot", "sqs", "s3", "dynamodb"})

# (HTTP status) → error code per service; the shapes follow each service's protocol.
_ERROR_CODES: Final[Mapping[str, Mapping[int, tuple[str, str]]]] = {
    "iot": {
        500: ("InternalFailureException", "An unexpected error has occurred."),
        503: ("ServiceUnavailableException", "Service is unavailable."),
    },
    "sqs": {
        500: ("InternalError", "We encountered an internal error. Please try again."),
        503: ("ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
    },
    "dynamodb": {
        500: ("InternalServerError", "Internal server error"),
        503: ("ServiceUnavailable", "The service is currently unavailable or busy."),
    },
    "s3": {
        500: ("InternalError", "We encountered an internal error. Please try again."),
        503: ("ServiceUnavailable", "Service is unable to handle request."),
    },
}
_DEFAULT_CODES: Final = {500: ("InternalFailure", "Internal failure."), 503: ("ServiceUnavailable", "")}
_JSON_TYPE_PREFIX: Final = {
    "sqs": "com.amazonaws.sqs#",
    "dynamodb": "com.amazonaws.dynamodb.v20120810#",
}
_REASONS: Final = {500: "500 Internal Server Error", 503: "503 Service Unavailable"}


def error_response(
    service: str, status: int, environ: Mapping[str, Any], start_response: StartResponse
) -> list[bytes]:
    """Answer a 5xx error for `service` in its protocol's shape.

    Args:
        service: The botocore service name.
        status: 500 or 503.
        environ: The request's WSGI environ (its body is read and discarded).
        start_response: The WSGI callback.

    Returns:
        The body chunks.

    """
    code, message = _ERROR_CODES.get(service, _DEFAULT_CODES).get(status, _DEFAULT_CODES[500])
    reason = _REASONS.get(status, f"{status} Error")
    drain_body(environ)
    if service == "s3":
        request_id = uuid.uuid4().hex[:16].upper()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        start_response(
            reason,
            [
                ("Content-Type", "application/xml"),
                ("Content-Length", str(len(body))),
                ("x-amz-request-id", request_id),
            ],
        )
        return [body]
    if service in _JSON_TYPE_PREFIX:
        headers = {"x-amzn-query-error": f"{code};Receiver"} if service == "sqs" else {}
        return json_error_response(
            start_response,
            reason,
            headers,
            {"__type": _JSON_TYPE_PREFIX[service] + code, "message": message},
            content_type="application/x-amz-json-1.0",
        )
    return json_error_response(start_response, reason, {"x-amzn-ErrorType": code}, {"message": message})


def _drop_connection(environ: Mapping[str, Any], *, body_read: bool = False) -> None:
    """Shut the client's socket down and raise, so the server sends nothing at all.

    The request body is read first (unless the application already did): werkzeug would otherwise
    parse its unread bytes as the next request on the dead connection.

    Raises:
        ConnectionResetError: Always; werkzeug then sends no answer.

    """
    if not body_read:
        drain_body(environ)
    connection = environ.get("werkzeug.socket")
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
    # werkzeug treats a ConnectionError from the application as a dropped connection: no answer.
    raise ConnectionResetError("Connection dropped by the fault injector.")


@dataclass(frozen=True)
class Outage:
    """Every call of one API answers `status` for `duration` seconds.

    The window starts `start` seconds after the injector is installed, or (when `after_calls` is
    set) when the API receives its `after_calls`-th call since installation, whichever is set.
    `operation` is the API name (``RegisterCertificateWithoutCA``) of `service`.
    """

    operation: str
    duration: float
    service: str = "iot"
    start: float | None = None
    after_calls: int | None = None
    status: int = 503


@dataclass(frozen=True)
class FaultPlan:
    """What the `FaultInjector` does to the functions' requests.

    Rates are probabilities per request (0 to 1) for the `services` listed; `operations`, when
    not empty, restricts the random faults to those API names. `scheduled` fails given calls for
    sure: call name (``"s3:GetObject"``) → the 1-based numbers of its calls since installation that
    answer a 5xx (an API the functions call rarely still meets a fault). `outages` and `scheduled`
    are independent of the rates.
    """

    error_rate: float = 0.0
    drop_rate: float = 0.0
    drop_after_rate: float = 0.0
    services: frozenset[str] = DEFAULT_FAULT_SERVICES
    operations: frozenset[str] = frozenset()
    outages: tuple[Outage, ...] = ()
    scheduled: Mapping[str, frozenset[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Raise `ValueError` when a rate is outside 0..1 or the rates add up to more than 1."""
        rates = (self.error_rate, self.drop_rate, self.drop_after_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0:
            raise ValueError("Fault rates must be between 0 and 1 and add up to at most 1.")


@dataclass
class _OutageState:
    outage: Outage
    calls: int = 0
    started: float | None = None
    ended: float | None = None
    rejected: int = 0


@dataclass(frozen=True)
class OutageReport:
    """What happened during one outage: when it began and ended (injector clock) and calls refused."""

    outage: Outage
    started: float | None
    ended: float | None
    rejected: int


class FaultInjector(ServerLayer):
    """Injects the seeded faults of a `FaultPlan` into the functions' AWS requests.

    `injected` counts the faults by ``(call name, kind)`` with kind ``500``, ``503``, ``drop``,
    ``drop_after`` or ``outage``; `outages()` tells when each outage window was active.

    Args:
        plan: What to inject.
        seed: The seed of every random choice.
        clock: Monotonic seconds, for outage windows.

    """

    def __init__(
        self, plan: FaultPlan, *, seed: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Create the injector; nothing happens until it is installed (``with``)."""
        super().__init__()
        self.plan = plan
        self._random = random.Random(seed)  # noqa: S311 - reproducible fault choices, not secrets  # nosec B311
        self._clock = clock
        self._lock = threading.Lock()
        self._installed_at = clock()
        self._outages = [_OutageState(outage) for outage in plan.outages]
        self._calls: Counter[str] = Counter()
        self.injected: Counter[tuple[str, str]] = Counter()

    def install(self) -> None:
        """Install the layer; outage start times count from now."""
        super().install()
        self._installed_at = self._clock()

    def outages(self) -> list[OutageReport]:
        """Return the state of every outage window."""
        with self._lock:
            return [OutageReport(s.outage, s.started, s.ended, s.rejected) for s in self._outages]

    def _in_outage(self, call: ApiCall, now: float) -> int | None:
        """Return the status to answer when the call falls in an outage window (lock held)."""
        for state in self._outages:
            outage = state.outage
            if outage.service != call.service or outage.operation != call.operation:
                continue
            state.calls += 1
            if state.started is None:
                if outage.after_calls is not None and state.calls >= outage.after_calls:
                    state.started = now
                elif outage.start is not None and now - self._installed_at >= outage.start:
                    state.started = self._installed_at + outage.start
            if state.started is None:
                continue
            if now < state.started + outage.duration:
                state.rejected += 1
                return outage.status
            state.ended = state.started + outage.duration
        return None

    def _decide(self, call: ApiCall) -> str | None:
        plan = self.plan
        with self._lock:
            status = self._in_outage(call, self._clock())
            if status is not None:
                self.injected[(call.name, "outage")] += 1
                return f"outage:{status}"
            self._calls[call.name] += 1
            if self._calls[call.name] in plan.scheduled.get(call.name, ()):
                scheduled = self._random.choice(("500", "503"))
                self.injected[(call.name, scheduled)] += 1
                return scheduled
            if call.service not in plan.services or (
                plan.operations and call.operation not in plan.operations
            ):
                return None
            draw = self._random.random()
            kind: str | None = None
            if draw < plan.error_rate:
                kind = self._random.choice(("500", "503"))
            elif draw < plan.error_rate + plan.drop_rate:
                kind = "drop"
            elif draw < plan.error_rate + plan.drop_rate + plan.drop_after_rate:
                kind = "drop_after"
            if kind is not None:
                self.injected[(call.name, kind)] += 1
            return kind

    def handle(
        self, call: ApiCall, environ: dict[str, Any], start_response: StartResponse, app: WsgiApp
    ) -> Iterable[bytes]:
        """Serve the request, or fail it as the plan decides."""
        kind = self._decide(call)
        if kind is None:
            return app(environ, start_response)
        if kind == "drop":
            _drop_connection(environ)
        if kind == "drop_after":
            # Serve the request completely (its effect happens), then hang up instead of answering.
            chunks = app(environ, lambda *_args, **_kwargs: None)
            for _ in chunks:
                pass
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
            _drop_connection(environ, body_read=True)
        status = int(kind.rpartition(":")[2])
        return error_response(call.service, status, environ, start_response)
