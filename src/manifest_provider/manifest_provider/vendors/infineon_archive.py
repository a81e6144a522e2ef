"""Reading Infineon's hostile 7z archives: metadata checks, then extraction by member index.

Before py7zr parses an archive's header, :func:`open_archive` bounds it (see :func:`check_header`):
the header's size, encoded or decoded, its member count and the bytes of its member names. Then,
before anything is decompressed, each archive level's metadata is checked against
:class:`~manifest_provider.limits.Limits` by a :class:`Budget`: member count and declared uncompressed size
(both summed over the levels), the compression ratio of each archive and the nesting depth (the
upload is level 1). A member path that is not a plain relative path refuses the manifest.

Member names never reach the file system: py7zr decompresses each selected member exactly once, by
its index in the archive, into ``<index>.bin`` in a temporary directory (never into memory), with
its extraction cap backing the declared sizes up. Members can be scanned for private keys while they
are written. A member that is not selected is never written to a file: in a solid archive its bytes
are only decompressed when they precede a selected member, and then go to py7zr's CRC check only.
"""

from __future__ import annotations

import io
import lzma
import os
import re
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import py7zr
from py7zr.archiveinfo import HeaderStreamsInfo, SignatureHeader, StreamsInfo, read_uint64
from py7zr.io import MemIO, Py7zIO, WriterFactory
from py7zr.properties import PROPERTY

from layer_utils.cert_utils import KEY_SCAN_OVERLAP, contains_private_key
from manifest_provider.limits import Limits
from manifest_provider.vendors.base import ManifestFormatError

VENDOR = "Infineon"
"""The vendor's display name in messages."""

SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
"""The first bytes of every 7z archive."""

MAX_MEMBER_PATH_BYTES = 1024
"""The longest certificate member path, in UTF-8 bytes."""

HEADER_BYTES_PER_MEMBER = 4096
"""Header bytes allowed for each member an archive may still hold: a name of ``MAX_MEMBER_PATH_BYTES``
(at most 2,050 bytes in the header's UTF-16) plus its sizes, CRC, times and attributes, with room."""

MAX_HEADER_BYTES = 32 * 1024 * 1024
"""The largest 7z header, as stored or decoded, whatever the member limit: py7zr holds a header
about three times over while parsing it, so this keeps parsing far below the provider's memory."""

_MAX_NAME_BYTES = 2 * (MAX_MEMBER_PATH_BYTES + 1)  # one member's name in UTF-16, with its terminator
_SIGNATURE_BYTES = 32
# Exceptions py7zr and the decompressors it drives raise on corrupt or malicious archives.
_ARCHIVE_ERRORS = (
    py7zr.exceptions.ArchiveError,
    py7zr.exceptions.PasswordRequired,
    lzma.LZMAError,
    EOFError,
    struct.error,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
)


@dataclass(frozen=True)
class Member:
    """What the parser uses of one archive member: its index, path, declared size and kind."""

    index: int
    name: str
    size: int
    is_directory: bool
    is_symlink: bool


