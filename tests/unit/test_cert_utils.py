"""Tests for layer_utils.cert_utils: loading, fingerprints, validation, ARNs and thing names."""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import py7zr
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519
from cryptography.x509.oid import NameOID

from layer_utils import cert_utils
from layer_utils.cert_utils import (
    DEFAULT_NAME_SOURCES,
    THING_NAME_PATTERN,
    CertificateProblem,
    NameCandidate,
    ParsedCertificate,
    ValidationResult,
    as_parsed,
    certificate_arn,
    contains_private_key,
    format_certificate,
    is_valid_thing_name,
    load_certificate,
    load_certificates,
    name_candidates,
    parse_function_arn,
    parse_name_sources,
    thing_arn,
    validate_certificate,
    validate_thing_name,
)
from thingpress.certfactory import Issued, make_ca, make_device_cert

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SRC = Path(__file__).resolve().parents[2] / "src"


def sha256_der(cert: x509.Certificate | ParsedCertificate) -> str:
    der = cert.der if isinstance(cert, ParsedCertificate) else cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def parsed(issued: Issued) -> ParsedCertificate:
    return ParsedCertificate.from_x509(issued.certificate)


def first_name(
    sources: str, cert: ParsedCertificate, vendor_name: str | None = None, prefix: str = ""
) -> str:
    candidates, _problems = name_candidates(
        parse_name_sources(sources), vendor_name=vendor_name, cert=cert, prefix=prefix
    )
    return candidates[0].name


@pytest.fixture(scope="module")
def root() -> Issued:
    return make_ca("Test Root", not_before=NOW - timedelta(days=365), not_after=NOW + timedelta(days=3650))


@pytest.fixture(scope="module")
def intermediate(root: Issued) -> Issued:
    return make_ca(
        "Test Intermediate",
        issuer=root,
        not_before=NOW - timedelta(days=300),
        not_after=NOW + timedelta(days=3000),
        path_length=0,
    )


@pytest.fixture(scope="module")
def device(intermediate: Issued) -> Issued:
    return make_device_cert(
        "Device-1", intermediate, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=365)
    )


# Real vendor certificates ---------------------------------------------------------------------------


