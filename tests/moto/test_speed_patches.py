"""The local stack's speed patches answer exactly as moto's own scans, after every kind of change."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import moto.dynamodb.models
import moto.iot.models
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iot.exceptions import ResourceNotFoundException

from testing.helpers import create_jobs_table, mock_aws_with_valid_certs
from thingpress.certfactory import make_ca, make_device_cert
from thingpress.local.server import MotoFidelity
from thingpress.local.speed import SPEED_PATCHES, PairIndex

REGION = "us-east-1"
IOT_PATCHES = [patch.attribute for patch in SPEED_PATCHES if patch.owner is moto.iot.models.IoTBackend]


# --- PairIndex --------------------------------------------------------------------------------------


def assert_index_matches(pairs: PairIndex) -> None:
    """Every lookup lists what a scan of the keys lists, in the same order."""
    for first in {key[0] for key in pairs} | {"absent"}:
        assert pairs.seconds(first) == [key[1] for key in pairs if key[0] == first]
    for second in {key[1] for key in pairs} | {"absent"}:
        assert pairs.firsts(second) == [key[0] for key in pairs if key[1] == second]


def test_pair_index_follows_every_change() -> None:
    pairs = PairIndex([(("a", "x"), 1), (("b", "x"), 2)])
    pairs[("a", "y")] = 3
    pairs[("a", "x")] = 4  # an existing key keeps its place
    assert_index_matches(pairs)
    assert pairs.seconds("a") == ["x", "y"]
    del pairs[("a", "x")]
    pairs[("a", "x")] = 5  # back at the end, as in the dict
    assert pairs.seconds("a") == ["y", "x"]
    assert pairs.pop(("b", "x")) == 2
    assert pairs.pop(("b", "x"), None) is None
    with pytest.raises(KeyError):
        pairs.pop(("b", "x"))
    assert pairs.setdefault(("c", "z"), 6) == 6
    pairs.update({("d", "x"): 7}, **{})
    pairs |= {("e", "x"): 8}
    assert_index_matches(pairs)
    assert pairs.popitem() == (("e", "x"), 8)
    assert_index_matches(pairs)
    pairs.clear()
    assert pairs.seconds("a") == [] and pairs.firsts("x") == []


# --- the IoT patches against moto's own functions -------------------------------------------------


@pytest.fixture
def patched() -> Iterator[tuple[Any, dict[str, Callable[..., Any]]]]:
    """An IoT client on moto with every patch applied, and moto's unpatched IoT functions."""
    originals = {name: getattr(moto.iot.models.IoTBackend, name) for name in IOT_PATCHES}
    fidelity = MotoFidelity()
    with mock_aws_with_valid_certs():
        fidelity.apply()
        assert all(getattr(moto.iot.models.IoTBackend, name) is not originals[name] for name in originals)
        try:
            yield boto3.client("iot", region_name=REGION), originals
        finally:
            fidelity.restore()


def answer(function: Callable[..., Any], *args: Any) -> Any:
    try:
        result = function(*args)
    except ResourceNotFoundException:
        return "not found"
    return list(result) if isinstance(result, list) else result


def assert_same_answers(originals: dict[str, Callable[..., Any]], names: list[str], certs: list[str]) -> None:
    backend = moto.iot.models.iot_backends[DEFAULT_ACCOUNT_ID][REGION]
    arns = [f"arn:aws:iot:{REGION}:{DEFAULT_ACCOUNT_ID}:cert/{cert}" for cert in certs]
    questions = {
        "describe_thing": [*names, "missing-thing"],
        "list_thing_principals": names,  # moto's error for a missing thing is its own (delegated)
        "describe_certificate": [*certs, "0" * 64],
        "_get_principal": [*arns, arns[0][:-1] + "0"],
        "list_principal_things": [*arns, "arn:aws:iot:us-east-1:1:cert/none"],
        "list_attached_policies": arns,
        "list_principal_policies": arns,
    }
    assert set(questions) == set(IOT_PATCHES)
    for name, arguments in questions.items():
        for argument in arguments:
            fast = answer(getattr(backend, name), argument)
            slow = answer(originals[name], backend, argument)
            assert fast == slow, (name, argument)


def test_iot_lookups_stay_moto_s_after_attaches_detaches_updates_and_deletes(
    patched: tuple[Any, dict[str, Callable[..., Any]]],
) -> None:
    iot, originals = patched
    ca = make_ca("Speed CA")
    certs = [
        iot.register_certificate_without_ca(
            certificatePem=make_device_cert(f"dev-{n}", ca).pem(), status="ACTIVE"
        )
        for n in range(4)
    ]
    ids = [cert["certificateId"] for cert in certs]
    arns = [cert["certificateArn"] for cert in certs]
    names = ["thing-a", "thing-b", "thing-c"]
    for name in names:
        iot.create_thing(thingName=name)
    for policy in ("p1", "p2"):
        iot.create_policy(
            policyName=policy, policyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
        )
    iot.attach_thing_principal(thingName="thing-a", principal=arns[0])
    iot.attach_thing_principal(thingName="thing-a", principal=arns[1])
    iot.attach_thing_principal(thingName="thing-b", principal=arns[0])
    iot.attach_policy(policyName="p2", target=arns[0])
    iot.attach_policy(policyName="p1", target=arns[0])
    iot.attach_policy(policyName="p1", target=arns[1])
    assert_same_answers(originals, names, ids)
    assert iot.list_principal_things(principal=arns[0])["things"] == ["thing-a", "thing-b"]

    iot.detach_thing_principal(thingName="thing-a", principal=arns[0])
    iot.detach_policy(policyName="p2", target=arns[0])
    iot.attach_policy(policyName="p2", target=arns[0])
    iot.attach_thing_principal(thingName="thing-a", principal=arns[0])
    iot.update_thing(thingName="thing-b", attributePayload={"attributes": {"k": "v"}})
    assert_same_answers(originals, names, ids)

    iot.delete_thing(thingName="thing-c")
    iot.update_certificate(certificateId=ids[3], newStatus="INACTIVE")
    iot.delete_certificate(certificateId=ids[3])
    iot.create_thing(thingName="thing-c")  # a new thing under an old name has no principals
    assert_same_answers(originals, names, ids)
    assert iot.list_thing_principals(thingName="thing-c")["principals"] == []
    assert iot.describe_thing(thingName="thing-b")["attributes"] == {"k": "v"}


