"""Microchip's JWS entries: the signer lookup and the signature check.

An entry is accepted only when its protected header names an allowed algorithm (ES256 by default), a
trusted signer certificate matches both its ``kid`` (Subject Key Identifier) and ``x5t#S256``
(SHA-256 of the signer's DER), the signer is valid at the parse time and the signature verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from layer_utils.cert_utils import ParsedCertificate
from manifest_provider.limits import Limits
from manifest_provider.vendors.base import ParseOptions, describe
from manifest_provider.vendors.microchip_json import json_depth


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


@dataclass(frozen=True)
class Signer:
    """A trusted signer: its certificate, JWS ``kid`` and ``x5t#S256``, and its name for messages."""

    certificate: ParsedCertificate
    kid: str
    thumbprint: str
    name: str


def b64url_encode(data: bytes) -> str:
    """Return base64url text without padding, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; raise ``ValueError`` on anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def signer_kid(certificate: ParsedCertificate) -> str:
    """Return the JWS ``kid`` of a signer: base64url of its Subject Key Identifier.

    Without a SubjectKeyIdentifier extension, the identifier is derived from the public key (RFC 5280
    method 1).

    Raises:
        ValueError: The signer has neither a Subject Key Identifier nor a usable public key.

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


def trusted_signers(verifiers: tuple[ParsedCertificate, ...]) -> list[Signer]:
    """Return the signers an entry may name; a verifier without a usable ``kid`` is left out."""
    signers = []
    for cert in verifiers:
        try:
            kid = signer_kid(cert)
        except ValueError:
            continue  # such a signer can never match an entry's kid
        signers.append(Signer(cert, kid, signer_thumbprint(cert), cert.subject_cn or cert.subject))
    return signers


class EntryError(Exception):
    """A per-entry failure; ``str()`` is the reason (a sentence fragment ending with a period)."""


def decode_json_part(value: object, part: str, limits: Limits) -> dict[str, Any]:
    """Decode a base64url JSON object (the protected header or the payload)."""
    if not isinstance(value, str):
        raise EntryError(f"the {part} is missing or not a string.")
    try:
        text = b64url_decode(value).decode("utf-8")
    except (ValueError, binascii.Error):
        raise EntryError(f"the {part} is not base64url-encoded UTF-8 text.") from None
    if json_depth(text) > limits.max_json_depth:
        raise EntryError(f"the {part} is nested deeper than {limits.max_json_depth} levels.")
    try:
        decoded = json.loads(text)
    except ValueError:
        raise EntryError(f"the {part} is not valid JSON.") from None
    if not isinstance(decoded, dict):
        raise EntryError(f"the {part} is not a JSON object.")
    return decoded


def verify(
    entry: dict[str, Any], signers: list[Signer], options: ParseOptions, now: datetime
) -> dict[str, Any]:
    """Check one JWS entry's header, signer and signature; return the decoded payload."""
    protected = decode_json_part(entry.get("protected"), "protected header", options.limits)
    alg = protected.get("alg")
    if alg not in options.microchip_algorithms or alg not in _ALGORITHMS:
        allowed = ", ".join(options.microchip_algorithms)
        raise EntryError(
            f"the signature algorithm {describe(str(alg))!r} is not allowed (allowed: {allowed})."
        )
    kid, thumbprint = protected.get("kid"), protected.get("x5t#S256")
    signer = next((s for s in signers if s.kid == kid and s.thumbprint == thumbprint), None)
    if signer is None:
        raise EntryError(
            f"no trusted signer matches kid {describe(str(kid))} and x5t#S256 {describe(str(thumbprint))}."
        )
    certificate = signer.certificate
    if not certificate.not_before <= now <= certificate.not_after:
        raise EntryError(
            f"the signer '{signer.name}' is not valid at {now:%Y-%m-%d %H:%M} UTC (valid from "
            f"{certificate.not_before:%Y-%m-%d} to {certificate.not_after:%Y-%m-%d})."
        )
    algorithm = _ALGORITHMS[alg]
    public_key = certificate.public_key
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, algorithm.curve
    ):
        raise EntryError(f"the signer '{signer.name}' does not hold a key for {alg}.")
    signature_text, payload_text = entry.get("signature"), entry.get("payload")
    if not isinstance(signature_text, str) or not isinstance(payload_text, str):
        raise EntryError("the signature or payload is missing or not a string.")
    try:
        raw = b64url_decode(signature_text)
    except (ValueError, binascii.Error):
        raise EntryError("the signature is not base64url.") from None
    if len(raw) != 2 * algorithm.size:
        raise EntryError(f"the {alg} signature is {len(raw)} bytes instead of {2 * algorithm.size}.")
    signature = encode_dss_signature(
        int.from_bytes(raw[: algorithm.size], "big"), int.from_bytes(raw[algorithm.size :], "big")
    )
    signed = f"{entry['protected']}.{payload_text}".encode("ascii", errors="replace")
    try:
        public_key.verify(signature, signed, ec.ECDSA(algorithm.hash))
    except InvalidSignature:
        raise EntryError(f"the signature does not verify with signer '{signer.name}'.") from None
    return decode_json_part(payload_text, "payload", options.limits)
