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

Archives are hostile input; :mod:`manifest_provider.vendors.infineon_archive` checks each level's
metadata before anything is decompressed (the upload is level 1, the certificate archives level 2)
and extracts members by index. A certificate member whose path is longer than
:data:`MAX_MEMBER_PATH_BYTES`, or has a part longer than :data:`MAX_MEMBER_NAME_BYTES`, or that is
a link or larger than ``Limits.max_entry_bytes`` is a failed entry and is not extracted. Whatever
goes wrong reading one extracted certificate member (temporary storage, data that is not a
certificate) fails that entry only. Certificate members are scanned for private keys while they are
written, and every scan completes before the first entry is yielded. The keys archive is never
extracted or opened.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

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
    private_key_reason,
)
from manifest_provider.vendors.infineon_archive import (
    MAX_MEMBER_PATH_BYTES,
    SEVEN_ZIP_MAGIC,
    VENDOR,
    Budget,
    IndexedFiles,
    Member,
    extract,
    list_members,
    open_archive,
    printable,
    quote,
)

BUNDLE_TYPES = ("E0E0", "E0E1", "E0E2")
"""The certificate slots Infineon ships a bundle for; E0E0 is the default."""

MAX_MEMBER_NAME_BYTES = 255
"""The longest part (folder or file name) of a certificate member's path, in UTF-8 bytes: the file
name limit of common file systems, so any tool that unpacks the archive can extract the member."""

_BUNDLE = re.compile(r"_(?P<bundle>[A-Za-z0-9]+)_Certs\.7z", re.IGNORECASE)


def _select_bundles(members: list[Member], bundle: str) -> list[Member]:
    """Return the inner archives for ``bundle``.

    Raises:
        ManifestFormatError: The upload has no archive for ``bundle``.

    """
    found: dict[str, list[Member]] = {}
    for member in members:
        match = _BUNDLE.search(member.name)
        if match is not None and not member.is_directory:
            found.setdefault(match.group("bundle").upper(), []).append(member)
    if bundle not in found:
        present = ", ".join(sorted(found)) or "none"
        raise ManifestFormatError(
            f"The {VENDOR} manifest has no {bundle} certificate bundle (bundles present: {present})."
        )
    return found[bundle]


def _locator(path: str, number: int, seen: set[bytes]) -> str:
    """Return the locator of the certificate file at ``path``, the ``number``-th of the bundle.

    ``seen`` holds digests of the plain locators given so far; a plain locator is only given once.
    """
    text = printable(path)
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


def _member_problem(member: Member, limits: Limits) -> str | None:
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

    budget: Budget
    bundle: str
    skip_before: int = 0
    seen: set[bytes] = field(default_factory=set)


def _inner_entries(archive: _Certificates, workdir: Path, run: _Run, first: int) -> Iterator[ManifestEntry]:
    """Yield the entries of one certificate archive; ``first`` is the ordinal of its first entry.

    Raises:
        ManifestFormatError: The archive breaks a limit or holds private key material.

    """
    budget = run.budget
    limits = budget.limits
    with archive.path.open("rb") as file, open_archive(file, archive.name, budget) as inner:
        members = [member for member in list_members(inner, archive.name) if not member.is_directory]
        declared = budget.admit(archive.name, members, archive.path.stat().st_size)
        for nested in (member.name for member in members if member.name.lower().endswith(".7z")):
            budget.check_depth(3, nested)
        pems = [member for member in members if member.name.lower().endswith(".pem")]
        problems = [_member_problem(member, limits) for member in pems]
        wanted = {member.index for member, problem in zip(pems, problems, strict=True) if problem is None}
        files = IndexedFiles(workdir, scan_keys=True)
        if wanted:
            extract(inner, archive.name, wanted, files, declared)
    locators = [
        _locator(archive.prefix + member.name, first + offset + 1, run.seen)
        for offset, member in enumerate(pems)
    ]
    for member, locator in zip(pems, locators, strict=True):
        written = files.files.get(member.index)
        if written is not None and written.private_key:
            raise ManifestFormatError(private_key_reason(f"F{locator[1:]} of the {VENDOR} manifest"))
    for offset, (member, locator, problem) in enumerate(zip(pems, locators, problems, strict=True)):
        if problem is not None:
            yield failed(first + offset, locator, problem)
        else:
            ordinal = first + offset
            build = partial(_pem_entry, ordinal, locator, member, files, run)
            yield isolated(ordinal, locator, build, run.skip_before)


def _pem_entry(ordinal: int, locator: str, member: Member, files: IndexedFiles, run: _Run) -> ManifestEntry:
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
    size = check_manifest_size(source, limits, VENDOR)
    bundle = options.bundle_type.strip().upper()
    if bundle not in BUNDLE_TYPES:
        raise ManifestFormatError(
            f"The {VENDOR} bundle type must be one of {', '.join(BUNDLE_TYPES)}, not '{options.bundle_type}'."
        )
    if source.read(len(SEVEN_ZIP_MAGIC)) != SEVEN_ZIP_MAGIC:
        raise ManifestFormatError(f"The {VENDOR} manifest is not a 7z archive.")
    source.seek(0)
    if not isinstance(source, io.IOBase):
        raise TypeError("The Infineon parser needs a real binary file object (io.IOBase).")
    budget = Budget(limits)
    with tempfile.TemporaryDirectory(prefix="thingpress-infineon-") as temp:
        workdir = Path(temp)
        outer_files = IndexedFiles(workdir / "outer", scan_keys=False)
        with open_archive(source, "(the upload)", budget) as outer:
            members = list_members(outer, "(the upload)")
            declared = budget.admit("(the upload)", members, size)
            selected = _select_bundles(members, bundle)
            for member in selected:
                budget.check_depth(2, member.name)
            extract(outer, "(the upload)", {member.index for member in selected}, outer_files, declared)
        for member in selected:
            written = outer_files.files.get(member.index)
            if written is None or written.error is not None:
                raise ManifestFormatError(
                    f"The {VENDOR} archive {quote(member.name)} could not be extracted to temporary storage."
                )
        ordinal = 0
        run = _Run(budget, bundle, options.skip_before)
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

        A ``ManifestFormatError`` ends the entries when the file is not a readable 7z archive, breaks
        a limit, lacks the bundle, nests too deep or holds private key material.

        Args:
            source: A seekable binary file object (``io.IOBase``).
            options: The bundle type and limits.

        Yields:
            The entries, in archive order.

        """
        yield from _entries(source, options)
