"""Microchip manifests: a JSON array of JWS entries in flattened JSON serialization.

Each element is ``{"payload", "protected", "header": {"uniqueId"}, "signature"}``. An entry is
accepted only when its protected header names an allowed algorithm (ES256 by default), a trusted
signer certificate matches both its ``kid`` (Subject Key Identifier) and ``x5t#S256`` (SHA-256 of the
signer's DER), the signer is valid at the parse time, the signature verifies, and the signed
``uniqueId`` equals the unsigned ``header.uniqueId``. The thing name is the signed ``uniqueId``; the
device certificate is ``x5c[0]`` of the slot "0" key of ``payload.publicKeySet`` and ``x5c[1:]`` are
its issuers. Entries are located as ``entry N (uniqueId X)``, N counted from 1.

The array is read one element at a time, so memory stays bounded by the largest entry
(``Limits.max_entry_bytes``) whatever the manifest's size. Elements yielded before a truncation or a
syntax error between elements stand; the problem then ends the parse as a ``ManifestFormatError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from layer_utils.cert_utils import ParsedCertificate, load_certificate
from manifest_provider.limits import Limits
from manifest_provider.vendors.base import (
    ManifestEntry,
    ManifestFormatError,
    ParseOptions,
    check_manifest_size,
    describe,
    failed,
    isolated,
    refuse_private_keys,
)

_VENDOR = "Microchip"
_CHUNK = 64 * 1024
# A complete JSON string, a bracket, or a lone quote (a string the buffer does not hold entirely yet).
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"', re.DOTALL)
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_SCALAR = re.compile(r"[^,\]\s]+")


@dataclass(frozen=True)
class _Algorithm:
    hash: hashes.HashAlgorithm
    curve: type[ec.EllipticCurve]
    size: int


_ALGORITHMS = {
    "ES256": _Algorithm(hashes.SHA256(), ec.SECP256R1, 32),
    "ES384": _Algorithm(hashes.SHA384(), ec.SECP384R1, 48),
    "ES512": _Algorithm(hashes.SHA512(), ec.SECP521R1, 66),
}


def json_depth(text: str) -> int:
    """Return the nesting depth of a complete JSON text (0 for a scalar), without parsing it."""
    depth = deepest = 0
    for match in _TOKEN.finditer(text):
        symbol = match.group()
        if symbol in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif symbol in "]}":
            depth -= 1
    return deepest


class _ArrayReader:
    """Split a top-level JSON array into element texts, one at a time.

    There is no streaming JSON parser in the pinned dependencies, so this scans for the end of each
    element with a regular expression and hands only that element to ``json.loads``.
    """

    def __init__(self, text: io.TextIOBase, limits: Limits) -> None:
        self._text = text
        self._limits = limits
        self._buf = ""
        self._pos = 0
        self._eof = False
        self.count = 0

    def _more(self, keep_from: int) -> bool:
        """Append a chunk, dropping the buffer before ``keep_from``; return False at end of input."""
        if self._eof:
            return False
        chunk = self._text.read(_CHUNK)
        if not chunk:
            self._eof = True
            return False
        self._buf = self._buf[keep_from:] + chunk
        self._pos -= keep_from
        return True

    def _peek(self) -> str:
        """Skip whitespace and return the next character ("" at end of input)."""
        while True:
            match = _WHITESPACE.match(self._buf, self._pos)
            if match is None:  # the pattern matches the empty string, so this cannot happen
                raise RuntimeError("The whitespace pattern failed to match.")
            self._pos = match.end()
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._more(self._pos):
                return ""

    def _truncated(self) -> ManifestFormatError:
        return ManifestFormatError(
            f"The {_VENDOR} manifest is truncated: entry {self.count + 1} is incomplete at the end of "
            "the file."
        )

    def _too_large(self) -> ManifestFormatError:
        return ManifestFormatError(
            f"Entry {self.count + 1} of the {_VENDOR} manifest is larger than "
            f"{self._limits.max_entry_bytes} bytes; the rest of the manifest is not read."
        )

    def _element(self) -> tuple[str, int]:
        """Return the next element's text and nesting depth; the buffer is positioned after it."""
        start = self._pos
        first = self._buf[start]
        if first not in "[{":
            pattern = _TOKEN if first == '"' else _SCALAR
            while True:
                match = pattern.match(self._buf, start)
                if match is None:
                    raise ManifestFormatError(
                        f"The {_VENDOR} manifest is not valid JSON: entry {self.count + 1} starts with "
                        f"'{describe(first)}'."
                    )
                usable = match.group() != '"'
                if usable and (match.end() < len(self._buf) or self._eof):
                    self._pos = match.end()
                    return match.group(), 0
                if len(self._buf) - start > self._limits.max_entry_bytes:
                    raise self._too_large()
                if not self._more(start):
                    if usable:
                        self._pos = match.end()
                        return match.group(), 0
                    raise self._truncated()
                start = 0
        depth = deepest = 0
        scan = start
        while True:
            match = _TOKEN.search(self._buf, scan)
            if match is None or match.group() == '"':
                scan = len(self._buf) if match is None else match.start()
            else:
                symbol = match.group()
                scan = match.end()
                if symbol in "[{":
                    depth += 1
                    deepest = max(deepest, depth)
                elif symbol in "]}":
                    depth -= 1
                    if depth == 0:
                        self._pos = scan
                        return self._buf[start:scan], deepest
                continue
            if scan - start > self._limits.max_entry_bytes:
                raise self._too_large()
            if not self._more(start):
                raise self._truncated()
            scan -= start
            start = 0

    def elements(self) -> Iterator[tuple[str, int]]:
        """Yield each element's text and depth; raise ``ManifestFormatError`` on structural errors."""
        opening = self._peek()
        if opening != "[":
            found = "nothing but whitespace" if not opening else f"'{describe(opening)}'"
            raise ManifestFormatError(
                f"The {_VENDOR} manifest must be a JSON array of JWS entries, but it starts with {found}."
            )
        self._pos += 1
        if self._peek() == "]":
            self._pos += 1
        else:
            while True:
                if not self._peek():
                    raise self._truncated()
                text, depth = self._element()
                if len(text) > self._limits.max_entry_bytes:
                    raise self._too_large()
                self.count += 1
                yield text, depth
                separator = self._peek()
                self._pos += 1
                if separator == "]":
                    break
                if separator != ",":
                    if not separator:
                        raise self._truncated()
                    raise ManifestFormatError(
                        f"The {_VENDOR} manifest is not valid JSON after entry {self.count}: expected ',' "
                        f"or ']' but found '{describe(separator)}'."
                    )
                if self._peek() == "]":
                    raise ManifestFormatError(
                        f"The {_VENDOR} manifest is not valid JSON: a comma follows the last entry."
                    )
        if self._peek():
            raise ManifestFormatError(f"The {_VENDOR} manifest has text after the closing ']' of the array.")


