"""A generated corpus of real-world X.509 certificate quirks, built byte by byte at the DER level.

Each device certificate here is assembled by a tiny DER encoder (no templates, no network), signed
by a test CA over the exact TBS bytes, and wrapped as ``Certificate ::= SEQUENCE { tbs, sigAlg,
sig }``; so the quirks are byte-exact and the signatures verify. ``build_corpus(now)`` returns the
CA and every quirk with what an uploader would put in a manifest (``data``), the certificate's exact
DER (``der``, what AWS IoT hashes into the certificate id) and whether Thingpress should accept it.

Keys are generated once per process (``functools.cache``; DSA from fixed RFC 5114 parameters) and
every signature is deterministic (RFC 6979 ECDSA), so two calls with the same ``now`` in one process
return identical bytes. A build takes about 0.2 s, nearly all of it the two RSA keys.

``test_quirks.py`` checks every expectation against OpenSSL (pyOpenSSL 26.4.0, which runs the
OpenSSL 4.0.3 bundled with cryptography): ``d2i_X509`` reads every ``accept`` quirk and every
non-``broken`` reject and refuses every ``broken`` one; ``X509_verify_cert`` (partial chain, ignore
critical, at ``now``) passes exactly where ``openssl_chain_ok``. ``strict_refuses`` records where
the strict ``cryptography`` (50.0.2) fails although OpenSSL reads the certificate: ``load``
(``load_der_x509_certificate``), ``subject``, ``extensions``, ``validity``, ``public_key``, or None.

=================================== ======= ===========================================================
accepted quirk                      strict  cryptography's complaint
=================================== ======= ===========================================================
baseline                            -
printable_illegal_chars_subject     load    PrintableString with '_', '*', '@': InvalidValue
printable_underscore_san_dirname    exts    the same, inside the SAN directoryName
explicit_critical_false             load    EncodedDefault (Extension::critical)
basic_constraints_explicit_ca_false exts    EncodedDefault (BasicConstraints::ca)
explicit_v1_version                 load    EncodedDefault (TbsCertificate::version)
utctime_with_offset                 load    InvalidValue (Validity::not_before)
generalized_time_before_2050        -
key_usage_encipher_only             exts    encipher_only ... only when key_agreement is true
key_usage_decipher_only             exts    the same
key_usage_padding_bits_set          exts    InvalidValue (BIT STRING padding)
key_usage_trailing_zero_byte        -
key_usage_unused_bits_not_minimal   -
aki_serial_without_issuer           exts    issuer and serial must both be present or both None
pathlen_on_non_ca                   exts    path_length must be None when ca is False
eku_empty                           exts    InvalidSize (SEQUENCE SIZE (1..MAX))
san_empty_dns_name                  -
san_empty_sequence                  -
unknown_critical_extension          -       (an UnrecognizedExtension)
not_after_year_3000                 -
not_after_9999_12_31                -
v3_no_extensions                    -
v3_empty_extensions_sequence        -
subject_without_cn, subject_empty   -
pem_legacy_x509_label               -       (its PEM loader accepts the legacy label too)
der_zero_padding, der_ff_padding    -       (on ``der``; on ``data`` load refuses ExtraData, d2i does not)
signature_ecdsa_sha384              -
key_rsa_2048, key_p384, key_p521    -
subject_two_cn_rdns                 -
subject_multivalued_rdn_duplicate   subject duplicate attributes are not allowed
cn_t61_string, cn_bmp_string        -
duplicate_extension_ski             exts    DuplicateExtension
serial_negative, serial_zero        -       (a CryptographyDeprecationWarning: "will be an exception")
serial_too_long                     -
=================================== ======= ===========================================================

Rejected: ``key_rsa_1024``, ``curve_secp256k1``, ``curve_brainpoolp256r1``, ``key_ed25519``,
``key_dsa``, ``key_unknown_algorithm`` (cryptography fails at ``public_key``) and ``ca_certificate``,
all readable; and the ``broken`` ones OpenSSL cannot read: truncated or wrongly sized DER, garbage,
an extension without its OCTET STRING, an OCTET STRING serial, a non-minimal INTEGER, empty data.

OpenSSL surprises, recorded rather than faked: OpenSSL 4.0 refuses at ``d2i_X509`` a UTCTime
without seconds ("utctime is too short"; the OpenSSL 3.0.19 CLI reads it, then ``verify`` fails
with "format error in certificate's notBefore field"). Real device certificates carry it and AWS
IoT registers them, so ``utctime_without_seconds`` is to be accepted (``openssl_reads`` False): its
chain, which only OpenSSL could check, cannot be checked.
Invalid UTF-8 in a UTF8String ("invalid utf8string") and a CN as VideotexString, GraphicString or
INTEGER ("mstring wrong tag": X509_NAME values are limited to DirectoryString-like types; T61String
and BMPString are fine) are refused by both versions, so they are broken too (cryptography only
fails at ``subject`` there). A UTCTime with a ``+0000`` offset is read but fails the chain check
(notBefore format error); a duplicate extension fails it with "unable to get local issuer
certificate" (the duplicate SKI marks the certificate invalid); the unknown-algorithm key fails it
with a key decode error. pathLenConstraint on a non-CA, an AKI serial without issuer and the
KeyUsage oddities pass OpenSSL's chain check; the unknown critical extension passes only because
IGNORE_CRITICAL is set.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

# ------------------------------------------------------------------------------------- DER encoder

UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
T61_STRING = 0x14
VIDEOTEX_STRING = 0x15
IA5_STRING = 0x16
GRAPHIC_STRING = 0x19
BMP_STRING = 0x1E


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    """Encode one TLV with a single-byte tag and a DER (minimal) length."""
    return bytes([tag]) + _length(len(content)) + content


def seq(*items: bytes) -> bytes:
    """Encode a SEQUENCE of already encoded items."""
    return tlv(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """Encode a SET OF, its items sorted by their encoding as DER requires."""
    return tlv(0x31, b"".join(sorted(items)))


def integer(value: int) -> bytes:
    """Encode an INTEGER in minimal two's complement."""
    size = ((value + (value < 0)).bit_length() + 8) // 8
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


