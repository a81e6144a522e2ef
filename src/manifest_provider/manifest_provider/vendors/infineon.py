"""Infineon OPTIGA Trust M Express manifests: a 7z archive of 7z archives.

The uploaded archive holds one ``<reel>_<GUID>_<BUNDLE>_Certs.7z`` per certificate slot (``E0E0``,
``E0E1``, ``E0E2``), an encrypted ``<reel>_<GUID>_keys.7z`` and a README. The selected bundle's inner
archive holds one ``<chipID>_<BUNDLE>.pem`` per device. Each ``.pem`` member is one entry, even when
two members share a name. The default thing name is the chip ID from the file name (OPTIGA Trust M
V1 chips all share the subject CN ``Infineon IoT Node``); a file name of another shape gives none.

Locators quote the member's path inside its certificate archive, ``file 0A1B_E0E0.pem`` or
``file batch-2/0A1B_E0E0.pem``, prefixed with the certificate archive's name when the upload holds
several for the bundle. A path that repeats an earlier entry's, starts with ``#`` or would make the
locator longer than :data:`~layer_utils.jobs.MAX_LOCATOR_BYTES` (UTF-8 bytes) follows the entry's
1-based number among the bundle's certificate files, shortened to its end if need be:
``file #2 0A1B_E0E0.pem``, ``file #17 …<end of the path>``. Numbered locators never repeat and
never equal a plain one, and a plain one is only given once, so no two entries share a locator.

Archives are hostile input. Before anything is decompressed, the parser checks the metadata of each
level against :class:`~manifest_provider.limits.Limits`: member count and declared uncompressed size (both
summed over the levels), the compression ratio of each archive and the nesting depth (the upload is
level 1, the certificate archives level 2). A member path that is not a plain relative path refuses
the manifest; a certificate member whose path is longer than :data:`MAX_MEMBER_PATH_BYTES`, or has a
part longer than :data:`MAX_MEMBER_NAME_BYTES`, or that is a link or larger than
``Limits.max_entry_bytes`` is a failed entry and is not extracted. Whatever goes wrong reading one
extracted certificate member (temporary storage, data that is not a certificate) fails that entry
only.

Member names never reach the file system: py7zr decompresses each selected member exactly once, by
its index in the archive, into ``<index>.bin`` in a temporary directory (never into memory), with
its extraction cap backing the declared sizes up. Certificate members are scanned for private keys
while they are written, and every scan completes before the first entry is yielded. The keys archive
is never extracted or opened: in a solid archive its bytes are only decompressed when they precede a
selected member, and even then they go to py7zr's CRC check, never to a file.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import re
import struct
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import py7zr
from py7zr.io import MemIO, Py7zIO, WriterFactory

from layer_utils.cert_utils import contains_private_key
from layer_utils.jobs import MAX_LOCATOR_BYTES
from manifest_provider.limits import Limits
from manifest_provider.vendors.base import (
    ManifestEntry,
    ManifestFormatError,
    ParseOptions,
    certificate_entry,
    check_manifest_size,
    failed,
    isolated,
    private_key_error,
)

BUNDLE_TYPES = ("E0E0", "E0E1", "E0E2")
"""The certificate slots Infineon ships a bundle for; E0E0 is the default."""

SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
"""The first bytes of every 7z archive."""

MAX_MEMBER_NAME_BYTES = 255
"""The longest part (folder or file name) of a certificate member's path, in UTF-8 bytes: the file
name limit of common file systems, so any tool that unpacks the archive can extract the member."""

MAX_MEMBER_PATH_BYTES = 1024
"""The longest certificate member path, in UTF-8 bytes."""

"""The longest locator; longer member paths are quoted by their end."""

_VENDOR = "Infineon"
_BUNDLE = re.compile(r"_(?P<bundle>[A-Za-z0-9]+)_Certs\.7z", re.IGNORECASE)
_KEY_SCAN_OVERLAP = 512  # bytes kept between writes so a private key header split across them is found
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
class _Member:
    """What the parser uses of one archive member: its index, path, declared size and kind."""

    index: int
    name: str
    size: int
    is_directory: bool
    is_symlink: bool


@dataclass
class _Budget:
    """What the archive levels seen so far have used of the limits."""

    limits: Limits
    entries: int = 0
    uncompressed: int = 0

    def check_depth(self, depth: int, archive: str) -> None:
        """Refuse to open ``archive`` at nesting ``depth`` (the upload is 1) beyond the limit."""
        if depth > self.limits.max_archive_depth:
            raise ManifestFormatError(
                f"The {_VENDOR} manifest nests archives {depth} levels deep at {_quote(archive)}; "
                f"the limit is {self.limits.max_archive_depth}."
            )

    def admit(self, archive: str, members: list[_Member], compressed: int) -> int:
        """Check one archive's metadata and charge it to the budget; raise ``ManifestFormatError``.

        Checks every member's name, the member count and declared size summed over the levels, and
        this archive's compression ratio. Returns the archive's declared uncompressed size, the most
        its extraction may produce.
        """
        limits = self.limits
        for member in members:
            _check_name(member.name, archive)
        self.entries += len(members)
        if self.entries > limits.max_archive_entries:
            raise ManifestFormatError(
                f"The {_VENDOR} manifest holds more than {limits.max_archive_entries} archive members "
                f"(counted up to {_quote(archive)})."
            )
        size = sum(member.size for member in members)
        self.uncompressed += size
        if self.uncompressed > limits.max_archive_uncompressed_bytes:
            raise ManifestFormatError(
                f"The {_VENDOR} manifest would decompress to more than "
                f"{limits.max_archive_uncompressed_bytes} bytes (counted up to {_quote(archive)})."
            )
        if size > limits.max_compression_ratio * max(compressed, 1):
            raise ManifestFormatError(
                f"The {_VENDOR} archive {_quote(archive)} expands {size} bytes from {compressed}, a "
                f"compression ratio above the limit of {limits.max_compression_ratio}; it looks like a "
                "decompression bomb."
            )
        return size


def _printable(text: str) -> str:
    """Return ``text`` with every unprintable character (line breaks and other controls) escaped."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _quote(name: str, width: int = 80) -> str:
    """Return an archive or member name for an error message: printable, at most ``width`` characters."""
    text = _printable(name)
    return text if len(text) <= width else text[: width - 1] + "…"