@dataclass(frozen=True)
class _Signer:
    certificate: ParsedCertificate
    kid: str
    thumbprint: str
    name: str


def b64url_encode(data: bytes) -> str:
    """Return base64url text without padding, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; raise ``ValueError`` on anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def signer_kid(certificate: ParsedCertificate) -> str:
    """Return the JWS ``kid`` of a signer: base64url of its Subject Key Identifier.

    Takes the signer certificate; without a SubjectKeyIdentifier extension, the identifier is derived
    from the public key (RFC 5280 method 1). Raises ``ValueError`` when neither is available.
    """
    digest = certificate.subject_key_id
    if digest is None:
        key = certificate.public_key
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise ValueError("the signer has neither a Subject Key Identifier nor a usable public key")
        digest = x509.SubjectKeyIdentifier.from_public_key(key).digest
    return b64url_encode(digest)


def signer_thumbprint(certificate: ParsedCertificate) -> str:
    """Return the JWS ``x5t#S256`` of a signer: base64url of the SHA-256 of its DER encoding."""
    return b64url_encode(hashlib.sha256(certificate.der).digest())


def _signers(verifiers: tuple[ParsedCertificate, ...]) -> list[_Signer]:
    signers = []
    for cert in verifiers:
        try:
            kid = signer_kid(cert)
        except ValueError:
            continue  # such a signer can never match an entry's kid
        signers.append(_Signer(cert, kid, signer_thumbprint(cert), cert.subject_cn or cert.subject))
    return signers


