"""Certificate loading: the forms vendors ship (PEM text or bytes, DER, base64 of either).

Public through :mod:`layer_utils.cert_utils`.
"""

from __future__ import annotations

import base64
import binascii
import re

from asn1crypto import pem as asn1_pem
from cryptography import x509

from layer_utils.certificates import ParsedCertificate, read_der, unreadable

CERTIFICATE_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"})
"""The PEM labels that hold a certificate (the legacy ``X509`` and OpenSSL's ``TRUSTED`` forms too)."""
_PEM_ANY = b"-----BEGIN "
_DER_SEQUENCE = b"\x30"
_WHITESPACE = re.compile(rb"\s+")


def _decode_base64(raw: bytes) -> bytes | None:
    compact = _WHITESPACE.sub(b"", raw)
    compact += b"=" * (-len(compact) % 4)
    for alphabet in (None, b"-_"):
        try:
            return base64.b64decode(compact, altchars=alphabet, validate=True)
        except binascii.Error:
            continue
    return None


def _pem_blocks(raw: bytes) -> list[bytes]:
    try:
        blocks = list(asn1_pem.unarmor(raw[raw.index(_PEM_ANY) :], multiple=True))
    except ValueError:
        raise ValueError(unreadable("the PEM data is malformed")) from None
    ders = [der for label, _headers, der in blocks if label in CERTIFICATE_LABELS]
    if not ders:
        raise ValueError(unreadable("the PEM data holds no CERTIFICATE block"))
    return ders


def _load_all(raw: bytes, *, allow_base64: bool, first_only: bool) -> list[ParsedCertificate]:
    """Read every certificate in PEM data, or the one in DER data, or either one base64-encoded.

    DER is read as given: stripping "whitespace" would corrupt DER whose last bytes happen to be
    0x09-0x0d or 0x20. When DER cannot be read and base64 does not help either, the DER reason is
    the one given.

    Returns:
        The certificates.

    Raises:
        ValueError: the data cannot be read.

    """
    if _PEM_ANY in raw:
        blocks = _pem_blocks(raw)
        return [read_der(der) for der in (blocks[:1] if first_only else blocks)]
    der_error: ValueError | None = None
    if raw[:1] == _DER_SEQUENCE:
        try:
            return [read_der(raw)]
        except ValueError as error:
            if not allow_base64:
                raise
            der_error = error
    if allow_base64:
        decoded = _decode_base64(raw)
        if decoded:
            try:
                return _load_all(decoded, allow_base64=False, first_only=first_only)
            except ValueError:
                if der_error is None:
                    raise
    if der_error is not None:
        raise der_error
    raise ValueError(unreadable("the data is neither PEM, DER nor base64 of either"))


def _load_data(data: str | bytes, *, first_only: bool) -> list[ParsedCertificate]:
    if isinstance(data, str):
        raw = data.encode("utf-8", errors="replace")
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise ValueError(unreadable(f"expected text or bytes, got {type(data).__name__}"))
    stripped = raw.strip()
    if not stripped:
        raise ValueError(unreadable("the data is empty"))
    if raw[:1] == _DER_SEQUENCE:
        try:
            return [read_der(raw)]
        except ValueError as error:
            try:  # not DER after all? Base64 text may start with "0".
                return _load_all(stripped, allow_base64=True, first_only=first_only)
            except ValueError:
                raise error from None
    return _load_all(stripped, allow_base64=True, first_only=first_only)


def load_certificate(data: str | bytes) -> ParsedCertificate:
    """Read one certificate, tolerating the ways real device certificates bend DER and X.509.

    Args:
        data: PEM (labels ``CERTIFICATE``, ``X509 CERTIFICATE`` or ``TRUSTED CERTIFICATE``; text or
            bytes, CRLF or LF, surrounding text allowed), DER (trailing padding ignored), or base64
            of either.

    Returns:
        The certificate; for PEM data holding several certificates, the first one.

    Raises:
        ValueError: ``Invalid certificate format: <reason>.``, when neither the strict parser nor
            OpenSSL can read it.

    """
    return _load_data(data, first_only=True)[0]


def load_certificates(data: str | bytes) -> list[ParsedCertificate]:
    """Read every certificate of a PEM bundle (or a single DER certificate, or base64 of either).

    Args:
        data: the bundle, text or bytes.

    Returns:
        The certificates in order.

    Raises:
        ValueError: ``Invalid certificate format: <reason>.``, when a block cannot be read.

    """
    return _load_data(data, first_only=False)


CertificateInput = str | bytes | x509.Certificate | ParsedCertificate
"""Anything the helpers accept as a certificate: an object, or data ``load_certificate`` reads."""


def as_parsed(cert: CertificateInput) -> ParsedCertificate:
    """Return ``cert`` as a ``ParsedCertificate``.

    Args:
        cert: a parsed or ``cryptography`` certificate, or data ``load_certificate`` reads.

    Returns:
        The parsed certificate.

    Raises:
        ValueError: the data is not a certificate.

    """
    if isinstance(cert, ParsedCertificate):
        return cert
    if isinstance(cert, x509.Certificate):
        return ParsedCertificate.from_x509(cert)
    return load_certificate(cert)
