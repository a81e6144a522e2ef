"""EntryEvaluator: the one per-entry decision shared by the ManifestProvider and thingpress check."""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from layer_utils.cert_utils import ParsedCertificate, parse_name_sources
from manifest_provider import evaluate as evaluate_module
from manifest_provider.evaluate import Accepted, EntryEvaluator, Evaluation, Rejected
from manifest_provider.vendors import ManifestEntry
from thingpress import certfactory

NOW = datetime(2030, 6, 1, tzinfo=UTC)
ROOT = certfactory.make_ca(
    "Evaluate Root", not_before=NOW - timedelta(days=400), not_after=NOW + timedelta(days=4000)
)
INTERMEDIATE = certfactory.make_ca(
    "Evaluate Intermediate",
    issuer=ROOT,
    not_before=NOW - timedelta(days=300),
    not_after=NOW + timedelta(days=3000),
)


def device(
    cn: str | None, *, issuer: certfactory.Issued = ROOT, not_after: datetime | None = None
) -> certfactory.Issued:
    return certfactory.make_device_cert(
        cn,
        issuer,
        not_before=NOW - timedelta(days=10),
        not_after=not_after or NOW + timedelta(days=365),
    )


def entry(
    ordinal: int,
    issued: certfactory.Issued | None,
    vendor_name: str | None = None,
    *,
    intermediates: tuple[certfactory.Issued, ...] = (),
    error: str | None = None,
) -> ManifestEntry:
    return ManifestEntry(
        ordinal=ordinal,
        locator=f"line {ordinal + 1}",
        certificate=None if issued is None else parsed(issued),
        vendor_thing_name=vendor_name,
        error=error,
        intermediates=tuple(parsed(i) for i in intermediates),
    )


def parsed(issued: certfactory.Issued) -> ParsedCertificate:
    return ParsedCertificate.from_x509(issued.certificate)


def fingerprint(issued: certfactory.Issued) -> str:
    return hashlib.sha256(issued.der()).hexdigest()


evaluator = functools.partial(EntryEvaluator, at=NOW)


def run(judge: EntryEvaluator, entries: list[ManifestEntry]) -> list[Evaluation]:
    """Survey the whole manifest, then evaluate every entry, as the provider and check do."""
    judge.survey(entries)
    return [judge.evaluate(e) for e in entries]


def test_accepted_entry_carries_name_fingerprint_and_certificate() -> None:
    issued = device("Dev-1")
    (outcome,) = run(evaluator(), [entry(0, issued, "vendor-1")])
    assert outcome == Accepted("line 1", "vendor-1", fingerprint(issued), parsed(issued), "vendor")


def test_parser_error_and_missing_certificate_are_invalid_input() -> None:
    judge = evaluator()
    assert judge.evaluate(entry(0, None, error="line 1: the line is not base64.")) == Rejected(
        "line 1", None, "line 1: the line is not base64.", "invalid_input"
    )
    assert judge.evaluate(entry(1, None)) == Rejected(
        "line 2", None, "line 2: no certificate in manifest entry.", "invalid_input"
    )


def test_only_valid_entries_claim_certificates_for_duplicates() -> None:
    expired = device("Old-1", not_after=NOW - timedelta(days=1))
    fresh = device("Fresh-1")
    outcomes = run(evaluator(), [entry(i, c) for i, c in enumerate((expired, fresh, expired, fresh))])
    # An invalid certificate claims nothing: its copy is judged on its own and fails the same way.
    for index in (0, 2):
        rejected = outcomes[index]
        assert isinstance(rejected, Rejected)
        assert rejected.error_class == "invalid_input"
        assert "expired" in rejected.reason
    assert isinstance(outcomes[1], Accepted)
    assert outcomes[3] == Rejected("line 4", fingerprint(fresh), "line 4: duplicate of line 2.", "duplicate")


