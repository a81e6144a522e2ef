"""Spooling: one GetObject of the manifest version into a bounded-memory temporary file."""

from __future__ import annotations

import tempfile
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from botocore.exceptions import BotoCoreError, ClientError

from layer_utils.aws_utils import handle_aws_error

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_READ_CHUNK = 1024 * 1024


class JobFailure(Exception):
    """The manifest cannot be processed; ``str()`` is the reason (one English sentence)."""


class Spool:
    """The manifest body in a bounded-memory temporary file, and the object's user metadata."""

    def __init__(self, memory_bytes: int, metadata: dict[str, str]) -> None:
        """Open an empty spool that keeps up to ``memory_bytes`` in memory; keep the ``metadata``."""
        self.file: IO[bytes] = cast(
            IO[bytes],
            tempfile.SpooledTemporaryFile(max_size=memory_bytes),  # noqa: SIM115 - closed by close()/__exit__
        )
        self.metadata = metadata

    def fill(self, body: Any, limit: int) -> None:
        """Copy the S3 body in; raises ``JobFailure`` when it is larger than ``limit`` bytes."""
        copied = 0
        while chunk := body.read(_READ_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise JobFailure(f"The manifest is larger than the limit of {limit} bytes.")
            self.file.write(chunk)
        self.file.seek(0)

    def close(self) -> None:
        """Delete the temporary file."""
        self.file.close()

    def __enter__(self) -> tuple[BinaryIO, dict[str, str]]:
        """Return the seekable file and the metadata."""
        return cast(BinaryIO, self.file), self.metadata

    def __exit__(self, *_exc: object) -> None:
        """Delete the temporary file."""
        self.close()


def open_manifest(
    s3: S3Client,
    bucket: str,
    key: str,
    *,
    version_id: str | None,
    etag: str | None,
    limit: int,
    memory_bytes: int,
) -> Spool:
    """Read one manifest version into a spool.

    Args:
        s3: the S3 client.
        bucket: the manifest's bucket.
        key: the manifest's key.
        version_id: the version to read (preferred), or None.
        etag: the ETag the object must still have when there is no version id, or None.
        limit: the largest manifest accepted, in bytes.
        memory_bytes: how much of the body is kept in memory before the spool goes to disk.

    Returns:
        The spool holding the body and the object's user metadata.

    Raises:
        JobFailure: the object is gone, replaced, forbidden or larger than ``limit``.
        AwsOperationError: any other S3 failure (worth retrying).
        OSError: the spool could not be written.

    """
    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        request["VersionId"] = version_id
    elif etag:
        request["IfMatch"] = f'"{etag}"'
    try:
        response = s3.get_object(**request)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchKey", "NoSuchVersion", "404", "NotFound", "NoSuchBucket"}:
            raise JobFailure(f"The manifest s3://{bucket}/{key} no longer exists.") from None
        if code in {"PreconditionFailed", "412"}:
            raise JobFailure(
                f"The manifest s3://{bucket}/{key} was replaced before it could be read; "
                "the new version is processed as its own job."
            ) from None
        if code in {"AccessDenied", "403"}:
            raise JobFailure(f"Access to the manifest s3://{bucket}/{key} was denied.") from None
        handle_aws_error(error, "s3:GetObject", {"key": key})
    except BotoCoreError as error:
        handle_aws_error(error, "s3:GetObject", {"key": key})
    length = int(response.get("ContentLength", 0))
    if length > limit:
        raise JobFailure(f"The manifest is {length} bytes, more than the limit of {limit} bytes.")
    spool = Spool(memory_bytes, dict(response.get("Metadata", {})))
    try:
        spool.fill(response["Body"], limit)
    except JobFailure:
        spool.close()
        raise
    except BotoCoreError as error:
        spool.close()
        handle_aws_error(error, "s3:GetObject", {"key": key})
    except OSError:
        spool.close()
        raise
    return spool
