"""Preparation: everything a run decides about a manifest before its first entry is streamed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from layer_utils.cert_utils import ParsedCertificate
from manifest_provider import vendors
from manifest_provider.config import ProviderConfig, Services
from manifest_provider.evaluate import EntryEvaluator
from manifest_provider.packing import MessagePacker
from manifest_provider.resources import load_trust_certificates, missing_targets
from manifest_provider.settings import ImportSettings
from manifest_provider.spool import JobFailure

HEAD_BYTES = 8192
"""How much of a manifest format detection looks at."""


@dataclass(frozen=True)
class PreparedManifest:
    """A manifest ready to stream: its parser and options, settings, evaluator, packer and warnings."""

    parser: vendors.VendorParser
    options: vendors.ParseOptions
    settings: ImportSettings
    evaluator: EntryEvaluator
    packer: MessagePacker
    warnings: tuple[str, ...]


def choose_parser(vendor: str | None, key: str, head: bytes) -> vendors.VendorParser:
    """Return the parser of the ``thingpress-vendor`` override, else the one detected from key and content.

    The override chooses a format only where the key does not: under a vendor prefix it must name that
    vendor, so an uploader confined to ``microchip/`` cannot skip the Microchip signature check or pick
    another vendor's trusted CAs.

    Raises:
        ValueError: the override names an unknown vendor or contradicts the key's vendor prefix.
        ManifestFormatError: no override, and no parser recognises the manifest.

    """
    if not vendor:
        return vendors.detect(key, head)
    parser = vendors.get_parser(vendor)
    by_key = vendors.parser_for_key(key)
    if by_key is not None and by_key is not parser:
        raise ValueError(
            f"S3 metadata 'thingpress-vendor' asks for {parser.name!r}, but a key under '{by_key.prefix}' "
            f"is a {by_key.name} manifest."
        )
    return parser


def prepare_manifest(
    source: BinaryIO,
    metadata: Mapping[str, str],
    *,
    job_id: str,
    secret: str,
    bucket: str,
    key: str,
    resuming: bool,
    parse_time: datetime,
    first_chunk: int,
    services: Services,
    config: ProviderConfig,
) -> PreparedManifest:
    """Decide how to read a spooled manifest.

    Args:
        source: the spooled manifest body (left at its start).
        metadata: the object's user metadata (per-upload setting overrides, within
            ``config.uploader_allowlist``).
        job_id: the job.
        secret: the job's secret, which signs its import messages.
        bucket: the manifest's bucket (where trust certificates live unless configured otherwise).
        key: the manifest's key (for format detection).
        resuming: whether the run continues from a checkpoint (the targets were checked before).
        parse_time: the clock certificates are validated against.
        first_chunk: the number of the next import message.
        services: the provider's collaborators.
        config: the provider's settings.

    Returns:
        The prepared manifest.

    Raises:
        JobFailure: the settings are invalid, the metadata overrides what the operator has not allowed,
            the format is unknown or a referenced target is missing.
        AwsOperationError: AWS failed while checking targets or reading trust certificates.

    """
    try:
        own = config.default_settings()
        settings = own.with_overrides(metadata)
    except ValueError as error:
        raise JobFailure(f"The import settings are invalid: {error}") from None
    refused = config.uploader_allowlist.refusals(own, settings)
    if refused:
        raise JobFailure(f"The upload may not override these settings: {' '.join(refused)}")
    head = source.read(HEAD_BYTES)
    source.seek(0)
    try:
        parser = choose_parser(settings.vendor, key, head)
    except (ValueError, vendors.ManifestFormatError) as error:
        raise JobFailure(str(error)) from None
    if not resuming:
        problems = missing_targets(services.iot, settings)
        if problems:
            raise JobFailure(" ".join(problems))
    trust_bucket = config.trust_bucket or bucket
    verifiers: tuple[ParsedCertificate, ...] = ()
    warnings: list[str] = []
    if parser.name == "microchip" and config.microchip_verifier_prefix:
        material = load_trust_certificates(services.s3, trust_bucket, config.microchip_verifier_prefix)
        verifiers = material.certificates
        warnings.extend(material.warnings)
    trusted: tuple[ParsedCertificate, ...] | None = None
    if config.trusted_ca_prefix:
        material = load_trust_certificates(
            services.s3, trust_bucket, f"{config.trusted_ca_prefix}{parser.name}/"
        )
        trusted = material.certificates
        warnings.extend(material.warnings)
    evaluator = EntryEvaluator(
        name_sources=settings.name_sources,
        thing_name_prefix=settings.thing_name_prefix,
        trusted_cas=trusted,
        allow_expired=config.allow_expired,
        at=parse_time,
    )
    packer = MessagePacker(
        job_id,
        settings.message_settings(),
        secret=secret,
        max_entries=config.certs_per_message,
        max_bytes=config.max_message_bytes,
        first_chunk=first_chunk,
    )
    options = vendors.ParseOptions(
        bundle_type=settings.bundle_type,
        microchip_verifiers=verifiers,
        limits=config.limits,
        now=parse_time,
    )
    return PreparedManifest(parser, options, settings, evaluator, packer, tuple(warnings))
