import base64
import hashlib
import io
import json
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.serialization import Encoding

from layer_utils import jobs as j
from layer_utils.aws_utils import AwsOperationError
from layer_utils.messages import ImportMessage, decode_message
from manifest_provider import provider as p
from manifest_provider import vendors
from manifest_provider.intake import parse_intake_body
from manifest_provider.overrides import UploaderAllowlist
from manifest_provider.resources import missing_targets
from manifest_provider.settings import ImportSettings
from manifest_provider.stream import ManifestStream
from testing.helpers import create_jobs_table, mock_aws_with_valid_certs, sqs_record
from thingpress import certfactory, generate

BUCKET = "intake-bucket"
TABLE = "JobsTable"
NOW = datetime.now(UTC).replace(microsecond=0)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Budget:
    """Remaining-time function: plenty unless `low` is set."""

    def __init__(self, ms: int = 900_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


class Countdown:
    """Remaining-time function: plenty for the first `high_calls` calls, then nearly nothing."""

    def __init__(self, high_calls: int) -> None:
        self.left = high_calls

    def __call__(self) -> int:
        self.left -= 1
        return 900_000 if self.left >= 0 else 1_000


class Env:
    def __init__(self, aws: dict[str, Any], emitted: list[tuple[str, float, Any]]) -> None:
        self.aws = aws
        self.emitted = emitted
        self.clock = Clock()
        self.sleeps: list[float] = []
        self.environ = {
            "THINGPRESS_POLICIES": "DevicePolicy",
            "THINGPRESS_THING_GROUPS": "Fleet",
            "THINGPRESS_THING_TYPE": "Sensor",
        }
        self.config = p.ProviderConfig(
            jobs_table=TABLE,
            import_queue_url=aws["import_url"],
            intake_queue_url=aws["intake_url"],
            trust_bucket=BUCKET,
            environ=self.environ,
        )
        self.sqs: Any = aws["sqs"]
        self.s3: Any = aws["s3"]
        self.invocations = 0

    @property
    def jobs(self) -> j.JobStore:
        return j.JobStore(
            TABLE,
            dynamodb=self.aws["ddb"],
            s3=self.aws["s3"],
            clock=self.clock,
            emit=lambda name: self.emitted.append((name, 1, None)),
        )

    def services(self) -> p.Services:
        return p.Services(
            s3=self.s3,
            sqs=self.sqs,
            iot=self.aws["iot"],
            jobs=self.jobs,
            clock=self.clock,
            sleep=self.sleeps.append,
            random=lambda: 0.5,
            emit=lambda name, value, dims: self.emitted.append((name, value, dims)),
        )

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        response = self.aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=data, Metadata=metadata or {})
        return s3_event(key, response["ETag"], len(data))

    def run(
        self, body: str, budget: Budget | None = None, *, message_id: str | None = None
    ) -> list[p.RunResult]:
        """Deliver ``body``; by default as the same SQS message every time (the handler's lease owner)."""
        self.invocations += 1
        return p.handle_intake_body(
            body,
            self.services(),
            self.config,
            owner=message_id or "msg-" + hashlib.sha256(body.encode()).hexdigest()[:16],
            remaining_ms=budget or Budget(),
        )

    def run_all(self, body: str, budget: Budget | None = None) -> list[p.RunResult]:
        """Run the event, then every continuation it leads to."""
        results = self.run(body, budget)
        while True:
            continuations = receive_all(self.aws["sqs"], self.aws["intake_url"])
            if not continuations:
                return results
            for message in continuations:
                results.extend(self.run(message, budget))

    def messages(self) -> list[ImportMessage]:
        decoded = [decode_message(body) for body in receive_all(self.aws["sqs"], self.aws["import_url"])]
        assert all(isinstance(m, ImportMessage) for m in decoded)
        return sorted(decoded, key=lambda m: m.chunk)  # type: ignore[union-attr,return-value]

    def job(self, key: str) -> j.Job:
        found = [job for job in self.jobs.list_jobs() if job.key == key]
        assert len(found) == 1
        return found[0]

    def importer(self, messages: list[ImportMessage]) -> j.Job | None:
        """Settle every chunk as imported, as the importer would, then try completion."""
        store = self.jobs
        final = None
        for message in messages:
            records = [
                j.ImportedRecord(e.locator, e.thing_name, e.certificate_id, e.name_source)
                for e in message.entries
            ]
            store.record_outcome(message.job_id, message.chunk, records, [])
            final = store.try_complete(message.job_id) or final
        return final

    def report(self, key: str) -> dict[str, Any]:
        body = self.aws["s3"].get_object(Bucket=BUCKET, Key=f"reports/{key}.json")["Body"].read()
        return json.loads(body)


def s3_event(key: str, etag: str, size: int, *, version_id: str | None = None) -> str:
    obj: dict[str, Any] = {"key": urllib.parse.quote_plus(key), "size": size, "eTag": etag.strip('"')}
    if version_id:
        obj["versionId"] = version_id
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": obj},
    }
    return json.dumps({"Records": [record]})


def receive_all(sqs: Any, url: str) -> list[str]:
    bodies: list[str] = []
    while True:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=3600)
        messages = response.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws_with_valid_certs():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_jobs_table(ddb, TABLE)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name="us-east-1")
        import_url = sqs.create_queue(QueueName="import")["QueueUrl"]
        intake_url = sqs.create_queue(QueueName="intake")["QueueUrl"]
        iot = boto3.client("iot", region_name="us-east-1")
        iot.create_policy(policyName="DevicePolicy", policyDocument='{"Version":"2012-10-17","Statement":[]}')
        iot.create_policy(policyName="OtherPolicy", policyDocument='{"Version":"2012-10-17","Statement":[]}')
        iot.create_thing_group(thingGroupName="Fleet")
        iot.create_thing_type(thingTypeName="Sensor")
        yield {
            "ddb": ddb,
            "s3": s3,
            "sqs": sqs,
            "iot": iot,
            "import_url": import_url,
            "intake_url": intake_url,
        }