def test_espressif_csv_certificates_parse_and_fingerprint(shared_manifests: Path) -> None:
    with (shared_manifests / "espressif" / "manifest-espressif.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7
    for row in rows:
        cert = load_certificate(row["cert"])
        assert as_parsed(cert).subject_cn == row["cn"]
        assert as_parsed(cert).fingerprint == sha256_der(cert)
        assert as_parsed(row["cert"]).fingerprint == sha256_der(cert)
        assert validate_certificate(cert, at=NOW).ok
        assert is_valid_thing_name(row["MAC"])
        assert first_name("vendor", cert, row["MAC"]) == row["MAC"]
        assert first_name("cn", cert, row["MAC"]) == row["cn"]


def test_espressif_single_pem(shared_manifests: Path) -> None:
    data = (shared_manifests / "espressif" / "single.pem").read_bytes()
    cert = load_certificate(data)
    assert load_certificates(data) == [cert]
    assert as_parsed(data).fingerprint == sha256_der(cert)
    assert load_certificate(as_parsed(data).pem()) == cert


@pytest.fixture(scope="module")
def infineon_e0e0(shared_manifests: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    outer_dir = tmp_path_factory.mktemp("infineon")
    with py7zr.SevenZipFile(shared_manifests / "infineon" / "manifest-infineon.7z") as outer:
        inner_names = [name for name in outer.getnames() if name.endswith("_E0E0_Certs.7z")]
        assert len(inner_names) == 1
        outer.extract(path=outer_dir, targets=inner_names)  # never the *_keys.7z member
    certs_dir = outer_dir / "certs"
    with py7zr.SevenZipFile(outer_dir / inner_names[0]) as inner:
        inner.extractall(path=certs_dir)
    return sorted(certs_dir.rglob("*.pem"))


def test_infineon_e0e0_bundle(infineon_e0e0: list[Path]) -> None:
    assert len(infineon_e0e0) == 200
    fingerprints = set()
    for path in infineon_e0e0:
        data = path.read_bytes()
        assert b"\r\n" in data  # the vendor ships CRLF PEM
        cert = load_certificate(data)
        fingerprint = as_parsed(cert).fingerprint
        assert fingerprint == sha256_der(cert)
        fingerprints.add(fingerprint)
        cn = as_parsed(cert).subject_cn
        assert cn is not None
        assert len(cn) == 64
        assert first_name("cn", cert) == cn
        assert validate_certificate(cert, at=NOW).ok
    assert len(fingerprints) == 200


def test_infineon_leaf_passes_the_device_extension_policy(infineon_e0e0: list[Path], root: Issued) -> None:
    # The issuing Infineon CA is not available: the verifier must get past the leaf's own extension
    # checks (no SAN, no EKU, CRL distribution points, certificate policies) and fail only on trust.
    cert = load_certificate(infineon_e0e0[0].read_bytes())
    result = validate_certificate(cert, [root.certificate], at=NOW)
    assert result.codes == ("untrusted_chain",)
    assert "no trusted CA or given intermediate issued it" in result.reasons[0]
    assert "Infineon OPTIGA(TM) Trust M CA 306" in result.reasons[0]


def test_generated_base64_of_pem_lines(shared_manifests: Path) -> None:
    lines = (shared_manifests / "generated" / "certificates_test.txt").read_text().splitlines()
    assert len(lines) == 100
    for index, line in enumerate(lines):
        cert = load_certificate(line)
        assert as_parsed(cert).subject_cn == f"Device-{index}"
        assert as_parsed(line).fingerprint == sha256_der(cert)
        pem = base64.b64decode(line)
        assert as_parsed(line).pem() == as_parsed(pem).pem()
    # Its intermediate CA is not in the manifest; the sample certificates expired in September 2025.
    first = load_certificate(lines[0])
    assert validate_certificate(first, at=datetime(2026, 1, 1, tzinfo=UTC)).codes == ("expired",)
    assert validate_certificate(first, at=datetime(2026, 1, 1, tzinfo=UTC), allow_expired=True).ok


def test_microchip_signer_certificates_load(shared_manifests: Path) -> None:
    paths = sorted((shared_manifests / "microchip" / "verifiers").glob("*.crt"))
    assert len(paths) == 5
    names = {as_parsed(load_certificate(path.read_bytes())).subject_cn for path in paths}
    assert "Manifest Signer 005" in names


# Loading and formatting -----------------------------------------------------------------------------


def test_load_accepts_every_encoding(device: Issued) -> None:
    pem = device.pem()
    der = device.der()
    forms: list[str | bytes] = [
        pem,
        pem.encode(),
        pem.replace("\n", "\r\n"),
        f"  \n\t{pem}\n\n",
        "Subject: CN=Device-1\nIssuer: CN=Test Intermediate\n" + pem,
        der,
        base64.b64encode(der),
        base64.b64encode(der).decode(),
        base64.encodebytes(der).decode(),  # wrapped at 76 columns
        base64.b64encode(pem.encode()).decode(),
        base64.b64encode(pem.replace("\n", "\r\n").encode()),
        base64.urlsafe_b64encode(der).rstrip(b"="),
    ]
    for form in forms:
        assert load_certificate(form) == parsed(device), form[:40]


def test_der_ending_in_whitespace_bytes_is_not_stripped(intermediate: Issued) -> None:
    for serial in range(1, 2000):  # ECDSA signatures vary: 1 in 64 ends in whitespace
        issued = make_device_cert("D", intermediate, serial=serial)
        if issued.der()[-1:] in {b"\n", b" ", b"\t", b"\r"}:
            assert load_certificate(issued.der()) == parsed(issued)
            return
    pytest.fail("no DER ending in a whitespace byte was produced")


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        "   \n",
        b"\x00\x01\x02garbage",
        b"\x30\x82\x01\x00nope",
        "not a certificate at all!",
        base64.b64encode(b"hello world"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    ],
)
def test_garbage_is_a_clear_value_error(garbage: str | bytes) -> None:
    for function in (load_certificate, load_certificates, as_parsed):
        with pytest.raises(ValueError, match=r"^Invalid certificate format: .+\.$"):
            function(garbage)


def test_validate_reports_unparseable_instead_of_raising() -> None:
    result = validate_certificate(b"garbage")
    assert not result.ok
    assert result.codes == ("unparseable",)
    assert result.reasons[0].startswith("Invalid certificate format: ")


def test_load_certificates_bundle(root: Issued, intermediate: Issued, device: Issued) -> None:
    bundle = "issuers follow\n" + device.pem() + intermediate.pem() + "\r\n" + root.pem()
    expected = [parsed(device), parsed(intermediate), parsed(root)]
    assert load_certificates(bundle) == expected
    assert load_certificates(base64.b64encode(bundle.encode())) == expected
    assert load_certificates(device.der()) == [parsed(device)]
    assert load_certificate(bundle) == parsed(device)


def test_pem_is_canonical(device: Issued) -> None:
    canonical = as_parsed(device.der()).pem()
    lines = canonical.split("\n")
    assert lines[0] == "-----BEGIN CERTIFICATE-----"
    assert lines[-2] == "-----END CERTIFICATE-----"
    assert lines[-1] == ""
    body = lines[1:-2]
    assert all(len(line) == 64 for line in body[:-1])
    assert 0 < len(body[-1]) <= 64
    assert base64.b64decode("".join(body)) == device.der()
    assert canonical.isascii()
    for form in (
        device.certificate,
        device.pem().replace("\n", "\r\n"),
        base64.b64encode(device.pem().encode()),
    ):
        assert as_parsed(form).pem() == canonical


def test_format_certificate_is_the_canonical_pem(device: Issued) -> None:
    canonical = as_parsed(device.der()).pem()
    for form in (
        device.certificate,
        device.der(),
        device.pem().replace("\n", "\r\n"),
        as_parsed(device.pem()),
    ):
        assert format_certificate(form) == canonical
    with pytest.raises(ValueError, match=r"^Invalid certificate format: "):
        format_certificate("not a certificate")


def test_fingerprint_and_cn(device: Issued, intermediate: Issued) -> None:
    expected = hashlib.sha256(device.der()).hexdigest()
    assert as_parsed(device.certificate).fingerprint == expected
    assert as_parsed(device.pem()).fingerprint == expected
    assert as_parsed(device.der()).fingerprint == expected
    assert as_parsed(device.certificate).subject_cn == "Device-1"
    assert as_parsed(make_device_cert(None, intermediate).certificate).subject_cn is None


# Private keys ---------------------------------------------------------------------------------------


def _key_pems() -> list[bytes]:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    return [
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
        ed_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
        b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n",
    ]


def test_private_keys_are_detected(device: Issued) -> None:
    headers = [pem.split(b"\n", 1)[0] for pem in _key_pems()]
    assert headers == [
        b"-----BEGIN PRIVATE KEY-----",
        b"-----BEGIN EC PRIVATE KEY-----",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----",
        b"-----BEGIN OPENSSH PRIVATE KEY-----",
        b"-----BEGIN RSA PRIVATE KEY-----",
    ]
    for pem in _key_pems():
        manifest = device.pem().encode() + b"\n" + pem
        assert contains_private_key(manifest)
        assert contains_private_key(manifest.decode())
        for shift in (b"", b"x", b"xy"):  # every base64 alignment of the header
            line = base64.b64encode(device.pem().encode() + shift + pem)
            assert contains_private_key(b"MAC,cert\n1," + line + b"\n")


def test_certificates_alone_are_not_private_keys(device: Issued, root: Issued) -> None:
    text = device.pem() + root.pem()
    assert not contains_private_key(text)
    assert not contains_private_key(base64.b64encode(text.encode()))
    assert not contains_private_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert not contains_private_key("")


# Validation -----------------------------------------------------------------------------------------


def test_valid_cn_only_device_chains_through_an_intermediate(
    root: Issued, intermediate: Issued, device: Issued
) -> None:
    cert = device.certificate
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    result = validate_certificate(cert, [root.certificate], intermediates=[intermediate.certificate], at=NOW)
    assert result == ValidationResult(())
    assert result.ok
    assert result.reasons == ()
    assert validate_certificate(cert, [intermediate.certificate], at=NOW).ok
    assert validate_certificate(cert, at=NOW).ok


def test_missing_intermediate_is_untrusted(root: Issued, device: Issued) -> None:
    result = validate_certificate(device.certificate, [root.certificate], at=NOW)
    assert result.codes == ("untrusted_chain",)
    assert result.reasons[0] == (
        "Certificate does not chain to a trusted CA: no trusted CA or given intermediate issued it "
        "(issuer CN=Test Intermediate)."
    )


def test_wrong_ca_is_untrusted(intermediate: Issued, device: Issued) -> None:
    other_root = make_ca("Other Root")
    result = validate_certificate(
        device.certificate, [other_root.certificate], intermediates=[intermediate.certificate], at=NOW
    )
    assert result.codes == ("untrusted_chain",)
    assert result.reasons[0].startswith("Certificate does not chain to a trusted CA: ")
    assert result.reasons[0].endswith(".")
    assert not result.reasons[0].endswith("..")


def test_empty_trust_store_fails_closed(device: Issued) -> None:
    result = validate_certificate(device.certificate, [], at=NOW)
    assert result.codes == ("untrusted_chain",)
    assert "no trusted CA certificates are configured" in result.reasons[0]


def test_expired_and_not_yet_valid(root: Issued, intermediate: Issued, device: Issued) -> None:
    after = device.certificate.not_valid_after_utc + timedelta(days=1)
    before = device.certificate.not_valid_before_utc - timedelta(days=1)
    expired = validate_certificate(device.certificate, at=after)
    assert expired.codes == ("expired",)
    assert expired.reasons == (
        f"Certificate expired on {device.certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}.",
    )
    early = validate_certificate(device.certificate, at=before)
    assert early.codes == ("not_yet_valid",)
    assert early.reasons[0].startswith("Certificate is not valid before ")
    # Trust is checked inside the leaf's validity: an expired leaf is not also "untrusted".
    chained = validate_certificate(
        device.certificate, [root.certificate], intermediates=[intermediate.certificate], at=after
    )
    assert chained.codes == ("expired",)
    accepted = validate_certificate(
        device.certificate,
        [root.certificate],
        intermediates=[intermediate.certificate],
        at=after,
        allow_expired=True,
    )
    assert accepted.ok
    assert validate_certificate(device.certificate, at=before, allow_expired=True).codes == ("not_yet_valid",)


def test_default_time_is_now(intermediate: Issued) -> None:
    now = datetime.now(UTC)
    expired = make_device_cert(
        "Old", intermediate, not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
    )
    assert validate_certificate(expired.certificate).codes == ("expired",)
    fresh = make_device_cert("Fresh", intermediate)
    assert validate_certificate(fresh.certificate).ok


def test_ca_certificate_as_device(root: Issued, intermediate: Issued) -> None:
    misissued = make_device_cert("Not-A-Device", intermediate, is_ca=True, not_before=NOW - timedelta(days=1))
    result = validate_certificate(
        misissued.certificate, [root.certificate], intermediates=[intermediate.certificate], at=NOW
    )
    assert result.codes == ("ca_certificate",)
    assert validate_certificate(root.certificate, at=NOW).codes == ("ca_certificate",)


def test_weak_keys(intermediate: Issued) -> None:
    rsa_1024 = make_device_cert(
        "Weak", intermediate, key_type="rsa", rsa_bits=1024, not_before=NOW - timedelta(1)
    )
    result = validate_certificate(rsa_1024.certificate, at=NOW)
    assert result.codes == ("weak_key",)
    assert result.reasons == ("Certificate has a 1024-bit RSA key; at least 2048 bits are required.",)
    rsa_2048 = make_device_cert("Rsa", intermediate, key_type="rsa", not_before=NOW - timedelta(1))
    assert validate_certificate(rsa_2048.certificate, at=NOW).ok
    for curve in (ec.SECP384R1(), ec.SECP521R1()):
        ok = make_device_cert("Ec", intermediate, curve=curve, not_before=NOW - timedelta(1))
        assert validate_certificate(ok.certificate, at=NOW).ok
    k1 = make_device_cert("K1", intermediate, curve=ec.SECP256K1(), not_before=NOW - timedelta(1))
    assert validate_certificate(k1.certificate, at=NOW).reasons == (
        "Certificate uses the elliptic curve secp256k1; only P-256, P-384 and P-521 are accepted.",
    )


def _signed_with_key(
    public_key_owner: dsa.DSAPrivateKey | ed25519.Ed25519PrivateKey, issuer: Issued
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Odd")]))
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key_owner.public_key())
        .serial_number(42)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(issuer.key, hashes.SHA256())
    )