def oid(dotted: str) -> bytes:
    """Encode an OBJECT IDENTIFIER from its dotted form."""
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def boolean(value: bool) -> bytes:
    """Encode a BOOLEAN (TRUE as 0xFF)."""
    return tlv(0x01, b"\xff" if value else b"\x00")


def null() -> bytes:
    """Encode NULL."""
    return b"\x05\x00"


def bit_string(data: bytes, unused: int = 0) -> bytes:
    """Encode a BIT STRING: the unused-bits count, then ``data`` as given (not normalised)."""
    return tlv(0x03, bytes([unused]) + data)


def octet_string(data: bytes) -> bytes:
    """Encode an OCTET STRING."""
    return tlv(0x04, data)


def string(tag: int, text: str | bytes) -> bytes:
    """Encode a string with any tag; ``str`` is UTF-8 (UTF-16BE for BMPString), bytes go as is."""
    if isinstance(text, str):
        text = text.encode("utf-16-be" if tag == BMP_STRING else "utf-8")
    return tlv(tag, text)


def utc_time(text: str) -> bytes:
    """Encode a UTCTime from its raw text (not validated)."""
    return tlv(0x17, text.encode("ascii"))


def generalized_time(text: str) -> bytes:
    """Encode a GeneralizedTime from its raw text (not validated)."""
    return tlv(0x18, text.encode("ascii"))


def explicit(number: int, *content: bytes) -> bytes:
    """Encode ``[number] EXPLICIT``: a constructed context tag around ``content``."""
    return tlv(0xA0 | number, b"".join(content))


def implicit(number: int, content: bytes, *, constructed: bool = False) -> bytes:
    """Encode ``[number] IMPLICIT`` with ``content`` being the replaced type's content octets."""
    return tlv((0xA0 if constructed else 0x80) | number, content)


# -------------------------------------------------------------------------------------- DER reader


