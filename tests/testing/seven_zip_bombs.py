"""Hostile 7z archives whose header, not their data, is the attack; built without holding the header.

Each archive has no data streams, only a header: an LZMA-compressed ("encoded") header when
``encoded`` (how 7-Zip writes them, and how a few kilobytes can declare hundreds of megabytes), or a
plain one. The header is streamed through the compressor piece by piece, so building a 256 MB header
costs the test process almost nothing. py7zr's writer needs the whole header in memory, hence these.
"""

from __future__ import annotations

import io
import lzma
from collections.abc import Iterable, Iterator

from py7zr.archiveinfo import SignatureHeader, write_uint64
from py7zr.helpers import calculate_crc32
from py7zr.properties import PROPERTY

_DICT_SIZE = 1 << 20
_LZMA1_ID = b"\x03\x01\x01"
_LZMA1_PROPERTIES = bytes([(2 * 5 + 0) * 9 + 3]) + _DICT_SIZE.to_bytes(4, "little")  # pb=2, lp=0, lc=3


def _number(value: int) -> bytes:
    buffer = io.BytesIO()
    write_uint64(buffer, value)
    return buffer.getvalue()


def _files_header(names: Iterable[str], count: int) -> Iterator[bytes]:
    """Yield a plain header holding ``count`` empty members called ``names``, in pieces."""
    name_bytes = [name.encode("utf-16-le") + b"\0\0" for name in names]
    yield PROPERTY.HEADER + PROPERTY.FILES_INFO + _number(count)
    bits = -(-count // 8)
    yield PROPERTY.EMPTY_STREAM + _number(bits) + b"\xff" * bits
    yield PROPERTY.NAME + _number(1 + sum(map(len, name_bytes))) + b"\0"
    yield from name_bytes
    yield PROPERTY.END + PROPERTY.END


def _archive(pieces: Iterable[bytes], *, encoded: bool, declared: int | None = None) -> bytes:
    """Return a data-less 7z archive whose header is ``pieces`` joined (LZMA-encoded when ``encoded``).

    ``declared`` overrides the unpacked size the encoded header declares.
    """
    packed = b""
    if encoded:
        compressor = lzma.LZMACompressor(
            format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA1, "preset": 0, "dict_size": _DICT_SIZE}]
        )
        chunks = []
        size = 0
        for piece in pieces:
            size += len(piece)
            chunks.append(compressor.compress(piece))
        chunks.append(compressor.flush())
        packed = b"".join(chunks)
        header = b"".join(
            [
                PROPERTY.ENCODED_HEADER,
                PROPERTY.PACK_INFO
                + _number(0)
                + _number(1)
                + PROPERTY.SIZE
                + _number(len(packed))
                + PROPERTY.END,
                PROPERTY.UNPACK_INFO + PROPERTY.FOLDER + _number(1) + b"\0",
                _number(1) + bytes([0x20 | len(_LZMA1_ID)]) + _LZMA1_ID,
                _number(len(_LZMA1_PROPERTIES)) + _LZMA1_PROPERTIES,
                PROPERTY.CODERS_UNPACK_SIZE + _number(size if declared is None else declared),
                PROPERTY.END,
                PROPERTY.END,
            ]
        )
    else:
        header = b"".join(pieces)
    signature = SignatureHeader()
    signature.nextheaderofs = len(packed)
    signature.calccrc(len(header), calculate_crc32(header))
    start = io.BytesIO()
    signature.write(start)
    return start.getvalue() + packed + header


def long_names(count: int = 2000, length: int = 65536, *, encoded: bool = True) -> bytes:
    """Return an archive of ``count`` empty members, each named by ``length`` characters."""
    names = (f"{index:06d}".ljust(length, "N") for index in range(count))
    return _archive(_files_header(names, count), encoded=encoded)


def many_members(count: int = 4_000_000, *, encoded: bool = True) -> bytes:
    """Return an archive of ``count`` empty members with one-character names."""
    return _archive(_files_header(("a" for _ in range(count)), count), encoded=encoded)


def declared_huge_header(declared: int = 255 * 1024 * 1024) -> bytes:
    """Return an archive whose encoded header declares, and really decompresses to, ``declared`` bytes."""
    zeros = b"\0" * (1024 * 1024)
    pieces = (zeros for _ in range(-(-declared // len(zeros))))
    return _archive(pieces, encoded=True, declared=declared)
