"""Real vendor material from ``../shared/manifests/``: each file gives its README's expected outcome.

Every file is checked offline with ``thingpress check`` (the provider's own evaluation), and the
files that exercise tolerant reading, trust anchors and fleet naming also go through the whole local
pipeline, with assertions on the IoT registry, the job report and the dead-letter queues.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from layer_utils.cert_utils import load_certificate, load_certificates
from testing.pipeline import pipeline
from thingpress.check import CheckResult, check_manifest

NOW = datetime(2026, 11, 28, tzinfo=UTC)
TNG = ("microchip", "ECC608C-TNGTLSU-B.json")
FINGERPRINT_NAME = re.compile(r"cert-[0-9a-f]{64}")


def names(result: CheckResult) -> list[str]:
    return [record.thing_name for record in result.imported]


def verifiers(shared: Path) -> tuple:  # type: ignore[type-arg]
    return tuple(
        load_certificate(path.read_bytes()) for path in sorted((shared / "microchip" / "verifiers").glob("*"))
    )


def tng_expectations(shared: Path) -> dict[str, str]:
    """Return signed uniqueId -> SHA-256 of the DER of x5c[0], read straight from the manifest."""
    expected = {}
    for entry in json.loads((shared / TNG[0] / TNG[1]).read_text()):
        payload = json.loads(base64.urlsafe_b64decode(entry["payload"] + "=" * (-len(entry["payload"]) % 4)))
        (slot,) = [key for key in payload["publicKeySet"]["keys"] if key["kid"] == "0"]
        expected[payload["uniqueId"]] = hashlib.sha256(base64.b64decode(slot["x5c"][0])).hexdigest()
    return expected


# ------------------------------------------------------------------------------------------- offline


def test_trust_and_go_imports_every_device(shared_manifests: Path) -> None:
    result = check_manifest(
        shared_manifests / TNG[0] / TNG[1], verifiers=verifiers(shared_manifests), now=NOW
    )
    assert result.failures == []
    assert {r.thing_name: r.certificate_id for r in result.imported} == tng_expectations(shared_manifests)
    assert len(result.imported) == 10
    assert {r.name_source for r in result.imported} == {"vendor"}


def test_trust_and_go_device_certificates_need_the_tolerant_reader(shared_manifests: Path) -> None:
    entry = json.loads((shared_manifests / TNG[0] / TNG[1]).read_text())[0]
    payload = json.loads(base64.urlsafe_b64decode(entry["payload"] + "=" * (-len(entry["payload"]) % 4)))
    device, signer = (base64.b64decode(item) for item in payload["publicKeySet"]["keys"][0]["x5c"])
    parsed = load_certificate(device)
    assert parsed.strict is None
    assert parsed.strict_problem == "the strict DER parser refuses its extensions"
    assert parsed.subject_cn == "sn0123F2408EA1FCF201"
    assert parsed.fingerprint == hashlib.sha256(device).hexdigest()
    # The signer CA in x5c[1] issued it: OpenSSL's verifier checks the chain the strict one cannot read.
    result = check_manifest(
        shared_manifests / TNG[0] / TNG[1],
        verifiers=verifiers(shared_manifests),
        trusted_cas=[load_certificate(signer)],
        now=NOW,
    )
    assert [p.locator for p in result.failures] == [
        p.locator for p in result.failures if "does not chain" in p.reason
    ]
    assert "entry 1 (uniqueId 0123f2408ea1fcf201)" in {r.locator for r in result.imported}


def test_trustflex_entries_carry_no_certificate(shared_manifests: Path) -> None:
    result = check_manifest(
        shared_manifests / "microchip" / "ECC608-TMNGTLSS-B.json",
        verifiers=verifiers(shared_manifests),
        now=NOW,
    )
    assert result.total == 10
    assert result.imported == []
    assert all(p.reason.endswith(": no certificate in manifest entry.") for p in result.failures)
    assert len(result.failures) == 10


def test_espressif_csv_names_things_after_the_mac(shared_manifests: Path) -> None:
    result = check_manifest(shared_manifests / "espressif" / "manifest-espressif.csv", now=NOW)
    assert result.failures == []
    assert len(result.imported) == 7
    assert "4BA2BB8764BD" in names(result)
    assert {r.name_source for r in result.imported} == {"vendor"}


def test_espressif_single_pem(shared_manifests: Path) -> None:
    result = check_manifest(shared_manifests / "espressif" / "single.pem", vendor="espressif", now=NOW)
    assert (result.total, len(result.imported), result.failures) == (1, 1, [])


@pytest.mark.parametrize("bundle", ["E0E0", "E0E1", "E0E2"])
def test_infineon_bundles_name_things_after_the_chip_id(shared_manifests: Path, bundle: str) -> None:
    result = check_manifest(
        shared_manifests / "infineon" / "manifest-infineon.7z", bundle_type=bundle, now=NOW
    )
    assert result.failures == []
    assert len(result.imported) == 200
    assert len(set(names(result))) == 200
    for record in result.imported:
        assert record.locator.endswith(f"/{record.thing_name}_{bundle}.pem") or record.locator == (
            f"file {record.thing_name}_{bundle}.pem"
        )
        assert record.name_source == "vendor"


def test_generated_names_things_after_the_cn(shared_manifests: Path) -> None:
    path = shared_manifests / "generated" / "certificates_test.txt"
    expired = check_manifest(path, now=NOW)
    assert len(expired.failures) == 100
    assert all("Certificate expired on 2025-09-13" in p.reason for p in expired.failures)
    result = check_manifest(path, allow_expired=True, now=NOW)
    assert names(result) == [f"Device-{i}" for i in range(100)]


def test_real_infineon_devices_are_named_by_fingerprint_and_chain_to_the_anchors(
    shared_manifests: Path,
) -> None:
    realworld = shared_manifests / "realworld"
    anchors = load_certificates((realworld / "infineon-optiga-trust-anchors.pem").read_bytes())
    assert len(anchors) == 6
    result = check_manifest(realworld / "infineon-optiga-trust-m-devices.pem", trusted_cas=anchors, now=NOW)
    assert result.failures == []
    assert len(result.imported) == 3
    # "Infineon IoT Node" is illegal and "InfineonIoTNode" is every chip's product CN: neither names one.
    assert all(FINGERPRINT_NAME.fullmatch(name) for name in names(result))
    assert [r.thing_name for r in result.imported] == [f"cert-{r.certificate_id}" for r in result.imported]
    # Without the anchors of their issuing CAs, no device chains.
    other = check_manifest(
        realworld / "infineon-optiga-trust-m-devices.pem", trusted_cas=anchors[:1], now=NOW
    )
    assert len(other.failures) >= 1
    assert all("does not chain to a trusted CA" in p.reason for p in other.failures)


def test_real_espressif_devices(shared_manifests: Path) -> None:
    path = shared_manifests / "realworld" / "espressif-esp-secure-cert-devices.pem"
    result = check_manifest(path, allow_expired=True, now=NOW)
    assert result.failures == []
    assert len(result.imported) == 4
    assert all(FINGERPRINT_NAME.fullmatch(name) for name in names(result))
    strict = check_manifest(path, now=NOW)
    assert len(strict.imported) == 2
    assert all("Certificate expired on" in p.reason for p in strict.failures)


def espressif_csv_of(path: Path) -> tuple[bytes, list[str]]:
    """Put real certificates in an Espressif CSV; the cn column is blank where the certificate has none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["MAC", "cn", "cert"])
    macs = []
    for index, certificate in enumerate(load_certificates(path.read_bytes())):
        mac = f"24:0A:C4:00:10:{index:02X}"
        macs.append(mac)
        writer.writerow([mac, certificate.subject_cn or "", certificate.pem()])
    return out.getvalue().encode(), macs


