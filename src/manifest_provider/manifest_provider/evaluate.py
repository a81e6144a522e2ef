"""The fate of each manifest entry: accepted for import with its thing name, or rejected with a reason.

This is the one place that decides, per entry, what the ManifestProvider queues and what
``thingpress check`` reports; it is pure and offline (no AWS, no clock of its own beyond the
validation time it is given). An ``EntryEvaluator`` sees the entries of one manifest in order:

1. An entry the parser could not read (``error``, or no certificate) is rejected as ``invalid_input``.
2. A certificate already met earlier in the manifest is rejected as ``duplicate`` of the first locator.
3. The thing name is derived (``thing_name_source``, ``thing_name_prefix``); an invalid one is
   ``invalid_input``, one already used by an earlier entry is a ``conflict``.
4. The certificate is validated (expiry unless ``allow_expired``, key, CA flag and, when trust anchors
   are given, the chain through the entry's intermediates); any problem is ``invalid_input``.

The first entry carrying a certificate claims its fingerprint, and the first with a valid name claims
that name, whatever the entry's own validation outcome. ``replay`` claims them without validating, so
a run resuming part-way through a manifest rebuilds exactly the same state from the entries before
its start. Every reason is one English sentence that starts with the entry's locator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509

from layer_utils.aws_utils import ErrorClass
from layer_utils.cert_utils import derive_thing_name, get_certificate_fingerprint, validate_certificate
from layer_utils.jobs import DUPLICATE_ERROR_CLASS
from manifest_provider.vendors import ManifestEntry

_INVALID_INPUT = ErrorClass.INVALID_INPUT.value
_CONFLICT = ErrorClass.CONFLICT.value


@dataclass(frozen=True)
class Accepted:
    """An entry to import: its locator, thing name, fingerprint (certificate id) and certificate."""

    locator: str
    thing_name: str
    fingerprint: str
    certificate: x509.Certificate


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
        """Return whether the entry repeats an earlier certificate of the manifest."""
        return self.error_class == DUPLICATE_ERROR_CLASS


Evaluation = Accepted | Rejected
"""The outcome of evaluating one entry."""


class EntryEvaluator:
    """Evaluates the entries of one manifest, in manifest order, remembering what they claimed."""

    def __init__(
        self,
        *,
        thing_name_source: str = "vendor",
        thing_name_prefix: str = "",
        trusted_cas: Sequence[x509.Certificate] | None = None,
        allow_expired: bool = False,
        at: datetime | None = None,
    ) -> None:
        """Take the naming settings, the trust anchors and the validation time.

        ``thing_name_source`` is ``vendor``, ``cn`` or ``fingerprint`` (an unknown source rejects
        every entry with the reason); ``trusted_cas`` None means the chain is not checked, an empty
        sequence that no certificate is trusted; ``at`` (timezone-aware) defaults to the moment of
        construction, so every entry is validated at the same time.
        """
        self.thing_name_source = thing_name_source
        self.thing_name_prefix = thing_name_prefix
        self.trusted_cas = None if trusted_cas is None else tuple(trusted_cas)
        self.allow_expired = allow_expired
        self.at = at if at is not None else datetime.now(UTC)
        # Keyed by the 32-byte digest, not its hex form: a manifest may hold hundreds of thousands.
        self.seen_certificates: dict[bytes, str] = {}
        self.seen_names: dict[str, str] = {}

    def evaluate(self, entry: ManifestEntry) -> Evaluation:
        """Decide one entry's fate and claim its certificate and thing name for later entries.

        Returns ``Accepted`` or ``Rejected`` (never raises for bad input).
        """
        claimed = self._claim(entry)
        if isinstance(claimed, Rejected):
            return claimed
        certificate, fingerprint, name = claimed
        result = validate_certificate(
            certificate,
            self.trusted_cas,
            intermediates=entry.intermediates,
            at=self.at,
            allow_expired=self.allow_expired,
        )
        if not result.ok:
            return Rejected(
                entry.locator, fingerprint, f"{entry.locator}: {' '.join(result.reasons)}", _INVALID_INPUT
            )
        return Accepted(entry.locator, name, fingerprint, certificate)

    def replay(self, entry: ManifestEntry) -> None:
        """Claim an already-processed entry's certificate and thing name without validating it."""
        self._claim(entry)

    def _claim(self, entry: ManifestEntry) -> Rejected | tuple[x509.Certificate, str, str]:
        """Return the certificate, fingerprint and claimed thing name, or why the entry is rejected."""
        locator = entry.locator
        certificate = entry.certificate
        if entry.error is not None or certificate is None:
            reason = entry.error or f"{locator}: no certificate in manifest entry."
            return Rejected(locator, None, reason, _INVALID_INPUT)
        fingerprint = get_certificate_fingerprint(certificate)
        digest = bytes.fromhex(fingerprint)
        first = self.seen_certificates.get(digest)
        if first is not None:
            return Rejected(locator, fingerprint, f"{locator}: duplicate of {first}.", DUPLICATE_ERROR_CLASS)
        self.seen_certificates[digest] = locator
        try:
            name = derive_thing_name(
                source=self.thing_name_source,
                vendor_name=entry.vendor_thing_name,
                cert=certificate,
                prefix=self.thing_name_prefix,
            )
        except ValueError as error:
            return Rejected(locator, fingerprint, f"{locator}: {error}", _INVALID_INPUT)
        other = self.seen_names.get(name)
        if other is not None:
            return Rejected(
                locator,
                fingerprint,
                f"{locator}: thing name {name} is already used by {other} in this manifest.",
                _CONFLICT,
            )
        self.seen_names[name] = locator
        return certificate, fingerprint, name
