"""SQS message schemas: import messages (provider → importer) and continuation messages.

Both are plain UTF-8 JSON objects with a ``schema`` field (see docs/ARCHITECTURE.md, "Messages").
Certificates travel as PEM text. Bodies are encoded compactly and ASCII-only (JSON escapes
for anything else), so every body consists of characters SQS accepts and its byte size is exact.

An import message carries ``mac``: HMAC-SHA256, keyed with its job's secret (stored on the job item),
over the message's canonical JSON without ``mac``. The importer recomputes it before any IoT call, so
only the provider and the importer, which read the job item, can write a message it acts on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

IMPORT_SCHEMA = "thingpress.import/1"
"""The ``schema`` value of an import message."""

CONTINUE_SCHEMA = "thingpress.continue/1"
"""The ``schema`` value of a continuation message."""

SQS_MAX_MESSAGE_BYTES = 262_144
"""SQS limit for one message body, and for the sum of bodies in one ``SendMessageBatch`` call."""

DEFAULT_MAX_BATCH_BYTES = 256_000
"""The byte budget of all bodies of one ``SendMessageBatch`` call (the SQS limit minus a margin)."""

SQS_MAX_BATCH_ENTRIES = 10
"""Most messages in one ``SendMessageBatch`` call."""

CHUNK_DIGITS = 6
"""Provider chunk ids are zero-padded to this many digits (``000012``)."""

MAC_HEX_LENGTH = 64
"""The length of an import message's ``mac`` (hex HMAC-SHA256)."""


def _encode(document: Mapping[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True)


def body_size(body: str) -> int:
    """Return the size in bytes that SQS counts for ``body`` (its UTF-8 length)."""
    return len(body.encode("utf-8"))


def chunk_id(number: int) -> str:
    """Return the provider chunk id for the ``number``-th message of a job (``12`` → ``"000012"``).

    Raises:
        ValueError: ``number`` is negative.

    """
    if number < 0:
        raise ValueError(f"A chunk number cannot be negative (got {number}).")
    return f"{number:0{CHUNK_DIGITS}d}"


@dataclass(frozen=True)
class MessageSettings:
    """The import settings every message carries: what to attach to each certificate and thing."""

    policies: tuple[str, ...] = ()
    thing_groups: tuple[str, ...] = ()
    thing_type: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (``thing_type`` is ``null`` when there is none)."""
        return {
            "policies": list(self.policies),
            "thing_groups": list(self.thing_groups),
            "thing_type": self.thing_type,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, data: Any) -> MessageSettings:
        """Build settings from their JSON form; raises ``ValueError`` naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError("Message field 'settings' must be a JSON object.")
        policies = _string_list(data.get("policies", []), "settings.policies")
        groups = _string_list(data.get("thing_groups", []), "settings.thing_groups")
        thing_type = data.get("thing_type")
        if thing_type is not None and (not isinstance(thing_type, str) or not thing_type):
            raise ValueError("Message field 'settings.thing_type' must be a non-empty string or null.")
        attributes = data.get("attributes", {})
        if not isinstance(attributes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
        ):
            raise ValueError("Message field 'settings.attributes' must be an object of strings.")
        return cls(tuple(policies), tuple(groups), thing_type, dict(attributes))


@dataclass(frozen=True)
class ImportEntry:
    """One certificate to register: where it came from, its thing name, id and PEM text.

    ``name_source`` is the source that named the thing (``vendor``, ``cn`` or ``fingerprint``).
    """

    locator: str
    thing_name: str
    certificate_id: str
    certificate_pem: str
    name_source: str | None = None

    def to_dict(self) -> dict[str, str]:
        """Return the JSON form."""
        data = {
            "locator": self.locator,
            "thing_name": self.thing_name,
            "certificate_id": self.certificate_id,
            "certificate_pem": self.certificate_pem,
        }
        if self.name_source is not None:
            data["name_source"] = self.name_source
        return data

    @classmethod
    def from_dict(cls, data: Any, index: int) -> ImportEntry:
        """Build an entry from its JSON form; raises ``ValueError`` naming entry ``index``."""
        if not isinstance(data, dict):
            raise ValueError(f"Message entry {index} must be a JSON object.")
        values: dict[str, str] = {}
        for name in ("locator", "thing_name", "certificate_id", "certificate_pem"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Message entry {index} has no valid '{name}' (a non-empty string).")
            values[name] = value
        source = data.get("name_source")
        return cls(**values, name_source=source if isinstance(source, str) else None)


def encoded_entry_size(entry: ImportEntry) -> int:
    """Return the bytes ``entry`` adds to an import message body (without the separating comma)."""
    return body_size(_encode(entry.to_dict()))


@dataclass(frozen=True)
class ImportMessage:
    """An import message: a chunk of certificates of one job, with the settings to apply."""

    job_id: str
    chunk: str
    settings: MessageSettings
    entries: tuple[ImportEntry, ...]
    attempt: int = 0
    mac: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (``mac`` only when the message is signed)."""
        data: dict[str, Any] = {
            "schema": IMPORT_SCHEMA,
            "job_id": self.job_id,
            "chunk": self.chunk,
            "attempt": self.attempt,
            "settings": self.settings.to_dict(),
            "entries": [entry.to_dict() for entry in self.entries],
        }
        if self.mac:
            data["mac"] = self.mac
        return data


def new_job_secret() -> str:
    """Return a fresh random per-job secret (256 bits, hex) for signing import messages."""
    return secrets.token_hex(32)


def _mac(message: ImportMessage, secret: str) -> str:
    document = message.to_dict()
    document.pop("mac", None)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(secret.encode("ascii"), canonical.encode("ascii"), hashlib.sha256).hexdigest()


def sign_import_message(message: ImportMessage, secret: str) -> ImportMessage:
    """Return ``message`` with its ``mac`` computed with the job's ``secret``."""
    return replace(message, mac=_mac(message, secret))


def verify_import_message(message: ImportMessage, secret: str | None) -> bool:
    """Return whether ``message`` carries a valid ``mac`` for the job's ``secret`` (False without one)."""
    if not secret or not message.mac:
        return False
    return hmac.compare_digest(message.mac, _mac(message, secret))


@dataclass(frozen=True)
class Checkpoint:
    """How far the provider got: manifest entries consumed and the next chunk number to use."""

    entries_done: int
    next_chunk: int

    def to_dict(self) -> dict[str, int]:
        """Return the JSON form."""
        return {"entries_done": self.entries_done, "next_chunk": self.next_chunk}


@dataclass(frozen=True)
class ContinuationMessage:
    """A message the provider sends itself to continue a manifest in a new invocation."""

    job_id: str
    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    checkpoint: Checkpoint

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "schema": CONTINUE_SCHEMA,
            "job_id": self.job_id,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "checkpoint": self.checkpoint.to_dict(),
        }


def encode_import_message(message: ImportMessage) -> str:
    """Return the JSON body of an import message."""
    return _encode(message.to_dict())


def encode_continuation_message(message: ContinuationMessage) -> str:
    """Return the JSON body of a continuation message."""
    return _encode(message.to_dict())


def _string_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"Message field '{name}' must be a list of non-empty strings.")
    return value