def test_unsupported_key_types(intermediate: Issued) -> None:
    dsa_cert = _signed_with_key(dsa.generate_private_key(2048), intermediate)
    assert validate_certificate(dsa_cert, at=NOW).reasons == (
        "Certificate has an unsupported DSA key; only RSA and elliptic-curve (P-256, P-384, P-521) keys "
        "are accepted.",
    )
    ed_cert = _signed_with_key(ed25519.Ed25519PrivateKey.generate(), intermediate)
    result = validate_certificate(ed_cert, at=NOW)
    assert result.codes == ("weak_key",)
    assert "unsupported Ed25519 key" in result.reasons[0]


def test_every_problem_is_listed(root: Issued) -> None:
    other = make_ca("Unrelated Root")
    bad = make_device_cert(
        "Bad",
        other,
        key_type="rsa",
        rsa_bits=1024,
        is_ca=True,
        not_before=NOW - timedelta(days=30),
        not_after=NOW - timedelta(days=1),
    )
    result = validate_certificate(bad.certificate, [root.certificate], at=NOW)
    assert result.codes == ("expired", "ca_certificate", "weak_key", "untrusted_chain")
    assert all(isinstance(problem, CertificateProblem) for problem in result.problems)
    assert all(reason.endswith(".") for reason in result.reasons)
    assert not result.ok


