"""Least-privilege IAM in template.yaml: explicit roles, scoped resources, no certificate deletion."""

from __future__ import annotations

import re
from typing import Any

import pytest

from testing.helpers import TEMPLATE_PATH, as_list, branches

FUNCTIONS = (
    "ManifestProviderFunction",
    "BulkImporterFunction",
    "JobSweeperFunction",
    "UndoFunction",
    "ReconcileFunction",
)
SQS_CONSUMERS = ("ManifestProviderFunction", "BulkImporterFunction", "UndoFunction")

# The only actions AWS offers no resource-level permission for that Thingpress uses: they alone may
# be granted on Resource "*" (Service Authorization Reference, "Resource types" column empty).
NO_RESOURCE_LEVEL_ACTIONS = {
    "iot:RegisterCertificateWithoutCA",
    "iot:AttachThingPrincipal",
    "iot:ListPrincipalThings",
    "iot:ListAttachedPolicies",
    "iot:DetachThingPrincipal",
    "iot:ListThingPrincipals",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "cloudwatch:PutMetricData",
}
# What the importer needs: register certificates, create things, attach, group, and the conflict
# path's reads (an existing certificate's things and policies) and thing update. Nothing that deletes,
# detaches or changes a certificate.
IMPORTER_IOT_ACTIONS = {
    "iot:ListPrincipalThings",
    "iot:ListAttachedPolicies",
    "iot:RegisterCertificateWithoutCA",
    "iot:CreateThing",
    "iot:AttachThingPrincipal",
    "iot:AttachPolicy",
    "iot:AddThingToThingGroup",
    "iot:DescribeCertificate",
    "iot:DescribeThing",
    "iot:UpdateThing",
    "iot:ListThingGroupsForThing",
}
FORBIDDEN_IOT_PREFIXES = (
    "iot:Delete",
    "iot:Detach",
    "iot:UpdateCertificate",
    "iot:UpdateCACertificate",
    "iot:Reject",
    "iot:Transfer",
    "iot:Cancel",
    "iot:Replace",
)
RECEIVE_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
CONSUMER_ACTIONS = RECEIVE_ACTIONS | {"sqs:ChangeMessageVisibility", "sqs:DeleteMessageBatch"}


@pytest.fixture(scope="module")
def template_text() -> str:
    return TEMPLATE_PATH.read_text(encoding="utf-8")


def role_of(template: dict[str, Any], function: str) -> str:
    role = template["Resources"][function]["Properties"]["Role"]
    assert isinstance(role, dict) and "Fn::GetAtt" in role, f"{function} must use the template's own role"
    name, attribute = role["Fn::GetAtt"]
    assert attribute == "Arn"
    assert template["Resources"][name]["Type"] == "AWS::IAM::Role"
    return str(name)


def role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for item in policy["PolicyDocument"]["Statement"]:
            found.extend(branches(item))
    return found


def function_statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    return role_statements(template, role_of(template, function))


def actions_of(statements: list[dict[str, Any]]) -> set[str]:
    return {action for statement in statements for action in as_list(statement["Action"])}


def source_queues(template: dict[str, Any], function: str) -> list[Any]:
    events = template["Resources"][function]["Properties"]["Events"].values()
    return [event["Properties"]["Queue"] for event in events if event["Type"] == "SQS"]


def role_block(text: str, role: str) -> str:
    """Return the template text of one resource (its header line to the next top-level resource)."""
    match = re.search(rf"^  {role}:\n(.*?)(?=^  \S)", text, flags=re.MULTILINE | re.DOTALL)
    assert match is not None, f"{role} not found in the template text"
    return match.group(1)


def comment_before(block: str, sid: str) -> str:
    """Return the comment lines directly above the statement with this Sid, joined."""
    lines = block.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.strip() == f"- Sid: {sid}"]
    comments: list[str] = []
    for line in reversed(lines[:index]):
        if not line.strip().startswith("#"):
            break
        comments.insert(0, line.strip().lstrip("#").strip())
    return " ".join(comments)


