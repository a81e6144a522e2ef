"""The per-API token bucket: the quota bound, fairness between threads and lock discipline."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from bulk_importer.rate_limit import DEFAULT_IOT_TPS, account_quotas_from_env, rates_from_env
from layer_utils.rate_limit import RateLimiter


class FakeClock:
    """A monotonic clock that only moves when a thread sleeps; remembers each thread's last reading."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()
        self._last = threading.local()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            value = self.now
        self._last.value = value
        return value

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def last_reading(self) -> float:
        """The last clock value this thread read: inside ``acquire`` that is the grant time."""
        value: float = self._last.value
        return value


def assert_window_bound(times: list[float], rate: float, burst: float) -> None:
    """In every window [times[i], times[j]] there are at most rate * (t_j - t_i) + burst grants."""
    ordered = sorted(times)
    for i in range(len(ordered)):
        for j in range(i, len(ordered)):
            count = j - i + 1
            assert count <= rate * (ordered[j] - ordered[i]) + burst + 1e-9, (i, j, ordered[i], ordered[j])


@pytest.mark.parametrize(("rate", "burst"), [(5.0, 1.0), (5.0, 3.0), (0.5, 1.0), (250.0, 10.0)])
def test_single_thread_never_exceeds_rate_times_window_plus_burst(rate: float, burst: float) -> None:
    clock = FakeClock()
    limiter = RateLimiter({"CreateThing": rate}, clock=clock, sleep=clock.sleep, burst=burst)
    start = clock.now
    times = []
    for _ in range(60):
        limiter.acquire("CreateThing")
        times.append(clock.last_reading())
    assert_window_bound(times, rate, burst)
    # ... and it is not slower than the rate either: the bucket starts full, then one token per 1/rate.
    assert times[-1] - start == pytest.approx((60 - burst) / rate)


def test_a_full_bucket_grants_burst_calls_without_waiting_then_spaces_them() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"AttachPolicy": 4.0}, clock=clock, sleep=clock.sleep, burst=2)
    waits = [limiter.acquire("AttachPolicy") for _ in range(4)]
    assert waits == [0.0, 0.0, pytest.approx(0.25), pytest.approx(0.25)]


def test_idle_time_refills_only_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"AttachPolicy": 1.0}, clock=clock, sleep=clock.sleep, burst=2)
    limiter.acquire("AttachPolicy")
    limiter.acquire("AttachPolicy")
    clock.now += 3600.0
    waits = [limiter.acquire("AttachPolicy") for _ in range(3)]
    assert waits == [0.0, 0.0, pytest.approx(1.0)]


def test_apis_have_independent_buckets() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"CreateThing": 1.0, "AttachPolicy": 1.0}, clock=clock, sleep=clock.sleep)
    assert limiter.acquire("CreateThing") == 0.0
    assert limiter.acquire("AttachPolicy") == 0.0
    assert limiter.acquire("CreateThing") == pytest.approx(1.0)


def test_unknown_api_is_refused() -> None:
    limiter = RateLimiter({"CreateThing": 1.0})
    with pytest.raises(KeyError, match="ListThings"):
        limiter.acquire("ListThings")


@pytest.mark.parametrize("rate", [0.0, -1.0, float("inf"), float("nan")])
def test_invalid_rates_are_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="CreateThing"):
        RateLimiter({"CreateThing": rate})


def test_burst_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        RateLimiter({"CreateThing": 1.0}, burst=0.5)


