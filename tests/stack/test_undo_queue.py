"""The deployed undo path on the local stack: an undo request on the UndoQueue runs the UndoFunction.

An operator's ``{"job_id": ...}`` puts IoT back as it was and leaves the job UNDONE; a run stopped
at its deadline continues in a message of its own; a request for a job that does not exist, or a
stale continuation, is acknowledged with one sentence and never loops.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from layer_utils.cert_utils import certificate_arn
from layer_utils.circuit import CircuitRegistry
from layer_utils.jobs import JobStatus
from layer_utils.rate_limit import RateLimiter
from test_undo import PARAMETERS, POLICY, POLICY_DOCUMENT, csv_of, snapshot
from testing.pipeline import Pipeline, pipeline
from thingpress.certfactory import make_ca, make_device_cert
from thingpress.local import EventSourceMappingEmulator, RunStats
from undo_worker import requests
from undo_worker.config import UndoConfig, UndoServices, undo_rates
from undo_worker.requests import UndoRequest, handle_request

UNDO = "UndoFunction"


@pytest.fixture
def imported() -> Iterator[tuple[Pipeline, str, dict[str, Any]]]:
    """A stack with a pre-existing policy and group, then an import of 3 certificates."""
    with pipeline(**PARAMETERS) as p:
        p.iot.create_policy(policyName=POLICY, policyDocument=POLICY_DOCUMENT)
        p.iot.create_thing_group(thingGroupName="fleet")
        before = snapshot(p)
        ca = make_ca("Undo Queue CA")
        certs = [make_device_cert(name, ca) for name in ("q-1", "q-2", "q-3")]
        result = p.run("espressif/undo-queue.csv", csv_of(certs))
        assert result.job.status == JobStatus.COMPLETED, result.failures
        yield p, result.job.job_id, before


def send(p: Pipeline, body: dict[str, Any]) -> RunStats:
    p.sqs.send_message(QueueUrl=p.stack.physical_id("UndoQueue"), MessageBody=json.dumps(body))
    return EventSourceMappingEmulator(p.stack, max_concurrency=None).run_until_idle(max_seconds=120)


def depth(p: Pipeline, queue: str) -> int:
    attributes = p.sqs.get_queue_attributes(
        QueueUrl=p.stack.physical_id(queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_an_undo_request_on_the_queue_puts_iot_back_and_the_job_is_undone(
    imported: tuple[Pipeline, str, dict[str, Any]],
) -> None:
    p, job_id, before = imported

    stats = send(p, {"job_id": job_id})

    assert stats.idle and stats.records.get(UNDO) == 1 and stats.failed_records == 0, stats
    assert snapshot(p) == before
    job = p.jobs.get_job(job_id)
    assert job is not None and job.status == JobStatus.UNDONE
    assert job.undo is not None and job.undo["done"] and job.undo["removed"] > 0 and job.undo["left"] == 0
    report = json.loads(p.s3.get_object(Bucket=job.bucket, Key=str(job.undo_report_key))["Body"].read())
    assert report["status"] == "UNDONE" and "delete thing q-2" in report["removed"]
    assert depth(p, "UndoQueue") == depth(p, "UndoDeadLetterQueue") == 0


def test_a_request_for_an_unknown_job_is_acknowledged_once_and_changes_nothing(
    imported: tuple[Pipeline, str, dict[str, Any]],
) -> None:
    p, job_id, _ = imported
    after_import = snapshot(p)

    stats = send(p, {"job_id": "0" * 32})

    assert stats.idle and stats.records.get(UNDO) == 1 and stats.failed_records == 0, stats
    assert depth(p, "UndoQueue") == depth(p, "UndoDeadLetterQueue") == 0
    assert snapshot(p) == after_import
    assert p.jobs.get_job("0" * 32) is None
    job = p.jobs.get_job(job_id)
    assert job is not None and job.status == JobStatus.COMPLETED


def test_a_body_that_is_not_an_undo_request_fails_until_the_dead_letter_queue(
    imported: tuple[Pipeline, str, dict[str, Any]],
) -> None:
    p, _, _ = imported

    stats = send(p, {"job": "typo"})

    assert stats.idle and stats.failed_records == 5, stats  # MaxReceiveCount deliveries, then the DLQ
    assert depth(p, "UndoQueue") == 0 and depth(p, "UndoDeadLetterQueue") == 1


def test_a_run_stopped_at_its_deadline_continues_in_a_new_message_and_a_stale_one_is_dropped(
    imported: tuple[Pipeline, str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    p, job_id, before = imported
    config = UndoConfig(undo_queue_url=p.stack.physical_id("UndoQueue"), jobs_table=p.jobs.table_name)
    emitted: list[tuple[str, float, Any]] = []
    services = UndoServices(
        iot=p.iot,
        sqs=p.sqs,
        jobs=p.jobs,
        limiter=RateLimiter(undo_rates({})),
        registry=CircuitRegistry(),
        emit=lambda name, value, dims: emitted.append((name, value, dims)),
    )
    region = p.iot.meta.region_name

    def arn(cid: str) -> str:
        return certificate_arn(cid, region=region, account="123456789012")

    # Out of time before the first chunk: nothing removed yet, the run continues in a message.
    ended = handle_request(UndoRequest(job_id), services, config, cert_arn=arn, out_of_time=lambda: True)

    assert ended == "continued"
    (message,) = p.sqs.receive_message(QueueUrl=config.undo_queue_url, VisibilityTimeout=0)["Messages"]
    assert json.loads(message["Body"]) == {"job_id": job_id, "run": 1}
    job = p.jobs.get_job(job_id)
    assert job is not None and job.status == JobStatus.COMPLETED and job.undo == {**job.undo, "next": 0}

    stats = EventSourceMappingEmulator(p.stack, max_concurrency=None).run_until_idle(max_seconds=120)

    assert stats.records.get(UNDO) == 1 and stats.failed_records == 0, stats
    assert snapshot(p) == before
    job = p.jobs.get_job(job_id)
    assert job is not None and job.status == JobStatus.UNDONE and job.undo is not None
    report = p.s3.get_object(Bucket=job.bucket, Key=str(job.undo_report_key))["Body"].read()

    # A late duplicate of the continuation: its run is over, so it is dropped with one sentence.
    warnings: list[str] = []
    monkeypatch.setattr(requests.logger, "warning", lambda sentence, **_: warnings.append(sentence))
    late = handle_request(UndoRequest(job_id, 1), services, config, cert_arn=arn, out_of_time=lambda: False)
    unknown = handle_request(UndoRequest("f" * 32), services, config, cert_arn=arn, out_of_time=lambda: False)

    assert (late, unknown) == ("refused", "refused")
    assert warnings == [
        f"Undo continuation of job {job_id} dropped: its run 1 is over.",
        f"Undo refused: job {'f' * 32} does not exist.",
    ]
    assert [(name, dims) for name, _, dims in emitted if name == "UndoRequestsRefused"] == [
        ("UndoRequestsRefused", {"Reason": "stale"}),
        ("UndoRequestsRefused", {"Reason": "unknown_job"}),
    ]
    again = p.jobs.get_job(job_id)
    assert again is not None and again.undo == job.undo and again.status == JobStatus.UNDONE
    assert p.s3.get_object(Bucket=job.bucket, Key=str(job.undo_report_key))["Body"].read() == report