def read_header(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """Return ``(tag, content_start, content_end)`` of the TLV at ``offset`` (single-byte tags)."""
    tag, first = data[offset], data[offset + 1]
    start = offset + 2
    if first < 0x80:
        return tag, start, start + first
    count = first & 0x7F
    length = int.from_bytes(data[start : start + count], "big")
    return tag, start + count, start + count + length


def children(der: bytes) -> list[bytes]:
    """Return the complete TLVs inside the constructed TLV ``der``."""
    _, position, end = read_header(der)
    items = []
    while position < end:
        _, _, item_end = read_header(der, position)
        items.append(der[position:item_end])
        position = item_end
    return items


def content(der: bytes) -> bytes:
    """Return the content octets of the TLV ``der``."""
    _, start, end = read_header(der)
    return der[start:end]


# ------------------------------------------------------------------------------------------- names

OID_CN = "2.5.4.3"
OID_SERIAL_NUMBER = "2.5.4.5"
OID_C = "2.5.4.6"
OID_O = "2.5.4.10"
OID_SKI = "2.5.29.14"
OID_KEY_USAGE = "2.5.29.15"
OID_SAN = "2.5.29.17"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_AKI = "2.5.29.35"
OID_EKU = "2.5.29.37"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
OID_ECDSA_SHA384 = "1.2.840.10045.4.3.3"
OID_PRIVATE_EXTENSION = "1.3.6.1.4.1.55378.7.1"  # an unregistered private-enterprise arc
OID_PRIVATE_KEY_ALGORITHM = "1.3.6.1.4.1.55378.7.2"


def attribute(type_oid: str, value: bytes) -> bytes:
    """Encode an AttributeTypeAndValue; ``value`` is an encoded TLV."""
    return seq(oid(type_oid), value)


def rdn(*attributes: bytes) -> bytes:
    """Encode a RelativeDistinguishedName (a SET OF attributes)."""
    return set_of(*attributes)


def name(*rdns: bytes) -> bytes:
    """Encode a Name (a SEQUENCE OF RDNs)."""
    return seq(*rdns)


def cn_name(cn: str, tag: int = UTF8_STRING) -> bytes:
    """Encode a Name with one CN."""
    return name(rdn(attribute(OID_CN, string(tag, cn))))


def extension(type_oid: str, value: bytes, critical: bool | None = None) -> bytes:
    """Encode an Extension; ``critical=None`` leaves the DEFAULT FALSE out, False encodes it."""
    parts = [oid(type_oid)]
    if critical is not None:
        parts.append(boolean(critical))
    return seq(*parts, octet_string(value))


# -------------------------------------------------------------------------------------------- keys

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | dsa.DSAPrivateKey | ed25519.Ed25519PrivateKey
_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "p256": ec.SECP256R1,
    "p384": ec.SECP384R1,
    "p521": ec.SECP521R1,
    "secp256k1": ec.SECP256K1,
    "brainpoolp256r1": ec.BrainpoolP256R1,
}


# RFC 5114 section 2.3: the 2048-bit MODP group with a 256-bit prime order subgroup (p, q, g).
_RFC5114_2048_256 = (
    "87a8e61db4b6663cffbbd19c651959998ceef608660dd0f25d2ceed4435e3b00e00df8f1d61957d4faf7df4561b2aa30"
    "16c3d91134096faa3bf4296d830e9a7c209e0c6497517abd5a8a9d306bcf67ed91f9e6725b4758c022e0b1ef4275bf7b"
    "6c5bfc11d45f9088b941f54eb1e59bb8bc39a0bf12307f5c4fdb70c581b23f76b63acae1caa6b7902d52526735488a0e"
    "f13c6d9a51bfa4ab3ad8347796524d8ef6a167b5a41825d967e144e5140564251ccacb83e6b486f6b3ca3f7971506026"
    "c0b857f689962856ded4010abd0be621c3a3960a54e710c375f26375d7014103a4b54330c198af126116d2276e11715f"
    "693877fad7ef09cadb094ae91e1a1597",
    "8cf83642a709a097b447997640129da299b1a47d1eb3750ba308b0fe64f5fbd3",
    "3fb32c9b73134d0b2e77506660edbd484ca7b18f21ef205407f4793a1a0ba12510dbc15077be463fff4fed4aac0bb555"
    "be3a6c1b0c6b47b1bc3773bf7e8c6f62901228f8c28cbb18a55ae31341000a650196f931c77a57f2ddf463e5e9ec144b"
    "777de62aaab8a8628ac376d282d6ed3864e67982428ebc831d14348f6f2f9193b5045af2767164e1dfc967c1fb3f2e55"
    "a4bd1bffe83b9c80d052b985d182ea0adb2a3b7313d3fe14c8484b1e052588b9b7d2bbd2df016199ecd06e1557cd0915"
    "b3353bbb64e0ec377fd028370df92b52c7891428cdc67eb6184b523d1db246c32f63078490f00ef8d647d148d4795451"
    "5e2327cfef98c582664b4c0f6cc41659",
)


@functools.cache
def _key(kind: str, label: str) -> PrivateKey:
    """Return a private key of ``kind``, generated once per process for each ``label``."""
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind]())
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "dsa":  # fixed domain parameters: generating them takes up to a second
        p, q, g = (int(number, 16) for number in _RFC5114_2048_256)
        return dsa.DSAParameterNumbers(p, q, g).parameters().generate_private_key()
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind!r}")


def leaf_key(quirk_name: str, kind: str = "p256") -> PrivateKey:
    """Return the private key of a quirk certificate (one key per label and kind, per process)."""
    return _key(kind, quirk_name)


