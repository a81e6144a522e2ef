"""Hostile input and trust rules, end to end on the local stack: every refusal names its reason.

Each test uploads a manifest to the local intake bucket, lets the SQS event-source-mapping emulator
drive the real ManifestProvider and BulkImporter handlers until the queues are empty, and then reads
the job report (``reports/<key>.json``), the job item and the IoT registry. Limits that refuse a
whole manifest end the job FAILED with the reason; per-entry rules list the entry with its reason
while the good siblings are still imported.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import py7zr
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from layer_utils.jobs import Job, JobStore, latest_report_key
from thingpress.certfactory import Issued, make_ca, make_device_cert
from thingpress.generate import make_microchip_signer, write_infineon
from thingpress.local import EventSourceMappingEmulator, LocalStack
from thingpress.localrun import LOCAL_IOT_TPS

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
PROVIDER = "ManifestProviderFunction"
IMPORTER = "BulkImporterFunction"


# --------------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------------


@contextmanager
def local_stack(**parameters: str) -> Iterator[LocalStack]:
    """Start the template's stack with these parameter overrides (and unthrottled local IoT).

    Every stack is a new deployment: its handlers start cold, so they read these parameters.
    """
    with LocalStack(TEMPLATE, parameters={"IotApiTps": json.dumps(LOCAL_IOT_TPS), **parameters}) as stack:
        yield stack


@dataclass(frozen=True)
class Outcome:
    """What the pipeline made of one manifest: the report, the job item and the things in IoT."""

    report: dict[str, Any]
    job: Job
    things: frozenset[str]

    @property
    def failures(self) -> dict[str, str]:
        """Return locator -> reason of every failed entry in the report."""
        return {failure["locator"]: failure["reason"] for failure in self.report["failures"]}

    @property
    def imported(self) -> set[str]:
        """Return the thing names the report lists as imported."""
        return {entry["thing_name"] for entry in self.report["imported_entries"]}


def run_pipeline(
    stack: LocalStack, key: str, body: bytes, metadata: Mapping[str, str] | None = None
) -> Outcome:
    """Upload one manifest, run both functions until every queue is empty and collect the outcome."""
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.bucket, Key=key, Body=body, Metadata=dict(metadata or {}))
    stats = EventSourceMappingEmulator(stack, max_concurrency=None).run_until_idle(max_seconds=120)
    assert stats.idle, "the pipeline did not drain"
    # Hostile input is reported, never a crash: no handler error, nothing dead-lettered.
    assert stats.errors == 0
    assert stats.failed_records == 0
    assert sum(stats.moved_to_dlq.values()) == 0
    store = JobStore(stack.physical_id("JobsTable"), dynamodb=stack.client("dynamodb"), s3=s3)
    (job,) = [job for job in store.list_jobs() if job.key == key]
    report_body = s3.get_object(Bucket=stack.bucket, Key=latest_report_key(key))["Body"].read()
    report = json.loads(report_body)
    assert report["status"] == str(job.status)
    paginator = stack.client("iot").get_paginator("list_things")
    things = frozenset(thing["thingName"] for page in paginator.paginate() for thing in page["things"])
    return Outcome(report, job, things)


def assert_failed(outcome: Outcome, *fragments: str) -> str:
    """Check the manifest was refused as a whole with a reason containing ``fragments``; return it."""
    assert outcome.job.status == "FAILED"
    reason = outcome.report["reason"]
    assert reason == outcome.job.reason
    assert isinstance(reason, str)
    assert "Traceback" not in reason
    for fragment in fragments:
        assert fragment in reason, f"{fragment!r} not in {reason!r}"
    assert outcome.report["imported_entries"] == []
    assert outcome.things == frozenset()
    return reason


def assert_per_entry(outcome: Outcome, good: Sequence[str], bad: Mapping[str, Sequence[str]]) -> None:
    """Check the good thing names were imported and each bad locator failed with its reason fragments."""
    assert outcome.job.status == "COMPLETED_WITH_ERRORS", outcome.report
    assert outcome.report["reason"] is None
    assert outcome.imported == set(good)
    assert outcome.things == frozenset(good)
    assert outcome.report["imported"] == len(good)
    assert outcome.report["failed"] == len(bad)
    failures = outcome.failures
    assert set(failures) == set(bad), failures
    for locator, fragments in bad.items():
        assert failures[locator].startswith(f"{locator}: "), failures[locator]
        for fragment in fragments:
            assert fragment in failures[locator], f"{fragment!r} not in {failures[locator]!r}"


# --------------------------------------------------------------------------------------------------
# Manifest builders
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def device_ca() -> Issued:
    return make_ca("Thingpress Security Test CA")


def device(ca: Issued, cn: str, **validity: datetime) -> Issued:
    return make_device_cert(cn, ca, **validity)


def pem_bundle(*certs: Issued) -> bytes:
    return "".join(cert.pem() for cert in certs).encode("ascii")


def espressif_csv(rows: Sequence[tuple[str, str, str]]) -> bytes:
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["MAC", "cn", "cert"])
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signer_header(
    signer: Issued, alg: str = "ES256", *, thumbprint_of: Issued | None = None
) -> dict[str, str]:
    ski = signer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    thumbprint = hashlib.sha256((thumbprint_of or signer).der()).digest()
    return {"alg": alg, "kid": b64url(ski), "typ": "JWT", "x5t#S256": b64url(thumbprint)}


def es256(signer: Issued, signing_input: str) -> str:
    assert isinstance(signer.key, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(signer.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def jws_entry(
    signer: Issued,
    cert: Issued,
    issuer: Issued,
    unique_id: str,
    *,
    header: Mapping[str, str] | None = None,
    header_unique_id: str | None = None,
    signed_payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return one Microchip JWS entry for ``cert``; the keywords damage it in one specific way."""
    payload_json = {
        "version": 1,
        "model": "ATECC608B",
        "uniqueId": unique_id,
        "publicKeySet": {
            "keys": [
                {
                    "kid": "0",
                    "kty": "EC",
                    "crv": "P-256",
                    "x5c": [
                        base64.b64encode(cert.der()).decode("ascii"),
                        base64.b64encode(issuer.der()).decode("ascii"),
                    ],
                }
            ]
        },
    }
    protected = b64url(json.dumps(header or signer_header(signer), separators=(",", ":")).encode())
    payload = b64url(json.dumps(payload_json, separators=(",", ":")).encode())
    # A signature made over another payload is a valid-looking signature that does not verify.
    signed = b64url(json.dumps(signed_payload, separators=(",", ":")).encode()) if signed_payload else payload
    return {
        "payload": payload,
        "protected": protected,
        "header": {"uniqueId": header_unique_id or unique_id},
        "signature": es256(signer, f"{protected}.{signed}"),
    }


