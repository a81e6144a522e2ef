"""The fleet-wide IoT rate budget: busy importer invocations share every API's account quota.

One DynamoDB item (``id = "importer-fleet"`` in ``THINGPRESS_RATE_BUDGET_TABLE``) lists the busy
invocations, each with the *share* of the quotas it may use (0 to 1, the same for every API) and the
time its share is valid until. An invocation renews its entry about four times a second in one conditional
write (``version`` check) that also reads everyone else's, so every change sees all the others:

* its new share is ``min(1 / busy invocations, 1 - the valid shares of the others)``, so the shares
  valid at any moment sum to at most 1 and the fleet never exceeds any quota;
* an invocation lowers its share at once when others join and takes more only from what is free,
  so the fleet converges on equal shares within one renewal;
* a share is used only until its ``until`` (``VALIDITY_SECONDS`` after the write): an invocation that
  cannot renew stops calling, and a crashed one strands its share for at most ``VALIDITY_SECONDS``
  plus ``SKEW_SECONDS``, after which the others take it over;
* an invocation that ends removes its entry (``release``), so the others take its share at their
  next renewal; so does one whose IoT calls are done while it still records its outcome
  (``pause``: it joins again if it calls once more).

See docs/ARCHITECTURE.md, "Fleet rate budget", for the failure modes. Everything here takes its
DynamoDB client and its wall clock (epoch seconds, comparable across invocations) as parameters.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.rate_limit import RateLimiter
from layer_utils.telemetry import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ITEM_ID = "importer-fleet"
VALIDITY_SECONDS = 2.0
"""How long a share may be used after the write that granted it."""
RENEW_BEFORE_SECONDS = 1.75
"""A share is renewed when less than this of its validity is left (every 0.25 s): how soon a holder
yields to a newcomer and takes over what a leaver freed."""
CATCH_UP_SECONDS = 0.1
"""Renewal interval of an invocation holding less than its fair share (others still hold theirs)."""
SKEW_SECONDS = 0.1
"""Others' shares count as valid this much past their ``until``: the tolerated clock difference."""
RETRY_SECONDS = 0.2
"""Wait before another renewal after the store failed."""
MAX_CONFLICTS = 8
"""Conditional writes tried per renewal before giving up until the next one."""
_PRECISION = 1_000_000


@dataclass(frozen=True)
class Member:
    """One busy invocation's entry: its share of every quota and the epoch second it expires."""

    share: float
    until: float


@dataclass(frozen=True)
class Snapshot:
    """The budget item as read: its version (0: no item yet) and the members."""

    version: int
    members: Mapping[str, Member]


class BudgetStore(Protocol):
    """Where the budget item lives (DynamoDB in the function, memory in unit tests)."""

    def read(self) -> Snapshot:
        """Return the current item (strongly consistent)."""
        ...

    def write(self, expected: int, members: Mapping[str, Member]) -> Snapshot | None:
        """Replace the members if the version is still ``expected``; None when it is not."""
        ...

    def remove(self, member: str) -> None:
        """Remove one member's entry (and move the version on)."""
        ...


def allot(
    members: Mapping[str, Member], me: str, now: float, *, skew: float = SKEW_SECONDS
) -> tuple[float, dict[str, Member]]:
    """Compute one invocation's share and the members to write back.

    Args:
        members: the entries as read.
        me: this invocation's member id (its old entry is replaced).
        now: the wall clock, epoch seconds.
        skew: how long past their ``until`` others' shares still count.

    Returns:
        The share (floored to millionths, so the shares never round above 1) and the members without
        the expired entries of others.

    """
    others = {name: member for name, member in members.items() if name != me and member.until + skew > now}
    committed = sum(member.share for member in others.values())
    fair = 1.0 / (len(others) + 1)
    share = math.floor(max(0.0, min(fair, 1.0 - committed)) * _PRECISION) / _PRECISION
    return share, others


