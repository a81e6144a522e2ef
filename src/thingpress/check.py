"""``thingpress check``: validate a manifest offline, with no emulator and no AWS.

It runs what the ManifestProvider runs before anything is queued: format detection, the vendor
parser (signatures, archive and CSV structure) and the provider's own per-entry evaluation
(``manifest_provider.evaluate``: duplicates, thing naming, certificate validation with expiry, key,
CA flag and, when trust anchors are given, the chain), so every reason is the one the import report
would give, in the report's words (``layer_utils.schema``). It prints the counts, then the entries
that cannot be imported grouped by reason; the exit code is 1 when there is any.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from layer_utils.cert_utils import DEFAULT_NAME_SOURCES, ParsedCertificate, load_certificates
from layer_utils.jobs import FailureRecord, ImportedRecord
from layer_utils.schema import DUPLICATE_ENTRIES, FAILURES, IMPORTED_ENTRIES, SCHEMA, counts, entry
from manifest_provider.evaluate import EntryEvaluator, Rejected
from manifest_provider.vendors import (
    ManifestFormatError,
    ParseOptions,
    detect,
    get_parser,
    guarded_entries,
)
from thingpress.console import counts_text, failures_table, lit, out_console, print_failure_groups, print_json
from thingpress.progress import JobProgress, Tick

_HEAD_BYTES = 8192
_CERT_SUFFIXES = (".crt", ".pem", ".cer", ".der")


@dataclass
class CheckResult:
    """The outcome of checking one manifest, in the words of the import report (``layer_utils.schema``).

    ``total`` counts the manifest's entries; ``imported`` lists the entries an import would import
    (as the report's imported entries), ``failures`` the entries it would fail and
    ``duplicate_entries`` those that repeat an earlier certificate, each in manifest order;
    ``reason`` is the problem of the manifest itself (as a FAILED job's reason), ``warnings`` the
    skipped verifier or CA files.
    """

    manifest: str
    vendor: str | None = None
    total: int = 0
    imported: list[ImportedRecord] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    duplicate_entries: list[FailureRecord] = field(default_factory=list)
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every entry can be imported and the manifest itself has no problem."""
        return not self.failures and not self.duplicate_entries and self.reason is None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document printed by ``thingpress check --json``."""
        return {
            "schema": SCHEMA,
            "manifest": self.manifest,
            "vendor": self.vendor,
            "ok": self.ok,
            "reason": self.reason,
            **counts(self.total, len(self.imported), len(self.failures), len(self.duplicate_entries)),
            "warnings": list(self.warnings),
            IMPORTED_ENTRIES: [entry(record.to_dict()) for record in self.imported],
            FAILURES: [entry(record.to_dict()) for record in self.failures],
            DUPLICATE_ENTRIES: [entry(record.to_dict()) for record in self.duplicate_entries],
        }


def load_certificate_files(paths: Iterable[Path]) -> tuple[tuple[ParsedCertificate, ...], list[str]]:
    """Load every certificate in ``paths`` (PEM, DER or base64; a file may hold several).

    Args:
        paths: The certificate files.

    Returns:
        The certificates, and one warning per file skipped because it holds no readable certificate
        (as the provider skips such a trust file and warns in the report).

    """
    certificates: list[ParsedCertificate] = []
    warnings: list[str] = []
    for path in paths:
        try:
            certificates.extend(load_certificates(path.read_bytes()))
        except ValueError as error:
            warnings.append(f"{path} was skipped: {str(error).rstrip('.')}.")
    return tuple(certificates), warnings


def certificate_files(directory: Path) -> list[Path]:
    """Return the certificate files (``.crt``, ``.pem``, ``.cer``, ``.der``) in ``directory``, sorted."""
    return sorted(
        path for path in directory.iterdir() if path.is_file() and path.suffix.lower() in _CERT_SUFFIXES
    )


def check_manifest(
    path: Path,
    *,
    vendor: str | None = None,
    verifiers: Sequence[ParsedCertificate] = (),
    trusted_cas: Sequence[ParsedCertificate] | None = None,
    bundle_type: str = "E0E0",
    allow_expired: bool = False,
    name_sources: Sequence[str] = DEFAULT_NAME_SOURCES,
    thing_name_prefix: str = "",
    now: datetime | None = None,
    progress: Tick | None = None,
) -> CheckResult:
    """Check one manifest file as the ManifestProvider would, without importing anything.

    An unreadable file raises ``OSError``. The file is read twice, as the provider reads it: a survey
    (duplicates, names claimed) and the evaluation of every entry; ``progress`` sees both passes,
    the second with the total the first one counted.

    Args:
        path: The manifest.
        vendor: The vendor; None to detect it from the content.
        verifiers: The Microchip signer certificates.
        trusted_cas: The trust anchors; None: the chain is not checked.
        bundle_type: The Infineon bundle type.
        allow_expired: Whether expired certificates are accepted.
        name_sources: The ordered thing-name sources (as ``THINGPRESS_THING_NAME_SOURCE``).
        thing_name_prefix: The thing-name prefix (as ``THINGPRESS_THING_NAME_PREFIX``).
        now: The validation time (default now).
        progress: Told the entries done per pass (status ``pass 1 of 2``, ``pass 2 of 2``).

    Returns:
        The result: every entry's fate, and the manifest's own problem.

    """
    evaluator = EntryEvaluator(
        name_sources=name_sources,
        thing_name_prefix=thing_name_prefix,
        trusted_cas=trusted_cas,
        allow_expired=allow_expired,
        at=now,
    )
    result = CheckResult(manifest=str(path))
    options = ParseOptions(bundle_type=bundle_type, microchip_verifiers=tuple(verifiers), now=evaluator.at)
    with path.open("rb") as source:
        try:
            parser = (
                get_parser(vendor) if vendor else detect(f"incoming/{path.name}", source.read(_HEAD_BYTES))
            )
            result.vendor = parser.name
            surveyed = _Counter(progress, "pass 1 of 2")
            evaluator.survey(surveyed.count(guarded_entries(parser, source, options)))
            checked = _Counter(progress, "pass 2 of 2", total=surveyed.done)
            for entry in checked.count(guarded_entries(parser, source, options)):
                result.total += 1
                outcome = evaluator.evaluate(entry)
                if isinstance(outcome, Rejected):
                    record = FailureRecord(
                        outcome.locator, outcome.fingerprint, outcome.reason, outcome.error_class
                    )
                    (result.duplicate_entries if outcome.duplicate else result.failures).append(record)
                else:
                    result.imported.append(
                        ImportedRecord(
                            outcome.locator, outcome.thing_name, outcome.fingerprint, outcome.name_source
                        )
                    )
        except (ManifestFormatError, ValueError) as error:
            result.reason = str(error)
    return result


class _Counter:
    """Counts the entries of one pass for a progress callback (at the start and after each entry)."""

    def __init__(self, progress: Tick | None, status: str, total: int | None = None) -> None:
        self.progress, self.status, self.total, self.done = progress, status, total, 0

    def count(self, entries: Iterable[Any]) -> Iterator[Any]:
        if self.progress is None:
            yield from entries
            return
        self.progress(0, self.total, self.status)
        for item in entries:
            yield item
            self.done += 1
            self.progress(self.done, self.total, self.status)
        self.progress(self.done, self.done, self.status)


def check_command(
    manifest: Path,
    *,
    vendor: str | None,
    verifiers: Path | None,
    trusted_cas: Sequence[Path],
    bundle_type: str,
    allow_expired: bool = False,
    name_sources: Sequence[str] = DEFAULT_NAME_SOURCES,
    thing_name_prefix: str = "",
    as_json: bool,
    show_all: bool = False,
) -> int:
    """Run ``thingpress check``: print the counts, then the entries that cannot be imported.

    Progress goes to stderr.

    People see the summary first, then those entries grouped by reason with hints; ``show_all``
    adds one row per entry. A verifier or CA file that holds no readable certificate is skipped with
    a warning. The arguments are those of `check_manifest`, with file paths and ``as_json`` for JSON
    output.

    Returns:
        0 when there is no problem, else 1.

    """
    signers, warnings = load_certificate_files(certificate_files(verifiers)) if verifiers else ((), [])
    anchors: tuple[ParsedCertificate, ...] | None = None
    if trusted_cas:
        anchors, ca_warnings = load_certificate_files(trusted_cas)
        warnings.extend(ca_warnings)
    with JobProgress() as progress:
        result = check_manifest(
            manifest,
            vendor=vendor,
            verifiers=signers,
            trusted_cas=anchors,
            bundle_type=bundle_type,
            allow_expired=allow_expired,
            name_sources=name_sources,
            thing_name_prefix=thing_name_prefix,
            progress=progress.tick(f"check {manifest.name}"),
        )
    result.warnings.extend(warnings)
    document = result.to_dict()
    if as_json:
        print_json(document)
        return 0 if result.ok else 1
    console = out_console()
    console.print(
        lit(
            f"{result.manifest} ({result.vendor or 'format not recognised'}): "
            f"{counts_text(document, imported_word='can be imported')}."
        )
    )
    for warning in result.warnings:
        console.print(lit(f"Warning: {warning}"))
    if result.reason:
        console.print(lit(f"Manifest problem: {result.reason}"))
    rejected = document[FAILURES] + document[DUPLICATE_ENTRIES]
    print_failure_groups(console, rejected, title="Entries that cannot be imported, by reason")
    if show_all and rejected:
        console.print(failures_table(rejected, title="Entries that cannot be imported"))
    if result.ok:
        console.print(lit("Every entry can be imported."))
    return 0 if result.ok else 1
