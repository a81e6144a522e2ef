"""BulkImporter on moto: partial re-enqueue, exhaustion, deadline spill, redelivery and completion."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from bulk_importer import app
from bulk_importer.config import ImporterConfig, Services
from bulk_importer.importer import (
    RecordResult,
    RequeueError,
    UnusableMessageError,
    backoff_seconds,
    deadline,
    handle_import_body,
    requeue_chunk_name,
)
from bulk_importer.iot_import import ArnContext
from bulk_importer.rate_limit import rates_from_env
from layer_utils.aws_utils import TransientError, clear_client_cache
from layer_utils.circuit import CircuitRegistry
from layer_utils.jobs import JobStatus, JobStore
from layer_utils.messages import (
    Checkpoint,
    ContinuationMessage,
    ImportEntry,
    ImportMessage,
    MessageSettings,
    decode_message,
    encode_continuation_message,
    encode_import_message,
    sign_import_message,
)
from testing.helpers import create_jobs_table, mock_aws_with_valid_certs, shared_circuit_registry, sqs_record
from thingpress.certfactory import Issued, make_ca, make_device_cert
from thingpress.local.context import FakeLambdaContext
from thingpress.local.server import MotoFidelity

TABLE = "jobs"
BUCKET = "intake"
ARNS = ArnContext("aws", "us-east-1", "123456789012")
SETTINGS = MessageSettings(policies=("p",), thing_groups=("g",))
NEVER = lambda: False  # noqa: E731 - the time budget never runs out


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def certs() -> list[Issued]:
    ca = make_ca("Importer Test CA")
    return [make_device_cert(f"dev-{i}", ca) for i in range(6)]


@dataclass
class Aws:
    iot: Any
    sqs: Any
    ddb: Any
    s3: Any
    queue_url: str


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws_with_valid_certs():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_jobs_table(ddb, TABLE)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue_url = sqs.create_queue(QueueName="import")["QueueUrl"]
        iot = boto3.client("iot", region_name="us-east-1")
        iot.create_policy(
            policyName="p",
            policyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}],
                }
            ),
        )
        iot.create_thing_group(thingGroupName="g")
        yield Aws(iot, sqs, ddb, s3, queue_url)


class FlakyIot:
    """The moto IoT client, except that registering chosen certificates is throttled or crashes."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.throttled: set[str] = set()
        self.broken: set[str] = set()
        self.throttled_things: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_thing(self, **kwargs: Any) -> Any:
        if kwargs["thingName"] in self.throttled_things:
            raise ClientError(
                {
                    "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "CreateThing",
            )
        return self._client.create_thing(**kwargs)

    def register_certificate_without_ca(self, **kwargs: Any) -> Any:
        if kwargs["certificatePem"] in self.throttled:
            raise ClientError(
                {
                    "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "RegisterCertificateWithoutCA",
            )
        if kwargs["certificatePem"] in self.broken:
            raise RuntimeError("boom")
        return self._client.register_certificate_without_ca(**kwargs)


class RecordingSqs:
    """The moto SQS client; records each SendMessageBatch and can be told to fail the next ones."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.sent: list[dict[str, Any]] = []
        self.fail_next = 0
        self.refuse_next = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def send_message_batch(self, **kwargs: Any) -> Any:
        if self.fail_next:
            self.fail_next -= 1
            raise ClientError(
                {
                    "Error": {"Code": "InternalError", "Message": "try later"},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },
                "SendMessageBatch",
            )
        if self.refuse_next:
            self.refuse_next -= 1
            return {
                "Successful": [],
                "Failed": [{"Id": kwargs["Entries"][0]["Id"], "Code": "InternalError", "SenderFault": False}],
            }
        self.sent.append(kwargs)
        return self._client.send_message_batch(**kwargs)

    def messages(self) -> list[tuple[ImportMessage, int]]:
        """Every message sent, decoded, with its DelaySeconds."""
        out = []
        for call in self.sent:
            for entry in call["Entries"]:
                message = decode_message(entry["MessageBody"])
                assert isinstance(message, ImportMessage)
                out.append((message, entry["DelaySeconds"]))
        return out


class CountingLimiter:
    def __init__(self) -> None:
        self.calls = 0

    def acquire(self, api: str) -> float:
        self.calls += 1
        return 0.0


@dataclass
class World:
    aws: Aws
    iot: FlakyIot
    sqs: RecordingSqs
    jobs: JobStore
    services: Services
    config: ImporterConfig
    metrics: list[tuple[str, float, Mapping[str, str] | None]] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)

    def start_job(self, total: int, key: str = "espressif/m.csv") -> str:
        created, job = self.jobs.create_job(
            BUCKET, key, "v1", settings=SETTINGS.to_dict(), vendor="espressif"
        )
        assert created
        lease = datetime.now(UTC) + timedelta(hours=1)
        assert self.jobs.claim_parse(job.job_id, "provider", lease) is not None
        assert self.jobs.mark_parsed(job.job_id, "provider", total, {"entries_done": total}) is not None
        return job.job_id

    def sign(self, message: ImportMessage) -> ImportMessage:
        """Sign ``message`` with its job's secret, as the provider does."""
        job = self.jobs.get_job(message.job_id)
        assert job is not None and job.secret
        return sign_import_message(message, job.secret)

    def run(
        self,
        message: ImportMessage,
        out_of_time: Any = NEVER,
        config: ImporterConfig | None = None,
        *,
        signed: bool = True,
    ) -> RecordResult:
        return handle_import_body(
            encode_import_message(self.sign(message) if signed else message),
            self.services,
            config or self.config,
            arns=ARNS,
            out_of_time=out_of_time,
        )


@pytest.fixture
def world(aws: Aws) -> World:
    iot = FlakyIot(aws.iot)
    sqs = RecordingSqs(aws.sqs)
    metrics: list[tuple[str, float, Mapping[str, str] | None]] = []
    completions: list[str] = []
    jobs = JobStore(TABLE, dynamodb=aws.ddb, s3=aws.s3, emit=completions.append)
    services = Services(
        iot=iot,  # type: ignore[arg-type]
        sqs=sqs,  # type: ignore[arg-type]
        jobs=jobs,
        limiter=CountingLimiter(),
        rng=random.Random(1234),
        emit=lambda name, value, dims: metrics.append((name, value, dims)),
    )
    config = ImporterConfig(import_queue_url=aws.queue_url, jobs_table=TABLE, threads=4, max_entry_attempts=8)
    return World(aws, iot, sqs, jobs, services, config, metrics, completions)


def entry(cert: Issued, index: int) -> ImportEntry:
    return ImportEntry(
        locator=f"row {index + 1}",
        thing_name=f"dev-{index}",
        certificate_id=hashlib.sha256(cert.der()).hexdigest(),
        certificate_pem=cert.pem(),
    )


def message(job_id: str, chunk: str, entries: list[ImportEntry], attempt: int = 0) -> ImportMessage:
    return ImportMessage(
        job_id=job_id, chunk=chunk, settings=SETTINGS, entries=tuple(entries), attempt=attempt
    )


def things(aws: Aws) -> set[str]:
    return {thing["thingName"] for thing in aws.iot.list_things()["things"]}


# ------------------------------------------------------------------------------------- pure helpers


def test_requeue_chunk_names_depend_on_the_chunk_name_only() -> None:
    assert requeue_chunk_name("000012") == "000012.r1"
    assert requeue_chunk_name("000012.r1") == "000012.r1.r2"
    assert requeue_chunk_name("000012.r1.r2") == "000012.r1.r2.r3"


def test_backoff_is_exponential_jittered_and_capped() -> None:
    rng = random.Random(5)
    for attempt in range(1, 15):
        ceiling = min(900.0, 2.0 * 2 ** (attempt - 1))
        for _ in range(20):
            delay = backoff_seconds(attempt, 2.0, rng)
            assert max(1, ceiling / 2) - 1 < delay <= ceiling
    assert backoff_seconds(30, 2.0, rng) <= 900


def test_deadline_keeps_the_margin_but_at_most_a_quarter_of_the_budget() -> None:
    remaining = [300_000]
    check = deadline(lambda: remaining[0], 60_000)
    remaining[0] = 60_001
    assert not check()
    remaining[0] = 59_999
    assert check()
    remaining = [8_000]
    short = deadline(lambda: remaining[0], 60_000)
    remaining[0] = 2_001
    assert not short()
    remaining[0] = 1_999
    assert short()


def test_config_from_env() -> None:
    env = {
        "THINGPRESS_IMPORT_QUEUE_URL": "https://sqs/q",
        "THINGPRESS_JOBS_TABLE": "t",
        "THINGPRESS_IMPORT_THREADS": "3",
        "THINGPRESS_MAX_ENTRY_ATTEMPTS": "5",
    }
    config = ImporterConfig.from_env(env)
    assert (config.import_queue_url, config.jobs_table, config.threads, config.max_entry_attempts) == (
        "https://sqs/q",
        "t",
        3,
        5,
    )
    assert (
        ImporterConfig.from_env({"THINGPRESS_IMPORT_QUEUE_URL": "q", "THINGPRESS_JOBS_TABLE": "t"}).threads
        == 8
    )
    with pytest.raises(ValueError, match="THINGPRESS_JOBS_TABLE"):
        ImporterConfig.from_env({"THINGPRESS_IMPORT_QUEUE_URL": "q"})
    with pytest.raises(ValueError, match="THINGPRESS_IMPORT_THREADS"):
        ImporterConfig.from_env({**env, "THINGPRESS_IMPORT_THREADS": "0"})


def test_config_from_env_reads_the_rate_limits() -> None:
    env = {"THINGPRESS_IMPORT_QUEUE_URL": "q", "THINGPRESS_JOBS_TABLE": "t"}
    assert ImporterConfig.from_env(env).rates == ImporterConfig("q", "t").rates == rates_from_env({})
    rates = ImporterConfig.from_env(
        {**env, "THINGPRESS_IOT_TPS": '{"CreateThing": 40}', "THINGPRESS_MAX_CONCURRENCY": "4"}
    ).rates
    assert rates["CreateThing"] == 10.0
    with pytest.raises(ValueError, match="THINGPRESS_IOT_TPS"):
        ImporterConfig.from_env({**env, "THINGPRESS_IOT_TPS": "[1]"})
    with pytest.raises(ValueError, match="THINGPRESS_MAX_CONCURRENCY"):
        ImporterConfig.from_env({**env, "THINGPRESS_MAX_CONCURRENCY": "0"})


# ------------------------------------------------------------------------------------------ records


def test_mixed_batch_requeues_only_the_retryable_entries_then_completes_once(
    world: World, certs: list[Issued]
) -> None:
    entries = [entry(cert, i) for i, cert in enumerate(certs[:4])]
    job_id = world.start_job(total=4)
    world.iot.throttled = {entries[1].certificate_pem}
    world.aws.iot.register_certificate_without_ca(certificatePem=entries[2].certificate_pem, status="ACTIVE")
    world.aws.iot.update_certificate(certificateId=entries[2].certificate_id, newStatus="REVOKED")

    first = world.run(message(job_id, "000000", entries))

    assert (first.imported, first.failed, first.requeued, first.spilled) == (2, 1, 1, 0)
    assert first.recorded
    assert not first.completed
    assert (first.requeue_chunk, first.requeue_attempt) == ("000000.r1", 1)
    assert [(m.chunk, m.attempt, m.entries, m.settings) for m, _ in world.sqs.messages()] == [
        ("000000.r1", 1, (entries[1],), SETTINGS)
    ]
    delay = world.sqs.messages()[0][1]
    assert delay == first.delay_seconds
    assert 1 <= delay <= 2
    job = world.jobs.get_job(job_id)
    assert job is not None
    assert (job.succeeded, job.failed, job.settled, job.status) == (2, 1, 3, JobStatus.IMPORTING)
    assert world.metrics == [
        ("CertificatesImported", 2, None),
        ("CertificatesFailed", 1, {"ErrorClass": "conflict"}),
    ]
    assert things(world.aws) == {"dev-0", "dev-3"}

    # The re-enqueued message settles the last entry and completes the job, exactly once.
    world.iot.throttled = set()
    child = world.sqs.messages()[0][0]
    second = world.run(child)
    assert (second.imported, second.failed, second.requeued, second.completed) == (1, 0, 0, True)
    assert world.completions == ["ManifestsCompleted"]
    job = world.jobs.get_job(job_id)
    assert job is not None
    assert (job.status, job.succeeded, job.failed, job.settled) == (JobStatus.COMPLETED_WITH_ERRORS, 3, 1, 4)
    report = json.loads(world.aws.s3.get_object(Bucket=BUCKET, Key=job.report_key)["Body"].read())
    assert [r["locator"] for r in report["imported_entries"]] == ["row 1", "row 2", "row 4"]
    assert [f["locator"] for f in report["failures"]] == ["row 3"]
    assert "is REVOKED in AWS IoT" in report["failures"][0]["reason"]

    # A duplicate delivery of the re-enqueued message changes nothing.
    again = world.run(child)
    assert (again.recorded, again.imported, again.requeued, again.completed) == (False, 0, 0, False)
    assert world.completions == ["ManifestsCompleted"]
    job = world.jobs.get_job(job_id)
    assert job is not None
    assert (job.succeeded, job.failed, job.settled) == (3, 1, 4)
    assert len(world.sqs.sent) == 1


def test_calls_done_comes_after_the_last_iot_call_and_before_the_outcome_is_recorded(
    world: World, certs: list[Issued]
) -> None:
    entries = [entry(cert, i) for i, cert in enumerate(certs[:3])]
    job_id = world.start_job(total=3)
    seen: list[tuple[int, int]] = []

    def calls_done() -> None:
        job = world.jobs.get_job(job_id)
        assert job is not None
        seen.append((world.services.limiter.calls, job.settled))  # type: ignore[attr-defined]

    world.services = replace(world.services, calls_done=calls_done)
    result = world.run(message(job_id, "000000", entries))
    assert result.imported == 3
    assert seen == [(world.services.limiter.calls, 0)]  # type: ignore[attr-defined]
    assert seen[0][0] >= 3 * 5  # every IoT call of the three entries came first


def test_duplicate_delivery_counts_nothing_twice(world: World, certs: list[Issued]) -> None:
    entries = [entry(cert, i) for i, cert in enumerate(certs[:3])]
    job_id = world.start_job(total=6)
    body = message(job_id, "000001", entries)

    first = world.run(body)
    calls_after_first = world.services.limiter.calls  # type: ignore[attr-defined]
    second = world.run(body)

    assert (first.recorded, first.imported) == (True, 3)
    assert (second.recorded, second.imported, second.requeued) == (False, 0, 0)
    job = world.jobs.get_job(job_id)
    assert job is not None
    assert (job.succeeded, job.settled) == (3, 3)
    assert world.metrics == [("CertificatesImported", 3, None)]
    assert world.sqs.sent == []
    # The second run re-registered idempotently: register -> DescribeCertificate, ListPrincipalThings and
    # ListAttachedPolicies on the existing-certificate path, then the 3 + P + G - 1 other writes.
    assert world.services.limiter.calls - calls_after_first == 3 * (4 + 1 + 1 + 2)  # type: ignore[attr-defined]


def test_exhausted_entries_fail_permanently_with_the_last_error(world: World, certs: list[Issued]) -> None:
    entries = [entry(cert, i) for i, cert in enumerate(certs[:2])]
    job_id = world.start_job(total=2)
    world.iot.throttled = {entries[1].certificate_pem}

    result = world.run(message(job_id, "000000.r1.r2.r3.r4.r5.r6.r7", entries, attempt=7))

    assert (result.imported, result.failed, result.requeued, result.completed) == (1, 1, 0, True)
    assert world.sqs.sent == []
    assert world.metrics == [
        ("CertificatesImported", 1, None),
        ("CertificatesFailed", 1, {"ErrorClass": "exhausted"}),
    ]
    job = world.jobs.get_job(job_id)
    assert job is not None
    report = json.loads(world.aws.s3.get_object(Bucket=BUCKET, Key=job.report_key)["Body"].read())
    assert report["failures"] == [
        {
            "locator": "row 2",
            "thing_name": None,
            "certificate_id": entries[1].certificate_id,
            "reason": "row 2: RegisterCertificateWithoutCA for certificate "
            f"{entries[1].certificate_id} failed (ThrottlingException: Rate exceeded);"
            " gave up after 8 attempts.",
            "error_class": "exhausted",
        }
    ]


def test_deadline_spills_unstarted_entries_without_spending_an_attempt(
    world: World, certs: list[Issued]
) -> None:
    entries = [entry(cert, i) for i, cert in enumerate(certs[:5])]
    job_id = world.start_job(total=5)
    checks = iter([False, False])
    config = ImporterConfig(import_queue_url=world.aws.queue_url, jobs_table=TABLE, threads=1)

    result = world.run(message(job_id, "000003", entries, attempt=2), lambda: next(checks, True), config)

    assert (result.imported, result.requeued, result.spilled) == (2, 3, 3)
    assert (result.requeue_chunk, result.requeue_attempt, result.delay_seconds) == ("000003.r1", 2, 0)
    [(child, delay)] = world.sqs.messages()
    assert (child.chunk, child.attempt, child.entries, delay) == ("000003.r1", 2, tuple(entries[2:]), 0)
    assert things(world.aws) == {"dev-0", "dev-1"}


def test_spilled_and_retryable_entries_travel_in_one_message(world: World, certs: list[Issued]) -> None:
    entries = [entry(cert, i) for i, cert in enumerate(certs[:4])]
    job_id = world.start_job(total=4)
    world.iot.throttled = {entries[0].certificate_pem}
    checks = iter([False, False])
    config = ImporterConfig(import_queue_url=world.aws.queue_url, jobs_table=TABLE, threads=1)

    result = world.run(message(job_id, "000000", entries), lambda: next(checks, True), config)

    assert (result.imported, result.requeued, result.spilled, result.requeue_attempt) == (1, 3, 2, 1)
    [(child, delay)] = world.sqs.messages()
    assert child.entries == (entries[0], entries[2], entries[3])
    assert delay >= 1


def test_send_failure_fails_the_record_and_the_redelivery_requeues_the_same_child(
    world: World, certs: list[Issued]
) -> None:
    entries = [entry(cert, i) for i, cert in enumerate(certs[:3])]
    job_id = world.start_job(total=3)
    world.iot.throttled = {entries[0].certificate_pem}
    world.sqs.fail_next = 1
    body = message(job_id, "000000", entries)

    with pytest.raises(TransientError, match="SendMessageBatch"):
        world.run(body)
    job = world.jobs.get_job(job_id)
    assert job is not None
    assert (job.succeeded, job.settled) == (2, 2)

    # Redelivered: this time nothing is throttled, yet the chunk's recorded outcome decides what is
    # re-enqueued, so the child is exactly what the first run would have sent.
    world.iot.throttled = set()
    again = world.run(body)
    assert (again.recorded, again.requeued, again.requeue_chunk) == (False, 1, "000000.r1")
    [(child, _)] = world.sqs.messages()
    assert (child.chunk, child.entries) == ("000000.r1", (entries[0],))
    job = world.jobs.get_job(job_id)
    assert job is not None
    assert (job.succeeded, job.settled) == (2, 2)

    final = world.run(child)
    assert final.completed
    assert world.completions == ["ManifestsCompleted"]


def test_refused_send_fails_the_record(world: World, certs: list[Issued]) -> None:
    entries = [entry(certs[0], 0)]
    job_id = world.start_job(total=1)
    world.iot.throttled = {entries[0].certificate_pem}
    world.sqs.refuse_next = 1

    with pytest.raises(RequeueError, match=r"000000\.r1"):
        world.run(message(job_id, "000000", entries))


def test_open_circuit_requeues_everything_with_a_delay_and_makes_no_iot_call(
    world: World, certs: list[Issued]
) -> None:
    entries = [entry(cert, i) for i, cert in enumerate(certs[:3])]
    job_id = world.start_job(total=3)
    registry = CircuitRegistry()
    registry.configure("iot:RegisterCertificateWithoutCA", threshold=1, timeout=120)
    registry.record_failure("iot:RegisterCertificateWithoutCA")
    world.services = dataclasses.replace(world.services, registry=registry)

    result = world.run(message(job_id, "000000", entries))

    assert (result.imported, result.failed, result.requeued, result.iot_calls) == (0, 0, 3, 0)
    assert result.delay_seconds >= 120
    [(child, delay)] = world.sqs.messages()
    assert (child.attempt, child.entries, delay) == (1, tuple(entries), result.delay_seconds)
    assert things(world.aws) == set()


def test_unexpected_error_is_retried_not_dropped(world: World, certs: list[Issued]) -> None:
    entries = [entry(cert, i) for i, cert in enumerate(certs[:2])]
    job_id = world.start_job(total=2)
    world.iot.broken = {entries[1].certificate_pem}

    result = world.run(message(job_id, "000000", entries))

    assert (result.imported, result.requeued) == (1, 1)
    assert world.sqs.messages()[0][0].entries == (entries[1],)


def test_unusable_bodies_are_refused(world: World) -> None:
    continuation = ContinuationMessage("job", BUCKET, "k", None, "etag", Checkpoint(0, 0))
    for body in (
        "not json",
        json.dumps({"schema": "thingpress.import/1"}),
        encode_continuation_message(continuation),
    ):
        with pytest.raises(UnusableMessageError):
            handle_import_body(body, world.services, world.config, arns=ARNS, out_of_time=NEVER)


def test_unknown_job_is_refused_before_any_iot_call(world: World, certs: list[Issued]) -> None:
    result = world.run(message("0" * 32, "000000", [entry(certs[0], 0)]), signed=False)

    assert result.refused == "unknown_job"
    assert (result.iot_calls, result.recorded, result.requeued) == (0, False, 0)
    assert world.services.limiter.calls == 0  # type: ignore[attr-defined]
    assert world.aws.iot.list_certificates()["certificates"] == []
    assert world.metrics == [("ImportMessagesRefused", 1, {"Reason": "unknown_job"})]
    assert world.sqs.sent == []


@pytest.mark.parametrize("forgery", ["unsigned", "wrong secret", "entries changed", "settings changed"])
def test_a_message_the_job_did_not_sign_is_refused_before_any_iot_call(
    world: World, certs: list[Issued], forgery: str
) -> None:
    job_id = world.start_job(total=1)
    genuine = world.sign(message(job_id, "000000", [entry(certs[0], 0)]))
    forged = {
        "unsigned": dataclasses.replace(genuine, mac=""),
        "wrong secret": sign_import_message(genuine, "not-the-job-secret"),
        "entries changed": dataclasses.replace(genuine, entries=(entry(certs[1], 1),)),
        "settings changed": dataclasses.replace(genuine, settings=MessageSettings(policies=("admin",))),
    }[forgery]

    result = world.run(forged, signed=False)

    assert (result.refused, result.iot_calls) == ("bad_mac", 0)
    assert world.services.limiter.calls == 0  # type: ignore[attr-defined]
    assert world.aws.iot.list_certificates()["certificates"] == []
    assert world.metrics == [("ImportMessagesRefused", 1, {"Reason": "bad_mac"})]
    job = world.jobs.get_job(job_id)
    assert job is not None
    assert (job.status, job.settled) == (JobStatus.IMPORTING, 0)
    # The genuine message is still acted on.
    assert world.run(genuine, signed=False).imported == 1


def test_a_message_of_a_job_that_is_not_importing_is_refused_before_any_iot_call(
    world: World, certs: list[Issued]
) -> None:
    job_id = world.start_job(total=1)
    genuine = world.sign(message(job_id, "000000", [entry(certs[0], 0)]))
    assert world.jobs.fail_job(job_id, "The operator stopped the job.") is not None

    result = world.run(genuine, signed=False)

    assert (result.refused, result.iot_calls) == ("not_importing", 0)
    assert world.aws.iot.list_certificates()["certificates"] == []
    assert world.metrics == [("ImportMessagesRefused", 1, {"Reason": "not_importing"})]


def test_a_requeued_child_is_signed_and_accepted(world: World, certs: list[Issued]) -> None:
    entries = [entry(cert, i) for i, cert in enumerate(certs[:2])]
    job_id = world.start_job(total=2)
    world.iot.throttled = {entries[1].certificate_pem}
    world.run(message(job_id, "000000", entries))
    ((child, _delay),) = world.sqs.messages()
    world.iot.throttled = set()

    result = world.run(child, signed=False)

    assert child.mac and result.refused is None
    assert (result.imported, result.completed) == (1, True)


# ------------------------------------------------------------------------------------------ handler


@pytest.fixture
def handler_env(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("THINGPRESS_IMPORT_QUEUE_URL", aws.queue_url)
    monkeypatch.setenv("THINGPRESS_JOBS_TABLE", TABLE)
    monkeypatch.setenv("THINGPRESS_BUCKET", BUCKET)
    monkeypatch.setenv(
        "THINGPRESS_IOT_TPS", json.dumps({"RegisterCertificateWithoutCA": 1000, "AttachPolicy": 1000})
    )
    monkeypatch.setattr(app, "_runtime", None)
    clear_client_cache()
    yield
    clear_client_cache()


def handler_world(aws: Aws) -> World:
    jobs = JobStore(TABLE, dynamodb=aws.ddb, s3=aws.s3)
    services = Services(aws.iot, aws.sqs, jobs, CountingLimiter(), random.Random(1), lambda *a: None)
    config = ImporterConfig(aws.queue_url, TABLE)
    return World(aws, FlakyIot(aws.iot), RecordingSqs(aws.sqs), jobs, services, config)


def test_handler_reports_only_the_unusable_record(aws: Aws, handler_env: None, certs: list[Issued]) -> None:
    world = handler_world(aws)
    job_id = world.start_job(total=2)
    good = encode_import_message(
        world.sign(message(job_id, "000000", [entry(certs[0], 0), entry(certs[1], 1)]))
    )
    event = {"Records": [sqs_record("m-good", good), sqs_record("m-bad", "{not json")]}

    response = app.lambda_handler(event, FakeLambdaContext("BulkImporterFunction", timeout_seconds=300))

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-bad"}]}
    job = world.jobs.get_job(job_id)
    assert job is not None
    assert (job.status, job.succeeded) == (JobStatus.COMPLETED, 2)
    assert things(aws) == {"dev-0", "dev-1"}


def test_handler_fails_the_record_whose_requeue_cannot_be_sent(
    aws: Aws, handler_env: None, monkeypatch: pytest.MonkeyPatch, certs: list[Issued]
) -> None:
    world = handler_world(aws)
    job_id = world.start_job(total=2)
    entries = [entry(certs[0], 0), entry(certs[1], 1)]
    aws.iot.register_certificate_without_ca(certificatePem=entries[0].certificate_pem, status="ACTIVE")
    aws.iot.update_certificate(certificateId=entries[0].certificate_id, newStatus="REVOKED")
    registry = CircuitRegistry()
    registry.configure("iot:CreateThing", threshold=1, timeout=600)
    registry.record_failure("iot:CreateThing")
    monkeypatch.setenv("THINGPRESS_IMPORT_QUEUE_URL", aws.queue_url + "-missing")
    body = encode_import_message(world.sign(message(job_id, "000000", entries)))
    event = {"Records": [sqs_record("m-1", body)]}

    with shared_circuit_registry(registry):
        response = app.lambda_handler(event, FakeLambdaContext("BulkImporterFunction", timeout_seconds=300))

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    job = world.jobs.get_job(job_id)
    assert job is not None
    assert (job.failed, job.settled) == (1, 1)  # the revoked certificate, recorded before the send
    assert aws.sqs.receive_message(QueueUrl=aws.queue_url).get("Messages") is None


# ------------------------------------------------------------------------------------------ ledger


def test_the_ledger_records_what_each_entry_made(world: World, certs: list[Issued]) -> None:
    job_id = world.start_job(2)
    entries = [entry(certs[0], 0), entry(certs[1], 1)]

    world.run(message(job_id, "000000", entries))

    ledger = {item.thing_name: item for item in world.jobs.ledger(job_id)}
    assert set(ledger) == {"dev-0", "dev-1"}
    first = ledger["dev-0"]
    assert (first.outcome, first.certificate, first.thing, first.principal) == (
        "imported",
        "registered",
        "created",
        "attached",
    )
    assert (first.policies_attached, first.policies_found) == (("p",), ())
    assert (first.groups_added, first.groups_found) == (("g",), ())
    job = world.jobs.get_job(job_id)
    assert job is not None and job.report_key
    report = json.loads(world.aws.s3.get_object(Bucket=BUCKET, Key=job.report_key)["Body"].read())
    assert report["imported_entries"][0]["ledger"] == first.to_dict()
    assert "l" not in report["imported_entries"][0]


def test_a_retried_attempt_keeps_what_the_first_one_made(world: World, certs: list[Issued]) -> None:
    job_id = world.start_job(1)
    world.iot.throttled_things.add("dev-2")

    first = world.run(message(job_id, "000000", [entry(certs[2], 2)]))
    assert first.requeued == 1 and first.requeue_chunk is not None
    world.iot.throttled_things.clear()
    child = message(job_id, first.requeue_chunk, [entry(certs[2], 2)], attempt=1)
    world.run(child)

    (only,) = list(world.jobs.ledger(job_id))
    # The second attempt found the certificate the first one registered: the job still made it.
    assert (only.outcome, only.certificate, only.thing, only.principal) == (
        "imported",
        "registered",
        "created",
        "attached",
    )


def test_a_second_import_of_the_same_certificates_finds_everything(world: World, certs: list[Issued]) -> None:
    job_id = world.start_job(1)
    world.run(message(job_id, "000000", [entry(certs[3], 3)]))
    created, again = world.jobs.create_job(BUCKET, "espressif/m.csv", "v2", settings=SETTINGS.to_dict())
    assert created
    assert world.jobs.claim_parse(again.job_id, "provider", datetime.now(UTC) + timedelta(hours=1))
    assert world.jobs.mark_parsed(again.job_id, "provider", 1, {"entries_done": 1})

    world.run(message(again.job_id, "000000", [entry(certs[3], 3)]))

    (only,) = list(world.jobs.ledger(again.job_id))
    assert (only.certificate, only.thing, only.principal) == ("found", "found", "found")
    assert (only.policies_attached, only.policies_found) == ((), ("p",))
    assert (only.groups_added, only.groups_found) == ((), ("g",))


def test_an_adopted_thing_tells_new_groups_from_its_own(world: World, certs: list[Issued]) -> None:
    world.aws.iot.create_thing(thingName="dev-4")
    world.aws.iot.create_thing_group(thingGroupName="own")
    world.aws.iot.add_thing_to_thing_group(thingGroupName="own", thingName="dev-4")
    settings = MessageSettings(policies=("p",), thing_groups=("own", "g"))
    job_id = world.start_job(1)
    config = dataclasses.replace(world.config, adopt_existing_things=True)
    fidelity = MotoFidelity()  # CreateThing answers ResourceAlreadyExists for the existing thing, as AWS
    fidelity.apply()
    try:
        world.run(
            dataclasses.replace(message(job_id, "000000", [entry(certs[4], 4)]), settings=settings),
            config=config,
        )
    finally:
        fidelity.restore()

    (only,) = list(world.jobs.ledger(job_id))
    assert (only.certificate, only.thing, only.principal) == ("registered", "found", "attached")
    assert (only.groups_added, only.groups_found) == (("g",), ("own",))
    assert only.thing_type is None
