"""``thingpress check``: validate a manifest offline, with no emulator and no AWS.

It runs what the ManifestProvider runs before anything is queued: format detection, the vendor
parser (signatures, archive and CSV structure), certificate validation (expiry, key, CA flag and,
when trust anchors are given, the chain), thing naming and duplicate detection. It prints the counts
and every problem with its locator; the exit code is 1 when there is any problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from rich.table import Table

from layer_utils.cert_utils import (
    derive_thing_name,
    get_certificate_fingerprint,
    load_certificates,
    validate_certificate,
)
from manifest_provider.vendors import ManifestEntry, ManifestFormatError, ParseOptions, detect, get_parser
from thingpress.console import CliError, failures_table, out_console, print_json

_HEAD_BYTES = 8192
_CERT_SUFFIXES = (".crt", ".pem", ".cer", ".der")


@dataclass(frozen=True)
class Problem:
    """One problem: the entry's locator (``manifest`` for the whole file) and one English sentence."""

    locator: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """Return ``{"locator", "reason"}``."""
        return {"locator": self.locator, "reason": self.reason}


@dataclass(frozen=True)
class ValidEntry:
    """An entry that would be queued for import: where it is, its thing name and certificate id."""

    locator: str
    thing_name: str
    certificate_id: str

    def to_dict(self) -> dict[str, str]:
        """Return ``{"locator", "thing_name", "certificate_id"}``."""
        return {"locator": self.locator, "thing_name": self.thing_name, "certificate_id": self.certificate_id}


@dataclass
class CheckResult:
    """The outcome of checking one manifest.

    ``entries`` counts the manifest's entries, ``valid`` lists the importable ones, ``problems``
    every problem in manifest order (a manifest-level problem last), ``duplicates`` how many
    entries repeat an earlier certificate.
    """

    manifest: str
    vendor: str | None = None
    entries: int = 0
    duplicates: int = 0
    valid: list[ValidEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return whether the manifest has no problem at all."""
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
            "valid_entries": [entry.to_dict() for entry in self.valid],
        }


def load_certificate_files(paths: Iterable[Path]) -> tuple[x509.Certificate, ...]:
    """Load every certificate in ``paths`` (PEM, DER or base64; a file may hold several).

    Raises ``CliError`` naming a file that holds no readable certificate.
    """
    certificates: list[x509.Certificate] = []
    for path in paths:
        try:
            certificates.extend(load_certificates(path.read_bytes()))
        except ValueError as error:
            raise CliError(f"{path} does not hold a readable certificate: {error}") from error
    return tuple(certificates)


def certificate_files(directory: Path) -> list[Path]:
    """Return the certificate files (``.crt``, ``.pem``, ``.cer``, ``.der``) in ``directory``, sorted."""
    return sorted(
        path for path in directory.iterdir() if path.is_file() and path.suffix.lower() in _CERT_SUFFIXES
    )


def _entry_reason(entry: ManifestEntry) -> str:
    reason = entry.error or "The entry has no certificate."
    prefix = f"{entry.locator}: "
    return reason[len(prefix) :] if reason.startswith(prefix) else reason


@dataclass
class _Seen:
    """Certificates (id → first locator) and thing names (name → locator, certificate id) met so far."""

    certificates: dict[str, str] = field(default_factory=dict)
    names: dict[str, tuple[str, str]] = field(default_factory=dict)


def _evaluate(
    entry: ManifestEntry,
    trusted_cas: Sequence[x509.Certificate] | None,
    now: datetime,
    allow_expired: bool,
    seen: _Seen,
) -> tuple[ValidEntry | None, list[Problem], bool]:
    """Check one entry; return the valid entry (or None), its problems and whether it is a duplicate."""
    seen_certificates, seen_names = seen.certificates, seen.names
    if entry.certificate is None:
        return None, [Problem(entry.locator, _entry_reason(entry))], False
    certificate_id = get_certificate_fingerprint(entry.certificate)
    first = seen_certificates.get(certificate_id)
    if first is not None:
        reason = f"Duplicate certificate {certificate_id[:16]}…, first seen at {first}."
        return None, [Problem(entry.locator, reason)], True
    seen_certificates[certificate_id] = entry.locator
    problems = [
        Problem(entry.locator, reason)
        for reason in validate_certificate(
            entry.certificate,
            trusted_cas,
            intermediates=entry.intermediates,
            at=now,
            allow_expired=allow_expired,
        ).reasons
    ]
    try:
        thing_name = derive_thing_name(
            source="vendor", vendor_name=entry.vendor_thing_name, cert=entry.certificate
        )
    except ValueError as error:
        problems.append(Problem(entry.locator, str(error)))
        return None, problems, False
    other = seen_names.get(thing_name)
    if other is not None and other[1] != certificate_id:
        problems.append(
            Problem(
                entry.locator,
                f"Thing name {thing_name!r} is also used by {other[0]} with another certificate.",
            )
        )
    seen_names.setdefault(thing_name, (entry.locator, certificate_id))
    if problems:
        return None, problems, False
    return ValidEntry(entry.locator, thing_name, certificate_id), [], False


def check_manifest(
    path: Path,
    *,
    vendor: str | None = None,
    verifiers: Sequence[x509.Certificate] = (),
    trusted_cas: Sequence[x509.Certificate] | None = None,
    bundle_type: str = "E0E0",
    allow_expired: bool = False,
    now: datetime | None = None,
) -> CheckResult:
    """Check one manifest file as the ManifestProvider would, without importing anything.

    Takes the manifest path, the vendor (None: detect it from the content), the Microchip signer
    certificates, the trust anchors (None: the chain is not checked), the Infineon bundle type,
    whether expired certificates are accepted and the validation time (default now). Returns the
    result with every problem. Raises ``OSError`` when the file cannot be read.
    """
    moment = now or datetime.now(UTC)
    result = CheckResult(manifest=str(path))
    options = ParseOptions(bundle_type=bundle_type, microchip_verifiers=tuple(verifiers), now=moment)
    seen = _Seen()
    with path.open("rb") as source:
        try:
            parser = (
                get_parser(vendor) if vendor else detect(f"incoming/{path.name}", source.read(_HEAD_BYTES))
            )
            result.vendor = parser.name
            for entry in parser.entries(source, options):
                result.entries += 1
                valid, problems, duplicate = _evaluate(entry, trusted_cas, moment, allow_expired, seen)
                result.duplicates += duplicate
                result.problems.extend(problems)
                if valid is not None:
                    result.valid.append(valid)
        except ManifestFormatError as error:
            result.problems.append(Problem("manifest", str(error)))
    return result


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
    as_json: bool,
) -> int:
    """Run ``thingpress check``: print the counts and every problem; return 0 when none, else 1.

    Raises ``CliError`` when a verifier or CA file holds no certificate.
    """
    signers = load_certificate_files(certificate_files(verifiers)) if verifiers else ()
    anchors = load_certificate_files(trusted_cas) if trusted_cas else None
    result = check_manifest(
        manifest,
        vendor=vendor,
        verifiers=signers,
        trusted_cas=anchors,
        bundle_type=bundle_type,
        allow_expired=allow_expired,
    )
    if as_json:
        print_json(result.to_dict())
    else:
        console = out_console()
        console.print(_counts_table(result))
        if result.problems:
            console.print(
                failures_table([problem.to_dict() for problem in result.problems], title="Problems")
            )
        else:
            console.print("No problems found.")
    return 0 if result.ok else 1
