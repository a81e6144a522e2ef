"""Espressif manifests: a CSV file with the header ``MAC,cn,cert``.

Each record holds the device's MAC address (the vendor's device identifier, so the default thing
name), the certificate's subject CN (checked against the certificate when both are present) and the
certificate as a quoted multi-line PEM. Records are located as ``row N`` the way a spreadsheet shows
them: the header is row 1 and the first device is row 2.

The file may be UTF-8 (with or without a byte order mark) or UTF-16 with a byte order mark, as
spreadsheet programs export it; a row with bytes that do not decode fails alone. Espressif also ships single
certificates as PEM files: a file that starts with ``-----BEGIN`` is read as a PEM bundle with no
vendor identifier (see :mod:`manifest_provider.vendors.generated`).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from functools import partial
from typing import BinaryIO

from manifest_provider.limits import Limits
from manifest_provider.vendors.base import (
    ManifestEntry,
    ManifestFormatError,
    ParseOptions,
    certificate_entry,
    check_manifest_size,
    describe,
    failed,
    isolated,
    refuse_private_keys,
    text_view,
)
from manifest_provider.vendors.generated import read_certificates

HEADER = ("mac", "cn", "cert")

_VENDOR = "Espressif"
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _encoding(head: bytes) -> str:
    """Return the text encoding announced by the byte order mark (UTF-8 when there is none)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8-sig"


def _decode_head(head: bytes) -> str:
    encoding = _encoding(head)
    return codecs.getincrementaldecoder(encoding)(errors="replace").decode(head)


def _bounded_lines(text: io.TextIOWrapper, limits: Limits) -> Iterator[str]:
    """Yield the text's lines for the csv module, refusing one longer than the line limit."""
    number = 0
    while True:
        line = text.readline(limits.max_line_bytes + 2)
        if not line:
            return
        number += 1
        if len(line.rstrip("\r\n")) > limits.max_line_bytes:
            raise ManifestFormatError(
                f"Line {number} of the {_VENDOR} manifest is longer than {limits.max_line_bytes} bytes."
            )
        yield line


def _row_entry(ordinal: int, row_number: int, row: list[str]) -> ManifestEntry:
    """Turn one CSV record into an entry or a failed entry naming the reason."""
    locator = f"row {row_number}"
    if any(_UNDECODABLE.search(value) for value in row):
        return failed(ordinal, locator, "the row is not valid UTF-8 or UTF-16 text.")
    if len(row) != len(HEADER):
        return failed(ordinal, locator, f"expected 3 columns (MAC, cn, cert), found {len(row)}.")
    mac, cn, pem = (value.strip() for value in row)
    if not mac:
        return failed(ordinal, locator, "the MAC column is empty.")
    if not pem:
        return failed(ordinal, locator, "the cert column is empty.")
    entry = certificate_entry(ordinal, locator, pem.encode("utf-8"), mac)
    subject_cn = entry.certificate.subject_cn if entry.certificate is not None else None
    # The cn column is a cross-check: compared only when both it and the certificate's CN exist.
    if cn and subject_cn is not None and cn != subject_cn:
        return failed(
            ordinal,
            locator,
            f"the cn column '{describe(cn)}' does not match the certificate subject CN "
            f"'{describe(subject_cn)}'.",
        )
    return entry


def _csv_entries(source: BinaryIO, limits: Limits, skip_before: int) -> Iterator[ManifestEntry]:
    head = source.read(4)
    encoding = _encoding(head)
    if skip_before:  # an earlier run of this object version passed the scan
        source.seek(0)
    else:
        refuse_private_keys(source, _VENDOR, encoding)  # rewinds
    # Undecodable bytes are kept as surrogate escapes, so they fail only the row that holds them.
    with text_view(source, encoding, "surrogateescape", newline="") as text:
        # The csv module's field limit is process-wide; every parse sets the configured value.
        csv.field_size_limit(limits.max_csv_field_bytes)
        row_number = 0
        ordinal = 0
        try:
            reader = csv.reader(_bounded_lines(text, limits), strict=True)
            for row in reader:
                row_number += 1
                if row_number == 1:
                    found = [value.strip().casefold() for value in row]
                    if tuple(found) != HEADER:
                        raise ManifestFormatError(
                            f"{_VENDOR} manifest header must be 'MAC,cn,cert', "
                            f"found '{describe(','.join(row))}'."
                        )
                    continue
                if not any(value.strip() for value in row):
                    continue
                yield isolated(
                    ordinal, f"row {row_number}", partial(_row_entry, ordinal, row_number, row), skip_before
                )
                ordinal += 1
        except csv.Error as error:
            raise ManifestFormatError(
                f"Row {row_number + 1} of the {_VENDOR} manifest is not valid CSV: {error}."
            ) from None


class EspressifParser:
    """Parser for Espressif ``MAC,cn,cert`` CSV manifests and single PEM certificates."""

    name = "espressif"
    prefix = "espressif/"

    def sniff(self, head: bytes) -> bool:
        """Return True when ``head`` starts with the header ``MAC,cn,cert`` (after a byte order mark)."""
        first = _decode_head(head).lstrip("\ufeff").split("\n", 1)[0]
        return tuple(value.strip().casefold() for value in first.split(",")) == HEADER

    def entries(self, source: BinaryIO, options: ParseOptions) -> Iterator[ManifestEntry]:
        """Yield one entry per CSV record (or per certificate of a PEM file).

        A ``ManifestFormatError`` ends the entries for an empty or over-sized file, a wrong header, a
        line or field over the limits, or private key material.
        """
        check_manifest_size(source, options.limits, _VENDOR)
        head = source.read(64)
        source.seek(0)
        if _decode_head(head).lstrip("\ufeff \t\r\n").startswith("-----BEGIN"):
            yield from read_certificates(source, options, _VENDOR)
        else:
            yield from _csv_entries(source, options.limits, options.skip_before)