def _check_name(name: str, archive: str) -> None:
    """Refuse a member name that is not a plain relative path."""
    parts = name.split("/")
    if "\\" in name or re.match(r"[A-Za-z]:", name) or any(part in {"", ".", ".."} for part in parts):
        raise ManifestFormatError(
            f"The {_VENDOR} archive {_quote(archive)} has a member named '{_quote(name)}', which is "
            "not a safe relative path."
        )


def _unreadable(archive: str, error: Exception) -> ManifestFormatError:
    return ManifestFormatError(f"The {_VENDOR} archive {_quote(archive)} cannot be read: {error}.")


def _open(file: BinaryIO, archive: str) -> py7zr.SevenZipFile:
    try:
        return py7zr.SevenZipFile(file, mode="r")
    except _ARCHIVE_ERRORS as error:
        raise _unreadable(archive, error) from None


def _members(zipfile: py7zr.SevenZipFile, archive: str) -> list[_Member]:
    """Return the members of an opened archive in archive order; raise ``ManifestFormatError``."""
    try:
        members = [
            _Member(file.id, file.filename, file.uncompressed or 0, file.is_directory, file.is_symlink)
            for file in zipfile.files
        ]
    except _ARCHIVE_ERRORS as error:
        raise _unreadable(archive, error) from None
    if not all(isinstance(member.name, str) for member in members):
        raise ManifestFormatError(f"The {_VENDOR} archive {_quote(archive)} has a member without a name.")
    return members


class _MemberFile(Py7zIO):
    """Takes one member's bytes from py7zr and writes them to a file; never raises.

    ``error`` is the ``OSError`` that stopped the writing (the file is then incomplete);
    ``private_key`` is whether the bytes, when scanned, contained a PEM private key.
    """

    def __init__(self, path: Path, scan_keys: bool) -> None:
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
            self._tail = window[-_KEY_SCAN_OVERLAP:]
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
        """Refuse: the file is only written here and read back by the parser."""
        raise io.UnsupportedOperation("An extracted member is write-only.")

    def seek(self, offset: int, whence: int = 0) -> int:
        """Refuse: members are written front to back."""
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


class _IndexedFiles(WriterFactory):
    """Creates ``<index>.bin`` in ``directory`` for each member py7zr extracts (named by its index)."""

    def __init__(self, directory: Path, scan_keys: bool) -> None:
        self.directory = directory
        self.scan_keys = scan_keys
        self.files: dict[int, _MemberFile] = {}

    def create(self, filename: str) -> Py7zIO:
        """Return the writer for the member whose index is ``filename``."""
        index = int(filename)
        file = _MemberFile(self.path(index), self.scan_keys)
        self.files[index] = file
        return file

    def path(self, index: int) -> Path:
        """Return the file the member at ``index`` is extracted to."""
        return self.directory / f"{index}.bin"


