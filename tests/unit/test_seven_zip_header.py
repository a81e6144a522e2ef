"""7z headers are bounded before py7zr parses them: size (stored and decoded), member count, names."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from manifest_provider.limits import Limits
from manifest_provider.vendors import get_parser
from manifest_provider.vendors.base import ManifestFormatError, ParseOptions
from manifest_provider.vendors.infineon_archive import MAX_HEADER_BYTES
from testing import seven_zip_bombs
from testing.helpers import seven_zip

SRC = Path(__file__).resolve().parents[2] / "src"
PEAK_RSS_BOUND = 256 * 1024 * 1024
"""Half of half the default ProviderMemorySize (1024 MB): parsing must stay well under 512 MB."""


def parse(data: bytes, limits: Limits | None = None) -> None:
    list(get_parser("infineon").entries(io.BytesIO(data), ParseOptions(limits=limits or Limits())))


def bundle(inner: bytes) -> bytes:
    return seven_zip([("REEL_guid_E0E0_Certs.7z", inner), ("README.txt", b"readme")])


def test_an_encoded_header_declaring_too_much_is_refused_at_both_levels() -> None:
    hostile = seven_zip_bombs.long_names(count=300, length=65536)
    reason = rf"has a 39\d+-byte header; the limit for the members it may hold is {MAX_HEADER_BYTES} bytes"
    with pytest.raises(ManifestFormatError, match=r"archive \(the upload\) " + reason):
        parse(hostile)
    with pytest.raises(ManifestFormatError, match=r"archive REEL_guid_E0E0_Certs\.7z " + reason):
        parse(bundle(hostile))


def test_the_header_limit_follows_the_member_limit() -> None:
    plain = seven_zip_bombs.long_names(count=10, length=30_000, encoded=False)
    with pytest.raises(ManifestFormatError, match="the limit for the members it may hold is 409600 bytes"):
        parse(plain, Limits(max_archive_entries=100))


def test_the_member_count_is_refused_before_the_members_are_read() -> None:
    with pytest.raises(
        ManifestFormatError, match=r"more than 1000 archive members \(counted up to \(the upload\)\)"
    ):
        parse(seven_zip_bombs.many_members(1001), Limits(max_archive_entries=1000))
    # The upload's two members count too: 2 + 4 inner members break a limit of 5.
    with pytest.raises(ManifestFormatError, match=r"more than 5 archive members \(counted up to REEL_guid"):
        parse(bundle(seven_zip_bombs.many_members(4)), Limits(max_archive_entries=5))


def test_names_longer_than_a_member_path_are_refused() -> None:
    with pytest.raises(
        ManifestFormatError, match="has 2000021 bytes of member names for 10 members, more than 2050"
    ):
        parse(seven_zip_bombs.long_names(count=10, length=100_000))


def test_a_header_that_cannot_be_decoded_is_unreadable() -> None:
    truncated = seven_zip_bombs.declared_huge_header(1024 * 1024)
    cut = truncated[:40] + truncated[-64:]  # the packed header is gone, its description stays
    with pytest.raises(ManifestFormatError, match=r"archive \(the upload\) cannot be read"):
        parse(cut)


_CHILD = """
import re, sys
from manifest_provider.vendors import get_parser
from manifest_provider.vendors.base import ManifestFormatError, ParseOptions
try:
    with open(sys.argv[1], "rb") as file:
        list(get_parser("infineon").entries(file, ParseOptions()))
except ManifestFormatError as error:
    print(error)
print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
"""


@pytest.mark.parametrize(
    ("name", "build", "reason"),
    [
        ("long-names", lambda: seven_zip_bombs.long_names(2000, 65536), "-byte header"),
        ("many-members", lambda: seven_zip_bombs.many_members(2_000_000), "more than 250000 archive members"),
        ("huge-declared-header", seven_zip_bombs.declared_huge_header, "-byte header"),
    ],
)
def test_hostile_headers_keep_the_peak_rss_well_under_half_the_provider_memory(
    tmp_path: Path, name: str, build: object, reason: str
) -> None:
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (pytest's), VmHWM at exec.
    path = tmp_path / f"{name}.7z"
    path.write_bytes(build())  # type: ignore[operator]
    paths = f"{SRC / 'manifest_provider'}:{SRC / 'layer_utils'}"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": paths},
    )
    message, peak_kb = done.stdout.splitlines()
    assert reason in message
    assert int(peak_kb) * 1024 < PEAK_RSS_BOUND
