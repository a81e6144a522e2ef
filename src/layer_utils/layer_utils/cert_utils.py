"""Public face of the certificate helpers: loading, validation, thing names, ARNs, private keys.

A thin module over :mod:`layer_utils.certificates` (:class:`ParsedCertificate`, reading DER),
:mod:`layer_utils.cert_loading` (PEM, DER and base64 forms, ``load_certificate``, ``as_parsed``),
:mod:`layer_utils.cert_validation` (``validate_certificate``), :mod:`layer_utils.name_sources`
(thing-name candidates) and :mod:`layer_utils.iot_names` (the name rules); it holds the ARN helpers,
private-key detection and ``format_certificate`` itself. See docs/ARCHITECTURE.md, "Layer modules".
"""

from __future__ import annotations

import base64
import re

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

    Detects any ``-----BEGIN ... PRIVATE KEY-----`` header (PKCS#8 plain or encrypted, RSA, EC, DSA,
    OpenSSH) and the same header inside unbroken base64 text.

    Args:
        data: manifest content.

    Returns:
        Whether a private key header was found.

    """
    raw = data.encode("utf-8", errors="replace") if isinstance(data, str) else bytes(data)
    if _PRIVATE_KEY_PEM.search(raw) is not None:
        return True
    return any(form in raw for form in _PRIVATE_KEY_BASE64)
