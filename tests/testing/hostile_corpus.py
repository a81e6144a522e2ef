"""The hostile-manifest corpus: generated manifests and what the pipeline must make of each.

Built from seeded randomness and freshly made CAs (``Material``); used by the whole-pipeline outcome
test (tests/stack/test_hostile_corpus.py) and the provider's peak-memory test
(tests/stack/test_hostile_memory.py).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import py7zr
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from testing import seven_zip_bombs
from thingpress.certfactory import Issued, make_ca, make_device_cert

LINE_LIMIT = 65536  # the template's MaxLineBytes default
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Case:
    """One hostile manifest and what the pipeline must make of it.

    `status`: the acceptable final statuses; `reason`: fragments of the job's reason (a refused
    manifest); `good`: thing names that must be imported; `bad`: locator → reason fragments of each
    failed entry; `duplicates`: locator → reason fragments of each duplicate entry.
    """

    name: str
    key: str
    body: bytes
    status: frozenset[str]
    metadata: Mapping[str, str] = field(default_factory=dict)
    reason: tuple[str, ...] = ()
    good: tuple[str, ...] = ()
    bad: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    duplicates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


COMPLETED = frozenset({"COMPLETED"})
WITH_ERRORS = frozenset({"COMPLETED_WITH_ERRORS"})
FAILED = frozenset({"FAILED"})


# --- builders -------------------------------------------------------------------------------------


class Material:
    """The CAs, signers and a seeded random source shared by the corpus."""

    def __init__(self) -> None:
        self.random = random.Random(20251122)
        self.ca = make_ca("Hostile Corpus Trusted CA")
        self.rogue = make_ca("Hostile Corpus Rogue CA")
        self.signer = make_ca("Hostile Corpus Manifest Signer")
        self.stranger = make_ca("Hostile Corpus Unknown Signer")

    def device(self, cn: str, **options: Any) -> Issued:
        return make_device_cert(cn, options.pop("issuer", self.ca), **options)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signer_header(signer: Issued, alg: str = "ES256") -> str:
    ski = signer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    header = {
        "alg": alg,
        "kid": b64url(ski),
        "typ": "JWT",
        "x5t#S256": b64url(hashlib.sha256(signer.der()).digest()),
    }
    return b64url(json.dumps(header, separators=(",", ":")).encode())


def es256(signer: Issued, signing_input: str) -> str:
    assert isinstance(signer.key, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(signer.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def jws_entry(
    material: Material,
    unique_id: str,
    device: Issued,
    *,
    signer: Issued | None = None,
    damage: str | None = None,
    payload_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Microchip JWS entry for `device`; `damage` is one of bad-signature, tampered, mismatch, none-alg."""
    signer = signer or material.signer
    x5c = [base64.b64encode(device.der()).decode(), base64.b64encode(material.ca.der()).decode()]
    payload_json: dict[str, Any] = {
        "version": 1,
        "uniqueId": unique_id,
        "publicKeySet": {"keys": [{"kid": "0", "kty": "EC", "crv": "P-256", "x5c": x5c}]},
        **(payload_extra or {}),
    }
    protected = signer_header(signer, "none" if damage == "none-alg" else "ES256")
    payload = b64url(json.dumps(payload_json, separators=(",", ":")).encode())
    signature = "" if damage == "none-alg" else es256(signer, f"{protected}.{payload}")
    if damage == "bad-signature":
        signature = b64url(bytes(64))
    if damage == "tampered":
        payload_json["uniqueId"] = unique_id[:-1] + ("0" if unique_id[-1] != "0" else "1")
        payload = b64url(json.dumps(payload_json, separators=(",", ":")).encode())
    header_id = unique_id.replace("0123", "0999", 1) if damage == "mismatch" else unique_id
    return {
        "payload": payload,
        "protected": protected,
        "header": {"uniqueId": header_id},
        "signature": signature,
    }


def microchip_json(entries: list[dict[str, Any]]) -> bytes:
    return ("[\n  " + ",\n  ".join(json.dumps(entry) for entry in entries) + "\n]\n").encode()


def unique_id(case: int, index: int) -> str:
    return f"0123{case:06x}{index:06x}ee"


def espressif_csv(rows: list[tuple[str, str, str]], header: tuple[str, ...] = ("MAC", "cn", "cert")) -> str:
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def b64_lines(*chunks: bytes) -> bytes:
    return b"".join(base64.b64encode(chunk) + b"\n" for chunk in chunks)


