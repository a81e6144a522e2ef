"""Thing-name candidates: which legal thing names a certificate's sources give.

The sources are the vendor's device identifier, the subject CN and the fingerprint; the rules for a
legal name are in :mod:`layer_utils.iot_names`. Public through :mod:`layer_utils.cert_utils`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layer_utils.iot_names import thing_name_problem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from layer_utils.certificates import ParsedCertificate

DEFAULT_NAME_SOURCES = ("vendor", "cn", "fingerprint")
"""Every thing name source (the vendor's device identifier, the subject CN, the fingerprint), in the
default order in which they are tried."""

_FINGERPRINT_NAME = re.compile(r"cert-[0-9a-fA-F]{64}")

_SOURCE_ORIGINS = {
    "vendor": "the vendor's device identifier",
    "cn": "the certificate's subject CN",
    "fingerprint": "the certificate fingerprint",
}


def parse_name_sources(raw: str) -> tuple[str, ...]:
    """Parse a thing name source list such as ``vendor,cn,fingerprint``.

    Args:
        raw: the comma-separated sources (case and spaces ignored).

    Returns:
        The sources in order, each once.

    Raises:
        ValueError: naming the list, when it is empty, repeats a source or names an unknown one.

    """
    sources = tuple(part.strip().lower() for part in raw.split(","))
    unknown = [source for source in sources if source not in DEFAULT_NAME_SOURCES]
    if not raw.strip() or unknown:
        raise ValueError(
            f"Thing name source {raw!r} is invalid: use one or more of {', '.join(DEFAULT_NAME_SOURCES)}, "
            "comma-separated in the order to try them."
        )
    if len(set(sources)) != len(sources):
        raise ValueError(f"Thing name source {raw!r} lists a source more than once.")
    return sources


@dataclass(frozen=True)
class NameCandidate:
    """A legal thing name and the source (``vendor``, ``cn`` or ``fingerprint``) it comes from."""

    name: str
    source: str


def name_candidates(
    sources: Sequence[str], *, vendor_name: str | None, cert: ParsedCertificate, prefix: str = ""
) -> tuple[list[NameCandidate], list[str]]:
    """List the legal thing names the sources give a certificate, in the order of ``sources``.

    Vendor names and CNs are validated, never rewritten.

    Args:
        sources: the ordered sources.
        vendor_name: the vendor's identifier for the device (None when it has none).
        cert: the certificate.
        prefix: prepended to every name.

    Returns:
        The candidates and, for each source that gives no legal name, one sentence fragment saying
        why (for example "the certificate has no readable subject CN").

    """
    candidates: list[NameCandidate] = []
    problems: list[str] = []
    for source in sources:
        base = {
            "fingerprint": f"cert-{cert.fingerprint}",
            "vendor": vendor_name,
            "cn": cert.subject_cn,
        }.get(source)
        if not base:
            problems.append(
                "the vendor gives no device identifier"
                if source == "vendor"
                else "the certificate has no readable subject CN"
            )
            continue
        if source != "fingerprint" and _FINGERPRINT_NAME.fullmatch(base):
            problems.append(
                f"{_quote(base)} from {_SOURCE_ORIGINS[source]} is reserved for fingerprint names"
            )
            continue
        if source == "cn" and not any(char.isdigit() for char in base):
            # Chip families share one product CN ("InfineonIoTNode"); a device identifier has digits.
            problems.append(
                f"the subject CN {_quote(base)} names a product, not one device (it has no digit)"
            )
            continue
        name = prefix + base
        problem = thing_name_problem(name)
        if problem is None:
            candidates.append(NameCandidate(name, source))
        else:
            problems.append(f"thing name {_quote(name)} from {_SOURCE_ORIGINS[source]} {problem}")
    return candidates, problems


def _quote(name: str, width: int = 80) -> str:
    flat = name if len(name) <= width else name[: width - 1] + "…"
    return repr(flat)