@pytest.fixture
def env(aws: dict[str, Any]) -> Env:
    return Env(aws, [])


def metric_total(env: Env, name: str) -> float:
    return sum(value for metric, value, _dims in env.emitted if metric == name)


def generated_manifest(count: int, *, seed: int = 0, bad_fraction: float = 0.0) -> tuple[bytes, Any]:
    buffer = io.BytesIO()
    summary = generate.write_generated(buffer, count, bad_fraction=bad_fraction, seed=seed)
    return buffer.getvalue(), summary


# ------------------------------------------------------------------------------------------ intake


def test_test_event_is_ignored(env: Env) -> None:
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET})
    assert env.run(body) == []
    assert env.jobs.list_jobs() == []


def test_garbage_intake_body_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_intake_body("nope")
    with pytest.raises(ValueError, match="neither an S3 event notification"):
        parse_intake_body('{"hello": 1}')
    with pytest.raises(ValueError, match="import queue"):
        parse_intake_body(
            '{"schema": "thingpress.import/1", "job_id": "j", "chunk": "0", "attempt": 0,'
            ' "settings": {}, "entries": [{"locator": "l", "thing_name": "t", "certificate_id": "c",'
            ' "certificate_pem": "p"}]}'
        )


def test_reports_and_folders_are_ignored() -> None:
    records = [
        {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": o},
        }
        for o in ({"key": "reports/x.json", "eTag": "e"}, {"key": "incoming/", "eTag": "e"})
    ]
    batch = parse_intake_body(json.dumps({"Records": records}))
    assert batch.manifests == ()
    assert len(batch.ignored) == 2


# ------------------------------------------------------------------------------------------ happy paths


def test_generated_synthetic_manifest_fans_out(env: Env) -> None:
    data, summary = generated_manifest(120, bad_fraction=0.1, seed=3)
    env.config = replace(env.config, certs_per_message=50)
    results = env.run(env.put("generated/batch one.txt", data))
    assert [r.outcome for r in results] == ["finished"]
    messages = env.messages()
    assert [m.chunk for m in messages] == ["000000", "000001", "000002"][: len(messages)]
    entries = [e for m in messages for e in m.entries]
    assert [e.thing_name for e in entries] == list(summary.thing_names)
    assert all(e.certificate_pem.startswith("-----BEGIN CERTIFICATE-----\n") for e in entries)
    assert messages[0].settings.policies == ("DevicePolicy",)
    assert messages[0].settings.thing_groups == ("Fleet",)
    assert messages[0].settings.thing_type == "Sensor"
    job = env.job("generated/batch one.txt")
    assert job.status == j.JobStatus.IMPORTING
    assert job.vendor == "generated"
    assert job.total == 120
    assert job.failed == len(summary.bad)
    assert job.settled == len(summary.bad)
    assert metric_total(env, "CertificatesQueued") == len(entries)
    assert metric_total(env, "ManifestsReceived") == 1
    assert metric_total(env, "CertificatesFailed") == len(summary.bad)
    final = env.importer(messages)
    assert final is not None
    assert final.status == j.JobStatus.COMPLETED_WITH_ERRORS
    report = env.report("generated/batch one.txt")
    assert report["imported"] == len(entries)
    assert sorted(f["locator"] for f in report["failures"]) == sorted(summary.bad)


def test_espressif_synthetic_and_url_encoded_key(env: Env) -> None:
    buffer = io.BytesIO()
    summary = generate.write_espressif(buffer, 12, bad_fraction=0.25, seed=5)
    key = "espressif/my manifest (1)+x.csv"
    body = env.put(key, buffer.getvalue())
    assert "my+manifest" in body
    env.run(body)
    entries = [e for m in env.messages() for e in m.entries]
    assert [e.thing_name for e in entries] == list(summary.thing_names)
    assert env.job(key).failed == len(summary.bad)


def test_microchip_synthetic_with_verifier(env: Env) -> None:
    signer = generate.make_microchip_signer()
    env.s3.put_object(Bucket=BUCKET, Key="verifiers/microchip/signer.crt", Body=signer.pem().encode())
    buffer = io.BytesIO()
    summary = generate.write_microchip(buffer, 15, signer=signer, bad_fraction=0.2, seed=2)
    env.run(env.put("microchip/m.json", buffer.getvalue()))
    entries = [e for m in env.messages() for e in m.entries]
    assert [e.thing_name for e in entries] == list(summary.thing_names)
    assert env.job("microchip/m.json").failed == len(summary.bad)


def test_infineon_synthetic(env: Env) -> None:
    buffer = io.BytesIO()
    summary = generate.write_infineon(buffer, 6, bundle_types=("E0E0", "E0E1"), include_keys=False)
    env.run(env.put("infineon/reel.7z", buffer.getvalue(), {"thingpress-bundle-type": "E0E1"}))
    entries = [e for m in env.messages() for e in m.entries]
    assert [e.thing_name for e in entries] == list(summary.bundles["E0E1"].thing_names)