def test_threads_share_the_rate_fairly_and_never_exceed_it() -> None:
    clock = FakeClock()
    rate, burst, threads, per_thread = 10.0, 1.0, 8, 25
    api = "RegisterCertificateWithoutCA"
    grants: list[tuple[float, int]] = []
    grants_lock = threading.Lock()
    barrier = threading.Barrier(threads)
    active = [threads]

    def sleep(seconds: float) -> None:
        # Fake time passes instantly; a real sleep is long enough for every other thread to queue up.
        # Model that: wait (really, briefly) until every thread still working is inside acquire().
        for _ in range(1000):
            with grants_lock:
                if limiter.waiting(api) >= active[0]:
                    break
            threading.Event().wait(0.001)
        clock.sleep(seconds)

    limiter = RateLimiter({api: rate}, clock=clock, sleep=sleep, burst=burst)

    def worker(index: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            limiter.acquire(api)
            granted = clock.last_reading()
            with grants_lock:
                grants.append((granted, index))
        with grants_lock:
            active[0] -= 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
        assert not thread.is_alive()

    assert len(grants) == threads * per_thread
    assert_window_bound([t for t, _ in grants], rate, burst)
    # The clock only moves while the head of the queue sleeps, so total time is exactly the schedule.
    assert clock.now - 1000.0 == pytest.approx((threads * per_thread - burst) / rate)
    # Fair: first come, first served, so every thread gets its share of every stretch of time. In the
    # first half of the grants, every thread has between a quarter and three quarters of its calls.
    first_half = Counter(index for _, index in sorted(grants)[: len(grants) // 2])
    assert set(first_half) == set(range(threads))
    assert all(per_thread // 4 <= n <= 3 * per_thread // 4 for n in first_half.values()), first_half


def test_no_lock_is_held_while_sleeping() -> None:
    clock = FakeClock()
    observations: list[tuple[int, bool]] = []
    limiter: RateLimiter

    def sleep(seconds: float) -> None:
        if not observations:
            # While this thread sleeps: another API is free, and another thread can enter acquire()
            # for the same API and queue behind us (it could not if the bucket lock were held).
            other_api = threading.Thread(target=limiter.acquire, args=("AttachPolicy",))
            other_api.start()
            other_api.join(timeout=5)
            queued = threading.Thread(target=limiter.acquire, args=("CreateThing",))
            queued.start()
            for _ in range(500):
                if limiter.waiting("CreateThing") == 2:
                    break
                threading.Event().wait(0.01)
            observations.append((limiter.waiting("CreateThing"), other_api.is_alive()))
        clock.sleep(seconds)

    limiter = RateLimiter({"CreateThing": 1.0, "AttachPolicy": 1.0}, clock=clock, sleep=sleep)
    limiter.acquire("CreateThing")
    limiter.acquire("CreateThing")  # must sleep: the bucket is empty
    assert observations == [(2, False)]
    for _ in range(500):
        if limiter.waiting("CreateThing") == 0:
            break
        threading.Event().wait(0.01)
    assert limiter.waiting("CreateThing") == 0


def test_a_failing_sleep_does_not_block_the_queue() -> None:
    clock = FakeClock()
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 1:
            raise KeyboardInterrupt
        clock.sleep(seconds)

    limiter = RateLimiter({"CreateThing": 1.0}, clock=clock, sleep=sleep)
    limiter.acquire("CreateThing")
    with pytest.raises(KeyboardInterrupt):
        limiter.acquire("CreateThing")
    assert limiter.waiting("CreateThing") == 0
    assert limiter.acquire("CreateThing") == pytest.approx(1.0)


def test_rates_from_env_defaults_divide_the_aws_quotas_by_the_concurrency() -> None:
    rates = rates_from_env({})
    assert rates == {api: quota / 2 for api, quota in DEFAULT_IOT_TPS.items()}
    assert rates["RegisterCertificateWithoutCA"] == 5.0


def test_rates_from_env_applies_overrides_and_concurrency() -> None:
    env = {
        "THINGPRESS_IOT_TPS": '{"RegisterCertificateWithoutCA": 40, "ListThings": 10}',
        "THINGPRESS_MAX_CONCURRENCY": "4",
    }
    rates = rates_from_env(env)
    assert rates["RegisterCertificateWithoutCA"] == 10.0
    assert rates["ListThings"] == 2.5
    assert rates["AttachPolicy"] == DEFAULT_IOT_TPS["AttachPolicy"] / 4
    assert account_quotas_from_env(env)["RegisterCertificateWithoutCA"] == 40.0


def test_rates_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINGPRESS_IOT_TPS", '{"CreateThing": 30}')
    monkeypatch.setenv("THINGPRESS_MAX_CONCURRENCY", "3")
    assert rates_from_env()["CreateThing"] == 10.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"THINGPRESS_IOT_TPS": "{not json"}, "not valid JSON"),
        ({"THINGPRESS_IOT_TPS": "[1, 2]"}, "JSON object"),
        ({"THINGPRESS_IOT_TPS": '{"CreateThing": 0}'}, "CreateThing"),
        ({"THINGPRESS_IOT_TPS": '{"CreateThing": "fast"}'}, "CreateThing"),
        ({"THINGPRESS_IOT_TPS": '{"CreateThing": true}'}, "CreateThing"),
        ({"THINGPRESS_MAX_CONCURRENCY": "0"}, "THINGPRESS_MAX_CONCURRENCY"),
        ({"THINGPRESS_MAX_CONCURRENCY": "two"}, "THINGPRESS_MAX_CONCURRENCY"),
    ],
)
def test_rates_from_env_rejects_malformed_configuration(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rates_from_env(env)