def test_a_vendor_identifier_two_certificates_claim_is_a_conflict_for_both() -> None:
    first, second, other = device("Twin-1"), device("Twin-2"), device("Other-1")
    outcomes = run(evaluator(), [entry(0, first, "MAC1"), entry(1, other, "MAC2"), entry(2, second, "MAC1")])
    assert outcomes[0] == Rejected(
        "line 1",
        fingerprint(first),
        "line 1: thing name MAC1 from the vendor's device identifier is also claimed by line 3 with a "
        "different certificate; neither is imported.",
        "conflict",
    )
    assert isinstance(outcomes[1], Accepted)
    assert outcomes[2] == Rejected(
        "line 3",
        fingerprint(second),
        "line 3: thing name MAC1 from the vendor's device identifier is also claimed by line 1 with a "
        "different certificate; neither is imported.",
        "conflict",
    )


def test_a_rejected_entry_never_blocks_a_name() -> None:
    expired = device("Shared-1", not_after=NOW - timedelta(days=1))
    good = device("Shared-1")
    outcomes = run(evaluator(), [entry(0, expired, "MAC1"), entry(1, good, "MAC1")])
    assert isinstance(outcomes[0], Rejected)
    assert outcomes[1] == Accepted("line 2", "MAC1", fingerprint(good), parsed(good), "vendor")


def test_a_shared_cn_names_none_of_its_certificates() -> None:
    # Chip families share one CN: the next source names each certificate.
    one, two, own = device("Family-7"), device("Family-7"), device("Own-8")
    outcomes = run(evaluator(), [entry(0, one), entry(1, two), entry(2, own)])
    assert [(o.thing_name, o.name_source) for o in outcomes if isinstance(o, Accepted)] == [
        (f"cert-{fingerprint(one)}", "fingerprint"),
        (f"cert-{fingerprint(two)}", "fingerprint"),
        ("Own-8", "cn"),
    ]
    (only_cn,) = run(evaluator(name_sources=("cn",)), [entry(0, one), entry(1, two)])[:1]
    assert isinstance(only_cn, Rejected)
    assert only_cn.error_class == "conflict"
    assert only_cn.reason == (
        "line 1: no thing name source (cn) gives a legal name of its own: the subject CN Family-7 is "
        "shared with line 2, so it names neither."
    )


def test_no_legal_name_lists_every_source() -> None:
    (outcome,) = run(evaluator(name_sources=("vendor", "cn")), [entry(0, device("has space 1"))])
    assert isinstance(outcome, Rejected)
    assert outcome.error_class == "invalid_input"
    assert outcome.reason == (
        "line 1: no thing name source (vendor,cn) gives a legal name of its own: the vendor gives no "
        "device identifier; thing name 'has space 1' from the certificate's subject CN contains "
        "characters other than letters, digits, ':', '_' and '-'."
    )


def test_expired_rejected_unless_allowed() -> None:
    expired = device("Old-1", not_after=NOW - timedelta(days=1))
    (outcome,) = run(evaluator(), [entry(0, expired)])
    assert isinstance(outcome, Rejected)
    assert outcome.error_class == "invalid_input"
    assert outcome.reason.startswith("line 1: Certificate expired on ")
    assert isinstance(run(evaluator(allow_expired=True), [entry(0, expired)])[0], Accepted)


def test_validation_time_is_the_injected_one() -> None:
    issued = device("Later-1")
    assert isinstance(run(EntryEvaluator(at=NOW), [entry(0, issued)])[0], Accepted)
    too_early = run(EntryEvaluator(at=NOW - timedelta(days=30)), [entry(0, issued)])[0]
    assert isinstance(too_early, Rejected)
    assert "not valid before" in too_early.reason
    assert EntryEvaluator().at.tzinfo is not None


def test_ca_certificate_is_rejected() -> None:
    (outcome,) = run(evaluator(), [entry(0, INTERMEDIATE, "ca-as-device")])
    assert isinstance(outcome, Rejected)
    assert "CA certificate" in outcome.reason


