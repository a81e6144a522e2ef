"""Certificates through emulated AWS IoT quotas and injected faults, losing none.

One local stack runs the real ManifestProvider and BulkImporter on generated certificates in two
manifests, with the IoT quotas raised tenfold (enforced by the quota emulator; the importer's
``THINGPRESS_IOT_TPS`` is the same table) and, all at once and seeded:

* 5xx answers and dropped connections (before and after the request was served) at p≈0.02 on IoT,
  SQS, S3 and DynamoDB;
* a RegisterCertificateWithoutCA outage long enough to open its circuit breaker;
* an importer crash after a CreateThing well into the run, duplicate SQS deliveries, every S3 event
  sent twice and a visibility timeout expiring mid-batch.

The scenario's size is a parameter (``Size``): ``THINGPRESS_RELIABILITY_SIZE=full`` runs 2,000
certificates in 50-certificate messages (a few minutes); the default, ``ci``, runs a tenth of the
certificates in 5-certificate messages, so every fault still meets the same number of messages,
batches and send calls, and the outage and the crash fall at the same point of the run.

The assertions read the real end state back: IoT's certificates, things, principals, policy
targets, group members and thing types; the jobs and their reports; the dead-letter queues; the
circuit-breaker metrics the functions printed (EMF); the quota emulator's counters.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layer_utils.jobs import JobStore, latest_report_key
from thingpress.certfactory import Issued, make_ca, make_device_certs
from thingpress.local import LocalStack
from thingpress.local.faults import (
    CrashAfter,
    EmulatorFaults,
    FaultInjector,
    FaultPlan,
    FaultyEmulator,
    Outage,
    SimulatedCrash,
)
from thingpress.local.layers import MotoLock, mark_harness_client
from thingpress.local.metrics_capture import MetricsCapture
from thingpress.local.quota import QuotaEmulator, scaled_quotas

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
SEED = 6
QUOTAS = scaled_quotas(10)
REGISTER = "RegisterCertificateWithoutCA"
CIRCUIT = f"iot:{REGISTER}"
POLICIES = ("rel-policy-a", "rel-policy-b")
GROUPS = ("rel-group-a", "rel-group-b")
THING_TYPE = "rel-type"


@dataclass(frozen=True)
class Size:
    """How big the scenario is: certificates per manifest, per import message, and where faults fall."""

    first_count: int
    second_count: int
    certs_per_message: int
    outage_after_calls: int  # the RegisterCertificateWithoutCA call that starts the outage
    crash_after: int  # the CreateThing after which the importer crashes


SIZES = {
    "full": Size(1200, 800, certs_per_message=50, outage_after_calls=700, crash_after=150),
    "ci": Size(120, 80, certs_per_message=5, outage_after_calls=70, crash_after=15),
}
SIZE = SIZES[os.environ.get("THINGPRESS_RELIABILITY_SIZE", "ci")]
FIRST_COUNT, SECOND_COUNT = SIZE.first_count, SIZE.second_count
PARAMETERS = {
    "IotApiTps": json.dumps(QUOTAS),
    "CertsPerMessage": str(SIZE.certs_per_message),
    "ImportBatchSize": "5",  # batches of records, so that the crash and the redeliveries fall mid-batch
    "PolicyNames": POLICIES[0],
    "ThingGroupNames": GROUPS[0],
    "ThingTypeName": THING_TYPE,
    # The second manifest's metadata adds the other policies and groups, as the operator allows.
    "UploaderAllowedPolicies": ",".join(POLICIES[1:]),
    "UploaderAllowedThingGroups": ",".join(GROUPS[1:]),
    "CircuitBreakerConfig": json.dumps(
        {
            "default": {"threshold": 5, "timeout": 60, "success_threshold": 1},
            CIRCUIT: {"threshold": 5, "timeout": 1, "success_threshold": 1},
        }
    ),
}
FAULTS = FaultPlan(
    error_rate=0.01,
    drop_rate=0.005,
    drop_after_rate=0.005,
    outages=(Outage(REGISTER, duration=6.0, after_calls=SIZE.outage_after_calls),),
    # The functions call S3 and SQS a few times only (a read per manifest, a send per ten messages):
    # some of those calls fail for sure.
    scheduled={
        "s3:GetObject": frozenset({1}),
        "s3:PutObject": frozenset({2}),
        "sqs:SendMessageBatch": frozenset({2, 5}),
    },
)
EMULATOR_FAULTS = EmulatorFaults(
    duplicate_batches=frozenset({4, 7}),
    duplicate_s3_event_rate=1.0,
    visibility_expiries=1,
    visibility_after=3,
    crash=CrashAfter(after=SIZE.crash_after),
)


@dataclass(frozen=True)
class Manifest:
    key: str
    certificates: tuple[Issued, ...]
    policies: tuple[str, ...]
    groups: tuple[str, ...]

    @property
    def names(self) -> set[str]:
        return {
            str(cert.certificate.subject.rfc4514_string()).removeprefix("CN=") for cert in self.certificates
        }

    @property
    def fingerprints(self) -> set[str]:
        return {hashlib.sha256(cert.der()).hexdigest() for cert in self.certificates}


@dataclass
class Run:
    stack: LocalStack
    manifests: tuple[Manifest, ...]
    stats: Any
    emulator: FaultyEmulator
    injector: FaultInjector
    quota: QuotaEmulator
    metrics: MetricsCapture

    def client(self, service: str) -> Any:
        return mark_harness_client(self.stack.client(service))


def b64_lines(certs: tuple[Issued, ...]) -> bytes:
    return b"".join(base64.b64encode(cert.pem().encode()) + b"\n" for cert in certs)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    ca = make_ca("Reliability Test CA")
    first = Manifest(
        "incoming/reliability-first.txt",
        tuple(make_device_certs(FIRST_COUNT, ca, cn_format="rel-a-{i:05d}")),
        POLICIES[:1],
        GROUPS[:1],
    )
    second = Manifest(
        "generated/reliability-second.pem",
        tuple(make_device_certs(SECOND_COUNT, ca, cn_format="rel-b-{i:05d}")),
        POLICIES,
        GROUPS,
    )
    with LocalStack(TEMPLATE, parameters=PARAMETERS, stack_name="reliability") as stack, MotoLock():
        iot = mark_harness_client(stack.client("iot"))
        for policy in POLICIES:
            iot.create_policy(
                policyName=policy,
                policyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
                    }
                ),
            )
        for group in GROUPS:
            iot.create_thing_group(thingGroupName=group)
        iot.create_thing_type(thingTypeName=THING_TYPE)
        s3 = mark_harness_client(stack.client("s3"))
        s3.put_object(Bucket=stack.bucket, Key=first.key, Body=b64_lines(first.certificates))
        s3.put_object(
            Bucket=stack.bucket,
            Key=second.key,
            Body="".join(cert.pem() for cert in second.certificates).encode(),
            Metadata={"thingpress-policies": ",".join(POLICIES), "thingpress-thing-groups": ",".join(GROUPS)},
        )
        emulator = FaultyEmulator(stack, EMULATOR_FAULTS, seed=SEED, max_concurrency=None)
        with (
            MetricsCapture() as metrics,
            QuotaEmulator(QUOTAS) as quota,
            FaultInjector(FAULTS, seed=SEED) as injector,
        ):
            stats = emulator.run_until_idle(max_seconds=300)
        yield Run(stack, (first, second), stats, emulator, injector, quota, metrics)


def all_certificates(run: Run) -> list[dict[str, Any]]:
    paginator = run.client("iot").get_paginator("list_certificates")
    return [
        cert
        for page in paginator.paginate(PaginationConfig={"PageSize": 250})
        for cert in page["certificates"]
    ]


def test_the_pipeline_drained_and_only_the_injected_crash_failed_an_invocation(run: Run) -> None:
    assert run.stats.idle
    errors = [invocation.error for invocation in run.emulator.invocations if invocation.error is not None]
    assert errors
    assert all(isinstance(error, SimulatedCrash) for error in errors), errors


def test_every_fault_was_actually_injected(run: Run) -> None:
    kinds = {kind for (_, kind) in run.injector.injected}
    assert {"500", "503", "drop", "drop_after", "outage"} <= kinds
    services = {name.split(":", 1)[0] for (name, _) in run.injector.injected}
    assert {"iot", "sqs", "s3", "dynamodb"} <= services
    assert run.emulator.crashes_fired == 1
    assert run.emulator.visibility_redeliveries == 1
    assert run.emulator.duplicate_s3_events == 2
    assert sum(invocation.delivery == 2 for invocation in run.emulator.invocations) == 2
    (outage,) = run.injector.outages()
    assert outage.started is not None
    assert outage.ended is not None
    assert outage.rejected > 0


def test_every_certificate_registered_exactly_once_and_active(run: Run) -> None:
    certificates = all_certificates(run)
    expected = set().union(*(manifest.fingerprints for manifest in run.manifests))
    assert len(certificates) == FIRST_COUNT + SECOND_COUNT
    assert {cert["certificateId"] for cert in certificates} == expected
    assert {cert["status"] for cert in certificates} == {"ACTIVE"}


def test_each_certificate_is_attached_to_exactly_its_thing(run: Run) -> None:
    iot = run.client("iot")
    arns = {cert["certificateId"]: cert["certificateArn"] for cert in all_certificates(run)}
    expected = {
        str(cert.certificate.subject.rfc4514_string()).removeprefix("CN="): arns[
            hashlib.sha256(cert.der()).hexdigest()
        ]
        for manifest in run.manifests
        for cert in manifest.certificates
    }

    def principals(thing: str) -> list[str]:
        return list(iot.list_thing_principals(thingName=thing)["principals"])

    with ThreadPoolExecutor(4) as pool:
        found = dict(zip(expected, pool.map(principals, expected), strict=True))
    assert {thing: found[thing] for thing in expected} == {thing: [arn] for thing, arn in expected.items()}
    sample = next(iter(expected.items()))
    assert iot.list_principal_things(principal=sample[1])["things"] == [sample[0]]


def test_things_have_exactly_the_type_groups_and_policies_of_their_manifest(run: Run) -> None:
    iot = run.client("iot")
    things = {
        thing["thingName"]: thing
        for page in iot.get_paginator("list_things").paginate()
        for thing in page["things"]
    }
    first, second = run.manifests
    assert set(things) == first.names | second.names
    assert {thing.get("thingTypeName") for thing in things.values()} == {THING_TYPE}

    def members(group: str) -> set[str]:
        paginator = iot.get_paginator("list_things_in_thing_group")
        return {name for page in paginator.paginate(thingGroupName=group) for name in page["things"]}

    assert members(GROUPS[0]) == first.names | second.names
    assert members(GROUPS[1]) == second.names
    arns = {cert["certificateId"]: cert["certificateArn"] for cert in all_certificates(run)}

    def targets(policy: str) -> set[str]:
        paginator = iot.get_paginator("list_targets_for_policy")
        return {target for page in paginator.paginate(policyName=policy) for target in page["targets"]}

    assert targets(POLICIES[0]) == {arns[f] for f in first.fingerprints | second.fingerprints}
    assert targets(POLICIES[1]) == {arns[f] for f in second.fingerprints}


def test_jobs_add_up_and_their_reports_list_every_certificate(run: Run) -> None:
    s3 = run.client("s3")
    store = JobStore(run.stack.physical_id("JobsTable"), dynamodb=run.client("dynamodb"), s3=s3)
    jobs = {job.key: job for job in store.list_jobs()}
    assert set(jobs) == {manifest.key for manifest in run.manifests}
    for manifest in run.manifests:
        job = jobs[manifest.key]
        count = len(manifest.certificates)
        assert str(job.status) == "COMPLETED", (job.status, job.reason)
        assert (job.total, job.succeeded, job.failed, job.duplicates) == (count, count, 0, 0)
        assert job.succeeded + job.failed + job.duplicates == job.total
        report = json.loads(
            s3.get_object(Bucket=run.stack.bucket, Key=latest_report_key(manifest.key))["Body"].read()
        )
        assert report["status"] == "COMPLETED"
        assert {entry["thing_name"] for entry in report["imported_entries"]} == manifest.names
        assert {entry["certificate_id"] for entry in report["imported_entries"]} == manifest.fingerprints
        assert len(report["imported_entries"]) == count
        assert report["failures"] == []


def test_dead_letter_queues_are_empty(run: Run) -> None:
    sqs = run.client("sqs")
    for logical_id in ("IntakeDLQ", "ImportDLQ", "IntakeQueue", "ImportQueue"):
        attributes = sqs.get_queue_attributes(
            QueueUrl=run.stack.physical_id(logical_id), AttributeNames=["All"]
        )
        depth = {
            name: attributes["Attributes"][name]
            for name in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
        }
        assert depth == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}, (
            logical_id
        )


def test_the_outage_opened_the_circuit_and_it_closed_after_it(run: Run) -> None:
    transitions = [
        (datum.timestamp, datum.name)
        for datum in run.metrics.data
        if datum.name in {"CircuitOpened", "CircuitClosed"}
        and datum.dimension_map.get("Operation") == CIRCUIT
    ]
    names = [name for _, name in sorted(transitions)]
    assert "CircuitOpened" in names
    assert names[-1] == "CircuitClosed"


def test_the_importer_stays_at_the_quota_and_throttles_cost_nothing(run: Run) -> None:
    counts = run.quota.counts()
    total = FIRST_COUNT + SECOND_COUNT
    assert counts.admitted[REGISTER] >= total
    # The importer paces itself at the quota; a throttle may slip through on jitter, and is retried.
    assert counts.throttled.get(REGISTER, 0) <= total * 0.01
