"""The vendor parser interface: entries, options, errors and shared helpers.

A parser turns one manifest (a seekable binary file) into a stream of :class:`ManifestEntry`, one per
device, in manifest order. A problem with one device is an entry with ``error`` set; a problem with
the whole manifest is a :class:`ManifestFormatError`. Entries yielded before a ``ManifestFormatError``
stand: the provider imports them and then reports the manifest as failed with the error's reason.

Locators name an entry the way a person looking at the file would:

- ``"row 2"``: a CSV record, counted like a spreadsheet does, so the header is row 1 and the first
  device is row 2;
- ``"line 17"``: a text line, 1-based;
- ``"file 0A1B_E0E0.pem"``, ``"file batch-2/0A1B_E0E0.pem"``: an archive member, by its path inside
  its archive; a path that repeats an earlier entry's, or is too long to quote whole, follows the
  entry's 1-based number: ``"file #2 0A1B_E0E0.pem"``, ``"file #17 …<end of the path>"`` (see
  :mod:`manifest_provider.vendors.infineon`);
- ``"entry 4 (uniqueId 0123…)"``: an element of a JSON array, 1-based, with the unsigned uniqueId.

Every ``error`` is one English sentence that starts with the locator, for example
``"row 3: the MAC column is empty."``.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Protocol

from layer_utils.cert_utils import KEY_SCAN_OVERLAP, ParsedCertificate, contains_private_key, load_certificate
from manifest_provider.limits import Limits


@dataclass(frozen=True)
class ManifestEntry:
    """One device of a manifest.

    ``ordinal`` is the 0-based position in manifest order; ``locator`` names the entry for people;
    ``certificate`` is the device certificate (None when ``error`` is set); ``vendor_thing_name`` is
    the vendor's default thing name (MAC, uniqueId, chip ID or CN; None when the vendor has none and
    the provider falls back to the CN or the fingerprint); ``error`` is the per-entry failure;
    ``intermediates`` are issuer certificates the entry carries (Microchip ``x5c[1:]``).
    """

    ordinal: int
    locator: str
    certificate: ParsedCertificate | None
    vendor_thing_name: str | None
    error: str | None = None
    intermediates: tuple[ParsedCertificate, ...] = ()


class ManifestFormatError(Exception):
    """The whole manifest is unusable; ``str(error)`` is the reason, one English sentence."""


@dataclass(frozen=True)
class ParseOptions:
    """Settings for one parse.

    ``bundle_type`` selects the Infineon bundle (``E0E0``, ``E0E1`` or ``E0E2``);
    ``microchip_verifiers`` are the trusted Microchip manifest-signer certificates;
    ``microchip_algorithms`` are the JWS ``alg`` values accepted (ES256 only by default);
    ``limits`` bounds what a parser reads; ``now`` is the clock for signer validity (current UTC
    time when None); entries before ordinal ``skip_before`` are yielded unread (:func:`isolated`), so
    a continuation does not parse again the certificates a previous invocation handled. A parse that
    skips follows one of the same object version that got that far, so the whole-file private-key
    scan (:func:`refuse_private_keys`) passed already and is not repeated.
    """

    bundle_type: str = "E0E0"
    microchip_verifiers: tuple[ParsedCertificate, ...] = ()
    limits: Limits = field(default_factory=Limits)
    now: datetime | None = None
    microchip_algorithms: tuple[str, ...] = ("ES256",)
    skip_before: int = 0


class VendorParser(Protocol):
    """A vendor manifest format: a name, an S3 key prefix, a sniffer and a streaming parser."""

    name: str
    prefix: str

    def sniff(self, head: bytes) -> bool:
        """Return True when ``head`` (the first bytes of a manifest) looks like this vendor's format."""
        ...

    def entries(self, source: BinaryIO, options: ParseOptions) -> Iterator[ManifestEntry]:
        """Yield the manifest's entries one at a time, in order.

        Args:
            source: A seekable binary file positioned anywhere (parsers rewind it).
            options: The settings for this parse.

        Yields:
            The entries, in manifest order.

        Raises:
            ManifestFormatError: The manifest as a whole cannot be used.

        """
        ...


def failed(ordinal: int, locator: str, reason: str) -> ManifestEntry:
    """Return a failed entry whose error is ``"<locator>: <reason>"`` (``reason`` ends with a period)."""
    return ManifestEntry(ordinal, locator, None, None, error=f"{locator}: {reason}")


def certificate_entry(
    ordinal: int, locator: str, data: bytes | str, vendor_thing_name: str | None
) -> ManifestEntry:
    """Read one certificate into an entry, or a failed entry naming the reason; never raises for bad data.

    Args:
        ordinal: The entry's 0-based position.
        locator: The entry's locator.
        data: The certificate: PEM, DER or base64 of either.
        vendor_thing_name: The vendor's identifier for the device, if any.

    Returns:
        The entry.

    """
    try:
        certificate = load_certificate(data)
    except ValueError as error:
        return failed(ordinal, locator, f"{str(error).rstrip('.')}.")
    return ManifestEntry(ordinal, locator, certificate, vendor_thing_name)


