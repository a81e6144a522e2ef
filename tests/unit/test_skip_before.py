"""``ParseOptions.skip_before``: a continuation counts the entries before its clean point unread."""

import io
from dataclasses import replace

import pytest

from layer_utils import cert_utils
from manifest_provider.vendors import ParseOptions, base, get_parser
from thingpress.generate import generate, make_microchip_signer


def parse(vendor: str, data: bytes, options: ParseOptions) -> list[base.ManifestEntry]:
    return list(get_parser(vendor).entries(io.BytesIO(data), options))


@pytest.mark.parametrize(
    ("vendor", "style"),
    [
        ("generated", "b64pem"),
        ("generated", "pem"),
        ("generated", "b64der"),
        ("espressif", "b64pem"),
        ("infineon", "b64pem"),
        ("microchip", "b64pem"),
    ],
)
def test_entries_before_skip_before_are_counted_unread(
    vendor: str, style: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = make_microchip_signer()
    out = io.BytesIO()
    generate(vendor, 12, out, bad_fraction=0.25, signer=signer, seed=5, style=style)
    data = out.getvalue()
    options = ParseOptions(microchip_verifiers=(cert_utils.load_certificate(signer.pem()),))
    full = parse(vendor, data, options)
    loads = []
    real = base.load_certificate
    monkeypatch.setattr(base, "load_certificate", lambda data: loads.append(1) or real(data))

    skipped = parse(vendor, data, replace(options, skip_before=7))

    assert [e.ordinal for e in skipped] == [e.ordinal for e in full]
    assert skipped[7:] == full[7:]
    assert all(e.certificate is None and e.error is None for e in skipped[:7])
    assert len(loads) <= len(full) - 7  # only the entries from the clean point on are read
