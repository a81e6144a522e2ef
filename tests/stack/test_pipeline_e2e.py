"""The whole pipeline, end to end on the local stack: S3 upload to things in IoT, read back from moto.

One local stack (moto in server mode, IoT ``use_valid_cert``) serves the module, deployed with two
policies, two thing groups and a thing type as stack parameters; those IoT resources exist before
anything is uploaded. Manifests are put in the intake bucket, moto delivers the S3 events to the
IntakeQueue, and the event-source-mapping emulator runs the real ManifestProvider and BulkImporter
handlers (batch size, partial batch failures, redrive to the DLQs) until every queue is empty.

Phases, each with its own assertions on the final state (IoT, the JobsTable, the reports in S3):

1. one clean synthetic manifest per vendor format and one per format that mixes good and bad entries;
2. every import message of phase 1 delivered again;
3. the same bytes of a manifest put again (a new S3 version, so a new job that re-imports);
4. the S3 event of a version already imported delivered again.

IoT calls are counted per certificate on the client the importer really uses (a botocore event hook
on the layer's cached client) and cross-checked with the server-side counts of the quota emulator.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from layer_utils.jobs import FINAL_STATUSES, Job, JobStatus, JobStore, job_report_key, latest_report_key
from thingpress.generate import Summary, generate, make_microchip_signer
from thingpress.local import EventSourceMappingEmulator, LocalStack, RunStats
from thingpress.local.faults import function_client
from thingpress.local.layers import MotoLock, mark_harness_client
from thingpress.local.quota import QuotaEmulator
from thingpress.localrun import LOCAL_IOT_TPS, ensure_iot_resources

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
PROVIDER = "ManifestProviderFunction"
IMPORTER = "BulkImporterFunction"
POLICIES = ("e2e-policy-a", "e2e-policy-b")
GROUPS = ("e2e-group-a", "e2e-group-b")
THING_TYPE = "e2e-type"
P, G = len(POLICIES), len(GROUPS)
NEW_CERTIFICATE_CALLS = 3 + P + G
REIMPORTED_CERTIFICATE_CALLS = 6 + P + G  # + DescribeCertificate, ListPrincipalThings, ListAttachedPolicies
CERTS_PER_MESSAGE = 4
PARAMETERS = {
    "IotApiTps": json.dumps(LOCAL_IOT_TPS),
    "PolicyNames": ",".join(POLICIES),
    "ThingGroupNames": ",".join(GROUPS),
    "ThingTypeName": THING_TYPE,
    "CertsPerMessage": str(CERTS_PER_MESSAGE),
    "UploaderAllowedNamePrefixes": "mixed-",  # the mixed manifests' metadata asks for MIXED_PREFIX
}
VERIFIER_KEY = "verifiers/microchip/e2e-signer.pem"
MIXED_PREFIX = "mixed-"
VENDORS = ("espressif", "infineon", "microchip", "generated")
CLEAN_COUNT, MIXED_COUNT, BAD_FRACTION = 10, 12, 0.25
KEYS = {
    "espressif": "espressif/e2e.csv",
    "infineon": "infineon/e2e.7z",
    "microchip": "microchip/e2e.json",
    "generated": "generated/e2e.txt",
}
REDROPPED = ("espressif", "infineon")
DLQS = ("IntakeDLQ", "ImportDLQ")
IMPORT_APIS = frozenset(
    {
        "RegisterCertificateWithoutCA",
        "DescribeCertificate",
        "ListPrincipalThings",
        "ListAttachedPolicies",
        "CreateThing",
        "DescribeThing",
        "UpdateThing",
        "AttachThingPrincipal",
        "AttachPolicy",
        "AddThingToThingGroup",
    }
)


def mixed_key(vendor: str) -> str:
    """Return the key of the vendor's manifest with bad entries (a different file name, same prefix)."""
    folder, name = KEYS[vendor].split("/")
    return f"{folder}/mixed-{name}"


# --- counting IoT calls per certificate ----------------------------------------------------------