def test_validate_accepts_raw_data(root: Issued, intermediate: Issued, device: Issued) -> None:
    assert validate_certificate(
        device.pem(), [root.certificate], intermediates=[intermediate.certificate], at=NOW
    ).ok
    assert validate_certificate(base64.b64encode(device.der()), at=NOW).ok


def test_intermediate_expired_is_untrusted(root: Issued) -> None:
    stale = make_ca(
        "Stale Intermediate",
        issuer=root,
        not_before=NOW - timedelta(days=30),
        not_after=NOW - timedelta(days=2),
    )
    leaf = make_device_cert(
        "Leaf", stale, not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=10)
    )
    result = validate_certificate(
        leaf.certificate, [root.certificate], intermediates=[stale.certificate], at=NOW
    )
    assert result.codes == ("untrusted_chain",)
    assert "not valid at validation time" in result.reasons[0]


# ARNs -----------------------------------------------------------------------------------------------


def test_arn_helpers() -> None:
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:thingpress-BulkImporter-abc"
    assert parse_function_arn(arn) == ("aws", "eu-west-1", "123456789012")
    assert parse_function_arn("arn:aws-cn:lambda:cn-north-1:123456789012:function:f:live") == (
        "aws-cn",
        "cn-north-1",
        "123456789012",
    )
    assert (
        certificate_arn("ab" * 32, region="eu-west-1", account="123456789012")
        == "arn:aws:iot:eu-west-1:123456789012:cert/" + "ab" * 32
    )
    assert (
        thing_arn("Device-1", region="us-gov-west-1", account="123456789012", partition="aws-us-gov")
        == "arn:aws-us-gov:iot:us-gov-west-1:123456789012:thing/Device-1"
    )


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "function-name",
        "arn:aws:lambda:eu-west-1:12345:function:f",
        "arn:aws:s3:::bucket",
        "arn:aws:lambda:eu-west-1:123456789012:layer:x",
        "arn:aws:lambda::123456789012:function:f",
    ],
)
def test_malformed_function_arn(arn: str) -> None:
    with pytest.raises(ValueError, match=r"^Function ARN .* is not of the form arn:<partition>:lambda:"):
        parse_function_arn(arn)