def _spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_id(spki: bytes) -> bytes:
    """Return the RFC 5280 method-1 key identifier: SHA-1 of the subjectPublicKey bits."""
    key_bits = content(children(spki)[1])[1:]
    return hashlib.sha1(key_bits, usedforsecurity=False).digest()


# ------------------------------------------------------------------------------------------ corpus


@dataclass(frozen=True)
class Quirk:
    """One certificate quirk and what Thingpress should make of it."""

    name: str
    description: str
    data: bytes  # what an uploader puts in a manifest: DER, PEM text, or DER plus padding
    der: bytes  # the certificate's exact DER TLV (the broken bytes themselves for broken quirks)
    expected: Literal["accept", "reject"]
    cn: str | None
    reason_hint: str | None = None  # rejects: a lowercase word the rejection reason contains
    broken: bool = False  # OpenSSL cannot read it either: the reason should be a plain sentence
    strict_refuses: str | None = None  # where cryptography fails although OpenSSL reads it
    openssl_chain_ok: bool = True  # OpenSSL's chain check (partial chain, ignore critical) passes
    openssl_reads: bool = True  # OpenSSL 4 reads it (False: only a UTCTime without seconds, see above)


@dataclass(frozen=True)
class QuirkCorpus:
    """The test CA and every quirk certificate it signed."""

    ca_pem: bytes
    ca_der: bytes
    quirks: tuple[Quirk, ...] = field(default=())

    def get(self, name: str) -> Quirk:
        """Return the quirk called ``name``."""
        for quirk in self.quirks:
            if quirk.name == name:
                return quirk
        raise KeyError(name)


def _time(moment: datetime) -> bytes:
    """Encode a validity time as RFC 5280 wants: UTCTime through 2049, GeneralizedTime after."""
    if 1950 <= moment.year < 2050:
        return utc_time(moment.strftime("%y%m%d%H%M%SZ"))
    return generalized_time(moment.strftime("%Y%m%d%H%M%SZ"))


class _Issuer:
    """The test CA plus the defaults of a normal device certificate."""

    def __init__(self, now: datetime) -> None:
        self.now = now.astimezone(UTC).replace(microsecond=0)
        key = _key("p256", "ca")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.key = key
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Quirk Test CA")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(0x5155495243414341)
            .not_valid_before(self.now - timedelta(days=2))
            .not_valid_after(self.now + timedelta(days=365 * 20))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256(), ecdsa_deterministic=True)
        )
        self.der = self.cert.public_bytes(serialization.Encoding.DER)
        self.name = children(children(self.der)[0])[5]  # the subject Name bytes exactly
        self.ski = ski.digest

    def validity(self) -> bytes:
        """Return the default validity: a day ago until ten years on."""
        return seq(_time(self.now - timedelta(days=1)), _time(self.now + timedelta(days=3650)))

    def extensions(self, spki: bytes, **replace: bytes | None) -> list[bytes]:
        """Return the normal device extensions; ``replace`` swaps (bytes) or drops (None) some."""
        normal: dict[str, bytes | None] = {
            "basic_constraints": extension(OID_BASIC_CONSTRAINTS, seq(), critical=True),
            "key_usage": extension(OID_KEY_USAGE, bit_string(b"\x80", 7), critical=True),
            "ski": extension(OID_SKI, octet_string(_key_id(spki))),
            "aki": extension(OID_AKI, seq(implicit(0, self.ski))),
        }
        unknown = set(replace) - set(normal)
        if unknown:
            raise ValueError(f"unknown extensions {sorted(unknown)}")
        normal.update(replace)
        return [value for value in normal.values() if value is not None]

    def certificate(
        self,
        label: str,
        *,
        subject: bytes | None = None,
        key: str = "p256",
        spki: bytes | None = None,
        extensions: Sequence[bytes] | Literal["normal"] | None = "normal",
        version: bytes | None = None,
        serial: bytes | None = None,
        validity: bytes | None = None,
        sha384: bool = False,
    ) -> bytes:
        """Return a signed device certificate, every TBS field overridable as encoded bytes."""
        if spki is None:
            spki = _spki(_key(key, label))
        algorithm = seq(oid(OID_ECDSA_SHA384 if sha384 else OID_ECDSA_SHA256))
        if extensions == "normal":
            extensions = self.extensions(spki)
        if version is None and extensions is not None:
            version = explicit(0, integer(2))
        tbs = seq(
            *([version] if version is not None else []),
            serial if serial is not None else integer(_serial(label)),
            algorithm,
            self.name,
            validity if validity is not None else self.validity(),
            subject if subject is not None else cn_name(_cn(label)),
            spki,
            *([explicit(3, seq(*extensions))] if extensions is not None else []),
        )
        digest = hashes.SHA384() if sha384 else hashes.SHA256()
        signature = self.key.sign(tbs, ec.ECDSA(digest, deterministic_signing=True))
        return seq(tbs, algorithm, bit_string(signature))