@pytest.mark.parametrize(
    ("path", "queued", "failed", "allow_expired"),
    [
        ("espressif/manifest-espressif.csv", 7, 0, False),
        # The generated sample certificates have expired; THINGPRESS_ALLOW_EXPIRED lets them through
        # (test_expired_certificates_fail checks the default).
        ("generated/certificates_test.txt", 100, 0, True),
        ("infineon/manifest-infineon.7z", 200, 0, False),
        ("microchip/ECC608-TMNGTLSS-B.json", 0, 10, False),
    ],
)
def test_real_manifests(
    env: Env, shared_manifests: Path, path: str, queued: int, failed: int, allow_expired: bool
) -> None:
    key = path
    metadata: dict[str, str] = {}
    for verifier in sorted((shared_manifests / "microchip" / "verifiers").iterdir()):
        env.s3.put_object(
            Bucket=BUCKET, Key=f"verifiers/microchip/{verifier.name}", Body=verifier.read_bytes()
        )
    env.config = replace(env.config, allow_expired=allow_expired)
    env.run(env.put(key, (shared_manifests / path).read_bytes(), metadata))
    entries = [e for m in env.messages() for e in m.entries]
    assert len(entries) == queued
    assert len({e.certificate_id for e in entries}) == queued
    job = env.job(key)
    assert (job.total, job.failed) == (queued + failed, failed)
    if key.startswith("espressif"):
        assert entries[0].thing_name == "4BA2BB8764BD"
        assert entries[0].locator == "row 2"
    if key.startswith("microchip"):
        assert job.status == j.JobStatus.COMPLETED_WITH_ERRORS
        report = env.report(key)
        assert len(report["failures"]) == 10
        assert all("no certificate in manifest entry" in f["reason"] for f in report["failures"])


# ------------------------------------------------------------------------------------------ idempotency


def test_expired_certificates_fail(env: Env) -> None:
    ca = certfactory.make_ca("Old CA")
    old = next(
        certfactory.make_device_certs(
            1, ca, not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1)
        )
    )
    env.run(env.put("generated/old.pem", old.pem().encode()))
    assert env.messages() == []
    job = env.job("generated/old.pem")
    assert job.failed == 1
    assert "Certificate expired on" in env.report("generated/old.pem")["failures"][0]["reason"]
    env.config = replace(env.config, allow_expired=True)
    env.run(env.put("generated/old2.pem", old.pem().encode()))
    assert len(env.messages()) == 1


def test_duplicate_s3_event_does_not_fan_out_twice(env: Env) -> None:
    data, _ = generated_manifest(10)
    body = env.put("generated/dup.txt", data)
    env.run(body)
    first = env.messages()
    assert env.run(body)[0].outcome == "duplicate"
    assert env.messages() == []
    assert len(first) == 1
    assert metric_total(env, "ManifestsReceived") == 1


def test_event_while_another_invocation_parses_is_a_no_op(env: Env) -> None:
    data, _ = generated_manifest(5)
    body = env.put("generated/busy.txt", data)
    ref = parse_intake_body(body).manifests[0]
    _, job = env.jobs.create_job(ref.bucket, ref.key, ref.version)
    assert env.jobs.claim_parse(job.job_id, "someone", NOW + timedelta(minutes=10)) is not None
    assert env.run(body)[0].outcome == "busy"
    assert env.messages() == []


def test_in_manifest_duplicates_and_name_conflicts(env: Env) -> None:
    ca = certfactory.make_ca("Test CA")
    certs = list(certfactory.make_device_certs(3, ca, cn_format="Dev-{i}"))
    clash = next(certfactory.make_device_certs(1, ca, cn_format="Dev-0", start=0))
    lines = [c.pem() for c in (certs[0], certs[1], certs[0], certs[2], clash, certs[0])]
    data = b"".join(base64.b64encode(pem.encode()) + b"\n" for pem in lines)
    env.run(env.put("generated/dups.txt", data))
    entries = [e for m in env.messages() for e in m.entries]
    assert [e.locator for e in entries] == ["line 1", "line 2", "line 4", "line 5"]
    # Dev-0 is the CN of two different certificates: it names neither, their fingerprints do.
    assert [(e.thing_name, e.name_source) for e in entries] == [
        (f"cert-{entries[0].certificate_id}", "fingerprint"),
        ("Dev-1", "cn"),
        ("Dev-2", "cn"),
        (f"cert-{entries[3].certificate_id}", "fingerprint"),
    ]
    job = env.job("generated/dups.txt")
    assert (job.total, job.duplicates, job.failed, job.settled) == (
        6,
        2,
        0,
        2,
    )  # only the duplicates settled yet
    env.importer(env_messages_from(entries, job))
    report = env.report("generated/dups.txt")
    assert report["duplicate_entries"] == [
        {
            "locator": "line 3",
            "thing_name": None,
            "certificate_id": entries[0].certificate_id,
            "reason": "line 3: duplicate of line 1.",
            "error_class": "duplicate",
        },
        {
            "locator": "line 6",
            "thing_name": None,
            "certificate_id": entries[0].certificate_id,
            "reason": "line 6: duplicate of line 1.",
            "error_class": "duplicate",
        },
    ]
    assert report["failures"] == []
    assert [(r["locator"], r["name_source"]) for r in report["imported_entries"]] == [
        ("line 1", "fingerprint"),
        ("line 2", "cn"),
        ("line 4", "cn"),
        ("line 5", "fingerprint"),
    ]
    assert report["status"] == "COMPLETED"
    assert metric_total(env, "DuplicatesSkipped") == 2


def env_messages_from(entries: list[Any], job: j.Job) -> list[ImportMessage]:
    from layer_utils.messages import MessageSettings

    return [ImportMessage(job.job_id, "000000", MessageSettings(), tuple(entries))]


