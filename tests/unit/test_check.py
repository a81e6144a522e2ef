"""thingpress check: every problem of a broken manifest is reported with its locator and reason."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from thingpress import certfactory, cli
from thingpress.check import check_manifest
from thingpress.generate import generate, make_microchip_signer

CA = certfactory.make_ca("Check Test CA")


def run_check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = cli.main(["check", *argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out)


def problems_by_locator(document: dict[str, object]) -> dict[str, str]:
    """Return the reason of every entry that cannot be imported (and of the manifest), by locator."""
    rejected = [*document["failures"], *document["duplicate_entries"]]  # type: ignore[misc]
    found = {entry["locator"]: entry["reason"] for entry in rejected}
    if document["reason"] is not None:
        found["manifest"] = document["reason"]
    return found


def b64_lines(*certs: certfactory.Issued) -> bytes:
    return b"".join(base64.b64encode(issued.pem().encode()) + b"\n" for issued in certs)


# --- generated broken manifests -----------------------------------------------------------------

REASON_WORDS = {
    "garbage certificate": "certificate",
    "cn mismatch": "does not match",
    "empty MAC": "MAC column is empty",
    "no certificate": "no certificate in manifest entry",
    "bad signature": "signature",
    "tampered payload": "signature does not verify",
    "uniqueId mismatch": "tampered",
    "unknown signer": "no trusted signer",
}


@pytest.mark.parametrize(
    ("vendor", "name"),
    [
        ("espressif", "e.csv"),
        ("generated", "g.txt"),
        ("infineon", "i.7z"),
        ("microchip", "m.json"),
    ],
)
def test_generated_damage_is_reported_at_its_locator(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, vendor: str, name: str
) -> None:
    signer = make_microchip_signer()
    verifiers = tmp_path / "verifiers"
    verifiers.mkdir()
    (verifiers / "signer.crt").write_text(signer.pem())
    manifest = tmp_path / name
    summary = generate(vendor, 20, manifest, bad_fraction=0.25, signer=signer, seed=7)
    assert summary.bad, "the generator must damage some entries for this test to mean anything"

    code, document = run_check(capsys, str(manifest), "--verifiers", str(verifiers))

    assert code == 1
    assert document["vendor"] == vendor
    assert document["total"] == 20
    assert document["imported"] == len(summary.thing_names)
    assert document["failed"] == len(summary.bad)
    problems = problems_by_locator(document)
    assert set(problems) == set(summary.bad)
    for locator, kind in summary.bad.items():
        assert REASON_WORDS[kind].lower() in problems[locator].lower(), (locator, kind, problems[locator])
    valid = document["imported_entries"]
    assert isinstance(valid, list)
    assert [entry["thing_name"] for entry in valid] == list(summary.thing_names)


def test_microchip_without_the_signer_fails_every_entry(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "m.json"
    generate("microchip", 5, manifest, signer=make_microchip_signer(), seed=1)
    code, document = run_check(capsys, str(manifest))
    assert code == 1
    assert document["imported"] == 0
    assert len(problems_by_locator(document)) == 5


def test_clean_manifest_exit_0_and_human_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "clean.csv"
    generate("espressif", 5, manifest, seed=2)
    assert cli.main(["check", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "Every entry can be imported." in out
    assert "espressif" in out


def test_human_output_lists_every_problem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "bad.txt"
    summary = generate("generated", 10, manifest, bad_fraction=0.3, seed=3)
    assert cli.main(["check", str(manifest)]) == 1
    out = capsys.readouterr().out
    for locator in summary.bad:
        assert locator in out


# --- hand-made broken manifests -------------------------------------------------------------------


def test_duplicate_certificate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    first, second = certfactory.make_device_cert("dev-1", CA), certfactory.make_device_cert("dev-2", CA)
    manifest = tmp_path / "dup.txt"
    manifest.write_bytes(b64_lines(first, second, first))
    code, document = run_check(capsys, str(manifest), "--vendor", "generated")
    assert code == 1
    assert document["duplicates"] == 1
    assert document["imported"] == 2
    problems = problems_by_locator(document)
    assert problems == {"line 3": "line 3: duplicate of line 1."}


def test_same_cn_for_two_certificates(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    one, other = certfactory.make_device_cert("twin-1", CA), certfactory.make_device_cert("twin-1", CA)
    manifest = tmp_path / "twins.txt"
    manifest.write_bytes(b64_lines(one, other))
    code, document = run_check(capsys, str(manifest))
    assert code == 0
    assert [(v["thing_name"], v["name_source"]) for v in document["imported_entries"]] == [
        (f"cert-{hashlib.sha256(one.der()).hexdigest()}", "fingerprint"),
        (f"cert-{hashlib.sha256(other.der()).hexdigest()}", "fingerprint"),
    ]
    code, document = run_check(capsys, str(manifest), "--thing-name-source", "cn")
    assert code == 1
    assert problems_by_locator(document) == {
        "line 1": "line 1: no thing name source (cn) gives a legal name of its own: the subject CN twin-1 is "
        "shared with line 2, so it names neither.",
        "line 2": "line 2: no thing name source (cn) gives a legal name of its own: the subject CN twin-1 is "
        "shared with line 1, so it names neither.",
    }


def test_invalid_thing_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "names.txt"
    issued = certfactory.make_device_cert("has space 1", CA)
    manifest.write_bytes(b64_lines(issued))
    code, document = run_check(capsys, str(manifest))
    assert code == 0
    assert document["imported_entries"][0]["thing_name"] == f"cert-{hashlib.sha256(issued.der()).hexdigest()}"
    code, document = run_check(capsys, str(manifest), "--thing-name-source", "vendor,cn")
    assert code == 1
    assert "'has space 1'" in problems_by_locator(document)["line 1"]


def test_expired_certificate_and_allow_expired(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    past = datetime.now(UTC) - timedelta(days=30)
    expired = certfactory.make_device_cert("old", CA, not_before=past - timedelta(days=365), not_after=past)
    manifest = tmp_path / "old.txt"
    manifest.write_bytes(b64_lines(expired, certfactory.make_device_cert("fresh", CA)))
    code, document = run_check(capsys, str(manifest))
    assert code == 1
    problems = problems_by_locator(document)
    assert list(problems) == ["line 1"]
    assert "expired" in problems["line 1"]

    code, document = run_check(capsys, str(manifest), "--allow-expired")
    assert code == 0
    assert document["imported"] == 2


def test_chain_checked_only_with_trusted_ca(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "chain.txt"
    manifest.write_bytes(b64_lines(certfactory.make_device_cert("chained", CA)))
    right = tmp_path / "right.pem"
    right.write_text(CA.pem())
    wrong = tmp_path / "wrong.pem"
    wrong.write_text(certfactory.make_ca("Another CA").pem())

    assert run_check(capsys, str(manifest))[0] == 0
    assert run_check(capsys, str(manifest), "--trusted-ca", str(right))[0] == 0
    code, document = run_check(capsys, str(manifest), "--trusted-ca", str(wrong))
    assert code == 1
    assert "line 1" in problems_by_locator(document)


def test_unrecognised_format_is_a_manifest_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "noise.bin"
    manifest.write_bytes(bytes(range(256)) * 4)
    code, document = run_check(capsys, str(manifest))
    assert code == 1
    assert document["vendor"] is None
    problems = problems_by_locator(document)
    assert list(problems) == ["manifest"]
    assert "noise.bin" in problems["manifest"]


def test_empty_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "empty.csv"
    manifest.write_bytes(b"")
    code, document = run_check(capsys, str(manifest))
    assert code == 1
    assert "empty" in problems_by_locator(document)["manifest"]


def test_vendor_option_overrides_sniffing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "devices.csv"
    generate("espressif", 3, manifest, seed=4)
    code, document = run_check(capsys, str(manifest), "--vendor", "generated")
    assert code == 1
    assert document["vendor"] == "generated"


def test_bad_trusted_ca_file_is_skipped_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tmp_path / "m.txt"
    manifest.write_bytes(b64_lines(certfactory.make_device_cert("x-1", CA)))
    not_a_cert = tmp_path / "ca.pem"
    not_a_cert.write_text("hello")
    code, document = run_check(capsys, str(manifest), "--trusted-ca", str(not_a_cert))
    assert code == 1
    (warning,) = document["warnings"]
    assert warning.startswith(f"{not_a_cert} was skipped: Invalid certificate format")
    assert "no trusted CA certificates are configured" in problems_by_locator(document)["line 1"]


def test_python_api_counts(tmp_path: Path) -> None:
    manifest = tmp_path / "api.txt"
    summary = generate("generated", 8, manifest, bad_fraction=0.25, seed=5)
    result = check_manifest(manifest)
    assert (result.total, len(result.imported), len(result.failures)) == (8, 6, 2)
    assert result.to_dict()["ok"] is False
    assert {failure.locator for failure in result.failures} == set(summary.bad)


# --- real vendor manifests --------------------------------------------------------------------------


def test_real_manifests(capsys: pytest.CaptureFixture[str], shared_manifests: Path) -> None:
    code, document = run_check(capsys, str(shared_manifests / "espressif" / "manifest-espressif.csv"))
    assert (code, document["vendor"], document["imported"]) == (0, "espressif", 7)

    code, document = run_check(capsys, str(shared_manifests / "infineon" / "manifest-infineon.7z"))
    assert (code, document["vendor"], document["imported"]) == (0, "infineon", 200)

    microchip = shared_manifests / "microchip"
    code, document = run_check(
        capsys, str(microchip / "ECC608-TMNGTLSS-B.json"), "--verifiers", str(microchip / "verifiers")
    )
    assert (code, document["total"], document["imported"]) == (1, 10, 0)
    assert all(
        "no certificate in manifest entry" in reason for reason in problems_by_locator(document).values()
    )

    generated = shared_manifests / "generated" / "certificates_test.txt"
    code, document = run_check(capsys, str(generated), "--allow-expired")
    assert (code, document["vendor"], document["imported"]) == (0, "generated", 100)


def test_thing_name_source_and_prefix_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "devices.txt"
    summary = generate("generated", 3, manifest, seed=3)

    code, document = run_check(
        capsys, str(manifest), "--thing-name-source", "fingerprint", "--thing-name-prefix", "line7-"
    )

    assert code == 0
    valid = document["imported_entries"]
    assert isinstance(valid, list)
    assert len(valid) == len(summary.thing_names)
    for entry in valid:
        assert entry["thing_name"] == f"line7-cert-{entry['certificate_id']}"
    code, document = run_check(capsys, str(manifest), "--thing-name-prefix", "bad prefix ")
    assert code == 1
    assert all("characters other than" in reason for reason in problems_by_locator(document).values())
