"""The quirk corpus itself: every certificate is what it claims, and OpenSSL agrees with each expectation."""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from testing.quirks import (
    OID_AKI,
    OID_ECDSA_SHA256,
    OID_ECDSA_SHA384,
    Quirk,
    QuirkCorpus,
    build_corpus,
    children,
    content,
    implicit,
    oid,
    read_header,
    seq,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CORPUS = build_corpus(NOW)
READABLE = [q for q in CORPUS.quirks if not q.broken]


def ids(quirks: list[Quirk] | tuple[Quirk, ...]) -> list[str]:
    return [q.name for q in quirks]


@pytest.fixture(scope="module")
def openssl() -> Any:
    """Return pyOpenSSL's ``crypto`` module."""
    from OpenSSL import crypto

    return crypto


def strict_refusal(der: bytes) -> str | None:
    """Return where ``cryptography`` first refuses the certificate, or None when it reads it all."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return "load"
    for where, read in (
        ("subject", lambda: cert.subject),
        ("extensions", lambda: cert.extensions),
        ("validity", lambda: (cert.not_valid_before_utc, cert.not_valid_after_utc)),
        ("public_key", cert.public_key),
    ):
        try:
            read()
        except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension):
            return where
    return None


# ----------------------------------------------------------------------------------------- corpus


def test_corpus_shape() -> None:
    names = ids(CORPUS.quirks)
    assert len(names) == len(set(names))
    cns = [q.cn for q in CORPUS.quirks if q.cn is not None]
    assert len(cns) == len(set(cns))
    fingerprints = [hashlib.sha256(q.der).hexdigest() for q in READABLE]
    assert len(fingerprints) == len(set(fingerprints))
    accepted = {q.name for q in CORPUS.quirks if q.expected == "accept"}
    assert len(accepted) >= 40
    assert {"key_rsa_1024", "curve_secp256k1", "key_ed25519", "key_dsa", "ca_certificate"} <= {
        q.name for q in CORPUS.quirks if q.expected == "reject"
    }


@pytest.mark.parametrize("quirk", CORPUS.quirks, ids=ids(CORPUS.quirks))
def test_fields_are_consistent(quirk: Quirk) -> None:
    assert quirk.description and "\n" not in quirk.description
    if quirk.expected == "accept":
        assert quirk.reason_hint is None and not quirk.broken
    elif quirk.broken:
        assert quirk.reason_hint is None and quirk.cn is None and not quirk.openssl_chain_ok
    else:
        assert quirk.reason_hint and quirk.reason_hint == quirk.reason_hint.lower()
    if quirk.name == "pem_legacy_x509_label":
        text = quirk.data.decode("ascii")
        assert text.startswith("-----BEGIN X509 CERTIFICATE-----\n")
        assert text.endswith("-----END X509 CERTIFICATE-----\n")
        assert base64.b64decode("".join(text.splitlines()[1:-1])) == quirk.der
    elif quirk.name.startswith("der_") and quirk.name.endswith("_padding"):
        assert quirk.data[: len(quirk.der)] == quirk.der
        padding = quirk.data[len(quirk.der) :]
        assert len(padding) == 16 and len(set(padding)) == 1
    else:
        assert quirk.data == quirk.der


@pytest.mark.parametrize("quirk", READABLE, ids=ids(READABLE))
def test_issued_and_signed_by_the_ca(quirk: Quirk) -> None:
    """Issuer bytes are the CA's subject bytes, the AKI names the CA's SKI, the signature verifies."""
    assert read_header(quirk.der)[2] == len(quirk.der)
    tbs, algorithm, signature = children(quirk.der)
    ca_tbs = children(children(CORPUS.ca_der)[0])
    fields = children(tbs)
    offset = 1 if fields[0][0] == 0xA0 else 0
    assert fields[offset + 1] == algorithm
    assert fields[offset + 2] == ca_tbs[5]
    if fields[-1][0] == 0xA3:
        extensions = [children(item) for item in children(content(fields[-1]))]
        akis = [ext[-1] for ext in extensions if ext[0] == oid(OID_AKI)]
        ski = x509.load_der_x509_certificate(CORPUS.ca_der).extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        )
        assert all(children(content(aki))[0] == implicit(0, ski.value.digest) for aki in akis)
    digest = {seq(oid(OID_ECDSA_SHA256)): hashes.SHA256(), seq(oid(OID_ECDSA_SHA384)): hashes.SHA384()}
    ca_key = x509.load_der_x509_certificate(CORPUS.ca_der).public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    bits = content(signature)
    assert bits[0] == 0
    ca_key.verify(bits[1:], tbs, ec.ECDSA(digest[algorithm]))


def test_the_ca() -> None:
    ca = x509.load_der_x509_certificate(CORPUS.ca_der)
    assert ca.subject.rfc4514_string() == "CN=Quirk Test CA"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert x509.load_pem_x509_certificate(CORPUS.ca_pem) == ca


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_strict_library_table() -> None:
    """``strict_refuses`` (and the docstring table) match what cryptography really does."""
    observed = {q.name: strict_refusal(q.der) for q in CORPUS.quirks}
    assert observed == {q.name: q.strict_refuses for q in CORPUS.quirks}


def test_deterministic_and_fast() -> None:
    started = time.perf_counter()
    again = build_corpus(NOW)
    assert time.perf_counter() - started < 1.0
    assert again == CORPUS
    assert isinstance(again, QuirkCorpus)


# ---------------------------------------------------------------------------------------- OpenSSL


@pytest.mark.filterwarnings("ignore:X509.get_subject is deprecated:DeprecationWarning")
@pytest.mark.parametrize("quirk", CORPUS.quirks, ids=ids(CORPUS.quirks))
def test_openssl_reads_exactly_the_readable(quirk: Quirk, openssl: Any) -> None:
    if quirk.broken or not quirk.openssl_reads:
        with pytest.raises(openssl.Error):
            openssl.load_certificate(openssl.FILETYPE_ASN1, quirk.der)
        return
    cert = openssl.load_certificate(openssl.FILETYPE_ASN1, quirk.der)
    assert quirk.cn == cert.get_subject().CN
    pem = quirk.data.startswith(b"-----BEGIN")
    from_data = openssl.load_certificate(openssl.FILETYPE_PEM if pem else openssl.FILETYPE_ASN1, quirk.data)
    assert openssl.dump_certificate(openssl.FILETYPE_ASN1, from_data) == quirk.der


@pytest.mark.parametrize("quirk", READABLE, ids=ids(READABLE))
def test_openssl_chain(quirk: Quirk, openssl: Any) -> None:
    if not quirk.openssl_reads:
        assert not quirk.openssl_chain_ok
        return
    store = openssl.X509Store()
    store.add_cert(openssl.load_certificate(openssl.FILETYPE_ASN1, CORPUS.ca_der))
    store.set_flags(openssl.X509StoreFlags.PARTIAL_CHAIN | openssl.X509StoreFlags.IGNORE_CRITICAL)
    store.set_time(NOW.replace(tzinfo=None))
    context = openssl.X509StoreContext(store, openssl.load_certificate(openssl.FILETYPE_ASN1, quirk.der))
    if quirk.openssl_chain_ok:
        context.verify_certificate()
    else:
        with pytest.raises(openssl.X509StoreContextError):
            context.verify_certificate()