def certificate_id_of_pem(pem: str) -> str:
    """Return the IoT certificate id of a PEM certificate: the SHA-256 of its DER."""
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()


@dataclass
class CallCounts:
    """IoT calls of the import APIs: per certificate id, per thing name and per API."""

    by_certificate: Counter[str] = field(default_factory=Counter)
    by_thing: Counter[str] = field(default_factory=Counter)
    by_api: Counter[str] = field(default_factory=Counter)

    def for_certificate(self, certificate_id: str, thing_name: str) -> int:
        """Return the calls made for one certificate and its thing."""
        return self.by_certificate[certificate_id] + self.by_thing[thing_name]


class IotCallCounter:
    """A botocore hook counting the import API calls a client makes, keyed by what each call is about.

    Registered on ``before-parameter-build.iot``, it sees every API call once (retries are below it,
    in the endpoint), with the caller's parameters: the certificate PEM, id or ARN, or the thing name.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = CallCounts()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.iot", self._count, unique_id="e2e-call-counter")

    def _count(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        api = model.name
        if api not in IMPORT_APIS:
            return  # the provider's GetPolicy/DescribeThingGroup/DescribeThingType share the client
        if api == "RegisterCertificateWithoutCA":
            key, counter = certificate_id_of_pem(params["certificatePem"]), "by_certificate"
        elif api == "DescribeCertificate":
            key, counter = params["certificateId"], "by_certificate"
        elif api in ("AttachThingPrincipal", "ListPrincipalThings"):
            key, counter = str(params["principal"]).rsplit("/", 1)[1], "by_certificate"
        elif api in ("AttachPolicy", "ListAttachedPolicies"):
            key, counter = str(params["target"]).rsplit("/", 1)[1], "by_certificate"
        else:
            key, counter = params["thingName"], "by_thing"
        with self._lock:
            getattr(self._counts, counter)[key] += 1
            self._counts.by_api[api] += 1

    def take(self) -> CallCounts:
        """Return the counts since the last call and start again from zero."""
        with self._lock:
            counts, self._counts = self._counts, CallCounts()
        return counts


# --- the stack ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """One uploaded manifest: the generator's summary and the thing names it must produce."""

    vendor: str
    key: str
    body: bytes
    summary: Summary
    prefix: str = ""

    @property
    def metadata(self) -> dict[str, str]:
        return {"thingpress-thing-name-prefix": self.prefix} if self.prefix else {}

    @property
    def things(self) -> frozenset[str]:
        return frozenset(self.prefix + name for name in self.summary.thing_names)


