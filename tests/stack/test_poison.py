"""Poison entries among good ones, in every vendor format: exactly the good ones are imported.

Each manifest goes through the whole local pipeline. The job must end final with a report, both
dead-letter queues must be empty, every good sibling must be a thing holding exactly its certificate,
and every poison entry must fail alone with a plain-English reason naming it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from layer_utils.cert_utils import load_certificate
from testing.helpers import seven_zip
from testing.pipeline import Result, pipeline
from testing.quirks import build_corpus, leaf_key
from thingpress.certfactory import Issued, make_ca, make_device_cert
from thingpress.generate import make_microchip_signer

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC).replace(microsecond=0)
CORPUS = build_corpus(NOW)
CA = make_ca("Poison Test CA")


def good(count: int, prefix: str) -> list[Issued]:
    return [make_device_cert(f"{prefix}-{i}", CA) for i in range(count)]


def pem_of(der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def assert_exactly(result: Result, imported: dict[str, bytes], failed: dict[str, str]) -> None:
    """``imported``: thing name -> DER of its certificate; ``failed``: locator -> a reason fragment."""
    assert result.job.status == "COMPLETED_WITH_ERRORS", result.report
    assert sorted(result.imported.values()) == sorted(imported)
    for name, der in imported.items():
        assert result.things[name] == frozenset({fingerprint(der)}), name
    assert set(result.things) == set(imported)
    assert set(result.failures) == set(failed), result.failures
    for where, fragment in failed.items():
        reason = result.failures[where]
        assert reason.startswith(f"{where}: "), reason
        assert fragment in reason, (where, reason)


def test_espressif_csv_with_poison_rows() -> None:
    ok = good(3, "esp")
    duplicate_extension = CORPUS.get("duplicate_extension_ski").der
    no_cn = CORPUS.get("subject_without_cn").der
    rows = [
        ("AA0000000001", "esp-0", ok[0].pem()),
        ("AA0000000002", "", pem_of(CORPUS.get("truncated_der").der)),
        ("AA0000000003", "quirk-duplicate-extension-ski", pem_of(duplicate_extension)),
        ("AA0000000004", "", pem_of(no_cn)),  # no CN and a blank cn column: named by the MAC
        ("AA0000000005", "quirk-key-unknown-algorithm", pem_of(CORPUS.get("key_unknown_algorithm").der)),
        ("AA0000000006", "esp-1", ok[1].pem()),
        ("AA0000000007", "someone-else", ok[2].pem()),  # the cn column contradicts the certificate
        ("AA0000000008", "quirk-ca-certificate", pem_of(CORPUS.get("ca_certificate").der)),
    ]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["MAC", "cn", "cert"])
    writer.writerows(rows)
    body = out.getvalue().encode()
    # A row whose bytes are not UTF-8 fails alone.
    body += b'AA0000000009,bad\xff\xfe,"' + ok[2].pem().encode() + b'"\n'
    with pipeline() as run:
        result = run.run("espressif/poison.csv", body)
    assert_exactly(
        result,
        {
            "AA0000000001": ok[0].der(),
            "AA0000000003": duplicate_extension,
            "AA0000000004": no_cn,
            "AA0000000006": ok[1].der(),
        },
        {
            "row 3": "Invalid certificate format",
            "row 6": "public key",
            "row 8": "does not match the certificate subject CN",
            "row 9": "CA certificate",
            "row 10": "not valid UTF-8",
        },
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jws_entry(
    signer: tuple[ec.EllipticCurvePrivateKey, bytes],
    unique_id: str,
    chain: list[bytes],
    header_id: str | None = None,
) -> dict[str, object]:
    """Build one Microchip manifest entry for the DER certificates ``chain`` (x5c), signed by ``signer``.

    ``signer`` is the signer's key and the DER of its certificate (its kid is the certificate's SKI).
    """
    key, der = signer
    ski = load_certificate(der).subject_key_id
    assert ski is not None
    header = {
        "alg": "ES256",
        "kid": _b64url(ski),
        "typ": "JWT",
        "x5t#S256": _b64url(hashlib.sha256(der).digest()),
    }
    protected = _b64url(json.dumps(header).encode())
    keys = [{"kid": "0", "kty": "EC", "crv": "P-256", "x5c": [base64.b64encode(d).decode() for d in chain]}]
    payload = _b64url(json.dumps({"uniqueId": unique_id, "publicKeySet": {"keys": keys}}).encode())
    r, s = decode_dss_signature(key.sign(f"{protected}.{payload}".encode(), ec.ECDSA(hashes.SHA256())))
    signature = _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    unsigned = unique_id if header_id is None else header_id
    return {
        "payload": payload,
        "protected": protected,
        "header": {"uniqueId": unsigned},
        "signature": signature,
    }


def issued_signer(issued: Issued) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    assert isinstance(issued.key, ec.EllipticCurvePrivateKey)
    return issued.key, issued.der()


def test_microchip_manifest_with_poison_entries_and_a_bad_verifier_file() -> None:
    signer = issued_signer(make_microchip_signer("Poison Signer"))
    ok = good(2, "mchp")
    san_quirk = CORPUS.get("printable_underscore_san_dirname").der
    entries = [
        jws_entry(signer, "0123aaaaaaaaaaaa01", [ok[0].der(), CA.der()]),
        jws_entry(signer, "0123aaaaaaaaaaaa02", [ok[1].der()], header_id="0123\ud800bad"),  # lone surrogate
        jws_entry(signer, "0123aaaaaaaaaaaa03", [CORPUS.get("garbage_starting_0x30").der]),
        jws_entry(signer, "0123aaaaaaaaaaaa04", [san_quirk]),  # the Trust&GO SAN shape
        jws_entry(signer, "0123aaaaaaaaaaaa05", [CORPUS.get("curve_secp256k1").der]),
        jws_entry(signer, "0123aaaaaaaaaaaa06", [ok[1].der(), b"\x30\x03\x02\x01\x00"]),  # broken issuer
    ]
    text = json.dumps(entries)  # lone surrogates travel as \ud800 escapes, as JSON allows
    with pipeline() as run:
        run.put("verifiers/microchip/signer.crt", pem_of(signer[1]).encode())
        run.put("verifiers/microchip/notes.crt", b"not a certificate at all")
        result = run.run("microchip/poison.json", text.encode())
    assert_exactly(
        result,
        {"0123aaaaaaaaaaaa01": ok[0].der(), "0123aaaaaaaaaaaa04": san_quirk},
        {
            "entry 2 (uniqueId 0123?bad)": "tampered",
            "entry 3 (uniqueId 0123aaaaaaaaaaaa03)": "x5c[0] is not a readable certificate",
            "entry 5 (uniqueId 0123aaaaaaaaaaaa05)": "curve",
            "entry 6 (uniqueId 0123aaaaaaaaaaaa06)": "x5c[1] is not a readable certificate",
        },
    )
    (warning,) = result.report["warnings"]
    assert warning.startswith(
        "Trust file verifiers/microchip/notes.crt was skipped: Invalid certificate format"
    )


def test_infineon_archive_with_poison_members() -> None:
    ok = good(3, "ifx")
    pathlen = CORPUS.get("pathlen_on_non_ca").der
    members = [
        ("0A01_E0E0.pem", ok[0].pem().encode()),
        ("0A02_E0E0.pem", pem_of(CORPUS.get("der_outer_length_too_long").der).encode()),
        ("0A03_E0E0.pem", pem_of(pathlen).encode()),
        ("L" * 300 + "_E0E0.pem", ok[1].pem().encode()),  # longer than any file system allows
        ("0A05_E0E0.pem", pem_of(CORPUS.get("key_rsa_1024").der).encode()),
        ("0A06_E0E0.pem", ok[2].pem().encode()),
    ]
    body = seven_zip([("REEL_0001_E0E0_Certs.7z", seven_zip(members)), ("README.txt", b"readme")])
    with pipeline() as run:
        result = run.run("infineon/poison.7z", body)
    long_locator = next(where for where in result.failures if "LLLL" in where)
    assert len(long_locator) <= 200
    assert_exactly(
        result,
        {"0A01": ok[0].der(), "0A03": pathlen, "0A06": ok[2].der()},
        {
            "file 0A02_E0E0.pem": "Invalid certificate format",
            long_locator: "longer than 255 bytes",
            "file 0A05_E0E0.pem": "RSA key",
        },
    )


def test_a_signer_certificate_that_bends_der_still_verifies_its_entries() -> None:
    # The signer's certificate carries the Trust&GO SAN shape that the strict parser refuses.
    quirky = CORPUS.get("printable_underscore_san_dirname")
    key = leaf_key(quirky.name)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ok = good(2, "sgn")
    entries = [
        jws_entry((key, quirky.der), f"0123bbbbbbbbbbbb0{i}", [cert.der()]) for i, cert in enumerate(ok)
    ]
    with pipeline() as run:
        run.put("verifiers/microchip/quirky-signer.der", quirky.der)
        result = run.run("microchip/quirky-signer.json", json.dumps(entries).encode())
    assert result.job.status == "COMPLETED", result.failures
    assert sorted(result.imported.values()) == ["0123bbbbbbbbbbbb00", "0123bbbbbbbbbbbb01"]
    assert result.report["warnings"] == []
