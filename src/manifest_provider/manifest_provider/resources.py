"""What a manifest needs besides itself: the IoT resources it references and trust material in S3."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.aws_utils import ErrorClass, classify_error, handle_aws_error
from layer_utils.cert_utils import ParsedCertificate, load_certificates
from layer_utils.jobs import MAX_LOCATOR_BYTES, shorten
from layer_utils.telemetry import logger
from manifest_provider.settings import MAX_POLICIES

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient
    from mypy_boto3_s3 import S3Client

    from manifest_provider.settings import ImportSettings

_Response = TypeVar("_Response")

MAX_TRUST_OBJECT_BYTES = 1024 * 1024
"""Certificate files larger than this under a trust prefix are ignored."""


def _read(call: Callable[[], _Response], operation: str, context: dict[str, str]) -> _Response | None:
    """Make one read call.

    Args:
        call: The call, with its arguments bound.
        operation: The operation's name for the error log, for example ``iot:GetPolicy``.
        context: What the call was about, for the error log.

    Any other AWS failure is raised as ``AwsOperationError`` by ``handle_aws_error``.

    Returns:
        The response, or None when the resource does not exist.

    """
    try:
        return call()
    except (ClientError, BotoCoreError) as error:
        if isinstance(error, ClientError) and classify_error(error) == ErrorClass.NOT_FOUND:
            return None
        handle_aws_error(error, operation, context)


def missing_targets(iot: IoTClient, settings: ImportSettings) -> list[str]:
    """Check that every policy, thing group and thing type the settings name exists and is usable.

    Makes one read call per resource (GetPolicy, DescribeThingGroup, DescribeThingType). Other AWS
    failures (throttling, access denied) are raised as ``AwsOperationError``, so the message is
    retried rather than the job failed. Refuses more than ``MAX_POLICIES`` policies (AWS IoT's
    limit per certificate) before any call, and dynamic thing groups (DescribeThingGroup gives them a
    ``queryString``), which AddThingToThingGroup refuses.

    Args:
        iot: The IoT client.
        settings: The import settings naming the resources.

    Returns:
        One English sentence per problem ("Policy 'x' does not exist.", "Thing type 't' is
        deprecated."); an empty list means everything is there.

    """
    if len(set(settings.policies)) > MAX_POLICIES:
        return [
            f"The settings name {len(set(settings.policies))} policies; AWS IoT attaches at most "
            f"{MAX_POLICIES} to a certificate."
        ]
    problems: list[str] = []
    for policy in settings.policies:
        if _read(partial(iot.get_policy, policyName=policy), "iot:GetPolicy", {"policy": policy}) is None:
            problems.append(f"Policy '{policy}' does not exist.")
    for group in settings.thing_groups:
        call = partial(iot.describe_thing_group, thingGroupName=group)
        group_described = _read(call, "iot:DescribeThingGroup", {"thing_group": group})
        if group_described is None:
            problems.append(f"Thing group '{group}' does not exist.")
        elif group_described.get("queryString") is not None:
            problems.append(f"Thing group '{group}' is a dynamic thing group; things cannot be added to it.")
    if settings.thing_type:
        call_type = partial(iot.describe_thing_type, thingTypeName=settings.thing_type)
        described = _read(call_type, "iot:DescribeThingType", {"thing_type": settings.thing_type})
        if described is None:
            problems.append(f"Thing type '{settings.thing_type}' does not exist.")
        elif described.get("thingTypeMetadata", {}).get("deprecated"):
            problems.append(
                f"Thing type '{settings.thing_type}' is deprecated; new things cannot be given it."
            )
    return problems


@dataclass(frozen=True)
class TrustMaterial:
    """Certificates loaded from a trust prefix, and a warning for each object that was skipped."""

    certificates: tuple[ParsedCertificate, ...]
    warnings: tuple[str, ...]


def load_trust_certificates(s3: S3Client, bucket: str, prefix: str) -> TrustMaterial:
    """Load every certificate (PEM or DER, several per file allowed) stored under ``prefix``.

    An object that holds no readable certificate, or is larger than ``MAX_TRUST_OBJECT_BYTES``, is
    skipped with a warning (one English sentence naming the key), never fatal. An AWS failure is
    raised as ``AwsOperationError``.

    Args:
        s3: The S3 client.
        bucket: The bucket.
        prefix: The key prefix.

    Returns:
        The certificates in key order and the warnings.

    """
    certificates: list[ParsedCertificate] = []
    warnings: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                if obj.get("Size", 0) > MAX_TRUST_OBJECT_BYTES:
                    warnings.append(
                        f"Trust file {shorten(key, MAX_LOCATOR_BYTES)} is larger than "
                        f"{MAX_TRUST_OBJECT_BYTES} bytes; it was skipped."
                    )
                    continue
                data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                try:
                    certificates.extend(load_certificates(data))
                except ValueError as error:
                    warnings.append(
                        f"Trust file {shorten(key, MAX_LOCATOR_BYTES)} was skipped: {str(error).rstrip('.')}."
                    )
    except (ClientError, BotoCoreError) as error:
        handle_aws_error(error, "s3:GetObject", {"bucket": bucket, "prefix": prefix})
    for warning in warnings:
        logger.warning("Trust object skipped", extra={"warning": warning})
    return TrustMaterial(tuple(certificates), tuple(warnings))