def _serial(label: str) -> int:
    """Return a positive serial number (at most 16 bytes) unique to ``label``."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest()[:16], "big") >> 1


def _cn(label: str) -> str:
    return "quirk-" + label.replace("_", "-")


def _pem(der: bytes, label: str = "CERTIFICATE") -> bytes:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode("ascii")


def make_issuer(now: datetime) -> _Issuer:
    """Return the corpus's test CA, to sign further hand-made certificates in tests."""
    return _Issuer(now)


def build_corpus(now: datetime) -> QuirkCorpus:
    """Build the CA and every quirk, with validity windows around ``now`` unless a quirk sets them."""
    ca = _Issuer(now)
    quirks: list[Quirk] = []

    def accept(
        label: str,
        description: str,
        der: bytes,
        *,
        cn: str | Literal["default"] | None = "default",
        data: bytes | None = None,
        strict: str | None = None,
        chain_ok: bool = True,
    ) -> None:
        quirks.append(
            Quirk(
                name=label,
                description=description,
                data=der if data is None else data,
                der=der,
                expected="accept",
                cn=_cn(label) if cn == "default" else cn,
                strict_refuses=strict,
                openssl_chain_ok=chain_ok,
            )
        )

    def reject(
        label: str,
        description: str,
        der: bytes,
        hint: str,
        *,
        strict: str | None = None,
        chain_ok: bool = True,
    ) -> None:
        quirks.append(
            Quirk(
                name=label,
                description=description,
                data=der,
                der=der,
                expected="reject",
                cn=_cn(label),
                reason_hint=hint,
                strict_refuses=strict,
                openssl_chain_ok=chain_ok,
            )
        )

    def broken(label: str, description: str, data: bytes, strict: str = "load") -> None:
        quirks.append(
            Quirk(
                name=label,
                description=description,
                data=data,
                der=data,
                expected="reject",
                cn=None,
                broken=True,
                strict_refuses=strict,
                openssl_chain_ok=False,
            )
        )

    def spki_of(label: str, kind: str = "p256") -> bytes:
        return _spki(_key(kind, label))

    def with_extensions(label: str, **replace: bytes | None) -> bytes:
        return ca.certificate(label, extensions=ca.extensions(spki_of(label), **replace))

    def key_usage(label: str, bits: bytes) -> bytes:
        return with_extensions(label, key_usage=extension(OID_KEY_USAGE, bits, critical=True))

    def cn_attribute(label: str, value: bytes) -> bytes:
        return ca.certificate(label, subject=name(rdn(attribute(OID_CN, value))))

    # ---------------------------------------------------------------------------------- accepted
    accept("baseline", "a normal device certificate (control)", ca.certificate("baseline"))
    accept(
        "printable_illegal_chars_subject",
        "subject CN is a PrintableString holding '_', '*' and '@', outside its character set",
        cn_attribute("printable_illegal_chars_subject", string(PRINTABLE_STRING, "dev_ice*01@x")),
        cn="dev_ice*01@x",
        strict="load",
    )
    dir_name = name(rdn(attribute(OID_SERIAL_NUMBER, string(PRINTABLE_STRING, "eui48_0123456789AB"))))
    label = "printable_underscore_san_dirname"
    accept(
        label,
        "SAN directoryName serialNumber=eui48_... as PrintableString (Microchip Trust&GO shape)",
        ca.certificate(
            label,
            extensions=[
                *ca.extensions(spki_of(label)),
                extension(OID_SAN, seq(explicit(4, dir_name))),
            ],
        ),
        strict="extensions",
    )
    label = "explicit_critical_false"
    spki = spki_of(label)
    accept(
        label,
        "SKI and AKI encode their DEFAULT 'critical FALSE' explicitly (non-DER)",
        with_extensions(
            label,
            ski=extension(OID_SKI, octet_string(_key_id(spki)), critical=False),
            aki=extension(OID_AKI, seq(implicit(0, ca.ski)), critical=False),
        ),
        strict="load",
    )
    accept(
        "basic_constraints_explicit_ca_false",
        "BasicConstraints encodes its DEFAULT 'cA FALSE' explicitly (non-DER)",
        with_extensions(
            "basic_constraints_explicit_ca_false",
            basic_constraints=extension(OID_BASIC_CONSTRAINTS, seq(boolean(False)), critical=True),
        ),
        strict="extensions",
    )
    accept(
        "explicit_v1_version",
        "a v1 certificate with its DEFAULT version encoded explicitly as [0] INTEGER 0",
        ca.certificate("explicit_v1_version", extensions=None, version=explicit(0, integer(0))),
        strict="load",
    )
    before, after = ca.now - timedelta(days=1), ca.now + timedelta(days=3650)
    accept(
        "utctime_with_offset",
        "notBefore and notAfter are UTCTime with a +0000 offset instead of Z",
        ca.certificate(
            "utctime_with_offset",
            validity=seq(
                utc_time(before.strftime("%y%m%d%H%M%S+0000")), utc_time(after.strftime("%y%m%d%H%M%S+0000"))
            ),
        ),
        strict="load",
        chain_ok=False,
    )
    accept(
        "generalized_time_before_2050",
        "notBefore and notAfter are GeneralizedTime although before 2050 (DER wants UTCTime)",
        ca.certificate(
            "generalized_time_before_2050",
            validity=seq(
                generalized_time(before.strftime("%Y%m%d%H%M%SZ")),
                generalized_time(after.strftime("%Y%m%d%H%M%SZ")),
            ),
        ),
    )
    accept(
        "key_usage_encipher_only",
        "KeyUsage digitalSignature + encipherOnly without keyAgreement",
        key_usage("key_usage_encipher_only", bit_string(b"\x81", 0)),
        strict="extensions",
    )
    accept(
        "key_usage_decipher_only",
        "KeyUsage digitalSignature + decipherOnly without keyAgreement",
        key_usage("key_usage_decipher_only", bit_string(b"\x80\x80", 7)),
        strict="extensions",
    )
    accept(
        "key_usage_padding_bits_set",
        "KeyUsage BIT STRING with 7 unused bits that are not zero",
        key_usage("key_usage_padding_bits_set", bit_string(b"\x81", 7)),
        strict="extensions",
    )
    accept(
        "key_usage_trailing_zero_byte",
        "KeyUsage BIT STRING digitalSignature followed by a zero byte (non-minimal)",
        key_usage("key_usage_trailing_zero_byte", bit_string(b"\x80\x00", 0)),
    )
    accept(
        "key_usage_unused_bits_not_minimal",
        "KeyUsage BIT STRING digitalSignature with unused-bits 0, trailing zero bits kept",
        key_usage("key_usage_unused_bits_not_minimal", bit_string(b"\x80", 0)),
    )
    accept(
        "aki_serial_without_issuer",
        "AuthorityKeyIdentifier with authorityCertSerialNumber [2] but no authorityCertIssuer [1]",
        with_extensions(
            "aki_serial_without_issuer",
            aki=extension(
                OID_AKI, seq(implicit(0, ca.ski), implicit(2, content(integer(0x5155495243414341))))
            ),
        ),
        strict="extensions",
    )
    accept(
        "pathlen_on_non_ca",
        "BasicConstraints with cA absent (FALSE) but pathLenConstraint 0",
        with_extensions(
            "pathlen_on_non_ca",
            basic_constraints=extension(OID_BASIC_CONSTRAINTS, seq(integer(0)), critical=True),
        ),
        strict="extensions",
    )
    for label, description, value, strict in (
        (
            "eku_empty",
            "an ExtendedKeyUsage that is an empty SEQUENCE",
            extension(OID_EKU, seq()),
            "extensions",
        ),
        (
            "san_empty_dns_name",
            "a SubjectAltName holding one zero-length dNSName",
            extension(OID_SAN, seq(implicit(2, b""))),
            None,
        ),
        ("san_empty_sequence", "a SubjectAltName that is an empty SEQUENCE", extension(OID_SAN, seq()), None),
        (
            "unknown_critical_extension",
            "a critical extension with an unregistered private OID",
            extension(OID_PRIVATE_EXTENSION, string(UTF8_STRING, "quirk"), critical=True),
            None,
        ),
    ):
        extensions = [*ca.extensions(spki_of(label)), value]
        accept(label, description, ca.certificate(label, extensions=extensions), strict=strict)
    accept(
        "not_after_year_3000",
        "notAfter 3000-01-01 00:00:00 (GeneralizedTime)",
        ca.certificate(
            "not_after_year_3000",
            validity=seq(_time(before), generalized_time("30000101000000Z")),
        ),
    )
    accept(
        "not_after_9999_12_31",
        "notAfter 9999-12-31 23:59:59, RFC 5280's 'no well-defined expiration'",
        ca.certificate(
            "not_after_9999_12_31",
            validity=seq(_time(before), generalized_time("99991231235959Z")),
        ),
    )
    accept(
        "v3_no_extensions",
        "a v3 certificate without any extensions",
        ca.certificate("v3_no_extensions", extensions=None, version=explicit(0, integer(2))),
    )
    accept(
        "v3_empty_extensions_sequence",
        "a v3 certificate whose [3] extensions is an empty SEQUENCE (SIZE(1..MAX) broken)",
        ca.certificate("v3_empty_extensions_sequence", extensions=[]),
    )
    accept(
        "subject_without_cn",
        "a subject with only O and C, no CN",
        ca.certificate(
            "subject_without_cn",
            subject=name(
                rdn(attribute(OID_C, string(PRINTABLE_STRING, "US"))),
                rdn(attribute(OID_O, string(UTF8_STRING, "Quirk Devices"))),
            ),
        ),
        cn=None,
    )
    accept(
        "subject_empty", "an empty subject SEQUENCE", ca.certificate("subject_empty", subject=name()), cn=None
    )
    legacy = ca.certificate("pem_legacy_x509_label")
    accept(
        "pem_legacy_x509_label",
        "PEM with the legacy label 'X509 CERTIFICATE'",
        legacy,
        data=_pem(legacy, "X509 CERTIFICATE"),
    )
    for label, pad in (("der_zero_padding", b"\x00" * 16), ("der_ff_padding", b"\xff" * 16)):
        der = ca.certificate(label)
        accept(label, f"DER followed by 16 bytes of 0x{pad[0]:02X} padding", der, data=der + pad)
    accept(
        "signature_ecdsa_sha384",
        "signed ecdsa-with-SHA384 by the P-256 CA",
        ca.certificate("signature_ecdsa_sha384", sha384=True),
    )
    for label, kind, description in (
        ("key_rsa_2048", "rsa2048", "an RSA-2048 device key"),
        ("key_p384", "p384", "a P-384 device key"),
        ("key_p521", "p521", "a P-521 device key"),
    ):
        accept(label, description, ca.certificate(label, key=kind))
    accept(
        "subject_two_cn_rdns",
        "two CN attributes in separate RDNs",
        ca.certificate(
            "subject_two_cn_rdns",
            subject=name(
                rdn(attribute(OID_CN, string(UTF8_STRING, "quirk-two-cn-first"))),
                rdn(attribute(OID_CN, string(UTF8_STRING, "quirk-two-cn-second"))),
            ),
        ),
        cn="quirk-two-cn-first",
    )
    twin = attribute(OID_CN, string(UTF8_STRING, _cn("subject_multivalued_rdn_duplicate")))
    accept(
        "subject_multivalued_rdn_duplicate",
        "a multi-valued RDN holding the same CN attribute twice",
        ca.certificate("subject_multivalued_rdn_duplicate", subject=name(rdn(twin, twin))),
        strict="subject",
    )
    accept(
        "cn_t61_string",
        "CN encoded as a T61String (TeletexString)",
        cn_attribute("cn_t61_string", string(T61_STRING, _cn("cn_t61_string"))),
    )
    accept(
        "cn_bmp_string",
        "CN encoded as a BMPString (UTF-16BE)",
        cn_attribute("cn_bmp_string", string(BMP_STRING, _cn("cn_bmp_string"))),
    )
    label = "duplicate_extension_ski"
    ski = extension(OID_SKI, octet_string(_key_id(spki_of(label))))
    accept(
        label,
        "two SubjectKeyIdentifier extensions",
        ca.certificate(label, extensions=[*ca.extensions(spki_of(label)), ski]),
        strict="extensions",
        chain_ok=False,
    )
    accept(
        "serial_negative",
        "a negative serial number",
        ca.certificate("serial_negative", serial=integer(-_serial("serial_negative"))),
    )
    accept("serial_zero", "serial number 0", ca.certificate("serial_zero", serial=integer(0)))
    accept(
        "serial_too_long",
        "a 21-byte serial number (RFC 5280 allows at most 20)",
        ca.certificate("serial_too_long", serial=integer(int.from_bytes(b"\x7f" + b"\x11" * 20, "big"))),
    )

    # ---------------------------------------------------------------------------------- rejected
    reject("key_rsa_1024", "a 1024-bit RSA device key", ca.certificate("key_rsa_1024", key="rsa1024"), "rsa")
    for curve in ("secp256k1", "brainpoolp256r1"):
        label = f"curve_{curve}"
        reject(label, f"a {curve} device key", ca.certificate(label, key=curve), "curve")
    reject("key_ed25519", "an Ed25519 device key", ca.certificate("key_ed25519", key="ed25519"), "key")
    reject("key_dsa", "a DSA-2048 device key", ca.certificate("key_dsa", key="dsa"), "key")
    unknown_spki = seq(seq(oid(OID_PRIVATE_KEY_ALGORITHM), null()), bit_string(hashlib.sha256(b"k").digest()))
    reject(
        "key_unknown_algorithm",
        "a SubjectPublicKeyInfo with an unregistered algorithm OID",
        ca.certificate("key_unknown_algorithm", spki=unknown_spki),
        "key",
        strict="public_key",
        chain_ok=False,
    )
    label = "ca_certificate"
    reject(
        label,
        "a CA certificate (BasicConstraints cA TRUE, keyCertSign) in a device manifest",
        with_extensions(
            label,
            basic_constraints=extension(OID_BASIC_CONSTRAINTS, seq(boolean(True)), critical=True),
            key_usage=extension(OID_KEY_USAGE, bit_string(b"\x06", 1), critical=True),
        ),
        "ca certificate",
    )

    # OpenSSL cannot read these either.
    whole = ca.certificate("broken_source")
    broken("truncated_der", "a certificate cut in the middle", whole[: len(whole) // 2])
    _, start, _ = read_header(whole)
    length = len(whole) - start
    header = whole[:start]
    assert header[:2] == b"\x30\x82"
    broken(
        "der_outer_length_too_long",
        "the outer SEQUENCE claims one byte more than there is",
        b"\x30\x82" + (length + 1).to_bytes(2, "big") + whole[start:],
    )
    broken(
        "der_outer_length_too_short",
        "the outer SEQUENCE claims one byte less than its content",
        b"\x30\x82" + (length - 1).to_bytes(2, "big") + whole[start:],
    )
    broken(
        "garbage_starting_0x30",
        "256 pseudo-random bytes behind a SEQUENCE header",
        b"\x30\x82\x01\x00" + hashlib.shake_256(b"quirk garbage").digest(256),
    )
    label = "extension_missing_octet_string"
    broken(
        label,
        "an extension without its extnValue OCTET STRING",
        ca.certificate(label, extensions=[*ca.extensions(spki_of(label)), seq(oid(OID_SKI))]),
    )
    broken(
        "serial_as_octet_string",
        "the serial number encoded as an OCTET STRING",
        ca.certificate("serial_as_octet_string", serial=octet_string(b"\x01\x02\x03\x04")),
    )
    broken(
        "serial_non_minimal",
        "the serial INTEGER has a redundant leading zero byte (OpenSSL: illegal padding)",
        ca.certificate("serial_non_minimal", serial=tlv(0x02, b"\x00\x01")),
    )
    broken("empty_data", "no bytes at all", b"")
    # OpenSSL 4 refuses it, older OpenSSL and AWS IoT read it: accepted, its chain uncheckable.
    no_seconds = ca.certificate(
        "utctime_without_seconds",
        validity=seq(utc_time(before.strftime("%y%m%d%H%MZ")), utc_time(after.strftime("%y%m%d%H%MZ"))),
    )
    quirks.append(
        Quirk(
            name="utctime_without_seconds",
            description="notBefore and notAfter are UTCTime YYMMDDHHMMZ, without seconds "
            "(OpenSSL 4: too short)",
            data=no_seconds,
            der=no_seconds,
            expected="accept",
            cn=_cn("utctime_without_seconds"),
            strict_refuses="load",
            openssl_chain_ok=False,
            openssl_reads=False,
        )
    )
    # Expected to be accepted, but OpenSSL refuses them too (see the module docstring).
    broken(
        "utf8_invalid_subject",
        "subject O is a UTF8String with invalid UTF-8 (\\xff\\xfe)",
        ca.certificate(
            "utf8_invalid_subject",
            subject=name(
                rdn(attribute(OID_O, string(UTF8_STRING, b"\xff\xfe bad"))),
                rdn(attribute(OID_CN, string(UTF8_STRING, _cn("utf8_invalid_subject")))),
            ),
        ),
        strict="subject",
    )
    for label, value in (
        ("cn_videotex_string", string(VIDEOTEX_STRING, _cn("cn_videotex_string"))),
        ("cn_graphic_string", string(GRAPHIC_STRING, _cn("cn_graphic_string"))),
        ("cn_integer", integer(42)),
    ):
        tag = label.removeprefix("cn_").replace("_", " ")
        description = f"subject CN encoded as {tag} (not a DirectoryString type)"
        broken(label, description, cn_attribute(label, value), strict="subject")
    return QuirkCorpus(
        ca_pem=ca.cert.public_bytes(serialization.Encoding.PEM), ca_der=ca.der, quirks=tuple(quirks)
    )
