"""Certificate loading, fingerprints, validation, ARNs and thing names.

Reading is tolerant, because real device certificates bend DER and the X.509 profile (illegal
PrintableString characters, explicitly encoded defaults, UTCTime without seconds, ...) in ways that
OpenSSL and AWS IoT accept. Mechanism: ``cryptography``'s strict parser is the fast path; for what it
refuses, OpenSSL (through pyOpenSSL) decides whether the certificate is readable at all and validates
its chain, and asn1crypto, a lenient DER reader, supplies the fields pyOpenSSL no longer exposes. The
loaders accept the forms vendors ship (PEM text or bytes, DER, and base64 of either), return
:class:`ParsedCertificate` and raise ``ValueError("Invalid certificate format: <reason>.")`` for
anything neither parser can read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from asn1crypto import parser as asn1_parser
from asn1crypto import pem as asn1_pem
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtensionOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

if TYPE_CHECKING:
    from OpenSSL import crypto

__all__ = [
    "CERTIFICATE_LABELS",
    "DEFAULT_NAME_SOURCES",
    "THING_NAME_PATTERN",
    "THING_NAME_SOURCES",
    "CertificateProblem",
    "NameCandidate",
    "ParsedCertificate",
    "ProblemCode",
    "ValidationResult",
    "as_parsed",
    "certificate_arn",
    "contains_private_key",
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


# Thing names ----------------------------------------------------------------------------------------

THING_NAME_MAX_LENGTH = 128
"""The longest thing name AWS IoT accepts."""

THING_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
"""The thing names AWS IoT accepts (use ``fullmatch``)."""

_THING_NAME_CHARS = re.compile(r"[a-zA-Z0-9:_-]*")


def _thing_name_problem(name: str) -> str | None:
    if not name:
        return "cannot be empty"
    if _THING_NAME_CHARS.fullmatch(name) is None:
        return "contains characters other than letters, digits, ':', '_' and '-'"
    if len(name) > THING_NAME_MAX_LENGTH:
        return f"is longer than {THING_NAME_MAX_LENGTH} characters ({len(name)})"
    return None


def is_valid_thing_name(name: str) -> bool:
    """Return whether ``name`` is a valid AWS IoT thing name (1-128 of letters, digits, ``:_-``)."""
    return THING_NAME_PATTERN.fullmatch(name) is not None


def validate_thing_name(name: str) -> None:
    """Check an AWS IoT thing name.

    Takes the name. Returns nothing. Raises ``ValueError`` with one sentence naming the name and the
    reason (empty, a character outside letters, digits, ``:``, ``_`` and ``-``, or over 128 characters).
    """
    problem = _thing_name_problem(name)
    if problem is not None:
        raise ValueError(f"Thing name {name!r} {problem}.")


THING_NAME_SOURCES = ("vendor", "cn", "fingerprint")
"""The thing name sources: the vendor's device identifier, the subject CN, the fingerprint."""

DEFAULT_NAME_SOURCES = ("vendor", "cn", "fingerprint")
"""The default order in which sources are tried for a thing name."""

_FINGERPRINT_NAME = re.compile(r"cert-[0-9a-fA-F]{64}")

_SOURCE_ORIGINS = {
    "vendor": "the vendor's device identifier",
    "cn": "the certificate's subject CN",
    "fingerprint": "the certificate fingerprint",
}


def parse_name_sources(raw: str) -> tuple[str, ...]:
    """Parse a thing name source list such as ``vendor,cn,fingerprint``.

    Takes the comma-separated sources (case and spaces ignored). Returns them in order, each once.
    Raises ``ValueError`` naming the list when it is empty, repeats a source or names an unknown one.
    """
    sources = tuple(part.strip().lower() for part in raw.split(","))
    unknown = [source for source in sources if source not in THING_NAME_SOURCES]
    if not raw.strip() or unknown:
        raise ValueError(
            f"Thing name source {raw!r} is invalid: use one or more of {', '.join(THING_NAME_SOURCES)}, "
            "comma-separated in the order to try them."
        )
    if len(set(sources)) != len(sources):
        raise ValueError(f"Thing name source {raw!r} lists a source more than once.")
    return sources


@dataclass(frozen=True)
class NameCandidate:
    """A legal thing name and the source (``vendor``, ``cn`` or ``fingerprint``) it comes from."""

    name: str
    source: str