# ------------------------------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        ({"THINGPRESS_POLICIES": "Nope"}, "Policy 'Nope' does not exist."),
        ({"THINGPRESS_THING_GROUPS": "Ghosts"}, "Thing group 'Ghosts' does not exist."),
        ({"THINGPRESS_THING_TYPE": "Unicorn"}, "Thing type 'Unicorn' does not exist."),
        ({"THINGPRESS_THING_GROUPS": ""}, None),
        ({"THINGPRESS_THING_GROUPS": "a,,b"}, "Thing group name cannot be None or empty"),
        ({"THINGPRESS_THING_ATTRIBUTES": "[1]"}, "must be a JSON object"),
    ],
)
def test_missing_resources_and_bad_settings_fail_the_job(
    env: Env, environ: dict[str, str], reason: str | None
) -> None:
    env.environ.update(environ)
    data, _ = generated_manifest(3)
    results = env.run(env.put("generated/x.txt", data))
    job = env.job("generated/x.txt")
    if reason is None:
        assert results[0].outcome == "finished"
        return
    assert results[0].outcome == "failed"
    assert job.status == j.JobStatus.FAILED
    assert reason in (job.reason or "")
    assert env.messages() == []
    report = env.report("generated/x.txt")
    assert report["status"] == "FAILED"
    assert reason in report["reason"]
    assert metric_total(env, "ManifestsFailed") == 1


def test_dynamic_thing_group_fails_before_anything_is_created(env: Env) -> None:
    """moto has no CreateDynamicThingGroup: its DescribeThingGroup answer gets the fields AWS gives one."""
    iot = env.aws["iot"]
    iot.create_thing_group(thingGroupName="Online")

    def as_dynamic(parsed: dict[str, Any], model: Any, **_kwargs: Any) -> None:
        if parsed.get("thingGroupName") == "Online":
            parsed.update(
                indexName="AWS_Things", queryString="connectivity.connected:true", queryVersion="2017-09-30"
            )

    iot.meta.events.register("after-call.iot.DescribeThingGroup", as_dynamic)
    env.environ["THINGPRESS_THING_GROUPS"] = "Fleet,Online"
    data, _ = generated_manifest(3)
    env.run(env.put("generated/x.txt", data))
    job = env.job("generated/x.txt")
    assert job.status == j.JobStatus.FAILED
    reason = "Thing group 'Online' is a dynamic thing group; things cannot be added to it."
    assert job.reason == reason
    assert env.report("generated/x.txt")["reason"] == reason
    assert env.messages() == []
    assert iot.list_certificates()["certificates"] == []
    assert iot.list_things()["things"] == []
    assert iot.list_things_in_thing_group(thingGroupName="Fleet")["things"] == []


def test_more_than_ten_policies_fail_before_any_call(env: Env) -> None:
    calls: list[str] = []
    iot = env.aws["iot"]
    iot.meta.events.register("before-call.iot", lambda model, **_kwargs: calls.append(model.name))
    settings = ImportSettings(policies=tuple(f"P{number}" for number in range(11)))
    assert missing_targets(iot, settings) == [
        "The settings name 11 policies; AWS IoT attaches at most 10 to a certificate."
    ]
    assert calls == []
    assert missing_targets(iot, replace(settings, policies=("DevicePolicy",) * 11)) == []  # one policy


def test_deprecated_thing_type_fails(env: Env) -> None:
    env.aws["iot"].deprecate_thing_type(thingTypeName="Sensor")
    data, _ = generated_manifest(2)
    env.run(env.put("generated/x.txt", data))
    assert "Thing type 'Sensor' is deprecated" in (env.job("generated/x.txt").reason or "")


def test_unknown_format_fails_with_reason(env: Env) -> None:
    env.run(env.put("incoming/blob.bin", b"\x00\x01 definitely not a manifest"))
    job = env.job("incoming/blob.bin")
    assert job.status == j.JobStatus.FAILED
    assert "Unrecognised manifest format" in (job.reason or "")
    assert env.report("incoming/blob.bin")["status"] == "FAILED"


def test_private_key_in_manifest_fails(env: Env) -> None:
    ca = certfactory.make_ca("Test CA")
    device = next(certfactory.make_device_certs(1, ca))
    data = (device.pem() + device.key_pem()).encode()
    env.run(env.put("generated/leak.pem", data))
    job = env.job("generated/leak.pem")
    assert job.status == j.JobStatus.FAILED
    assert "private key" in (job.reason or "")
    assert env.messages() == []


def test_manifest_over_the_size_limit_fails(env: Env) -> None:
    env.config = replace(env.config, limits=replace(env.config.limits, max_manifest_bytes=100))
    data, _ = generated_manifest(2)
    env.run(env.put("generated/big.txt", data))
    assert "more than the limit of 100 bytes" in (env.job("generated/big.txt").reason or "")


def test_metadata_overrides_within_the_operators_allowlists(env: Env) -> None:
    env.aws["iot"].create_thing_group(thingGroupName="Line7")
    env.aws["iot"].create_thing_type(thingTypeName="Gateway")
    env.config = replace(
        env.config,
        uploader_allowlist=UploaderAllowlist(
            policies=frozenset({"OtherPolicy"}),
            thing_groups=frozenset({"Line7"}),
            thing_types=frozenset({"Gateway"}),
            attribute_keys=frozenset({"site"}),
            name_prefixes=frozenset({"acme-"}),
        ),
    )
    data, summary = generated_manifest(4)
    metadata = {
        "thingpress-policies": "OtherPolicy,DevicePolicy",
        "thingpress-thing-groups": "Fleet,Line7",
        "thingpress-thing-type": "Gateway",
        "thingpress-attributes": '{"site": "lab-1"}',
        "thingpress-thing-name-prefix": "acme-",
        "thingpress-vendor": "generated",
    }
    env.run(env.put("incoming/whatever.dat", data, metadata))
    messages = env.messages()
    assert messages[0].settings.policies == ("OtherPolicy", "DevicePolicy")
    assert messages[0].settings.thing_groups == ("Fleet", "Line7")
    assert messages[0].settings.thing_type == "Gateway"
    assert messages[0].settings.attributes == {"site": "lab-1"}
    assert [e.thing_name for e in messages[0].entries] == [f"acme-{n}" for n in summary.thing_names]
    job = env.job("incoming/whatever.dat")
    assert job.settings["thing_name_prefix"] == "acme-"


