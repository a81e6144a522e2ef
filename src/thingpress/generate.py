"""Synthetic vendor manifests for tests, the demo and ``thingpress generate``.

Each writer produces a manifest in the vendor's real layout from certificates made by
:mod:`thingpress.certfactory` and returns a :class:`Summary`: how many entries it wrote, the thing
names the pipeline should create (in manifest order) and the locators of the entries it damaged on
purpose. ``bad_fraction`` picks those entries with a seeded ``random.Random``, so the same seed gives
the same damage. CSV, JSON and line output is streamed, so memory does not grow with the certificate
count; Infineon archives are assembled in memory (py7zr keeps each member's data until it closes).
The Microchip writer lives in `thingpress.generate_microchip`, the shared parts in
`thingpress.generate_common`; this module is the public face of all writers.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import secrets
from collections.abc import Iterable, Sequence

import py7zr

from thingpress.certfactory import Issued, make_device_certs
from thingpress.generate_common import (
    GARBAGE_PEM,
    Output,
    Summary,
    bad_indices,
    certificates_to_write,
    common_name,
    counted,
    demo_chain,
    opened,
    random_uuid,
    seeded_rng,
)
from thingpress.generate_microchip import MICROCHIP_BAD_KINDS, make_microchip_signer, write_microchip
from thingpress.progress import Tick

__all__ = [
    "GENERATED_STYLES",
    "INFINEON_BUNDLES",
    "INFINEON_REEL",
    "MICROCHIP_BAD_KINDS",
    "VENDORS",
    "Output",
    "Summary",
    "generate",
    "make_microchip_signer",
    "write_espressif",
    "write_generated",
    "write_infineon",
    "write_microchip",
]

VENDORS = ("espressif", "generated", "infineon", "microchip")
"""The vendors :func:`generate` can write."""

GENERATED_STYLES = ("b64pem", "pem", "b64der")
"""Layouts of the generated format: base64-of-PEM lines, a PEM bundle, base64-of-DER lines."""

INFINEON_BUNDLES = ("E0E0", "E0E1", "E0E2")
"""The Infineon certificate slots; E0E2 certificates carry RSA keys, like the real ones."""

INFINEON_REEL = "78211223032C7EFA"
"""The reel identifier used in synthetic Infineon archive names."""

# Espressif ----------------------------------------------------------------------------------------


def write_espressif(
    out: Output,
    certs_or_count: Iterable[Issued] | int,
    *,
    bad_fraction: float = 0.0,
    seed: int = 0,
    progress: Tick | None = None,
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
        progress: Told the rows written so far.

    Returns:
        The summary (thing names are the MACs; locators ``row N``, the header being row 1).

    """
    rng = seeded_rng(seed)
    certs, count, chain = certificates_to_write(certs_or_count, "Espressif", "esp-device-{i:08d}")
    bad_rows = bad_indices(count or 0, bad_fraction, rng)
    names: list[str] = []
    bad: dict[str, str] = {}
    written = 0
    with opened(out) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="", write_through=True)
        try:
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["MAC", "cn", "cert"])
            for index, issued in enumerate(counted(certs, progress, count)):
                mac = f"{0x4BA2BB000000 + index:012X}"
                cn, pem = common_name(issued.certificate), issued.pem()
                if index in bad_rows:
                    kind = rng.choice(("garbage certificate", "cn mismatch", "empty MAC"))
                    bad[f"row {index + 2}"] = kind
                    if kind == "garbage certificate":
                        pem = GARBAGE_PEM
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
    progress: Tick | None = None,
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
        progress: Told the entries written so far.

    Returns:
        The summary (thing names are the CNs; locators ``line N``, for a PEM bundle the BEGIN line of
        the block).

    Raises:
        ValueError: An unknown style.

    """
    if style not in GENERATED_STYLES:
        raise ValueError(f"Unknown style {style!r}: use one of {', '.join(GENERATED_STYLES)}.")
    rng = seeded_rng(seed)
    certs, count, chain = certificates_to_write(certs_or_count, "Generated", "Device-{i}")
    bad_entries = bad_indices(count or 0, bad_fraction, rng)
    names: list[str] = []
    bad: dict[str, str] = {}
    line = 1
    written = 0
    with opened(out) as stream:
        for index, issued in enumerate(counted(certs, progress, count)):
            broken = index in bad_entries
            if style == "pem":
                chunk = (GARBAGE_PEM if broken else issued.pem()).encode("ascii")
            elif style == "b64pem":
                pem = GARBAGE_PEM.encode("ascii") if broken else issued.pem().encode("ascii")
                chunk = base64.b64encode(pem) + b"\n"
            else:
                der = b"\x30\x03\x02\x01\x00" if broken else issued.der()
                chunk = base64.b64encode(der) + b"\n"
            if broken:
                bad[f"line {line}"] = "garbage certificate"
            else:
                names.append(common_name(issued.certificate))
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
    progress: Tick | None = None,
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
        progress: Told the certificates made so far, of ``count`` per bundle type.

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
    rng = seeded_rng(seed)
    guid = str(random_uuid(rng))
    root, issuer = demo_chain("OPTIGA Trust M")
    chain = (issuer.certificate, root.certificate)
    chip_prefix = hashlib.sha256(f"{seed}-{guid}".encode()).hexdigest()[:12].upper()
    summaries: dict[str, Summary] = {}
    members: list[tuple[str, bytes]] = []
    for number, bundle in enumerate(bundle_types):
        prefix = hashlib.sha256(f"{seed}-{guid}-{bundle}".encode()).hexdigest()[:48]
        certs = make_device_certs(
            count, issuer, cn_format=prefix + "{i:016x}", key_type="rsa" if bundle == "E0E2" else "ec"
        )
        bad_files = bad_indices(count, bad_fraction, rng)
        files: list[tuple[str, bytes]] = []
        names: list[str] = []
        bad: dict[str, str] = {}
        total = count * len(bundle_types)
        for index, issued in enumerate(counted(certs, progress, total, start=number * count)):
            chip = f"{chip_prefix}{index:08X}"
            name = f"{chip}_{bundle}.pem"
            if index in bad_files:
                bad[f"file {name}"] = "garbage certificate"
                files.append((name, GARBAGE_PEM.encode("ascii")))
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
    with opened(out) as stream:
        stream.write(_seven_zip(members))
    first = summaries[bundle_types[0]]
    return Summary("infineon", first.count, first.thing_names, first.bad, chain, summaries)


def generate(
    vendor: str,
    count: int,
    out: Output,
    *,
    bad_fraction: float = 0.0,
    signer: Issued | None = None,
    seed: int = 0,
    style: str = "b64pem",
    progress: Tick | None = None,
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
        progress: Told the certificates made so far (Infineon: of ``count`` per bundle type).

    Returns:
        The writer's summary.

    Raises:
        ValueError: An unknown vendor or a negative count.

    """
    if count < 0:
        raise ValueError(f"Count must not be negative, got {count}.")
    if vendor == "espressif":
        return write_espressif(out, count, bad_fraction=bad_fraction, seed=seed, progress=progress)
    if vendor == "generated":
        return write_generated(
            out, count, style=style, bad_fraction=bad_fraction, seed=seed, progress=progress
        )
    if vendor == "infineon":
        return write_infineon(out, count, bad_fraction=bad_fraction, seed=seed, progress=progress)
    if vendor == "microchip":
        chosen = signer if signer is not None else make_microchip_signer()
        return write_microchip(
            out, count, signer=chosen, bad_fraction=bad_fraction, seed=seed, progress=progress
        )
    raise ValueError(f"Unknown vendor {vendor!r}: use one of {', '.join(VENDORS)}.")