def seven_zip(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", filters=[{"id": py7zr.FILTER_LZMA2}]) as archive:
        for name, data in files:
            archive.writestr(data, name)
    return buffer.getvalue()


def infineon(bundles: Mapping[str, list[tuple[str, bytes]]]) -> bytes:
    members = [(f"REEL0001_guid_{bundle}_Certs.7z", seven_zip(files)) for bundle, files in bundles.items()]
    members.append(("README.txt", b"synthetic"))
    return seven_zip(members)


GARBAGE_PEM = b"-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


def build_corpus(material: Material) -> list[Case]:
    cases: list[Case] = []
    m = material

    def add(name: str, key: str, body: bytes, status: frozenset[str], **expect: Any) -> None:
        cases.append(Case(name, key, body, status, **expect))

    def good_certs(prefix: str, count: int = 2) -> list[Issued]:
        return [m.device(f"{prefix}-ok{index}") for index in range(count)]

    # Microchip JWS ------------------------------------------------------------------------------
    for number, damage, fragments in (
        (1, "bad-signature", ("the signature does not verify with signer 'Hostile Corpus Manifest Signer'",)),
        (2, "tampered", ("the signature does not verify",)),
        (3, "mismatch", ("tampered with: header uniqueId", "does not match the signed uniqueId")),
        (4, "none-alg", ("signature algorithm 'none' is not allowed",)),
    ):
        ids = [unique_id(number, index) for index in range(3)]
        entries = [
            jws_entry(m, ids[0], m.device(f"mc{number}-0")),
            jws_entry(m, ids[1], m.device(f"mc{number}-1"), damage=damage),
            jws_entry(m, ids[2], m.device(f"mc{number}-2")),
        ]
        header_id = entries[1]["header"]["uniqueId"]
        add(
            f"jws-{damage}",
            f"microchip/jws-{damage}.json",
            microchip_json(entries),
            WITH_ERRORS,
            good=(ids[0], ids[2]),
            bad={f"entry 2 (uniqueId {header_id})": fragments},
        )
    ids = [unique_id(5, index) for index in range(2)]
    add(
        "jws-unknown-signer",
        "microchip/jws-unknown-signer.json",
        microchip_json(
            [
                jws_entry(m, ids[0], m.device("mc5-0"), signer=m.stranger),
                jws_entry(m, ids[1], m.device("mc5-1")),
            ]
        ),
        WITH_ERRORS,
        good=(ids[1],),
        bad={f"entry 1 (uniqueId {ids[0]})": ("no trusted signer matches kid",)},
    )
    ids = [unique_id(6, index) for index in range(5)]
    entries = [jws_entry(m, ids[index], m.device(f"mc6-{index}")) for index in range(5)]
    head = microchip_json(entries[:3]).removesuffix(b"\n]\n")
    add(
        "truncated-json",
        "microchip/truncated.json",
        head + b",\n  " + json.dumps(entries[3]).encode()[:40],
        FAILED,
        reason=("truncated", "entry 4 is incomplete"),
        good=tuple(ids[:3]),
    )
    add(
        "json-object-not-array",
        "microchip/object.json",
        json.dumps({"entries": []}).encode(),
        FAILED,
        reason=("must be a JSON array of JWS entries",),
    )
    ids = [unique_id(8, index) for index in range(2)]
    deep: Any = "x"
    for _ in range(40):
        deep = {"d": deep}
    add(
        "json-nested-too-deep",
        "microchip/deep.json",
        microchip_json([jws_entry(m, ids[0], m.device("mc8-0"), payload_extra={"deep": deep})]).removesuffix(
            b"\n]\n"
        )
        + b",\n  "
        + json.dumps(jws_entry(m, ids[1], m.device("mc8-1"))).encode()
        + b"\n]\n",
        WITH_ERRORS,
        good=(ids[1],),
        bad={f"entry 1 (uniqueId {ids[0]})": ("nested deeper than 32 levels",)},
    )
    ids = [unique_id(9, index) for index in range(2)]
    add(
        "json-trailing-comma",
        "microchip/trailing-comma.json",
        microchip_json(
            [jws_entry(m, ids[index], m.device(f"mc9-{index}")) for index in range(2)]
        ).removesuffix(b"\n]\n")
        + b",\n]\n",
        FAILED,
        reason=("a comma follows the last entry",),
        good=tuple(ids),
    )

    # Espressif CSV ------------------------------------------------------------------------------
    ok = good_certs("es1")
    add(
        "csv-wrong-header",
        "espressif/wrong-header.csv",
        espressif_csv(
            [(f"aa00000000{index:02x}", f"es1-ok{index}", cert.pem()) for index, cert in enumerate(ok)],
            header=("mac", "name", "pem"),
        ).encode(),
        FAILED,
        reason=("header must be 'MAC,cn,cert'", "found 'mac,name,pem'"),
    )
    ok = good_certs("es2")
    rows = [
        ("a1b2c3d4e501", "es2-ok0", ok[0].pem()),
        ("a1b2c3d4e502", "es2-missing"),
        ("a1b2c3d4e503", "es2-ok1", ok[1].pem()),
    ]
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("MAC", "cn", "cert"))
    writer.writerows(rows)
    add(
        "csv-missing-column",
        "espressif/missing-column.csv",
        text.getvalue().encode(),
        WITH_ERRORS,
        good=("a1b2c3d4e501", "a1b2c3d4e503"),
        bad={"row 3": ("expected 3 columns (MAC, cn, cert), found 2",)},
    )
    ok = good_certs("es3")
    add(
        "csv-bom",
        "espressif/bom.csv",
        b"\xef\xbb\xbf"
        + espressif_csv(
            [("b0b0b0b0b001", "es3-ok0", ok[0].pem()), ("b0b0b0b0b002", "es3-ok1", ok[1].pem())]
        ).encode(),
        COMPLETED,
        good=("b0b0b0b0b001", "b0b0b0b0b002"),
    )
    ok = good_certs("es4")
    add(
        "csv-utf16",
        "espressif/utf16.csv",
        espressif_csv(
            [("c0c0c0c0c001", "es4-ok0", ok[0].pem()), ("c0c0c0c0c002", "es4-ok1", ok[1].pem())]
        ).encode("utf-16"),
        COMPLETED,
        good=("c0c0c0c0c001", "c0c0c0c0c002"),
    )
    ok = good_certs("es5", 3)
    add(
        "csv-cn-mismatch",
        "espressif/cn-mismatch.csv",
        espressif_csv(
            [
                ("d0d0d0d0d001", "es5-ok0", ok[0].pem()),
                ("d0d0d0d0d002", "someone-else", ok[1].pem()),
                ("d0d0d0d0d003", "es5-ok2", ok[2].pem()),
            ]
        ).encode(),
        WITH_ERRORS,
        good=("d0d0d0d0d001", "d0d0d0d0d003"),
        bad={"row 3": ("the cn column 'someone-else' does not match the certificate subject CN 'es5-ok1'",)},
    )
    ok = good_certs("es6", 4)
    long_name = "e" * 129
    add(
        "illegal-and-overlong-thing-names",
        "espressif/thing-names.csv",
        espressif_csv(
            [
                ("e0e0e0e0e001", "es6-ok0", ok[0].pem()),
                ("bad mac/../x", "es6-ok1", ok[1].pem()),
                (long_name, "es6-ok2", ok[2].pem()),
                ("e0e0e0e0e004", "es6-ok3", ok[3].pem()),
            ]
        ).encode(),
        WITH_ERRORS,
        metadata={"thingpress-thing-name-source": "vendor"},
        good=("e0e0e0e0e001", "e0e0e0e0e004"),
        bad={
            "row 3": ("'bad mac/../x'", "contains characters other than letters, digits"),
            "row 4": ("is longer than 128 characters (129)",),
        },
    )
    add(
        "binary-junk-with-csv-suffix",
        "incoming/junk.csv",
        m.random.randbytes(4096),
        FAILED,
        reason=("Unrecognised manifest format", "'junk.csv'"),
    )

    # Generated PEM / base64 ----------------------------------------------------------------------
    ok = good_certs("ge1")
    add(
        "pem-garbage-block",
        "generated/pem-garbage.pem",
        ok[0].pem().encode() + GARBAGE_PEM + ok[1].pem().encode(),
        WITH_ERRORS,
        good=("ge1-ok0", "ge1-ok1"),
        bad={
            f"line {ok[0].pem().count(chr(10)) + 1}": ("Invalid certificate format", "is not a certificate")
        },
    )
    ok = good_certs("ge2")
    add(
        "private-key-block",
        "generated/private-key.pem",
        ok[0].pem().encode() + ok[0].key_pem().encode() + ok[1].pem().encode(),
        FAILED,
        reason=("contains private key material", "the whole manifest is refused"),
    )
    ok = good_certs("ge3")
    expired = m.device(
        "ge3-expired", not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=30)
    )
    add(
        "expired-certificate",
        "generated/expired.txt",
        b64_lines(ok[0].pem().encode(), expired.pem().encode(), ok[1].pem().encode()),
        WITH_ERRORS,
        good=("ge3-ok0", "ge3-ok1"),
        bad={"line 2": ("Certificate expired on",)},
    )
    ok = good_certs("ge4")
    future = m.device("ge4-future", not_before=NOW + timedelta(days=30), not_after=NOW + timedelta(days=400))
    add(
        "not-yet-valid-certificate",
        "generated/future.txt",
        b64_lines(ok[0].pem().encode(), future.pem().encode(), ok[1].pem().encode()),
        WITH_ERRORS,
        good=("ge4-ok0", "ge4-ok1"),
        bad={"line 2": ("Certificate is not valid before",)},
    )
    ok = good_certs("ge5")
    rogue = m.device("ge5-rogue", issuer=m.rogue)
    add(
        "wrong-ca",
        "generated/wrong-ca.txt",
        b64_lines(ok[0].pem().encode(), rogue.pem().encode(), ok[1].pem().encode()),
        WITH_ERRORS,
        good=("ge5-ok0", "ge5-ok1"),
        bad={"line 2": ("does not chain to a trusted CA", "Hostile Corpus Rogue CA")},
    )
    ok = good_certs("ge6")
    weak = m.device("ge6-rsa1024", key_type="rsa", rsa_bits=1024)
    add(
        "rsa-1024-key",
        "generated/rsa1024.txt",
        b64_lines(ok[0].pem().encode(), weak.pem().encode(), ok[1].pem().encode()),
        WITH_ERRORS,
        good=("ge6-ok0", "ge6-ok1"),
        bad={"line 2": ("1024-bit RSA key", "at least 2048 bits are required")},
    )
    ok = good_certs("ge7", 3)
    add(
        "duplicate-entries",
        "generated/duplicates.txt",
        b64_lines(*(cert.pem().encode() for cert in (ok[0], ok[1], ok[0], ok[2], ok[0]))),
        frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS"}),
        good=("ge7-ok0", "ge7-ok1", "ge7-ok2"),
        duplicates={"line 3": ("duplicate of line 1",), "line 5": ("duplicate of line 1",)},
    )
    first, second = m.device("ge8-same"), m.device("ge8-same")
    ok = good_certs("ge8", 1)
    add(
        "shared-cn",
        "generated/same-name.txt",
        b64_lines(first.pem().encode(), second.pem().encode(), ok[0].pem().encode()),
        COMPLETED,
        # A CN two certificates share names neither of them: their fingerprints do.
        good=(
            f"cert-{hashlib.sha256(first.der()).hexdigest()}",
            f"cert-{hashlib.sha256(second.der()).hexdigest()}",
            "ge8-ok0",
        ),
    )
    ok = good_certs("ge9")
    add(
        "base64-not-a-certificate",
        "generated/not-cert.txt",
        b64_lines(ok[0].pem().encode(), m.random.randbytes(300), ok[1].pem().encode()),
        WITH_ERRORS,
        good=("ge9-ok0", "ge9-ok1"),
        bad={"line 2": ("Invalid certificate format",)},
    )
    ok = good_certs("ge10")
    add(
        "ten-megabyte-single-line",
        "generated/long-line.txt",
        b64_lines(ok[0].pem().encode())
        + b"QUJD" * (10 * 1024 * 1024 // 4)
        + b"\n"
        + b64_lines(ok[1].pem().encode()),
        WITH_ERRORS,
        good=("ge10-ok0", "ge10-ok1"),
        bad={"line 2": (f"the line is longer than {LINE_LIMIT} bytes",)},
    )
    ok = good_certs("ge11")
    add(
        "crlf-line-endings",
        "generated/crlf.txt",
        b64_lines(*(cert.pem().encode() for cert in ok)).replace(b"\n", b"\r\n"),
        COMPLETED,
        good=("ge11-ok0", "ge11-ok1"),
    )
    ok = good_certs("ge12")
    add(
        "key-needing-url-encoding",
        "generated/with space+plus & (1).txt",
        b64_lines(*(cert.pem().encode() for cert in ok)),
        COMPLETED,
        good=("ge12-ok0", "ge12-ok1"),
    )
    add("whitespace-only-file", "generated/blank.txt", b"\n  \n\t\n", FAILED, reason=("only blank lines",))
    add("zero-byte-file", "incoming/zero.bin", b"", FAILED, reason=("The manifest is empty.",))
    add(
        "unknown-vendor-override",
        "incoming/vendor.txt",
        b64_lines(m.device("ge13-ok0").pem().encode()),
        FAILED,
        metadata={"thingpress-vendor": "acme"},
        reason=("Unknown vendor 'acme'",),
    )

    # Infineon 7z --------------------------------------------------------------------------------
    ok = good_certs("in1")
    add(
        "infineon-garbage-member",
        "infineon/garbage-member.7z",
        infineon(
            {
                "E0E0": [
                    ("A1_E0E0.pem", ok[0].pem().encode()),
                    ("B2_E0E0.pem", GARBAGE_PEM),
                    ("C3_E0E0.pem", ok[1].pem().encode()),
                ]
            }
        ),
        WITH_ERRORS,
        good=("A1", "C3"),
        bad={"file B2_E0E0.pem": ("Invalid certificate format",)},
    )
    ok = good_certs("in6", 4)
    long_name = "L" * 300 + "_E0E0.pem"
    add(
        "infineon-repeated-and-long-member-names",
        "infineon/repeated-and-long-names.7z",
        infineon(
            {
                "E0E0": [
                    ("RN1_E0E0.pem", ok[0].pem().encode()),
                    (long_name, ok[1].pem().encode()),
                    ("f1/RN3_E0E0.pem", ok[2].pem().encode()),
                    ("f2/RN3_E0E0.pem", ok[2].pem().encode()),
                    ("RN5_E0E0.pem", ok[3].pem().encode()),
                    ("RN5_E0E0.pem", ok[3].pem().encode()),
                ]
            }
        ),
        WITH_ERRORS,
        good=("RN1", "RN3", "RN5"),
        bad={f"file #2 …{long_name[-189:]}": ("the member name is longer than 255 bytes",)},
        duplicates={
            "file f2/RN3_E0E0.pem": ("duplicate of file f1/RN3_E0E0.pem",),
            "file #6 RN5_E0E0.pem": ("duplicate of file RN5_E0E0.pem",),
        },
    )
    add(
        "seven-zip-bomb",
        "infineon/bomb.7z",
        infineon({"E0E0": [("BOMB_E0E0.pem", b"0" * (8 * 1024 * 1024))]}),
        FAILED,
        reason=("compression ratio above the limit of 200", "decompression bomb"),
    )
    inner = seven_zip([("DEEP_E0E0.pem", m.device("in3-deep").pem().encode())])
    add(
        "seven-zip-nested-too-deep",
        "infineon/too-deep.7z",
        seven_zip(
            [("REEL0001_guid_E0E0_Certs.7z", seven_zip([("deeper.7z", seven_zip([("deepest.7z", inner)]))]))]
        ),
        FAILED,
        reason=("nests archives", "the limit is 2"),
    )
    ok = good_certs("in4", 1)
    add(
        "wrong-bundle-type",
        "infineon/wrong-bundle.7z",
        infineon({"E0E0": [("A1_E0E0.pem", ok[0].pem().encode())]}),
        FAILED,
        metadata={"thingpress-bundle-type": "E0E1"},
        reason=("has no E0E1 certificate bundle", "E0E0"),
    )
    add(
        "seven-zip-not-an-archive",
        "infineon/not-7z.7z",
        b"7z\xbc\xaf\x27\x1c" + m.random.randbytes(512),
        FAILED,
        reason=("archive",),
    )
    add(
        "seven-zip-long-names-header",
        "infineon/long-names-header.7z",
        seven_zip_bombs.long_names(2000, 65536),
        FAILED,
        reason=("-byte header; the limit for the members it may hold is",),
    )
    add(
        "seven-zip-many-members-header",
        "infineon/many-members-header.7z",
        seven_zip_bombs.many_members(2_000_000),
        FAILED,
        reason=("more than 250000 archive members",),
    )
    add(
        "seven-zip-huge-declared-header",
        "infineon/huge-declared-header.7z",
        seven_zip_bombs.declared_huge_header(),
        FAILED,
        reason=("-byte header; the limit for the members it may hold is",),
    )
    return cases
