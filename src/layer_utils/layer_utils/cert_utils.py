"""Certificate loading, fingerprints, validation, ARNs and thing names.

Everything here works on ``cryptography`` ``x509.Certificate`` objects; the loaders accept the forms
vendors ship (PEM text or bytes, DER, and base64 of either) and raise
``ValueError("Invalid certificate format: <reason>")`` for anything else.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

__all__ = [
    "THING_NAME_PATTERN",
    "CertificateProblem",
    "ProblemCode",
    "ValidationResult",
    "certificate_arn",
    "contains_private_key",
    "derive_thing_name",
    "fallback_thing_name",
    "format_certificate",
    "get_certificate_fingerprint",
    "get_cn",
    "is_valid_thing_name",
    "load_certificate",
    "load_certificates",
    "parse_function_arn",
    "thing_arn",
    "validate_certificate",
    "validate_thing_name",
]

CertificateInput = str | bytes | x509.Certificate
"""Anything the helpers accept as a certificate: an object, or data ``load_certificate`` reads."""

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_ANY = b"-----BEGIN "
_DER_SEQUENCE = b"\x30"
_WHITESPACE = re.compile(rb"\s+")


def _invalid(reason: str) -> ValueError:
    return ValueError(f"Invalid certificate format: {reason}.")


def _as_bytes(data: str | bytes) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8", errors="replace")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise _invalid(f"expected text or bytes, got {type(data).__name__}")


def _decode_base64(raw: bytes) -> bytes | None:
    compact = _WHITESPACE.sub(b"", raw)
    compact += b"=" * (-len(compact) % 4)
    for alphabet in (None, b"-_"):
        try:
            return base64.b64decode(compact, altchars=alphabet, validate=True)
        except binascii.Error:
            continue
    return None


def _load_all(raw: bytes, *, allow_base64: bool) -> list[x509.Certificate]:
    """Load every certificate in PEM data, or the one in DER data, or either one base64-encoded.

    DER is parsed as given: stripping "whitespace" would corrupt DER whose last bytes happen to be
    0x09-0x0d or 0x20.
    """
    if _PEM_CERTIFICATE in raw:
        try:
            return x509.load_pem_x509_certificates(raw)
        except ValueError as error:
            raise _invalid("the PEM data does not hold a valid X.509 certificate") from error
    if _PEM_ANY in raw:
        raise _invalid("the PEM data holds no CERTIFICATE block")
    if raw[:1] == _DER_SEQUENCE:
        try:
            return [x509.load_der_x509_certificate(raw)]
        except ValueError as error:
            if not allow_base64:
                raise _invalid("the DER data is not a valid X.509 certificate") from error
    if allow_base64:
        decoded = _decode_base64(raw)
        if decoded:
            return _load_all(decoded, allow_base64=False)
    raise _invalid("the data is neither PEM, DER nor base64 of either")


def _load_data(data: str | bytes) -> list[x509.Certificate]:
    raw = _as_bytes(data)
    stripped = raw.strip()
    if not stripped:
        raise _invalid("the data is empty")
    if raw[:1] == _DER_SEQUENCE:
        try:
            return [x509.load_der_x509_certificate(raw)]
        except ValueError:
            pass  # not DER after all: base64 text may start with "0"
    return _load_all(stripped, allow_base64=True)


def load_certificate(data: str | bytes) -> x509.Certificate:
    """Load one certificate.

    Takes PEM (text or bytes, CRLF or LF, surrounding whitespace or leading text allowed), DER, or
    base64 of either. For PEM data holding several certificates the first one is returned. Returns
    the certificate. Raises ``ValueError("Invalid certificate format: <reason>.")`` when the data is
    not a certificate.
    """
    return _load_data(data)[0]


def load_certificates(data: str | bytes) -> list[x509.Certificate]:
    """Load every certificate of a PEM bundle (or a single DER certificate, or base64 of either).

    Takes the bundle as text or bytes. Returns the certificates in order. Raises
    ``ValueError("Invalid certificate format: <reason>.")`` when the data holds no valid certificate.
    """
    return _load_data(data)


def _certificate(cert: CertificateInput) -> x509.Certificate:
    return cert if isinstance(cert, x509.Certificate) else load_certificate(cert)


def format_certificate(cert_string: CertificateInput) -> str:
    r"""Return a certificate as canonical PEM.

    Takes a certificate or anything ``load_certificate`` accepts. Returns
    ``-----BEGIN CERTIFICATE-----\n``, the DER in base64 wrapped at 64 columns, and
    ``-----END CERTIFICATE-----\n`` (plain ASCII, safe inside a JSON message). Raises
    ``ValueError("Invalid certificate format: <reason>.")`` for data that is not a certificate.
    """
    return _certificate(cert_string).public_bytes(serialization.Encoding.PEM).decode("ascii")


def get_certificate_fingerprint(cert: CertificateInput) -> str:
    """Return the lowercase hex SHA-256 of the certificate's DER, which is its AWS IoT certificate ID.

    Takes a certificate or anything ``load_certificate`` accepts. Raises ``ValueError`` for data that
    is not a certificate.
    """
    return _certificate(cert).fingerprint(hashes.SHA256()).hex()


def get_cn(cert: CertificateInput) -> str | None:
    """Return the certificate's subject common name, or None when the subject has none.

    Takes a certificate or anything ``load_certificate`` accepts. Raises ``ValueError`` for data that
    is not a certificate.
    """
    attributes = _certificate(cert).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


# Thing names ----------------------------------------------------------------------------------------

THING_NAME_MAX_LENGTH = 128
"""The longest thing name AWS IoT accepts."""

THING_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
"""The thing names AWS IoT accepts (use ``fullmatch``)."""

_THING_NAME_CHARS = re.compile(r"[a-zA-Z0-9:_-]*")
_HEX = re.compile(r"[0-9a-fA-F]{40,}")


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


def fallback_thing_name(fingerprint: str, prefix: str = "") -> str:
    """Return the deterministic thing name for a certificate: ``<prefix>cert-<sha256 fingerprint>``.

    Takes the certificate's SHA-256 fingerprint (hex, as from ``get_certificate_fingerprint``) and an
    optional prefix. Returns the same name for the same fingerprint in every process. Raises
    ``ValueError`` when the fingerprint is not hex of at least 40 digits.
    """
    if _HEX.fullmatch(fingerprint) is None:
        raise ValueError(f"Certificate fingerprint {fingerprint!r} is not a hexadecimal SHA-256 digest.")
    return f"{prefix}cert-{fingerprint.lower()}"


THING_NAME_SOURCES = ("vendor", "cn", "fingerprint")
"""The values of ``THINGPRESS_THING_NAME_SOURCE``."""


def derive_thing_name(
    *, source: str, vendor_name: str | None, cert: x509.Certificate, prefix: str = ""
) -> str:
    """Choose the thing name for a certificate; vendor names are validated, never silently rewritten.

    Takes ``source`` (``"vendor"``: the vendor's name, else the subject CN, else the fingerprint name;
    ``"cn"``: the subject CN, else the fingerprint name; ``"fingerprint"``: ``fallback_thing_name``),
    the vendor's name for the device, the certificate and a prefix prepended to the name. Returns the
    thing name. Raises ``ValueError`` for an unknown source or when the resulting name is not a valid
    thing name (the message names the bad name and where it came from).
    """
    if source not in THING_NAME_SOURCES:
        raise ValueError(f"Unknown thing name source {source!r}: use one of {', '.join(THING_NAME_SOURCES)}.")
    origin = "the certificate fingerprint"
    base: str | None = None
    if source == "vendor" and vendor_name:
        base, origin = vendor_name, "the vendor's device name"
    if base is None and source in {"vendor", "cn"}:
        cn = get_cn(cert)
        if cn:
            base, origin = cn, "the certificate's subject CN"
    name = (
        prefix + base
        if base is not None
        else fallback_thing_name(cert.fingerprint(hashes.SHA256()).hex(), prefix)
    )
    problem = _thing_name_problem(name)
    if problem is not None:
        raise ValueError(f"Thing name {name!r} (from {origin}) {problem}.")
    return name


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
    raw = _as_bytes(data) if isinstance(data, str) else bytes(data)
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


def _key_problem(cert: x509.Certificate) -> str | None:
    try:
        key = cert.public_key()
    except (ValueError, TypeError) as error:
        return f"Certificate has a public key of an unsupported algorithm ({error})."
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


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _chain_problem(
    cert: x509.Certificate,
    trusted_cas: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    at: datetime,
) -> str | None:
    if not trusted_cas:
        return "Certificate does not chain to a trusted CA: no trusted CA certificates are configured."
    # Validity is reported on its own: check trust at a moment inside the leaf's validity window.
    moment = min(max(at, cert.not_valid_before_utc), cert.not_valid_after_utc)
    verifier = (
        PolicyBuilder()
        .store(Store(list(trusted_cas)))
        .time(moment)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(cert, list(intermediates))
    except VerificationError as error:
        return f"Certificate does not chain to a trusted CA: {_chain_detail(cert, error)}."
    return None


def _chain_detail(cert: x509.Certificate, error: VerificationError) -> str:
    detail = _ENCOUNTERED.sub("", str(error)).removeprefix("validation failed: ")
    detail = detail.removeprefix("candidates exhausted: ").rstrip(".")
    if detail == "all candidates exhausted with no interior errors":
        return f"no trusted CA or given intermediate issued it (issuer {cert.issuer.rfc4514_string()})"
    return detail


def validate_certificate(
    cert: CertificateInput,
    trusted_cas: Sequence[x509.Certificate] | None = None,
    *,
    intermediates: Iterable[x509.Certificate] = (),
    at: datetime | None = None,
    allow_expired: bool = False,
) -> ValidationResult:
    """Check that a device certificate can be registered, listing every problem found.

    Takes the certificate (an object, or raw data: unreadable data is reported as ``unparseable``
    instead of raised), the trust anchors (None: the chain is not checked; an empty sequence: every
    certificate is ``untrusted_chain``), issuers that may complete the chain (``intermediates``), the
    validation time ``at`` (timezone-aware, default now) and ``allow_expired`` to accept certificates
    past their ``notAfter``. Trust is checked at a moment inside the certificate's own validity
    window, so an expired certificate is reported as ``expired`` and not also as untrusted.
    Returns a ``ValidationResult`` with codes ``unparseable``, ``expired``, ``not_yet_valid``,
    ``ca_certificate``, ``weak_key`` and ``untrusted_chain``.
    """
    if not isinstance(cert, x509.Certificate):
        try:
            cert = load_certificate(cert)
        except ValueError as error:
            return ValidationResult((CertificateProblem(ProblemCode.UNPARSEABLE, str(error)),))
    moment = at if at is not None else datetime.now(UTC)
    problems: list[CertificateProblem] = []
    try:
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        if moment > not_after and not allow_expired:
            problems.append(
                CertificateProblem(ProblemCode.EXPIRED, f"Certificate expired on {_utc_iso(not_after)}.")
            )
        if moment < not_before:
            problems.append(
                CertificateProblem(
                    ProblemCode.NOT_YET_VALID, f"Certificate is not valid before {_utc_iso(not_before)}."
                )
            )
        if _is_ca(cert):
            problems.append(
                CertificateProblem(
                    ProblemCode.CA_CERTIFICATE,
                    "Certificate is a CA certificate (basic constraints CA=true), not a device certificate.",
                )
            )
        key_problem = _key_problem(cert)
        if key_problem is not None:
            problems.append(CertificateProblem(ProblemCode.WEAK_KEY, key_problem))
        if trusted_cas is not None:
            chain_problem = _chain_problem(cert, trusted_cas, tuple(intermediates), moment)
            if chain_problem is not None:
                problems.append(CertificateProblem(ProblemCode.UNTRUSTED_CHAIN, chain_problem))
    except ValueError as error:
        # cryptography parses extensions lazily: a malformed extension surfaces here.
        problems.append(CertificateProblem(ProblemCode.UNPARSEABLE, f"Invalid certificate format: {error}."))
    return ValidationResult(tuple(problems))
