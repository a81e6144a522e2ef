"""Synthetic Microchip manifests: a JSON array of ES256 JWS entries, and the signer that signs them."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from thingpress.certfactory import Issued, make_ca, make_device_certs
from thingpress.generate_common import (
    Output,
    Summary,
    bad_indices,
    certificates_to_write,
    counted,
    opened,
    seeded_rng,
)
from thingpress.progress import Tick

__all__ = ["MICROCHIP_BAD_KINDS", "make_microchip_signer", "write_microchip"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_microchip_signer(cn: str = "Thingpress Demo Manifest Signer") -> Issued:
    """Create a P-256 manifest signer like Microchip's.

    Args:
        cn: The subject CN.

    Returns:
        The self-signed signer certificate (with a Subject Key Identifier, the JWS ``kid``) and its
        key; the certificate is what an operator uploads under ``verifiers/microchip/``.

    """
    return make_ca(cn)


def _signer_header(signer: Issued, alg: str = "ES256") -> str:
    ski = signer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    header = {
        "alg": alg,
        "kid": _b64url(ski),
        "typ": "JWT",
        "x5t#S256": _b64url(hashlib.sha256(signer.der()).digest()),
    }
    return _b64url(json.dumps(header, separators=(",", ":")).encode())


def _sign(signer: Issued, protected: str, payload: str) -> str:
    key = signer.key
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("The Microchip manifest signer must hold a P-256 EC key.")
    r, s = decode_dss_signature(key.sign(f"{protected}.{payload}".encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _payload(
    unique_id: str, issued: Issued | None, issuers: tuple[x509.Certificate, ...]
) -> dict[str, object]:
    payload: dict[str, object] = {
        "version": 1,
        "model": "ATECC608B",
        "partNumber": "ATECC608B-TNGTLSU-G",
        "manufacturer": {"organizationName": "Thingpress Demo", "organizationalUnitName": "Synthetic"},
        "provisioner": {"organizationName": "Thingpress Demo", "organizationalUnitName": "Synthetic"},
        "distributor": {"organizationName": "Thingpress Demo", "organizationalUnitName": "Synthetic"},
        "groupId": "THINGPRESSDEMO01",
        "provisioningTimestamp": "2025-01-01T00:00:00.000Z",
        "uniqueId": unique_id,
    }
    if issued is not None:
        numbers = issued.certificate.public_key()
        if not isinstance(numbers, ec.EllipticCurvePublicKey):
            raise ValueError("Microchip-format device certificates need an EC key.")
        point = numbers.public_numbers()
        x5c = [base64.b64encode(issued.der()).decode("ascii")]
        x5c += [
            base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
            for cert in issuers
        ]
        payload["publicKeySet"] = {
            "keys": [
                {
                    "kid": "0",
                    "kty": "EC",
                    "crv": "P-256",
                    "x": _b64url(point.x.to_bytes(32, "big")),
                    "y": _b64url(point.y.to_bytes(32, "big")),
                    "x5c": x5c,
                }
            ]
        }
    return payload


MICROCHIP_BAD_KINDS = (
    "bad signature",
    "tampered payload",
    "uniqueId mismatch",
    "unknown signer",
    "no certificate",
)
"""The kinds of damage :func:`write_microchip` injects."""


def write_microchip(
    out: Output,
    certs_or_count: Iterable[Issued] | int,
    *,
    signer: Issued,
    issuer: Issued | None = None,
    bad_fraction: float = 0.0,
    seed: int = 0,
    progress: Tick | None = None,
) -> Summary:
    """Write a Microchip manifest: a JSON array of ES256 JWS entries signed by ``signer``.

    Each payload carries ``publicKeySet`` with slot "0" holding ``x5c`` = [device DER, issuer DER] in
    standard base64. A bad fraction or a non-EC signer raises ``ValueError``.

    Args:
        out: The output.
        certs_or_count: The device certificates (EC P-256), or a count to make with a demo "Crypto
            Authentication Signer" CA (CN ``sn<uniqueId>``).
        signer: The manifest signer (see `make_microchip_signer`).
        issuer: The CA that issued the given certificates (its certificate is ``x5c[1]``).
        bad_fraction: The fraction of entries to damage (one of `MICROCHIP_BAD_KINDS`).
        seed: The seed.
        progress: Told the entries written so far.

    Returns:
        The summary (thing names are the uniqueIds; locators ``entry N (uniqueId X)``).

    """
    rng = seeded_rng(seed)
    id_base = rng.getrandbits(40)
    if isinstance(certs_or_count, int):
        root = make_ca("Thingpress Demo Crypto Authentication Root CA")
        issuer = make_ca("Thingpress Demo Crypto Authentication Signer", issuer=root, path_length=0)
        chain: tuple[x509.Certificate, ...] = (issuer.certificate, root.certificate)
        certs: Iterable[Issued] = make_device_certs(
            certs_or_count, issuer, cn_format=f"sn0123{id_base:010X}{{i:04X}}"
        )
        count: int | None = certs_or_count
    else:
        certs, count, _ = certificates_to_write(certs_or_count, "Microchip", "")
        chain = (issuer.certificate,) if issuer is not None else ()
    bad_entries = bad_indices(count or 0, bad_fraction, rng)
    stranger = make_microchip_signer("Unknown Manifest Signer") if bad_entries else None
    protected = _signer_header(signer)
    names: list[str] = []
    bad: dict[str, str] = {}
    written = 0
    with opened(out) as stream:
        stream.write(b"[")
        for index, issued in enumerate(counted(certs, progress, count)):
            unique_id = f"0123{id_base:010x}{index:04x}"
            kind = rng.choice(MICROCHIP_BAD_KINDS) if index in bad_entries else None
            payload_json = _payload(unique_id, None if kind == "no certificate" else issued, chain[:1])
            payload = _b64url(json.dumps(payload_json, separators=(",", ":")).encode())
            header_id = unique_id
            if kind == "unknown signer" and stranger is not None:
                entry_protected = _signer_header(stranger)
                signature = _sign(stranger, entry_protected, payload)
            else:
                entry_protected = protected
                signature = _sign(signer, protected, payload)
            if kind == "bad signature":
                signature = _b64url(bytes(64))
            elif kind == "tampered payload":
                payload_json["uniqueId"] = f"{unique_id[:-1]}{'0' if unique_id[-1] != '0' else '1'}"
                payload = _b64url(json.dumps(payload_json, separators=(",", ":")).encode())
            elif kind == "uniqueId mismatch":
                header_id = f"0123{id_base ^ 1:010x}{index:04x}"
            entry = {"payload": payload, "protected": entry_protected, "header": {"uniqueId": header_id}}
            entry["signature"] = signature
            if kind is None:
                names.append(unique_id)
            else:
                bad[f"entry {index + 1} (uniqueId {header_id})"] = kind
            stream.write((b"," if written else b"") + b"\n  " + json.dumps(entry).encode("ascii"))
            written += 1
        stream.write(b"\n]\n")
    return Summary("microchip", written, tuple(names), bad, chain)


# Dispatcher ---------------------------------------------------------------------------------------
