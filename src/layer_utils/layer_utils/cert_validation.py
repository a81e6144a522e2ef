"""Certificate validation: :func:`validate_certificate`, the key and chain checks.

Trust is checked by ``cryptography``'s strict verifier first and by OpenSSL for what it cannot read.
Public through :mod:`layer_utils.cert_utils`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from layer_utils.cert_loading import CertificateInput, as_parsed
from layer_utils.certificates import ParsedCertificate

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


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
        """Whether no problem was found."""
        return not self.problems

    @property
    def reasons(self) -> tuple[str, ...]:
        """The English sentence of each problem, in order."""
        return tuple(problem.message for problem in self.problems)

    @property
    def codes(self) -> tuple[str, ...]:
        """The code of each problem, in order."""
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
    """Verify with OpenSSL, which reads what the strict verifier refuses.

    Trust anchors need not be self-signed (partial chains), and unknown critical extensions are
    tolerated, as AWS IoT tolerates them in device certificates.

    Returns:
        None when trusted, else OpenSSL's reason.

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

    Trust is checked at a moment inside the certificate's own validity window, so an expired
    certificate is reported as ``expired`` and not also as untrusted; the strict verifier is tried
    first and OpenSSL's for what it cannot read.

    Args:
        cert: the certificate, an object or raw data (unreadable data is reported as ``unparseable``
            instead of raised).
        trusted_cas: the trust anchors; None: the chain is not checked; an empty sequence: every
            certificate is ``untrusted_chain``.
        intermediates: issuers that may complete the chain.
        at: the validation time (timezone-aware), default now.
        allow_expired: accept certificates past their ``notAfter``.

    Returns:
        The problems, with codes ``unparseable``, ``expired``, ``not_yet_valid``, ``ca_certificate``,
        ``weak_key`` and ``untrusted_chain``.

    Raises:
        ValueError: a trust anchor or intermediate given as data cannot be read.

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