@dataclass
class Pipeline:
    """The module's local stack, its harness clients and the observers of the functions' calls."""

    stack: LocalStack
    quota: QuotaEmulator
    counter: IotCallCounter
    intake_bodies: list[str] = field(default_factory=list)
    import_bodies: list[str] = field(default_factory=list)

    def client(self, service: str) -> Any:
        return mark_harness_client(self.stack.client(service))

    @property
    def store(self) -> JobStore:
        return JobStore(
            self.stack.physical_id("JobsTable"), dynamodb=self.client("dynamodb"), s3=self.client("s3")
        )

    def _capture(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        bodies = self.import_bodies if function == IMPORTER else self.intake_bodies
        bodies.extend(record["body"] for record in event["Records"])
        return event

    def run(self) -> Run:
        """Run the functions until every queue is empty; return what ran and what it called."""
        self.quota.reset_counts()
        self.counter.take()
        emulator = EventSourceMappingEmulator(self.stack, max_concurrency=None, before_invoke=self._capture)
        stats = emulator.run_until_idle(max_seconds=300)
        return Run(
            stats=stats,
            errors=[invocation.error for invocation in emulator.invocations if invocation.error is not None],
            largest_batch={
                source.function: max(
                    (i.records for i in emulator.invocations if i.function == source.function), default=0
                )
                for source in emulator.sources
            },
            calls=self.counter.take(),
            server_calls=Counter(
                {op: n for (service, op), n in self.quota.reset_counts().calls.items() if service == "iot"}
            ),
            dead_letters=self.dead_letters(),
        )

    def dead_letters(self) -> dict[str, int]:
        sqs = self.client("sqs")
        depths = {}
        for logical_id in DLQS:
            attributes = sqs.get_queue_attributes(
                QueueUrl=self.stack.physical_id(logical_id),
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            depths[logical_id] = sum(int(value) for value in attributes.values())
        return depths

    def jobs(self) -> list[Job]:
        return self.store.list_jobs()

    def report(self, key: str) -> dict[str, Any]:
        body = self.client("s3").get_object(Bucket=self.stack.bucket, Key=latest_report_key(key))["Body"]
        return dict(json.loads(body.read()))

    def upload(self, manifest: Manifest) -> None:
        self.client("s3").put_object(
            Bucket=self.stack.bucket, Key=manifest.key, Body=manifest.body, Metadata=manifest.metadata
        )


@dataclass(frozen=True)
class Run:
    """What one `Pipeline.run` did: the emulator's statistics and errors, the IoT calls, the DLQs."""

    stats: RunStats
    errors: list[BaseException]
    largest_batch: dict[str, int]
    calls: CallCounts
    server_calls: Counter[str]
    dead_letters: dict[str, int]


@dataclass(frozen=True)
class Registry:
    """The IoT registry as read back from moto: certificates, and per thing its type and principals."""

    certificates: dict[str, str]
    thing_types: dict[str, str | None]
    principals: dict[str, tuple[str, ...]]
    policies: dict[str, frozenset[str]]
    groups: dict[str, frozenset[str]]

    def certificate_of(self, thing: str) -> str:
        (arn,) = self.principals[thing]
        return arn.rsplit("/", 1)[1]


def read_registry(iot: Any) -> Registry:
    """Read every certificate, thing, principal, attached policy and group member back from IoT."""
    certificates = {
        cert["certificateId"]: cert["status"]
        for page in iot.get_paginator("list_certificates").paginate()
        for cert in page["certificates"]
    }
    names = [
        thing["thingName"] for page in iot.get_paginator("list_things").paginate() for thing in page["things"]
    ]

    def describe(name: str) -> tuple[str | None, tuple[str, ...]]:
        thing_type = iot.describe_thing(thingName=name).get("thingTypeName")
        principals = tuple(iot.list_thing_principals(thingName=name)["principals"])
        return thing_type, principals

    def attached(arn: str) -> frozenset[str]:
        paginator = iot.get_paginator("list_attached_policies")
        return frozenset(
            policy["policyName"] for page in paginator.paginate(target=arn) for policy in page["policies"]
        )

    def members(group: str) -> frozenset[str]:
        paginator = iot.get_paginator("list_things_in_thing_group")
        return frozenset(name for page in paginator.paginate(thingGroupName=group) for name in page["things"])

    with ThreadPoolExecutor(4) as pool:
        described = dict(zip(names, pool.map(describe, names), strict=True))
        arns = sorted({arn for _, principals in described.values() for arn in principals})
        policies = dict(zip(arns, pool.map(attached, arns), strict=True))
    return Registry(
        certificates=certificates,
        thing_types={name: thing_type for name, (thing_type, _) in described.items()},
        principals={name: principals for name, (_, principals) in described.items()},
        policies=policies,
        groups={group: members(group) for group in GROUPS},
    )


def build_manifests(workdir: Path, signer: Any) -> dict[str, Manifest]:
    """Generate one clean and one mixed manifest per vendor; the mixed ones get a thing-name prefix."""
    manifests = {}
    for seed, vendor in enumerate(VENDORS, start=1):
        for key, count, bad, prefix, offset in (
            (KEYS[vendor], CLEAN_COUNT, 0.0, "", 0),
            (mixed_key(vendor), MIXED_COUNT, BAD_FRACTION, MIXED_PREFIX, 10),
        ):
            path = workdir / key.replace("/", "-")
            summary = generate(vendor, count, path, bad_fraction=bad, signer=signer, seed=seed + offset)
            manifests[key] = Manifest(vendor, key, path.read_bytes(), summary, prefix)
    return manifests


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    """Start the module's stack with the IoT resources and the Microchip signer in place."""
    with (
        LocalStack(TEMPLATE, parameters=PARAMETERS, stack_name="e2e") as stack,
        MotoLock(),
        QuotaEmulator(enabled=False) as quota,
    ):
        pipeline = Pipeline(stack, quota, IotCallCounter())
        iot = pipeline.client("iot")
        ensure_iot_resources(iot, policies=POLICIES, thing_groups=GROUPS, thing_type=THING_TYPE)
        # The layer caches one IoT client per configuration; the importer's runtime() gets this one.
        pipeline.counter.attach(function_client(stack, IMPORTER, "iot"))
        yield pipeline


@dataclass(frozen=True)
class FirstRun:
    """Phase 1: every manifest uploaded once, and what the pipeline left behind."""

    manifests: dict[str, Manifest]
    run: Run
    registry: Registry
    jobs: dict[str, Job]
    reports: dict[str, dict[str, Any]]
    import_bodies: tuple[str, ...]
    intake_bodies: tuple[str, ...]


@pytest.fixture(scope="module")
def first(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    signer = make_microchip_signer("E2E Manifest Signer")
    pipeline.client("s3").put_object(
        Bucket=pipeline.stack.bucket, Key=VERIFIER_KEY, Body=signer.pem().encode()
    )
    manifests = build_manifests(tmp_path_factory.mktemp("manifests"), signer)
    for manifest in manifests.values():
        pipeline.upload(manifest)
    run = pipeline.run()
    jobs = {job.key: job for job in pipeline.jobs()}
    return FirstRun(
        manifests=manifests,
        run=run,
        registry=read_registry(pipeline.client("iot")),
        jobs=jobs,
        reports={key: pipeline.report(key) for key in manifests if key in jobs},
        import_bodies=tuple(pipeline.import_bodies),
        intake_bodies=tuple(pipeline.intake_bodies),
    )


def assert_clean_run(run: Run) -> None:
    """The run drained every queue without a failed invocation, a redelivery or a dead letter."""
    assert run.stats.idle
    assert run.errors == []
    assert run.stats.failed_records == 0
    assert run.stats.moved_to_dlq == {}
    assert run.dead_letters == dict.fromkeys(DLQS, 0)


# --- phase 1: every vendor format, clean and mixed ------------------------------------------------


def test_pipeline_drains_through_the_event_source_mappings(first: FirstRun, pipeline: Pipeline) -> None:
    assert_clean_run(first.run)
    sources = {source.function: source for source in pipeline.stack.event_sources}
    # ImportBatchSize 1 spreads a manifest's messages over every importer invocation (fleet budget).
    assert {name: source.batch_size for name, source in sources.items()} == {
        PROVIDER: 1,
        IMPORTER: 1,
        "UndoFunction": 1,
    }
    for source in sources.values():
        assert source.report_batch_item_failures
        assert source.max_receive_count == 5
        assert source.dead_letter_queue_url in {
            pipeline.stack.physical_id(dlq) for dlq in (*DLQS, "UndoDeadLetterQueue")
        }
    assert first.run.largest_batch[PROVIDER] == 1
    assert first.run.largest_batch[IMPORTER] == 1
    # Every manifest is split into messages of CertsPerMessage certificates.
    expected_messages = sum(
        -(-len(manifest.summary.thing_names) // CERTS_PER_MESSAGE) for manifest in first.manifests.values()
    )
    assert len(first.import_bodies) == expected_messages
    assert first.run.stats.records[IMPORTER] == expected_messages


def test_every_good_entry_became_a_thing_and_nothing_else_did(first: FirstRun) -> None:
    expected = frozenset().union(*(manifest.things for manifest in first.manifests.values()))
    assert set(first.registry.principals) == expected
    assert len(first.registry.certificates) == len(expected)
    assert set(first.registry.certificates.values()) == {"ACTIVE"}


@pytest.mark.parametrize("vendor", VENDORS)
def test_vendor_manifest_things_are_complete(first: FirstRun, vendor: str) -> None:
    registry = first.registry
    for key in (KEYS[vendor], mixed_key(vendor)):
        manifest = first.manifests[key]
        assert manifest.things, key
        for thing in manifest.things:
            assert registry.thing_types[thing] == THING_TYPE
            assert len(registry.principals[thing]) == 1, thing
            (arn,) = registry.principals[thing]
            assert registry.certificates[registry.certificate_of(thing)] == "ACTIVE"
            assert registry.policies[arn] == frozenset(POLICIES)
            for group in GROUPS:
                assert thing in registry.groups[group]


def test_groups_hold_exactly_the_imported_things(first: FirstRun) -> None:
    expected = frozenset().union(*(manifest.things for manifest in first.manifests.values()))
    assert first.registry.groups == dict.fromkeys(GROUPS, expected)


@pytest.mark.parametrize("vendor", VENDORS)
def test_job_items_count_every_entry(first: FirstRun, vendor: str) -> None:
    for key, status in (
        (KEYS[vendor], JobStatus.COMPLETED),
        (mixed_key(vendor), JobStatus.COMPLETED_WITH_ERRORS),
    ):
        manifest, job = first.manifests[key], first.jobs[key]
        assert job.status == status
        assert job.vendor == vendor
        assert job.total == manifest.summary.count
        assert job.succeeded == len(manifest.summary.thing_names)
        assert job.failed == len(manifest.summary.bad)
        assert job.duplicates == 0
        assert job.settled == job.total
        assert job.report_key == job_report_key(job.job_id)
    assert len(first.jobs) == len(first.manifests)


@pytest.mark.parametrize("vendor", VENDORS)
def test_reports_agree_with_the_registry(first: FirstRun, vendor: str) -> None:
    registry = first.registry
    for key in (KEYS[vendor], mixed_key(vendor)):
        manifest, report, job = first.manifests[key], first.reports[key], first.jobs[key]
        assert report["job_id"] == job.job_id
        assert report["manifest"] == {"bucket": job.bucket, "key": key, "version": job.version}
        assert report["status"] == str(job.status)
        assert report["reason"] is None
        assert (report["total"], report["imported"], report["failed"], report["duplicates"]) == (
            job.total,
            job.succeeded,
            job.failed,
            job.duplicates,
        )
        assert report["duplicate_entries"] == []
        imported = {entry["thing_name"]: entry["certificate_id"] for entry in report["imported_entries"]}
        assert set(imported) == manifest.things
        assert imported == {thing: registry.certificate_of(thing) for thing in manifest.things}


@pytest.mark.parametrize("vendor", VENDORS)
def test_mixed_manifest_reports_every_bad_entry_by_locator(first: FirstRun, vendor: str) -> None:
    key = mixed_key(vendor)
    manifest, report = first.manifests[key], first.reports[key]
    assert manifest.summary.bad, "the generator damaged no entry"
    assert {failure["locator"] for failure in report["failures"]} == set(manifest.summary.bad)
    for failure in report["failures"]:
        assert failure["reason"].startswith(f"{failure['locator']}: "), failure
        assert len(failure["reason"]) > len(failure["locator"]) + 10, failure
    assert len(report["imported_entries"]) + len(report["failures"]) == manifest.summary.count
    # The clean manifests of the same format report nothing.
    assert first.reports[KEYS[vendor]]["failures"] == []


def test_each_new_certificate_costs_exactly_3_plus_p_plus_g_iot_calls(first: FirstRun) -> None:
    calls, registry = first.run.calls, first.registry
    per_certificate = {
        thing: calls.for_certificate(registry.certificate_of(thing), thing) for thing in registry.principals
    }
    assert set(per_certificate.values()) == {NEW_CERTIFICATE_CALLS}, per_certificate
    # Nothing was called for anything else (bad entries never reach IoT).
    assert set(calls.by_certificate) == set(registry.certificates)
    assert set(calls.by_thing) == set(registry.principals)
    assert set(calls.by_api) == {
        "RegisterCertificateWithoutCA",
        "CreateThing",
        "AttachThingPrincipal",
        "AttachPolicy",
        "AddThingToThingGroup",
    }


def test_the_counting_hook_sees_every_iot_call_the_server_served(first: FirstRun) -> None:
    server = {api: count for api, count in first.run.server_calls.items() if api in IMPORT_APIS}
    assert server == dict(first.run.calls.by_api)


# --- phase 2: every import message delivered again -----------------------------------------------


@dataclass(frozen=True)
class Phase:
    """A later phase: the run, and the jobs, reports and registry before and after it."""

    run: Run
    jobs_before: dict[str, Job]
    jobs_after: dict[str, Job]
    reports_before: dict[str, bytes]
    reports_after: dict[str, bytes]
    registry_before: Registry
    registry_after: Registry


def report_bytes(pipeline: Pipeline, keys: Iterable[str]) -> dict[str, bytes]:
    s3 = pipeline.client("s3")
    return {
        key: s3.get_object(Bucket=pipeline.stack.bucket, Key=latest_report_key(key))["Body"].read()
        for key in keys
    }


def run_phase(pipeline: Pipeline, first: FirstRun, act: Callable[[], None]) -> Phase:
    jobs_before = {job.job_id: job for job in pipeline.jobs()}
    reports_before = report_bytes(pipeline, first.manifests)
    registry_before = read_registry(pipeline.client("iot"))
    act()
    run = pipeline.run()
    return Phase(
        run=run,
        jobs_before=jobs_before,
        jobs_after={job.job_id: job for job in pipeline.jobs()},
        reports_before=reports_before,
        reports_after=report_bytes(pipeline, first.manifests),
        registry_before=registry_before,
        registry_after=read_registry(pipeline.client("iot")),
    )


@pytest.fixture(scope="module")
def redelivered(pipeline: Pipeline, first: FirstRun) -> Phase:
    sqs = pipeline.client("sqs")
    queue = pipeline.stack.physical_id("ImportQueue")

    def resend() -> None:
        for body in first.import_bodies:
            sqs.send_message(QueueUrl=queue, MessageBody=body)

    return run_phase(pipeline, first, resend)


def test_redelivered_import_messages_change_nothing(redelivered: Phase, first: FirstRun) -> None:
    assert_clean_run(redelivered.run)
    assert redelivered.run.stats.records[IMPORTER] == len(first.import_bodies)
    assert redelivered.jobs_after == redelivered.jobs_before
    assert redelivered.reports_after == redelivered.reports_before
    assert redelivered.registry_after == redelivered.registry_before


def test_redelivered_import_messages_of_finished_jobs_make_no_iot_call(redelivered: Phase) -> None:
    # Their jobs are COMPLETED: the importer refuses them (not_importing) before any IoT call.
    assert sum(redelivered.run.calls.by_api.values()) == 0
    assert sum(redelivered.run.server_calls.values()) == 0


# --- phase 3: the same bytes dropped again --------------------------------------------------------


@pytest.fixture(scope="module")
def redropped(pipeline: Pipeline, first: FirstRun, redelivered: Phase) -> Phase:
    def drop_again() -> None:
        for vendor in REDROPPED:
            pipeline.upload(first.manifests[KEYS[vendor]])

    return run_phase(pipeline, first, drop_again)


def test_a_second_drop_is_a_new_job_that_imports_idempotently(redropped: Phase, first: FirstRun) -> None:
    assert_clean_run(redropped.run)
    new_jobs = {
        job_id: job for job_id, job in redropped.jobs_after.items() if job_id not in redropped.jobs_before
    }
    assert sorted(job.key for job in new_jobs.values()) == sorted(KEYS[vendor] for vendor in REDROPPED)
    for job in new_jobs.values():
        manifest, old = first.manifests[job.key], first.jobs[job.key]
        assert job.version != old.version
        assert job.status == JobStatus.COMPLETED
        assert (job.total, job.succeeded, job.failed, job.duplicates) == (manifest.summary.count,) * 2 + (
            0,
            0,
        )
        report = json.loads(redropped.reports_after[job.key])
        assert report["job_id"] == job.job_id
        assert {entry["thing_name"] for entry in report["imported_entries"]} == manifest.things
    # The jobs of phase 1 are untouched.
    assert {job_id: redropped.jobs_after[job_id] for job_id in redropped.jobs_before} == redropped.jobs_before


def test_a_second_drop_creates_no_certificate_or_thing(redropped: Phase) -> None:
    before, after = redropped.registry_before, redropped.registry_after
    assert after == before
    assert all(len(principals) == 1 for principals in after.principals.values())


def test_a_second_drop_costs_6_plus_p_plus_g_per_certificate(redropped: Phase, first: FirstRun) -> None:
    registry, calls = redropped.registry_after, redropped.run.calls
    things = frozenset().union(*(first.manifests[KEYS[vendor]].things for vendor in REDROPPED))
    per_certificate = {
        thing: calls.for_certificate(registry.certificate_of(thing), thing) for thing in things
    }
    assert set(per_certificate.values()) == {REIMPORTED_CERTIFICATE_CALLS}, per_certificate
    assert set(calls.by_thing) == things


# --- phase 4: the same S3 event delivered again ---------------------------------------------------


def s3_event_of(bodies: tuple[str, ...], key: str) -> str:
    """Return the S3 notification body that announced ``key`` (ObjectCreated)."""
    for body in bodies:
        records = json.loads(body).get("Records") or []
        if any(record["s3"]["object"]["key"] == key for record in records):
            return body
    raise AssertionError(f"No S3 event for {key} reached the intake queue.")


@pytest.fixture(scope="module")
def duplicate_event(pipeline: Pipeline, first: FirstRun, redropped: Phase) -> Phase:
    sqs = pipeline.client("sqs")
    queue = pipeline.stack.physical_id("IntakeQueue")

    def resend() -> None:
        for vendor in VENDORS:
            sqs.send_message(QueueUrl=queue, MessageBody=s3_event_of(first.intake_bodies, KEYS[vendor]))

    return run_phase(pipeline, first, resend)


def test_a_duplicate_s3_event_creates_no_job_and_sends_no_import_message(duplicate_event: Phase) -> None:
    assert_clean_run(duplicate_event.run)
    assert duplicate_event.run.stats.records == {PROVIDER: len(VENDORS)}
    assert duplicate_event.run.stats.invocations.get(IMPORTER, 0) == 0
    assert duplicate_event.jobs_after == duplicate_event.jobs_before
    assert duplicate_event.reports_after == duplicate_event.reports_before
    assert duplicate_event.registry_after == duplicate_event.registry_before
    assert sum(duplicate_event.run.calls.by_api.values()) == 0


def test_every_job_is_final(pipeline: Pipeline, duplicate_event: Phase) -> None:
    assert {job.status for job in pipeline.jobs()} <= FINAL_STATUSES
    assert pipeline.dead_letters() == dict.fromkeys(DLQS, 0)


def test_import_bodies_are_import_messages_of_the_stack_settings(first: FirstRun) -> None:
    settings = {json.dumps(json.loads(body)["settings"], sort_keys=True) for body in first.import_bodies}
    assert len(settings) == 1
    (decoded,) = (json.loads(text) for text in settings)
    assert decoded["policies"] == list(POLICIES)
    assert decoded["thing_groups"] == list(GROUPS)
    assert decoded["thing_type"] == THING_TYPE
    chunks = [json.loads(body)["chunk"] for body in first.import_bodies]
    assert not any(".r" in chunk for chunk in chunks)
    # The certificate id of every entry is the SHA-256 of its certificate's DER, as IoT computes it.
    for body in first.import_bodies:
        for entry in json.loads(body)["entries"]:
            assert entry["certificate_id"] == certificate_id_of_pem(entry["certificate_pem"])