def test_chain_through_intermediates() -> None:
    leaf = device("Chained-1", issuer=INTERMEDIATE)
    root = [parsed(ROOT)]
    assert isinstance(run(evaluator(), [entry(0, leaf)])[0], Accepted), "no anchors: the chain is not checked"
    assert isinstance(
        run(evaluator(trusted_cas=root), [entry(0, leaf, intermediates=(INTERMEDIATE,))])[0], Accepted
    )
    missing = run(evaluator(trusted_cas=root), [entry(0, leaf)])[0]
    assert isinstance(missing, Rejected)
    assert missing.error_class == "invalid_input"
    assert missing.reason.startswith("line 1: ")
    assert "does not chain to a trusted CA" in missing.reason
    other_root = certfactory.make_ca("Unrelated Root", not_before=NOW - timedelta(days=1))
    wrong = run(evaluator(trusted_cas=[parsed(other_root)]), [entry(0, leaf, intermediates=(INTERMEDIATE,))])
    assert isinstance(wrong[0], Rejected)
    assert "does not chain to a trusted CA" in wrong[0].reason
    nothing_trusted = run(evaluator(trusted_cas=[]), [entry(0, leaf, intermediates=(INTERMEDIATE,))])
    assert isinstance(nothing_trusted[0], Rejected)
    assert "does not chain to a trusted CA" in nothing_trusted[0].reason


@pytest.mark.parametrize(
    ("sources", "prefix", "expected", "source"),
    [
        ("vendor", "", "vendor-7", "vendor"),
        ("vendor", "acme-", "acme-vendor-7", "vendor"),
        ("cn", "", "CN-7", "cn"),
        ("cn,vendor", "acme-", "acme-CN-7", "cn"),
        ("fingerprint", "", "cert-{fp}", "fingerprint"),
        ("fingerprint,vendor", "acme-", "acme-cert-{fp}", "fingerprint"),
    ],
)
def test_thing_name_sources_and_prefix(sources: str, prefix: str, expected: str, source: str) -> None:
    issued = device("CN-7")
    judge = evaluator(name_sources=parse_name_sources(sources), thing_name_prefix=prefix)
    (outcome,) = run(judge, [entry(0, issued, "vendor-7")])
    assert isinstance(outcome, Accepted)
    assert outcome.thing_name == expected.format(fp=fingerprint(issued))
    assert outcome.name_source == source


def test_default_sources_fall_back_to_cn_then_fingerprint() -> None:
    with_cn, without_cn, illegal_vendor = device("Only-CN-1"), device(None), device("Named-2")
    first, second, third = run(
        evaluator(), [entry(0, with_cn), entry(1, without_cn), entry(2, illegal_vendor, "bad vendor id")]
    )
    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert isinstance(third, Accepted)
    assert (first.thing_name, first.name_source) == ("Only-CN-1", "cn")
    assert (second.thing_name, second.name_source) == (f"cert-{fingerprint(without_cn)}", "fingerprint")
    assert (third.thing_name, third.name_source) == ("Named-2", "cn")


def test_an_unexpected_error_stays_with_its_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    poison, good = device("Poison-1"), device("Good-1")
    real = evaluate_module.validate_certificate

    def exploding(cert: ParsedCertificate, *args: object, **kwargs: object) -> object:
        if cert.fingerprint == fingerprint(poison):
            raise RuntimeError("boom")
        return real(cert, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluate_module, "validate_certificate", exploding)
    outcomes = run(evaluator(), [entry(0, poison), entry(1, good)])
    assert outcomes[0] == Rejected(
        "line 1",
        fingerprint(poison),
        "line 1: the entry could not be evaluated (RuntimeError).",
        "invalid_input",
    )
    assert isinstance(outcomes[1], Accepted)


def test_long_locators_are_bounded() -> None:
    long = ManifestEntry(0, "file " + "x" * 5000, None, None, error="file x: unreadable.")
    (outcome,) = run(evaluator(), [long])
    assert isinstance(outcome, Rejected)
    assert len(outcome.locator) <= 200


def mixed_entries() -> list[ManifestEntry]:
    one, two, three = device("A-1"), device("B-1"), device("C-1", not_after=NOW - timedelta(days=1))
    clash = device("A-1")
    return [
        entry(0, one),
        entry(1, None, error="line 2: unreadable."),
        entry(2, three),
        entry(3, two, "MAC-2"),
        entry(4, one),
        entry(5, clash),
        entry(6, three),
        entry(7, device("bad name")),
        entry(8, device("D-1"), "MAC-2"),
    ]


@pytest.mark.parametrize("start", range(10))
def test_resuming_part_way_gives_the_same_outcomes(start: int) -> None:
    entries = mixed_entries()
    expected = run(evaluator(), entries)
    resumed = evaluator()
    resumed.survey(entries)
    assert [resumed.evaluate(e) for e in entries[start:]] == expected[start:]