def name_candidates(
    sources: Sequence[str], *, vendor_name: str | None, cert: ParsedCertificate, prefix: str = ""
) -> tuple[list[NameCandidate], list[str]]:
    """List the legal thing names the sources give a certificate, in the order of ``sources``.

    Takes the ordered sources, the vendor's identifier for the device (None when it has none), the
    certificate and a prefix prepended to every name. Returns the candidates and, for each source
    that gives no legal name, one sentence fragment saying why (for example "the certificate has no
    subject CN"). Vendor names and CNs are validated, never rewritten.
    """
    candidates: list[NameCandidate] = []
    problems: list[str] = []
    for source in sources:
        base = {
            "fingerprint": f"cert-{cert.fingerprint}",
            "vendor": vendor_name,
            "cn": cert.subject_cn,
        }.get(source)
        if not base:
            problems.append(
                "the vendor gives no device identifier"
                if source == "vendor"
                else "the certificate has no readable subject CN"
            )
            continue
        if source != "fingerprint" and _FINGERPRINT_NAME.fullmatch(base):
            problems.append(
                f"{_quote(base)} from {_SOURCE_ORIGINS[source]} is reserved for fingerprint names"
            )
            continue
        if source == "cn" and not any(char.isdigit() for char in base):
            # Chip families share one product CN ("InfineonIoTNode"); a device identifier has digits.
            problems.append(
                f"the subject CN {_quote(base)} names a product, not one device (it has no digit)"
            )
            continue
        name = prefix + base
        problem = _thing_name_problem(name)
        if problem is None:
            candidates.append(NameCandidate(name, source))
        else:
            problems.append(f"thing name {_quote(name)} from {_SOURCE_ORIGINS[source]} {problem}")
    return candidates, problems


def _quote(name: str, width: int = 80) -> str:
    flat = name if len(name) <= width else name[: width - 1] + "…"
    return repr(flat)


# ARNs -----------------------------------------------------------------------------------------------

_FUNCTION_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:[^:\s]+(:[^:\s]+)?"
)


