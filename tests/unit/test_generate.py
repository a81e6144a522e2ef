"""Synthetic manifest writers: layouts, summaries, determinism and argument checks."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from pathlib import Path

import py7zr
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from layer_utils.cert_utils import ParsedCertificate, as_parsed, load_certificate
from manifest_provider.vendors import detect, get_parser
from manifest_provider.vendors.base import ParseOptions
from thingpress.certfactory import Issued, make_ca, make_device_certs
from thingpress.generate import (
    VENDORS,
    generate,
    make_microchip_signer,
    write_espressif,
    write_generated,
    write_infineon,
    write_microchip,
)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def signer() -> Issued:
    return make_microchip_signer()


def test_espressif_layout_and_thing_names() -> None:
    buffer = io.BytesIO()
    summary = write_espressif(buffer, 5)
    rows = list(csv.reader(io.StringIO(buffer.getvalue().decode())))
    assert rows[0] == ["MAC", "cn", "cert"]
    assert [row[0] for row in rows[1:]] == list(summary.thing_names)
    assert summary.thing_names[0] == "4BA2BB000000"
    for row in rows[1:]:
        assert as_parsed(load_certificate(row[2])).subject_cn == row[1]
    assert summary.count == 5
    assert summary.bad == {}
    assert [as_parsed(cert).subject_cn for cert in summary.ca_certificates] == [
        "Thingpress Demo Espressif Intermediate CA",
        "Thingpress Demo Espressif Root CA",
    ]


def test_bad_entries_are_deterministic_per_seed() -> None:
    first = write_generated(io.BytesIO(), 40, bad_fraction=0.25, seed=9)
    again = write_generated(io.BytesIO(), 40, bad_fraction=0.25, seed=9)
    other = write_generated(io.BytesIO(), 40, bad_fraction=0.25, seed=10)
    assert first.bad == again.bad
    assert len(first.bad) == 10
    assert first.bad != other.bad
    assert first.count == 40
    assert len(first.thing_names) == 30


def test_writers_accept_given_certificates_and_paths(tmp_path: Path) -> None:
    issuer = make_ca("Given CA")
    certs = list(make_device_certs(3, issuer, cn_format="given-{i}"))
    path = tmp_path / "given.txt"
    summary = write_generated(str(path), certs, style="pem")
    assert summary.thing_names == ("given-0", "given-1", "given-2")
    assert summary.ca_certificates == ()
    with path.open("rb") as source:
        entries = list(get_parser("generated").entries(source, ParseOptions()))
    assert [e.certificate.subject_cn for e in entries if e.certificate] == ["given-0", "given-1", "given-2"]
    csv_summary = write_espressif(tmp_path / "given.csv", iter(certs))
    assert csv_summary.count == 3


def test_generated_styles_are_detected() -> None:
    for style, marker in (
        ("b64pem", b"LS0tLS1CRUdJTi"),
        ("pem", b"-----BEGIN CERTIFICATE"),
        ("b64der", b"MII"),
    ):
        buffer = io.BytesIO()
        write_generated(buffer, 2, style=style)
        assert buffer.getvalue().startswith(marker)
        assert detect("upload.txt", buffer.getvalue()[:4096]).name == "generated"


def test_infineon_archive_layout(tmp_path: Path) -> None:
    path = tmp_path / "infineon.7z"
    summary = write_infineon(path, 4)
    with py7zr.SevenZipFile(path) as outer:
        names = outer.getnames()
        contents = {name: io.BytesIO() for name in names}
        outer.extractall(factory=_Collect(contents))
    assert names[-1] == "README.txt"
    bundles = [name for name in names if name.endswith("_Certs.7z")]
    assert [name.split("_")[-2] for name in bundles] == ["E0E0", "E0E1", "E0E2"]
    keys = next(name for name in names if name.endswith("_keys.7z"))
    with pytest.raises(py7zr.PasswordRequired):
        py7zr.SevenZipFile(io.BytesIO(contents[keys].getvalue()))
    assert set(summary.bundles) == {"E0E0", "E0E1", "E0E2"}
    assert summary.thing_names == summary.bundles["E0E0"].thing_names
    assert all(re.fullmatch(r"[0-9A-F]{20}", name) for name in summary.thing_names)
    assert summary.bundles["E0E2"].thing_names == summary.thing_names  # the same chips in every slot
    e0e2 = list(get_parser("infineon").entries(path.open("rb"), ParseOptions(bundle_type="E0E2")))
    assert all(isinstance(e.certificate.public_key, rsa.RSAPublicKey) for e in e0e2 if e.certificate)
    assert [e.vendor_thing_name for e in e0e2] == list(summary.bundles["E0E2"].thing_names)


class _Collect(py7zr.io.WriterFactory):
    """Extract members into the given BytesIO objects (test helper)."""

    def __init__(self, targets: dict[str, io.BytesIO]) -> None:
        self.targets = targets

    def create(self, filename: str) -> py7zr.io.Py7zIO:
        target = self.targets[filename]

        class _Writer(py7zr.io.Py7zIO):
            def write(self, s: bytes | bytearray) -> int:
                return target.write(s)

            def read(self, size: int | None = None) -> bytes:
                return b""

            def seek(self, offset: int, whence: int = 0) -> int:
                return 0

            def flush(self) -> None:
                return None

            def size(self) -> int:
                return target.tell()

        return _Writer()


def test_infineon_without_keys_and_selected_bundles(tmp_path: Path) -> None:
    path = tmp_path / "one.7z"
    summary = write_infineon(path, 2, bundle_types=("E0E1",), include_keys=False)
    with py7zr.SevenZipFile(path) as outer:
        names = outer.getnames()
    assert len(names) == 2
    assert names[0].endswith("_E0E1_Certs.7z")
    assert set(summary.bundles) == {"E0E1"}


def test_microchip_entry_structure(signer: Issued) -> None:
    buffer = io.BytesIO()
    summary = write_microchip(buffer, 3, signer=signer)
    entries = json.loads(buffer.getvalue())
    assert len(entries) == 3
    ski = signer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    for entry, unique_id in zip(entries, summary.thing_names, strict=True):
        assert set(entry) == {"payload", "protected", "header", "signature"}
        header = json.loads(_b64url_decode(entry["protected"]))
        assert header["alg"] == "ES256"
        assert _b64url_decode(header["kid"]) == ski
        assert _b64url_decode(header["x5t#S256"]) == hashlib.sha256(signer.der()).digest()
        assert len(_b64url_decode(entry["signature"])) == 64
        payload = json.loads(_b64url_decode(entry["payload"]))
        assert payload["uniqueId"] == entry["header"]["uniqueId"] == unique_id
        assert len(unique_id) == 18
        slot = payload["publicKeySet"]["keys"][0]
        assert slot["kid"] == "0"
        device, issuer = (load_certificate(base64.b64decode(item, validate=True)) for item in slot["x5c"])
        assert as_parsed(device).subject_cn == f"sn{unique_id.upper()}"
        assert device.issuer == issuer.subject
        assert ParsedCertificate.from_x509(summary.ca_certificates[0]) == issuer


def test_microchip_with_given_certificates(signer: Issued) -> None:
    issuer = make_ca("Given Signer CA")
    certs = list(make_device_certs(2, issuer, cn_format="given-{i}"))
    buffer = io.BytesIO()
    write_microchip(buffer, certs, signer=signer, issuer=issuer)
    buffer.seek(0)
    options = ParseOptions(microchip_verifiers=(ParsedCertificate.from_x509(signer.certificate),))
    entries = list(get_parser("microchip").entries(buffer, options))
    assert [as_parsed(e.certificate).subject_cn for e in entries if e.certificate] == ["given-0", "given-1"]
    expected = ParsedCertificate.from_x509(issuer.certificate)
    assert [e.intermediates for e in entries] == [(expected,), (expected,)]


def test_microchip_signer_must_be_ec() -> None:
    rsa_signer = make_ca("RSA signer", key_type="rsa")
    with pytest.raises(ValueError, match="P-256 EC key"):
        write_microchip(io.BytesIO(), 1, signer=rsa_signer)


def test_make_microchip_signer_is_p256_with_ski(signer: Issued) -> None:
    assert isinstance(signer.key, ec.EllipticCurvePrivateKey)
    assert isinstance(signer.key.curve, ec.SECP256R1)
    assert signer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


@pytest.mark.parametrize("vendor", VENDORS)
def test_generate_dispatches_every_vendor(vendor: str, tmp_path: Path, signer: Issued) -> None:
    path = tmp_path / f"{vendor}.manifest"
    summary = generate(vendor, 6, path, bad_fraction=0.5, signer=signer, seed=1)
    assert (summary.vendor, summary.count, len(summary.bad)) == (vendor, 6, 3)
    with path.open("rb") as source:
        head = source.read(4096)
        source.seek(0)
        parser = detect(path.name, head)
        signers = (ParsedCertificate.from_x509(signer.certificate),)
        entries = list(parser.entries(source, ParseOptions(microchip_verifiers=signers)))
    assert parser.name == vendor
    names = tuple(
        e.vendor_thing_name or (e.certificate.subject_cn if e.certificate else None)
        for e in entries
        if e.error is None
    )
    assert names == summary.thing_names
    assert {e.locator for e in entries if e.error is not None} == set(summary.bad)


def test_generate_makes_its_own_signer(tmp_path: Path) -> None:
    summary = generate("microchip", 2, tmp_path / "m.json")
    assert summary.count == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: generate("acme", 1, io.BytesIO()), "Unknown vendor 'acme'"),
        (lambda: generate("generated", -1, io.BytesIO()), "Count must not be negative"),
        (
            lambda: generate("generated", 3, io.BytesIO(), bad_fraction=1.5),
            "bad_fraction must be between 0 and 1",
        ),
        (lambda: write_generated(io.BytesIO(), 1, style="der"), "Unknown style 'der'"),
        (lambda: write_infineon(io.BytesIO(), 1, bundle_types=("E0E9",)), "Bundle types must be among"),
        (lambda: write_infineon(io.BytesIO(), 1, bundle_types=()), "Bundle types must be among"),
    ],
)
def test_argument_errors(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call()


def test_generated_streams_thousands_quickly() -> None:
    buffer = io.BytesIO()
    summary = write_generated(buffer, 3000)
    assert summary.count == 3000
    assert buffer.getvalue().count(b"\n") == 3000
    assert summary.thing_names[-1] == "Device-2999"
