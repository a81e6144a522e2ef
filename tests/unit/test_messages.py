import itertools
import json
from collections.abc import Iterable, Iterator

import pytest

from layer_utils import messages as m
from manifest_provider.packing import DEFAULT_MAX_MESSAGE_BYTES, MessagePacker

PEM = "-----BEGIN CERTIFICATE-----\n" + "A" * 64 + "\n" * 1 + "B" * 40 + "\n-----END CERTIFICATE-----\n"
SETTINGS = m.MessageSettings(("p1", "p2"), ("g",), "t", {"k": "v"})


def entry(i: int, pem: str = PEM) -> m.ImportEntry:
    return m.ImportEntry(f"row {i}", f"thing-{i}", f"{i:064x}", pem)


def test_import_round_trip_is_plain_json() -> None:
    message = m.ImportMessage("job1", "000012", SETTINGS, (entry(1), entry(2)), attempt=3)
    body = m.encode_import_message(message)
    data = json.loads(body)
    assert data["schema"] == "thingpress.import/1"
    assert data["job_id"] == "job1"
    assert data["settings"] == {
        "policies": ["p1", "p2"],
        "thing_groups": ["g"],
        "thing_type": "t",
        "attributes": {"k": "v"},
    }
    assert data["entries"][0]["certificate_pem"] == PEM  # PEM as text, not base64 or repr
    assert m.decode_message(body) == message


def test_continuation_round_trip() -> None:
    message = m.ContinuationMessage("job1", "b", "dir/a b.csv", None, '"etag"', m.Checkpoint(12000, 240))
    body = m.encode_continuation_message(message)
    assert json.loads(body)["checkpoint"] == {"entries_done": 12000, "next_chunk": 240}
    assert m.decode_message(body) == message


def test_non_ascii_is_escaped_and_sized_exactly() -> None:
    message = m.ImportMessage("j", "000000", m.MessageSettings(), (m.ImportEntry("row é", "t", "c", PEM),))
    body = m.encode_import_message(message)
    assert body.isascii()
    assert m.decode_message(body) == message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"schema": "other/1"}', "schema 'other/1' is not supported"),
        ('{"job_id": "x"}', "schema None is not supported"),
        ('{"schema": "thingpress.import/1", "job_id": "j", "chunk": "0", "attempt": 0}', "'entries'"),
        (
            '{"schema": "thingpress.import/1", "job_id": "j", "chunk": "0", "attempt": -1,'
            ' "settings": {}, "entries": [{}]}',
            "'attempt'",
        ),
        (
            '{"schema": "thingpress.import/1", "job_id": "j", "chunk": "0", "attempt": 0,'
            ' "settings": {}, "entries": [{"locator": "x"}]}',
            "entry 0 has no valid 'thing_name'",
        ),
        (
            '{"schema": "thingpress.import/1", "job_id": "j", "chunk": "0", "attempt": 0,'
            ' "settings": {"policies": "p"}, "entries": [{}]}',
            "'settings.policies'",
        ),
        ('{"schema": "thingpress.continue/1", "job_id": "j", "bucket": "b", "key": "k"}', "'checkpoint'"),
    ],
)
def test_garbage_bodies_raise_clear_errors(body: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        m.decode_message(body)
    assert fragment in str(info.value)


def pack_entries(
    job_id: str,
    settings: m.MessageSettings,
    entries: Iterable[m.ImportEntry],
    *,
    max_entries: int,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    first_chunk: int = 0,
) -> Iterator[m.ImportMessage]:
    """Pack ``entries`` in order with one ``MessagePacker``, as the provider does."""
    packer = MessagePacker(
        job_id, settings, secret="s", max_entries=max_entries, max_bytes=max_bytes, first_chunk=first_chunk
    )
    for item in entries:
        message = packer.add(item)
        if message is not None:
            yield message
    last = packer.flush()
    if last is not None:
        yield last


def test_pack_respects_entry_count_and_numbering() -> None:
    messages = list(pack_entries("job", SETTINGS, [entry(i) for i in range(7)], max_entries=3, first_chunk=5))
    assert [msg.chunk for msg in messages] == ["000005", "000006", "000007"]
    assert [len(msg.entries) for msg in messages] == [3, 3, 1]
    assert [e.locator for msg in messages for e in msg.entries] == [f"row {i}" for i in range(7)]


def test_pack_respects_byte_budget() -> None:
    big = "-----BEGIN CERTIFICATE-----\n" + "Q" * 1500 + "\n-----END CERTIFICATE-----\n"
    entries = [entry(i, big) for i in range(100)]
    budget = 8_000
    messages = list(pack_entries("job", SETTINGS, entries, max_entries=50, max_bytes=budget))
    assert len(messages) > 2
    for msg in messages:
        assert m.body_size(m.encode_import_message(msg)) <= budget
    # Greedy: each message except the last could not take the next entry.
    for msg, nxt in itertools.pairwise(messages):
        grown = m.ImportMessage(msg.job_id, msg.chunk, msg.settings, (*msg.entries, nxt.entries[0]))
        assert m.body_size(m.encode_import_message(grown)) > budget
    assert sum(len(msg.entries) for msg in messages) == 100


def test_pack_one_per_message_and_too_large_entry() -> None:
    assert [len(x.entries) for x in pack_entries("j", SETTINGS, [entry(1), entry(2)], max_entries=1)] == [
        1,
        1,
    ]
    huge = entry(1, "x" * 5000)
    with pytest.raises(ValueError, match="Entry row 1 is too large"):
        list(pack_entries("j", SETTINGS, [huge], max_entries=5, max_bytes=2000))
    packer = MessagePacker("j", SETTINGS, secret="s", max_entries=5, max_bytes=2000)
    assert not packer.fits(huge)
    assert packer.fits(entry(2))


def test_chunk_id() -> None:
    assert m.chunk_id(12) == "000012"
    with pytest.raises(ValueError, match="negative"):
        m.chunk_id(-1)
