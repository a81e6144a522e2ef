"""The fleet rate budget on an injected clock: shares follow the busy invocations, never above 1."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from bulk_importer.fleet_budget import (
    RENEW_BEFORE_SECONDS,
    SKEW_SECONDS,
    VALIDITY_SECONDS,
    FleetBudget,
    FleetLease,
    Member,
    Snapshot,
    allot,
)
from layer_utils.rate_limit import RateLimiter


class Clock:
    """A wall clock that moves only when told to (or when a limiter sleeps on it)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0  # small enough that a 1e-7 s sleep still moves it

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class MemoryStore:
    """The budget item in memory, with DynamoDB's conditional-write semantics; can be made to fail."""

    def __init__(self) -> None:
        self.snapshot = Snapshot(0, {})
        self.failing = False
        self.writes = 0

    def read(self) -> Snapshot:
        self._check()
        return self.snapshot

    def write(self, expected: int, members: Mapping[str, Member]) -> Snapshot | None:
        self._check()
        if expected != self.snapshot.version:
            return None
        self.writes += 1
        self.snapshot = Snapshot(expected + 1, dict(members))
        return self.snapshot

    def remove(self, member: str) -> None:
        self._check()
        members = {name: entry for name, entry in self.snapshot.members.items() if name != member}
        self.snapshot = Snapshot(self.snapshot.version + 1, members)

    def _check(self) -> None:
        if self.failing:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="https://dynamodb")


def run(clock: Clock, leases: list[FleetLease], seconds: float, step: float = 0.05) -> list[list[float]]:
    """Ask every lease for its share every `step`; check that the shares never sum above 1."""
    history = []
    for _ in range(round(seconds / step)):
        shares = [lease.share() for lease in leases]
        assert sum(shares) <= 1.0 + 1e-9, shares
        history.append(shares)
        clock.now += step
    return history


def test_allot_gives_the_fair_share_of_what_is_free() -> None:
    now = 100.0
    assert allot({}, "a", now) == (1.0, {})
    full = {"a": Member(1.0, now + 1)}
    assert allot(full, "b", now)[0] == 0.0
    half = {"a": Member(0.5, now + 1)}
    assert allot(half, "b", now)[0] == 0.5
    thirds = {"a": Member(0.5, now + 1), "b": Member(0.0, now + 1)}
    assert allot(thirds, "c", now)[0] == pytest.approx(1 / 3, abs=1e-6)
    assert allot(thirds, "c", now)[0] <= 1 / 3


def test_expired_entries_are_dropped_after_the_skew() -> None:
    members = {"crashed": Member(1.0, 100.0)}
    assert allot(members, "b", 100.0 + SKEW_SECONDS / 2) == (0.0, members)
    assert allot(members, "b", 100.0 + SKEW_SECONDS * 2) == (1.0, {})


def test_one_invocation_gets_the_whole_quota_at_once() -> None:
    clock, store = Clock(), MemoryStore()
    lease = FleetLease(store, "a", clock=clock)
    history = run(clock, [lease], 3.0)
    assert all(shares == [1.0] for shares in history)
    # Renewed about every VALIDITY - RENEW_BEFORE seconds, not per call.
    assert store.writes <= 3.0 / (VALIDITY_SECONDS - RENEW_BEFORE_SECONDS) + 1


@pytest.mark.parametrize("count", [2, 3, 10])
def test_n_invocations_converge_on_equal_shares_and_never_exceed_one(count: int) -> None:
    clock, store = Clock(), MemoryStore()
    leases = [FleetLease(store, f"inv-{i}", clock=clock) for i in range(count)]
    history = run(clock, leases, 3.0)
    assert history[-1] == pytest.approx([1 / count] * count, abs=1e-5)
    # Converged within one renewal interval plus a catch-up or two.
    converged = next(i for i, shares in enumerate(history) if min(shares) >= 1 / count - 1e-5)
    assert converged * 0.05 <= VALIDITY_SECONDS


def test_a_released_share_goes_to_the_others_at_their_next_renewal() -> None:
    clock, store = Clock(), MemoryStore()
    a, b = FleetLease(store, "a", clock=clock), FleetLease(store, "b", clock=clock)
    run(clock, [a, b], 2.0)
    a.release()
    assert a.share() == 0.0
    history = run(clock, [b], VALIDITY_SECONDS - RENEW_BEFORE_SECONDS + 0.1)
    assert history[-1] == [1.0]


