"""Every real-world certificate quirk of ``testing.quirks``, through ``thingpress check`` and the pipeline.

Each quirk's expected outcome is checked twice, on the same manifest (one base64 line per quirk, as
uploaders ship generated certificates): offline with ``thingpress check``, and through the whole local
pipeline, with assertions on the IoT registry (thing name and attached certificate id), the report's
reasons and both dead-letter queues.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from layer_utils.cert_utils import load_certificate, validate_certificate
from testing.pipeline import pipeline
from testing.quirks import (
    Quirk,
    build_corpus,
    explicit,
    generalized_time,
    integer,
    make_issuer,
    seq,
    utc_time,
)
from thingpress import cli
from thingpress.check import CheckResult, check_manifest

NOW = datetime.now(UTC).replace(microsecond=0)
CORPUS = build_corpus(NOW)
# The empty quirk cannot be a line of its own (a blank line is skipped): it is checked on its own.
IN_MANIFEST = tuple(q for q in CORPUS.quirks if q.data)
LEGAL = re.compile(r"[A-Za-z0-9:_-]{1,128}")
PARSER_DUMPS = ("ParseError", "InvalidValue", "Traceback", "asn1 encoding routines", "location:")


def expected_name(quirk: Quirk) -> str:
    """The CN when it is a legal name that identifies a device (it has a digit), else the fingerprint."""
    cn = quirk.cn
    if cn is not None and LEGAL.fullmatch(cn) and any(char.isdigit() for char in cn):
        return cn
    return f"cert-{hashlib.sha256(quirk.der).hexdigest()}"


def locator(index: int) -> str:
    return f"line {index + 1}"


def manifest_body() -> bytes:
    return b"".join(base64.b64encode(quirk.data) + b"\n" for quirk in IN_MANIFEST)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quirks") / "quirks.txt"
    path.write_bytes(manifest_body())
    return path


def assert_rejection(quirk: Quirk, reason: str, where: str) -> None:
    assert reason.startswith(f"{where}: "), reason
    assert reason.endswith("."), reason
    assert not any(dump in reason for dump in PARSER_DUMPS), reason
    if quirk.broken:
        assert "Invalid certificate format: " in reason, reason
    else:
        assert quirk.reason_hint is not None
        assert quirk.reason_hint in reason.lower(), (quirk.name, reason)


def test_every_quirk_through_check(manifest: Path) -> None:
    result: CheckResult = check_manifest(manifest, vendor="generated", now=NOW)
    valid = {record.locator: record for record in result.imported}
    problems = {problem.locator: problem.reason for problem in result.failures}
    assert result.total == len(IN_MANIFEST)
    for index, quirk in enumerate(IN_MANIFEST):
        where = locator(index)
        if quirk.expected == "accept":
            assert where in valid, (quirk.name, problems.get(where))
            assert valid[where].certificate_id == hashlib.sha256(quirk.der).hexdigest(), quirk.name
            assert valid[where].thing_name == expected_name(quirk), quirk.name
        else:
            assert where in problems, quirk.name
            assert_rejection(quirk, problems[where], where)


def test_chain_checks_on_the_tolerant_path(manifest: Path) -> None:
    ca = load_certificate(CORPUS.ca_der)
    result = check_manifest(manifest, vendor="generated", trusted_cas=[ca], now=NOW)
    valid = {record.locator for record in result.imported}
    problems = {problem.locator: problem.reason for problem in result.failures}
    for index, quirk in enumerate(IN_MANIFEST):
        where = locator(index)
        if quirk.expected == "accept" and quirk.openssl_chain_ok:
            assert where in valid, (quirk.name, problems.get(where))
        elif quirk.expected == "accept":
            assert where in problems, quirk.name
            reason = problems[where]
            assert "does not chain to a trusted CA" in reason or "chain could not be checked" in reason
            assert not any(dump in reason for dump in PARSER_DUMPS), reason
        else:
            assert where in problems, quirk.name
    utctime = IN_MANIFEST.index(CORPUS.get("utctime_without_seconds"))
    assert problems[locator(utctime)].endswith(
        "Certificate's chain could not be checked: neither the strict verifier nor OpenSSL can read the "
        "certificate (the strict DER parser refuses its structure; OpenSSL: utctime is too short)."
    )


def test_check_command_prints_no_traceback(manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = manifest.parent / "empty.der"
    empty.write_bytes(b"\x30\x00")
    for path in (manifest, empty):
        code = cli.main(["check", str(path), "--vendor", "generated"])
        captured = capsys.readouterr()
        assert code == 1
        assert "Traceback" not in captured.out + captured.err
    broken_only = manifest.parent / "broken.txt"
    broken_only.write_bytes(b"".join(base64.b64encode(q.data) + b"\n" for q in IN_MANIFEST if q.broken))
    assert cli.main(["check", str(broken_only), "--json"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_the_empty_quirk_is_an_unreadable_certificate() -> None:
    with pytest.raises(ValueError, match=r"^Invalid certificate format: the data is empty\.$"):
        load_certificate(CORPUS.get("empty_data").data)


@pytest.mark.slow
def test_every_quirk_through_the_pipeline() -> None:
    with pipeline() as run:
        result = run.run("generated/quirks.txt", manifest_body())
    assert result.job.status == "COMPLETED_WITH_ERRORS"
    accepted = [(index, q) for index, q in enumerate(IN_MANIFEST) if q.expected == "accept"]
    assert result.report["imported"] == len(accepted)
    assert result.report["failed"] == len(IN_MANIFEST) - len(accepted)
    for index, quirk in enumerate(IN_MANIFEST):
        where = locator(index)
        if quirk.expected == "accept":
            name = expected_name(quirk)
            assert result.imported.get(where) == name, (quirk.name, result.failures.get(where))
            assert result.things[name] == frozenset({hashlib.sha256(quirk.der).hexdigest()}), quirk.name
        else:
            assert_rejection(quirk, result.failures[where], where)
    assert len(result.things) == len(accepted)


def test_odd_certificates_are_read_or_refused_but_never_raise_anything_else() -> None:
    issuer = make_issuer(NOW)
    version_4 = issuer.certificate("version-4", version=explicit(0, integer(3)))
    year_zero = issuer.certificate(
        "year-0", validity=seq(generalized_time("00000101000000Z"), generalized_time("99991231235959Z"))
    )
    assert load_certificate(version_4).subject_cn == "quirk-version-4"  # OpenSSL reads it
    with pytest.raises(ValueError, match=r"^Invalid certificate format: its validity dates are out of range"):
        load_certificate(year_zero)
    # A readable certificate followed by an unreadable PEM block: the first one is the certificate.
    good = CORPUS.get("baseline")
    bundle = pem_block(good.der) + pem_block(b"\x30\x03\x02\x01\x00")
    assert load_certificate(bundle).der == good.der
    # The reason of unreadable DER is the DER reader's, not a generic one.
    with pytest.raises(ValueError, match="OpenSSL cannot read it either"):
        load_certificate(CORPUS.get("serial_non_minimal").der)


def test_an_anchor_openssl_cannot_read_does_not_break_other_chains() -> None:
    issuer = make_issuer(NOW)
    unreadable_anchor = load_certificate(
        issuer.certificate(
            "anchor-no-seconds", validity=seq(utc_time("2001010000Z"), utc_time("4001010000Z"))
        )
    )
    assert unreadable_anchor.openssl_problem is not None
    ca = load_certificate(CORPUS.ca_der)
    tolerant = load_certificate(CORPUS.get("printable_underscore_san_dirname").der)
    assert tolerant.strict is None
    assert validate_certificate(tolerant, [unreadable_anchor, ca], at=NOW).ok
    result = validate_certificate(tolerant, [unreadable_anchor], at=NOW)
    assert result.codes == ("untrusted_chain",)


def pem_block(der: bytes) -> bytes:
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