def test_exclusive_attach_still_refuses_a_principal_held_elsewhere(
    patched: tuple[Any, dict[str, Callable[..., Any]]],
) -> None:
    iot, _ = patched
    arn = iot.register_certificate_without_ca(
        certificatePem=make_device_cert("dev", make_ca("Speed CA")).pem(), status="ACTIVE"
    )["certificateArn"]
    for name in ("one", "two"):
        iot.create_thing(thingName=name)
    iot.attach_thing_principal(thingName="one", principal=arn)
    with pytest.raises(iot.exceptions.InvalidRequestException, match="attached to thing one"):
        iot.attach_thing_principal(thingName="two", principal=arn, thingPrincipalType="EXCLUSIVE_THING")
    iot.detach_thing_principal(thingName="one", principal=arn)
    iot.attach_thing_principal(thingName="two", principal=arn, thingPrincipalType="EXCLUSIVE_THING")
    assert iot.list_principal_things(principal=arn)["things"] == ["two"]


# --- DynamoDB transactions ------------------------------------------------------------------------


def _tables(ddb: Any) -> None:
    create_jobs_table(ddb, "ranged")
    ddb.create_table(
        TableName="flat",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName="ranged", Item={"pk": {"S": "job"}, "sk": {"S": "meta"}, "n": {"N": "1"}})
    ddb.put_item(TableName="ranged", Item={"pk": {"S": "job"}, "sk": {"S": "old"}, "v": {"S": "kept"}})
    ddb.put_item(TableName="flat", Item={"id": {"S": "a"}, "v": {"L": [{"S": "x"}]}})


def _failing_transactions() -> list[list[dict[str, Any]]]:
    """Transactions whose early operations change items before a later one fails."""
    changes: list[dict[str, Any]] = [
        {"Put": {"TableName": "ranged", "Item": {"pk": {"S": "job"}, "sk": {"S": "new"}}}},
        {
            "Update": {
                "TableName": "ranged",
                "Key": {"pk": {"S": "job"}, "sk": {"S": "meta"}},
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
        {"Delete": {"TableName": "ranged", "Key": {"pk": {"S": "job"}, "sk": {"S": "old"}}}},
        {
            "Update": {
                "TableName": "flat",
                "Key": {"id": {"S": "a"}},
                "UpdateExpression": "SET v = list_append(v, :more)",
                "ExpressionAttributeValues": {":more": {"L": [{"S": "y"}]}},
            }
        },
    ]
    refused = {
        "ConditionCheck": {
            "TableName": "flat",
            "Key": {"id": {"S": "missing"}},
            "ConditionExpression": "attribute_exists(id)",
        }
    }
    repeated = {"Put": {"TableName": "flat", "Item": {"id": {"S": "a"}}}}
    unreadable = {"Put": {"TableName": "flat", "Item": {"id": {"N": "not a number"}}}}  # moto's path
    return [[*changes, refused], [*changes, repeated], [*changes, unreadable]]


def _contents(ddb: Any) -> dict[str, list[Any]]:
    return {
        name: sorted(json.dumps(item, sort_keys=True) for item in ddb.scan(TableName=name)["Items"])
        for name in ("ranged", "flat")
    }


def _run(ddb: Any) -> tuple[list[str], dict[str, list[Any]]]:
    _tables(ddb)
    errors = []
    for items in _failing_transactions():
        with pytest.raises(ddb.exceptions.ClientError) as caught:
            ddb.transact_write_items(TransactItems=items)
        errors.append(caught.value.response["Error"]["Code"])
    rolled_back = _contents(ddb)
    ddb.transact_write_items(TransactItems=_failing_transactions()[0][:-1])
    return errors, {**{f"rolled back {k}": v for k, v in rolled_back.items()}, **_contents(ddb)}


def test_a_failed_transaction_leaves_the_tables_as_moto_s_whole_copy_does() -> None:
    with mock_aws_with_valid_certs():
        unpatched = _run(boto3.client("dynamodb", region_name=REGION))
    fidelity = MotoFidelity()
    with mock_aws_with_valid_certs():
        fidelity.apply()
        try:
            ddb = boto3.client("dynamodb", region_name=REGION)
            patched = _run(ddb)
            backend = moto.dynamodb.models.dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
            table = backend.tables["ranged"]
            with pytest.raises(ddb.exceptions.TransactionCanceledException):
                ddb.transact_write_items(TransactItems=_failing_transactions()[0])
            assert backend.tables["ranged"] is table  # rolled back in place: no whole-table copy was made
        finally:
            fidelity.restore()
    assert patched == unpatched
    assert unpatched[0] == [
        "TransactionCanceledException",
        "ValidationException",
        "TransactionCanceledException",
    ]
    assert unpatched[1]["rolled back ranged"] == [
        '{"n": {"N": "1"}, "pk": {"S": "job"}, "sk": {"S": "meta"}}',
        '{"pk": {"S": "job"}, "sk": {"S": "old"}, "v": {"S": "kept"}}',
    ]
