"""An AWS IoT quota emulator in front of the local stack's moto server.

`QuotaEmulator` is a `thingpress.local.layers.ServerLayer` that enforces a transactions-per-second
quota per IoT API with a token bucket per API and answers above it exactly as AWS IoT does: HTTP
400, ``x-amzn-ErrorType: ThrottlingException`` and ``{"message": "Rate exceeded"}``, which botocore
raises as a ``ClientError`` with code ``ThrottlingException``. It counts every call of the functions
it sees (harness requests pass uncounted), and the admitted and throttled calls per API.
"""

from __future__ import annotations

import threading
import time
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
    "DEFAULT_IOT_QUOTAS",
    "QuotaCounts",
    "QuotaEmulator",
    "scaled_quotas",
]

DEFAULT_IOT_QUOTAS: Final[Mapping[str, float]] = {
    "RegisterCertificateWithoutCA": 10.0,
    "AttachPolicy": 15.0,
    "DescribeCertificate": 10.0,
    "CreateThing": 100.0,
    "AttachThingPrincipal": 100.0,
    "AddThingToThingGroup": 100.0,
    "UpdateThing": 100.0,
    "DescribeThing": 350.0,
    # The importer's conflict-path reads and the undo's reads.
    "ListPrincipalThings": 10.0,
    "ListAttachedPolicies": 15.0,
    "ListThingPrincipals": 10.0,
    # The undo's delete path (AWS General Reference, "AWS IoT Core endpoints and quotas", API
    # throttling limits; the thing APIs are also Service Quotas codes of iotcore).
    "DetachPolicy": 15.0,
    "RemoveThingFromThingGroup": 100.0,
    "DetachThingPrincipal": 100.0,
    "UpdateCertificate": 10.0,
    "DeleteCertificate": 10.0,
    "DeleteThing": 100.0,
}
"""AWS IoT Core default account quotas (requests per second) of the APIs Thingpress calls.

Kept apart from the importer's own table (``bulk_importer.rate_limit``) on purpose: the emulator
plays AWS, so a wrong client-side table must show up as throttles instead of agreeing with itself.
"""


def scaled_quotas(factor: float, quotas: Mapping[str, float] = DEFAULT_IOT_QUOTAS) -> dict[str, float]:
    """Return the quota table multiplied by `factor` (an account with raised quotas)."""
    return {api: rate * factor for api, rate in quotas.items()}


@dataclass(frozen=True)
class QuotaCounts:
    """A snapshot of what a `QuotaEmulator` saw.

    `calls` counts every request of the functions by ``(service, operation)`` ("?" when the
    operation is unknown), throttled ones included; `admitted` and `throttled` count the calls of
    the quota-limited IoT APIs by API name.
    """

    calls: dict[tuple[str, str], int]
    admitted: dict[str, int]
    throttled: dict[str, int]
    admitted_window: dict[str, tuple[float, float]] = field(default_factory=dict)

    def admitted_rate(self, api: str) -> float | None:
        """Return the admitted calls per second of an API between its first and last admitted call.

        That is ``(admitted - 1) / (last - first)``: the rate the calls were spaced at. None with
        fewer than two admitted calls.
        """
        window = self.admitted_window.get(api)
        count = self.admitted.get(api, 0)
        if window is None or count < 2 or window[1] <= window[0]:
            return None
        return (count - 1) / (window[1] - window[0])

    def service_calls(self, service: str) -> int:
        """Return the number of requests made to one service."""
        return sum(count for (name, _), count in self.calls.items() if name == service)

    @property
    def total_throttled(self) -> int:
        """The number of throttled requests over every API."""
        return sum(self.throttled.values())


@dataclass
class _Bucket:
    rate: float
    capacity: float
    tokens: float
    updated: float


class QuotaEmulator(ServerLayer):
    """Per-API request-rate quotas of AWS IoT, enforced in front of the local stack.

    APIs without a quota are never throttled.

    Args:
        quotas: API name → requests per second; default `DEFAULT_IOT_QUOTAS` (see `scaled_quotas`
            for raised quotas).
        burst_seconds: Bucket capacity in seconds of quota; AWS does not publish its burst, one
            second's worth is assumed.
        clock: Monotonic seconds.
        enabled: False: count only, throttle nothing; switchable at any time.

    Raises:
        ValueError: A quota or `burst_seconds` that is not a positive number.

    """

    service: Final = "iot"

    def __init__(
        self,
        quotas: Mapping[str, float] | None = None,
        *,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ) -> None:
        """Create the emulator with full buckets; see the class docstring for the arguments."""
        super().__init__()
        table = dict(DEFAULT_IOT_QUOTAS if quotas is None else quotas)
        for api, rate in table.items():
            if isinstance(rate, bool) or not rate > 0:
                raise ValueError(f"The quota of {api} must be a positive number of requests per second.")
        if not burst_seconds > 0:
            raise ValueError("burst_seconds must be positive.")
        self.quotas = table
        self.enabled = enabled
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._buckets = {
            api: _Bucket(rate, max(1.0, rate * burst_seconds), max(1.0, rate * burst_seconds), now)
            for api, rate in table.items()
        }
        self._calls: Counter[tuple[str, str]] = Counter()
        self._admitted: Counter[str] = Counter()
        self._throttled: Counter[str] = Counter()
        self._windows: dict[str, tuple[float, float]] = {}

    def _admit(self, api: str, now: float) -> bool:
        self._admitted[api] += 1
        first = self._windows.get(api, (now, now))[0]
        self._windows[api] = (first, now)
        return True

    def try_acquire(self, api: str) -> bool:
        """Take one token of an API's bucket.

        APIs without a quota, and every API while the emulator is disabled, are always admitted.

        Args:
            api: The API name.

        Returns:
            False when the call is above the quota, else True.

        """
        bucket = self._buckets.get(api)
        if bucket is None:
            return True
        with self._lock:
            now = self._clock()
            bucket.tokens = min(bucket.capacity, bucket.tokens + max(0.0, now - bucket.updated) * bucket.rate)
            bucket.updated = now
            if not self.enabled:
                return self._admit(api, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return self._admit(api, now)
            self._throttled[api] += 1
            return False

    def _snapshot(self) -> QuotaCounts:
        return QuotaCounts(
            dict(self._calls), dict(self._admitted), dict(self._throttled), dict(self._windows)
        )

    def counts(self) -> QuotaCounts:
        """Return a snapshot of the counters."""
        with self._lock:
            return self._snapshot()

    def reset_counts(self) -> QuotaCounts:
        """Return the counters and set them to zero."""
        with self._lock:
            snapshot = self._snapshot()
            self._calls.clear()
            self._admitted.clear()
            self._throttled.clear()
            self._windows.clear()
        return snapshot

    def handle(
        self, call: ApiCall, environ: dict[str, Any], start_response: StartResponse, app: WsgiApp
    ) -> Iterable[bytes]:
        """Count the call; answer ThrottlingException above an IoT API's quota, else pass it on."""
        with self._lock:
            self._calls[(call.service, call.operation or "?")] += 1
        if call.service != self.service or call.operation is None or self.try_acquire(call.operation):
            return app(environ, start_response)
        drain_body(environ)
        return json_error_response(
            start_response,
            "400 Bad Request",
            {"x-amzn-ErrorType": "ThrottlingException"},
            {"message": "Rate exceeded"},
        )
