"""Every IAM statement in template.yaml against the AWS Service Authorization Reference.

moto never checks IAM; AWS denies a statement whose resources are of a type the action does not
support. Each action must exist, and each resource ARN must be of a resource type the action supports
(an action that supports none needs ``"*"``).
"""

from __future__ import annotations

from typing import Any

import pytest

from testing.iam_reference import iam_definition, names_resource_type, privileges, resource_arn_templates
from testing.policies import ALL_ON, ResolvedTemplate
from testing.policy_eval import wildcard_match

PARAMETER_SETS = {"defaults": {}, "every option on": ALL_ON}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _problems(statement: dict[str, Any], *, key_policy: bool) -> list[str]:
    problems: list[str] = []
    for action in _as_list(statement.get("Action", statement.get("NotAction"))):
        service, _, name = action.partition(":")
        known = privileges(service)
        if "*" in name or "?" in name:
            if not any(wildcard_match(name, candidate, ignore_case=True) for candidate in known):
                problems.append(f"{action} matches no {service} action")
            continue
        if name not in known:
            problems.append(f"{action} is not a {service} action")
            continue
        templates = resource_arn_templates(service, name)
        # In a key policy "*" means the key itself.
        if key_policy or "NotAction" in statement:
            continue
        for arn in _as_list(statement.get("Resource", statement.get("NotResource"))):
            if arn == "*":
                if templates:
                    problems.append(f"{action} on '*': it supports resource types {templates}, name them")
            elif not templates:
                problems.append(f"{action} supports no resource type, so {arn} is never matched: use '*'")
            elif not any(names_resource_type(arn, template) for template in templates):
                problems.append(f"{action} on {arn}: not of a type it supports {templates}")
    return problems


def test_the_authorization_data_is_found() -> None:
    data = iam_definition()
    assert "RegisterCertificateWithoutCA" in data["iot"]["privileges"]


@pytest.mark.parametrize("parameters", PARAMETER_SETS.values(), ids=PARAMETER_SETS.keys())
def test_every_statement_names_existing_actions_on_supported_resource_types(
    parameters: dict[str, str],
) -> None:
    policies = ResolvedTemplate(parameters).policies()
    assert {p.resource_type for p in policies} >= {
        "AWS::IAM::Role",
        "AWS::IAM::ManagedPolicy",
        "AWS::S3::BucketPolicy",
        "AWS::SQS::QueuePolicy",
    }
    problems = [
        f"{policy.owner} {statement.get('Sid', '?')}: {problem}"
        for policy in policies
        for statement in policy.statements
        for problem in _problems(statement, key_policy=policy.resource_type == "AWS::KMS::Key")
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("arn", "action", "expected"),
    [
        ("arn:aws:iot:us-east-1:123456789012:cert/*", "AttachPolicy", True),
        ("arn:aws:iot:us-east-1:123456789012:policy/*", "AttachPolicy", False),
        ("arn:aws:iot:us-east-1:123456789012:thing/*", "DescribeCertificate", False),
        ("arn:aws:iot:us-east-1:123456789012:thinggroup/g", "AddThingToThingGroup", True),
    ],
)
def test_resource_type_matching(arn: str, action: str, expected: bool) -> None:
    templates = resource_arn_templates("iot", action)
    assert any(names_resource_type(arn, template) for template in templates) is expected


def test_a_log_group_arn_names_its_log_streams() -> None:
    (template,) = resource_arn_templates("logs", "PutLogEvents")
    assert names_resource_type("arn:aws:logs:us-east-1:123456789012:log-group:g:*", template)
    assert not names_resource_type("arn:aws:logs:us-east-1:123456789012:log-group:g", template)


def test_the_check_catches_what_aws_would_refuse() -> None:
    scoped_attach = {
        "Sid": "AttachCertificatesToThings",
        "Effect": "Allow",
        "Action": ["iot:AttachThingPrincipal", "iot:AttachPolicy", "iot:NoSuchAction"],
        "Resource": ["arn:aws:iot:us-east-1:123456789012:thing/*"],
    }
    assert _problems(scoped_attach, key_policy=False) == [
        "iot:AttachThingPrincipal supports no resource type, so "
        "arn:aws:iot:us-east-1:123456789012:thing/* is never matched: use '*'",
        "iot:AttachPolicy on arn:aws:iot:us-east-1:123456789012:thing/*: not of a type it supports "
        "['arn:${Partition}:iot:${Region}:${Account}:cert/${Certificate}', "
        "'arn:${Partition}:iot:${Region}:${Account}:thinggroup/${ThingGroupName}']",
        "iot:NoSuchAction is not a iot action",
    ]
