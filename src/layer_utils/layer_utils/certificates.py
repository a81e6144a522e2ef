"""Certificate reading: :class:`ParsedCertificate` and the tolerant DER reader.

Reading is tolerant, because real device certificates bend DER and the X.509 profile (illegal
PrintableString characters, explicitly encoded defaults, UTCTime without seconds, ...) in ways that
OpenSSL and AWS IoT accept. Mechanism: ``cryptography``'s strict parser is the fast path; for what it
refuses, OpenSSL (through pyOpenSSL) decides whether the certificate is readable at all, and
asn1crypto, a lenient DER reader, supplies the fields pyOpenSSL no longer exposes. The loaders accept
the forms vendors ship (PEM text or bytes, DER, and base64 of either), return
:class:`ParsedCertificate` and raise ``ValueError("Invalid certificate format: <reason>.")`` for
anything neither parser can read. The forms (PEM, DER, base64) are told apart in ``cert_loading``.
Public through :mod:`layer_utils.cert_utils`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from asn1crypto import parser as asn1_parser
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtensionOID, NameOID

if TYPE_CHECKING:
    from OpenSSL import crypto

_SEQUENCE_TAG = 16


def unreadable(reason: str) -> str:
    """Return the ``ValueError`` message of unreadable certificate data."""
    return f"Invalid certificate format: {reason}."


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
        """The subject as readable text, for messages."""
        return self.strict.subject.rfc4514_string() if self.strict is not None else self.tolerant_names[0]

    @cached_property
    def issuer(self) -> str:
        """The issuer as readable text, for messages."""
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
        """The public key, or None when it cannot be used (see ``key_error``)."""
        return self._key_and_error[0]

    @property
    def key_error(self) -> str | None:
        """Why the public key cannot be used, or None."""
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
        """OpenSSL's reading of the certificate (for chain validation)."""
        from OpenSSL import crypto  # noqa: PLC0415 - loaded on the tolerant path only (cold start)

        return crypto.load_certificate(crypto.FILETYPE_ASN1, self.der)

    @classmethod
    def from_x509(cls, cert: x509.Certificate) -> ParsedCertificate:
        """Return the parsed form of a ``cryptography`` certificate (read again from its DER)."""
        return read_der(cert.public_bytes(serialization.Encoding.DER))


def _exact_der(data: bytes) -> bytes:
    """Return the first DER element of ``data`` (dropping trailing padding); raise ``ValueError``."""
    try:
        class_, method, tag, header, contents, _trailer = asn1_parser.parse(data, strict=False)
    except ValueError:
        raise ValueError(unreadable("the DER data is truncated or is not a certificate")) from None
    if (class_, method, tag) != (0, 1, _SEQUENCE_TAG):
        raise ValueError(unreadable("the DER data does not start with a certificate SEQUENCE"))
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
    """Read what the strict parser refused, if OpenSSL reads it.

    One exception: OpenSSL 4 refuses a UTCTime without seconds, which real device certificates carry
    and older OpenSSL releases and AWS IoT read. Such a certificate is accepted when OpenSSL reads
    it with seconds added, and marked so that its chain check, which needs OpenSSL, says it could
    not be made.

    Returns:
        The certificate.

    Raises:
        ValueError: OpenSSL cannot read it, or a field cannot be decoded.

    """
    refusal = _openssl_refusal(der)
    if refusal is not None and ("time" not in refusal or not _readable_with_seconds(der)):
        raise ValueError(
            unreadable(
                f"the data is not a readable X.509 certificate (OpenSSL cannot read it either: {refusal})"
            )
        )
    try:
        return _asn1_read(der, fingerprint, strict_problem, refusal)
    except ValueError:
        raise
    except Exception:  # OpenSSL read it; a field asn1crypto cannot decode is reported plainly
        raise ValueError(unreadable("a field of the certificate cannot be decoded")) from None


def _asn1_read(der: bytes, fingerprint: str, strict_problem: str, refusal: str | None) -> ParsedCertificate:
    """Read the fields with asn1crypto (OpenSSL has read the certificate); raise on what it cannot."""
    from asn1crypto import x509 as asn1_x509  # noqa: PLC0415 - the tolerant path only (cold start)

    tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
    try:
        not_before = tbs["validity"]["not_before"].native
        not_after = tbs["validity"]["not_after"].native
    except (ValueError, TypeError, KeyError):
        raise ValueError(unreadable("its validity dates cannot be read")) from None
    if not isinstance(not_before, datetime) or not isinstance(not_after, datetime):
        raise ValueError(unreadable("its validity dates are out of range (year 0)"))
    try:
        is_ca, ski = _asn1_extensions(tbs)
    except (ValueError, TypeError, KeyError):
        raise ValueError(
            unreadable("its basic constraints or key identifier extension cannot be read")
        ) from None
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


def read_der(data: bytes) -> ParsedCertificate:
    """Read the certificate at the start of DER data (trailing padding ignored).

    Returns:
        The certificate.

    Raises:
        ValueError: neither the strict parser nor OpenSSL can read it.

    """
    der = _exact_der(data)
    fingerprint = hashlib.sha256(der).hexdigest()
    try:
        return _strict_read(der, fingerprint)
    except Exception:
        return _tolerant_read(der, fingerprint, _strict_problem(der))