@dataclass
class Budget:
    """What the archive levels seen so far have used of the limits."""

    limits: Limits
    entries: int = 0
    uncompressed: int = 0

    def check_depth(self, depth: int, archive: str) -> None:
        """Refuse to open ``archive`` at nesting ``depth`` (the upload is 1) beyond the limit.

        Raises:
            ManifestFormatError: The depth is over ``Limits.max_archive_depth``.

        """
        if depth > self.limits.max_archive_depth:
            raise ManifestFormatError(
                f"The {VENDOR} manifest nests archives {depth} levels deep at {quote(archive)}; "
                f"the limit is {self.limits.max_archive_depth}."
            )

    def admit(self, archive: str, members: list[Member], compressed: int) -> int:
        """Check one archive's metadata and charge it to the budget.

        Checks every member's name, the member count and declared size summed over the levels, and
        this archive's compression ratio.

        Args:
            archive: The archive's name, for messages.
            members: The archive's members.
            compressed: The archive's size in bytes.

        Returns:
            The archive's declared uncompressed size, the most its extraction may produce.

        Raises:
            ManifestFormatError: A member name is unsafe or a limit is broken.

        """
        limits = self.limits
        for member in members:
            _check_name(member.name, archive)
        self.entries += len(members)
        if self.entries > limits.max_archive_entries:
            raise ManifestFormatError(
                f"The {VENDOR} manifest holds more than {limits.max_archive_entries} archive members "
                f"(counted up to {quote(archive)})."
            )
        size = sum(member.size for member in members)
        self.uncompressed += size
        if self.uncompressed > limits.max_archive_uncompressed_bytes:
            raise ManifestFormatError(
                f"The {VENDOR} manifest would decompress to more than "
                f"{limits.max_archive_uncompressed_bytes} bytes (counted up to {quote(archive)})."
            )
        if size > limits.max_compression_ratio * max(compressed, 1):
            raise ManifestFormatError(
                f"The {VENDOR} archive {quote(archive)} expands {size} bytes from {compressed}, a "
                f"compression ratio above the limit of {limits.max_compression_ratio}; it looks like a "
                "decompression bomb."
            )
        return size

    def check_header(self, file: BinaryIO, archive: str) -> None:
        """Bound the header of the 7z in ``file`` before py7zr parses it; leave ``file`` at its start.

        The stored header, and an encoded header's declared decoded size, may be at most
        ``HEADER_BYTES_PER_MEMBER`` per member the limits still allow, and ``MAX_HEADER_BYTES``. The
        member count is charged against those limits, and the names may average at most the bytes
        of a ``MAX_MEMBER_PATH_BYTES`` path.

        Raises:
            ManifestFormatError: The header breaks a bound or cannot be read.

        """
        remaining = self.limits.max_archive_entries - self.entries
        limit = min(max(remaining, 1) * HEADER_BYTES_PER_MEMBER, MAX_HEADER_BYTES)
        try:
            signature = SignatureHeader.retrieve(file)  # py7zr's reader of the 32-byte start header
            _check_header_size(signature.nextheadersize, limit, archive)
            file.seek(_SIGNATURE_BYTES + signature.nextheaderofs)
            header = io.BytesIO(file.read(signature.nextheadersize))
            if header.read(1) == PROPERTY.ENCODED_HEADER:
                header = _decode_header(file, header, limit, archive)
                header.read(1)
            count, names = _member_count_and_names(header)
        except _ARCHIVE_ERRORS as error:
            raise ManifestFormatError(_unreadable(archive, error)) from None
        finally:
            file.seek(0)
        if count > remaining:
            raise ManifestFormatError(
                f"The {VENDOR} manifest holds more than {self.limits.max_archive_entries} archive members "
                f"(counted up to {quote(archive)})."
            )
        if names > 1 + count * _MAX_NAME_BYTES:
            raise ManifestFormatError(
                f"The {VENDOR} archive {quote(archive)} has {names} bytes of member names for {count} "
                f"members, more than {_MAX_NAME_BYTES} bytes each."
            )


def _check_header_size(size: int, limit: int, archive: str) -> None:
    """Refuse a header of ``size`` bytes (stored or decoded) over ``limit``.

    Raises:
        ManifestFormatError: ``size`` is over ``limit``.

    """
    if size > limit:
        raise ManifestFormatError(
            f"The {VENDOR} archive {quote(archive)} has a {size}-byte header; the limit for the "
            f"members it may hold is {limit} bytes."
        )