class FleetLease:
    """One invocation's entry in the budget: its current share, renewed on demand.

    ``share()`` is thread-safe and is what ``RateLimiter(scale=...)`` asks before every decision:
    it renews the entry when due (one thread at a time; the others keep the valid share meanwhile)
    and returns 0 once the share has expired without renewal.
    """

    def __init__(
        self,
        store: BudgetStore,
        member: str,
        *,
        clock: Callable[[], float] = time.time,
        validity: float = VALIDITY_SECONDS,
        renew_before: float = RENEW_BEFORE_SECONDS,
    ) -> None:
        """Bind the lease to the store and the member id; nothing is written until the first ``share()``."""
        self.store = store
        self.member = member
        self.clock = clock
        self.validity = validity
        self.renew_before = renew_before
        self.renewals = 0
        self._lock = threading.Lock()
        self._share = 0.0
        self._until = -math.inf
        self._renew_at = -math.inf
        self._renewing = False
        self._released = False
        self._cached: Snapshot | None = None
        self._generation = 0  # moved on by pause and release: a renewal begun before them is void

    def share(self) -> float:
        """Return the share of every quota this invocation may use now, renewing it when due."""
        now = self.clock()
        with self._lock:
            renew = now >= self._renew_at and not self._renewing and not self._released
            if renew:
                self._renewing = True
        if renew:
            try:
                self._renew()
            except (ClientError, BotoCoreError) as error:
                logger.warning("The fleet rate budget could not be renewed", extra={"error": str(error)})
                with self._lock:
                    self._renew_at = self.clock() + RETRY_SECONDS
            finally:
                with self._lock:
                    self._renewing = False
            now = self.clock()
        with self._lock:
            return self._share if now < self._until and not self._released else 0.0

    def _renew(self) -> None:
        """Write this invocation's entry with its new share (conditional on the version read)."""
        with self._lock:
            generation = self._generation
        snapshot = self._cached
        for _ in range(MAX_CONFLICTS):
            if snapshot is None:
                snapshot = self.store.read()
            now = self.clock()
            share, others = allot(snapshot.members, self.member, now)
            until = now + self.validity
            written = self.store.write(snapshot.version, {**others, self.member: Member(share, until)})
            if written is None:
                snapshot = None
                continue
            fair = 1.0 / (len(others) + 1)
            wait = CATCH_UP_SECONDS if share < fair - 1.0 / _PRECISION else self.validity - self.renew_before
            with self._lock:
                void = generation != self._generation
                if not void:
                    self._share, self._until, self._renew_at = share, until, now + wait
                    self._cached = written
                    self.renewals += 1
            if void:
                # Paused or released while writing: the entry just written is not ours to use.
                self._remove_entry()
            return
        with self._lock:
            self._cached = None
            self._renew_at = self.clock() + RETRY_SECONDS
        logger.warning("The fleet rate budget stayed contended", extra={"attempts": MAX_CONFLICTS})

    def pause(self) -> None:
        """Remove this invocation's entry while it makes no calls; the next ``share()`` joins again."""
        self._leave(final=False)

    def release(self) -> None:
        """Stop using the budget and remove this invocation's entry (its share frees at once)."""
        self._leave(final=True)

    def _leave(self, *, final: bool) -> None:
        with self._lock:
            self._released = self._released or final
            self._generation += 1
            held = self._until > -math.inf
            self._share, self._until, self._renew_at, self._cached = 0.0, -math.inf, -math.inf, None
        if held:
            self._remove_entry()

    def _remove_entry(self) -> None:
        try:
            self.store.remove(self.member)
        except (ClientError, BotoCoreError) as error:
            # The entry expires on its own within VALIDITY_SECONDS.
            logger.warning("The fleet rate budget entry was not removed", extra={"error": str(error)})


class DynamoBudgetStore:
    """The budget item in DynamoDB: ``id`` (S), ``version`` (N), ``members`` (M of ``{share, until}``)."""

    def __init__(self, dynamodb: DynamoDBClient, table: str, item_id: str = ITEM_ID) -> None:
        """Bind the store to a client and the table name; nothing is read yet."""
        self.dynamodb = dynamodb
        self.table = table
        self.key: dict[str, Any] = {"id": {"S": item_id}}

    @staticmethod
    def _parse(item: Mapping[str, Any] | None) -> Snapshot:
        if not item:
            return Snapshot(0, {})
        members = {
            name: Member(float(entry["M"]["share"]["N"]), float(entry["M"]["until"]["N"]))
            for name, entry in item.get("members", {}).get("M", {}).items()
        }
        return Snapshot(int(item["version"]["N"]), members)

    def read(self) -> Snapshot:
        """Return the current item (a strongly consistent GetItem)."""
        response = self.dynamodb.get_item(TableName=self.table, Key=self.key, ConsistentRead=True)
        return self._parse(response.get("Item"))

    def write(self, expected: int, members: Mapping[str, Member]) -> Snapshot | None:
        """Put the item with version ``expected + 1`` if its version is still ``expected``.

        Returns:
            The snapshot written, or None when another invocation wrote first.

        Raises:
            ClientError: any DynamoDB error but the failed condition.

        """
        encoded = {
            name: {"M": {"share": {"N": str(Decimal(repr(m.share)))}, "until": {"N": f"{m.until:.3f}"}}}
            for name, m in members.items()
        }
        item = {**self.key, "version": {"N": str(expected + 1)}, "members": {"M": encoded}}
        condition = (
            {"ConditionExpression": "attribute_not_exists(id)"}
            if expected == 0
            else {
                "ConditionExpression": "version = :expected",
                "ExpressionAttributeValues": {":expected": {"N": str(expected)}},
            }
        )
        try:
            self.dynamodb.put_item(TableName=self.table, Item=item, **condition)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return Snapshot(expected + 1, dict(members))

    def remove(self, member: str) -> None:
        """Remove one member's entry and move the version on, so no stale write brings it back.

        Raises:
            ClientError: any DynamoDB error but a missing item.

        """
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=self.key,
                UpdateExpression="REMOVE members.#member SET version = version + :one",
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeNames={"#member": member},
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise


class FleetBudget:
    """Builds each invocation's rate limiter on the shared budget.

    ``quotas`` are the account quotas per API (``THINGPRESS_IOT_TPS``); each invocation's limiter runs
    them at its lease's share.
    """

    def __init__(
        self,
        store: BudgetStore,
        quotas: Mapping[str, float],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Keep the store, the quotas and the clocks (wall for the lease, monotonic for the buckets)."""
        self.store = store
        self.quotas = dict(quotas)
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep

    def invocation(self, member: str) -> tuple[FleetLease, RateLimiter]:
        """Return a new lease for ``member`` (the invocation's request id) and its rate limiter."""
        lease = FleetLease(self.store, member, clock=self.clock)
        limiter = RateLimiter(self.quotas, clock=self.monotonic, sleep=self.sleep, scale=lease.share)
        return lease, limiter