# Thing names ----------------------------------------------------------------------------------------


def test_thing_name_validation() -> None:
    for name in ("Device-1", "4BA2BB8764BD", "a:b_c-d", "x" * 128, "0123f2408ea1fcf201"):
        assert is_valid_thing_name(name)
        assert THING_NAME_PATTERN.fullmatch(name)
        validate_thing_name(name)
    for name in ("", "x y", "x" * 129, "dev/1", "dev.1", "Device-1\n", "dévice"):
        assert not is_valid_thing_name(name)
        with pytest.raises(ValueError, match=r"^Thing name "):
            validate_thing_name(name)
    with pytest.raises(ValueError) as error:
        validate_thing_name("x y")
    assert (
        str(error.value)
        == "Thing name 'x y' contains characters other than letters, digits, ':', '_' and '-'."
    )
    with pytest.raises(ValueError, match=r"is longer than 128 characters \(129\)\.$"):
        validate_thing_name("x" * 129)
    with pytest.raises(ValueError, match=r"^Thing name '' cannot be empty\.$"):
        validate_thing_name("")


def test_parse_name_sources() -> None:
    assert parse_name_sources("vendor,cn,fingerprint") == DEFAULT_NAME_SOURCES
    assert parse_name_sources(" CN , Fingerprint ") == ("cn", "fingerprint")
    assert parse_name_sources("fingerprint") == ("fingerprint",)
    for bad in ("", "mac", "vendor,,cn", "cn,mac"):
        with pytest.raises(ValueError, match=r"^Thing name source .* is invalid: use one or more of"):
            parse_name_sources(bad)
    with pytest.raises(ValueError, match="lists a source more than once"):
        parse_name_sources("cn,cn")