class _EntryError(Exception):
    """A per-entry failure; ``str()`` is the reason (a sentence fragment ending with a period)."""


def _decode_json_part(value: object, part: str, limits: Limits) -> dict[str, Any]:
    """Decode a base64url JSON object (the protected header or the payload)."""
    if not isinstance(value, str):
        raise _EntryError(f"the {part} is missing or not a string.")
    try:
        text = _b64url_decode(value).decode("utf-8")
    except (ValueError, binascii.Error):
        raise _EntryError(f"the {part} is not base64url-encoded UTF-8 text.") from None
    if json_depth(text) > limits.max_json_depth:
        raise _EntryError(f"the {part} is nested deeper than {limits.max_json_depth} levels.")
    try:
        decoded = json.loads(text)
    except ValueError:
        raise _EntryError(f"the {part} is not valid JSON.") from None
    if not isinstance(decoded, dict):
        raise _EntryError(f"the {part} is not a JSON object.")
    return decoded


def _verify(
    entry: dict[str, Any], signers: list[_Signer], options: ParseOptions, now: datetime
) -> dict[str, Any]:
    """Check one JWS entry's header, signer and signature; return the decoded payload."""
    protected = _decode_json_part(entry.get("protected"), "protected header", options.limits)
    alg = protected.get("alg")
    if alg not in options.microchip_algorithms or alg not in _ALGORITHMS:
        allowed = ", ".join(options.microchip_algorithms)
        raise _EntryError(
            f"the signature algorithm {describe(str(alg))!r} is not allowed (allowed: {allowed})."
        )
    kid, thumbprint = protected.get("kid"), protected.get("x5t#S256")
    signer = next((s for s in signers if s.kid == kid and s.thumbprint == thumbprint), None)
    if signer is None:
        raise _EntryError(
            f"no trusted signer matches kid {describe(str(kid))} and x5t#S256 {describe(str(thumbprint))}."
        )
    certificate = signer.certificate
    if not certificate.not_before <= now <= certificate.not_after:
        raise _EntryError(
            f"the signer '{signer.name}' is not valid at {now:%Y-%m-%d %H:%M} UTC (valid from "
            f"{certificate.not_before:%Y-%m-%d} to {certificate.not_after:%Y-%m-%d})."
        )
    algorithm = _ALGORITHMS[alg]
    public_key = certificate.public_key
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, algorithm.curve
    ):
        raise _EntryError(f"the signer '{signer.name}' does not hold a key for {alg}.")
    signature_text, payload_text = entry.get("signature"), entry.get("payload")
    if not isinstance(signature_text, str) or not isinstance(payload_text, str):
        raise _EntryError("the signature or payload is missing or not a string.")
    try:
        raw = _b64url_decode(signature_text)
    except (ValueError, binascii.Error):
        raise _EntryError("the signature is not base64url.") from None
    if len(raw) != 2 * algorithm.size:
        raise _EntryError(f"the {alg} signature is {len(raw)} bytes instead of {2 * algorithm.size}.")
    signature = encode_dss_signature(
        int.from_bytes(raw[: algorithm.size], "big"), int.from_bytes(raw[algorithm.size :], "big")
    )
    signed = f"{entry['protected']}.{payload_text}".encode("ascii", errors="replace")
    try:
        public_key.verify(signature, signed, ec.ECDSA(algorithm.hash))
    except InvalidSignature:
        raise _EntryError(f"the signature does not verify with signer '{signer.name}'.") from None
    return _decode_json_part(payload_text, "payload", options.limits)


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
        raise _EntryError("no certificate in manifest entry.")
    if not isinstance(chain, list) or not all(isinstance(item, str) for item in chain):
        raise _EntryError("the x5c of slot 0 is not a list of base64 strings.")
    certificates: list[ParsedCertificate] = []
    for index, item in enumerate(chain):
        try:
            der = base64.b64decode(item, validate=True)
        except (ValueError, binascii.Error):
            raise _EntryError(f"x5c[{index}] is not base64 text.") from None
        try:
            certificates.append(load_certificate(der))
        except ValueError as error:
            raise _EntryError(f"x5c[{index}] is not a readable certificate: {error}") from None
    _check_slot_key(slot or {}, certificates[0])
    return certificates[0], tuple(certificates[1:])


