"""Microchip manifests: a JSON array of JWS entries in flattened JSON serialization.

Each element is ``{"payload", "protected", "header": {"uniqueId"}, "signature"}``. An entry is
accepted only when its signature checks out (see :mod:`manifest_provider.vendors.microchip_jws`) and
the signed ``uniqueId`` equals the unsigned ``header.uniqueId``. The thing name is the signed
``uniqueId``; the device certificate is ``x5c[0]`` of the slot "0" key of ``payload.publicKeySet``
and ``x5c[1:]`` are its issuers. Entries are located as ``entry N (uniqueId X)``, N counted from 1.

The array is read one element at a time (see :mod:`manifest_provider.vendors.microchip_json`), so
memory stays bounded by the largest entry (``Limits.max_entry_bytes``) whatever the manifest's size.
Elements yielded before a truncation or a syntax error between elements stand; the problem then ends
the parse as a ``ManifestFormatError``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric import ec

from layer_utils.cert_utils import ParsedCertificate, load_certificate
from manifest_provider.vendors.base import (
    ManifestEntry,
    ManifestFormatError,
    ParseOptions,
    check_manifest_size,
    describe,
    failed,
    isolated,
    refuse_private_keys,
    text_view,
)
from manifest_provider.vendors.microchip_json import VENDOR, ArrayReader
from manifest_provider.vendors.microchip_jws import (
    EntryError,
    Signer,
    b64url_decode,
    trusted_signers,
    verify,
)


def _certificates(
    payload: dict[str, Any],
) -> tuple[ParsedCertificate, tuple[ParsedCertificate, ...]]:
    """Return the device certificate and its issuers from the slot "0" key's ``x5c``."""
    key_set = payload.get("publicKeySet")
    keys = key_set.get("keys") if isinstance(key_set, dict) else None
    slot = (
        next(
            (key for key in keys if isinstance(key, dict) and key.get("kid") == "0"),
            None,
        )
        if isinstance(keys, list)
        else None
    )
    chain = slot.get("x5c") if slot is not None else None
    if not chain:
        raise EntryError("no certificate in manifest entry.")
    if not isinstance(chain, list) or not all(isinstance(item, str) for item in chain):
        raise EntryError("the x5c of slot 0 is not a list of base64 strings.")
    certificates: list[ParsedCertificate] = []
    for index, item in enumerate(chain):
        try:
            der = base64.b64decode(item, validate=True)
        except (ValueError, binascii.Error):
            raise EntryError(f"x5c[{index}] is not base64 text.") from None
        try:
            certificates.append(load_certificate(der))
        except ValueError as error:
            raise EntryError(f"x5c[{index}] is not a readable certificate: {error}") from None
    _check_slot_key(slot or {}, certificates[0])
    return certificates[0], tuple(certificates[1:])


def _check_slot_key(jwk: dict[str, Any], certificate: ParsedCertificate) -> None:
    """Check that the signed slot "0" key, when it carries coordinates, is the certificate's key."""
    x_text, y_text = jwk.get("x"), jwk.get("y")
    if not isinstance(x_text, str) or not isinstance(y_text, str):
        return
    public_key = certificate.public_key
    try:
        x, y = (int.from_bytes(b64url_decode(value), "big") for value in (x_text, y_text))
    except (ValueError, binascii.Error):
        raise EntryError("the slot 0 key coordinates are not base64url.") from None
    numbers = public_key.public_numbers() if isinstance(public_key, ec.EllipticCurvePublicKey) else None
    if numbers is None or (numbers.x, numbers.y) != (x, y):
        raise EntryError("the device certificate's public key is not the signed slot 0 key.")


def _entry(
    ordinal: int, text: str, depth: int, *, signers: list[Signer], options: ParseOptions, now: datetime
) -> ManifestEntry:
    """Turn one array element into an entry or a failed entry naming the reason."""
    locator = f"entry {ordinal + 1}"
    if depth + 1 > options.limits.max_json_depth:
        return failed(
            ordinal, locator, f"the entry is nested deeper than {options.limits.max_json_depth} levels."
        )
    try:
        element = json.loads(text)
    except ValueError as error:
        return failed(ordinal, locator, f"the entry is not valid JSON ({error}).")
    if not isinstance(element, dict):
        return failed(ordinal, locator, "the entry is not a JSON object.")
    header = element.get("header")
    header_id = header.get("uniqueId") if isinstance(header, dict) else None
    if isinstance(header_id, str):
        locator = f"{locator} (uniqueId {describe(header_id, 40)})"
    try:
        payload = verify(element, signers, options, now)
        unique_id = payload.get("uniqueId")
        if not isinstance(unique_id, str) or not unique_id:
            raise EntryError("the signed payload has no uniqueId.")
        if header_id is not None and header_id != unique_id:
            raise EntryError(
                f"the entry was tampered with: header uniqueId {describe(str(header_id), 40)} does not "
                f"match the signed uniqueId {describe(unique_id, 40)}."
            )
        certificate, intermediates = _certificates(payload)
    except EntryError as error:
        return failed(ordinal, locator, str(error))
    return ManifestEntry(ordinal, locator, certificate, unique_id, intermediates=intermediates)


def _entries(source: BinaryIO, options: ParseOptions) -> Iterator[ManifestEntry]:
    check_manifest_size(source, options.limits, VENDOR)
    if not options.skip_before:  # else an earlier run of this object version passed the scan
        refuse_private_keys(source, VENDOR)
    now = options.now if options.now is not None else datetime.now(UTC)
    signers = trusted_signers(options.microchip_verifiers)
    with text_view(source, "utf-8-sig", "strict") as text:
        reader = ArrayReader(text, options.limits)
        try:
            for ordinal, (element, depth) in enumerate(reader.elements()):
                yield isolated(
                    ordinal,
                    f"entry {ordinal + 1}",
                    partial(_entry, ordinal, element, depth, signers=signers, options=options, now=now),
                    options.skip_before,
                )
        except UnicodeError:
            raise ManifestFormatError(
                f"The {VENDOR} manifest is not UTF-8 text (after entry {reader.count})."
            ) from None


class MicrochipParser:
    """Parser for Microchip JWS manifests (TrustFLEX, Trust&GO)."""

    name = "microchip"
    prefix = "microchip/"

    def sniff(self, head: bytes) -> bool:
        """Return True when ``head`` starts a JSON array whose first object has JWS members."""
        text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
        if not text.startswith(b"["):
            return False
        return text[1:].lstrip().startswith(b"{") and (b'"protected"' in text or b'"payload"' in text)

    def entries(self, source: BinaryIO, options: ParseOptions) -> Iterator[ManifestEntry]:
        """Yield one entry per JWS element; see the module docstring for the checks made.

        A ``ManifestFormatError`` ends the entries when the file is empty, over-sized, not UTF-8, not
        a JSON array, truncated, or holds an entry larger than ``Limits.max_entry_bytes``.
        """
        yield from _entries(source, options)
