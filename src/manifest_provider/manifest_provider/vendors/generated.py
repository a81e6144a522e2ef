"""Generated certificates: PEM bundles and files of base64 lines.

Three layouts are accepted, chosen from the first non-blank line (base64 text or not):

- a PEM bundle: concatenated ``CERTIFICATE`` (or legacy ``X509 CERTIFICATE``) blocks, text around
  blocks is ignored; locator ``line N`` of each block's BEGIN line;
- one base64-encoded PEM certificate per line (the format of ``thingpress generate`` and of the
  peer project's ``certificates_test.txt``); locator ``line N``;
- one base64-encoded DER certificate per line; locator ``line N``.

These files carry no vendor device identifier: with the default name sources the thing is named
after the certificate's subject CN when it is a legal name of that certificate alone, else after
its fingerprint. A private key anywhere in the file refuses the whole manifest: whoever built
it leaked key material, and nothing in it should be trusted.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Generator, Iterator
from functools import partial
from typing import BinaryIO

from layer_utils.cert_utils import CERTIFICATE_LABELS
from manifest_provider.limits import Limits
from manifest_provider.vendors.base import (
    Line,
    ManifestEntry,
    ManifestFormatError,
    ParseOptions,
    certificate_entry,
    check_manifest_size,
    failed,
    isolated,
    read_lines,
    refuse_private_keys,
)

_BASE64_LINE = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_END = re.compile(rb"-----END ([A-Z0-9 ]+)-----")
_BASE64_PEM_PREFIX = b"LS0tLS1CRUdJTi"  # base64 of "-----BEGIN"
_BASE64_DER_PREFIX = b"MII"  # base64 of a DER SEQUENCE with a two-byte length


def _base64_entries(
    first: Line, rest: Iterator[Line], limits: Limits, skip_before: int
) -> Iterator[ManifestEntry]:
    """Parse one base64 certificate (of PEM or of DER) per line; entries before ``skip_before`` unread."""
    ordinal = 0
    line: Line | None = first
    while line is not None:
        locator = f"line {line.number}"
        data = line.data
        if data is None:
            yield failed(ordinal, locator, f"the line is longer than {limits.max_line_bytes} bytes.")
            ordinal += 1
        elif ordinal < skip_before and data.strip():
            yield ManifestEntry(ordinal, locator, None, None)  # counted, not read
            ordinal += 1
        elif data.strip():
            text = data.strip()
            if not _BASE64_LINE.fullmatch(text):
                yield failed(ordinal, locator, "the line is not base64 text.")
            else:
                try:
                    # Python 3.12 accepts excess padding ("QUJD="), 3.13 does not: a length that is not a
                    # multiple of 4 is invalid on both.
                    decoded = base64.b64decode(text, validate=True) if len(text) % 4 == 0 else None
                except (binascii.Error, ValueError):
                    decoded = None
                if decoded is None:
                    yield failed(ordinal, locator, "the line is not valid base64.")
                else:
                    yield isolated(
                        ordinal,
                        locator,
                        partial(certificate_entry, ordinal, locator, decoded, None),
                        skip_before,
                    )
            ordinal += 1
        line = next(rest, None)


def _pem_entries(
    first: Line, rest: Iterator[Line], limits: Limits, skip_before: int
) -> Generator[ManifestEntry, None, int]:
    """Parse a PEM bundle: one entry per block, at its BEGIN line (unread before ``skip_before``)."""
    ordinal = 0
    block: list[bytes] | None = None
    block_line = 0
    block_bytes = 0
    line: Line | None = first
    while line is not None:
        data = line.data
        if data is None:
            where = block_line if block is not None else line.number
            yield failed(
                ordinal,
                f"line {where}",
                f"line {line.number} is longer than {limits.max_line_bytes} bytes.",
            )
            ordinal += 1
            block = None
        else:
            text = data.strip()
            begin = _BEGIN.match(text)
            if begin is not None:
                if block is not None:
                    yield failed(ordinal, f"line {block_line}", "the PEM block has no END line.")
                    ordinal += 1
                block, block_line, block_bytes = [text], line.number, len(text)
            elif block is not None:
                block.append(text)
                block_bytes += len(text) + 1
                if _END.match(text):
                    yield isolated(
                        ordinal,
                        f"line {block_line}",
                        partial(_pem_block_entry, ordinal, block_line, block),
                        skip_before,
                    )
                    ordinal += 1
                    block = None
                elif block_bytes > limits.max_entry_bytes:
                    yield failed(
                        ordinal,
                        f"line {block_line}",
                        f"the PEM block is longer than {limits.max_entry_bytes} bytes.",
                    )
                    ordinal += 1
                    block = None
        line = next(rest, None)
    if block is not None:
        yield failed(ordinal, f"line {block_line}", "the PEM block has no END line.")
        ordinal += 1
    return ordinal


def _pem_block_entry(ordinal: int, begin_line: int, block: list[bytes]) -> ManifestEntry:
    locator = f"line {begin_line}"
    begin = _BEGIN.match(block[0])
    label = begin.group(1).decode("ascii") if begin is not None else ""
    if label not in CERTIFICATE_LABELS:
        return failed(ordinal, locator, f"a '{label}' PEM block is not a certificate.")
    return certificate_entry(ordinal, locator, b"\n".join(block) + b"\n", None)


def read_certificates(source: BinaryIO, options: ParseOptions, vendor: str) -> Iterator[ManifestEntry]:
    """Yield one entry per certificate of a PEM bundle or a file of base64 lines.

    Args:
        source: The seekable manifest file.
        options: The options (for limits).
        vendor: The vendor's display name for messages.

    Yields:
        The entries, in file order.

    Raises:
        ManifestFormatError: The file is empty or over-sized, has no certificate text, or holds
            private key material.

    """
    limits = options.limits
    check_manifest_size(source, limits, vendor)
    if not options.skip_before:  # else an earlier run of this object version passed the scan
        refuse_private_keys(source, vendor)
    lines = read_lines(source, limits.max_line_bytes)
    first = next((line for line in lines if line.data is None or line.data.strip()), None)
    if first is None:
        raise ManifestFormatError(f"The {vendor} manifest holds only blank lines.")
    if first.data is None or _BASE64_LINE.fullmatch(first.data.strip()):
        yield from _base64_entries(first, lines, limits, options.skip_before)
    elif not (yield from _pem_entries(first, lines, limits, options.skip_before)):
        raise ManifestFormatError(
            f"The {vendor} manifest holds no certificate: it has neither PEM blocks nor base64 lines."
        )


def sniff_certificates(head: bytes) -> bool:
    """Return True when ``head`` starts with a PEM certificate or a base64 certificate line."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith((b"-----BEGIN CERTIFICATE", b"-----BEGIN X509 CERTIFICATE")):
        return True
    first = text.split(b"\n", 1)[0].strip()
    return first.startswith((_BASE64_PEM_PREFIX, _BASE64_DER_PREFIX)) and bool(_BASE64_LINE.fullmatch(first))


class GeneratedParser:
    """Parser for generated certificates (PEM bundles, base64-of-PEM or base64-of-DER lines)."""

    name = "generated"
    prefix = "generated/"

    def sniff(self, head: bytes) -> bool:
        """Return True when ``head`` starts with a PEM certificate or a base64 certificate line."""
        return sniff_certificates(head)

    def entries(self, source: BinaryIO, options: ParseOptions) -> Iterator[ManifestEntry]:
        """Yield one entry per certificate; see the module docstring for layouts and locators.

        A ``ManifestFormatError`` ends the entries for an empty or over-sized file, blank-only content
        or private key material (see :func:`read_certificates`).
        """
        yield from read_certificates(source, options, "generated")
