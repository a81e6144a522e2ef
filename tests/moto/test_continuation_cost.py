"""A continuation reads only its new entries, and duplicate detection stays exact across continuations.

The first run surveys the manifest once and saves the findings (``manifest_provider.findings``);
continuations restore them and count the entries before their clean point without reading them.
Reads are counted where every vendor parser loads a certificate (``vendors.base.load_certificate``).
"""

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import test_provider
from test_provider import BUCKET, TABLE, Env, FlakySqs, entry_set, manifest_with_repeats, receive_all

from layer_utils import jobs as j
from manifest_provider import findings, vendors
from manifest_provider import provider as p

aws = test_provider.aws  # the moto fixtures of the provider's tests
env = test_provider.env


class Loads:
    """Counts certificate loads: one per entry a parser reads."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Loads]:
    counter = Loads()
    real = vendors.base.load_certificate

    def counting(data: Any) -> Any:
        counter.count += 1
        return real(data)

    monkeypatch.setattr(vendors.base, "load_certificate", counting)
    yield counter


def hand_over_asap(env: Env) -> None:
    """Four entries per message, and every invocation short of time: a continuation per message."""
    env.config = replace(env.config, certs_per_message=4, time_margin_ms=10**9)


def run_counting(env: Env, body: str, loads: Loads) -> list[tuple[str, int, int]]:
    """Run the event and its continuations; (outcome, entries handled, certificates read) of each."""
    runs: list[tuple[str, int, int]] = []
    bodies = [body]
    done = 0
    while bodies:
        for message in bodies:
            before = loads.count
            (result,) = env.run(message)
            runs.append((result.outcome, result.entries_done - done, loads.count - before))
            done = result.entries_done
        bodies = receive_all(env.aws["sqs"], env.aws["intake_url"])
    return runs


def duplicate_records(env: Env, job: j.Job) -> list[tuple[str, str]]:
    return [(entry["locator"], entry["reason"]) for entry in env.jobs.build_report(job)["duplicate_entries"]]


def test_a_continuation_reads_only_its_new_entries(env: Env, loads: Loads) -> None:
    data = manifest_with_repeats()  # 42 entries
    hand_over_asap(env)
    runs = run_counting(env, env.put("generated/cost.txt", data), loads)

    first, *continuations = runs
    assert len(continuations) >= 8
    # The first run surveys all 42 entries once, then reads the ones it fans out.
    assert first == ("continued", first[1], 42 + first[1])
    # Every continuation reads exactly the entries it handles, however far into the manifest it starts.
    assert [(entries, read) for _outcome, entries, read in continuations] == [
        (entries, entries) for _outcome, entries, _read in continuations
    ]
    assert continuations[-1][0] == "finished"
    assert sum(entries for _o, entries, _r in runs) == 42
    job = env.job("generated/cost.txt")
    assert job.checkpoint is not None
    assert job.checkpoint["surveyed"] is True
    saved = env.s3.get_object(Bucket=BUCKET, Key=findings.findings_key(job.job_id))["Body"].read()
    assert len(saved) < 1000  # the findings: one repeated certificate and one shared CN, not 42 entries


def test_a_duplicate_in_a_later_continuation_is_detected_exactly(env: Env, loads: Loads) -> None:
    data = manifest_with_repeats()  # line 31 repeats line 3; line 36 shares line 6's CN
    hand_over_asap(env)
    runs = run_counting(env, env.put("generated/dup.txt", data), loads)
    assert runs[0][1] < 30  # the original is fanned out long before the continuation meeting its copy

    job = env.job("generated/dup.txt")
    assert (job.total, job.duplicates, job.failed) == (42, 1, 0)
    assert duplicate_records(env, job) == [("line 31", "line 31: duplicate of line 3.")]
    messages = env.messages()
    assert len(entry_set(messages)) == 41
    names = {e.locator: e.thing_name for m in messages for e in m.entries}
    # The CN that line 36 shares with line 6 names neither: both fall back to their fingerprints.
    assert names["line 6"] != "Node-5"
    assert names["line 36"] != "Node-5"
    assert names["line 7"] == "Node-6"


def test_a_crash_before_the_checkpoint_records_the_findings_surveys_again(env: Env, loads: Loads) -> None:
    data = manifest_with_repeats()
    hand_over_asap(env)

    class DyingStore(j.JobStore):
        def save_checkpoint(self, job_id: str, owner: str, checkpoint: Any, **kwargs: Any) -> bool:
            raise RuntimeError("the invocation dies after saving the findings")

    store = DyingStore(TABLE, dynamodb=env.aws["ddb"], s3=env.aws["s3"], clock=env.clock, emit=lambda n: None)
    services = env.services()
    services.jobs = store
    body = env.put("generated/crash-survey.txt", data)
    with pytest.raises(RuntimeError, match="findings"):
        p.handle_intake_body(body, services, env.config, owner="first", remaining_ms=lambda: 900_000)
    job = env.job("generated/crash-survey.txt")
    assert env.s3.get_object(Bucket=BUCKET, Key=findings.findings_key(job.job_id))  # saved...
    assert not (job.checkpoint or {}).get("surveyed")  # ...but not recorded

    env.clock.now += timedelta(hours=1)  # the dead invocation's lease expires
    runs = run_counting(env, body, loads)
    assert runs[0][2] == 42 + runs[0][1]  # the redelivery surveys again
    final = env.job("generated/crash-survey.txt")
    assert (final.total, final.duplicates) == (42, 1)
    assert len(entry_set(env.messages())) == 41


def test_a_continuation_dying_after_sending_before_its_checkpoint_stays_exact(env: Env, loads: Loads) -> None:
    data = manifest_with_repeats()
    env.config = replace(env.config, certs_per_message=3, checkpoint_every=2)
    body = env.put("generated/crash-late.txt", data)
    # A first run hands over after 10 entries; its continuation restores the findings, then dies
    # after two SendMessageBatch calls, past its last checkpoint.
    counter = iter(range(10**6))

    def budget() -> int:
        return 900_000 if next(counter) < 10 else 1_000

    (first,) = p.handle_intake_body(body, env.services(), env.config, owner="first", remaining_ms=budget)
    assert first.outcome == "continued"
    (continuation,) = receive_all(env.aws["sqs"], env.aws["intake_url"])

    class CrashingSqs(FlakySqs):
        def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
            if self.batch_calls >= 2:
                raise RuntimeError("the invocation dies")
            return super().send_message_batch(QueueUrl=QueueUrl, Entries=Entries)

    env.sqs = CrashingSqs(env.aws["sqs"], fail_first=0, calls=0)
    with pytest.raises(RuntimeError, match="dies"):
        env.run(continuation)
    env.sqs = env.aws["sqs"]
    before = loads.count
    (result,) = env.run(continuation)  # the redelivery of the same message takes its lease back
    assert result.outcome == "finished"
    resumed_from = (env.job("generated/crash-late.txt").checkpoint or {})["entries_done"]
    assert loads.count - before <= 42 - first.entries_done  # no survey, nothing before its clean point
    assert resumed_from == 42
    by_chunk: dict[str, Any] = {}
    for message in env.messages():
        assert by_chunk.setdefault(message.chunk, message) == message  # re-sent chunks are identical
    unique = list(by_chunk.values())
    assert len(entry_set(unique)) == 41
    final = env.importer(unique)
    assert final is not None
    assert (final.settled, final.total, final.duplicates) == (42, 42, 1)
    assert final.status == j.JobStatus.COMPLETED
