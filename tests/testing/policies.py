"""The IAM, bucket and queue policies of template.yaml, resolved for one set of parameter values.

Intrinsics are resolved with the project's own resolver (`thingpress.cfn`); every resource gets a
synthetic physical id in the form AWS gives it (an S3 bucket's ARN, a log group's ``:*`` ARN, a
role's ARN with its path...), so a resolved statement reads as it would on AWS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from testing.helpers import TEMPLATE_PATH
from thingpress.cfn import Resolver, load_template

REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK_ID = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/thingpress/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
STACK_UUID = STACK_ID.rsplit("/", 1)[1]
# Every optional statement switched on: a KMS key, fleet-wide circuits, both trust prefixes, operators.
ALL_ON = {
    "BucketKmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "FleetWideCircuits": "true",
    "TrustedCaPrefix": "trusted-cas/",
    "OperatorPrincipalArns": f"arn:aws:iam::{ACCOUNT}:role/ThingpressOperator",
    "AlarmEmail": "ops@example.com",
    "ReconcileSchedule": "rate(1 day)",
}
IDENTITY = "identity"
RESOURCE = "resource"


@dataclass(frozen=True)
class Policy:
    """One policy document of the template, resolved."""

    owner: str  # the logical id of the role, managed policy, bucket/queue/topic policy or key
    kind: str  # IDENTITY or RESOURCE
    resource_type: str
    statements: list[dict[str, Any]]


class ResolvedTemplate:
    """template.yaml with its intrinsics resolved for one set of parameter values."""

    def __init__(self, parameters: dict[str, str] | None = None) -> None:
        """Load the template and give every resource a synthetic physical id.

        Args:
            parameters: Parameter overrides (defaults otherwise).

        """
        self.template = load_template(TEMPLATE_PATH)
        self.resolver = Resolver(self.template, parameters, region=REGION, account=ACCOUNT, stack_id=STACK_ID)
        for logical_id, resource in self.template["Resources"].items():
            self.resolver.physical_ids[logical_id] = self._physical_id(logical_id, resource)

    def _physical_id(self, logical_id: str, resource: dict[str, Any]) -> dict[str, Any]:
        kind, name = resource["Type"], f"thingpress-{logical_id}-ABC123"
        props = resource.get("Properties") or {}
        prefix = f"{REGION}:{ACCOUNT}"
        if kind == "AWS::S3::Bucket":
            name = self.resolve(props["BucketName"], logical_id)
            return {"Ref": name, "Arn": f"arn:aws:s3:::{name}"}
        if kind == "AWS::SQS::Queue":
            url = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
            return {"Ref": url, "Arn": f"arn:aws:sqs:{prefix}:{name}", "QueueName": name, "QueueUrl": url}
        if kind == "AWS::DynamoDB::Table":
            return {"Ref": name, "Arn": f"arn:aws:dynamodb:{prefix}:table/{name}"}
        if kind == "AWS::Logs::LogGroup":
            return {"Ref": name, "Arn": f"arn:aws:logs:{prefix}:log-group:{name}:*"}
        if kind == "AWS::IAM::Role":
            path = self.resolve(props.get("Path", "/"), logical_id)
            return {"Ref": name, "Arn": f"arn:aws:iam::{ACCOUNT}:role{path}{name}"}
        if kind == "AWS::IAM::ManagedPolicy":
            return {"Ref": f"arn:aws:iam::{ACCOUNT}:policy/{name}"}
        if kind == "AWS::KMS::Key":
            return {"Ref": name, "Arn": f"arn:aws:kms:{prefix}:key/{name}"}
        if kind == "AWS::SNS::Topic":
            return {"Ref": f"arn:aws:sns:{prefix}:{name}", "TopicName": name}
        if kind == "AWS::Serverless::Function":
            return {"Ref": name, "Arn": f"arn:aws:lambda:{prefix}:function:{name}"}
        return {"Ref": name}

    def resolve(self, value: Any, where: str) -> Any:
        """Return ``value`` with its intrinsics resolved."""
        return self.resolver.resolve(value, where=where)

    def arn(self, logical_id: str) -> str:
        """Return the synthetic ARN of a resource."""
        return str(self.resolver.physical_ids[logical_id]["Arn"])

    def policies(self) -> list[Policy]:
        """Return every identity and resource policy document of the enabled resources."""
        found: list[Policy] = []
        for logical_id, resource in self.template["Resources"].items():
            if not self.resolver.resource_enabled(logical_id):
                continue
            kind, props = resource["Type"], resource.get("Properties") or {}
            documents: list[tuple[str, Any]] = []
            if kind == "AWS::IAM::Role":
                documents = [(IDENTITY, policy["PolicyDocument"]) for policy in props.get("Policies", [])]
            elif kind == "AWS::IAM::ManagedPolicy":
                documents = [(IDENTITY, props["PolicyDocument"])]
            elif kind in {"AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"}:
                documents = [(RESOURCE, props["PolicyDocument"])]
            elif kind == "AWS::KMS::Key":
                documents = [(RESOURCE, props["KeyPolicy"])]
            for policy_kind, document in documents:
                resolved = self.resolve(document, f"Resources.{logical_id}")
                statements = resolved["Statement"]
                found.append(
                    Policy(
                        logical_id,
                        policy_kind,
                        kind,
                        statements if isinstance(statements, list) else [statements],
                    )
                )
        return found

    def statements_of(self, owner: str) -> list[dict[str, Any]]:
        """Return the resolved statements of every policy document ``owner`` holds."""
        return [s for policy in self.policies() if policy.owner == owner for s in policy.statements]
