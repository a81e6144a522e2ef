"""The fleet rate budget's DynamoDB item on moto: conditional writes, removal, two leases sharing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bulk_importer.fleet_budget import DynamoBudgetStore, FleetLease, Member

TABLE = "RateBudget"


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        )
        yield client


def test_writes_are_conditional_on_the_version_read(dynamodb: Any) -> None:
    store = DynamoBudgetStore(dynamodb, TABLE)
    assert store.read().version == 0
    first = store.write(0, {"a": Member(1.0, 100.5)})
    assert first is not None and first.version == 1
    # A second writer that read the empty item loses: the version moved on.
    assert store.write(0, {"b": Member(1.0, 100.5)}) is None
    assert store.read().members == {"a": Member(1.0, 100.5)}
    assert store.write(1, {"a": Member(0.5, 101.0), "b": Member(0.5, 101.0)}) is not None
    store.remove("a")
    snapshot = store.read()
    assert snapshot.version == 3
    assert snapshot.members == {"b": Member(0.5, 101.0)}
    # A stale write (made from version 2) cannot bring the removed entry back.
    assert store.write(2, {"a": Member(0.5, 101.0), "b": Member(0.5, 101.0)}) is None


def test_removing_from_a_missing_item_is_harmless(dynamodb: Any) -> None:
    DynamoBudgetStore(dynamodb, TABLE).remove("a")
    assert DynamoBudgetStore(dynamodb, TABLE).read().version == 0


def test_two_leases_share_and_a_release_frees_the_share(dynamodb: Any) -> None:
    now = [1_000_000.0]
    store = DynamoBudgetStore(dynamodb, TABLE)
    a = FleetLease(store, "a", clock=lambda: now[0])
    b = FleetLease(store, "b", clock=lambda: now[0])
    assert a.share() == 1.0
    assert b.share() == 0.0
    for _ in range(20):
        now[0] += 0.1
        assert a.share() + b.share() <= 1.0
    assert (a.share(), b.share()) == (0.5, 0.5)
    a.release()
    assert set(store.read().members) == {"b"}
    for _ in range(6):
        now[0] += 0.1
        b.share()
    assert b.share() == 1.0
