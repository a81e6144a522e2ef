"""``thingpress check``: validate a manifest offline, with no emulator and no AWS.

It runs what the ManifestProvider runs before anything is queued: format detection, the vendor
parser (signatures, archive and CSV structure) and the provider's own per-entry evaluation
(``manifest_provider.evaluate``: duplicates, thing naming, certificate validation with expiry, key,
CA flag and, when trust anchors are given, the chain), so every reason is the one the import report
would give. It prints the counts and every problem with its locator; the exit code is 1 when there
is any problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from layer_utils.cert_utils import DEFAULT_NAME_SOURCES, ParsedCertificate, load_certificates
from layer_utils.jobs import ImportedRecord
from manifest_provider.evaluate import EntryEvaluator, Rejected
from manifest_provider.vendors import (
    ManifestFormatError,
    ParseOptions,
    detect,
    get_parser,
    guarded_entries,
)
from thingpress.console import failures_table, out_console, print_json
from thingpress.progress import JobProgress, Tick

_HEAD_BYTES = 8192
_CERT_SUFFIXES = (".crt", ".pem", ".cer", ".der")


@dataclass(frozen=True)
class Problem:
    """One problem: the entry's locator (``manifest`` for the whole file) and one English sentence.

    An entry's reason is the provider's, so it starts with the locator.
    """

    locator: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """Return ``{"locator", "reason"}``."""
        return {"locator": self.locator, "reason": self.reason}


@dataclass
class CheckResult:
    """The outcome of checking one manifest.

    ``entries`` counts the manifest's entries, ``valid`` lists the importable ones (as the report's
    imported records would list them), ``problems`` every problem in manifest order (one per bad
    entry, a manifest-level problem last), ``duplicates`` how many entries repeat an earlier
    certificate, ``warnings`` the skipped verifier or CA files.
    """

    manifest: str
    vendor: str | None = None
    entries: int = 0
    duplicates: int = 0
    valid: list[ImportedRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the manifest has no problem at all."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document printed by ``thingpress check --json``."""
        return {
            "manifest": self.manifest,
            "vendor": self.vendor,
            "ok": self.ok,
            "entries": self.entries,
            "valid": len(self.valid),
            "invalid": self.entries - len(self.valid),
            "duplicates": self.duplicates,
            "problems": [problem.to_dict() for problem in self.problems],
            "warnings": list(self.warnings),
            "valid_entries": [entry.to_dict() for entry in self.valid],
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
        The result with every problem, one per bad entry.

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
                result.entries += 1
                outcome = evaluator.evaluate(entry)
                if isinstance(outcome, Rejected):
                    result.duplicates += outcome.duplicate
                    result.problems.append(Problem(outcome.locator, outcome.reason))
                else:
                    result.valid.append(
                        ImportedRecord(
                            outcome.locator, outcome.thing_name, outcome.fingerprint, outcome.name_source
                        )
                    )
        except (ManifestFormatError, ValueError) as error:
            result.problems.append(Problem("manifest", str(error)))
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
        for entry in entries:
            yield entry
            self.done += 1
            self.progress(self.done, self.total, self.status)
        self.progress(self.done, self.done, self.status)


def _counts_table(result: CheckResult) -> Table:
    table = Table(title=f"{result.manifest} ({result.vendor or 'unrecognised'})")
    for column in ("entries", "valid", "invalid", "duplicates", "problems"):
        table.add_column(column, justify="right")
    table.add_row(
        str(result.entries),
        str(len(result.valid)),
        str(result.entries - len(result.valid)),
        str(result.duplicates),
        str(len(result.problems)),
    )
    return table


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
) -> int:
    """Run ``thingpress check``: print the counts and every problem, with progress on stderr.

    A verifier or CA file that holds no readable certificate is skipped with a warning. The arguments
    are those of `check_manifest`, with file paths and ``as_json`` for JSON output.

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
    if as_json:
        print_json(result.to_dict())
    else:
        console = out_console()
        for warning in result.warnings:
            console.print(f"Warning: {warning}", markup=False)
        console.print(_counts_table(result))
        if result.problems:
            console.print(
                failures_table([problem.to_dict() for problem in result.problems], title="Problems")
            )
        else:
            console.print("No problems found.")
    return 0 if result.ok else 1
