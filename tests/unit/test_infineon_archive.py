"""Infineon 7z members read by index: repeated names, folders, long names, per-member isolation."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import py7zr
import pytest

from layer_utils.jobs import MAX_LOCATOR_BYTES
from manifest_provider.evaluate import Accepted, EntryEvaluator, Rejected
from manifest_provider.limits import Limits
from manifest_provider.vendors import base as base_module
from manifest_provider.vendors import get_parser
from manifest_provider.vendors import infineon_archive as archive_module
from manifest_provider.vendors.base import ManifestEntry, ManifestFormatError, ParseOptions
from testing.helpers import seven_zip
from thingpress.certfactory import Issued, make_ca, make_device_certs


@pytest.fixture(scope="module")
def certs() -> list[Issued]:
    return list(make_device_certs(200, make_ca("Infineon Archive Test CA"), cn_format="Infineon IoT Node"))


def manifest(*bundles: tuple[str, list[tuple[str, bytes]]]) -> bytes:
    return seven_zip([(name, seven_zip(files)) for name, files in bundles] + [("README.txt", b"readme")])


def one_bundle(files: list[tuple[str, bytes]]) -> bytes:
    return manifest(("REEL_guid_E0E0_Certs.7z", files))


def parse(data: bytes, options: ParseOptions | None = None) -> list[ManifestEntry]:
    return list(get_parser("infineon").entries(io.BytesIO(data), options or ParseOptions()))


def evaluate_all(evaluator: EntryEvaluator, entries: list[ManifestEntry]) -> list[Accepted | Rejected]:
    evaluator.survey(entries)
    return [evaluator.evaluate(e) for e in entries]


def pem(issued: Issued) -> bytes:
    return issued.pem().encode()


def test_repeated_member_names_are_separate_entries(certs: list[Issued]) -> None:
    entries = parse(one_bundle([("A_E0E0.pem", pem(certs[0])), ("A_E0E0.pem", pem(certs[1]))]))
    assert [e.locator for e in entries] == ["file A_E0E0.pem", "file #2 A_E0E0.pem"]
    assert [e.certificate.der for e in entries if e.certificate] == [certs[0].der(), certs[1].der()]
    assert [e.vendor_thing_name for e in entries] == ["A", "A"]
    # Named by fingerprint both are imported; two certificates claiming one chip ID is a conflict
    # reported for both.
    assert all(
        isinstance(o, Accepted) for o in evaluate_all(EntryEvaluator(name_sources=("fingerprint",)), entries)
    )
    first, second = evaluate_all(EntryEvaluator(), entries)
    assert isinstance(first, Rejected) and isinstance(second, Rejected)
    assert (first.error_class, second.error_class) == ("conflict", "conflict")
    assert second.reason == (
        "file #2 A_E0E0.pem: thing name A from the vendor's device identifier is also claimed by "
        "file A_E0E0.pem with a different certificate; neither is imported."
    )


def test_a_repeated_certificate_is_a_duplicate_of_the_first_locator(certs: list[Issued]) -> None:
    entries = parse(one_bundle([("f1/A_E0E0.pem", pem(certs[0])), ("f2/A_E0E0.pem", pem(certs[0]))]))
    assert [e.locator for e in entries] == ["file f1/A_E0E0.pem", "file f2/A_E0E0.pem"]
    outcomes = evaluate_all(EntryEvaluator(), entries)
    assert isinstance(outcomes[0], Accepted)
    assert isinstance(outcomes[1], Rejected) and outcomes[1].duplicate
    assert outcomes[1].reason == "file f2/A_E0E0.pem: duplicate of file f1/A_E0E0.pem."


def test_same_file_name_in_two_folders(certs: list[Issued]) -> None:
    entries = parse(one_bundle([("x/B_E0E0.pem", pem(certs[0])), ("y/z/B_E0E0.pem", pem(certs[1]))]))
    assert [(e.locator, e.vendor_thing_name, e.error) for e in entries] == [
        ("file x/B_E0E0.pem", "B", None),
        ("file y/z/B_E0E0.pem", "B", None),
    ]


def test_numbered_locators_never_meet_plain_ones(certs: list[Issued]) -> None:
    names = ["A_E0E0.pem", "A_E0E0.pem", "#2 A_E0E0.pem", "#2 A_E0E0.pem"]
    entries = parse(one_bundle([(name, pem(certs[i])) for i, name in enumerate(names)]))
    assert [e.locator for e in entries] == [
        "file A_E0E0.pem",
        "file #2 A_E0E0.pem",
        "file #3 #2 A_E0E0.pem",
        "file #4 #2 A_E0E0.pem",
    ]


def test_several_bundle_archives_prefix_their_name(certs: list[Issued]) -> None:
    files = [("A_E0E0.pem", pem(certs[0]))]
    data = manifest(
        ("R1_E0E0_Certs.7z", files),
        ("R2_E0E0_Certs.7z", [("A_E0E0.pem", pem(certs[1]))]),
        ("R1_E0E0_Certs.7z", [("A_E0E0.pem", pem(certs[2]))]),
        ("R1_E0E1_Certs.7z", files),
    )
    entries = parse(data)
    assert [e.locator for e in entries] == [
        "file R1_E0E0_Certs.7z/A_E0E0.pem",
        "file R2_E0E0_Certs.7z/A_E0E0.pem",
        "file #3 R1_E0E0_Certs.7z/A_E0E0.pem",
    ]
    assert [e.certificate.der for e in entries if e.certificate] == [c.der() for c in certs[:3]]


def test_an_over_long_member_name_fails_only_that_member(certs: list[Issued]) -> None:
    long_name = "L" * 247 + "_E0E0.pem"  # 256 bytes
    wide_name = "é" * 124 + "_E0E0.pem"  # 133 characters, 257 bytes
    deep_name = "/".join(["d" * 250] * 5) + "/C_E0E0.pem"  # every part short enough, 1265 bytes
    files = [
        ("A_E0E0.pem", pem(certs[0])),
        (long_name, pem(certs[1])),
        (wide_name, pem(certs[2])),
        (deep_name, pem(certs[3])),
        ("B_E0E0.pem", pem(certs[4])),
    ]
    entries = parse(one_bundle(files))
    assert [e.vendor_thing_name for e in entries if e.error is None] == ["A", "B"]
    long_locator = "file #2 …" + long_name[-(MAX_LOCATOR_BYTES - 11) :]
    # 11 bytes of "file #3 …", then the end of the name, cut in whole characters.
    wide_tail = wide_name.encode()[-(MAX_LOCATOR_BYTES - 11) :].decode(errors="ignore")
    assert [e.error for e in entries if e.error is not None] == [
        f"{long_locator}: the member name is longer than 255 bytes.",
        f"file #3 …{wide_tail}: the member name is longer than 255 bytes.",
        f"file #4 …{deep_name[-(MAX_LOCATOR_BYTES - 11) :]}: the member path is longer than 1024 bytes.",
    ]
    assert len(long_locator.encode()) == MAX_LOCATOR_BYTES
    shortest = parse(one_bundle([("A_E0E0.pem", pem(certs[0])), ("L" * 246 + "_E0E0.pem", pem(certs[1]))]))
    assert [e.error for e in shortest] == [None, None]


def test_two_hundred_long_names_give_bounded_distinct_locators(certs: list[Issued]) -> None:
    names = [f"{'n' * 230}{index:04d}_E0E0.pem" for index in range(200)]
    entries = parse(one_bundle([(name, pem(issued)) for name, issued in zip(names, certs, strict=True)]))
    assert [e.error for e in entries] == [None] * 200
    assert all(len(e.locator.encode()) <= MAX_LOCATOR_BYTES for e in entries)
    assert len({e.locator for e in entries}) == 200
    assert entries[16].locator == f"file #17 …{names[16][-(MAX_LOCATOR_BYTES - 12) :]}"
    assert [e.vendor_thing_name for e in entries] == [name.removesuffix("_E0E0.pem") for name in names]


def test_unprintable_names_are_escaped(certs: list[Issued]) -> None:
    (entry,) = parse(one_bundle([("A\nB\t_E0E0.pem", pem(certs[0]))]))
    assert entry.locator == "file A\\nB\\t_E0E0.pem"


def test_links_and_large_members_are_not_extracted(certs: list[Issued], tmp_path: Path) -> None:
    target = tmp_path / "A_E0E0.pem"
    target.write_bytes(pem(certs[0]))
    (tmp_path / "L_E0E0.pem").symlink_to("A_E0E0.pem")
    inner = io.BytesIO()
    with py7zr.SevenZipFile(inner, "w") as archive:
        archive.write(tmp_path / "L_E0E0.pem", "L_E0E0.pem")
        archive.writestr(pem(certs[1]), "B_E0E0.pem")
        archive.writestr(b"-" * 5000, "BIG_E0E0.pem")
    entries = parse(
        seven_zip([("REEL_guid_E0E0_Certs.7z", inner.getvalue())]),
        ParseOptions(limits=Limits(max_entry_bytes=4000)),
    )
    assert [e.error for e in entries] == [
        "file L_E0E0.pem: the member is a link, not a certificate file.",
        None,
        "file BIG_E0E0.pem: the file is larger than 4000 bytes.",
    ]


def test_whatever_the_loader_raises_stays_in_the_entry(
    certs: list[Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_load = base_module.load_certificate
    broken = pem(certs[1])

    def load(data: bytes) -> Any:
        if data == broken:
            raise RuntimeError("parser internals: ASN.1 tag 0x30 at offset 4")
        return real_load(data)

    monkeypatch.setattr(base_module, "load_certificate", load)
    files = [("A_E0E0.pem", pem(certs[0])), ("B_E0E0.pem", broken), ("C_E0E0.pem", b"\xff\xfe not text")]
    entries = parse(one_bundle(files))
    assert entries[0].error is None
    # An unexpected error names its kind only; a refusal of the reader says why in English.
    assert entries[1].error == "file B_E0E0.pem: the entry cannot be read (RuntimeError)."
    assert (entries[2].error or "").startswith("file C_E0E0.pem: Invalid certificate format: ")
    assert "ASN.1" not in " ".join(e.error or "" for e in entries)


def test_temporary_storage_failures_stay_in_the_entry(
    certs: list[Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self.parent.name == "inner-0" and (self.name, mode) in {("1.bin", "wb"), ("2.bin", "rb")}:
            raise OSError(28, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    files = [("A_E0E0.pem", pem(certs[0])), ("B_E0E0.pem", pem(certs[1])), ("C_E0E0.pem", pem(certs[2]))]
    entries = parse(one_bundle(files))
    assert [e.error for e in entries] == [
        None,
        "file B_E0E0.pem: the file could not be extracted to temporary storage.",
        "file C_E0E0.pem: the extracted file could not be read back.",
    ]


def test_a_bundle_archive_that_cannot_be_stored_refuses_the_manifest(
    certs: list[Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self.parent.name == "outer" and mode == "wb":
            raise OSError(28, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    with pytest.raises(
        ManifestFormatError,
        match=r"archive REEL_guid_E0E0_Certs\.7z could not be extracted to temporary storage\.$",
    ):
        parse(one_bundle([("A_E0E0.pem", pem(certs[0]))]))


def test_a_private_key_split_between_writes_is_found(tmp_path: Path) -> None:
    written = archive_module.MemberFile(tmp_path / "0.bin", scan_keys=True)
    written.write(b"x" * 10_000 + b"-----BEGIN EC PRIV")
    assert not written.private_key
    written.write(b"ATE KEY-----\n")
    written.close()
    assert written.private_key
    assert (tmp_path / "0.bin").stat().st_size == 10_031


def test_a_private_key_under_a_repeated_name_refuses_the_manifest(certs: list[Issued]) -> None:
    files = [("A_E0E0.pem", pem(certs[0])), ("A_E0E0.pem", certs[1].key_pem().encode())]
    with pytest.raises(
        ManifestFormatError, match=r"^File #2 A_E0E0\.pem of the Infineon manifest contains private key"
    ):
        parse(one_bundle(files))