def test_a_paused_share_goes_to_the_others_and_the_pauser_joins_again_when_it_calls() -> None:
    clock, store = Clock(), MemoryStore()
    a, b = FleetLease(store, "a", clock=clock), FleetLease(store, "b", clock=clock)
    run(clock, [a, b], 2.0)
    a.pause()
    assert "a" not in store.snapshot.members
    history = run(clock, [b], VALIDITY_SECONDS - RENEW_BEFORE_SECONDS + 0.1)
    assert history[-1] == [1.0]
    # a calls again: it joins with what is free (nothing), and b yields half at its next renewal.
    history = run(clock, [a, b], 1.0)
    assert history[0] == [0.0, 1.0]
    assert history[-1] == pytest.approx([0.5, 0.5])
    a.release()
    assert a.share() == 0.0
    assert "a" not in store.snapshot.members


def test_a_renewal_overtaken_by_a_pause_is_void() -> None:
    clock = Clock()

    class PausingStore(MemoryStore):
        """Pauses the lease (as another thread would) right after a renewal's write succeeds."""

        lease: FleetLease | None = None

        def write(self, expected: int, members: Mapping[str, Member]) -> Snapshot | None:
            written = super().write(expected, members)
            if written is not None and self.lease is not None:
                lease, self.lease = self.lease, None
                lease.pause()
            return written

    store = PausingStore()
    lease = FleetLease(store, "a", clock=clock)
    assert lease.share() == 1.0
    clock.now += 1.0  # the next share() renews
    store.lease = lease
    assert lease.share() == 0.0  # the share written before the pause is not used...
    assert "a" not in store.snapshot.members  # ...and not left in the budget for others to count


def test_a_crashed_invocation_strands_its_share_for_at_most_validity_plus_skew() -> None:
    clock, store = Clock(), MemoryStore()
    a, b = FleetLease(store, "a", clock=clock), FleetLease(store, "b", clock=clock)
    run(clock, [a, b], 2.0)
    crashed_at = clock.now  # a stops renewing (no release)
    step = 0.05
    while b.share() < 1.0:
        # a's share, as it would use it, is still counted until it expires: never both at once.
        assert b.share() + (0.5 if clock.now < crashed_at + VALIDITY_SECONDS else 0.0) <= 1.0 + 1e-9
        clock.now += step
    assert clock.now - crashed_at <= VALIDITY_SECONDS + SKEW_SECONDS + 0.2 + step


def test_a_store_failure_stops_the_invocation_once_its_share_expires() -> None:
    clock, store = Clock(), MemoryStore()
    lease = FleetLease(store, "a", clock=clock)
    assert lease.share() == 1.0
    store.failing = True
    clock.now += VALIDITY_SECONDS - 0.01
    assert lease.share() == 1.0
    clock.now += 0.02
    assert lease.share() == 0.0
    store.failing = False
    clock.now += 0.5
    assert lease.share() == 1.0


def test_the_limiter_runs_the_quota_at_the_share_and_waits_without_one() -> None:
    clock, store = Clock(), MemoryStore()
    holder = FleetLease(store, "holder", clock=clock)
    assert holder.share() == 1.0
    budget = FleetBudget(
        store, {"RegisterCertificateWithoutCA": 10.0}, clock=clock, monotonic=clock, sleep=clock.sleep
    )
    lease, limiter = budget.invocation("newcomer")
    started = clock.now
    # The holder keeps its whole share until it renews: the newcomer gets nothing, waits, then halves.
    limiter.acquire("RegisterCertificateWithoutCA")
    assert clock.now > started
    holder_shares = []
    grants = []
    for _ in range(40):
        holder_shares.append(holder.share())
        limiter.acquire("RegisterCertificateWithoutCA")
        grants.append(clock.now)
    assert holder_shares[-1] == pytest.approx(0.5)
    assert lease.share() == pytest.approx(0.5)
    # At half of 10/s: 0.2 s apart.
    assert grants[-1] - grants[-11] == pytest.approx(2.0, abs=0.11)


def test_a_scale_of_zero_allows_no_call_and_accrues_nothing() -> None:
    clock = Clock()
    scale = [0.0]
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        if len(waited) == 3:
            scale[0] = 1.0
        clock.sleep(seconds)

    limiter = RateLimiter({"CreateThing": 10.0}, clock=clock, sleep=sleep, scale=lambda: scale[0])
    # No share: nothing, in waits of at most max_wait, until the scale rises; then the new bucket's
    # token is used at once.
    limiter.acquire("CreateThing")
    assert len(waited) == 3 and max(waited) <= 0.1
    # Five seconds spent waiting without a share earn nothing: once it returns, the call still waits
    # a whole token at the full rate.
    scale[0] = 0.0
    rises: list[float] = []

    def sleep_then_rise(seconds: float) -> None:
        clock.sleep(seconds)
        if scale[0] == 0.0 and clock.now - started >= 5.0:
            scale[0] = 1.0
            rises.append(clock.now)

    limiter._sleep = sleep_then_rise
    started = clock.now
    limiter.acquire("CreateThing")
    assert clock.now - rises[0] == pytest.approx(0.1)
