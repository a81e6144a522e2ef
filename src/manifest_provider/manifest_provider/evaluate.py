"""The fate of each manifest entry: accepted for import with its thing name, or rejected with a reason.

This is the one place that decides, per entry, what the ManifestProvider queues and what
``thingpress check`` reports; it is pure and offline (no AWS, no clock of its own beyond the
validation time it is given). An ``EntryEvaluator`` sees the entries of one manifest in order:

Before the first entry is evaluated, ``survey`` reads the whole manifest once, so that names are
decided with every entry in view:

1. An entry the parser could not read (``error``, or no certificate) is rejected as ``invalid_input``.
2. The certificate is validated (expiry unless ``allow_expired``, key, CA flag and, when trust anchors
   are given, the chain through the entry's intermediates); any problem is ``invalid_input``.
3. A certificate that an earlier valid entry carries is rejected as ``duplicate`` of that locator.
4. The thing name comes from the first of the ordered ``name_sources`` (``vendor``, ``cn``,
   ``fingerprint``) that gives a legal name of this certificate alone. A vendor identifier that two
   different certificates claim is a ``conflict`` reported for both (each reason names the other);
   a CN that several certificates share (chip families do) names none of them, and the next source
   is tried; fingerprint names are unique. When no source gives a legal name the entry is rejected
   with each source's reason: ``conflict`` when a shared CN was among them, else ``invalid_input``.

Only valid entries claim certificates and names, so a rejected entry never blocks another. Every
reason is one English sentence that starts with the entry's locator. Nothing an entry raises escapes
``survey`` or ``evaluate``: an unexpected error becomes that entry's rejection. Only the first valid
copy of a certificate claims names; a later copy is a duplicate of it.

``findings`` keeps of a survey only what can change an entry's fate: the certificates that more than
one entry carries (with their first valid copy) and the names that two certificates claim. A
continuation ``restore``s them instead of surveying again and evaluates every entry exactly as after
a survey: an entry whose certificate no other entry carries is validated again (the same result as
the survey's, at the same time), and a name no other certificate claims is free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from layer_utils.aws_utils import ErrorClass
from layer_utils.cert_utils import (
    DEFAULT_NAME_SOURCES,
    NameCandidate,
    ParsedCertificate,
    ValidationResult,
    name_candidates,
    validate_certificate,
)
from layer_utils.jobs import DUPLICATE_ERROR_CLASS, MAX_LOCATOR_BYTES, MAX_REASON_BYTES, shorten
from layer_utils.telemetry import logger
from manifest_provider.vendors import ManifestEntry, ManifestFormatError

_INVALID_INPUT = ErrorClass.INVALID_INPUT.value
_CONFLICT = ErrorClass.CONFLICT.value


@dataclass(frozen=True)
class Accepted:
    """An entry to import: its locator, thing name, fingerprint, certificate and name source.

    ``name_source`` is the source that named the thing: ``vendor``, ``cn`` or ``fingerprint``.
    """

    locator: str
    thing_name: str
    fingerprint: str
    certificate: ParsedCertificate
    name_source: str


@dataclass(frozen=True)
class Rejected:
    """An entry not to import: its locator, fingerprint (None without a certificate), reason and class.

    ``error_class`` is ``invalid_input``, ``conflict`` or ``duplicate``.
    """

    locator: str
    fingerprint: str | None
    reason: str
    error_class: str

    @property
    def duplicate(self) -> bool:
        """Whether the entry repeats an earlier certificate of the manifest."""
        return self.error_class == DUPLICATE_ERROR_CLASS


Evaluation = Accepted | Rejected
"""The outcome of evaluating one entry."""


_Claimers = list[tuple[bytes, str]]
"""Up to two certificates (digest, locator) claiming one name: two are enough to know it is shared."""


def _add_claim(claims: dict[str, _Claimers], name: str, digest: bytes, locator: str) -> None:
    claimers = claims.setdefault(name, [])
    if len(claimers) < 2 and all(other != digest for other, _ in claimers):
        claimers.append((digest, locator))


def _shared(claims: dict[str, _Claimers]) -> dict[str, list[list[str]]]:
    return {
        name: [[digest.hex().upper(), locator] for digest, locator in claimers]
        for name, claimers in sorted(claims.items())
        if len(claimers) > 1
    }


def _claims(data: Mapping[str, Any]) -> dict[str, _Claimers]:
    return {
        str(name): [(bytes.fromhex(digest), str(locator)) for digest, locator in claimers]
        for name, claimers in data.items()
    }


def _other_claimer(claims: dict[str, _Claimers], name: str, digest: bytes) -> str | None:
    return next((locator for other, locator in claims.get(name, ()) if other != digest), None)


class EntryEvaluator:
    """Evaluates the entries of one manifest: ``survey`` them all once, then ``evaluate`` each."""

    def __init__(
        self,
        *,
        name_sources: Sequence[str] = DEFAULT_NAME_SOURCES,
        thing_name_prefix: str = "",
        trusted_cas: Sequence[ParsedCertificate] | None = None,
        allow_expired: bool = False,
        at: datetime | None = None,
    ) -> None:
        """Take the naming settings, the trust anchors and the validation time.

        Args:
            name_sources: The name sources, tried in order (see ``cert_utils.parse_name_sources``).
            thing_name_prefix: The prefix of every thing name.
            trusted_cas: The trust anchors; None means the chain is not checked, an empty sequence
                that no certificate is trusted.
            allow_expired: Whether expired certificates are accepted.
            at: The validation time (timezone-aware); the moment of construction by default, so every
                entry is validated at the same time.

        """
        self.name_sources = tuple(name_sources)
        self.thing_name_prefix = thing_name_prefix
        self.trusted_cas = None if trusted_cas is None else tuple(trusted_cas)
        self.allow_expired = allow_expired
        self.at = at if at is not None else datetime.now(UTC)
        # Keyed by the 32-byte digest, not its hex form: a manifest may hold hundreds of thousands.
        self.first_valid: dict[bytes, tuple[int, str]] = {}
        # Names claimed through a vendor identifier, and through any source but the fingerprint
        # (fingerprint names are unique by construction and are not stored).
        self.vendor_claims: dict[str, _Claimers] = {}
        self.any_claims: dict[str, _Claimers] = {}
        # Certificates that more than one entry carries: a later copy, or an invalid copy (which may
        # come before the first valid one).
        self.repeated: set[bytes] = set()
        self.invalid_copies: set[bytes] = set()

    def survey(self, entries: Iterable[ManifestEntry]) -> None:
        """Read every entry once: which certificates are valid, first where, and the names they claim.

        Stops where the manifest breaks off with a ``ManifestFormatError`` (the evaluation pass meets
        the same error and reports it); anything else is raised, since an incomplete survey would hide
        duplicates and conflicts.

        Args:
            entries: The manifest's entries, in order.

        """
        try:
            for entry in entries:
                self._survey_entry(entry)
        except ManifestFormatError:
            logger.info("Survey stopped where the manifest breaks off")

    def _survey_entry(self, entry: ManifestEntry) -> None:
        certificate = entry.certificate
        if entry.error is not None or certificate is None:
            return
        locator = shorten(entry.locator, MAX_LOCATOR_BYTES)
        digest = bytes.fromhex(certificate.fingerprint)
        if digest in self.first_valid:
            self.repeated.add(digest)
            return  # a later copy is a duplicate: it claims no name
        try:
            if not self._validate(entry, certificate).ok:
                self.invalid_copies.add(digest)
                return
            candidates, _problems = self._candidates(entry, certificate)
        except Exception:  # the evaluation pass turns it into this entry's rejection
            self.invalid_copies.add(digest)
            return
        self.first_valid[digest] = (entry.ordinal, locator)
        for candidate in candidates:
            if candidate.source == "fingerprint":
                continue
            if candidate.source == "vendor":
                _add_claim(self.vendor_claims, candidate.name, digest, locator)
            _add_claim(self.any_claims, candidate.name, digest, locator)

    def findings(self) -> dict[str, Any]:
        """Return what the survey found that can change an entry's fate, as JSON-ready data.

        Returns:
            ``firsts``: fingerprint -> [ordinal, locator] of the first valid copy, for certificates
            that other entries carry too; ``vendor`` and ``any``: name -> [[fingerprint, locator], …]
            for names that two certificates claim (through a vendor identifier; through any source).

        """
        copies = self.repeated | (self.invalid_copies & self.first_valid.keys())
        return {
            "firsts": {digest.hex().upper(): list(self.first_valid[digest]) for digest in sorted(copies)},
            "vendor": _shared(self.vendor_claims),
            "any": _shared(self.any_claims),
        }

    def restore(self, findings: Mapping[str, Any]) -> None:
        """Take the ``findings`` of a survey of the same manifest with the same settings, in its place.

        Raises:
            ValueError: ``findings`` is not what ``findings()`` returns.

        """
        try:
            self.first_valid = {
                bytes.fromhex(digest): (int(ordinal), str(locator))
                for digest, (ordinal, locator) in findings["firsts"].items()
            }
            self.vendor_claims = _claims(findings["vendor"])
            self.any_claims = _claims(findings["any"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"The survey findings are malformed ({type(error).__name__}).") from None

    def evaluate(self, entry: ManifestEntry) -> Evaluation:
        """Decide one entry's fate (after ``survey``); never raises for bad input.

        Returns:
            ``Accepted`` or ``Rejected``.

        """
        locator = shorten(entry.locator, MAX_LOCATOR_BYTES)
        try:
            return self._evaluate(entry, locator)
        except Exception as error:  # whatever one entry raises stays with that entry
            logger.warning(
                "Unexpected error evaluating a manifest entry",
                extra={"locator": locator, "error_type": type(error).__name__},
            )
            fingerprint = entry.certificate.fingerprint if entry.certificate is not None else None
            return Rejected(
                locator,
                fingerprint,
                f"{locator}: the entry could not be evaluated ({type(error).__name__}).",
                _INVALID_INPUT,
            )

    def _validate(self, entry: ManifestEntry, certificate: ParsedCertificate) -> ValidationResult:
        return validate_certificate(
            certificate,
            self.trusted_cas,
            intermediates=entry.intermediates,
            at=self.at,
            allow_expired=self.allow_expired,
        )

    def _candidates(
        self, entry: ManifestEntry, certificate: ParsedCertificate
    ) -> tuple[list[NameCandidate], list[str]]:
        return name_candidates(
            self.name_sources,
            vendor_name=entry.vendor_thing_name,
            cert=certificate,
            prefix=self.thing_name_prefix,
        )

    def _evaluate(self, entry: ManifestEntry, locator: str) -> Evaluation:
        certificate = entry.certificate
        if entry.error is not None or certificate is None:
            reason = entry.error or f"{locator}: no certificate in manifest entry."
            return Rejected(locator, None, shorten(reason, MAX_REASON_BYTES), _INVALID_INPUT)
        fingerprint = certificate.fingerprint
        digest = bytes.fromhex(fingerprint)
        first = self.first_valid.get(digest)
        if first is not None and first[0] != entry.ordinal:
            return Rejected(
                locator, fingerprint, f"{locator}: duplicate of {first[1]}.", DUPLICATE_ERROR_CLASS
            )
        if first is None:  # else the survey found this very entry valid already
            result = self._validate(entry, certificate)
            if not result.ok:
                reasons = " ".join(result.reasons)
                return Rejected(locator, fingerprint, f"{locator}: {reasons}", _INVALID_INPUT)
        candidates, problems = self._candidates(entry, certificate)
        shared = False
        for candidate in candidates:
            if candidate.source == "vendor":
                other = _other_claimer(self.vendor_claims, candidate.name, digest)
                if other is not None:
                    return Rejected(
                        locator,
                        fingerprint,
                        f"{locator}: thing name {candidate.name} from the vendor's device identifier is "
                        f"also claimed by {other} with a different certificate; neither is imported.",
                        _CONFLICT,
                    )
            elif candidate.source == "cn":
                other = _other_claimer(self.any_claims, candidate.name, digest)
                if other is not None:
                    problems.append(
                        f"the subject CN {candidate.name} is shared with {other}, so it names neither"
                    )
                    shared = True
                    continue
            return Accepted(locator, candidate.name, fingerprint, certificate, candidate.source)
        sources = ",".join(self.name_sources)
        return Rejected(
            locator,
            fingerprint,
            f"{locator}: no thing name source ({sources}) gives a legal name of its own: "
            f"{'; '.join(problems)}.",
            # A legal name that another certificate also claims is a conflict, not bad input.
            _CONFLICT if shared else _INVALID_INPUT,
        )
