"""Infineon OPTIGA Trust M Express manifests: a 7z archive of 7z archives.

The uploaded archive holds one ``<reel>_<GUID>_<BUNDLE>_Certs.7z`` per certificate slot (``E0E0``,
``E0E1``, ``E0E2``), an encrypted ``<reel>_<GUID>_keys.7z`` and a README. The selected bundle's inner
archive holds one ``<chipID>_<BUNDLE>.pem`` per device; the default thing name is the chip ID from
the file name (OPTIGA Trust M V1 chips all share the subject CN ``Infineon IoT Node``; a file name
of another shape gives none) and the locator is ``file <member name>``.

Archives are hostile input. Before anything is decompressed, the parser checks the metadata of each
level against :class:`~layer_utils.limits.Limits`: member count and declared uncompressed size (both
summed over the levels), the compression ratio of each archive and the nesting depth (the upload is
level 1, the certificate archives level 2). Only the selected inner archives are extracted (to a
temporary directory, never to memory), and py7zr's own extraction cap backs the declared sizes up. The
keys archive is never extracted or opened: in a solid archive its bytes are only decompressed when
they precede a selected member, and even then they go to py7zr's CRC check, never to a file.
"""

from __future__ import annotations

import io
import lzma
import re
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import py7zr

from layer_utils.cert_utils import contains_private_key, load_certificate
from layer_utils.limits import Limits
from manifest_provider.vendors.base import (
    ManifestEntry,
    ManifestFormatError,
    ParseOptions,
    check_manifest_size,
    failed,
    private_key_error,
)

BUNDLE_TYPES = ("E0E0", "E0E1", "E0E2")
"""The certificate slots Infineon ships a bundle for; E0E0 is the default."""

SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
"""The first bytes of every 7z archive."""

_VENDOR = "Infineon"
_BUNDLE = re.compile(r"_(?P<bundle>[A-Za-z0-9]+)_Certs\.7z", re.IGNORECASE)
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
                f"The {_VENDOR} manifest nests archives {depth} levels deep at {archive}; "
                f"the limit is {self.limits.max_archive_depth}."
            )

    def admit(self, archive: str, members: list[Any], compressed: int) -> int:
        """Check one archive's metadata and charge it to the budget; raise ``ManifestFormatError``.

        Checks every member's name, the member count and declared size summed over the levels, and
        this archive's compression ratio. Returns the archive's declared uncompressed size, the most
        its extraction may produce.
        """
        limits = self.limits
        for member in members:
            _check_name(member.filename, archive)
        self.entries += len(members)
        if self.entries > limits.max_archive_entries:
            raise ManifestFormatError(
                f"The {_VENDOR} manifest holds more than {limits.max_archive_entries} archive members "
                f"(counted up to {archive})."
            )
        size = sum(member.uncompressed or 0 for member in members)
        self.uncompressed += size
        if self.uncompressed > limits.max_archive_uncompressed_bytes:
            raise ManifestFormatError(
                f"The {_VENDOR} manifest would decompress to more than "
                f"{limits.max_archive_uncompressed_bytes} bytes (counted up to {archive})."
            )
        if size > limits.max_compression_ratio * max(compressed, 1):
            raise ManifestFormatError(
                f"The {_VENDOR} archive {archive} expands {size} bytes from {compressed}, a compression "
                f"ratio above the limit of {limits.max_compression_ratio}; it looks like a decompression "
                "bomb."
            )
        return size


def _check_name(name: str, archive: str) -> None:
    """Refuse a member name that is not a plain relative path (py7zr would rewrite or reject it)."""
    parts = name.split("/")
    if "\\" in name or re.match(r"[A-Za-z]:", name) or any(part in {"", ".", ".."} for part in parts):
        raise ManifestFormatError(
            f"The {_VENDOR} archive {archive} has a member named '{name[:80]}', which is not a safe "
            "relative path."
        )


def _open(file: BinaryIO, archive: str) -> py7zr.SevenZipFile:
    try:
        return py7zr.SevenZipFile(file, mode="r")
    except _ARCHIVE_ERRORS as error:
        raise ManifestFormatError(f"The {_VENDOR} archive {archive} cannot be read: {error}.") from None