def test_metadata_overrides_outside_the_allowlists_fail_the_job_before_any_iot_call(env: Env) -> None:
    data, _ = generated_manifest(2)
    metadata = {"thingpress-policies": "OtherPolicy", "thingpress-thing-type": ""}
    env.run(env.put("incoming/escalate.dat", data, metadata))
    job = env.job("incoming/escalate.dat")
    assert job.status == j.JobStatus.FAILED
    assert job.reason == (
        "The upload may not override these settings: S3 metadata 'thingpress-policies' asks for policy "
        "'OtherPolicy', not in UploaderAllowedPolicies; leaves out the stack's own policy 'DevicePolicy'. "
        "S3 metadata 'thingpress-thing-type' clears the stack's own thing type 'Sensor'."
    )
    assert env.messages() == []


def test_bad_metadata_fails_the_job(env: Env) -> None:
    data, _ = generated_manifest(2)
    env.run(env.put("generated/m.txt", data, {"thingpress-policy": "x"}))
    assert "'thingpress-policy' is not a Thingpress setting" in (env.job("generated/m.txt").reason or "")


def test_fingerprint_name_source(env: Env) -> None:
    data, _ = generated_manifest(2)
    env.run(env.put("generated/f.txt", data, {"thingpress-thing-name-source": "fingerprint"}))
    entries = [e for m in env.messages() for e in m.entries]
    assert [e.thing_name for e in entries] == [f"cert-{e.certificate_id}" for e in entries]


def test_untrusted_chain_fails_entries(env: Env) -> None:
    other = certfactory.make_ca("Some Other CA")
    env.s3.put_object(Bucket=BUCKET, Key="trust/generated/ca.pem", Body=other.pem().encode())
    env.config = replace(env.config, trusted_ca_prefix="trust/")
    data, summary = generated_manifest(3)
    env.run(env.put("generated/t.txt", data))
    assert env.messages() == []
    job = env.job("generated/t.txt")
    assert job.failed == 3
    # Trusting the real issuer lets them through.
    chain_pem = b"".join(c.public_bytes(Encoding.PEM) for c in summary.ca_certificates)
    env.s3.put_object(Bucket=BUCKET, Key="trust/generated/issuer.pem", Body=chain_pem)
    env.run(env.put("generated/t2.txt", data))
    assert len([e for m in env.messages() for e in m.entries]) == 3


def test_transient_s3_error_fails_the_record(env: Env) -> None:
    data, _ = generated_manifest(2)
    body = env.put("generated/slow.txt", data)

    class SlowS3:
        def __init__(self, client: Any) -> None:
            self._client = client

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

        def get_object(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "GetObject")

    real = env.s3
    env.s3 = SlowS3(real)
    with pytest.raises(AwsOperationError):
        env.run(body)
    env.s3 = real
    # SQS redelivers the same message, which takes the failed invocation's lease back at once.
    assert env.run(body)[0].outcome == "finished"
    assert len(env.messages()) == 1


# ------------------------------------------------------------------------------------------ fan-out


class FlakySqs:
    """Fails the given message positions of the first `calls` SendMessageBatch calls."""

    def __init__(self, client: Any, *, fail_first: int, calls: int, sender_fault: bool = False) -> None:
        self._client = client
        self.fail_first = fail_first
        self.calls_left = calls
        self.sender_fault = sender_fault
        self.batch_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        self.batch_calls += 1
        if self.calls_left <= 0:
            return self._client.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        self.calls_left -= 1
        failing, passing = Entries[: self.fail_first], Entries[self.fail_first :]
        response: dict[str, Any] = {"Successful": [], "Failed": []}
        if passing:
            response = dict(self._client.send_message_batch(QueueUrl=QueueUrl, Entries=passing))
            response.setdefault("Failed", [])
        response["Failed"] = list(response.get("Failed", [])) + [
            {"Id": e["Id"], "SenderFault": self.sender_fault, "Code": "InternalError", "Message": "boom"}
            for e in failing
        ]
        return response


def test_partial_batch_failure_is_retried(env: Env) -> None:
    env.config = replace(env.config, certs_per_message=2)
    env.sqs = FlakySqs(env.aws["sqs"], fail_first=1, calls=2)
    data, _ = generated_manifest(10)
    env.run(env.put("generated/flaky.txt", data))
    messages = env.messages()
    assert [m.chunk for m in messages] == [f"{i:06d}" for i in range(5)]
    assert env.sleeps == [0.5 * 0.2, 0.5 * 0.4]  # backoff with jitter, only after failures
    assert env.job("generated/flaky.txt").failed == 0


def test_unsendable_messages_are_recorded_as_failed(env: Env) -> None:
    env.config = replace(env.config, certs_per_message=2, send_attempts=3)
    env.sqs = FlakySqs(env.aws["sqs"], fail_first=1, calls=100)
    data, _ = generated_manifest(6)
    env.run(env.put("generated/lost.txt", data))
    messages = env.messages()
    assert [m.chunk for m in messages] == ["000001", "000002"]
    job = env.job("generated/lost.txt")
    assert (job.failed, job.settled) == (2, 2)
    final = env.importer(messages)
    assert final is not None
    report = env.report("generated/lost.txt")
    assert [f["locator"] for f in report["failures"]] == ["line 1", "line 2"]
    assert "could not be sent to SQS" in report["failures"][0]["reason"]
    assert (report["imported"], report["failed"]) == (4, 2)
    assert ("CertificatesFailed", 2, {"ErrorClass": "send_failed"}) in env.emitted