def test_fingerprint_name_is_identical_across_processes(device: Issued) -> None:
    fingerprint = as_parsed(device.certificate).fingerprint
    script = (
        "import sys; from layer_utils.cert_utils import load_certificate, name_candidates; "
        "cert = load_certificate(sys.stdin.buffer.read()); "
        "print(name_candidates(('fingerprint',), vendor_name=None, cert=cert, prefix='p-')[0][0].name)"
    )
    names = set()
    for seed in ("1", "2"):
        environment = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "PYTHONPATH": str(SRC / "layer_utils"),
        }
        completed = subprocess.run(
            [sys.executable, "-c", script],
            input=device.der(),
            env=environment,
            capture_output=True,
            check=True,
        )
        names.add(completed.stdout.decode().strip())
    assert names == {f"p-cert-{fingerprint}"}


def test_name_candidates_in_source_order(intermediate: Issued, device: Issued) -> None:
    cert = parsed(device)
    fingerprint_name = "cert-" + cert.fingerprint
    candidates, problems = name_candidates(DEFAULT_NAME_SOURCES, vendor_name="4BA2BB8764BD", cert=cert)
    assert candidates == [
        NameCandidate("4BA2BB8764BD", "vendor"),
        NameCandidate("Device-1", "cn"),
        NameCandidate(fingerprint_name, "fingerprint"),
    ]
    assert problems == []
    assert first_name("vendor,cn,fingerprint", cert) == "Device-1"
    assert first_name("vendor,cn", cert, "", prefix="x-") == "x-Device-1"
    assert first_name("cn,vendor", cert, "4BA2BB8764BD") == "Device-1"
    assert first_name("fingerprint", cert, "v", prefix="f-") == "f-" + fingerprint_name
    anonymous = parsed(make_device_cert(None, intermediate))
    anonymous_name = "cert-" + anonymous.fingerprint
    assert first_name("vendor,cn,fingerprint", anonymous) == anonymous_name
    assert first_name("cn,fingerprint", anonymous, prefix="a-") == "a-" + anonymous_name


def test_name_candidates_skip_illegal_names_and_say_why(intermediate: Issued, device: Issued) -> None:
    candidates, problems = name_candidates(("vendor", "cn"), vendor_name="Device 7", cert=parsed(device))
    assert candidates == [NameCandidate("Device-1", "cn")]
    assert problems == [
        "thing name 'Device 7' from the vendor's device identifier contains characters other than "
        "letters, digits, ':', '_' and '-'"
    ]
    spaced = parsed(make_device_cert("My Device 3", intermediate))
    candidates, problems = name_candidates(
        ("cn", "fingerprint"), vendor_name=None, cert=spaced, prefix="p" * 60
    )
    assert candidates == []
    assert "contains characters other than" in problems[0]
    assert "is longer than 128 characters" in problems[1]
    product = parsed(make_device_cert("InfineonIoTNode", intermediate))
    candidates, problems = name_candidates(("vendor", "cn"), vendor_name=None, cert=product)
    assert candidates == []
    assert problems == [
        "the vendor gives no device identifier",
        "the subject CN 'InfineonIoTNode' names a product, not one device (it has no digit)",
    ]


def test_public_names_are_exported() -> None:
    for name in cert_utils.__all__:
        assert hasattr(cert_utils, name)
