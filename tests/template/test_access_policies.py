"""Who may write the intake bucket and send to the queues: the template's policies, evaluated.

moto enforces neither bucket nor queue policies, so these tests evaluate the resolved statements of
template.yaml with `testing.policy_eval` for representative requests: an uploader holding the
stack's UploaderPolicy, a careless uploader whose own policy grants everything, the functions'
roles, an operator, and S3 delivering notifications.
"""

from __future__ import annotations

from typing import Any

import pytest

from testing.policies import ACCOUNT, ALL_ON, ResolvedTemplate
from testing.policy_eval import Decision, Request, decide

UPLOADER = f"arn:aws:iam::{ACCOUNT}:role/ManifestUploader"
OPERATOR = ALL_ON["OperatorPrincipalArns"]
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
EVERYTHING = [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
INTAKE_PREFIXES = ["microchip/", "infineon/", "espressif/", "generated/", "incoming/"]
ROLES = ("ManifestProviderRole", "BulkImporterRole", "JobSweeperRole", "UndoRole")


@pytest.fixture(scope="module")
def stack() -> ResolvedTemplate:
    return ResolvedTemplate(ALL_ON)


def put(
    stack: ResolvedTemplate, principal: str, identity: list[dict[str, Any]], key: str, **context: str
) -> Decision:
    request = Request(principal, "s3:PutObject", f"{stack.arn('ManifestBucket')}/{key}", context)
    return decide(request, identity=identity, resource=stack.statements_of("ManifestBucketPolicy"))


def role(stack: ResolvedTemplate, name: str) -> tuple[str, list[dict[str, Any]]]:
    return stack.arn(name), stack.statements_of(name)


# --------------------------------------------------------------------------------------------- bucket


@pytest.mark.parametrize("prefix", INTAKE_PREFIXES)
def test_an_uploader_with_the_uploader_policy_puts_manifests_under_the_intake_prefixes(
    stack: ResolvedTemplate, prefix: str
) -> None:
    assert put(stack, UPLOADER, stack.statements_of("UploaderPolicy"), f"{prefix}batch-7.json") == "allowed"


@pytest.mark.parametrize(
    "key",
    [
        "reports/microchip/batch-7.json",
        "verifiers/microchip/signer.pem",
        "trusted-cas/espressif/ca.pem",
        "batch.csv",
    ],
)
def test_an_uploader_cannot_write_outside_the_intake_prefixes_whatever_its_own_policy(
    stack: ResolvedTemplate, key: str
) -> None:
    assert put(stack, UPLOADER, stack.statements_of("UploaderPolicy"), key) == "denied"
    assert put(stack, UPLOADER, EVERYTHING, key) == "denied"


@pytest.mark.parametrize(
    "action",
    ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectTagging", "s3:DeleteObjectTagging"],
)
@pytest.mark.parametrize(
    "key", ["reports/microchip/batch-7.json", "verifiers/microchip/signer.pem", "trusted-cas/x/ca.pem"]
)
def test_nobody_but_the_stack_and_operators_changes_the_reserved_prefixes(
    stack: ResolvedTemplate, action: str, key: str
) -> None:
    bucket = stack.statements_of("ManifestBucketPolicy")
    resource = f"{stack.arn('ManifestBucket')}/{key}"
    assert decide(Request(UPLOADER, action, resource), identity=EVERYTHING, resource=bucket) == "denied"
    assert decide(Request(OPERATOR, action, resource), identity=EVERYTHING, resource=bucket) == "allowed"


@pytest.mark.parametrize("name", ROLES)
def test_the_functions_write_reports_and_nothing_else(stack: ResolvedTemplate, name: str) -> None:
    arn, identity = role(stack, name)
    assert put(stack, arn, identity, "reports/microchip/batch-7.json") == "allowed"
    assert (
        put(stack, arn, identity, "reports/microchip/batch-7.json", **{"aws:SecureTransport": "false"})
        == "denied"
    )
    for key in ("verifiers/microchip/signer.pem", "trusted-cas/x/ca.pem", "incoming/batch.csv"):
        assert put(stack, arn, identity, key) == "implicitly denied", (name, key)


def test_the_provider_reads_the_trust_anchors(stack: ResolvedTemplate) -> None:
    arn, identity = role(stack, "ManifestProviderRole")
    request = Request(arn, "s3:GetObject", f"{stack.arn('ManifestBucket')}/verifiers/microchip/signer.pem")
    assert (
        decide(request, identity=identity, resource=stack.statements_of("ManifestBucketPolicy")) == "allowed"
    )


@pytest.mark.parametrize("key", ["verifiers/microchip/signer.pem", "trusted-cas/x/ca.pem", "reports/a.json"])
def test_the_operator_writes_the_trust_anchors(stack: ResolvedTemplate, key: str) -> None:
    assert put(stack, OPERATOR, EVERYTHING, key) == "allowed"


def test_without_operator_principals_only_the_account_root_writes_the_trust_anchors() -> None:
    stack = ResolvedTemplate()
    assert put(stack, ROOT, EVERYTHING, "verifiers/microchip/signer.pem") == "allowed"
    assert put(stack, OPERATOR, EVERYTHING, "verifiers/microchip/signer.pem") == "denied"
    assert put(stack, UPLOADER, EVERYTHING, "reports/x.json") == "denied"


def test_a_trust_prefix_inside_an_intake_prefix_stays_out_of_uploaders_reach() -> None:
    stack = ResolvedTemplate({**ALL_ON, "TrustedCaPrefix": "incoming/cas/"})
    assert put(stack, UPLOADER, EVERYTHING, "incoming/cas/espressif/ca.pem") == "denied"
    assert put(stack, UPLOADER, EVERYTHING, "incoming/batch.csv") == "allowed"


def test_the_intake_prefixes_are_the_notification_prefixes(stack: ResolvedTemplate) -> None:
    bucket = stack.template["Resources"]["ManifestBucket"]["Properties"]
    notified = [
        config["Filter"]["S3Key"]["Rules"][0]["Value"]
        for config in bucket["NotificationConfiguration"]["QueueConfigurations"]
    ]
    arn = stack.arn("ManifestBucket")
    (outside,) = [
        s
        for s in stack.statements_of("ManifestBucketPolicy")
        if s["Sid"] == "DenyWritesOutsideIntakePrefixes"
    ]
    (uploads,) = [s for s in stack.statements_of("UploaderPolicy") if s["Sid"] == "PutManifests"]
    expected = [f"{arn}/{prefix}*" for prefix in notified]
    assert notified == INTAKE_PREFIXES
    assert outside["NotResource"] == expected
    assert uploads["Resource"] == expected


# --------------------------------------------------------------------------------------------- queues


def send(
    stack: ResolvedTemplate,
    queue: str,
    policy: str,
    principal: str,
    identity: list[dict[str, Any]],
    **context: str,
) -> Decision:
    request = Request(principal, "sqs:SendMessage", stack.arn(queue), context)
    return decide(request, identity=identity, resource=stack.statements_of(policy))


def test_the_intake_queue_takes_this_buckets_notifications_only(stack: ResolvedTemplate) -> None:
    bucket = stack.arn("ManifestBucket")
    ours = {"aws:SourceArn": bucket, "aws:SourceAccount": ACCOUNT}
    assert send(stack, "IntakeQueue", "IntakeQueuePolicy", "s3.amazonaws.com", [], **ours) == "allowed"
    other = {"aws:SourceArn": "arn:aws:s3:::someone-elses-bucket", "aws:SourceAccount": ACCOUNT}
    assert send(stack, "IntakeQueue", "IntakeQueuePolicy", "s3.amazonaws.com", [], **other) == "denied"
    foreign = {"aws:SourceArn": bucket, "aws:SourceAccount": "999999999999"}
    assert (
        send(stack, "IntakeQueue", "IntakeQueuePolicy", "s3.amazonaws.com", [], **foreign)
        == "implicitly denied"
    )


@pytest.mark.parametrize(
    ("queue", "policy", "senders"),
    [
        ("IntakeQueue", "IntakeQueuePolicy", {"ManifestProviderRole"}),
        ("ImportQueue", "ImportQueuePolicy", {"ManifestProviderRole", "BulkImporterRole"}),
        ("IntakeDLQ", "DeadLetterQueuePolicy", set()),
        ("ImportDLQ", "DeadLetterQueuePolicy", set()),
        # An undo request deletes IoT resources: operators (and the UndoFunction's continuations) only.
        ("UndoQueue", "UndoQueuePolicy", {"UndoRole"}),
        ("UndoDeadLetterQueue", "UndoDeadLetterQueuePolicy", set()),
    ],
)
def test_only_the_stack_and_operators_send_to_the_queues(
    stack: ResolvedTemplate, queue: str, policy: str, senders: set[str]
) -> None:
    for name in ROLES:
        arn, identity = role(stack, name)
        expected = "allowed" if name in senders else "denied"
        assert send(stack, queue, policy, arn, identity) == expected, name
        # Even a role granted everything by mistake cannot send where the stack does not.
        assert send(stack, queue, policy, arn, EVERYTHING) == expected, name
    assert send(stack, queue, policy, UPLOADER, EVERYTHING) == "denied"
    assert send(stack, queue, policy, OPERATOR, EVERYTHING) == "allowed"
    assert send(stack, queue, policy, OPERATOR, EVERYTHING, **{"aws:SecureTransport": "false"}) == "denied"
