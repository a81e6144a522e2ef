"""Vendor parser plugins: real vendor files, synthetic round trips and hostile input."""

from __future__ import annotations

import base64
import codecs
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import py7zr
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from layer_utils.cert_utils import ParsedCertificate, as_parsed, load_certificate
from manifest_provider.limits import Limits
from manifest_provider.vendors import PARSERS, detect, get_parser
from manifest_provider.vendors.base import ManifestEntry, ManifestFormatError, ParseOptions
from manifest_provider.vendors.microchip_json import json_depth
from testing.helpers import seven_zip
from thingpress.certfactory import Issued, make_ca, make_device_certs
from thingpress.generate import (
    GENERATED_STYLES,
    MICROCHIP_BAD_KINDS,
    make_microchip_signer,
    write_espressif,
    write_generated,
    write_infineon,
    write_microchip,
)


def parse(vendor: str, data: bytes, options: ParseOptions | None = None) -> list[ManifestEntry]:
    return list(get_parser(vendor).entries(io.BytesIO(data), options or ParseOptions()))


def parse_file(vendor: str, path: Path, options: ParseOptions | None = None) -> list[ManifestEntry]:
    with path.open("rb") as source:
        return list(get_parser(vendor).entries(source, options or ParseOptions()))


def errors(entries: list[ManifestEntry]) -> dict[str, str]:
    return {entry.locator: entry.error for entry in entries if entry.error is not None}


def good(entries: list[ManifestEntry]) -> list[ManifestEntry]:
    return [entry for entry in entries if entry.error is None]


def cns(entries: list[ManifestEntry]) -> list[str | None]:
    return [entry.certificate.subject_cn for entry in good(entries) if entry.certificate is not None]


def parsed_x509(certificate: x509.Certificate) -> ParsedCertificate:
    return ParsedCertificate.from_x509(certificate)


def parsed(issued: Issued) -> ParsedCertificate:
    return parsed_x509(issued.certificate)


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca("Test Issuing CA")


@pytest.fixture(scope="module")
def devices(ca: Issued) -> list[Issued]:
    return list(make_device_certs(4, ca, cn_format="dev-{i}"))


@pytest.fixture(scope="module")
def signer() -> Issued:
    return make_microchip_signer()


@pytest.fixture(scope="module")
def verifiers(shared_manifests: Path) -> tuple[ParsedCertificate, ...]:
    folder = shared_manifests / "microchip" / "verifiers"
    return tuple(load_certificate(path.read_bytes()) for path in sorted(folder.glob("*.crt")))


# Real vendor files ---------------------------------------------------------------------------------


def test_real_espressif_csv(shared_manifests: Path) -> None:
    entries = parse_file("espressif", shared_manifests / "espressif" / "manifest-espressif.csv")
    assert len(entries) == 7
    assert errors(entries) == {}
    assert [e.locator for e in entries] == [f"row {n}" for n in range(2, 9)]
    assert "4BA2BB8764BD" in {e.vendor_thing_name for e in entries}
    assert all(re.fullmatch(r"[0-9A-F]{12}", e.vendor_thing_name or "") for e in entries)
    assert all(isinstance(e.certificate.public_key, rsa.RSAPublicKey) for e in entries if e.certificate)


def test_real_espressif_single_pem(shared_manifests: Path) -> None:
    entries = parse_file("espressif", shared_manifests / "espressif" / "single.pem")
    assert len(entries) == 1
    assert entries[0].certificate is not None
    # A PEM file carries no device identifier: the CN or the fingerprint names the thing.
    assert entries[0].vendor_thing_name is None
    assert entries[0].certificate.subject_cn


def test_real_generated(shared_manifests: Path) -> None:
    entries = parse_file("generated", shared_manifests / "generated" / "certificates_test.txt")
    assert [e.vendor_thing_name for e in entries] == [None] * 100
    assert cns(entries) == [f"Device-{i}" for i in range(100)]
    assert [e.locator for e in entries] == [f"line {i}" for i in range(1, 101)]
    assert [e.ordinal for e in entries] == list(range(100))


