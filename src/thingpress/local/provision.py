"""Provisioning of a local stack: the resources of template.yaml created on the moto server.

`Provisioner` creates, in dependency order, the template's buckets (with their S3 → SQS
notifications), queues (with redrive policies), tables, layers and functions, and records what it
made: physical ids and attributes (what ``Ref`` and ``Fn::GetAtt`` give), `FunctionSpec`s,
`EventSourceSpec`s (SQS events) and `ScheduleSpec`s (Schedule events, recorded, never fired). Other
resource types (IAM, policies, log groups, alarms, KMS...) get a placeholder name and ARN so that
references to them still resolve.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from thingpress.cfn import Resolver, TemplateError, function_properties
from thingpress.local.context import function_arn

__all__ = ["EventSourceSpec", "FunctionSpec", "Provisioner", "ScheduleSpec", "string_value"]

_SUB_NAME: Final = re.compile(r"\$\{([^}!][^}]*)\}")


@dataclass(frozen=True)
class FunctionSpec:
    """A template function as the local stack runs it.

    `environment` holds the template's resolved Environment.Variables (Globals merged); `code_dir`
    and `layer_dirs` go on `sys.path` (layer dirs play the part of /opt/python).
    """

    logical_id: str
    name: str
    arn: str
    handler: str
    code_dir: Path
    layer_dirs: tuple[Path, ...]
    runtime: str
    timeout: int
    memory_size: int
    environment: Mapping[str, str]


@dataclass(frozen=True)
class EventSourceSpec:
    """An SQS event source mapping of a function (a SAM `SQS` event of an AWS::Serverless::Function)."""

    function: str
    name: str
    queue: str
    queue_url: str
    queue_arn: str
    batch_size: int = 10
    maximum_batching_window_seconds: int = 0
    function_response_types: tuple[str, ...] = ()
    maximum_concurrency: int | None = None
    enabled: bool = True
    dead_letter_queue_url: str | None = None
    max_receive_count: int | None = None

    @property
    def report_batch_item_failures(self) -> bool:
        """Whether the handler reports partial batch failures (ReportBatchItemFailures)."""
        return "ReportBatchItemFailures" in self.function_response_types


@dataclass(frozen=True)
class ScheduleSpec:
    """A scheduled invocation of a function (a SAM `Schedule` event), recorded but never fired locally.

    `expression` is the resolved schedule expression, e.g. ``rate(15 minutes)``.
    """

    function: str
    name: str
    expression: str
    enabled: bool = True


def string_value(value: Any) -> str:
    """Return a template scalar as CloudFormation passes it to queue attributes and environment variables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _references(value: Any) -> set[str]:
    """Return the names a template value refers to (Ref, GetAtt, Sub variables)."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= _references(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                target = item.split(".", 1)[0] if isinstance(item, str) else item[0]
                if isinstance(target, str):
                    found.add(target)
            elif key == "Fn::Sub":
                text = item if isinstance(item, str) else item[0]
                found |= {name.split(".", 1)[0] for name in _SUB_NAME.findall(text)}
                if isinstance(item, list):
                    found |= _references(item[1])
            else:
                found |= _references(item)
    return found


class Provisioner:
    """Creates a template's resources on the moto server and records what it created.

    Args:
        template: The loaded template.
        template_path: Its path; code and layer directories are relative to its directory.
        resolver: Evaluates the template; its ``physical_ids`` is filled as resources are created.
        client: Returns a boto3 client of the stack for a service name.
        stack_name: Prefix of generated physical names.
        build_dir: A ``sam build`` output directory, or None for code from the source tree.

    """

    def __init__(
        self,
        template: Mapping[str, Any],
        template_path: Path,
        resolver: Resolver,
        client: Callable[[str], Any],
        *,
        stack_name: str,
        build_dir: Path | None,
    ) -> None:
        """Bind the template and where to create it; nothing is created until `create_all`."""
        self.template = template
        self.template_path = template_path
        self.resolver = resolver
        self.client = client
        self.stack_name = stack_name
        self.build_dir = build_dir
        self.region = resolver.region
        self.account_id = resolver.account
        self.physical_ids = resolver.physical_ids
        self.functions: dict[str, FunctionSpec] = {}
        self.event_sources: list[EventSourceSpec] = []
        self.schedules: list[ScheduleSpec] = []
        self.skipped_resources: dict[str, str] = {}
        self._suffix = uuid.uuid4().hex[:8]

    def _creation_order(self) -> list[str]:
        resources: Mapping[str, Any] = self.template.get("Resources") or {}
        enabled = [logical_id for logical_id in resources if self.resolver.resource_enabled(logical_id)]
        dependencies: dict[str, set[str]] = {}
        for logical_id in enabled:
            resource = resources[logical_id]
            properties: Any = resource.get("Properties") or {}
            if resource.get("Type") == "AWS::Serverless::Function":
                properties = function_properties(self.template, logical_id)
            depends = resource.get("DependsOn") or []
            names = _references(properties) | set([depends] if isinstance(depends, str) else depends)
            dependencies[logical_id] = {name for name in names if name in enabled and name != logical_id}
        order: list[str] = []
        visiting: set[str] = set()

        def visit(logical_id: str) -> None:
            if logical_id in order:
                return
            if logical_id in visiting:
                raise TemplateError(f"Resource {logical_id} is part of a dependency cycle.")
            visiting.add(logical_id)
            for dependency in sorted(dependencies[logical_id], key=enabled.index):
                visit(dependency)
            visiting.discard(logical_id)
            order.append(logical_id)

        for logical_id in enabled:
            visit(logical_id)
        return order

    def create_all(self) -> None:
        """Create every enabled resource of the template, in dependency order.

        A resource or property the local stack cannot create raises `TemplateError`.

        """
        resources: Mapping[str, Any] = self.template["Resources"]
        creators: dict[str, Callable[[str, Mapping[str, Any]], None]] = {
            "AWS::SQS::Queue": self._create_queue,
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::Serverless::LayerVersion": self._create_layer,
            "AWS::Lambda::LayerVersion": self._create_layer,
            "AWS::Serverless::Function": self._create_function,
        }
        for logical_id in self._creation_order():
            resource = resources[logical_id]
            creator = creators.get(resource.get("Type", ""))
            if creator is None:
                self._placeholder(logical_id, resource.get("Type", ""))
            else:
                creator(logical_id, resource.get("Properties") or {})

    def _name(self, logical_id: str, *, limit: int, lower: bool = False) -> str:
        name = f"{self.stack_name}-{logical_id}"[: limit - len(self._suffix) - 1] + f"-{self._suffix}"
        return name.lower() if lower else name

    def _resolve(self, logical_id: str, properties: Mapping[str, Any], key: str, default: Any = None) -> Any:
        if key not in properties:
            return default
        return self.resolver.resolve(properties[key], where=f"Resources.{logical_id}.Properties.{key}")

    def _placeholder(self, logical_id: str, resource_type: str) -> None:
        # Policies, roles, alarms...: not emulated; a stable name/ARN keeps references resolvable.
        service = resource_type.split("::")[1].lower() if resource_type.count("::") >= 2 else "unknown"
        name = self._name(logical_id, limit=128)
        self.physical_ids[logical_id] = {
            "Ref": name,
            "Arn": f"arn:aws:{service}:{self.region}:{self.account_id}:{name}",
        }
        self.skipped_resources[logical_id] = resource_type

    def _create_queue(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        values = self.resolver.resolve(dict(properties), where=f"Resources.{logical_id}.Properties")
        fifo = str(values.get("FifoQueue", "")).lower() == "true"
        name = values.pop("QueueName", None) or self._name(logical_id, limit=75 if fifo else 80) + (
            ".fifo" if fifo else ""
        )
        tags = {tag["Key"]: tag["Value"] for tag in values.pop("Tags", [])}
        attributes = {key: string_value(value) for key, value in values.items()}
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes, **({"tags": tags} if tags else {}))[
            "QueueUrl"
        ]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.physical_ids[logical_id] = {"Ref": url, "Arn": arn, "QueueName": name, "QueueUrl": url}

    def _create_bucket(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        name = self._resolve(logical_id, properties, "BucketName") or self._name(
            logical_id, limit=63, lower=True
        )
        s3 = self.client("s3")
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        self.physical_ids[logical_id] = {
            "Ref": name,
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
        }
        versioning = self._resolve(logical_id, properties, "VersioningConfiguration")
        if versioning:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning["Status"]})
        notification = self._resolve(logical_id, properties, "NotificationConfiguration")
        if notification:
            s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration=self._notification(logical_id, notification)
            )

    def _notification(self, logical_id: str, configuration: Mapping[str, Any]) -> dict[str, Any]:
        unsupported = sorted(set(configuration) - {"QueueConfigurations", "EventBridgeConfiguration"})
        if unsupported:
            raise TemplateError(
                f"Bucket {logical_id}: {', '.join(unsupported)} notifications are not emulated locally."
            )
        result: dict[str, Any] = {"QueueConfigurations": []}
        for queue_configuration in configuration.get("QueueConfigurations", []):
            entry: dict[str, Any] = {
                "QueueArn": queue_configuration["Queue"],
                "Events": [queue_configuration["Event"]],
            }
            rules = ((queue_configuration.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
            if rules:
                entry["Filter"] = {
                    "Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}
                }
            result["QueueConfigurations"].append(entry)
        if (
            str((configuration.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled")).lower()
            == "true"
        ):
            result["EventBridgeConfiguration"] = {}
        return result

    def _create_table(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        values = self.resolver.resolve(dict(properties), where=f"Resources.{logical_id}.Properties")
        name = values.get("TableName") or self._name(logical_id, limit=255)
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": values["KeySchema"],
            "AttributeDefinitions": values["AttributeDefinitions"],
            "BillingMode": values.get("BillingMode", "PROVISIONED"),
        }
        for key in ("ProvisionedThroughput", "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "TableClass"):
            if key in values:
                request[key] = values[key]
        if "StreamSpecification" in values:
            request["StreamSpecification"] = {"StreamEnabled": True, **values["StreamSpecification"]}
        if "SSESpecification" in values:
            request["SSESpecification"] = {"Enabled": bool(values["SSESpecification"].get("SSEEnabled"))}
        if values.get("Tags"):
            request["Tags"] = values["Tags"]
        dynamodb = self.client("dynamodb")
        description = dynamodb.create_table(**request)["TableDescription"]
        ttl = values.get("TimeToLiveSpecification")
        if ttl and str(ttl.get("Enabled")).lower() == "true":
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        self.physical_ids[logical_id] = {"Ref": name, "Arn": description["TableArn"]}
        if "LatestStreamArn" in description:
            self.physical_ids[logical_id]["StreamArn"] = description["LatestStreamArn"]

    def _code_path(self, value: Any, logical_id: str, key: str) -> Path:
        if not isinstance(value, str):
            raise TemplateError(
                f"Resource {logical_id}: {key} must be a local directory for the local stack."
            )
        return (self.template_path.parent / value).resolve()

    def _create_layer(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        name = self._resolve(logical_id, properties, "LayerName") or self._name(logical_id, limit=64)
        if self.build_dir is not None:
            content = self.build_dir / logical_id / "python"
        else:
            content = self._code_path(
                self._resolve(logical_id, properties, "ContentUri"), logical_id, "ContentUri"
            )
        self.physical_ids[logical_id] = {
            "Ref": f"arn:aws:lambda:{self.region}:{self.account_id}:layer:{name}:1",
            "Arn": f"arn:aws:lambda:{self.region}:{self.account_id}:layer:{name}:1",
            "ContentDir": content,
        }

    def _create_function(self, logical_id: str, _: Mapping[str, Any]) -> None:
        properties = function_properties(self.template, logical_id)
        name = self._resolve(logical_id, properties, "FunctionName") or self._name(logical_id, limit=64)
        if self.build_dir is not None:
            code_dir = self.build_dir / logical_id
        else:
            code_dir = self._code_path(
                self._resolve(logical_id, properties, "CodeUri"), logical_id, "CodeUri"
            )
        layer_dirs: list[Path] = []
        for layer in properties.get("Layers") or []:
            target = layer.get("Ref") if isinstance(layer, dict) else None
            if isinstance(target, str) and "ContentDir" in self.physical_ids.get(target, {}):
                layer_dirs.append(self.physical_ids[target]["ContentDir"])
        environment = (self._resolve(logical_id, properties, "Environment") or {}).get("Variables") or {}
        handler = self._resolve(logical_id, properties, "Handler")
        if not isinstance(handler, str) or "." not in handler:
            raise TemplateError(f"Function {logical_id} needs a Handler of the form module.function.")
        spec = FunctionSpec(
            logical_id=logical_id,
            name=name,
            arn=function_arn(name, region=self.region, account=self.account_id),
            handler=handler,
            code_dir=code_dir,
            layer_dirs=tuple(layer_dirs),
            runtime=str(self._resolve(logical_id, properties, "Runtime", "python3.13")),
            timeout=int(self._resolve(logical_id, properties, "Timeout", 3)),
            memory_size=int(self._resolve(logical_id, properties, "MemorySize", 128)),
            environment={key: string_value(value) for key, value in environment.items()},
        )
        self.functions[logical_id] = spec
        self.physical_ids[logical_id] = {"Ref": name, "Arn": spec.arn}
        for event_name, event in (properties.get("Events") or {}).items():
            where = f"Resources.{logical_id}.Properties.Events.{event_name}.Properties"
            if event.get("Type") == "SQS":
                values = self.resolver.resolve(event.get("Properties") or {}, where=where)
                self._add_event_source(logical_id, event_name, values)
            elif event.get("Type") == "Schedule":
                values = self.resolver.resolve(event.get("Properties") or {}, where=where)
                self.schedules.append(
                    ScheduleSpec(
                        function=logical_id,
                        name=event_name,
                        expression=str(values.get("Schedule", "")),
                        enabled=str(values.get("Enabled", True)).lower() == "true",
                    )
                )

    def _add_event_source(self, function: str, name: str, values: Mapping[str, Any]) -> None:
        queue_arn = values.get("Queue")
        queue = next(
            (lid for lid, attributes in self.physical_ids.items() if attributes.get("Arn") == queue_arn), None
        )
        if queue is None or "QueueUrl" not in self.physical_ids[queue]:
            raise TemplateError(
                f"Function {function} event {name}: {queue_arn} is not a queue of this template."
            )
        if values.get("FilterCriteria"):
            raise TemplateError(f"Function {function} event {name}: FilterCriteria is not emulated locally.")
        redrive = self._redrive(self.physical_ids[queue]["QueueUrl"])
        maximum_concurrency = (values.get("ScalingConfig") or {}).get("MaximumConcurrency")
        self.event_sources.append(
            EventSourceSpec(
                function=function,
                name=name,
                queue=queue,
                queue_url=self.physical_ids[queue]["QueueUrl"],
                queue_arn=str(queue_arn),
                batch_size=int(values.get("BatchSize", 10)),
                maximum_batching_window_seconds=int(values.get("MaximumBatchingWindowInSeconds", 0)),
                function_response_types=tuple(values.get("FunctionResponseTypes") or ()),
                maximum_concurrency=int(maximum_concurrency) if maximum_concurrency is not None else None,
                enabled=str(values.get("Enabled", True)).lower() == "true",
                dead_letter_queue_url=redrive[0],
                max_receive_count=redrive[1],
            )
        )

    def _redrive(self, queue_url: str) -> tuple[str | None, int | None]:
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]
        )
        policy = attributes.get("Attributes", {}).get("RedrivePolicy")
        if not policy:
            return None, None
        parsed = json.loads(policy)
        dlq = next(
            (
                attributes["QueueUrl"]
                for attributes in self.physical_ids.values()
                if attributes.get("Arn") == parsed["deadLetterTargetArn"] and "QueueUrl" in attributes
            ),
            None,
        )
        return dlq, int(parsed["maxReceiveCount"])
