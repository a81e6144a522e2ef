"""Hostile-input limits for manifest parsing.

Every manifest comes from outside the account, so each parser bounds what it will read, decompress and
nest. The defaults suit real vendor manifests (hundreds of thousands of devices) with a wide margin;
each can be changed through an environment variable (default in brackets):

- ``THINGPRESS_MAX_MANIFEST_BYTES`` (512 MiB): size of the manifest object.
- ``THINGPRESS_MAX_ARCHIVE_UNCOMPRESSED_BYTES`` (1 GiB): declared uncompressed size, all archive levels.
- ``THINGPRESS_MAX_ARCHIVE_ENTRIES`` (250,000): archive members, all levels together.
- ``THINGPRESS_MAX_ARCHIVE_DEPTH`` (2): archive nesting; the uploaded 7z is level 1.
- ``THINGPRESS_MAX_COMPRESSION_RATIO`` (200): uncompressed / compressed size of each archive.
- ``THINGPRESS_MAX_CSV_FIELD_BYTES`` (64 KiB): one CSV field.
- ``THINGPRESS_MAX_JSON_DEPTH`` (32): JSON nesting; the top-level array is level 1.
- ``THINGPRESS_MAX_ENTRY_BYTES`` (1 MiB): one manifest entry (a JSON array element, a PEM block).
- ``THINGPRESS_MAX_LINE_BYTES`` (64 KiB): one text line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from layer_utils.env import env_positive_int

_MIB = 1024 * 1024

_ENV_NAMES = {
    "max_manifest_bytes": "THINGPRESS_MAX_MANIFEST_BYTES",
    "max_archive_uncompressed_bytes": "THINGPRESS_MAX_ARCHIVE_UNCOMPRESSED_BYTES",
    "max_archive_entries": "THINGPRESS_MAX_ARCHIVE_ENTRIES",
    "max_archive_depth": "THINGPRESS_MAX_ARCHIVE_DEPTH",
    "max_compression_ratio": "THINGPRESS_MAX_COMPRESSION_RATIO",
    "max_csv_field_bytes": "THINGPRESS_MAX_CSV_FIELD_BYTES",
    "max_json_depth": "THINGPRESS_MAX_JSON_DEPTH",
    "max_entry_bytes": "THINGPRESS_MAX_ENTRY_BYTES",
    "max_line_bytes": "THINGPRESS_MAX_LINE_BYTES",
}


@dataclass(frozen=True)
class Limits:
    """Upper bounds a parser enforces on one manifest; every value is a positive integer.

    Construction raises ``ValueError`` when a value is not a positive integer.

    """

    max_manifest_bytes: int = 512 * _MIB
    max_archive_uncompressed_bytes: int = 1024 * _MIB
    max_archive_entries: int = 250_000
    max_archive_depth: int = 2
    max_compression_ratio: int = 200
    max_csv_field_bytes: int = 64 * 1024
    max_json_depth: int = 32
    max_entry_bytes: int = _MIB
    max_line_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        """Check that every limit is a positive integer."""
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limit {field.name} must be a positive integer, got {value!r}.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Build limits from ``THINGPRESS_MAX_*`` variables, defaulting each one that is unset or empty.

        Args:
            environ: the environment; ``os.environ`` when None.

        Returns:
            The limits.

        Raises:
            ValueError: naming the variable whose value is not a positive integer.

        """
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            **{
                attribute: env_positive_int(env, variable, getattr(defaults, attribute))
                for attribute, variable in _ENV_NAMES.items()
            }
        )