def test_sqs_calls_per_thousand_certificates(env: Env) -> None:
    data, _ = generated_manifest(1000, seed=9)
    results = env.run(env.put("generated/thousand.txt", data))
    assert results[0].queued == 1000
    assert results[0].sqs_calls <= 10
    assert sum(len(m.entries) for m in env.messages()) == 1000


# ------------------------------------------------------------------------------------------ continuation


def manifest_with_repeats() -> bytes:
    ca = certfactory.make_ca("Repeat CA")
    certs = list(certfactory.make_device_certs(40, ca, cn_format="Node-{i}"))
    pems = [c.pem() for c in certs]
    pems.insert(30, pems[2])  # a duplicate far from its original
    clash = next(certfactory.make_device_certs(1, ca, cn_format="Node-5"))
    pems.insert(35, clash.pem())  # a shared CN far from the original: both take fingerprint names
    return b"".join(base64.b64encode(pem.encode()) + b"\n" for pem in pems)


def entry_set(messages: list[ImportMessage]) -> list[tuple[str, str, str]]:
    return sorted((e.locator, e.thing_name, e.certificate_id) for m in messages for e in m.entries)


def test_continuations_match_a_single_run(env: Env) -> None:
    data = manifest_with_repeats()
    env.config = replace(env.config, certs_per_message=4)
    env.run(env.put("generated/single.txt", data))
    single = env.messages()
    single_job = env.job("generated/single.txt")

    env.config = replace(env.config, time_margin_ms=10**9)  # always short of time: hand over ASAP
    results = env.run_all(env.put("generated/split.txt", data))
    assert [r.outcome for r in results].count("continued") >= 5
    assert results[-1].outcome == "finished"
    split = env.messages()
    chunks = [m.chunk for m in split]
    assert len(chunks) == len(set(chunks))
    assert entry_set(split) == entry_set(single)
    assert len(entry_set(split)) == 41
    job = env.job("generated/split.txt")
    assert (job.total, job.duplicates, job.failed) == (
        single_job.total,
        single_job.duplicates,
        single_job.failed,
    )
    assert (job.total, job.duplicates, job.failed) == (42, 1, 0)
    final = env.importer(split)
    assert final is not None
    assert final.status == j.JobStatus.COMPLETED
    assert final.settled == 42


def test_crash_resumes_from_checkpoint_without_gaps(env: Env) -> None:
    data = manifest_with_repeats()
    env.config = replace(env.config, certs_per_message=3, checkpoint_every=2)

    class CrashingSqs(FlakySqs):
        def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
            if self.batch_calls >= 4:
                raise RuntimeError("the invocation dies")
            return super().send_message_batch(QueueUrl=QueueUrl, Entries=Entries)

    body = env.put("generated/crash.txt", data)
    env.sqs = CrashingSqs(env.aws["sqs"], fail_first=0, calls=0)
    with pytest.raises(RuntimeError):
        env.run(body)
    env.sqs = env.aws["sqs"]
    # A duplicate S3 event (another SQS message) finds the crashed invocation's lease still live...
    assert env.run(body, message_id="duplicate-event")[0].outcome == "busy"
    # ...while the redelivery of the crashed message itself takes its lease back at once.
    assert env.run(body)[0].outcome == "finished"
    received = env.messages()
    by_chunk: dict[str, ImportMessage] = {}
    for message in received:
        assert by_chunk.setdefault(message.chunk, message) == message  # re-sent chunks are identical
    unique = list(by_chunk.values())
    assert len(entry_set(unique)) == 41
    final = env.importer(unique)
    assert final is not None
    assert final.settled == final.total == 42


def test_crash_between_cut_intent_and_clean_checkpoint(env: Env) -> None:
    data = manifest_with_repeats()
    env.config = replace(env.config, certs_per_message=4)

    class DyingStore(j.JobStore):
        def save_checkpoint(self, job_id: str, owner: str, checkpoint: Any, **kwargs: Any) -> bool:
            saved = super().save_checkpoint(job_id, owner, checkpoint, **kwargs)
            if "boundary" in checkpoint:
                raise RuntimeError("crash right after the cut intent")
            return saved

    store = DyingStore(TABLE, dynamodb=env.aws["ddb"], s3=env.aws["s3"], clock=env.clock, emit=lambda n: None)
    services = env.services()
    services.jobs = store
    body = env.put("generated/cut.txt", data)
    with pytest.raises(RuntimeError, match="cut intent"):
        # Short of time at the 7th entry: two entries wait in the packer, so the checkpoint cuts.
        p.handle_intake_body(body, services, env.config, owner="a", remaining_ms=Countdown(4))
    crashed = env.job("generated/cut.txt")
    assert crashed.checkpoint is not None
    assert crashed.checkpoint["boundary"] == 6
    assert crashed.checkpoint["entries_done"] == 0
    env.clock.now += timedelta(hours=1)
    env.run_all(body)
    unique = {m.chunk: m for m in env.messages()}
    assert len(entry_set(list(unique.values()))) == 41
    final = env.importer(list(unique.values()))
    assert final is not None
    assert final.settled == final.total == 42


# ------------------------------------------------------------------------------------ last delivery


class ExplodingParser:
    """A vendor parser that yields ``good`` entries of the real parser, then raises, on every run."""

    def __init__(self, real: Any, good: int) -> None:
        self.real = real
        self.good = good
        self.name = real.name
        self.prefix = real.prefix

    def sniff(self, head: bytes) -> bool:
        return bool(self.real.sniff(head))

    def entries(self, source: Any, options: Any) -> Iterator[Any]:
        for index, entry in enumerate(self.real.entries(source, options)):
            if index == self.good:
                raise RuntimeError('parser exploded\n  File "parser.py", line 1, in <module>')
            yield entry


