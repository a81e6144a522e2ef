"""Helpers shared by several test modules (fixtures that use them live in conftest.py)."""

from __future__ import annotations

import hashlib
import io
import json
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import py7zr
from moto import mock_aws
from moto.core.config import default_user_config

from layer_utils.circuit import CircuitRegistry

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"


# --------------------------------------------------------------------------------------------- moto


@contextmanager
def mock_aws_with_valid_certs() -> Iterator[None]:
    """Run moto with IoT ``use_valid_cert``, so certificate ids are the SHA-256 of the DER as on AWS.

    moto's previous IoT configuration is restored afterwards.
    """
    previous = default_user_config.get("iot")
    default_user_config["iot"] = {"use_valid_cert": True}
    try:
        with mock_aws():
            yield
    finally:
        if previous is None:
            default_user_config.pop("iot", None)
        else:
            default_user_config["iot"] = previous


@contextmanager
def shared_circuit_registry(registry: CircuitRegistry) -> Iterator[CircuitRegistry]:
    """Make every handler's ``runtime()`` built in the block use ``registry`` (as one process would)."""
    original = CircuitRegistry.__dict__["from_env"]
    CircuitRegistry.from_env = classmethod(lambda _cls, _env=None, **_kwargs: registry)  # type: ignore[method-assign,assignment]
    try:
        yield registry
    finally:
        CircuitRegistry.from_env = original  # type: ignore[method-assign]


def create_jobs_table(ddb: Any, table: str) -> None:
    """Create a JobsTable as the template does: ``pk``/``sk`` strings, on demand."""
    ddb.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def sqs_record(message_id: str, body: str, queue: str = "import") -> dict[str, Any]:
    """Return one record of an SQS event as Lambda delivers it, from the queue named ``queue``."""
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
        "awsRegion": "us-east-1",
    }


# ------------------------------------------------------------------------------------------ metrics


def emf_records(text: str) -> list[dict[str, Any]]:
    """Return the EMF documents (JSON objects with ``_aws`` metadata) among the lines of ``text``."""
    records = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            if "_aws" in document:
                records.append(document)
    return records


# --------------------------------------------------------------------------------------- templates


def as_list(value: Any) -> list[Any]:
    """Return ``value`` if it is a list, else a list of it (IAM ``Action``/``Resource`` fields)."""
    return value if isinstance(value, list) else [value]


def branches(value: Any) -> Iterator[Any]:
    """Yield every value an ``Fn::If`` may produce (both branches), skipping ``AWS::NoValue``."""
    if isinstance(value, dict) and "Fn::If" in value:
        for branch in value["Fn::If"][1:]:
            yield from branches(branch)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def write_sam_project(
    root: Path, template: str, packages: Mapping[str, str], files: Mapping[str, str] | None = None
) -> Path:
    """Write a SAM project for the local stack and return ``root``.

    ``template`` becomes ``template.yaml``; each ``"<CodeUri>/<package>"`` of ``packages`` becomes a
    package whose ``app.py`` is the (dedented) source; ``files`` are other files by relative path.
    An empty ``layer`` folder is created for templates whose layer has no code of its own.
    """
    (root / "template.yaml").write_text(template)
    (root / "layer").mkdir(exist_ok=True)
    for package, source in packages.items():
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / "app.py").write_text(textwrap.dedent(source))
    for relative, text in (files or {}).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def seven_zip(files: list[tuple[str, bytes]]) -> bytes:
    """Return a 7z archive (in memory) holding ``files``: (member name, bytes), in order."""
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w") as archive:
        for name, data in files:
            archive.writestr(data, name)
    return buffer.getvalue()