@pytest.mark.parametrize(("bundle", "key_type"), [("E0E0", ec), ("E0E1", ec), ("E0E2", rsa)])
def test_real_infineon_bundles(shared_manifests: Path, bundle: str, key_type: Any) -> None:
    entries = parse_file(
        "infineon", shared_manifests / "infineon" / "manifest-infineon.7z", ParseOptions(bundle_type=bundle)
    )
    assert len(entries) == 200
    assert errors(entries) == {}
    assert all(re.fullmatch(r"[0-9A-F]{20}", e.vendor_thing_name or "") for e in entries)
    assert all(e.locator == f"file {e.vendor_thing_name}_{bundle}.pem" for e in entries)
    public_type = ec.EllipticCurvePublicKey if key_type is ec else rsa.RSAPublicKey
    assert all(isinstance(e.certificate.public_key, public_type) for e in entries if e.certificate)
    assert len({e.vendor_thing_name for e in entries}) == 200


def test_infineon_never_opens_keys_archive(shared_manifests: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[py7zr.py7zr.Worker] = []
    extracted: list[str] = []
    runs: list[py7zr.py7zr.Worker] = []
    original_init = py7zr.SevenZipFile.__init__
    original_register = py7zr.py7zr.Worker.register_filelike
    original_extract = py7zr.py7zr.Worker.extract

    def spy_init(self: py7zr.SevenZipFile, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        opened.append(self.worker)

    def spy_register(self: py7zr.py7zr.Worker, index: int, fileish: Any) -> None:
        if fileish is not None:
            extracted.append(self.files[index].filename)
        original_register(self, index, fileish)

    def spy_extract(self: py7zr.py7zr.Worker, *args: Any, **kwargs: Any) -> None:
        runs.append(self)
        original_extract(self, *args, **kwargs)

    monkeypatch.setattr(py7zr.SevenZipFile, "__init__", spy_init)
    monkeypatch.setattr(py7zr.py7zr.Worker, "register_filelike", spy_register)
    monkeypatch.setattr(py7zr.py7zr.Worker, "extract", spy_extract)
    entries = parse_file("infineon", shared_manifests / "infineon" / "manifest-infineon.7z")
    assert len(entries) == 200
    assert len(opened) == 2
    assert runs == opened  # each archive is decompressed in one pass
    assert not any("keys" in name for name in extracted)
    assert extracted[0].endswith("_E0E0_Certs.7z")
    assert sorted(extracted[1:]) == sorted(entry.locator.removeprefix("file ") for entry in entries)


def test_real_microchip_has_no_certificates(
    shared_manifests: Path, verifiers: tuple[ParsedCertificate, ...]
) -> None:
    path = shared_manifests / "microchip" / "ECC608-TMNGTLSS-B.json"
    entries = parse_file("microchip", path, ParseOptions(microchip_verifiers=verifiers))
    assert len(entries) == 10
    raw = json.loads(path.read_text())
    for entry, element in zip(entries, raw, strict=True):
        unique_id = element["header"]["uniqueId"]
        assert entry.locator == f"entry {entry.ordinal + 1} (uniqueId {unique_id})"
        assert entry.error == f"{entry.locator}: no certificate in manifest entry."
        assert entry.certificate is None


def test_real_microchip_signature_is_really_checked(
    shared_manifests: Path, verifiers: tuple[ParsedCertificate, ...]
) -> None:
    raw = json.loads((shared_manifests / "microchip" / "ECC608-TMNGTLSS-B.json").read_text())
    signature = bytearray(base64.urlsafe_b64decode(raw[0]["signature"] + "=="))
    signature[5] ^= 1
    raw[0]["signature"] = base64.urlsafe_b64encode(bytes(signature)).rstrip(b"=").decode()
    entries = parse("microchip", json.dumps(raw).encode(), ParseOptions(microchip_verifiers=verifiers))
    assert "the signature does not verify with signer 'Manifest Signer 005'" in (entries[0].error or "")
    assert entries[1].error is not None and entries[1].error.endswith("no certificate in manifest entry.")


def test_real_microchip_without_verifiers(shared_manifests: Path) -> None:
    entries = parse_file("microchip", shared_manifests / "microchip" / "ECC608-TMNGTLSS-B.json")
    assert len(entries) == 10
    assert all(
        re.search(r": no trusted signer matches kid \S+ and x5t#S256 \S+\.$", e.error or "") for e in entries
    )


def test_real_microchip_signer_not_yet_valid(
    shared_manifests: Path, verifiers: tuple[ParsedCertificate, ...]
) -> None:
    options = ParseOptions(microchip_verifiers=verifiers, now=datetime(2020, 1, 1, tzinfo=UTC))
    entries = parse_file("microchip", shared_manifests / "microchip" / "ECC608-TMNGTLSS-B.json", options)
    assert all(
        "the signer 'Manifest Signer 005' is not valid at 2020-01-01" in (e.error or "") for e in entries
    )


# Synthetic round trips -----------------------------------------------------------------------------


def test_espressif_round_trip() -> None:
    buffer = io.BytesIO()
    summary = write_espressif(buffer, 30, bad_fraction=0.3, seed=7)
    entries = parse("espressif", buffer.getvalue())
    assert len(entries) == 30
    assert tuple(e.vendor_thing_name for e in good(entries)) == summary.thing_names
    assert set(errors(entries)) == set(summary.bad)
    reasons = {"garbage certificate": "Invalid certificate format", "cn mismatch": "does not match"}
    reasons["empty MAC"] = "the MAC column is empty."
    for locator, kind in summary.bad.items():
        assert reasons[kind] in errors(entries)[locator]


@pytest.mark.parametrize("style", GENERATED_STYLES)
def test_generated_round_trip(style: str) -> None:
    buffer = io.BytesIO()
    summary = write_generated(buffer, 25, style=style, bad_fraction=0.2, seed=3)
    entries = parse("generated", buffer.getvalue())
    assert len(entries) == 25
    assert tuple(cns(entries)) == summary.thing_names
    assert summary.thing_names[0] in {"Device-0", "Device-1"}
    assert set(errors(entries)) == set(summary.bad)
    assert all("Invalid certificate format" in reason for reason in errors(entries).values())


def test_infineon_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "infineon.7z"
    summary = write_infineon(path, 12, bad_fraction=0.25, seed=5)
    for bundle, bundle_summary in summary.bundles.items():
        entries = parse_file("infineon", path, ParseOptions(bundle_type=bundle))
        assert len(entries) == 12
        assert tuple(e.vendor_thing_name for e in good(entries)) == bundle_summary.thing_names
        assert set(errors(entries)) == set(bundle_summary.bad)
        assert len(bundle_summary.bad) == 3


def test_microchip_round_trip_with_every_kind_of_damage(signer: Issued) -> None:
    buffer = io.BytesIO()
    summary = write_microchip(buffer, 120, signer=signer, bad_fraction=0.5, seed=11)
    assert set(summary.bad.values()) == set(MICROCHIP_BAD_KINDS)
    entries = parse("microchip", buffer.getvalue(), ParseOptions(microchip_verifiers=(parsed(signer),)))
    assert len(entries) == 120
    assert tuple(e.vendor_thing_name for e in good(entries)) == summary.thing_names
    assert all(
        [i.der for i in e.intermediates] == [parsed_x509(c).der for c in summary.ca_certificates[:1]]
        for e in good(entries)
    )
    assert all(
        as_parsed(e.certificate).subject_cn == "sn" + (e.vendor_thing_name or "").upper()
        for e in good(entries)
        if e.certificate
    )
    expected = {
        "bad signature": "the signature does not verify",
        "tampered payload": "the signature does not verify",
        "uniqueId mismatch": "the entry was tampered with: header uniqueId",
        "unknown signer": "no trusted signer matches kid",
        "no certificate": "no certificate in manifest entry.",
    }
    found = errors(entries)
    assert set(found) == set(summary.bad)
    for locator, kind in summary.bad.items():
        assert expected[kind] in found[locator], (kind, found[locator])


# Microchip: signer, algorithm and structure -------------------------------------------------------


def _microchip(signer: Issued, count: int = 3) -> list[dict[str, Any]]:
    buffer = io.BytesIO()
    write_microchip(buffer, count, signer=signer)
    loaded: list[dict[str, Any]] = json.loads(buffer.getvalue())
    return loaded


def _b64url_json(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", ["none", "HS256", "ES384", "RS256"])
def test_microchip_algorithm_not_allowed(signer: Issued, alg: str) -> None:
    raw = _microchip(signer, 1)
    header = json.loads(base64.urlsafe_b64decode(raw[0]["protected"] + "=="))
    raw[0]["protected"] = _b64url_json({**header, "alg": alg})
    entries = parse(
        "microchip", json.dumps(raw).encode(), ParseOptions(microchip_verifiers=(parsed(signer),))
    )
    assert f"the signature algorithm '{alg}' is not allowed (allowed: ES256)." in (entries[0].error or "")


def test_microchip_expired_and_unknown_signer(signer: Issued) -> None:
    data = json.dumps(_microchip(signer, 2)).encode()
    later = ParseOptions(microchip_verifiers=(parsed(signer),), now=datetime(2200, 1, 1, tzinfo=UTC))
    assert all("is not valid at 2200-01-01" in (e.error or "") for e in parse("microchip", data, later))
    other = ParseOptions(microchip_verifiers=(parsed(make_microchip_signer("Other")),))
    assert all("no trusted signer matches" in (e.error or "") for e in parse("microchip", data, other))


def test_microchip_malformed_entries_fail_alone(signer: Issued) -> None:
    raw: list[Any] = _microchip(signer, 2)
    weird = {"payload": 'x"]}[', "protected": "!!!", "signature": "", "header": {"uniqueId": "abc"}}
    missing = {"header": {"uniqueId": "def"}}
    data = json.dumps([raw[0], 42, "text", weird, missing, [1, 2], raw[1]]).encode()
    entries = parse("microchip", data, ParseOptions(microchip_verifiers=(parsed(signer),)))
    assert [e.error is None for e in entries] == [True, False, False, False, False, False, True]
    assert entries[1].error == "entry 2: the entry is not a JSON object."
    assert (
        entries[3].error
        == "entry 4 (uniqueId abc): the protected header is not base64url-encoded UTF-8 text."
    )
    assert entries[4].error == "entry 5 (uniqueId def): the protected header is missing or not a string."


def test_microchip_invalid_json_inside_an_entry_fails_only_that_entry(signer: Issued) -> None:
    raw = _microchip(signer, 2)
    text = "[" + json.dumps(raw[0]) + ', {"a" 1}, ' + json.dumps(raw[1]) + "]"
    entries = parse("microchip", text.encode(), ParseOptions(microchip_verifiers=(parsed(signer),)))
    assert len(entries) == 3
    assert entries[1].error is not None and entries[1].error.startswith(
        "entry 2: the entry is not valid JSON"
    )
    assert entries[2].error is None


def test_microchip_truncated_keeps_entries_already_read(signer: Issued) -> None:
    data = json.dumps(_microchip(signer, 3)).encode()
    cut = data[: data.rindex(b'"payload"') + 20]
    iterator = get_parser("microchip").entries(
        io.BytesIO(cut), ParseOptions(microchip_verifiers=(parsed(signer),))
    )
    assert next(iterator).error is None
    assert next(iterator).error is None
    with pytest.raises(ManifestFormatError, match="truncated: entry 3 is incomplete"):
        next(iterator)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"payload": "x"}', "must be a JSON array of JWS entries, but it starts with '{'"),
        (b"   \n ", "starts with nothing but whitespace"),
        (b"[1, 2,]", "a comma follows the last entry"),
        (b"[1 2]", "expected ',' or ']' but found '2'"),
        (b"[1] trailing", "text after the closing ']'"),
        (b"[1, ", "truncated"),
        (b'["abc', "truncated"),
        (b"[,]", "entry 1 starts with ','"),
        (b"\xff\xfe[\x00", "not UTF-8 text"),
    ],
)
def test_microchip_whole_manifest_errors(data: bytes, message: str) -> None:
    with pytest.raises(ManifestFormatError, match=re.escape(message)):
        parse("microchip", data)


def test_microchip_depth_and_size_limits() -> None:
    deep = b"[" + b"[" * 40 + b"]" * 40 + b", 1]"
    entries = parse("microchip", deep)
    assert entries[0].error == "entry 1: the entry is nested deeper than 32 levels."
    assert entries[1].error == "entry 2: the entry is not a JSON object."
    big = b'[{"payload": "' + b"A" * 5000 + b'"}]'
    with pytest.raises(
        ManifestFormatError, match="Entry 1 of the Microchip manifest is larger than 1000 bytes"
    ):
        parse("microchip", big, ParseOptions(limits=Limits(max_entry_bytes=1000)))


def _signed_entry(signer: Issued, payload: bytes, protected: bytes | None = None) -> dict[str, Any]:
    assert isinstance(signer.key, ec.EllipticCurvePrivateKey)
    raw = _microchip(signer, 1)[0]
    protected_text = raw["protected"] if protected is None else base64.urlsafe_b64encode(protected).decode()
    payload_text = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    der = signer.key.sign(f"{protected_text}.{payload_text}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = base64.urlsafe_b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).rstrip(b"=").decode()
    return {
        "payload": payload_text,
        "protected": protected_text,
        "header": raw["header"],
        "signature": signature,
    }


def test_microchip_deep_or_odd_payloads_are_refused(signer: Issued) -> None:
    options = ParseOptions(microchip_verifiers=(parsed(signer),))
    cases = [
        _signed_entry(signer, b"[" * 100_000 + b"]" * 100_000),
        _signed_entry(signer, b"[1, 2]"),
        _signed_entry(signer, b"{not json"),
        _signed_entry(signer, b'{"uniqueId": 5}'),
        _signed_entry(signer, b"{}", protected=b"{" * 50),
    ]
    reasons = [
        e.error.split(": ", 1)[1] for e in parse("microchip", json.dumps(cases).encode(), options) if e.error
    ]
    assert reasons == [
        "the payload is nested deeper than 32 levels.",
        "the payload is not a JSON object.",
        "the payload is not valid JSON.",
        "the signed payload has no uniqueId.",
        "the protected header is nested deeper than 32 levels.",
    ]


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth('{"a": "[[[{{{", "b": [1, {"c": "\\"]]"}]}') == 3
    assert json_depth("42") == 0


def test_microchip_empty_array() -> None:
    assert parse("microchip", b" [ ] \n") == []


# Infineon: hostile archives -------------------------------------------------------------------------


def _infineon(
    inner_files: list[tuple[str, bytes]], bundle: str = "E0E0", extra: list[tuple[str, bytes]] | None = None
) -> bytes:
    inner = seven_zip(inner_files)
    return seven_zip([(f"REEL_guid_{bundle}_Certs.7z", inner), *(extra or [])])


def test_infineon_inner_bomb_is_refused_before_extraction(devices: list[Issued]) -> None:
    data = _infineon([("A_E0E0.pem", devices[0].pem().encode()), ("B_E0E0.pem", bytes(20_000_000))])
    with pytest.raises(
        ManifestFormatError,
        match=r"REEL_guid_E0E0_Certs\.7z expands .* compression ratio above the limit of 200",
    ):
        parse("infineon", data)


def test_infineon_outer_bomb_is_refused(devices: list[Issued]) -> None:
    data = _infineon([("A_E0E0.pem", devices[0].pem().encode())], extra=[("README.txt", bytes(20_000_000))])
    with pytest.raises(ManifestFormatError, match=r"\(the upload\) expands"):
        parse("infineon", data)


def test_infineon_too_deep(devices: list[Issued]) -> None:
    nested = seven_zip([("x.pem", devices[0].pem().encode())])
    data = _infineon([("A_E0E0.pem", devices[0].pem().encode()), ("deeper.7z", nested)])
    with pytest.raises(
        ManifestFormatError, match=r"nests archives 3 levels deep at deeper\.7z; the limit is 2"
    ):
        parse("infineon", data)
    with pytest.raises(ManifestFormatError, match="nests archives 2 levels deep"):
        parse("infineon", data, ParseOptions(limits=Limits(max_archive_depth=1)))


def test_infineon_limits_on_the_real_file(shared_manifests: Path) -> None:
    path = shared_manifests / "infineon" / "manifest-infineon.7z"
    with pytest.raises(ManifestFormatError, match="more than 100 archive members"):
        parse_file("infineon", path, ParseOptions(limits=Limits(max_archive_entries=100)))
    with pytest.raises(ManifestFormatError, match="would decompress to more than 300000 bytes"):
        parse_file("infineon", path, ParseOptions(limits=Limits(max_archive_uncompressed_bytes=300_000)))
    with pytest.raises(ManifestFormatError, match="more than the limit of 1000 bytes"):
        parse_file("infineon", path, ParseOptions(limits=Limits(max_manifest_bytes=1000)))


def test_infineon_missing_and_unknown_bundle(devices: list[Issued]) -> None:
    data = _infineon([("A_E0E0.pem", devices[0].pem().encode())])
    with pytest.raises(
        ManifestFormatError, match=r"has no E0E1 certificate bundle \(bundles present: E0E0\)"
    ):
        parse("infineon", data, ParseOptions(bundle_type="E0E1"))
    with pytest.raises(ManifestFormatError, match="bundle type must be one of E0E0, E0E1, E0E2, not 'E0E9'"):
        parse("infineon", data, ParseOptions(bundle_type="E0E9"))
    assert len(parse("infineon", data, ParseOptions(bundle_type=" e0e0 "))) == 1


def test_infineon_bad_files_and_private_keys(devices: list[Issued]) -> None:
    data = _infineon(
        [("A_E0E0.pem", devices[0].pem().encode()), ("B_E0E0.pem", b"garbage"), ("notes.txt", b"ignored")]
    )
    entries = parse("infineon", data)
    assert [e.locator for e in entries] == ["file A_E0E0.pem", "file B_E0E0.pem"]
    assert entries[0].vendor_thing_name == "A"
    assert (entries[1].error or "").startswith("file B_E0E0.pem: Invalid certificate format: ")
    keyed = _infineon(
        [("A_E0E0.pem", devices[0].pem().encode()), ("B_E0E0.pem", devices[1].key_pem().encode())]
    )
    with pytest.raises(
        ManifestFormatError, match=r"File B_E0E0\.pem of the Infineon manifest contains private key"
    ):
        parse("infineon", keyed)


@pytest.mark.parametrize(
    ("name", "bundle", "chip"),
    [
        ("ABCDEF0123_E0E0.pem", "E0E0", "ABCDEF0123"),
        ("abcdef0123_e0e1.PEM", "E0E1", "abcdef0123"),
        ("batch/0A1B_E0E2.pem", "E0E2", "0A1B"),
        ("A_B_E0E0.pem", "E0E0", "A_B"),
        ("_E0E0.pem", "E0E0", None),
        ("ABC_E0E1.pem", "E0E0", None),
        ("ABC.pem", "E0E0", None),
        ("ABC_E0E0.pem.pem", "E0E0", None),
    ],
)
def test_infineon_thing_name_is_the_chip_id(
    devices: list[Issued], name: str, bundle: str, chip: str | None
) -> None:
    data = _infineon([(name, devices[0].pem().encode())], bundle=bundle)
    (entry,) = parse("infineon", data, ParseOptions(bundle_type=bundle))
    assert (entry.error, entry.vendor_thing_name) == (None, chip)


def test_infineon_not_an_archive() -> None:
    with pytest.raises(ManifestFormatError, match="is not a 7z archive"):
        parse("infineon", b"MAC,cn,cert\n")
    with pytest.raises(ManifestFormatError, match="cannot be read"):
        parse("infineon", b"7z\xbc\xaf\x27\x1c" + bytes(100))


# Espressif CSV -------------------------------------------------------------------------------------


def _csv_row(mac: str, issued: Issued, cn: str | None = None) -> str:
    pem = issued.pem().strip()
    return f'{mac},{cn if cn is not None else as_parsed(issued.certificate).subject_cn},"{pem}"\n'


def test_espressif_per_row_errors(devices: list[Issued]) -> None:
    text = "MAC,cn,cert\n" + _csv_row("AA", devices[0]) + "BB,x\n\n" + _csv_row("", devices[1])
    text += (
        _csv_row("CC", devices[2], cn="wrong")
        + 'DD,dev-3,"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"\n'
    )
    text += _csv_row("EE", devices[3])
    entries = parse("espressif", text.encode())
    assert [e.vendor_thing_name for e in good(entries)] == ["AA", "EE"]
    assert errors(entries) == {
        "row 3": "row 3: expected 3 columns (MAC, cn, cert), found 2.",
        "row 5": "row 5: the MAC column is empty.",
        "row 6": "row 6: the cn column 'wrong' does not match the certificate subject CN 'dev-2'.",
        "row 7": errors(entries)["row 7"],
    }
    assert errors(entries)["row 7"].startswith("row 7: Invalid certificate format")
    assert entries[-1].locator == "row 8"


@pytest.mark.parametrize("header", ["MAC,cn", "mac,cn,certificate", "serial,cn,cert", "", "MAC;cn;cert"])
def test_espressif_wrong_header(devices: list[Issued], header: str) -> None:
    with pytest.raises(ManifestFormatError, match="Espressif manifest header must be 'MAC,cn,cert', found '"):
        parse("espressif", (header + "\n" + _csv_row("AA", devices[0])).encode())


@pytest.mark.parametrize(
    ("prefix", "encoding"),
    [(b"", "utf-8"), (codecs.BOM_UTF8, "utf-8"), (b"", "utf-16"), (b"", "utf-16-le")],
)
def test_espressif_encodings(devices: list[Issued], prefix: bytes, encoding: str) -> None:
    text = " mac , CN , Cert \r\n" + _csv_row("AA", devices[0]).replace("\n", "\r\n")
    data = prefix + text.encode(encoding)
    if encoding == "utf-16-le":
        with pytest.raises(ManifestFormatError, match="header must be 'MAC,cn,cert'"):
            parse("espressif", data)
        return
    entries = parse("espressif", data)
    assert [e.vendor_thing_name for e in entries] == ["AA"]
    assert get_parser("espressif").sniff(data[:64])


def test_espressif_limits(devices: list[Issued]) -> None:
    long_field = "MAC,cn,cert\n" + _csv_row("AA", devices[0]) + 'BB,x,"' + "A\n" * 40_000 + '"\n'
    iterator = get_parser("espressif").entries(io.BytesIO(long_field.encode()), ParseOptions())
    assert next(iterator).error is None
    with pytest.raises(
        ManifestFormatError, match=r"Row 3 of the Espressif manifest is not valid CSV: field larger"
    ):
        next(iterator)
    long_line = "MAC,cn,cert\n" + "A" * 100_000 + ",b,c\n"
    with pytest.raises(
        ManifestFormatError, match="Line 2 of the Espressif manifest is longer than 65536 bytes"
    ):
        parse("espressif", long_line.encode())


def test_espressif_refuses_binary_junk_and_private_keys(devices: list[Issued]) -> None:
    with pytest.raises(ManifestFormatError):
        parse("espressif", bytes(range(256)) * 10)
    keyed = "MAC,cn,cert\n" + _csv_row("AA", devices[0]) + f'BB,x,"{devices[1].key_pem()}"\n'
    with pytest.raises(ManifestFormatError, match="contains private key material"):
        parse("espressif", keyed.encode())
    utf16_keyed = keyed.encode("utf-16")
    with pytest.raises(ManifestFormatError, match="contains private key material"):
        parse("espressif", utf16_keyed)


# Generated ------------------------------------------------------------------------------------------


def test_generated_pem_bundle_problems(devices: list[Issued]) -> None:
    text = (
        "intro text is ignored\n"
        + devices[0].pem()
        + "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
        + "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        + devices[1].pem()
        + "-----BEGIN CERTIFICATE-----\nAAAA\n"
    )
    entries = parse("generated", text.encode())
    assert cns(entries) == ["dev-0", "dev-1"]
    first, second = (devices[n].pem().count("\n") for n in (0, 1))
    garbage, public, unterminated = 2 + first, 5 + first, 8 + first + second
    assert [e.locator for e in entries] == [
        "line 2",
        f"line {garbage}",
        f"line {public}",
        f"line {8 + first}",
        f"line {unterminated}",
    ]
    found = errors(entries)
    assert found[f"line {garbage}"].startswith(f"line {garbage}: Invalid certificate format")
    assert found[f"line {public}"] == f"line {public}: a 'PUBLIC KEY' PEM block is not a certificate."
    assert found[f"line {unterminated}"] == f"line {unterminated}: the PEM block has no END line."


def test_generated_base64_line_problems(devices: list[Issued]) -> None:
    lines = [
        base64.b64encode(devices[0].pem().encode()),
        b"not base64!",
        b"QUJD=",
        b"",
        base64.b64encode(b"garbage"),
        base64.b64encode(devices[1].der()),
    ]
    entries = parse("generated", b"\n".join(lines) + b"\n")
    assert cns(entries) == ["dev-0", "dev-1"]
    assert errors(entries) == {
        "line 2": "line 2: the line is not base64 text.",
        "line 3": "line 3: the line is not valid base64.",
        "line 5": errors(entries)["line 5"],
    }
    assert good(entries)[1].locator == "line 6"


def test_generated_ten_megabyte_line_is_one_failed_entry(devices: list[Issued]) -> None:
    data = (
        base64.b64encode(devices[0].der())
        + b"\n"
        + b"A" * 10_000_000
        + b"\n"
        + base64.b64encode(devices[1].der())
    )
    entries = parse("generated", data)
    assert [e.error is None for e in entries] == [True, False, True]
    assert entries[1].error == "line 2: the line is longer than 65536 bytes."


def test_generated_refuses_private_keys(devices: list[Issued]) -> None:
    pem_bundle = devices[0].pem() + devices[1].key_pem()
    with pytest.raises(ManifestFormatError, match="The generated manifest contains private key material"):
        parse("generated", pem_bundle.encode())
    lines = (
        base64.b64encode(devices[0].pem().encode()) + b"\n" + base64.b64encode(devices[1].key_pem().encode())
    )
    with pytest.raises(ManifestFormatError, match="contains private key material"):
        parse("generated", lines)


def test_generated_blank_only() -> None:
    with pytest.raises(ManifestFormatError, match="holds only blank lines"):
        parse("generated", b"\n\n  \n")
    with pytest.raises(ManifestFormatError, match="has neither PEM blocks nor base64 lines"):
        parse("generated", b"hello, world\nsecond line\n")


# Every parser: empty and over-sized input ---------------------------------------------------------


@pytest.mark.parametrize("vendor", [parser.name for parser in PARSERS])
def test_empty_manifest(vendor: str) -> None:
    with pytest.raises(ManifestFormatError, match=r"^The manifest is empty\.$"):
        parse(vendor, b"")
    with pytest.raises(ManifestFormatError, match="more than the limit of 4 bytes"):
        parse(vendor, b"12345", ParseOptions(limits=Limits(max_manifest_bytes=4)))


# Detection ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "vendor"),
    [
        ("microchip/x.bin", "microchip"),
        ("Infineon/a/b.7z", "infineon"),
        ("espressif/m.csv", "espressif"),
        ("generated/c.txt", "generated"),
    ],
)
def test_detect_by_prefix(key: str, vendor: str) -> None:
    assert detect(key, b"anything").name == vendor


def test_detect_by_sniffing(devices: list[Issued], signer: Issued) -> None:
    microchip = io.BytesIO()
    write_microchip(microchip, 1, signer=signer)
    csv_head = b"\xef\xbb\xbfMAC,cn,cert\n4BA2"
    assert detect("x.7z", b"7z\xbc\xaf\x27\x1c\x00\x04").name == "infineon"
    assert detect("uploads/microchip/x.json", microchip.getvalue()[:4096]).name == "microchip"
    assert detect("x", csv_head).name == "espressif"
    assert detect("x", "MAC,cn,cert\n".encode("utf-16")).name == "espressif"
    assert detect("x", devices[0].pem().encode()).name == "generated"
    assert detect("x", base64.b64encode(devices[0].pem().encode())).name == "generated"
    assert detect("x", base64.b64encode(devices[0].der())).name == "generated"


@pytest.mark.parametrize(
    "head", [bytes(range(256)), b"hello world", b'{"a": 1}', b"[1, 2]", b"MAC,cn\n", b"QUJD\n"]
)
def test_detect_unrecognised(head: bytes) -> None:
    with pytest.raises(ManifestFormatError, match=r"^Unrecognised manifest format: 'junk\.csv'"):
        detect("uploads/junk.csv", head)


def test_detect_empty() -> None:
    with pytest.raises(ManifestFormatError, match=r"^The manifest is empty\.$"):
        detect("espressif/empty.csv", b"")


def test_get_parser() -> None:
    assert get_parser(" Microchip ").name == "microchip"
    with pytest.raises(
        ValueError, match="Unknown vendor 'acme': use one of espressif, generated, infineon, microchip"
    ):
        get_parser("acme")


# Limits ---------------------------------------------------------------------------------------------


def test_limits_defaults_and_environment() -> None:
    defaults = Limits.from_env({})
    assert defaults == Limits()
    assert defaults.max_manifest_bytes == 512 * 1024 * 1024
    assert defaults.max_archive_uncompressed_bytes == 1024**3
    assert (defaults.max_archive_entries, defaults.max_archive_depth, defaults.max_compression_ratio) == (
        250_000,
        2,
        200,
    )
    assert (defaults.max_csv_field_bytes, defaults.max_json_depth, defaults.max_line_bytes) == (
        65536,
        32,
        65536,
    )
    custom = Limits.from_env({"THINGPRESS_MAX_ARCHIVE_DEPTH": " 3 ", "THINGPRESS_MAX_LINE_BYTES": "1_000"})
    assert (custom.max_archive_depth, custom.max_line_bytes) == (3, 1000)
    with pytest.raises(ValueError, match="THINGPRESS_MAX_JSON_DEPTH must be a positive integer, got 'deep'"):
        Limits.from_env({"THINGPRESS_MAX_JSON_DEPTH": "deep"})
    with pytest.raises(ValueError, match="THINGPRESS_MAX_ENTRY_BYTES must be a positive integer, got '0'"):
        Limits.from_env({"THINGPRESS_MAX_ENTRY_BYTES": "0"})
    with pytest.raises(ValueError, match="max_line_bytes must be a positive integer"):
        Limits(max_line_bytes=-1)


def test_limits_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINGPRESS_MAX_COMPRESSION_RATIO", "50")
    assert Limits.from_env().max_compression_ratio == 50


def test_private_key_is_refused_before_any_entry(devices: list[Issued]) -> None:
    data = base64.b64encode(devices[0].der()) + b"\n" + b"-----BEGIN PRIVATE KEY-----\n"
    iterator = get_parser("generated").entries(io.BytesIO(data), ParseOptions())
    with pytest.raises(ManifestFormatError, match="contains private key material"):
        next(iterator)