@pytest.fixture
def exploding(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make the provider itself raise RuntimeError when it handles entry ``good`` (0-based), every run.

    The vendor parsers' own errors end a manifest at once (``guarded_entries``); this is a fault of
    the provider around them, which only the last delivery may turn into the job's failure.
    """

    def install(good: int) -> None:
        real = ManifestStream._handle

        def handle(self: ManifestStream, outcome: Any) -> None:
            if self.run.entries_done == good:
                raise RuntimeError('provider exploded\n  File "provider.py", line 1, in <module>')
            real(self, outcome)

        monkeypatch.setattr(ManifestStream, "_handle", handle)

    return install


def test_a_parser_error_ends_the_manifest_at_once_keeping_the_entries_before_it(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = ExplodingParser(vendors.get_parser("generated"), 3)
    monkeypatch.setattr(vendors, "detect", lambda key, head: parser)
    data, summary = generated_manifest(6)
    body = env.put("generated/parser-bug.txt", data)

    (result,) = deliver(env, body, 1)

    assert result.outcome == "finished"
    messages = env.messages()
    assert [e.thing_name for m in messages for e in m.entries] == list(summary.thing_names[:3])
    final = env.importer(messages)
    assert final is not None
    assert final.status == j.JobStatus.FAILED
    assert final.reason == "The manifest could not be read after entry 3 (an unexpected RuntimeError)."
    assert "Traceback" not in env.report("generated/parser-bug.txt")["reason"]


def deliver(env: Env, body: str, attempt: int, *, message_id: str = "intake-msg") -> list[p.RunResult]:
    return p.handle_intake_body(
        body, env.services(), env.config, owner=message_id, remaining_ms=Budget(), attempt=attempt
    )


def test_attempts_reason_is_one_short_sentence() -> None:
    assert (
        p.attempts_reason(5, RuntimeError("parser exploded\nTraceback (most recent call last):"))
        == "The manifest could not be processed after 5 attempts: parser exploded."
    )
    assert p.attempts_reason(3, KeyError()) == (
        "The manifest could not be processed after 3 attempts: an unexpected KeyError."
    )
    long = p.attempts_reason(5, ValueError("x" * 500))
    assert len(long) < 300
    assert long.endswith("….")


def test_earlier_deliveries_raise_and_the_last_one_fails_the_job(
    env: Env, exploding: Callable[[int], None]
) -> None:
    exploding(0)
    data, _ = generated_manifest(3)
    body = env.put("generated/boom.txt", data)
    for attempt in range(1, env.config.max_receive_count):
        with pytest.raises(RuntimeError, match="provider exploded"):
            deliver(env, body, attempt)
        assert env.job("generated/boom.txt").status == j.JobStatus.PARSING

    (result,) = deliver(env, body, env.config.max_receive_count)

    assert result.outcome == "failed"
    job = env.job("generated/boom.txt")
    reason = "The manifest could not be processed after 5 attempts: provider exploded."
    assert (job.status, job.reason, job.total) == (j.JobStatus.FAILED, reason, 0)
    report = env.report("generated/boom.txt")
    assert (report["status"], report["reason"], report["total"]) == ("FAILED", reason, 0)
    assert env.messages() == []
    assert metric_total(env, "ManifestsFailed") == 1


def test_last_delivery_keeps_the_entries_fanned_out_before_the_failure(
    env: Env, exploding: Callable[[int], None]
) -> None:
    exploding(5)
    env.config = replace(env.config, certs_per_message=2)
    data, summary = generated_manifest(8)
    body = env.put("generated/half.txt", data)

    (result,) = deliver(env, body, 5)

    assert result.outcome == "failed"
    messages = env.messages()
    assert [e.thing_name for m in messages for e in m.entries] == list(summary.thing_names[:5])
    job = env.job("generated/half.txt")
    assert (job.status, job.total, job.parsed) == (j.JobStatus.IMPORTING, 5, True)
    final = env.importer(messages)
    assert final is not None
    assert final.status == j.JobStatus.FAILED
    report = env.report("generated/half.txt")
    assert report["reason"] == "The manifest could not be processed after 5 attempts: provider exploded."
    assert (report["total"], report["imported"]) == (5, 5)


class FlakyClaims(j.JobStore):
    """A job store whose first ``failures`` claims raise a DynamoDB error."""

    failures = 1

    def claim_parse(self, job_id: str, owner: str, lease_until: datetime) -> j.Job | None:
        if self.failures:
            self.failures -= 1
            raise AwsOperationError("dynamodb:UpdateItem", "InternalServerError", "try again")
        return super().claim_parse(job_id, owner, lease_until)


def flaky_claims(env: Env, failures: int) -> p.Services:
    services = env.services()
    services.jobs = FlakyClaims(
        TABLE,
        dynamodb=env.aws["ddb"],
        s3=env.aws["s3"],
        clock=env.clock,
        emit=lambda name: env.emitted.append((name, 1, None)),
    )
    services.jobs.failures = failures
    return services


def test_last_delivery_failing_before_the_run_still_fails_the_job(env: Env) -> None:
    data, _ = generated_manifest(2)
    body = env.put("generated/ddb.txt", data)
    services = flaky_claims(env, 1)

    (result,) = p.handle_intake_body(body, services, env.config, owner="m", remaining_ms=Budget(), attempt=7)

    assert result.outcome == "failed"
    job = env.job("generated/ddb.txt")
    assert job.status == j.JobStatus.FAILED
    assert job.reason == (
        "The manifest could not be processed after 7 attempts: "
        "The AWS call dynamodb:UpdateItem failed with InternalServerError: try again."
    )
    assert env.report("generated/ddb.txt")["status"] == "FAILED"
    assert (metric_total(env, "ManifestsReceived"), metric_total(env, "ManifestsFailed")) == (1, 1)


def test_last_delivery_without_a_job_to_fail_still_raises(env: Env) -> None:
    continuation = json.dumps(
        {
            "schema": "thingpress.continue/1",
            "job_id": "f" * 32,
            "bucket": BUCKET,
            "key": "generated/gone.txt",
            "version_id": None,
            "etag": "e",
            "checkpoint": {"entries_done": 0, "next_chunk": 0},
        }
    )
    services = flaky_claims(env, 1)
    with pytest.raises(AwsOperationError, match="try again"):
        p.handle_intake_body(continuation, services, env.config, owner="m", remaining_ms=Budget(), attempt=5)
    with pytest.raises(ValueError, match="not valid JSON"):
        deliver(env, "garbage", 5)
    # A job that cannot be failed either (the store keeps failing): the record goes to the DLQ.
    data, _ = generated_manifest(1)
    body = env.put("generated/down.txt", data)
    with pytest.raises(AwsOperationError, match="try again"):
        p.handle_intake_body(
            body, flaky_claims(env, 2), env.config, owner="m", remaining_ms=Budget(), attempt=5
        )
    assert env.job("generated/down.txt").status == j.JobStatus.RECEIVED


# ------------------------------------------------------------------------------------------ handler


def test_lambda_handler(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from manifest_provider import app
    from thingpress.local.context import FakeLambdaContext

    for name, value in {
        "THINGPRESS_JOBS_TABLE": TABLE,
        "THINGPRESS_IMPORT_QUEUE_URL": env.aws["import_url"],
        "THINGPRESS_INTAKE_QUEUE_URL": env.aws["intake_url"],
        "THINGPRESS_BUCKET": BUCKET,
        **env.environ,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(app, "_runtime", None)
    data, _ = generated_manifest(3)
    records = [
        sqs_record("m1", env.put("generated/h.txt", data), "intake"),
        sqs_record("m2", "garbage", "intake"),
    ]
    context = FakeLambdaContext("ManifestProviderFunction", timeout_seconds=900)
    response = app.lambda_handler({"Records": records}, context)
    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert sum(len(m.entries) for m in env.messages()) == 3


# ------------------------------------------------------------------------------------------ settings


def test_settings_from_env_and_overrides() -> None:
    settings = ImportSettings.from_env(
        {
            "THINGPRESS_POLICIES": " p1 , p2,p1",
            "THINGPRESS_THING_GROUPS": "g",
            "THINGPRESS_THING_TYPE": "t",
            "THINGPRESS_THING_ATTRIBUTES": '{"model": "x-1", "fw": "1.2"}',
            "THINGPRESS_THING_NAME_SOURCE": "CN",
            "THINGPRESS_THING_NAME_PREFIX": "pre-",
        }
    )
    assert settings.policies == ("p1", "p2")
    assert settings.thing_name_source == "cn"
    assert settings.bundle_type == "E0E0"
    overridden = settings.with_overrides(
        {"thingpress-thing-type": "", "thingpress-attributes": "{}", "other": "x"}
    )
    assert overridden.thing_type is None
    assert overridden.attributes == {}
    assert overridden.policies == ("p1", "p2")
    assert settings.with_overrides({}) is settings


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"THINGPRESS_THING_GROUPS": "ok,"},
            "THINGPRESS_THING_GROUPS: Thing group name cannot be None or empty",
        ),
        ({"THINGPRESS_POLICIES": "bad name"}, "Policy name 'bad name' is invalid"),
        ({"THINGPRESS_THING_TYPE": "a/b"}, "Thing type name 'a/b' is invalid"),
        ({"THINGPRESS_THING_ATTRIBUTES": "{"}, "not valid JSON"),
        ({"THINGPRESS_THING_ATTRIBUTES": '{"a": 1}'}, "must have a string value"),
        ({"THINGPRESS_THING_ATTRIBUTES": '{"a b": "1"}'}, "Thing attribute name 'a b' is invalid"),
        ({"THINGPRESS_THING_ATTRIBUTES": '{"a": "x y"}'}, "Thing attribute 'a' has an invalid value"),
        ({"THINGPRESS_THING_ATTRIBUTES": '{"a": "1", "b": "2", "c": "3"}'}, "at most 2 attributes"),
        ({"THINGPRESS_THING_NAME_SOURCE": "mac"}, "Thing name source 'mac' is invalid"),
        ({"THINGPRESS_THING_NAME_PREFIX": "a b"}, "Thing name prefix 'a b' is invalid"),
        ({"THINGPRESS_INFINEON_BUNDLE_TYPE": "E0E9"}, "Infineon bundle type 'E0E9' is invalid"),
        ({"THINGPRESS_POLICIES": ",".join(f"p{i}" for i in range(11))}, "At most 10 policy names"),
    ],
)
def test_settings_errors_are_clear(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        ImportSettings.from_env(environ)
    assert message in str(info.value)


def test_provider_config_from_env() -> None:
    with pytest.raises(ValueError, match="THINGPRESS_JOBS_TABLE is not set"):
        p.ProviderConfig.from_env({})
    base = {
        "THINGPRESS_JOBS_TABLE": "t",
        "THINGPRESS_IMPORT_QUEUE_URL": "i",
        "THINGPRESS_INTAKE_QUEUE_URL": "c",
    }
    config = p.ProviderConfig.from_env(
        {**base, "THINGPRESS_ALLOW_EXPIRED": "true", "THINGPRESS_CERTS_PER_MESSAGE": "7"}
    )
    assert config.allow_expired
    assert config.certs_per_message == 7
    with pytest.raises(ValueError, match="THINGPRESS_CERTS_PER_MESSAGE must be a positive integer"):
        p.ProviderConfig.from_env({**base, "THINGPRESS_CERTS_PER_MESSAGE": "0"})
