"""Tests for thingpress.certfactory: synthetic CA and device certificates."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from layer_utils.cert_utils import as_parsed, validate_certificate
from thingpress.certfactory import Issued, make_ca, make_device_cert, make_device_certs, new_key

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def root() -> Issued:
    return make_ca("Factory Root", not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=3650))


@pytest.fixture(scope="module")
def intermediate(root: Issued) -> Issued:
    return make_ca(
        "Factory Intermediate",
        issuer=root,
        not_before=NOW - timedelta(days=5),
        not_after=NOW + timedelta(days=3000),
        path_length=0,
    )


def test_root_ca_extensions(root: Issued) -> None:
    cert = root.certificate
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length is None
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(root.key.public_key())
    assert cert.not_valid_before_utc == NOW - timedelta(days=10)
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)


def test_intermediate_is_signed_by_its_issuer(root: Issued, intermediate: Issued) -> None:
    cert = intermediate.certificate
    assert cert.issuer == root.certificate.subject
    cert.verify_directly_issued_by(root.certificate)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest


def test_rsa_ca_and_unknown_key_type() -> None:
    rsa_root = make_ca("RSA Root", key_type="rsa")
    assert isinstance(rsa_root.key, rsa.RSAPrivateKey)
    leaf = make_device_cert("On-RSA", rsa_root)
    leaf.certificate.verify_directly_issued_by(rsa_root.certificate)
    with pytest.raises(ValueError, match="Unknown key type 'dsa'"):
        make_ca("Bad", key_type="dsa")
    with pytest.raises(ValueError, match="Unknown key type"):
        new_key("ed25519")


def test_device_certificate_looks_like_a_secure_element_certificate(intermediate: Issued) -> None:
    issued = make_device_cert("Device-7", intermediate, serial=4242)
    cert = issued.certificate
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Device-7")])
    assert cert.serial_number == 4242
    cert.verify_directly_issued_by(intermediate.certificate)
    extensions = {extension.oid: extension for extension in cert.extensions}
    assert set(extensions) == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    }
    assert extensions[ExtensionOID.BASIC_CONSTRAINTS].value == x509.BasicConstraints(
        ca=False, path_length=None
    )
    assert extensions[ExtensionOID.KEY_USAGE].critical
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(issued.key.public_key())
    assert isinstance(issued.key, ec.EllipticCurvePrivateKey)
    assert issued.key.curve.name == "secp256r1"


def test_default_validity_window(intermediate: Issued) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    cert = make_device_cert("Fresh", intermediate).certificate
    after = datetime.now(UTC)
    assert before - timedelta(days=1, seconds=1) <= cert.not_valid_before_utc <= after - timedelta(days=1)
    assert before + timedelta(days=3649) <= cert.not_valid_after_utc <= after + timedelta(days=3651)


def test_device_options(intermediate: Issued) -> None:
    key = new_key(curve=ec.SECP384R1())
    with_san = make_device_cert(
        "Gateway",
        intermediate,
        key=key,
        san_dns=("gw.example.com", "gw2.example.com"),
        not_before=NOW,
        not_after=NOW + timedelta(days=1),
    )
    assert with_san.key is key
    san = with_san.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example.com", "gw2.example.com"]
    assert with_san.certificate.not_valid_after_utc == NOW + timedelta(days=1)
    rsa_device = make_device_cert("Rsa", intermediate, key_type="rsa", rsa_bits=3072)
    assert isinstance(rsa_device.key, rsa.RSAPrivateKey)
    assert rsa_device.key.key_size == 3072
    ca_flagged = make_device_cert("Flagged", intermediate, is_ca=True).certificate
    assert ca_flagged.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert make_device_cert(None, intermediate).certificate.subject == x509.Name([])


def test_issued_encodings(intermediate: Issued) -> None:
    issued = make_device_cert("Enc", intermediate)
    assert x509.load_pem_x509_certificate(issued.pem().encode()) == issued.certificate
    assert x509.load_der_x509_certificate(issued.der()) == issued.certificate
    assert issued.pem().startswith("-----BEGIN CERTIFICATE-----\n")
    loaded = serialization.load_pem_private_key(issued.key_pem().encode(), password=None)
    assert loaded.public_key() == issued.key.public_key()


def test_bulk_certificates_are_distinct_and_chain(root: Issued, intermediate: Issued) -> None:
    issued = list(make_device_certs(50, intermediate, not_before=NOW - timedelta(days=1)))
    assert [get_cn_value(item) for item in issued] == [f"Device-{i}" for i in range(50)]
    assert len({item.certificate.serial_number for item in issued}) == 50
    assert len({as_parsed(item.certificate).fingerprint for item in issued}) == 50
    assert len({item.key.public_key().public_bytes(*_SPKI) for item in issued}) == 1
    for item in issued:
        result = validate_certificate(
            item.certificate, [root.certificate], intermediates=[intermediate.certificate], at=NOW
        )
        assert result.ok, result.reasons
        ski = item.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(item.key.public_key())


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def get_cn_value(issued: Issued) -> str:
    value = issued.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def test_bulk_options(intermediate: Issued) -> None:
    issued = list(
        make_device_certs(
            5, intermediate, cn_format="sn{i:04d}", start=10, first_serial=1000, shared_key=False
        )
    )
    assert [get_cn_value(item) for item in issued] == ["sn0010", "sn0011", "sn0012", "sn0013", "sn0014"]
    assert [item.certificate.serial_number for item in issued] == [1000, 1001, 1002, 1003, 1004]
    assert len({item.key.public_key().public_bytes(*_SPKI) for item in issued}) == 5
    for item in issued:
        ski = item.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(item.key.public_key())
    again = list(make_device_certs(5, intermediate, cn_format="sn{i:04d}", start=10, first_serial=1000))
    assert [item.certificate.serial_number for item in again] == [1000, 1001, 1002, 1003, 1004]
    assert list(make_device_certs(0, intermediate)) == []
    with pytest.raises(ValueError, match="must not be negative"):
        list(make_device_certs(-1, intermediate))


def test_bulk_rate_is_reported(intermediate: Issued) -> None:
    count = 2000
    started = time.perf_counter()
    produced = sum(1 for _ in make_device_certs(count, intermediate))
    elapsed = time.perf_counter() - started
    assert produced == count
    print(f"make_device_certs: {count / elapsed:,.0f} certificates/s ({count} in {elapsed:.2f} s)")
