"""The survey's findings between invocations: one S3 object per job, under the reserved ``reports/``.

The first run of a manifest surveys it whole (``EntryEvaluator.survey``) and writes what
can change an entry's fate (``EntryEvaluator.findings``: repeated certificates, shared names) to
``reports/surveys/<job id>.json`` before its checkpoint says so. A continuation reads that object
instead of reading the manifest again, so it costs only the entries it handles. The prefix is one that
only the stack's functions and the operators may write or delete (the bucket policy's reserved
prefixes); an object that is missing or unreadable is not trusted, and the run surveys again, which
gives the same findings, since the manifest version, the settings and the validation time are the
job's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.aws_utils import handle_aws_error
from layer_utils.jobs import REPORT_PREFIX
from layer_utils.telemetry import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FINDINGS_PREFIX = f"{REPORT_PREFIX}surveys/"
"""Where findings live: inside ``reports/``, which only the stack and the operators may change."""

_MISSING = {"NoSuchKey", "404", "NotFound"}


def findings_key(job_id: str) -> str:
    """Return the S3 key of a job's findings: ``reports/surveys/<job id>.json``."""
    return f"{FINDINGS_PREFIX}{job_id}.json"


def save_findings(s3: S3Client, bucket: str, job_id: str, findings: Mapping[str, Any]) -> None:
    """Write a job's findings, replacing any earlier (identical) ones.

    Raises:
        AwsOperationError: S3 failed.

    """
    key = findings_key(job_id)
    body = json.dumps(findings, separators=(",", ":"), sort_keys=True).encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    except (ClientError, BotoCoreError) as error:
        handle_aws_error(error, "s3:PutObject", {"job_id": job_id, "key": key})


def load_findings(s3: S3Client, bucket: str, job_id: str) -> dict[str, Any] | None:
    """Read a job's findings.

    Returns:
        The findings; None when they are missing or not a JSON object.

    Raises:
        AwsOperationError: S3 failed otherwise.

    """
    key = findings_key(job_id)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code", "")) in _MISSING:
            logger.warning("Survey findings missing; surveying again", extra={"job_id": job_id})
            return None
        handle_aws_error(error, "s3:GetObject", {"job_id": job_id, "key": key})
    except BotoCoreError as error:
        handle_aws_error(error, "s3:GetObject", {"job_id": job_id, "key": key})
    try:
        findings = json.loads(body)
    except ValueError:
        findings = None
    if not isinstance(findings, dict):
        logger.warning("Survey findings unreadable; surveying again", extra={"job_id": job_id})
        return None
    return findings