def upload_verifier(stack: LocalStack, signer: Issued) -> None:
    """Upload a Microchip manifest signer certificate under the provider's verifier prefix."""
    prefix = stack.function_env(PROVIDER)["THINGPRESS_MICROCHIP_VERIFIER_PREFIX"]
    name = hashlib.sha256(signer.der()).hexdigest()[:16]
    stack.client("s3").put_object(Bucket=stack.bucket, Key=f"{prefix}{name}.pem", Body=signer.pem().encode())


def seven_zip(files: Sequence[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", filters=[{"id": py7zr.FILTER_LZMA2}]) as archive:
        for name, data in files:
            archive.writestr(data, name)
    return buffer.getvalue()


def infineon_manifest(tmp_path: Path, count: int = 3) -> tuple[bytes, tuple[str, ...]]:
    path = tmp_path / "infineon.7z"
    summary = write_infineon(path, count, bundle_types=("E0E0",), include_keys=False)
    return path.read_bytes(), summary.thing_names


@pytest.fixture
def extracted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every archive member py7zr is asked to extract (a spy; extraction still happens).

    The parser hands py7zr's worker one writer per member to extract (None for the others).
    """
    calls: list[str] = []
    original = py7zr.py7zr.Worker.register_filelike

    def register(self: py7zr.py7zr.Worker, index: int, fileish: Any) -> None:
        if fileish is not None:
            calls.append(self.files[index].filename)
        original(self, index, fileish)

    monkeypatch.setattr(py7zr.py7zr.Worker, "register_filelike", register)
    return calls


# --------------------------------------------------------------------------------------------------
# Whole-manifest limits
# --------------------------------------------------------------------------------------------------


def test_manifest_larger_than_the_limit_fails_with_the_sizes(device_ca: Issued) -> None:
    body = pem_bundle(*(device(device_ca, f"size-{i}") for i in range(3)))
    with local_stack(MaxManifestBytes="1000") as stack:
        outcome = run_pipeline(stack, "generated/too-big.pem", body)
    assert_failed(outcome, f"{len(body)} bytes", "more than the limit of 1000 bytes")


def test_archive_over_the_uncompressed_size_limit_fails_before_extraction(
    tmp_path: Path, extracted: list[str]
) -> None:
    body, _ = infineon_manifest(tmp_path)
    with local_stack(MaxArchiveUncompressedBytes="1500") as stack:
        outcome = run_pipeline(stack, "infineon/size.7z", body)
    assert_failed(outcome, "Infineon manifest would decompress to more than 1500 bytes")
    # The bundle archive was taken out of the upload; none of its certificate files was extracted.
    assert extracted
    assert not [name for name in extracted if not name.endswith("_E0E0_Certs.7z")]


def test_archive_with_too_many_members_fails(tmp_path: Path) -> None:
    body, _ = infineon_manifest(tmp_path, count=3)
    # The upload holds the E0E0 bundle and a README; the bundle adds three certificate files.
    with local_stack(MaxArchiveEntries="4") as stack:
        outcome = run_pipeline(stack, "infineon/members.7z", body)
    assert_failed(outcome, "holds more than 4 archive members")


def test_archive_nested_deeper_than_the_limit_fails_before_extracting_the_level(
    device_ca: Issued, extracted: list[str]
) -> None:
    deepest = seven_zip([("0001_E0E0.pem", device(device_ca, "depth-1").pem().encode())])
    bundle = seven_zip(
        [("0000_E0E0.pem", device(device_ca, "depth-0").pem().encode()), ("deeper.7z", deepest)]
    )
    body = seven_zip([("REEL_0000_E0E0_Certs.7z", bundle), ("README.txt", b"synthetic")])
    with local_stack() as stack:
        outcome = run_pipeline(stack, "infineon/deep.7z", body)
    assert_failed(outcome, "nests archives 3 levels deep at deeper.7z", "the limit is 2")
    # The level-2 bundle was taken out of the upload; nothing of the bundle itself was extracted.
    assert set(extracted) == {"REEL_0000_E0E0_Certs.7z"}  # by the survey pass and the import pass


def test_decompression_bomb_is_refused_from_its_metadata(device_ca: Issued, extracted: list[str]) -> None:
    bomb = seven_zip(
        [
            ("0000_E0E0.pem", device(device_ca, "bomb-0").pem().encode()),
            ("0001_E0E0.pem", bytes(32 * 1024 * 1024)),
        ]
    )
    body = seven_zip([("REEL_0000_E0E0_Certs.7z", bomb), ("README.txt", b"synthetic")])
    with local_stack() as stack:
        outcome = run_pipeline(stack, "infineon/bomb.7z", body)
    assert_failed(outcome, "REEL_0000_E0E0_Certs.7z", "compression ratio above the limit of 200")
    assert "0001_E0E0.pem" not in extracted
    assert set(extracted) == {"REEL_0000_E0E0_Certs.7z"}  # by the survey pass and the import pass


def test_compression_ratio_limit_is_configurable(tmp_path: Path) -> None:
    body, _ = infineon_manifest(tmp_path)
    with local_stack(MaxCompressionRatio="1") as stack:
        outcome = run_pipeline(stack, "infineon/ratio.7z", body)
    assert_failed(outcome, "compression ratio above the limit of 1", "decompression bomb")


def test_infineon_within_the_limits_imports_every_device(tmp_path: Path) -> None:
    body, names = infineon_manifest(tmp_path)
    with local_stack() as stack:
        outcome = run_pipeline(stack, "infineon/fine.7z", body)
    assert outcome.job.status == "COMPLETED"
    assert outcome.things == frozenset(names)


def test_csv_field_over_the_limit_fails_the_manifest(device_ca: Issued) -> None:
    huge = "\n".join(["A" * 1000] * 70)  # 70 kB in short lines: only the field limit applies
    first = device(device_ca, "csv-first")
    body = espressif_csv(
        [("24:0A:C4:00:00:01", "csv-huge", huge), ("24:0A:C4:00:00:02", "csv-first", first.pem())]
    )
    with local_stack() as stack:
        outcome = run_pipeline(stack, "espressif/field.csv", body)
    assert_failed(
        outcome, "Row 2 of the Espressif manifest is not valid CSV", "field larger than field limit"
    )


def test_csv_field_limit_after_good_rows_keeps_what_was_imported(device_ca: Issued) -> None:
    good = [device(device_ca, f"csv-{i}") for i in range(2)]
    rows = [(f"24:0A:C4:00:00:0{i}", f"csv-{i}", cert.pem()) for i, cert in enumerate(good)]
    rows.append(("24:0A:C4:00:00:09", "csv-huge", "\n".join(["B" * 1000] * 70)))
    with local_stack() as stack:
        outcome = run_pipeline(stack, "espressif/late-field.csv", espressif_csv(rows))
    assert outcome.job.status == "FAILED"
    assert "Row 4 of the Espressif manifest is not valid CSV" in outcome.report["reason"]
    assert outcome.things == frozenset({"24:0A:C4:00:00:00", "24:0A:C4:00:00:01"})


def test_json_nested_deeper_than_the_limit_fails_that_entry(device_ca: Issued) -> None:
    signer = make_microchip_signer("Depth Test Signer")
    good = [device(device_ca, f"sn01230000000{i}") for i in range(2)]
    entries = [jws_entry(signer, cert, device_ca, f"01230000000{i}") for i, cert in enumerate(good)]
    deep = jws_entry(signer, device(device_ca, "sn012300000009"), device_ca, "012300000009")
    nested: Any = "bottom"
    for _ in range(40):
        nested = [nested]
    deep["extensions"] = nested
    manifest = [entries[0], deep, entries[1]]
    with local_stack() as stack:
        upload_verifier(stack, signer)
        outcome = run_pipeline(stack, "microchip/deep.json", json.dumps(manifest).encode())
    assert_per_entry(
        outcome,
        good=["012300000000", "012300000001"],
        bad={"entry 2": ["nested deeper than 32 levels"]},
    )


# --------------------------------------------------------------------------------------------------
# Private keys
# --------------------------------------------------------------------------------------------------


def _key_material(key: Issued) -> tuple[str, list[str]]:
    pem = key.key_pem()
    body_lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return pem, body_lines


@pytest.fixture(scope="module")
def microchip_signer() -> Issued:
    return make_microchip_signer("Key Test Signer")


def _private_key_manifests(ca: Issued, leaked: Issued, microchip_signer: Issued) -> dict[str, bytes]:
    """One manifest per vendor format that carries ``leaked``'s private key next to good certificates.

    Without the key each would import ``key-good`` (the Microchip signer is uploaded as a verifier).
    """
    good = device(ca, "key-good")
    key_pem = leaked.key_pem()
    entry = jws_entry(microchip_signer, good, ca, "0123AAAA0000")
    entry["comment"] = key_pem
    return {
        "generated/key-bundle.pem": pem_bundle(good) + key_pem.encode(),
        "generated/key-b64.txt": base64.b64encode(good.pem().encode())
        + b"\n"
        + base64.b64encode(key_pem.encode())
        + b"\n",
        "espressif/key.csv": espressif_csv([("24:0A:C4:00:00:01", "key-good", good.pem() + key_pem)]),
        "microchip/key.json": json.dumps([entry]).encode(),
        "infineon/key.7z": seven_zip(
            [
                (
                    "REEL_0000_E0E0_Certs.7z",
                    seven_zip(
                        [
                            ("0000_E0E0.pem", good.pem().encode()),
                            ("0001_E0E0.pem", leaked.pem().encode() + key_pem.encode()),
                        ]
                    ),
                ),
                ("README.txt", b"synthetic"),
            ]
        ),
    }


@pytest.mark.parametrize(
    "key",
    [
        "generated/key-bundle.pem",
        "generated/key-b64.txt",
        "espressif/key.csv",
        "microchip/key.json",
        "infineon/key.7z",
    ],
)
def test_manifest_with_a_private_key_is_refused_as_a_whole(
    device_ca: Issued, microchip_signer: Issued, key: str
) -> None:
    leaked = device(device_ca, "key-leaked")
    body = _private_key_manifests(device_ca, leaked, microchip_signer)[key]
    with local_stack() as stack:
        upload_verifier(stack, microchip_signer)
        outcome = run_pipeline(stack, key, body)
    reason = assert_failed(outcome, "contains private key material", "the whole manifest is refused")
    _, body_lines = _key_material(leaked)
    assert not any(line in reason for line in body_lines)


@contextmanager
def all_log_output() -> Iterator[io.StringIO]:
    """Send every log record of every logger (Powertools' JSON lines included) to one buffer, at DEBUG."""
    buffer = io.StringIO()
    loggers = [logging.getLogger()]
    loggers += [item for item in logging.root.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    saved: list[tuple[logging.Logger, int, list[logging.Handler], bool]] = []
    for logger in loggers:
        saved.append((logger, logger.level, list(logger.handlers), logger.propagate))
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.stdout,
                sys.stderr,
                sys.__stdout__,
                sys.__stderr__,
            ):
                # Keep the handler's formatter (Powertools' JSON), write to the buffer instead.
                replacement = logging.StreamHandler(buffer)
                replacement.setFormatter(handler.formatter)
                logger.removeHandler(handler)
                logger.addHandler(replacement)
        if logger.handlers and logger is not logging.getLogger():
            logger.setLevel(logging.DEBUG)
    catch_all = logging.StreamHandler(buffer)
    catch_all.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s"))
    root = logging.getLogger()
    root.addHandler(catch_all)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(catch_all)
        for logger, level, handlers, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def test_no_log_line_ever_contains_key_material(
    device_ca: Issued, microchip_signer: Issued, capfd: pytest.CaptureFixture[str]
) -> None:
    leaked = device(device_ca, "key-leaked")
    manifests = _private_key_manifests(device_ca, leaked, microchip_signer)
    key_pem, body_lines = _key_material(leaked)
    key_b64 = base64.b64encode(key_pem.encode()).decode()
    der = leaked.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forbidden = [*body_lines, "".join(body_lines), key_b64[:64], der.hex()[:64], "BEGIN PRIVATE KEY"]
    with local_stack() as stack:
        upload_verifier(stack, microchip_signer)
        stack.handler(PROVIDER)  # imported (loggers created) before the capture starts
        stack.handler(IMPORTER)
        capfd.readouterr()
        with all_log_output() as logs:
            outcomes = [run_pipeline(stack, key, body) for key, body in manifests.items()]
        captured = capfd.readouterr()
    output = logs.getvalue() + captured.out + captured.err
    # The capture did see the pipeline's log lines (job ids of every run), so its silence means something.
    for outcome in outcomes:
        assert outcome.job.job_id in output
    assert "private key material" in output
    for needle in forbidden:
        assert needle not in output, f"key material {needle[:20]}… appears in the logs"
    for outcome in outcomes:
        stored = json.dumps(outcome.report)
        assert not any(needle in stored for needle in forbidden)


# --------------------------------------------------------------------------------------------------
# Microchip signatures
# --------------------------------------------------------------------------------------------------


def test_microchip_entries_are_checked_one_by_one(device_ca: Issued) -> None:
    signer = make_microchip_signer("Trusted Manifest Signer")
    stranger = make_microchip_signer("Unknown Manifest Signer")
    now = datetime.now(UTC)
    expired_signer = make_ca(
        "Expired Manifest Signer", not_before=now - timedelta(days=800), not_after=now - timedelta(days=400)
    )
    future_signer = make_ca(
        "Future Manifest Signer", not_before=now + timedelta(days=30), not_after=now + timedelta(days=400)
    )
    ids = [f"0123BEEF{i:04X}" for i in range(11)]
    certs = [device(device_ca, f"sn{unique_id}") for unique_id in ids]

    def entry(index: int, **damage: Any) -> dict[str, Any]:
        return jws_entry(damage.pop("by", signer), certs[index], device_ca, ids[index], **damage)

    manifest = [
        entry(0),
        entry(1, header=signer_header(signer, "HS256")),
        entry(2, header=signer_header(signer, "none")),
        entry(3, by=stranger),
        entry(4, header=signer_header(signer, thumbprint_of=stranger)),
        entry(5, by=expired_signer),
        entry(6, signed_payload={"uniqueId": "someone else"}),
        entry(7, header_unique_id="0123BEEFFFFF"),
        entry(8, header=signer_header(signer, "ES384")),
        entry(9, by=future_signer),
        entry(10),
    ]
    with local_stack() as stack:
        upload_verifier(stack, signer)
        upload_verifier(stack, expired_signer)
        upload_verifier(stack, future_signer)
        outcome = run_pipeline(stack, "microchip/mixed.json", json.dumps(manifest).encode())
    assert_per_entry(
        outcome,
        good=[ids[0], ids[10]],
        bad={
            f"entry 2 (uniqueId {ids[1]})": ["signature algorithm 'HS256' is not allowed", "allowed: ES256"],
            f"entry 3 (uniqueId {ids[2]})": ["signature algorithm 'none' is not allowed"],
            f"entry 4 (uniqueId {ids[3]})": ["no trusted signer matches kid"],
            f"entry 5 (uniqueId {ids[4]})": ["no trusted signer matches kid", "x5t#S256"],
            f"entry 6 (uniqueId {ids[5]})": ["signer 'Expired Manifest Signer' is not valid at"],
            f"entry 7 (uniqueId {ids[6]})": [
                "signature does not verify with signer 'Trusted Manifest Signer'"
            ],
            "entry 8 (uniqueId 0123BEEFFFFF)": [
                "tampered with",
                f"header uniqueId 0123BEEFFFFF does not match the signed uniqueId {ids[7]}",
            ],
            f"entry 9 (uniqueId {ids[8]})": ["signature algorithm 'ES384' is not allowed"],
            f"entry 10 (uniqueId {ids[9]})": ["signer 'Future Manifest Signer' is not valid at"],
        },
    )


# --------------------------------------------------------------------------------------------------
# Certificate trust
# --------------------------------------------------------------------------------------------------


def test_certificates_must_chain_to_the_vendors_trusted_cas() -> None:
    trusted = make_ca("Trusted Vendor CA")
    rogue = make_ca("Rogue CA")
    other_vendor = make_ca("Other Vendor CA")
    certs = [
        device(trusted, "trust-0"),
        device(rogue, "trust-1"),
        device(other_vendor, "trust-2"),
        device(trusted, "trust-3"),
    ]
    with local_stack(TrustedCaPrefix="trust/") as stack:
        s3 = stack.client("s3")
        s3.put_object(Bucket=stack.bucket, Key="trust/generated/vendor-ca.pem", Body=trusted.pem().encode())
        # Another vendor's anchor does not vouch for generated certificates.
        s3.put_object(Bucket=stack.bucket, Key="trust/espressif/ca.pem", Body=other_vendor.pem().encode())
        outcome = run_pipeline(stack, "generated/trust.pem", pem_bundle(*certs))
    bundle_lines = pem_bundle(*certs).decode().splitlines()
    begin = [f"line {n + 1}" for n, line in enumerate(bundle_lines) if line.startswith("-----BEGIN")]
    assert_per_entry(
        outcome,
        good=["trust-0", "trust-3"],
        bad={
            begin[1]: ["does not chain to a trusted CA", "CN=Rogue CA"],
            begin[2]: ["does not chain to a trusted CA", "CN=Other Vendor CA"],
        },
    )


@pytest.mark.parametrize("allow_expired", ["false", "true"])
def test_expired_certificates_are_refused_unless_allowed(device_ca: Issued, allow_expired: str) -> None:
    now = datetime.now(UTC)
    expired = device(
        device_ca, "expired-1", not_before=now - timedelta(days=400), not_after=now - timedelta(days=30)
    )
    certs = [device(device_ca, "expired-0"), expired, device(device_ca, "expired-2")]
    with local_stack(AllowExpired=allow_expired) as stack:
        outcome = run_pipeline(stack, "generated/expired.pem", pem_bundle(*certs))
    if allow_expired == "true":
        assert outcome.job.status == "COMPLETED"
        assert outcome.things == frozenset({"expired-0", "expired-1", "expired-2"})
        return
    begin = pem_bundle(*certs).decode().splitlines().index(expired.pem().splitlines()[0], 1) + 1
    assert_per_entry(
        outcome,
        good=["expired-0", "expired-2"],
        bad={f"line {begin}": [f"Certificate expired on {expired.certificate.not_valid_after_utc:%Y-%m-%d}"]},
    )


# --------------------------------------------------------------------------------------------------
# Thing names
# --------------------------------------------------------------------------------------------------


def test_thing_names_are_validated_never_rewritten(device_ca: Issued) -> None:
    certs = [device(device_ca, f"name-{i}") for i in range(5)]
    macs = ["24:0A:C4:00:00:00", "bad mac/../x", "A" * 129, "dev\u00efce", "24:0A:C4:00:00:04"]
    rows = [(mac, f"name-{i}", cert.pem()) for i, (mac, cert) in enumerate(zip(macs, certs, strict=True))]
    with local_stack() as stack:
        # The vendor identifier alone: an illegal MAC is the entry's failure, never rewritten.
        strict = {"thingpress-thing-name-source": "vendor"}
        outcome = run_pipeline(stack, "espressif/names.csv", espressif_csv(rows), metadata=strict)
        # The default sources fall back to the next legal source, the CN, for the same rows.
        fallback = run_pipeline(stack, "espressif/fallback.csv", espressif_csv(rows))
    assert fallback.job.status == "COMPLETED"
    assert [(r["thing_name"], r["name_source"]) for r in fallback.report["imported_entries"]] == [
        ("24:0A:C4:00:00:00", "vendor"),
        ("name-1", "cn"),
        ("name-2", "cn"),
        ("name-3", "cn"),
        ("24:0A:C4:00:00:04", "vendor"),
    ]
    assert_per_entry(
        outcome,
        good=["24:0A:C4:00:00:00", "24:0A:C4:00:00:04"],
        bad={
            "row 3": ["'bad mac/../x'", "contains characters other than letters, digits"],
            "row 4": ["is longer than 128 characters (129)"],
            "row 5": ["contains characters other than letters, digits"],
        },
    )


def test_an_illegal_thing_name_prefix_from_upload_metadata_fails_the_manifest(device_ca: Issued) -> None:
    body = pem_bundle(device(device_ca, "prefix-0"))
    with local_stack() as stack:
        outcome = run_pipeline(
            stack, "generated/prefix.pem", body, metadata={"thingpress-thing-name-prefix": "site 1/"}
        )
    assert_failed(outcome, "The import settings are invalid", "Thing name prefix 'site 1/' is invalid")