def isolated(
    ordinal: int, locator: str, build: Callable[[], ManifestEntry], skip_before: int = 0
) -> ManifestEntry:
    """Build one entry so that nothing it raises escapes: an unexpected error fails that entry only.

    Args:
        ordinal: The entry's 0-based position.
        locator: The entry's locator.
        build: The function that builds it.
        skip_before: Entries before this ordinal are not built (``ParseOptions.skip_before``).

    Returns:
        The built entry, a failed entry whose reason names the kind of error (never a parser dump), or
        for a skipped entry one with neither certificate nor error.

    """
    if ordinal < skip_before:
        return ManifestEntry(ordinal, locator, None, None)
    try:
        return build()
    except Exception as error:  # one entry's problem must never end the manifest
        return failed(ordinal, locator, f"the entry cannot be read ({type(error).__name__}).")


def guarded_entries(parser: VendorParser, source: BinaryIO, options: ParseOptions) -> Iterator[ManifestEntry]:
    """Yield a parser's entries; an unexpected error of the parser itself ends them as a format error.

    Args:
        parser: The parser.
        source: The manifest.
        options: The settings for this parse.

    Yields:
        The parser's entries.

    Raises:
        ManifestFormatError: The parser's own format errors and, in place of any other exception, one
            naming how many entries were read: a parser bug ends that manifest, never the function.

    """
    count = 0
    try:
        for entry in parser.entries(source, options):
            count += 1
            yield entry
    except ManifestFormatError:
        raise
    except Exception as error:  # a parser bug must end this manifest, never crash every retry
        raise ManifestFormatError(
            f"The manifest could not be read after entry {count} (an unexpected {type(error).__name__})."
        ) from None


def check_manifest_size(source: BinaryIO, limits: Limits, vendor: str) -> int:
    """Rewind ``source`` and check its size against ``limits.max_manifest_bytes``.

    Args:
        source: The manifest file.
        limits: The limits.
        vendor: The vendor's display name.

    Returns:
        The size in bytes.

    Raises:
        ManifestFormatError: The manifest is empty or larger than the limit.

    """
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    if size == 0:
        raise ManifestFormatError("The manifest is empty.")
    if size > limits.max_manifest_bytes:
        raise ManifestFormatError(
            f"The {vendor} manifest is {size} bytes, more than the limit of "
            f"{limits.max_manifest_bytes} bytes."
        )
    return size


def describe(text: str, width: int = 60) -> str:
    """Return ``text`` shortened to ``width`` characters for quoting in an error message."""
    flat = text.replace("\r", "\\r").replace("\n", "\\n")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@contextmanager
def text_view(
    source: BinaryIO, encoding: str, errors: str, newline: str | None = None
) -> Iterator[io.TextIOWrapper]:
    """Read ``source`` as text for the ``with`` block, then detach it: the binary file stays open.

    Args:
        source: The binary file.
        encoding: The text encoding.
        errors: How decoding errors are handled, as for :class:`io.TextIOWrapper`.
        newline: How line ends are translated, as for :class:`io.TextIOWrapper`.

    Yields:
        The text file over ``source``.

    """
    text = io.TextIOWrapper(source, encoding=encoding, errors=errors, newline=newline)
    try:
        yield text
    finally:
        text.detach()


@dataclass(frozen=True)
class Line:
    """One text line read by :func:`read_lines`.

    ``number`` is 1-based; ``data`` is the line without its end-of-line bytes, or None when the line
    was longer than the limit (its bytes were skipped without being kept).
    """

    number: int
    data: bytes | None


_SKIP_CHUNK = 64 * 1024


def read_lines(source: BinaryIO, max_line_bytes: int) -> Iterator[Line]:
    """Yield the lines of ``source`` from its current position, holding at most one line in memory.

    A UTF-8 byte order mark at the start of the file is dropped.

    Args:
        source: The binary file.
        max_line_bytes: The longest line accepted, without its end of line.

    Yields:
        The lines. An over-long line has ``data`` None and its bytes are skipped, so a 10 GB single
        line costs no memory.

    """
    number = 0
    while True:
        raw = source.readline(max_line_bytes + 2)
        if not raw:
            return
        number += 1
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        body = raw.rstrip(b"\r\n")
        if len(body) > max_line_bytes:
            while not raw.endswith(b"\n"):
                raw = source.readline(_SKIP_CHUNK)
                if not raw:
                    break
            yield Line(number, None)
            continue
        yield Line(number, body)


_SCAN_CHUNK = 1024 * 1024


def private_key_reason(where: str) -> str:
    """Return the reason refusing a manifest whose ``where`` (e.g. "The Espressif manifest") holds a key."""
    return (
        f"{where} contains private key material; the whole manifest is refused, "
        "and the key should be treated as compromised."
    )


def refuse_private_keys(source: BinaryIO, vendor: str, encoding: str = "utf-8") -> None:
    """Scan the whole manifest for private keys before any entry is yielded, then rewind it.

    Args:
        source: The seekable manifest.
        vendor: The vendor's display name.
        encoding: The text encoding; the scan decodes with replacement, so undecodable bytes cannot
            hide a key.

    Raises:
        ManifestFormatError: Private key material (see ``contains_private_key``) appears anywhere.

    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    source.seek(0)
    tail = b""
    while chunk := source.read(_SCAN_CHUNK):
        window = tail + decoder.decode(chunk).encode("utf-8")
        if contains_private_key(window):
            raise ManifestFormatError(private_key_reason(f"The {vendor} manifest"))
        tail = window[-KEY_SCAN_OVERLAP:]
    source.seek(0)
