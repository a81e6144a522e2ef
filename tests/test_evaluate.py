"""EntryEvaluator: the one per-entry decision shared by the ManifestProvider and thingpress check."""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

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
        certificate=None if issued is None else issued.certificate,
        vendor_thing_name=vendor_name,
        error=error,
        intermediates=tuple(i.certificate for i in intermediates),
    )


def fingerprint(issued: certfactory.Issued) -> str:
    return hashlib.sha256(issued.der()).hexdigest()


evaluator = functools.partial(EntryEvaluator, at=NOW)


def test_accepted_entry_carries_name_fingerprint_and_certificate() -> None:
    issued = device("Dev-1")
    outcome = evaluator().evaluate(entry(0, issued, "vendor-1"))
    assert outcome == Accepted("line 1", "vendor-1", fingerprint(issued), issued.certificate)


def test_parser_error_and_missing_certificate_are_invalid_input() -> None:
    judge = evaluator()
    assert judge.evaluate(entry(0, None, error="line 1: the line is not base64.")) == Rejected(
        "line 1", None, "line 1: the line is not base64.", "invalid_input"
    )
    assert judge.evaluate(entry(1, None)) == Rejected(
        "line 2", None, "line 2: no certificate in manifest entry.", "invalid_input"
    )


def test_duplicate_names_the_first_locator_even_when_the_first_was_invalid() -> None:
    expired = device("Old", not_after=NOW - timedelta(days=1))
    fresh = device("Fresh")
    judge = evaluator()
    outcomes = [judge.evaluate(entry(i, c)) for i, c in enumerate((expired, fresh, expired, fresh))]
    assert isinstance(outcomes[0], Rejected)
    assert outcomes[0].error_class == "invalid_input"
    assert not outcomes[0].duplicate
    assert isinstance(outcomes[1], Accepted)
    assert outcomes[2] == Rejected(
        "line 3", fingerprint(expired), "line 3: duplicate of line 1.", "duplicate"
    )
    assert outcomes[3] == Rejected("line 4", fingerprint(fresh), "line 4: duplicate of line 2.", "duplicate")
    assert all(isinstance(o, Rejected) and o.duplicate for o in outcomes[2:])


def test_thing_name_clash_is_a_conflict_with_one_reason() -> None:
    first, second = device("Twin"), device("Twin", not_after=NOW - timedelta(days=1))
    judge = evaluator()
    assert isinstance(judge.evaluate(entry(0, first)), Accepted)
    # The clash is reported alone, although the second certificate is also expired.
    assert judge.evaluate(entry(1, second)) == Rejected(
        "line 2",
        fingerprint(second),
        "line 2: thing name Twin is already used by line 1 in this manifest.",
        "conflict",
    )


def test_invalid_thing_name_claims_nothing() -> None:
    bad, good = device("has space"), device("Other")
    judge = evaluator()
    outcome = judge.evaluate(entry(0, bad))
    assert isinstance(outcome, Rejected)
    assert outcome.error_class == "invalid_input"
    assert outcome.fingerprint == fingerprint(bad)
    assert outcome.reason.startswith("line 1: Thing name 'has space' (from the certificate's subject CN)")
    assert judge.seen_names == {}
    assert isinstance(judge.evaluate(entry(1, good, "has-space")), Accepted)


def test_expired_rejected_unless_allowed() -> None:
    expired = device("Old", not_after=NOW - timedelta(days=1))
    outcome = evaluator().evaluate(entry(0, expired))
    assert isinstance(outcome, Rejected)
    assert outcome.error_class == "invalid_input"
    assert outcome.reason.startswith("line 1: Certificate expired on ")
    assert isinstance(evaluator(allow_expired=True).evaluate(entry(0, expired)), Accepted)


def test_validation_time_is_the_injected_one() -> None:
    issued = device("Later")
    assert isinstance(EntryEvaluator(at=NOW).evaluate(entry(0, issued)), Accepted)
    too_early = EntryEvaluator(at=NOW - timedelta(days=30)).evaluate(entry(0, issued))
    assert isinstance(too_early, Rejected)
    assert "not valid before" in too_early.reason
    assert EntryEvaluator().at.tzinfo is not None


def test_ca_certificate_is_rejected() -> None:
    outcome = evaluator().evaluate(entry(0, INTERMEDIATE, "ca-as-device"))
    assert isinstance(outcome, Rejected)
    assert "CA certificate" in outcome.reason