def test_every_function_has_its_own_role_and_no_managed_or_sam_policies(template: dict[str, Any]) -> None:
    roles = [role_of(template, function) for function in FUNCTIONS]
    assert len(set(roles)) == len(roles), "each function needs a role of its own"
    function_globals = template["Globals"]["Function"]
    assert "Policies" not in function_globals
    assert "Role" not in function_globals
    for function in FUNCTIONS:
        props = template["Resources"][function]["Properties"]
        # With an explicit Role SAM adds nothing; Policies would be ignored or rejected.
        assert "Policies" not in props, function
        assert "PermissionsBoundary" not in props, function
    for role in roles:
        props = template["Resources"][role]["Properties"]
        assert "ManagedPolicyArns" not in props, f"{role} attaches managed policies"
        (trust,) = props["AssumeRolePolicyDocument"]["Statement"]
        assert trust == {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    # Stand-alone policies could add permissions the roles' inline documents do not show. The one
    # managed policy is the uploaders', for the operator to attach: the template attaches it nowhere.
    standalone = {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"}
    }
    assert set(standalone) == {"UploaderPolicy"}
    assert standalone["UploaderPolicy"]["Type"] == "AWS::IAM::ManagedPolicy"
    assert not {"Roles", "Users", "Groups"} & set(standalone["UploaderPolicy"]["Properties"])


def test_statements_allow_only_named_actions_on_named_resources(template: dict[str, Any]) -> None:
    for function in FUNCTIONS:
        statements = function_statements(template, function)
        assert statements
        for statement in statements:
            sid = statement.get("Sid")
            assert sid, f"{function}: every statement has a Sid"
            assert statement["Effect"] == "Allow", f"{function} {sid}"
            assert "NotAction" not in statement, f"{function} {sid}"
            assert "NotResource" not in statement, f"{function} {sid}"
            for action in as_list(statement["Action"]):
                assert "*" not in action, f"{function} {sid} grants the wildcard action {action}"
                assert action.count(":") == 1, f"{function} {sid}: {action}"


def test_resource_star_only_for_actions_without_resource_level_permissions(
    template: dict[str, Any], template_text: str
) -> None:
    star_statements = 0
    for function in FUNCTIONS:
        role = role_of(template, function)
        block = role_block(template_text, role)
        for statement in role_statements(template, role):
            resources = as_list(statement["Resource"])
            if "*" not in resources:
                for resource in resources:
                    assert resource != "*", statement["Sid"]
                continue
            star_statements += 1
            assert resources == ["*"], f"{role} {statement['Sid']} mixes '*' with named resources"
            actions = set(as_list(statement["Action"]))
            assert actions <= NO_RESOURCE_LEVEL_ACTIONS, (
                f"{role} {statement['Sid']} grants {sorted(actions - NO_RESOURCE_LEVEL_ACTIONS)} on '*'"
            )
            comment = comment_before(block, statement["Sid"])
            assert "no resource-level" in comment, (
                f"{role} {statement['Sid']}: say in a comment why Resource '*' is needed"
            )
            if any(action.startswith("iot:") for action in actions):
                # IoT writes on "*" are narrowed by the global aws:RequestedRegion key (IoT has none).
                assert statement["Condition"] == {
                    "StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}
                }, f"{role} {statement['Sid']}"
                assert "aws:RequestedRegion" in comment
    # X-Ray in every role; RegisterCertificateWithoutCA, AttachThingPrincipal and the existing-certificate
    # reads in the importer's; the principal detach and reads in the undo's; the principal reads in the
    # scheduled reconcile's.
    assert star_statements == 10


def test_importer_registers_creates_and_attaches_only(template: dict[str, Any]) -> None:
    actions = actions_of(function_statements(template, "BulkImporterFunction"))
    iot = {action for action in actions if action.startswith("iot:")}
    assert iot == IMPORTER_IOT_ACTIONS
    assert [action for action in actions if action.startswith(FORBIDDEN_IOT_PREFIXES)] == []
    # The certificate is registered ACTIVE in the same call: no later status change is needed.
    assert not any(action.startswith("iot:Update") and "Certificate" in action for action in actions)


# What the undo needs (undo_worker.undo): its reads, then the delete path in dependency order. Nothing
# that registers, creates, attaches or adds; ownership is checked in the function (IAM has no
# condition key for who made an IoT certificate or thing).
UNDO_IOT_ACTIONS = {
    "iot:DescribeCertificate",
    "iot:ListPrincipalThings",
    "iot:ListAttachedPolicies",
    "iot:DescribeThing",
    "iot:ListThingPrincipals",
    "iot:DetachPolicy",
    "iot:RemoveThingFromThingGroup",
    "iot:DetachThingPrincipal",
    "iot:UpdateCertificate",
    "iot:DeleteCertificate",
    "iot:DeleteThing",
}
IOT_ARN = "arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}"


def test_undo_reads_and_deletes_only_on_the_stacks_account_and_region(template: dict[str, Any]) -> None:
    statements = function_statements(template, "UndoFunction")
    actions = actions_of(statements)
    assert {a for a in actions if a.startswith("iot:")} == UNDO_IOT_ACTIONS
    assert not {a for a in actions if a.startswith(("iot:Create", "iot:Attach", "iot:Add", "iot:Register"))}
    allowed = {f"{IOT_ARN}:{kind}/*" for kind in ("cert", "thing", "thinggroup")}
    for statement in statements:
        if not any(a.startswith("iot:") for a in as_list(statement["Action"])):
            continue
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                continue  # only actions without resource-level permissions, region-bound (tested above)
            assert resource["Fn::Sub"] in allowed, (statement["Sid"], resource)
    # The undo sends only its own continuations, to its own queue; it reads no manifest.
    sends = [s for s in statements if "sqs:SendMessage" in as_list(s["Action"])]
    assert [s["Resource"] for s in sends] == [{"Fn::GetAtt": ["UndoQueue", "Arn"]}]
    assert {a for a in actions if a.startswith("s3:")} == {"s3:PutObject"}
    assert "dynamodb:Scan" not in actions and "dynamodb:DeleteItem" not in actions - {
        a for s in statements if s["Sid"] == "CircuitStateTable" for a in as_list(s["Action"])
    }


# What layer_utils.reconcile reads, and nothing else: the scheduled reconcile changes nothing.
RECONCILE_IOT_ACTIONS = {
    "iot:DescribeCertificate",
    "iot:DescribeThing",
    "iot:ListThingGroupsForThing",
    "iot:ListThingPrincipals",
    "iot:ListPrincipalThings",
    "iot:ListAttachedPolicies",
}


def test_scheduled_reconcile_only_reads_jobs_and_iot(template: dict[str, Any]) -> None:
    statements = function_statements(template, "ReconcileFunction")
    actions = actions_of(statements)
    assert {a for a in actions if a.startswith("iot:")} == RECONCILE_IOT_ACTIONS
    assert {a for a in actions if a.startswith("dynamodb:")} == {"dynamodb:Scan", "dynamodb:Query"}
    assert not {a for a in actions if a.startswith(("s3:", "sqs:", "kms:"))}
    allowed = {f"{IOT_ARN}:{kind}/*" for kind in ("cert", "thing")}
    for statement in statements:
        if any(a.startswith("iot:") for a in as_list(statement["Action"])) and statement["Resource"] != "*":
            assert statement["Resource"]["Fn::Sub"] in allowed, statement["Sid"]
    events = template["Resources"]["ReconcileFunction"]["Properties"]["Events"].values()
    assert [event["Type"] for event in events] == ["Schedule"]


def test_provider_only_reads_iot(template: dict[str, Any]) -> None:
    actions = actions_of(function_statements(template, "ManifestProviderFunction"))
    iot = {action for action in actions if action.startswith("iot:")}
    assert iot == {"iot:GetPolicy", "iot:DescribeThingGroup", "iot:DescribeThingType"}


def test_no_function_deletes_s3_objects_or_writes_outside_reports(template: dict[str, Any]) -> None:
    for function in FUNCTIONS:
        for statement in function_statements(template, function):
            actions = set(as_list(statement["Action"]))
            s3_actions = {a for a in actions if a.startswith("s3:")}
            assert not {a for a in s3_actions if a.startswith(("s3:Delete", "s3:PutBucket"))}, function
            if "s3:PutObject" in s3_actions:
                assert statement["Resource"] == {"Fn::Sub": "${ManifestBucket.Arn}/reports/*"}, function


@pytest.mark.parametrize("function", SQS_CONSUMERS)
def test_queue_consumption_is_scoped_to_the_functions_own_source_queue(
    template: dict[str, Any], function: str
) -> None:
    (queue,) = source_queues(template, function)
    granted: set[str] = set()
    for statement in function_statements(template, function):
        consumer = set(as_list(statement["Action"])) & CONSUMER_ACTIONS
        if consumer:
            assert as_list(statement["Resource"]) == [queue], (
                f"{function} {statement['Sid']} may consume {statement['Resource']}, not only {queue}"
            )
            granted |= consumer
    assert granted >= RECEIVE_ACTIONS


def test_sweeper_only_reads_and_finishes_jobs_and_writes_reports(template: dict[str, Any]) -> None:
    statements = function_statements(template, "JobSweeperFunction")
    actions = actions_of(statements)
    assert {a for a in actions if a.startswith(("sqs:", "iot:", "s3:"))} == {"s3:GetObject", "s3:PutObject"}
    (reports,) = [s for s in statements if "s3:GetObject" in as_list(s["Action"])]
    assert reports["Resource"] == {"Fn::Sub": "${ManifestBucket.Arn}/reports/*"}
    (jobs,) = [s for s in statements if s["Sid"] == "JobsTable"]
    assert set(as_list(jobs["Action"])) == {
        "dynamodb:Scan",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
    }
    assert jobs["Resource"] == {"Fn::GetAtt": ["JobsTable", "Arn"]}
    events = template["Resources"]["JobSweeperFunction"]["Properties"]["Events"].values()
    assert [event["Type"] for event in events] == ["Schedule"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_logs_go_only_to_the_functions_own_log_group(template: dict[str, Any], function: str) -> None:
    log_group = template["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"]
    assert isinstance(log_group, dict) and "Ref" in log_group
    logs = [
        s
        for s in function_statements(template, function)
        if any(a.startswith("logs:") for a in as_list(s["Action"]))
    ]
    (statement,) = logs
    assert set(as_list(statement["Action"])) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert statement["Resource"] == {"Fn::GetAtt": [log_group["Ref"], "Arn"]}
    assert template["Resources"][log_group["Ref"]]["Type"] == "AWS::Logs::LogGroup"


def test_tracing_is_granted_because_it_is_on(template: dict[str, Any]) -> None:
    assert template["Globals"]["Function"]["Tracing"] == "Active"
    for function in FUNCTIONS:
        actions = actions_of(function_statements(template, function))
        assert {"xray:PutTraceSegments", "xray:PutTelemetryRecords"} <= actions, function