def _require_str(data: dict[str, Any], name: str, *, nullable: bool = False) -> Any:
    value = data.get(name)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        kind = "a non-empty string or null" if nullable else "a non-empty string"
        raise ValueError(f"Message field '{name}' must be {kind}.")
    return value


def _require_int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"Message field '{name}' must be a non-negative integer.")
    return value


def decode_message(body: str) -> ImportMessage | ContinuationMessage:
    """Parse an SQS message body into an import or continuation message.

    Returns:
        The message.

    Raises:
        ValueError: one sentence naming what is wrong (not JSON, not an object, unknown schema, a
            missing or mistyped field).

    """
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"Message body is not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise ValueError("Message body must be a JSON object.")
    schema = data.get("schema")
    if schema == IMPORT_SCHEMA:
        return _decode_import(data)
    if schema == CONTINUE_SCHEMA:
        return _decode_continuation(data)
    raise ValueError(
        f"Message schema {schema!r} is not supported (expected {IMPORT_SCHEMA!r} or {CONTINUE_SCHEMA!r})."
    )


def _decode_import(data: dict[str, Any]) -> ImportMessage:
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise ValueError("Message field 'entries' must be a non-empty list.")
    return ImportMessage(
        job_id=_require_str(data, "job_id"),
        chunk=_require_str(data, "chunk"),
        attempt=_require_int(data, "attempt"),
        settings=MessageSettings.from_dict(data.get("settings")),
        entries=tuple(ImportEntry.from_dict(item, index) for index, item in enumerate(raw_entries)),
        mac=data["mac"] if isinstance(data.get("mac"), str) else "",
    )


def _decode_continuation(data: dict[str, Any]) -> ContinuationMessage:
    checkpoint = data.get("checkpoint")
    if not isinstance(checkpoint, dict):
        raise ValueError("Message field 'checkpoint' must be a JSON object.")
    return ContinuationMessage(
        job_id=_require_str(data, "job_id"),
        bucket=_require_str(data, "bucket"),
        key=_require_str(data, "key"),
        version_id=_require_str(data, "version_id", nullable=True),
        etag=_require_str(data, "etag", nullable=True),
        checkpoint=Checkpoint(
            entries_done=_require_int(checkpoint, "entries_done"),
            next_chunk=_require_int(checkpoint, "next_chunk"),
        ),
    )
