"""Vendor parser plugins and format detection.

``PARSERS`` lists the parsers in sniffing order; :func:`get_parser` looks one up by name (the
``thingpress-vendor`` metadata override) and :func:`detect` picks one for an uploaded object: by the
first segment of its key (``microchip/``, ``infineon/``, ``espressif/``, ``generated/``; deeper
segments are not consulted, so ``uploads/microchip/x.json`` is sniffed), then by sniffing the first
bytes.
"""

from __future__ import annotations

from manifest_provider.vendors.base import (
    ManifestEntry,
    ManifestFormatError,
    ParseOptions,
    VendorParser,
    guarded_entries,
)
from manifest_provider.vendors.espressif import EspressifParser
from manifest_provider.vendors.generated import GeneratedParser
from manifest_provider.vendors.infineon import InfineonParser
from manifest_provider.vendors.microchip import MicrochipParser

__all__ = [
    "PARSERS",
    "ManifestEntry",
    "ManifestFormatError",
    "ParseOptions",
    "VendorParser",
    "detect",
    "get_parser",
    "guarded_entries",
    "parser_for_key",
]

PARSERS: tuple[VendorParser, ...] = (
    InfineonParser(),
    MicrochipParser(),
    EspressifParser(),
    GeneratedParser(),
)
"""Every parser, in the order :func:`detect` sniffs them."""

_BY_NAME = {parser.name: parser for parser in PARSERS}


def get_parser(name: str) -> VendorParser:
    """Return the parser called ``name`` (case-insensitive, surrounding spaces ignored).

    Raises:
        ValueError: There is no such parser; the message names the known vendors.

    """
    parser = _BY_NAME.get(name.strip().lower())
    if parser is None:
        known = ", ".join(sorted(_BY_NAME))
        raise ValueError(f"Unknown vendor {name!r}: use one of {known}.")
    return parser


def parser_for_key(key: str) -> VendorParser | None:
    """Return the parser whose prefix is the first segment of ``key``, or None when it is no vendor's."""
    first_segment = key.lstrip("/").split("/", 1)[0].lower() + "/"
    return next((parser for parser in PARSERS if parser.prefix == first_segment), None)


def detect(key: str, head: bytes) -> VendorParser:
    """Pick the parser for an uploaded manifest.

    The first path segment of the key decides when it is a vendor prefix; otherwise the content is
    sniffed.

    Args:
        key: The object key, not URL-encoded.
        head: The object's first bytes (a few KiB).

    Returns:
        The parser.

    Raises:
        ManifestFormatError: The object is empty or no parser recognises its format.

    """
    if not head:
        raise ManifestFormatError("The manifest is empty.")
    by_key = parser_for_key(key)
    if by_key is not None:
        return by_key
    for parser in PARSERS:
        if parser.sniff(head):
            return parser
    name = key.rsplit("/", 1)[-1]
    raise ManifestFormatError(
        f"Unrecognised manifest format: '{name}' is not a Microchip JSON, Infineon 7z, Espressif CSV or "
        "PEM/base64 certificate file, and its key has no vendor prefix."
    )