def _extract(
    zipfile: py7zr.SevenZipFile, archive: str, wanted: Collection[int], factory: _IndexedFiles, cap: int
) -> None:
    """Decompress the members at the indexes ``wanted``, each once, into ``factory``'s files.

    py7zr's public ``extract`` picks members by name (and writes the second of two equal names over
    the first), so this registers the writers with py7zr's worker by member index itself, as
    ``extract`` does, and runs it sequentially with ``cap`` as the extraction limit. Raises
    ``ManifestFormatError`` when the archive cannot be decompressed.
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
            f"The {_VENDOR} archive {_quote(archive)} cannot be extracted: {error}."
        ) from None
    finally:
        for written in factory.files.values():
            written.close()


def _select_bundles(members: list[_Member], bundle: str) -> list[_Member]:
    """Return the inner archives for ``bundle``, refusing when there is none."""
    found: dict[str, list[_Member]] = {}
    for member in members:
        match = _BUNDLE.search(member.name)
        if match is not None and not member.is_directory:
            found.setdefault(match.group("bundle").upper(), []).append(member)
    if bundle not in found:
        present = ", ".join(sorted(found)) or "none"
        raise ManifestFormatError(
            f"The {_VENDOR} manifest has no {bundle} certificate bundle (bundles present: {present})."
        )
    return found[bundle]


def _locator(path: str, number: int, seen: set[bytes]) -> str:
    """Return the locator of the certificate file at ``path``, the ``number``-th of the bundle.

    ``seen`` holds digests of the plain locators given so far; a plain locator is only given once.
    """
    text = _printable(path)
    plain = f"file {text}"
    digest = hashlib.blake2b(plain.encode("utf-8"), digest_size=16).digest()
    if _size(plain) <= MAX_LOCATOR_BYTES and not text.startswith("#") and digest not in seen:
        seen.add(digest)
        return plain
    numbered = f"file #{number} "
    if _size(numbered + text) <= MAX_LOCATOR_BYTES:
        return numbered + text
    # Keep the tail (the file name) within the bound, in whole characters.
    room = MAX_LOCATOR_BYTES - _size(numbered + "…")
    tail = text.encode("utf-8")[-room:].decode("utf-8", errors="ignore")
    return numbered + "…" + tail


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _member_problem(member: _Member, limits: Limits) -> str | None:
    """Return why a certificate member is not extracted (a sentence fragment), or None."""
    encoded = member.name.encode("utf-8")
    if len(encoded) > MAX_MEMBER_PATH_BYTES:
        return f"the member path is longer than {MAX_MEMBER_PATH_BYTES} bytes."
    if any(len(part) > MAX_MEMBER_NAME_BYTES for part in encoded.split(b"/")):
        return f"the member name is longer than {MAX_MEMBER_NAME_BYTES} bytes."
    if member.is_symlink:
        return "the member is a link, not a certificate file."
    if member.size > limits.max_entry_bytes:
        return f"the file is larger than {limits.max_entry_bytes} bytes."
    return None


def _chip_id(name: str, bundle: str) -> str | None:
    """Return the chip ID of a ``<chipID>_<bundle>.pem`` member path, or None for another name."""
    match = re.fullmatch(rf"(?P<chip>.+)_{bundle}\.pem", PurePosixPath(name).name, re.IGNORECASE)
    return None if match is None else match.group("chip")


@dataclass(frozen=True)
class _Certificates:
    """One selected certificate archive: its extracted file, its name and the locator prefix."""

    path: Path
    name: str
    prefix: str


@dataclass
class _Run:
    """What the certificate archives of one parse share: the budget, the bundle, the locators given."""

    budget: _Budget
    bundle: str
    seen: set[bytes] = field(default_factory=set)


def _inner_entries(archive: _Certificates, workdir: Path, run: _Run, first: int) -> Iterator[ManifestEntry]:
    """Yield the entries of one certificate archive; ``first`` is the ordinal of its first entry."""
    budget = run.budget
    limits = budget.limits
    with archive.path.open("rb") as file, _open(file, archive.name) as inner:
        members = [member for member in _members(inner, archive.name) if not member.is_directory]
        declared = budget.admit(archive.name, members, archive.path.stat().st_size)
        for nested in (member.name for member in members if member.name.lower().endswith(".7z")):
            budget.check_depth(3, nested)
        pems = [member for member in members if member.name.lower().endswith(".pem")]
        problems = [_member_problem(member, limits) for member in pems]
        wanted = {member.index for member, problem in zip(pems, problems, strict=True) if problem is None}
        files = _IndexedFiles(workdir, scan_keys=True)
        if wanted:
            _extract(inner, archive.name, wanted, files, declared)
    locators = [
        _locator(archive.prefix + member.name, first + offset + 1, run.seen)
        for offset, member in enumerate(pems)
    ]
    for member, locator in zip(pems, locators, strict=True):
        written = files.files.get(member.index)
        if written is not None and written.private_key:
            raise private_key_error(f"F{locator[1:]} of the {_VENDOR} manifest")
    for offset, (member, locator, problem) in enumerate(zip(pems, locators, problems, strict=True)):
        if problem is not None:
            yield failed(first + offset, locator, problem)
        else:
            ordinal = first + offset
            yield isolated(ordinal, locator, partial(_pem_entry, ordinal, locator, member, files, run))


def _pem_entry(ordinal: int, locator: str, member: _Member, files: _IndexedFiles, run: _Run) -> ManifestEntry:
    """Read one extracted certificate member and build its entry; every failure stays in the entry."""
    written = files.files.get(member.index)
    if written is None or written.error is not None:
        return failed(ordinal, locator, "the file could not be extracted to temporary storage.")
    try:
        with files.path(member.index).open("rb") as file:
            data = file.read(run.budget.limits.max_entry_bytes)
    except OSError:
        return failed(ordinal, locator, "the extracted file could not be read back.")
    return certificate_entry(ordinal, locator, data, _chip_id(member.name, run.bundle))


def _entries(source: BinaryIO, options: ParseOptions) -> Iterator[ManifestEntry]:
    limits = options.limits
    size = check_manifest_size(source, limits, _VENDOR)
    bundle = options.bundle_type.strip().upper()
    if bundle not in BUNDLE_TYPES:
        raise ManifestFormatError(
            f"The {_VENDOR} bundle type must be one of {', '.join(BUNDLE_TYPES)}, "
            f"not '{options.bundle_type}'."
        )
    if source.read(len(SEVEN_ZIP_MAGIC)) != SEVEN_ZIP_MAGIC:
        raise ManifestFormatError(f"The {_VENDOR} manifest is not a 7z archive.")
    source.seek(0)
    if not isinstance(source, io.IOBase):
        raise TypeError("The Infineon parser needs a real binary file object (io.IOBase).")
    budget = _Budget(limits)
    with tempfile.TemporaryDirectory(prefix="thingpress-infineon-") as temp:
        workdir = Path(temp)
        outer_files = _IndexedFiles(workdir / "outer", scan_keys=False)
        with _open(source, "(the upload)") as outer:
            members = _members(outer, "(the upload)")
            declared = budget.admit("(the upload)", members, size)
            selected = _select_bundles(members, bundle)
            for member in selected:
                budget.check_depth(2, member.name)
            _extract(outer, "(the upload)", {member.index for member in selected}, outer_files, declared)
        for member in selected:
            written = outer_files.files.get(member.index)
            if written is None or written.error is not None:
                raise ManifestFormatError(
                    f"The {_VENDOR} archive {_quote(member.name)} could not be extracted to temporary "
                    "storage."
                )
        ordinal = 0
        run = _Run(budget, bundle)
        for number, member in enumerate(selected):
            archive = _Certificates(
                outer_files.path(member.index), member.name, f"{member.name}/" if len(selected) > 1 else ""
            )
            for entry in _inner_entries(archive, workdir / f"inner-{number}", run, ordinal):
                ordinal += 1
                yield entry


class InfineonParser:
    """Parser for Infineon OPTIGA Trust M Express 7z-of-7z manifests."""

    name = "infineon"
    prefix = "infineon/"

    def sniff(self, head: bytes) -> bool:
        """Return True when ``head`` starts with the 7z signature."""
        return head.startswith(SEVEN_ZIP_MAGIC)

    def entries(self, source: BinaryIO, options: ParseOptions) -> Iterator[ManifestEntry]:
        """Yield one entry per certificate file of the selected bundle (``options.bundle_type``).

        Takes a seekable binary file object (``io.IOBase``). Raises ``ManifestFormatError`` when the
        file is not a readable 7z archive, breaks a limit, lacks the bundle, nests too deep or holds
        private key material.
        """
        yield from _entries(source, options)
