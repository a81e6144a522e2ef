"""The fleet rate budget in the template: its table, the importer's least-privilege access, spreading."""

from __future__ import annotations

import json
import math
from typing import Any


def test_the_importer_reads_and_writes_only_the_budget_item_table(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    table = resources["RateBudgetTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["SSESpecification"] == {"SSEEnabled": True}
    env = resources["BulkImporterFunction"]["Properties"]["Environment"]["Variables"]
    assert env["THINGPRESS_RATE_BUDGET_TABLE"] == {"Ref": "RateBudgetTable"}
    granted = {}
    for name, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if statement.get("Resource") == {"Fn::GetAtt": ["RateBudgetTable", "Arn"]}:
                    granted[name] = sorted(statement["Action"])
    # No Scan, Query or DeleteItem: one item, read, conditionally put, and one entry removed.
    assert granted == {"BulkImporterRole": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]}


def test_a_single_default_manifest_spreads_over_every_concurrent_importer(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    batch = int(parameters["ImportBatchSize"]["Default"])
    per_message = int(parameters["CertsPerMessage"]["Default"])
    concurrency = int(parameters["ImporterMaxConcurrency"]["Default"])
    register_quota = json.loads(parameters["IotApiTps"]["Default"])["RegisterCertificateWithoutCA"]
    # A 200-certificate manifest gives at least one batch to every concurrent invocation ...
    assert math.ceil(200 / per_message) / batch >= concurrency
    # ... and a batch is at least a second of the whole account's quota, so the per-invocation
    # overhead (a few DynamoDB calls) is small against the IoT time it carries.
    assert batch * per_message / register_quota >= 1.0