def parse_function_arn(arn: str) -> tuple[str, str, str]:
    """Split a Lambda function ARN (``context.invoked_function_arn``) into its location.

    Takes ``arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>]``. Returns
    ``(partition, region, account)``. Raises ``ValueError`` naming the ARN when it is malformed.
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

_PRIVATE_KEY_PEM = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PRIVATE_KEY_MARKER = b"PRIVATE KEY-----"


def _base64_forms(needle: bytes) -> tuple[bytes, ...]:
    """Return the base64 text that ``needle`` always produces, for each of its 3 byte alignments."""
    forms = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + needle)
        first = -(-8 * offset // 6)
        last = 8 * (offset + len(needle)) // 6
        forms.append(encoded[first:last])
    return tuple(forms)


# No library scans text for base64-wrapped PEM keys (the generated format is base64 of PEM per line).
_PRIVATE_KEY_BASE64 = _base64_forms(_PRIVATE_KEY_MARKER)


def contains_private_key(data: bytes | str) -> bool:
    """Return whether the data contains a PEM private key, in clear or base64-encoded.

    Takes manifest content. Detects any ``-----BEGIN ... PRIVATE KEY-----`` header (PKCS#8 plain or
    encrypted, RSA, EC, DSA, OpenSSH) and the same header inside unbroken base64 text.
    """
    raw = data.encode("utf-8", errors="replace") if isinstance(data, str) else bytes(data)
    if _PRIVATE_KEY_PEM.search(raw) is not None:
        return True
    return any(form in raw for form in _PRIVATE_KEY_BASE64)


# Validation -----------------------------------------------------------------------------------------


class ProblemCode(StrEnum):
    """Why a device certificate is refused."""

    UNPARSEABLE = "unparseable"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    CA_CERTIFICATE = "ca_certificate"
    WEAK_KEY = "weak_key"
    UNTRUSTED_CHAIN = "untrusted_chain"


@dataclass(frozen=True)
class CertificateProblem:
    """One problem with a certificate: a ``ProblemCode`` value and an English sentence."""

    code: str
    message: str


@dataclass(frozen=True)
class ValidationResult:
    """Every problem found with a certificate; no problems means the certificate is acceptable."""

    problems: tuple[CertificateProblem, ...] = ()

    @property
    def ok(self) -> bool:
        """Return whether no problem was found."""
        return not self.problems

    @property
    def reasons(self) -> tuple[str, ...]:
        """Return the English sentence of each problem, in order."""
        return tuple(problem.message for problem in self.problems)

    @property
    def codes(self) -> tuple[str, ...]:
        """Return the code of each problem, in order."""
        return tuple(problem.code for problem in self.problems)


_ACCEPTED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_MIN_RSA_BITS = 2048
_KEY_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (dsa.DSAPublicKey, "DSA"),
    (ed25519.Ed25519PublicKey, "Ed25519"),
    (ed448.Ed448PublicKey, "Ed448"),
    (x25519.X25519PublicKey, "X25519"),
    (x448.X448PublicKey, "X448"),
)

# Device certificates are CN-only: no SubjectAltName, often no AuthorityKeyIdentifier (Espressif) and
# no or any ExtendedKeyUsage. Basic constraints and key usage are reported as their own problems, so
# the chain check is only about trust. CA certificates keep the Web PKI (RFC 5280) profile.
_EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
    .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, None)
    .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()
_ENCOUNTERED = re.compile(r"\s*\(encountered processing .*\)\s*$", re.DOTALL)


def _utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_problem(cert: ParsedCertificate) -> str | None:
    key = cert.public_key
    if key is None:
        return (
            f"Certificate cannot be used: {cert.key_error}; "
            "only RSA (2048 bits or more) and elliptic-curve P-256, P-384 and P-521 keys are accepted."
        )
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            return (
                f"Certificate has a {key.key_size}-bit RSA key; at least {_MIN_RSA_BITS} bits are required."
            )
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _ACCEPTED_CURVES:
            return (
                f"Certificate uses the elliptic curve {key.curve.name}; "
                "only P-256, P-384 and P-521 are accepted."
            )
        return None
    kind = next((name for cls, name in _KEY_TYPE_NAMES if isinstance(key, cls)), type(key).__name__)
    return (
        f"Certificate has an unsupported {kind} key; "
        "only RSA and elliptic-curve (P-256, P-384, P-521) keys are accepted."
    )


def _strict_chain(
    cert: ParsedCertificate,
    trusted_cas: Sequence[ParsedCertificate],
    intermediates: Sequence[ParsedCertificate],
    moment: datetime,
) -> str | None:
    """Verify with ``x509.verification``; return None when trusted, else the detail of the refusal."""
    anchors = [ca.strict for ca in trusted_cas if ca.strict is not None]
    if cert.strict is None or not anchors:
        return "the strict verifier cannot read the certificate or its trust anchors"
    verifier = (
        PolicyBuilder()
        .store(Store(anchors))
        .time(moment)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(cert.strict, [item.strict for item in intermediates if item.strict is not None])
    except VerificationError as error:
        return _chain_detail(cert, error)
    except ValueError:
        return "the strict verifier cannot read a certificate of the chain"
    return None


def _openssl_chain(
    cert: ParsedCertificate,
    trusted_cas: Sequence[ParsedCertificate],
    intermediates: Sequence[ParsedCertificate],
    moment: datetime,
) -> str | None:
    """Verify with OpenSSL, which reads what the strict verifier refuses; None when trusted.

    Trust anchors need not be self-signed (partial chains), and unknown critical extensions are
    tolerated, as AWS IoT tolerates them in device certificates.
    """
    from OpenSSL import crypto  # noqa: PLC0415 - loaded on the tolerant path only (cold start)

    store = crypto.X509Store()
    for ca in trusted_cas:
        if ca.openssl_problem is None:  # an anchor OpenSSL cannot read cannot anchor its chains
            store.add_cert(ca.openssl)
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN | crypto.X509StoreFlags.IGNORE_CRITICAL)
    store.set_time(moment.astimezone(UTC).replace(tzinfo=None))
    chain = [item.openssl for item in intermediates if item.openssl_problem is None]
    context = crypto.X509StoreContext(store, cert.openssl, chain=chain)
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as error:
        detail = str(error.args[0]) if error.args else str(error)
        if "unable to get local issuer certificate" in detail or "unable to get issuer" in detail:
            return f"no trusted CA or given intermediate issued it (issuer {cert.issuer})"
        return detail
    return None


def _chain_problem(
    cert: ParsedCertificate,
    trusted_cas: Sequence[ParsedCertificate],
    intermediates: Sequence[ParsedCertificate],
    at: datetime,
) -> str | None:
    if not trusted_cas:
        return "Certificate does not chain to a trusted CA: no trusted CA certificates are configured."
    # Validity is reported on its own: check trust at a moment inside the leaf's validity window.
    moment = min(max(at, cert.not_before), cert.not_after)
    strict_detail = _strict_chain(cert, trusted_cas, intermediates, moment)
    if strict_detail is None:
        return None
    # The strict verifier refuses what real device certificates do (non-DER encodings, unknown
    # critical extensions): OpenSSL's verifier, which reads them, has the last word.
    if cert.openssl_problem is not None:
        return (
            "Certificate's chain could not be checked: neither the strict verifier nor OpenSSL can read "
            f"the certificate ({cert.strict_problem}; OpenSSL: {cert.openssl_problem})."
        )
    openssl_detail = _openssl_chain(cert, trusted_cas, intermediates, moment)
    if openssl_detail is None:
        return None
    if cert.strict is None:
        return (
            f"Certificate does not chain to a trusted CA: {openssl_detail} (checked with OpenSSL, because "
            f"{cert.strict_problem or 'the strict parser cannot read it'})."
        )
    return f"Certificate does not chain to a trusted CA: {strict_detail}."


def _chain_detail(cert: ParsedCertificate, error: VerificationError) -> str:
    detail = _ENCOUNTERED.sub("", str(error)).removeprefix("validation failed: ")
    detail = detail.removeprefix("candidates exhausted: ").rstrip(".")
    if detail == "all candidates exhausted with no interior errors":
        return f"no trusted CA or given intermediate issued it (issuer {cert.issuer})"
    return detail


def validate_certificate(
    cert: CertificateInput,
    trusted_cas: Sequence[CertificateInput] | None = None,
    *,
    intermediates: Iterable[CertificateInput] = (),
    at: datetime | None = None,
    allow_expired: bool = False,
) -> ValidationResult:
    """Check that a device certificate can be registered, listing every problem found.

    Takes the certificate (an object, or raw data: unreadable data is reported as ``unparseable``
    instead of raised), the trust anchors (None: the chain is not checked; an empty sequence: every
    certificate is ``untrusted_chain``), issuers that may complete the chain (``intermediates``), the
    validation time ``at`` (timezone-aware, default now) and ``allow_expired`` to accept certificates
    past their ``notAfter``. Trust is checked at a moment inside the certificate's own validity
    window, so an expired certificate is reported as ``expired`` and not also as untrusted; the
    strict verifier is tried first and OpenSSL's for what it cannot read. Returns a
    ``ValidationResult`` with codes ``unparseable``, ``expired``, ``not_yet_valid``,
    ``ca_certificate``, ``weak_key`` and ``untrusted_chain``. Raises ``ValueError`` when a trust
    anchor or intermediate given as data cannot be read.
    """
    try:
        parsed = as_parsed(cert)
    except ValueError as error:
        return ValidationResult((CertificateProblem(ProblemCode.UNPARSEABLE, str(error)),))
    moment = at if at is not None else datetime.now(UTC)
    problems: list[CertificateProblem] = []
    if moment > parsed.not_after and not allow_expired:
        problems.append(
            CertificateProblem(ProblemCode.EXPIRED, f"Certificate expired on {_utc_iso(parsed.not_after)}.")
        )
    if moment < parsed.not_before:
        problems.append(
            CertificateProblem(
                ProblemCode.NOT_YET_VALID, f"Certificate is not valid before {_utc_iso(parsed.not_before)}."
            )
        )
    if parsed.is_ca:
        problems.append(
            CertificateProblem(
                ProblemCode.CA_CERTIFICATE,
                "Certificate is a CA certificate (basic constraints CA=true), not a device certificate.",
            )
        )
    key_problem = _key_problem(parsed)
    if key_problem is not None:
        problems.append(CertificateProblem(ProblemCode.WEAK_KEY, key_problem))
    if trusted_cas is not None:
        anchors = [as_parsed(ca) for ca in trusted_cas]
        issuers = [as_parsed(item) for item in intermediates]
        chain_problem = _chain_problem(parsed, anchors, issuers, moment)
        if chain_problem is not None:
            problems.append(CertificateProblem(ProblemCode.UNTRUSTED_CHAIN, chain_problem))
    return ValidationResult(tuple(problems))