def test_real_espressif_devices_in_a_csv_are_named_by_mac(shared_manifests: Path, tmp_path: Path) -> None:
    body, macs = espressif_csv_of(shared_manifests / "realworld" / "espressif-esp-secure-cert-devices.pem")
    manifest = tmp_path / "devices.csv"
    manifest.write_bytes(body)
    result = check_manifest(manifest, allow_expired=True, now=NOW)
    assert result.failures == []
    assert names(result) == macs


# ------------------------------------------------------------------------------ the whole pipeline


@pytest.mark.slow
def test_pipeline_imports_real_material(shared_manifests: Path) -> None:
    realworld = shared_manifests / "realworld"
    tng = tng_expectations(shared_manifests)
    csv_body, macs = espressif_csv_of(realworld / "espressif-esp-secure-cert-devices.pem")
    with pipeline() as run:
        for path in sorted((shared_manifests / "microchip" / "verifiers").glob("*")):
            run.put(f"verifiers/microchip/{path.name}", path.read_bytes())
        run.put(
            "trusted-cas/generated/optiga.pem", (realworld / "infineon-optiga-trust-anchors.pem").read_bytes()
        )
        # Trust&GO: every device, named by its signed uniqueId, with the certificate of x5c[0].
        trust_and_go = run.run("microchip/tng.json", (shared_manifests / TNG[0] / TNG[1]).read_bytes())
        assert trust_and_go.job.status == "COMPLETED"
        assert {name: ids for name, ids in trust_and_go.things.items() if name in tng} == {
            name: frozenset({certificate_id}) for name, certificate_id in tng.items()
        }
        assert {r["name_source"] for r in trust_and_go.report["imported_entries"]} == {"vendor"}
        # Real Espressif certificates (one without a CN) in a CSV, named by the MAC column.
        run.configure(THINGPRESS_ALLOW_EXPIRED="true")
        espressif = run.run("espressif/real.csv", csv_body)
        assert espressif.job.status == "COMPLETED", espressif.failures
        assert sorted(espressif.imported.values()) == sorted(macs)
        # Real OPTIGA Trust M chips that share one CN, validated against the Infineon anchors.
        run.configure(THINGPRESS_ALLOW_EXPIRED="false", THINGPRESS_TRUSTED_CA_PREFIX="trusted-cas/")
        infineon = run.run(
            "generated/optiga.pem", (realworld / "infineon-optiga-trust-m-devices.pem").read_bytes()
        )
        assert infineon.job.status == "COMPLETED", infineon.failures
        assert len(infineon.imported) == 3
        for name in infineon.imported.values():
            assert FINGERPRINT_NAME.fullmatch(name)
            assert infineon.things[name] == frozenset({name.removeprefix("cert-")})
        assert "Infineon IoT Node" not in infineon.things
        assert "InfineonIoTNode" not in infineon.things
