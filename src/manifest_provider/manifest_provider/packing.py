"""Packing import entries into import messages under an entry count and a byte budget.

Only the provider packs messages; the message schema itself is ``layer_utils.messages``.
"""

from __future__ import annotations

from layer_utils.messages import (
    ImportEntry,
    ImportMessage,
    MessageSettings,
    body_size,
    chunk_id,
    encode_import_message,
    encoded_entry_size,
    sign_import_message,
)

DEFAULT_MAX_MESSAGE_BYTES = 240_000
"""The byte budget the provider packs import messages into (the SQS limit minus a margin)."""


class MessagePacker:
    """Packs import entries, in order, into import messages under an entry count and byte budget.

    Feed entries with ``add``; it returns a full message when the next entry would not fit. Call
    ``flush`` at the end for the last, partial message. Chunk ids are numbered from ``first_chunk``
    so packing is deterministic: the same entries and budgets always give the same messages. Every
    message is signed with the job's ``secret`` (``layer_utils.messages.sign_import_message``).
    """

    def __init__(
        self,
        job_id: str,
        settings: MessageSettings,
        *,
        secret: str,
        max_entries: int,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        first_chunk: int = 0,
    ) -> None:
        """Take the job id, settings, the job's secret, the budgets and the first chunk number.

        Raises:
            ValueError: ``max_entries`` < 1, or ``max_bytes`` cannot hold the envelope.

        """
        if max_entries < 1:
            raise ValueError(f"Entries per message must be at least 1 (got {max_entries}).")
        self._job_id = job_id
        self._settings = settings
        self._secret = secret
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._next_chunk = first_chunk
        self._pending: list[ImportEntry] = []
        self._pending_bytes = 0
        probe = sign_import_message(
            ImportMessage(job_id, chunk_id(first_chunk), settings, (), attempt=0), secret
        )
        # The envelope with an empty entries list; each entry adds its size plus one comma.
        self._envelope_bytes = body_size(encode_import_message(probe)) + 2
        if self._envelope_bytes >= max_bytes:
            raise ValueError(f"A message budget of {max_bytes} bytes cannot hold the message envelope.")

    @property
    def next_chunk(self) -> int:
        """The number of the next chunk to be emitted (pending entries belong to it)."""
        return self._next_chunk

    @property
    def pending(self) -> int:
        """How many entries wait in the current, unfinished message."""
        return len(self._pending)

    @property
    def max_entry_bytes(self) -> int:
        """The largest encoded entry that fits a message on its own."""
        return self._max_bytes - self._envelope_bytes

    def fits(self, entry: ImportEntry) -> bool:
        """Return whether ``entry`` fits a message at all (see ``max_entry_bytes``)."""
        return encoded_entry_size(entry) <= self.max_entry_bytes

    def add(self, entry: ImportEntry) -> ImportMessage | None:
        """Add ``entry``.

        Returns:
            The message that was completed to make room for it, if any.

        Raises:
            ValueError: naming the entry's locator, when it cannot fit any message.

        """
        size = encoded_entry_size(entry) + 1
        if size - 1 > self.max_entry_bytes:
            raise ValueError(
                f"Entry {entry.locator} is too large for one message ({size - 1} bytes encoded)."
            )
        # Pending entries never reach max_entries between calls: a full message is emitted at once.
        completed: ImportMessage | None = None
        if self._pending and self._envelope_bytes + self._pending_bytes + size > self._max_bytes:
            completed = self.flush()
        self._pending.append(entry)
        self._pending_bytes += size
        if len(self._pending) >= self._max_entries:
            # With max_entries == 1 nothing was pending, so at most one message is completed here.
            return self.flush()
        return completed

    def flush(self) -> ImportMessage | None:
        """Return the message holding the pending entries (``None`` when there are none)."""
        if not self._pending:
            return None
        message = sign_import_message(
            ImportMessage(self._job_id, chunk_id(self._next_chunk), self._settings, tuple(self._pending)),
            self._secret,
        )
        self._next_chunk += 1
        self._pending = []
        self._pending_bytes = 0
        return message
