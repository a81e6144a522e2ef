"""Public face of the certificate helpers: loading, validation, thing names, ARNs, private keys.

A thin module over :mod:`layer_utils.certificates` (:class:`ParsedCertificate`, reading DER),
:mod:`layer_utils.cert_loading` (PEM, DER and base64 forms, ``load_certificate``, ``as_parsed``),
:mod:`layer_utils.cert_validation` (``validate_certificate``), :mod:`layer_utils.name_sources`
(thing-name candidates) and :mod:`layer_utils.iot_names` (the name rules); it holds the ARN helpers,
private-key detection and ``format_certificate`` itself. See docs/ARCHITECTURE.md, "Layer modules".
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from layer_utils.cert_loading import (
    CERTIFICATE_LABELS,
    CertificateInput,
    as_parsed,
    load_certificate,
    load_certificates,
)
from layer_utils.cert_validation import (
    CertificateProblem,
    ProblemCode,
    ValidationResult,
    validate_certificate,
)
from layer_utils.certificates import ParsedCertificate
from layer_utils.iot_names import (
    THING_NAME_MAX_LENGTH,
    THING_NAME_PATTERN,
    is_valid_thing_name,
    validate_thing_name,
)
from layer_utils.name_sources import DEFAULT_NAME_SOURCES, NameCandidate, name_candidates, parse_name_sources

__all__ = [
    "CERTIFICATE_LABELS",
    "DEFAULT_NAME_SOURCES",
    "KEY_SCAN_OVERLAP",
    "THING_NAME_MAX_LENGTH",
    "THING_NAME_PATTERN",
    "CertificateInput",
    "CertificateProblem",
    "NameCandidate",
    "ParsedCertificate",
    "ProblemCode",
    "ValidationResult",
    "as_parsed",
    "certificate_arn",
    "contains_private_key",
    "format_certificate",
    "is_valid_thing_name",
    "load_certificate",
    "load_certificates",
    "name_candidates",
    "parse_function_arn",
    "parse_name_sources",
    "thing_arn",
    "validate_certificate",
    "validate_thing_name",
]


def format_certificate(cert: CertificateInput) -> str:
    r"""Return a certificate as canonical PEM text of its exact DER.

    Args:
        cert: a parsed or ``cryptography`` certificate, or data ``load_certificate`` reads.

    Returns:
        ``-----BEGIN CERTIFICATE-----\n``, the DER in 64-column base64, the END line and a newline.

    Raises:
        ValueError: the data is not a certificate.

    """
    return as_parsed(cert).pem()


# ARNs -----------------------------------------------------------------------------------------------

_FUNCTION_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:[^:\s]+(:[^:\s]+)?"
)


def parse_function_arn(arn: str) -> tuple[str, str, str]:
    """Split a Lambda function ARN (``context.invoked_function_arn``) into its location.

    Args:
        arn: ``arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>]``.

    Returns:
        ``(partition, region, account)``.

    Raises:
        ValueError: naming the ARN, when it is malformed.

    """
    match = _FUNCTION_ARN.fullmatch(arn)
    if match is None:
        raise ValueError(
            f"Function ARN {arn!r} is not of the form "
            "arn:<partition>:lambda:<region>:<12-digit account>:function:<name>."
        )
    return match["partition"], match["region"], match["account"]


def certificate_arn(fingerprint: str, *, region: str, account: str, partition: str = "aws") -> str:
    """Return the AWS IoT certificate ARN for a certificate ID (its SHA-256 fingerprint)."""
    return f"arn:{partition}:iot:{region}:{account}:cert/{fingerprint}"


def thing_arn(thing_name: str, *, region: str, account: str, partition: str = "aws") -> str:
    """Return the AWS IoT thing ARN for a thing name."""
    return f"arn:{partition}:iot:{region}:{account}:thing/{thing_name}"


# Private keys ---------------------------------------------------------------------------------------

KEY_SCAN_OVERLAP = 16 * 1024
"""Bytes a chunked scan carries into the next window, so a key cut by a chunk boundary is seen whole
in one window: more than the base64 of an 8192-bit RSA key wrapped in lines."""

_PRIVATE_KEY_PEM = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PUTTY_KEY = b"PuTTY-User-Key-File-"


def _base64_forms(needle: bytes) -> tuple[bytes, ...]:
    """Return the base64 text that ``needle`` always produces, for each of its 3 byte alignments."""
    forms = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + needle)
        first = -(-8 * offset // 6)
        last = 8 * (offset + len(needle)) // 6
        forms.append(encoded[first:last])
    return tuple(forms)


# No library scans text for base64-wrapped keys (the generated format is base64 of PEM per line).
_KEY_BASE64 = _base64_forms(b"PRIVATE KEY-----") + _base64_forms(b"openssh-key-v1\0")
_B64 = rb"[A-Za-z0-9+/]"
# Where base64 of a DER SEQUENCE may start: "M" after a non-base64 character, then 23 more (18 bytes).
# The literal comes first so that the regex engine jumps from one "M" to the next. "MII???CC" is
# 30 82 ?? ?? 30 82: a SEQUENCE of 256 bytes or more opening another: a certificate, never a key.
_DER_START = re.compile(rb"M(?<![A-Za-z0-9+/]M)(?!II" + _B64 + rb"{3}CC)" + _B64 + rb"{23}")
# The base64 from there on, possibly wrapped in lines broken by real or JSON-escaped line breaks.
_RUN = re.compile(rb"(?:" + _B64 + rb"|=|\r|\n|\\r|\\n|[ \t])*")
_MAX_KEY_BASE64 = KEY_SCAN_OVERLAP
_DER_LENGTH_BYTES = {0x81: 2, 0x82: 3, 0x83: 4}  # a long-form DER length's bytes, by its first byte


def _unwrap(run: bytes) -> bytes:
    """Return base64 ``run`` without its (real or JSON-escaped) line breaks and indentation."""
    if b"\\" in run:
        run = run.replace(b"\\r", b"").replace(b"\\n", b"")
    return run.translate(None, b"\r\n \t")


def _sequence(der: bytes) -> tuple[int, bytes]:
    """Return the encoded size of the SEQUENCE ``der`` starts with and what follows its header.

    Returns ``(0, b"")`` when ``der`` does not start with a SEQUENCE.
    """
    if len(der) < 2 or der[0] != 0x30:
        return 0, b""
    if der[1] < 0x80:
        return 2 + der[1], der[2:]
    width = _DER_LENGTH_BYTES.get(der[1])
    if width is None:
        return 0, b""
    return 1 + width + int.from_bytes(der[2 : 1 + width]), der[1 + width :]


def _key_shaped(der: bytes) -> bool:
    """Return whether DER starts as a private key does; certificates do not.

    PKCS#1, PKCS#8 and SEC1 keys open their SEQUENCE with INTEGER 0 or 1; an encrypted PKCS#8 key
    with an AlgorithmIdentifier (SEQUENCE, OID), as a public key does, which the library tells apart.
    """
    body = _sequence(der)[1]
    return body[:3] in {b"\x02\x01\x00", b"\x02\x01\x01"} or _sequence(body)[1][:1] == b"\x06"


def _decode(run: bytes) -> bytes:
    """Decode the whole 4-character groups of base64 ``run`` (b"" when its padding is misplaced)."""
    try:
        return base64.b64decode(run[: len(run) // 4 * 4])
    except binascii.Error:
        return b""


def _is_der_private_key(raw: bytes, start: int) -> bool:
    """Return whether the base64 at ``start`` (wrapped or not) is a DER private key, plain or encrypted.

    Only what the outer SEQUENCE's length covers is decoded, so lines that follow do not matter.
    """
    text = _RUN.match(raw, start, start + _MAX_KEY_BASE64 + 1024)
    der = _decode(_unwrap(text.group() if text else b""))
    size = _sequence(der)[0]
    try:
        serialization.load_der_private_key(der[:size], password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        return True
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def contains_private_key(data: bytes | str) -> bool:
    """Return whether the data contains private key material in a common encoding.

    Finds any ``-----BEGIN ... PRIVATE KEY-----`` header (PKCS#8 plain or encrypted, RSA, EC, DSA,
    OpenSSH), PuTTY key files, and in base64 (single-line or wrapped, also by JSON-escaped line
    breaks): the PEM header or an OpenSSH key body, and PKCS#1, PKCS#8 (plain or encrypted) or SEC1
    DER, recognised by ``cryptography`` once the first 18 bytes look like a key (so a certificate is
    decoded no further).

    Args:
        data: manifest content.

    Returns:
        Whether private key material was found.

    """
    raw = data.encode("utf-8", errors="replace") if isinstance(data, str) else bytes(data)
    if _PRIVATE_KEY_PEM.search(raw) is not None or _PUTTY_KEY in raw:
        return True
    unwrapped = _unwrap(raw)  # joining every line is harmless: the forms hold no line break
    if any(form in unwrapped for form in _KEY_BASE64):
        return True
    return any(
        _key_shaped(base64.b64decode(match.group())) and _is_der_private_key(raw, match.start())
        for match in _DER_START.finditer(raw)
    )
