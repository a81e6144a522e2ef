"""Certificate loading: :class:`ParsedCertificate` and the tolerant loaders.

Reading is tolerant, because real device certificates bend DER and the X.509 profile (illegal
PrintableString characters, explicitly encoded defaults, UTCTime without seconds, ...) in ways that
OpenSSL and AWS IoT accept. Mechanism: ``cryptography``'s strict parser is the fast path; for what it
refuses, OpenSSL (through pyOpenSSL) decides whether the certificate is readable at all, and
asn1crypto, a lenient DER reader, supplies the fields pyOpenSSL no longer exposes. The loaders accept
the forms vendors ship (PEM text or bytes, DER, and base64 of either), return
:class:`ParsedCertificate` and raise ``ValueError("Invalid certificate format: <reason>.")`` for
anything neither parser can read. Public through :mod:`layer_utils.cert_utils`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from asn1crypto import parser as asn1_parser
from asn1crypto import pem as asn1_pem
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtensionOID, NameOID

if TYPE_CHECKING:
    from OpenSSL import crypto

CERTIFICATE_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"})
"""The PEM labels that hold a certificate (the legacy ``X509`` and OpenSSL's ``TRUSTED`` forms too)."""
_PEM_ANY = b"-----BEGIN "
_DER_SEQUENCE = b"\x30"
_WHITESPACE = re.compile(rb"\s+")
_SEQUENCE_TAG = 16


def _invalid(reason: str) -> ValueError:
    return ValueError(f"Invalid certificate format: {reason}.")


@dataclass(frozen=True, eq=False)
class ParsedCertificate:
    """A certificate as read from a manifest, whichever parser could read it.

    ``der`` is the certificate's exact DER (trailing padding removed), ``fingerprint`` its SHA-256 in
    lowercase hex (the AWS IoT certificate id), ``subject_cn`` the subject CN (None when there is none
    or it cannot be decoded), ``subject_key_id`` the Subject Key Identifier, ``strict``
    cryptography's object when its strict parser reads every part (None otherwise),
    ``strict_problem`` what that parser refused and ``openssl_problem`` what OpenSSL refused (only a
    time encoding is tolerated; such a certificate's chain cannot be checked). ``tolerant_names``
    and ``tolerant_spki`` carry the readable subject and issuer and the key of a certificate read on
    the tolerant path. The readable ``subject`` and ``issuer``, the ``public_key`` and its
    ``key_error`` are worked out when first asked for: most entries never need them twice.
    Two instances are equal when their DER is.
    """

    der: bytes
    fingerprint: str
    subject_cn: str | None
    not_before: datetime
    not_after: datetime
    is_ca: bool
    subject_key_id: bytes | None
    strict: x509.Certificate | None
    strict_problem: str | None = None
    openssl_problem: str | None = None
    tolerant_names: tuple[str, str] = ("", "")
    tolerant_spki: bytes = b""

    @cached_property
    def subject(self) -> str:
        """Return the subject as readable text, for messages."""
        return self.strict.subject.rfc4514_string() if self.strict is not None else self.tolerant_names[0]

    @cached_property
    def issuer(self) -> str:
        """Return the issuer as readable text, for messages."""
        return self.strict.issuer.rfc4514_string() if self.strict is not None else self.tolerant_names[1]

    @cached_property
    def _key_and_error(self) -> tuple[PublicKeyTypes | None, str | None]:
        if self.strict is None:
            return _key(self.tolerant_spki)
        try:
            return self.strict.public_key(), None
        except UnsupportedAlgorithm:
            return None, "its public key uses an algorithm or curve that is not supported"

    @property
    def public_key(self) -> PublicKeyTypes | None:
        """Return the public key, or None when it cannot be used (see ``key_error``)."""
        return self._key_and_error[0]

    @property
    def key_error(self) -> str | None:
        """Return why the public key cannot be used, or None."""
        return self._key_and_error[1]

    def __eq__(self, other: object) -> bool:
        """Return whether ``other`` is a parsed certificate with the same DER."""
        return isinstance(other, ParsedCertificate) and other.der == self.der

    def __hash__(self) -> int:
        """Hash the DER."""
        return hash(self.der)

    def pem(self) -> str:
        r"""Return the exact DER as PEM text (``-----BEGIN CERTIFICATE-----\n``, 64-column base64)."""
        body = base64.b64encode(self.der).decode("ascii")
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"

    @cached_property
    def openssl(self) -> crypto.X509:
        """Return OpenSSL's reading of the certificate (for chain validation)."""
        from OpenSSL import crypto  # noqa: PLC0415 - loaded on the tolerant path only (cold start)

        return crypto.load_certificate(crypto.FILETYPE_ASN1, self.der)

    @classmethod
    def from_x509(cls, cert: x509.Certificate) -> ParsedCertificate:
        """Return the parsed form of a ``cryptography`` certificate (read again from its DER)."""
        return _read_der(cert.public_bytes(serialization.Encoding.DER))


def _exact_der(data: bytes) -> bytes:
    """Return the first DER element of ``data`` (dropping trailing padding); raise ``ValueError``."""
    try:
        class_, method, tag, header, contents, _trailer = asn1_parser.parse(data, strict=False)
    except ValueError:
        raise _invalid("the DER data is truncated or is not a certificate") from None
    if (class_, method, tag) != (0, 1, _SEQUENCE_TAG):
        raise _invalid("the DER data does not start with a certificate SEQUENCE")
    return bytes(header + contents)


def _key(spki_der: bytes) -> tuple[PublicKeyTypes | None, str | None]:
    try:
        return serialization.load_der_public_key(spki_der), None
    except UnsupportedAlgorithm:
        return None, "its public key uses an algorithm or curve that is not supported"
    except ValueError:
        return None, "its public key cannot be read"


def _strict_read(der: bytes, fingerprint: str) -> ParsedCertificate:
    """Read with cryptography's strict parser; raises whatever it raises on anything it refuses."""
    cert = x509.load_der_x509_certificate(der)
    extensions = cert.extensions
    cert.issuer  # noqa: B018 - parsed now, so that a malformed issuer takes the tolerant path
    cn_attributes = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn_value = cn_attributes[0].value if cn_attributes else None
    try:
        is_ca = bool(extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        ski: bytes | None = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        ski = None
    return ParsedCertificate(
        der=der,
        fingerprint=fingerprint,
        subject_cn=cn_value if isinstance(cn_value, str) else None,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=is_ca,
        subject_key_id=ski,
        strict=cert,
    )


def _asn1_cn(name: Any) -> str | None:
    for rdn in name.chosen:
        for attribute in rdn:
            if attribute["type"].dotted == NameOID.COMMON_NAME.dotted_string:
                value = attribute["value"].native
                return value if isinstance(value, str) else None
    return None


def _asn1_readable(name: Any) -> str:
    try:
        return str(name.human_friendly)
    except (ValueError, TypeError, UnicodeError):
        return "(a name that cannot be decoded)"


def _asn1_extensions(tbs: Any) -> tuple[bool, bytes | None]:
    """Return (is a CA, subject key identifier) from the extensions; raise ``ValueError`` if unreadable."""
    is_ca = False
    ski: bytes | None = None
    for extension in tbs["extensions"]:
        oid = extension["extn_id"].dotted
        if oid == ExtensionOID.BASIC_CONSTRAINTS.dotted_string:
            is_ca = is_ca or bool(extension["extn_value"].parsed["ca"].native)
        elif oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string and ski is None:
            ski = bytes(extension["extn_value"].parsed.native)
    return is_ca, ski


def _openssl_refusal(der: bytes) -> str | None:
    """Return OpenSSL's first reason for refusing to read the certificate, or None when it reads it."""
    from OpenSSL import crypto  # noqa: PLC0415 - loaded on the tolerant path only (cold start)

    try:
        crypto.load_certificate(crypto.FILETYPE_ASN1, der)
    except crypto.Error as error:
        queue = error.args[0] if error.args and isinstance(error.args[0], list) else []
        reasons = [str(item[-1]) for item in queue if isinstance(item, tuple) and item]
        return reasons[0] if reasons else "unreadable"
    return None


def _readable_with_seconds(der: bytes) -> bool:
    """Return whether OpenSSL reads the certificate once its validity times carry seconds."""
    from asn1crypto import x509 as asn1_x509  # noqa: PLC0415 - the tolerant path only (cold start)

    try:
        certificate = asn1_x509.Certificate.load(der)
        validity = certificate["tbs_certificate"]["validity"]
        for field in ("not_before", "not_after"):
            moment = validity[field].native
            if not isinstance(moment, datetime):
                return False
            kind = "utc_time" if 1950 <= moment.year < 2050 else "general_time"
            validity[field] = asn1_x509.Time(name=kind, value=moment)
        return _openssl_refusal(certificate.dump()) is None
    except Exception:  # whatever asn1crypto cannot re-encode is not readable
        return False


def _tolerant_read(der: bytes, fingerprint: str, strict_problem: str) -> ParsedCertificate:
    """Read what the strict parser refused, if OpenSSL reads it; raise ``ValueError`` otherwise.

    One exception: OpenSSL 4 refuses a UTCTime without seconds, which real device certificates carry
    and older OpenSSL releases and AWS IoT read. Such a certificate is accepted when OpenSSL reads
    it with seconds added, and marked so that its chain check, which needs OpenSSL, says it could
    not be made.
    """
    refusal = _openssl_refusal(der)
    if refusal is not None and ("time" not in refusal or not _readable_with_seconds(der)):
        raise _invalid(
            f"the data is not a readable X.509 certificate (OpenSSL cannot read it either: {refusal})"
        )
    try:
        return _asn1_read(der, fingerprint, strict_problem, refusal)
    except ValueError:
        raise
    except Exception:  # OpenSSL read it; a field asn1crypto cannot decode is reported plainly
        raise _invalid("a field of the certificate cannot be decoded") from None


def _asn1_read(der: bytes, fingerprint: str, strict_problem: str, refusal: str | None) -> ParsedCertificate:
    """Read the fields with asn1crypto (OpenSSL has read the certificate); raise on what it cannot."""
    from asn1crypto import x509 as asn1_x509  # noqa: PLC0415 - the tolerant path only (cold start)

    tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
    try:
        not_before = tbs["validity"]["not_before"].native
        not_after = tbs["validity"]["not_after"].native
    except (ValueError, TypeError, KeyError):
        raise _invalid("its validity dates cannot be read") from None
    if not isinstance(not_before, datetime) or not isinstance(not_after, datetime):
        raise _invalid("its validity dates are out of range (year 0)")
    try:
        is_ca, ski = _asn1_extensions(tbs)
    except (ValueError, TypeError, KeyError):
        raise _invalid("its basic constraints or key identifier extension cannot be read") from None
    try:
        cn = _asn1_cn(tbs["subject"])
    except (ValueError, TypeError, KeyError, UnicodeError):
        cn = None
    return ParsedCertificate(
        der=der,
        fingerprint=fingerprint,
        subject_cn=cn,
        not_before=not_before.astimezone(UTC),
        not_after=not_after.astimezone(UTC),
        is_ca=is_ca,
        subject_key_id=ski,
        strict=None,
        strict_problem=strict_problem,
        openssl_problem=refusal,
        tolerant_names=(_asn1_readable(tbs["subject"]), _asn1_readable(tbs["issuer"])),
        tolerant_spki=tbs["subject_public_key_info"].dump(),
    )


def _strict_problem(der: bytes) -> str:
    """Say, in English, which part of the certificate cryptography's strict parser refuses."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except Exception:  # ValueError, or InvalidVersion for an unknown version number
        return "the strict DER parser refuses its structure"
    for part, read in (
        ("subject", lambda: cert.subject),
        ("issuer", lambda: cert.issuer),
        ("extensions", lambda: cert.extensions),
        ("validity dates", lambda: cert.not_valid_after_utc),
    ):
        try:
            read()
        except Exception:
            return f"the strict DER parser refuses its {part}"
    return "the strict DER parser refuses it"


def _read_der(data: bytes) -> ParsedCertificate:
    der = _exact_der(data)
    fingerprint = hashlib.sha256(der).hexdigest()
    try:
        return _strict_read(der, fingerprint)
    except Exception:
        return _tolerant_read(der, fingerprint, _strict_problem(der))


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
        raise _invalid("the PEM data is malformed") from None
    ders = [der for label, _headers, der in blocks if label in CERTIFICATE_LABELS]
    if not ders:
        raise _invalid("the PEM data holds no CERTIFICATE block")
    return ders


def _load_all(raw: bytes, *, allow_base64: bool, first_only: bool) -> list[ParsedCertificate]:
    """Read every certificate in PEM data, or the one in DER data, or either one base64-encoded.

    DER is read as given: stripping "whitespace" would corrupt DER whose last bytes happen to be
    0x09-0x0d or 0x20. When DER cannot be read and base64 does not help either, the DER reason is
    the one given.
    """
    if _PEM_ANY in raw:
        blocks = _pem_blocks(raw)
        return [_read_der(der) for der in (blocks[:1] if first_only else blocks)]
    der_error: ValueError | None = None
    if raw[:1] == _DER_SEQUENCE:
        try:
            return [_read_der(raw)]
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
    raise _invalid("the data is neither PEM, DER nor base64 of either")


def _load_data(data: str | bytes, *, first_only: bool) -> list[ParsedCertificate]:
    if isinstance(data, str):
        raw = data.encode("utf-8", errors="replace")
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise _invalid(f"expected text or bytes, got {type(data).__name__}")
    stripped = raw.strip()
    if not stripped:
        raise _invalid("the data is empty")
    if raw[:1] == _DER_SEQUENCE:
        try:
            return [_read_der(raw)]
        except ValueError as error:
            try:  # not DER after all? Base64 text may start with "0".
                return _load_all(stripped, allow_base64=True, first_only=first_only)
            except ValueError:
                raise error from None
    return _load_all(stripped, allow_base64=True, first_only=first_only)


def load_certificate(data: str | bytes) -> ParsedCertificate:
    """Read one certificate, tolerating the ways real device certificates bend DER and X.509.

    Takes PEM (labels ``CERTIFICATE``, ``X509 CERTIFICATE`` or ``TRUSTED CERTIFICATE``; text or
    bytes, CRLF or LF, surrounding text allowed), DER (trailing padding ignored), or base64 of either.
    For PEM data holding several certificates the first one is returned. Returns the certificate.
    Raises ``ValueError("Invalid certificate format: <reason>.")`` when neither the strict parser nor
    OpenSSL can read it.
    """
    return _load_data(data, first_only=True)[0]


def load_certificates(data: str | bytes) -> list[ParsedCertificate]:
    """Read every certificate of a PEM bundle (or a single DER certificate, or base64 of either).

    Takes the bundle as text or bytes. Returns the certificates in order. Raises
    ``ValueError("Invalid certificate format: <reason>.")`` when a block cannot be read.
    """
    return _load_data(data, first_only=False)


CertificateInput = str | bytes | x509.Certificate | ParsedCertificate
"""Anything the helpers accept as a certificate: an object, or data ``load_certificate`` reads."""


def as_parsed(cert: CertificateInput) -> ParsedCertificate:
    """Return ``cert`` as a ``ParsedCertificate``.

    Takes a parsed or ``cryptography`` certificate, or data ``load_certificate`` reads. Raises
    ``ValueError`` for data that is not a certificate.
    """
    if isinstance(cert, ParsedCertificate):
        return cert
    if isinstance(cert, x509.Certificate):
        return ParsedCertificate.from_x509(cert)
    return load_certificate(cert)