def _decode_header(file: BinaryIO, encoded: io.BytesIO, limit: int, archive: str) -> io.BytesIO:
    """Decode an encoded header, after checking its declared size, as py7zr's ``Header`` does.

    Returns:
        The decoded (plain) header.

    Raises:
        ManifestFormatError: The declared size is over ``limit``.
        py7zr.exceptions.Bad7zFile: The packed header is truncated.

    """
    streams = HeaderStreamsInfo.retrieve(encoded)
    folders = streams.unpackinfo.folders
    _check_header_size(sum(max(folder.unpacksizes[-1], 0) for folder in folders), limit, archive)
    decoded = bytearray()
    start = _SIGNATURE_BYTES
    for folder in folders:
        size = folder.unpacksizes[-1]
        start += streams.packinfo.packpos
        file.seek(start)
        decompressor = folder.get_decompressor(streams.packinfo.packsizes[0])
        end = len(decoded) + size
        while len(decoded) < end:
            before = (len(decoded), decompressor.consumed)
            decoded += decompressor.decompress(file, max_length=end - len(decoded))
            if (len(decoded), decompressor.consumed) == before:
                raise py7zr.exceptions.Bad7zFile("truncated encoded header")
        start += streams.packinfo.packsizes[0]
    return io.BytesIO(decoded)


def _member_count_and_names(header: io.BytesIO) -> tuple[int, int]:
    """Return a plain header's member count and the bytes of its name table (0, 0 when it has none).

    Hand-parsed because py7zr's ``FilesInfo`` builds every member as it reads the count and names.
    """
    pid = header.read(1)
    if pid == PROPERTY.MAIN_STREAMS_INFO:
        StreamsInfo.retrieve(header)
        pid = header.read(1)
    if pid != PROPERTY.FILES_INFO:
        return 0, 0
    count = read_uint64(header)
    names = 0
    while (prop := header.read(1)) not in {PROPERTY.END, b""}:
        size = read_uint64(header)
        if prop == PROPERTY.NAME:
            names = size
        header.seek(size, os.SEEK_CUR)
    return count, names


