"""What the synthetic manifest writers share: their `Summary`, output, seeded damage and demo chain."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from cryptography import x509

from thingpress.certfactory import Issued, make_ca, make_device_certs
from thingpress.progress import Tick

__all__ = [
    "GARBAGE_PEM",
    "Output",
    "Summary",
    "bad_indices",
    "certificates_to_write",
    "common_name",
    "counted",
    "demo_chain",
    "opened",
    "random_uuid",
    "seeded_rng",
]

Output = BinaryIO | str | Path
"""Where a writer puts the manifest: a binary stream or a file path."""

T = TypeVar("T")


@dataclass(frozen=True)
class Summary:
    """What a writer produced.

    ``vendor`` and ``count`` (entries written, good and bad); ``thing_names``: the expected thing
    names of the good entries, in manifest order; ``bad``: locator of each damaged entry → what was
    done to it; ``ca_certificates``: the chain that issued the device certificates (issuing CA
    first); ``bundles``: for Infineon, the summary of every bundle type written (the top-level
    fields describe the first one, the bundle the parser reads by default).
    """

    vendor: str
    count: int
    thing_names: tuple[str, ...]
    bad: dict[str, str] = field(default_factory=dict)
    ca_certificates: tuple[x509.Certificate, ...] = ()
    bundles: dict[str, Summary] = field(default_factory=dict)


@contextlib.contextmanager
def opened(out: Output) -> Iterator[BinaryIO]:
    """Yield a binary stream for ``out``, opening (and closing) it when it is a path."""
    if isinstance(out, str | Path):
        with Path(out).open("wb") as stream:
            yield stream
    else:
        yield out


def seeded_rng(seed: int) -> random.Random:
    """Return the seeded generator that chooses test damage (reproducible on purpose, not secret)."""
    return random.Random(seed)  # noqa: S311 - reproducible test data, not security  # nosec B311


def bad_indices(count: int, bad_fraction: float, rng: random.Random) -> set[int]:
    """Pick ``round(count * bad_fraction)`` distinct indices to damage."""
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"bad_fraction must be between 0 and 1, got {bad_fraction}.")
    return set(rng.sample(range(count), round(count * bad_fraction)))


def demo_chain(name: str) -> tuple[Issued, Issued]:
    """Return a demo root CA and an intermediate that issues device certificates."""
    root = make_ca(f"Thingpress Demo {name} Root CA")
    return root, make_ca(f"Thingpress Demo {name} Intermediate CA", issuer=root, path_length=0)


def certificates_to_write(
    certs_or_count: Iterable[Issued] | int, name: str, cn_format: str
) -> tuple[Iterable[Issued], int | None, tuple[x509.Certificate, ...]]:
    """Return device certificates to write, their count when known, and the issuing chain."""
    if isinstance(certs_or_count, int):
        root, issuer = demo_chain(name)
        certs = make_device_certs(certs_or_count, issuer, cn_format=cn_format)
        return certs, certs_or_count, (issuer.certificate, root.certificate)
    if isinstance(certs_or_count, Sequence):
        return certs_or_count, len(certs_or_count), ()
    materialised = list(certs_or_count)
    return materialised, len(materialised), ()


def counted(items: Iterable[T], progress: Tick | None, total: int | None, *, start: int = 0) -> Iterator[T]:
    """Yield ``items``, telling ``progress`` how many are done (``start`` + those written) of ``total``."""
    if progress is None:
        yield from items
        return
    done = start
    progress(done, total)
    for item in items:
        yield item
        done += 1
        progress(done, total)


def common_name(certificate: x509.Certificate) -> str:
    """Return a certificate's subject CN (empty without one)."""
    values = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = values[0].value if values else ""
    return value.decode() if isinstance(value, bytes) else value


GARBAGE_PEM = "-----BEGIN CERTIFICATE-----\nVGhpcyBpcyBub3QgYSBjZXJ0aWZpY2F0ZS4=\n-----END CERTIFICATE-----\n"


def random_uuid(rng: random.Random) -> str:
    """Return a UUID-shaped string drawn from ``rng`` (reproducible, unlike `uuid.uuid4`)."""
    raw = f"{rng.getrandbits(128):032x}"
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
