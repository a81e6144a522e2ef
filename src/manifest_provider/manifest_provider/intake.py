"""What arrives on the intake queue: S3 event notifications, S3 test events and continuations."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from layer_utils.jobs import REPORT_PREFIX, job_id_for
from layer_utils.messages import ContinuationMessage, decode_message


@dataclass(frozen=True)
class ManifestRef:
    """One uploaded manifest version named by an S3 event (the key is already URL-decoded)."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None = None
    sequencer: str | None = None
    """The event's sequencer: a greater hexadecimal value is a later event of the same key."""

    @property
    def version(self) -> str:
        """The version that identifies the job: the version id, else the ETag (without quotes)."""
        return self.version_id or self.etag or ""

    @property
    def job_id(self) -> str:
        """The job id of this manifest version."""
        return job_id_for(self.bucket, self.key, self.version)


@dataclass(frozen=True)
class IntakeBatch:
    """The work one intake message asks for: manifests to start, or a continuation."""

    manifests: tuple[ManifestRef, ...] = ()
    continuation: ContinuationMessage | None = None
    ignored: tuple[str, ...] = ()


def _object_ref(record: dict[str, Any], index: int) -> ManifestRef | str:
    """Return the manifest a notification record names, or why the record is ignored."""
    event_name = str(record.get("eventName", ""))
    if record.get("eventSource") != "aws:s3" or not event_name.startswith("ObjectCreated:"):
        return f"record {index}: {event_name or 'an event'} is not an S3 ObjectCreated event"
    try:
        bucket = str(record["s3"]["bucket"]["name"])
        obj = record["s3"]["object"]
        key = urllib.parse.unquote_plus(str(obj["key"]))
    except (KeyError, TypeError) as error:
        raise ValueError(f"S3 event record {index} has no bucket name or object key ({error}).") from None
    if key.startswith(REPORT_PREFIX):
        return f"record {index}: {key} is a report"
    if key.endswith("/"):
        return f"record {index}: {key} is a folder marker"
    etag = obj.get("eTag") or obj.get("etag")
    version_id = obj.get("versionId") or None
    if not etag and not version_id:
        raise ValueError(f"S3 event record {index} for {key} has neither an eTag nor a versionId.")
    size = obj.get("size")
    sequencer = obj.get("sequencer")
    return ManifestRef(
        bucket=bucket,
        key=key,
        version_id=str(version_id) if version_id else None,
        etag=str(etag).strip('"') if etag else None,
        size=int(size) if isinstance(size, int) else None,
        sequencer=str(sequencer) if sequencer else None,
    )


def parse_intake_body(body: str) -> IntakeBatch:
    """Read one intake queue message body.

    The body is an S3 event notification (one or more ``Records``), an ``s3:TestEvent`` (ignored) or a
    continuation message.

    Returns:
        What to do.

    Raises:
        ValueError: one sentence naming what is wrong, for anything else.

    """
    try:
        data = json.loads(body)
    except json.JSONDecodeError as error:
        raise ValueError(f"Intake message body is not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise ValueError("Intake message body must be a JSON object.")
    if data.get("Event") == "s3:TestEvent":
        return IntakeBatch(ignored=("s3:TestEvent",))
    if "schema" in data:
        message = decode_message(body)
        if not isinstance(message, ContinuationMessage):
            raise ValueError(
                "An import message was sent to the intake queue; it belongs on the import queue."
            )
        return IntakeBatch(continuation=message)
    records = data.get("Records")
    if not isinstance(records, list):
        raise ValueError(
            "Intake message body is neither an S3 event notification, an S3 test event nor a continuation."
        )
    manifests: list[ManifestRef] = []
    ignored: list[str] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"S3 event record {index} is not a JSON object.")
        ref = _object_ref(record, index)
        if isinstance(ref, str):
            ignored.append(ref)
        else:
            manifests.append(ref)
    return IntakeBatch(manifests=tuple(manifests), ignored=tuple(ignored))