def _extract(zipfile: py7zr.SevenZipFile, archive: str, targets: list[str], path: Path, cap: int) -> None:
    """Extract only ``targets`` into ``path``, with py7zr's extraction cap as a second safeguard."""
    zipfile.max_extract_size = cap
    try:
        zipfile.extract(path=path, targets=targets)
    except _ARCHIVE_ERRORS as error:
        raise ManifestFormatError(f"The {_VENDOR} archive {archive} cannot be extracted: {error}.") from None


def _select_bundles(members: list[Any], bundle: str) -> list[str]:
    """Return the names of the inner archives for ``bundle``, refusing when there is none."""
    found: dict[str, list[str]] = {}
    for member in members:
        match = _BUNDLE.search(member.filename)
        if match is not None and not member.is_directory:
            found.setdefault(match.group("bundle").upper(), []).append(member.filename)
    if bundle not in found:
        present = ", ".join(sorted(found)) or "none"
        raise ManifestFormatError(
            f"The {_VENDOR} manifest has no {bundle} certificate bundle (bundles present: {present})."
        )
    return found[bundle]


def _inner_entries(
    archive_path: Path, archive: str, workdir: Path, budget: _Budget, *, first_ordinal: int, bundle: str
) -> Iterator[ManifestEntry]:
    """Yield the entries of one inner certificate archive."""
    limits = budget.limits
    with archive_path.open("rb") as file, _open(file, archive) as inner:
        members = [member for member in inner.list() if not member.is_directory]
        declared = budget.admit(archive, members, archive_path.stat().st_size)
        for nested in (m.filename for m in members if m.filename.lower().endswith(".7z")):
            budget.check_depth(3, nested)
        pems = [m for m in members if m.filename.lower().endswith(".pem")]
        wanted = [m.filename for m in pems if not m.is_symlink and m.uncompressed <= limits.max_entry_bytes]
        if wanted:
            _extract(inner, archive, wanted, workdir, declared)
    for member in pems:
        if not member.is_symlink and member.uncompressed <= limits.max_entry_bytes:
            data = (workdir / member.filename).read_bytes()
            if contains_private_key(data):
                raise private_key_error(f"File {member.filename} of the {_VENDOR} manifest")
    for offset, member in enumerate(pems):
        yield _pem_entry(first_ordinal + offset, member, workdir, limits, bundle)


def _chip_id(name: str, bundle: str) -> str | None:
    """Return the chip ID of a ``<chipID>_<bundle>.pem`` member path, or None for another name."""
    match = re.fullmatch(rf"(?P<chip>.+)_{bundle}\.pem", PurePosixPath(name).name, re.IGNORECASE)
    return None if match is None else match.group("chip")


def _pem_entry(ordinal: int, member: Any, workdir: Path, limits: Limits, bundle: str) -> ManifestEntry:
    locator = f"file {PurePosixPath(member.filename).name}"
    if member.is_symlink:
        return failed(ordinal, locator, "the member is a link, not a certificate file.")
    if member.uncompressed > limits.max_entry_bytes:
        return failed(ordinal, locator, f"the file is larger than {limits.max_entry_bytes} bytes.")
    try:
        certificate = load_certificate((workdir / member.filename).read_bytes())
    except ValueError as error:
        return failed(ordinal, locator, f"{str(error).rstrip('.')}.")
    return ManifestEntry(ordinal, locator, certificate, _chip_id(member.filename, bundle))


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
        with _open(source, "(the upload)") as outer:
            members = outer.list()
            declared = budget.admit("(the upload)", members, size)
            selected = _select_bundles(members, bundle)
            for name in selected:
                budget.check_depth(2, name)
            _extract(outer, "(the upload)", selected, workdir / "outer", declared)
        ordinal = 0
        for index, name in enumerate(selected):
            inner_dir = workdir / f"inner-{index}"
            for entry in _inner_entries(
                workdir / "outer" / name, name, inner_dir, budget, first_ordinal=ordinal, bundle=bundle
            ):
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
