"""Private key material refuses the manifest in every common encoding, in every vendor format."""

from __future__ import annotations

import base64
import io
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from layer_utils.cert_utils import as_parsed, contains_private_key
from manifest_provider.vendors import get_parser
from manifest_provider.vendors.base import ManifestFormatError, ParseOptions
from testing.helpers import seven_zip
from thingpress.certfactory import Issued, make_ca, make_device_certs
from thingpress.generate import make_microchip_signer, write_generated, write_microchip

Encoding = serialization.Encoding
Format = serialization.PrivateFormat
PLAIN = serialization.NoEncryption()
LOCKED = serialization.BestAvailableEncryption(b"passphrase")

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())
_ED = ed25519.Ed25519PrivateKey.generate()


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode()


def _body(pem: bytes) -> str:
    """Return a PEM block's base64 lines without its BEGIN and END lines."""
    return "\n".join(pem.decode().strip().splitlines()[1:-1])


_OPENSSH = _ED.private_bytes(Encoding.PEM, Format.OpenSSH, PLAIN)
KEYS: dict[str, str] = {
    "pkcs1-der-base64": _b64(_RSA.private_bytes(Encoding.DER, Format.TraditionalOpenSSL, PLAIN)),
    "pkcs8-der-base64": _b64(_EC.private_bytes(Encoding.DER, Format.PKCS8, PLAIN)),
    "pkcs8-der-base64-wrapped": _body(_RSA.private_bytes(Encoding.PEM, Format.PKCS8, PLAIN)),
    "sec1-der-base64": _b64(_EC.private_bytes(Encoding.DER, Format.TraditionalOpenSSL, PLAIN)),
    # 20 columns, so that a line break falls inside the base64 of the BEGIN line's "PRIVATE KEY".
    "base64-pem-wrapped": "\n".join(
        textwrap.wrap(_b64(_EC.private_bytes(Encoding.PEM, Format.PKCS8, PLAIN)), 20)
    ),
    "openssh-pem": _OPENSSH.decode(),
    "openssh-body": _body(_OPENSSH),
    "putty": "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: device\nPublic-Lines: 2\n",
    "encrypted-pkcs8-pem": _EC.private_bytes(Encoding.PEM, Format.PKCS8, LOCKED).decode(),
    "encrypted-pkcs8-der-base64": _b64(_EC.private_bytes(Encoding.DER, Format.PKCS8, LOCKED)),
}
SECRET_FRAGMENTS = {name: text.replace("\n", "")[-24:] for name, text in KEYS.items()}


@pytest.fixture(scope="module")
def devices() -> list[Issued]:
    return list(make_device_certs(2, make_ca("Key Material CA"), cn_format="key-dev-{i}"))


def espressif(devices: list[Issued], key: str) -> tuple[str, bytes, ParseOptions]:
    rows = "".join(
        f'{mac},key-dev-{i},"{d.pem().strip()}"\n'
        for i, (mac, d) in enumerate(zip(("AA", "BB"), devices, strict=True))
    )
    return "espressif", f'MAC,cn,cert\n{rows}CC,key-dev-9,"{key}"\n'.encode(), ParseOptions()


_SIGNER = make_microchip_signer()


def microchip(_devices: list[Issued], key: str) -> tuple[str, bytes, ParseOptions]:
    buffer = io.BytesIO()
    write_microchip(buffer, 2, signer=_SIGNER)
    entries = json.loads(buffer.getvalue())
    entries[1]["comment"] = key
    return (
        "microchip",
        json.dumps(entries).encode(),
        ParseOptions(microchip_verifiers=(as_parsed(_SIGNER.certificate),)),
    )


def generated(devices: list[Issued], key: str) -> tuple[str, bytes, ParseOptions]:
    return "generated", (devices[0].pem() + "\n" + key + "\n" + devices[1].pem()).encode(), ParseOptions()


def infineon(devices: list[Issued], key: str) -> tuple[str, bytes, ParseOptions]:
    inner = seven_zip([("A_E0E0.pem", devices[0].pem().encode()), ("B_E0E0.pem", key.encode())])
    return "infineon", seven_zip([("REEL_guid_E0E0_Certs.7z", inner)]), ParseOptions()


FORMATS: dict[str, Callable[[list[Issued], str], tuple[str, bytes, ParseOptions]]] = {
    "espressif-csv-cell": espressif,
    "microchip-json-field": microchip,
    "generated-pem-bundle": generated,
    "infineon-member": infineon,
}


@pytest.mark.parametrize("encoding", sorted(KEYS))
@pytest.mark.parametrize("where", sorted(FORMATS))
def test_key_material_refuses_the_manifest(devices: list[Issued], where: str, encoding: str) -> None:
    vendor, data, options = FORMATS[where](devices, KEYS[encoding])
    with pytest.raises(ManifestFormatError, match="contains private key material") as refused:
        list(get_parser(vendor).entries(io.BytesIO(data), options))
    assert SECRET_FRAGMENTS[encoding] not in str(refused.value)


@pytest.mark.parametrize("where", sorted(FORMATS))
def test_the_same_manifests_without_the_key_parse(devices: list[Issued], where: str) -> None:
    vendor, data, options = FORMATS[where](devices, "no key here")
    entries = list(get_parser(vendor).entries(io.BytesIO(data), options))
    assert len(entries) >= 2


def test_certificates_and_public_keys_in_every_encoding_are_not_keys(devices: list[Issued]) -> None:
    public = _EC.public_key().public_bytes(Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    rsa_public = _RSA.public_key().public_bytes(Encoding.DER, serialization.PublicFormat.PKCS1)
    texts = [
        devices[0].pem(),
        _b64(devices[0].der()),
        "\n".join(textwrap.wrap(_b64(devices[0].pem().encode()), 76)),
        _b64(public),
        _b64(rsa_public),
        json.dumps({"x5c": [_b64(devices[0].der()), _b64(devices[1].der())]}),
    ]
    assert [contains_private_key(text) for text in texts] == [False] * len(texts)


def test_generated_manifests_of_every_layout_are_not_keys() -> None:
    buffer = io.BytesIO()
    write_generated(buffer, 50, seed=3)
    assert not contains_private_key(buffer.getvalue())


def test_real_manifests_hold_no_key_material(shared_manifests: Path) -> None:
    files = [path for path in sorted(shared_manifests.rglob("*")) if path.is_file()]
    assert len(files) >= 10
    assert [path.name for path in files if contains_private_key(path.read_bytes())] == []