def printable(text: str) -> str:
    """Return ``text`` with every unprintable character (line breaks and other controls) escaped."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def quote(name: str, width: int = 80) -> str:
    """Return an archive or member name for an error message: printable, at most ``width`` characters."""
    text = printable(name)
    return text if len(text) <= width else text[: width - 1] + "…"


def _check_name(name: str, archive: str) -> None:
    """Refuse a member name that is not a plain relative path.

    Raises:
        ManifestFormatError: The name is not a plain relative path.

    """
    parts = name.split("/")
    if "\\" in name or re.match(r"[A-Za-z]:", name) or any(part in {"", ".", ".."} for part in parts):
        raise ManifestFormatError(
            f"The {VENDOR} archive {quote(archive)} has a member named '{quote(name)}', which is "
            "not a safe relative path."
        )


def _unreadable(archive: str, error: Exception) -> str:
    return f"The {VENDOR} archive {quote(archive)} cannot be read: {error}."


def open_archive(file: BinaryIO, archive: str, budget: Budget) -> py7zr.SevenZipFile:
    """Open the 7z archive in ``file``, named ``archive`` in messages, once its header fits ``budget``.

    Returns:
        The opened archive.

    Raises:
        ManifestFormatError: The archive's header breaks a bound or cannot be read.

    """
    budget.check_header(file, archive)
    try:
        return py7zr.SevenZipFile(file, mode="r")
    except _ARCHIVE_ERRORS as error:
        raise ManifestFormatError(_unreadable(archive, error)) from None


def list_members(zipfile: py7zr.SevenZipFile, archive: str) -> list[Member]:
    """Return the members of an opened archive in archive order.

    Raises:
        ManifestFormatError: The member list cannot be read or a member has no name.

    """
    try:
        members = [
            Member(file.id, file.filename, file.uncompressed or 0, file.is_directory, file.is_symlink)
            for file in zipfile.files
        ]
    except _ARCHIVE_ERRORS as error:
        raise ManifestFormatError(_unreadable(archive, error)) from None
    if not all(isinstance(member.name, str) for member in members):
        raise ManifestFormatError(f"The {VENDOR} archive {quote(archive)} has a member without a name.")
    return members


class MemberFile(Py7zIO):
    """Takes one member's bytes from py7zr and writes them to a file; never raises.

    ``error`` is the ``OSError`` that stopped the writing (the file is then incomplete);
    ``private_key`` is whether the bytes, when scanned, contained private key material.
    """

    def __init__(self, path: Path, scan_keys: bool) -> None:
        """Open ``path`` for writing; ``scan_keys`` scans the bytes for private keys as they come."""
        self.error: OSError | None = None
        self.private_key = False
        self._scan_keys = scan_keys
        self._tail = b""
        self._size = 0
        self._file: BinaryIO | None = None
        try:
            self._file = path.open("wb")
        except OSError as error:
            self.error = error

    def write(self, s: bytes | bytearray) -> int:
        """Write (and scan) the next bytes of the member; return their count."""
        if self._scan_keys and not self.private_key:
            window = self._tail + bytes(s)
            self.private_key = contains_private_key(window)
            self._tail = window[-KEY_SCAN_OVERLAP:]
        if self._file is not None:
            try:
                self._file.write(s)
            except OSError as error:
                self.error = error
                self.close()
        self._size += len(s)
        return len(s)

    def seekable(self) -> bool:
        """Return False, so py7zr does not rewind the file when the member is complete."""
        return False

    def read(self, size: int | None = None) -> bytes:
        """Refuse: the file is only written here and read back by the parser.

        Raises:
            io.UnsupportedOperation: Always.

        """
        raise io.UnsupportedOperation("An extracted member is write-only.")

    def seek(self, offset: int, whence: int = 0) -> int:
        """Refuse: members are written front to back.

        Raises:
            io.UnsupportedOperation: Always.

        """
        raise io.UnsupportedOperation("An extracted member is not seekable.")

    def flush(self) -> None:
        """Do nothing: the file is flushed when it is closed."""

    def size(self) -> int:
        """Return the number of bytes received."""
        return self._size

    def close(self) -> None:
        """Close the file, recording an ``OSError`` instead of raising it."""
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError as error:
                self.error = error


class IndexedFiles(WriterFactory):
    """Creates ``<index>.bin`` in ``directory`` for each member py7zr extracts (named by its index)."""

    def __init__(self, directory: Path, scan_keys: bool) -> None:
        """Write into ``directory`` (created by :func:`extract`), scanning for keys when ``scan_keys``."""
        self.directory = directory
        self.scan_keys = scan_keys
        self.files: dict[int, MemberFile] = {}

    def create(self, filename: str) -> Py7zIO:
        """Return the writer for the member whose index is ``filename``."""
        index = int(filename)
        file = MemberFile(self.path(index), self.scan_keys)
        self.files[index] = file
        return file

    def path(self, index: int) -> Path:
        """Return the file the member at ``index`` is extracted to."""
        return self.directory / f"{index}.bin"


def extract(
    zipfile: py7zr.SevenZipFile, archive: str, wanted: Collection[int], factory: IndexedFiles, cap: int
) -> None:
    """Decompress the members at the indexes ``wanted``, each once, into ``factory``'s files.

    py7zr's public ``extract`` picks members by name (and writes the second of two equal names over
    the first), so this registers the writers with py7zr's worker by member index itself, as
    ``extract`` does, and runs it sequentially with ``cap`` as the extraction limit.

    Raises:
        ManifestFormatError: The archive cannot be decompressed.

    """
    factory.directory.mkdir()
    worker = zipfile.worker
    for file in zipfile.files:
        worker.register_filelike(file.id, MemIO(str(file.id), factory) if file.id in wanted else None)
    worker.max_extract_size = cap
    try:
        worker.extract(zipfile.fp, None, parallel=False)
    except _ARCHIVE_ERRORS as error:
        raise ManifestFormatError(
            f"The {VENDOR} archive {quote(archive)} cannot be extracted: {error}."
        ) from None
    finally:
        for written in factory.files.values():
            written.close()
