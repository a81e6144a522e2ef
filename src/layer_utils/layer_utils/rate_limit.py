"""Client-side rate limiting: one thread-safe token bucket per AWS API, and quota tables from JSON.

Shared by the BulkImporter (``bulk_importer.rate_limit``: the import APIs' quotas) and the
UndoFunction (``undo_worker.config``: the delete APIs' quotas). Each function gives every invocation
an equal share of the account quota: the quota divided by its event source's MaximumConcurrency.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# Hand-written: botocore's adaptive retry mode only slows down after AWS has throttled a call and
# cannot give each invocation a fixed share of a per-API fleet quota.

# Tolerance on a whole token: without it, floating-point rounding could make a thread sleep for
# intervals shorter than the clock's resolution forever.
_EPSILON = 1e-9


@dataclass
class _Bucket:
    """The state of one API's bucket; every field is guarded by ``lock``."""

    rate: float
    capacity: float
    tokens: float
    updated: float
    scale: float = 1.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    turn: threading.Condition = field(init=False)
    next_ticket: int = 0
    serving: int = 0

    def __post_init__(self) -> None:
        self.turn = threading.Condition(self.lock)


class RateLimiter:
    """A token bucket per API name, shared by every thread of an invocation.

    ``rates`` maps an API name (for example ``"RegisterCertificateWithoutCA"``) to its allowed
    calls per second. ``burst`` is the bucket capacity in tokens (default 1: calls are evenly
    spaced), so in any time window of length ``t`` at most ``rate * t + burst`` acquisitions of one
    API succeed. Waiting threads are served first come, first served. ``clock`` (seconds, monotonic)
    and ``sleep`` are injectable so tests run on a fake clock.

    ``scale`` (optional) returns the fraction of every rate allowed now (the fleet budget's share,
    0 to 1). It is asked before every decision; tokens accrue at the lower of the previous and the
    current scale, a scale of 0 allows no call and accrues nothing (a token held, at most ``burst``,
    is used as soon as the share returns, as a new bucket's is), and no wait is longer than
    ``max_wait`` seconds, so a change of the share is seen within it.

    """

    def __init__(
        self,
        rates: Mapping[str, float],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        burst: float = 1.0,
        scale: Callable[[], float] | None = None,
        max_wait: float = 0.1,
    ) -> None:
        """Create a full bucket for every API.

        Raises:
            ValueError: a rate is not a positive finite number, or ``burst`` is below 1.

        """
        if not burst >= 1.0 or not math.isfinite(burst):
            raise ValueError(f"The rate limiter burst must be a finite number of at least 1, not {burst!r}.")
        self._clock = clock
        self._sleep = sleep
        self._scale = scale
        self._max_wait = max_wait if scale is not None else math.inf
        now = clock()
        self._buckets: dict[str, _Bucket] = {}
        for api, rate in rates.items():
            if not rate > 0 or not math.isfinite(rate):
                raise ValueError(
                    f"The rate of {api} must be a positive number of calls per second, not {rate!r}."
                )
            # A new bucket starts full so the first call of an invocation does not wait.
            self._buckets[api] = _Bucket(rate=float(rate), capacity=burst, tokens=burst, updated=now)

    @property
    def rates(self) -> dict[str, float]:
        """A copy of the configured rate (calls per second) of every API."""
        return {api: bucket.rate for api, bucket in self._buckets.items()}

    def waiting(self, api: str) -> int:
        """Return how many threads are currently inside ``acquire(api)`` (queued or sleeping).

        Raises:
            KeyError: the limiter has no rate for ``api``.

        """
        bucket = self._buckets[api]
        with bucket.lock:
            return bucket.next_ticket - bucket.serving

    def acquire(self, api: str) -> float:
        """Block until a call to ``api`` is allowed and consume one token.

        No lock is held while sleeping: threads queue on a condition (which releases the lock) and only
        the head of the queue sleeps, outside the lock.

        Returns:
            The seconds spent waiting.

        Raises:
            KeyError: the limiter has no rate for ``api``.

        """
        try:
            bucket = self._buckets[api]
        except KeyError:
            raise KeyError(f"The rate limiter has no rate for the API {api}.") from None
        started = self._clock()
        with bucket.turn:
            ticket = bucket.next_ticket
            bucket.next_ticket += 1
            while bucket.serving != ticket:
                bucket.turn.wait()
        try:
            while True:
                # Asked outside the bucket lock: the fleet budget may call DynamoDB to renew the share.
                scale = 1.0 if self._scale is None else min(1.0, max(0.0, self._scale()))
                with bucket.lock:
                    now = self._clock()
                    elapsed = max(0.0, now - bucket.updated)
                    credit = elapsed * bucket.rate * min(scale, bucket.scale)
                    bucket.tokens = min(bucket.capacity, bucket.tokens + credit)
                    bucket.updated = now
                    bucket.scale = scale
                    if scale > 0 and bucket.tokens >= 1.0 - _EPSILON:
                        bucket.tokens = max(0.0, bucket.tokens - 1.0)
                        return max(0.0, now - started)
                    wait = (1.0 - bucket.tokens) / (bucket.rate * scale) if scale > 0 else self._max_wait
                self._sleep(min(wait, self._max_wait))
        finally:
            with bucket.turn:
                bucket.serving += 1
                bucket.turn.notify_all()


def quotas_from_json(raw: str, defaults: Mapping[str, float], variable: str) -> dict[str, float]:
    """Return ``defaults`` overridden or extended by ``raw``, a JSON object of API name to quota.

    Args:
        raw: the variable's value (empty: the defaults).
        defaults: the default quota (calls per second) of each API.
        variable: the variable's name, for the error message.

    Returns:
        The quota of every API.

    Raises:
        ValueError: ``raw`` is not a JSON object of positive numbers.

    """
    quotas = dict(defaults)
    if not raw.strip():
        return quotas
    try:
        overrides = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{variable} is not valid JSON: {error.msg}.") from None
    if not isinstance(overrides, dict):
        raise ValueError(f'{variable} must be a JSON object such as {{"CreateThing": 100}}.')
    for api, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{variable} gives {api} the quota {value!r}; it must be a positive number.")
        quotas[str(api)] = float(value)
    return quotas