def test_chain_through_intermediates() -> None:
    leaf = device("Chained", issuer=INTERMEDIATE)
    assert isinstance(evaluator().evaluate(entry(0, leaf)), Accepted), "no anchors: the chain is not checked"
    anchored = evaluator(trusted_cas=[ROOT.certificate])
    assert isinstance(anchored.evaluate(entry(0, leaf, intermediates=(INTERMEDIATE,))), Accepted)
    missing = evaluator(trusted_cas=[ROOT.certificate]).evaluate(entry(0, leaf))
    assert isinstance(missing, Rejected)
    assert missing.error_class == "invalid_input"
    assert missing.reason.startswith("line 1: ")
    assert "does not chain to a trusted CA" in missing.reason
    other_root = certfactory.make_ca("Unrelated Root", not_before=NOW - timedelta(days=1))
    wrong = evaluator(trusted_cas=[other_root.certificate]).evaluate(
        entry(0, leaf, intermediates=(INTERMEDIATE,))
    )
    assert isinstance(wrong, Rejected)
    assert "does not chain to a trusted CA" in wrong.reason
    nothing_trusted = evaluator(trusted_cas=[]).evaluate(entry(0, leaf, intermediates=(INTERMEDIATE,)))
    assert isinstance(nothing_trusted, Rejected)
    assert "does not chain to a trusted CA" in nothing_trusted.reason


@pytest.mark.parametrize(
    ("source", "prefix", "expected"),
    [
        ("vendor", "", "vendor-7"),
        ("vendor", "acme-", "acme-vendor-7"),
        ("cn", "", "CN-7"),
        ("cn", "acme-", "acme-CN-7"),
        ("fingerprint", "", "cert-{fp}"),
        ("fingerprint", "acme-", "acme-cert-{fp}"),
    ],
)
def test_thing_name_source_and_prefix(source: str, prefix: str, expected: str) -> None:
    issued = device("CN-7")
    outcome = evaluator(thing_name_source=source, thing_name_prefix=prefix).evaluate(
        entry(0, issued, "vendor-7")
    )
    assert isinstance(outcome, Accepted)
    assert outcome.thing_name == expected.format(fp=fingerprint(issued))


def test_vendor_source_falls_back_to_cn_then_fingerprint() -> None:
    judge = evaluator()
    with_cn, without_cn = device("Only-CN"), device(None)
    first, second = judge.evaluate(entry(0, with_cn)), judge.evaluate(entry(1, without_cn))
    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert (first.thing_name, second.thing_name) == ("Only-CN", f"cert-{fingerprint(without_cn)}")


def test_unknown_name_source_rejects_each_entry() -> None:
    outcome = evaluator(thing_name_source="serial").evaluate(entry(0, device("X")))
    assert isinstance(outcome, Rejected)
    assert outcome.reason.startswith("line 1: Unknown thing name source 'serial'")


def mixed_entries() -> list[ManifestEntry]:
    one, two, three = device("A"), device("B"), device("C", not_after=NOW - timedelta(days=1))
    clash = device("A")
    return [
        entry(0, one),
        entry(1, None, error="line 2: unreadable."),
        entry(2, three),
        entry(3, two),
        entry(4, one),
        entry(5, clash),
        entry(6, three),
        entry(7, device("bad name")),
        entry(8, device("D")),
    ]


@pytest.mark.parametrize("start", range(10))
def test_replay_then_evaluate_matches_one_pass(start: int) -> None:
    entries = mixed_entries()
    one_pass = evaluator()
    expected: list[Evaluation] = [one_pass.evaluate(e) for e in entries]
    resumed = evaluator()
    for e in entries[:start]:
        resumed.replay(e)
    assert [resumed.evaluate(e) for e in entries[start:]] == expected[start:]
    assert (resumed.seen_certificates, resumed.seen_names) == (
        one_pass.seen_certificates,
        one_pass.seen_names,
    )


def test_replay_claims_certificate_and_name() -> None:
    first, clash = device("Replayed"), device("Replayed")
    judge = evaluator()
    judge.replay(entry(0, first))
    assert judge.evaluate(entry(1, first)) == Rejected(
        "line 2", fingerprint(first), "line 2: duplicate of line 1.", "duplicate"
    )
    assert judge.evaluate(entry(2, clash)) == Rejected(
        "line 3",
        fingerprint(clash),
        "line 3: thing name Replayed is already used by line 1 in this manifest.",
        "conflict",
    )