def _check_slot_key(jwk: dict[str, Any], certificate: ParsedCertificate) -> None:
    """Check that the signed slot "0" key, when it carries coordinates, is the certificate's key."""
    x_text, y_text = jwk.get("x"), jwk.get("y")
    if not isinstance(x_text, str) or not isinstance(y_text, str):
        return
    public_key = certificate.public_key
    try:
        x, y = (int.from_bytes(_b64url_decode(value), "big") for value in (x_text, y_text))
    except (ValueError, binascii.Error):
        raise _EntryError("the slot 0 key coordinates are not base64url.") from None
    numbers = public_key.public_numbers() if isinstance(public_key, ec.EllipticCurvePublicKey) else None
    if numbers is None or (numbers.x, numbers.y) != (x, y):
        raise _EntryError("the device certificate's public key is not the signed slot 0 key.")


def _entry(
    ordinal: int, text: str, depth: int, *, signers: list[_Signer], options: ParseOptions, now: datetime
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
        payload = _verify(element, signers, options, now)
        unique_id = payload.get("uniqueId")
        if not isinstance(unique_id, str) or not unique_id:
            raise _EntryError("the signed payload has no uniqueId.")
        if header_id is not None and header_id != unique_id:
            raise _EntryError(
                f"the entry was tampered with: header uniqueId {describe(str(header_id), 40)} does not "
                f"match the signed uniqueId {describe(unique_id, 40)}."
            )
        certificate, intermediates = _certificates(payload)
    except _EntryError as error:
        return failed(ordinal, locator, str(error))
    return ManifestEntry(ordinal, locator, certificate, unique_id, intermediates=intermediates)


def _entries(source: BinaryIO, options: ParseOptions) -> Iterator[ManifestEntry]:
    check_manifest_size(source, options.limits, _VENDOR)
    refuse_private_keys(source, _VENDOR)
    now = options.now if options.now is not None else datetime.now(UTC)
    signers = _signers(options.microchip_verifiers)
    text = io.TextIOWrapper(source, encoding="utf-8-sig", errors="strict")
    reader = _ArrayReader(text, options.limits)
    try:
        for ordinal, (element, depth) in enumerate(reader.elements()):
            yield isolated(
                ordinal,
                f"entry {ordinal + 1}",
                partial(_entry, ordinal, element, depth, signers=signers, options=options, now=now),
            )
    except UnicodeError:
        raise ManifestFormatError(
            f"The {_VENDOR} manifest is not UTF-8 text (after entry {reader.count})."
        ) from None
    finally:
        text.detach()


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

        Raises ``ManifestFormatError`` when the file is empty, over-sized, not UTF-8, not a JSON
        array, truncated, or holds an entry larger than ``Limits.max_entry_bytes``.
        """
        yield from _entries(source, options)
