"""Synthetic vendor manifests for tests, the demo and ``thingpress generate``.

Each writer produces a manifest in the vendor's real layout from certificates made by
:mod:`thingpress.certfactory` and returns a :class:`Summary`: how many entries it wrote, the thing
names the pipeline should create (in manifest order) and the locators of the entries it damaged on
purpose. ``bad_fraction`` picks those entries with a seeded ``random.Random``, so the same seed gives
the same damage. CSV, JSON and line output is streamed, so memory does not grow with the certificate
count; Infineon archives are assembled in memory (py7zr keeps each member's data until it closes).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import random
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import py7zr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from thingpress.certfactory import Issued, make_ca, make_device_certs

VENDORS = ("espressif", "generated", "infineon", "microchip")
"""The vendors :func:`generate` can write."""

GENERATED_STYLES = ("b64pem", "pem", "b64der")
"""Layouts of the generated format: base64-of-PEM lines, a PEM bundle, base64-of-DER lines."""

INFINEON_BUNDLES = ("E0E0", "E0E1", "E0E2")
"""The Infineon certificate slots; E0E2 certificates carry RSA keys, like the real ones."""

INFINEON_REEL = "78211223032C7EFA"
"""The reel identifier used in synthetic Infineon archive names."""

Output = BinaryIO | str | Path
"""Where a writer puts the manifest: a binary stream or a file path."""


@dataclass(frozen=True)
class Summary:
    """What a writer produced.

    ``vendor`` and ``count`` (entries written, good and bad); ``thing_names``: the expected thing
    names of the good entries, in manifest order; ``bad``: locator of each damaged entry → what was
    done to it; ``ca_certificates``: the chain that issued the device certificates (issuing CA
    first); ``bundles``: for Infineon, the summary of every bundle type written (the top-level
    fields describe the first one, the bundle the parser reads by default).
    """

    vendor: str
    count: int
    thing_names: tuple[str, ...]
    bad: dict[str, str] = field(default_factory=dict)
    ca_certificates: tuple[x509.Certificate, ...] = ()
    bundles: dict[str, Summary] = field(default_factory=dict)


@contextlib.contextmanager
def _opened(out: Output) -> Iterator[BinaryIO]:
    """Yield a binary stream for ``out``, opening (and closing) it when it is a path."""
    if isinstance(out, str | Path):
        with Path(out).open("wb") as stream:
            yield stream
    else:
        yield out


def _rng(seed: int) -> random.Random:
    """Return the seeded generator that chooses test damage (reproducible on purpose, not secret)."""
    return random.Random(seed)  # noqa: S311 - reproducible test data, not security  # nosec B311


def _bad_indices(count: int, bad_fraction: float, rng: random.Random) -> set[int]:
    """Pick ``round(count * bad_fraction)`` distinct indices to damage."""
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"bad_fraction must be between 0 and 1, got {bad_fraction}.")
    return set(rng.sample(range(count), round(count * bad_fraction)))


def _demo_chain(name: str) -> tuple[Issued, Issued]:
    """Return a demo root CA and an intermediate that issues device certificates."""
    root = make_ca(f"Thingpress Demo {name} Root CA")
    return root, make_ca(f"Thingpress Demo {name} Intermediate CA", issuer=root, path_length=0)


def _certificates(
    certs_or_count: Iterable[Issued] | int, name: str, cn_format: str
) -> tuple[Iterable[Issued], int | None, tuple[x509.Certificate, ...]]:
    """Return device certificates to write, their count when known, and the issuing chain."""
    if isinstance(certs_or_count, int):
        root, issuer = _demo_chain(name)
        certs = make_device_certs(certs_or_count, issuer, cn_format=cn_format)
        return certs, certs_or_count, (issuer.certificate, root.certificate)
    if isinstance(certs_or_count, Sequence):
        return certs_or_count, len(certs_or_count), ()
    materialised = list(certs_or_count)
    return materialised, len(materialised), ()


def _cn(certificate: x509.Certificate) -> str:
    values = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = values[0].value if values else ""
    return value.decode() if isinstance(value, bytes) else value


_GARBAGE_PEM = (
    "-----BEGIN CERTIFICATE-----\nVGhpcyBpcyBub3QgYSBjZXJ0aWZpY2F0ZS4=\n-----END CERTIFICATE-----\n"
)


# Espressif ----------------------------------------------------------------------------------------


def write_espressif(
    out: Output, certs_or_count: Iterable[Issued] | int, *, bad_fraction: float = 0.0, seed: int = 0
) -> Summary:
    """Write an Espressif ``MAC,cn,cert`` CSV manifest.

    MACs are 12 upper-case hex digits derived from the row number. A bad fraction raises
    ``ValueError``.

    Args:
        out: The output.
        certs_or_count: The device certificates, or a count to make with a demo CA (CNs like
            Espressif's UUIDs).
        bad_fraction: The fraction of rows to damage (a garbage certificate, a cn column that does not
            match the certificate, or an empty MAC).
        seed: The seed.

    Returns:
        The summary (thing names are the MACs; locators ``row N``, the header being row 1).

    """
    rng = _rng(seed)
    certs, count, chain = _certificates(certs_or_count, "Espressif", "esp-device-{i:08d}")
    bad_rows = _bad_indices(count or 0, bad_fraction, rng)
    names: list[str] = []
    bad: dict[str, str] = {}
    written = 0
    with _opened(out) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="", write_through=True)
        try:
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["MAC", "cn", "cert"])
            for index, issued in enumerate(certs):
                mac = f"{0x4BA2BB000000 + index:012X}"
                cn, pem = _cn(issued.certificate), issued.pem()
                if index in bad_rows:
                    kind = rng.choice(("garbage certificate", "cn mismatch", "empty MAC"))
                    bad[f"row {index + 2}"] = kind
                    if kind == "garbage certificate":
                        pem = _GARBAGE_PEM
                    elif kind == "cn mismatch":
                        cn = f"{cn}-other"
                    else:
                        mac = ""
                else:
                    names.append(mac)
                writer.writerow([mac, cn, pem.rstrip("\n")])
                written += 1
        finally:
            text.detach()
    return Summary("espressif", written, tuple(names), bad, chain)


# Generated ----------------------------------------------------------------------------------------


def write_generated(
    out: Output,
    certs_or_count: Iterable[Issued] | int,
    *,
    style: str = "b64pem",
    bad_fraction: float = 0.0,
    seed: int = 0,
) -> Summary:
    """Write generated certificates in one of `GENERATED_STYLES`.

    A bad fraction raises ``ValueError``.

    Args:
        out: The output.
        certs_or_count: The device certificates, or a count to make with a demo CA (CNs
            ``Device-0``, ``Device-1``, …).
        style: The layout.
        bad_fraction: The fraction of entries to damage (a garbage certificate in the same layout).
        seed: The seed.

    Returns:
        The summary (thing names are the CNs; locators ``line N``, for a PEM bundle the BEGIN line of
        the block).

    Raises:
        ValueError: An unknown style.

    """
    if style not in GENERATED_STYLES:
        raise ValueError(f"Unknown style {style!r}: use one of {', '.join(GENERATED_STYLES)}.")
    rng = _rng(seed)
    certs, count, chain = _certificates(certs_or_count, "Generated", "Device-{i}")
    bad_entries = _bad_indices(count or 0, bad_fraction, rng)
    names: list[str] = []
    bad: dict[str, str] = {}
    line = 1
    written = 0
    with _opened(out) as stream:
        for index, issued in enumerate(certs):
            broken = index in bad_entries
            if style == "pem":
                chunk = (_GARBAGE_PEM if broken else issued.pem()).encode("ascii")
            elif style == "b64pem":
                pem = _GARBAGE_PEM.encode("ascii") if broken else issued.pem().encode("ascii")
                chunk = base64.b64encode(pem) + b"\n"
            else:
                der = b"\x30\x03\x02\x01\x00" if broken else issued.der()
                chunk = base64.b64encode(der) + b"\n"
            if broken:
                bad[f"line {line}"] = "garbage certificate"
            else:
                names.append(_cn(issued.certificate))
            stream.write(chunk)
            line += chunk.count(b"\n")
            written += 1
    return Summary("generated", written, tuple(names), bad, chain)


# Infineon -----------------------------------------------------------------------------------------

_INFINEON_README = """OPTIGA(TM) Trust M Express certificate delivery (synthetic, made by thingpress generate)

{reel}_<GUID>_E0E0_Certs.7z  device certificates of key slot E0E0 (ECC)
{reel}_<GUID>_E0E1_Certs.7z  device certificates of key slot E0E1 (ECC)
{reel}_<GUID>_E0E2_Certs.7z  device certificates of key slot E0E2 (RSA)
{reel}_<GUID>_keys.7z        encrypted; never needed to register devices
"""


def _seven_zip(files: Iterable[tuple[str, bytes]], *, password: str | None = None) -> bytes:
    """Return a 7z archive (LZMA2, solid) holding ``files``; encrypted with ``password`` when given."""
    buffer = io.BytesIO()
    filters = [{"id": py7zr.FILTER_LZMA2}]
    if password is not None:
        filters = [{"id": py7zr.FILTER_LZMA2}, {"id": py7zr.FILTER_CRYPTO_AES256_SHA256}]
    with py7zr.SevenZipFile(
        buffer, "w", filters=filters, password=password, header_encryption=password is not None
    ) as archive:
        for name, data in files:
            archive.writestr(data, name)
    return buffer.getvalue()


def write_infineon(
    out: Output,
    count: int,
    *,
    bundle_types: Sequence[str] = INFINEON_BUNDLES,
    include_keys: bool = True,
    bad_fraction: float = 0.0,
    seed: int = 0,
) -> Summary:
    """Write an Infineon 7z-of-7z manifest like the vendor's.

    Every archive also gets a README.txt. A bad fraction raises ``ValueError``.

    Args:
        out: The output.
        count: The number of devices.
        bundle_types: The bundle types to include, each with its own certificates (E0E2 with RSA
            device keys).
        include_keys: Add the encrypted ``_keys.7z`` (its password is thrown away: nothing may ever
            open it).
        bad_fraction: The fraction of PEM files to damage.
        seed: The seed.

    Returns:
        The summary of the first bundle with all bundles in ``bundles`` (thing names are the
        20-hex-digit chip IDs of the file names ``<chipID>_<BUNDLE>.pem``, the same chips in every
        bundle; locators ``file <name>``).

    Raises:
        ValueError: An unknown bundle type.

    """
    unknown = [bundle for bundle in bundle_types if bundle not in INFINEON_BUNDLES]
    if unknown or not bundle_types:
        raise ValueError(f"Bundle types must be among {', '.join(INFINEON_BUNDLES)}, got {bundle_types}.")
    rng = _rng(seed)
    guid = str(_uuid(rng))
    root, issuer = _demo_chain("OPTIGA Trust M")
    chain = (issuer.certificate, root.certificate)
    chip_prefix = hashlib.sha256(f"{seed}-{guid}".encode()).hexdigest()[:12].upper()
    summaries: dict[str, Summary] = {}
    members: list[tuple[str, bytes]] = []
    for bundle in bundle_types:
        prefix = hashlib.sha256(f"{seed}-{guid}-{bundle}".encode()).hexdigest()[:48]
        certs = make_device_certs(
            count, issuer, cn_format=prefix + "{i:016x}", key_type="rsa" if bundle == "E0E2" else "ec"
        )
        bad_files = _bad_indices(count, bad_fraction, rng)
        files: list[tuple[str, bytes]] = []
        names: list[str] = []
        bad: dict[str, str] = {}
        for index, issued in enumerate(certs):
            chip = f"{chip_prefix}{index:08X}"
            name = f"{chip}_{bundle}.pem"
            if index in bad_files:
                bad[f"file {name}"] = "garbage certificate"
                files.append((name, _GARBAGE_PEM.encode("ascii")))
            else:
                names.append(chip)
                files.append((name, issued.pem().encode("ascii")))
        members.append((f"{INFINEON_REEL}_{guid}_{bundle}_Certs.7z", _seven_zip(files)))
        summaries[bundle] = Summary("infineon", count, tuple(names), bad, chain)
    if include_keys:
        tripwire = [("NEVER_OPENED.pem", root.key_pem().encode("ascii"))]
        members.append(
            (f"{INFINEON_REEL}_{guid}_keys.7z", _seven_zip(tripwire, password=secrets.token_hex(16)))
        )
    members.append(("README.txt", _INFINEON_README.format(reel=INFINEON_REEL).encode("ascii")))
    with _opened(out) as stream:
        stream.write(_seven_zip(members))
    first = summaries[bundle_types[0]]
    return Summary("infineon", first.count, first.thing_names, first.bad, chain, summaries)


def _uuid(rng: random.Random) -> str:
    raw = f"{rng.getrandbits(128):032x}"
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


# Microchip ----------------------------------------------------------------------------------------


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

    Returns:
        The summary (thing names are the uniqueIds; locators ``entry N (uniqueId X)``).

    """
    rng = _rng(seed)
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
        certs, count, _ = _certificates(certs_or_count, "Microchip", "")
        chain = (issuer.certificate,) if issuer is not None else ()
    bad_entries = _bad_indices(count or 0, bad_fraction, rng)
    stranger = make_microchip_signer("Unknown Manifest Signer") if bad_entries else None
    protected = _signer_header(signer)
    names: list[str] = []
    bad: dict[str, str] = {}
    written = 0
    with _opened(out) as stream:
        stream.write(b"[")
        for index, issued in enumerate(certs):
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


def generate(
    vendor: str,
    count: int,
    out: Output,
    *,
    bad_fraction: float = 0.0,
    signer: Issued | None = None,
    seed: int = 0,
    style: str = "b64pem",
) -> Summary:
    """Write a synthetic manifest of ``count`` devices for ``vendor`` (one of `VENDORS`).

    A bad fraction raises ``ValueError``.

    Args:
        vendor: The vendor.
        count: The number of devices.
        out: The output.
        bad_fraction: The fraction of damaged entries.
        signer: The Microchip signer; None for a new one from `make_microchip_signer` (its certificate
            is not returned, so pass one to verify the result).
        seed: The seed.
        style: The generated-format style.

    Returns:
        The writer's summary.

    Raises:
        ValueError: An unknown vendor or a negative count.

    """
    if count < 0:
        raise ValueError(f"Count must not be negative, got {count}.")
    if vendor == "espressif":
        return write_espressif(out, count, bad_fraction=bad_fraction, seed=seed)
    if vendor == "generated":
        return write_generated(out, count, style=style, bad_fraction=bad_fraction, seed=seed)
    if vendor == "infineon":
        return write_infineon(out, count, bad_fraction=bad_fraction, seed=seed)
    if vendor == "microchip":
        chosen = signer if signer is not None else make_microchip_signer()
        return write_microchip(out, count, signer=chosen, bad_fraction=bad_fraction, seed=seed)
    raise ValueError(f"Unknown vendor {vendor!r}: use one of {', '.join(VENDORS)}.")
