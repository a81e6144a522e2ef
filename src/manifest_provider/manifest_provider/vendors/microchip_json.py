"""Microchip manifests' top-level JSON array, read one element at a time.

There is no streaming JSON parser in the pinned dependencies, so :class:`ArrayReader` scans for the
end of each element with a regular expression and hands only that element to ``json.loads``:
memory stays bounded by the largest entry (``Limits.max_entry_bytes``) whatever the manifest's size.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

from manifest_provider.limits import Limits
from manifest_provider.vendors.base import ManifestFormatError, describe

VENDOR = "Microchip"
"""The vendor's display name in messages."""

_CHUNK = 64 * 1024
# A complete JSON string, a bracket, or a lone quote (a string the buffer does not hold entirely yet).
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"', re.DOTALL)
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_SCALAR = re.compile(r"[^,\]\s]+")


@dataclass
class _Nesting:
    """Bracket depth over a run of JSON tokens: the current depth and the deepest reached."""

    depth: int = 0
    deepest: int = 0

    def see(self, symbol: str) -> None:
        """Count one token: an opening bracket goes one level deeper, a closing one back up."""
        if symbol in "[{":
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)
        elif symbol in "]}":
            self.depth -= 1


def json_depth(text: str) -> int:
    """Return the nesting depth of a complete JSON text (0 for a scalar), without parsing it."""
    nesting = _Nesting()
    for match in _TOKEN.finditer(text):
        nesting.see(match.group())
    return nesting.deepest


class ArrayReader:
    """Split a top-level JSON array into element texts, one at a time; ``count`` is how many so far."""

    def __init__(self, text: io.TextIOBase, limits: Limits) -> None:
        """Read from ``text``, refusing an element larger than ``limits.max_entry_bytes``."""
        self._text = text
        self._limits = limits
        self._buf = ""
        self._pos = 0
        self._eof = False
        self.count = 0

    def _more(self, keep_from: int) -> bool:
        """Append a chunk, dropping the buffer before ``keep_from``; return False at end of input."""
        if self._eof:
            return False
        chunk = self._text.read(_CHUNK)
        if not chunk:
            self._eof = True
            return False
        self._buf = self._buf[keep_from:] + chunk
        self._pos -= keep_from
        return True

    def _peek(self) -> str:
        """Skip whitespace and return the next character ("" at end of input)."""
        while True:
            match = _WHITESPACE.match(self._buf, self._pos)
            if match is None:  # the pattern matches the empty string, so this cannot happen
                raise RuntimeError("The whitespace pattern failed to match.")
            self._pos = match.end()
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._more(self._pos):
                return ""

    def _truncated(self) -> ManifestFormatError:
        return ManifestFormatError(
            f"The {VENDOR} manifest is truncated: entry {self.count + 1} is incomplete at the end of "
            "the file."
        )

    def _too_large(self) -> ManifestFormatError:
        return ManifestFormatError(
            f"Entry {self.count + 1} of the {VENDOR} manifest is larger than "
            f"{self._limits.max_entry_bytes} bytes; the rest of the manifest is not read."
        )

    def _element(self) -> tuple[str, int]:
        """Return the next element's text and nesting depth; the buffer is positioned after it.

        Raises:
            ManifestFormatError: The element is not JSON, is truncated or is larger than the limit.

        """
        start = self._pos
        first = self._buf[start]
        if first not in "[{":
            pattern = _TOKEN if first == '"' else _SCALAR
            while True:
                match = pattern.match(self._buf, start)
                if match is None:
                    raise ManifestFormatError(
                        f"The {VENDOR} manifest is not valid JSON: entry {self.count + 1} starts with "
                        f"'{describe(first)}'."
                    )
                usable = match.group() != '"'
                if usable and (match.end() < len(self._buf) or self._eof):
                    self._pos = match.end()
                    return match.group(), 0
                if len(self._buf) - start > self._limits.max_entry_bytes:
                    raise self._too_large()
                if not self._more(start):
                    if usable:
                        self._pos = match.end()
                        return match.group(), 0
                    raise self._truncated()
                start = 0
        nesting = _Nesting()
        scan = start
        while True:
            match = _TOKEN.search(self._buf, scan)
            if match is None or match.group() == '"':
                scan = len(self._buf) if match is None else match.start()
            else:
                scan = match.end()
                nesting.see(match.group())
                if nesting.depth == 0:  # the element opened with a bracket, so this is its end
                    self._pos = scan
                    return self._buf[start:scan], nesting.deepest
                continue
            if scan - start > self._limits.max_entry_bytes:
                raise self._too_large()
            if not self._more(start):
                raise self._truncated()
            scan -= start
            start = 0

    def elements(self) -> Iterator[tuple[str, int]]:
        """Yield each element's text and nesting depth, in order.

        Raises:
            ManifestFormatError: The text is not a JSON array, is truncated, has a syntax error
                between elements or an element larger than the limit.

        """
        opening = self._peek()
        if opening != "[":
            found = "nothing but whitespace" if not opening else f"'{describe(opening)}'"
            raise ManifestFormatError(
                f"The {VENDOR} manifest must be a JSON array of JWS entries, but it starts with {found}."
            )
        self._pos += 1
        if self._peek() == "]":
            self._pos += 1
        else:
            while True:
                if not self._peek():
                    raise self._truncated()
                text, depth = self._element()
                if len(text) > self._limits.max_entry_bytes:
                    raise self._too_large()
                self.count += 1
                yield text, depth
                separator = self._peek()
                self._pos += 1
                if separator == "]":
                    break
                if separator != ",":
                    if not separator:
                        raise self._truncated()
                    raise ManifestFormatError(
                        f"The {VENDOR} manifest is not valid JSON after entry {self.count}: expected ',' "
                        f"or ']' but found '{describe(separator)}'."
                    )
                if self._peek() == "]":
                    raise ManifestFormatError(
                        f"The {VENDOR} manifest is not valid JSON: a comma follows the last entry."
                    )
        if self._peek():
            raise ManifestFormatError(f"The {VENDOR} manifest has text after the closing ']' of the array.")
