"""Never take over, check before the first call, and reports that agree with IoT, on the local stack.

Scenarios of issue 12: pre-existing IoT state (a foreign thing, a certificate attached elsewhere,
INACTIVE and REVOKED certificates, adopt mode), forged import messages (zero IoT calls, counted by the
local IoT quota emulator), a target deleted mid-import, and in every one of them the report agrees
with what AWS IoT holds (each certificate on exactly the things the report says, ListPrincipalThings).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.x509.oid import NameOID

from layer_utils.iot_names import OWNER_ATTRIBUTE
from layer_utils.jobs import JobStatus
from layer_utils.messages import (
    ImportEntry,
    ImportMessage,
    MessageSettings,
    encode_import_message,
    sign_import_message,
)
from testing.pipeline import Pipeline, Result, pipeline
from thingpress.certfactory import Issued, make_ca, make_device_cert
from thingpress.local import EventSourceMappingEmulator
from thingpress.local.quota import QuotaEmulator

POLICY = "device-policy"
GROUP = "fleet"
PARAMETERS = {"PolicyNames": POLICY, "ThingGroupNames": GROUP, "ThingNameSource": "cn"}
POLICY_DOCUMENT = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
)
_LEFT_CERT = re.compile(
    r"Left in AWS IoT: certificate ([0-9a-f]{64}) \(ACTIVE, attached to (no thing|thing (\S+?)),"
)


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca("Takeover Test CA")


def csv_of(certs: Sequence[Issued]) -> bytes:
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["MAC", "cn", "cert"])
    for index, cert in enumerate(certs):
        cn = cert.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        writer.writerow([f"24:0A:C4:00:01:{index:02X}", cn, cert.pem()])
    return text.getvalue().encode("utf-8")


def cert_arn(result_pipeline: Pipeline, certificate_id: str) -> str:
    description = result_pipeline.iot.describe_certificate(certificateId=certificate_id)
    return str(description["certificateDescription"]["certificateArn"])


def principal_things(p: Pipeline, certificate_id: str) -> list[str]:
    return sorted(p.iot.list_principal_things(principal=cert_arn(p, certificate_id))["things"])


def status_of(p: Pipeline, certificate_id: str) -> str | None:
    try:
        return str(
            p.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"]
        )
    except p.iot.exceptions.ResourceNotFoundException:
        return None


def assert_agreement(p: Pipeline, result: Result, untouched: frozenset[str] = frozenset()) -> None:
    """The report equals IoT: imported certificates are ACTIVE on exactly their thing with the policy;
    a failed entry's certificate is where its reason says it was left, or (not left, not pre-existing)
    absent."""
    for entry in result.report["imported_entries"]:
        cert_id = entry["certificate_id"]
        assert status_of(p, cert_id) == "ACTIVE"
        assert principal_things(p, cert_id) == [entry["thing_name"]]
        policies = p.iot.list_attached_policies(target=cert_arn(p, cert_id))["policies"]
        assert [policy["policyName"] for policy in policies] == [POLICY]
    for failure in result.report["failures"]:
        cert_id = failure["certificate_id"]
        left = _LEFT_CERT.search(failure["reason"])
        if left is not None:
            assert left.group(1) == cert_id
            assert status_of(p, cert_id) == "ACTIVE"
            assert principal_things(p, cert_id) == ([] if left.group(2) == "no thing" else [left.group(3)])
        elif cert_id not in untouched:
            assert status_of(p, cert_id) is None, failure


def snapshot(p: Pipeline, thing_name: str) -> dict[str, Any]:
    described = p.iot.describe_thing(thingName=thing_name)
    groups = p.iot.list_thing_groups_for_thing(thingName=thing_name)["thingGroups"]
    return {
        "attributes": described.get("attributes"),
        "version": described.get("version"),
        "principals": sorted(p.iot.list_thing_principals(thingName=thing_name)["principals"]),
        "groups": sorted(group["groupName"] for group in groups),
    }


@pytest.fixture
def stack() -> Iterator[Pipeline]:
    with pipeline(**PARAMETERS) as p:
        p.iot.create_policy(policyName=POLICY, policyDocument=POLICY_DOCUMENT)
        p.iot.create_thing_group(thingGroupName=GROUP)
        yield p


def register(p: Pipeline, cert: Issued, status: str = "ACTIVE") -> str:
    response = p.iot.register_certificate_without_ca(certificatePem=cert.pem(), status="ACTIVE")
    if status != "ACTIVE":
        p.iot.update_certificate(certificateId=response["certificateId"], newStatus=status)
    return str(response["certificateId"])


def test_pre_existing_iot_state_is_never_taken_over(stack: Pipeline, ca: Issued) -> None:
    p = stack
    p.iot.create_thing_group(thingGroupName="ops-group")
    owner_cert = make_device_cert("owner", ca)
    owner_id = register(p, owner_cert)
    p.iot.create_thing(thingName="foreign-1", attributePayload={"attributes": {"owner": "ops"}})
    p.iot.attach_thing_principal(thingName="foreign-1", principal=cert_arn(p, owner_id))
    p.iot.add_thing_to_thing_group(thingGroupName="ops-group", thingName="foreign-1")
    foreign_before = snapshot(p, "foreign-1")
    elsewhere = make_device_cert("elsewhere-2", ca)
    elsewhere_id = register(p, elsewhere)
    p.iot.create_thing(thingName="elsewhere")
    p.iot.attach_thing_principal(thingName="elsewhere", principal=cert_arn(p, elsewhere_id))
    inactive, revoked = make_device_cert("inactive-3", ca), make_device_cert("revoked-4", ca)
    inactive_id, revoked_id = register(p, inactive, "INACTIVE"), register(p, revoked, "REVOKED")
    good, squatter = make_device_cert("good-1", ca), make_device_cert("foreign-1", ca)

    result = p.run("espressif/state.csv", csv_of([good, squatter, elsewhere, inactive, revoked]))

    assert result.job.status == JobStatus.COMPLETED_WITH_ERRORS
    assert set(result.imported.values()) == {"good-1"}
    reasons = list(result.failures.values())
    assert len(reasons) == 4
    assert any("thing foreign-1 already exists and was not created by Thingpress" in r for r in reasons)
    assert any(f"certificate {elsewhere_id} is already attached to thing elsewhere" in r for r in reasons)
    assert any(f"certificate {inactive_id} is INACTIVE" in r for r in reasons)
    assert any(f"certificate {revoked_id} is REVOKED" in r for r in reasons)
    # Nothing foreign changed; every certificate is on exactly the thing it was on.
    assert snapshot(p, "foreign-1") == foreign_before
    assert principal_things(p, owner_id) == ["foreign-1"]
    assert principal_things(p, elsewhere_id) == ["elsewhere"]
    assert principal_things(p, inactive_id) == principal_things(p, revoked_id) == []
    assert (status_of(p, inactive_id), status_of(p, revoked_id)) == ("INACTIVE", "REVOKED")
    assert set(result.things) == {"foreign-1", "elsewhere", "good-1"}
    assert p.iot.describe_thing(thingName="good-1")["attributes"] == {
        OWNER_ATTRIBUTE: result.report["imported_entries"][0]["certificate_id"]
    }
    assert_agreement(p, result, untouched=frozenset({elsewhere_id, inactive_id, revoked_id}))

    # The same certificates again: the thing Thingpress made is its own, the rest stays refused.
    again = p.run("espressif/state-again.csv", csv_of([good, squatter]))
    assert set(again.imported.values()) == {"good-1"}
    assert snapshot(p, "foreign-1") == foreign_before
    squatter_id = hashlib.sha256(squatter.der()).hexdigest()  # left ACTIVE by the first run, as it said
    assert_agreement(p, again, untouched=frozenset({squatter_id}))


def test_adopt_mode_uses_an_existing_thing_on_purpose(ca: Issued) -> None:
    with pipeline(**PARAMETERS, AdoptExistingThings="true") as p:
        p.iot.create_policy(policyName=POLICY, policyDocument=POLICY_DOCUMENT)
        p.iot.create_thing_group(thingGroupName=GROUP)
        p.iot.create_thing(thingName="legacy-1", attributePayload={"attributes": {"owner": "ops"}})
        cert = make_device_cert("legacy-1", ca)

        result = p.run("espressif/adopt.csv", csv_of([cert]))

        assert result.job.status == JobStatus.COMPLETED
        (imported,) = result.report["imported_entries"]
        assert principal_things(p, imported["certificate_id"]) == ["legacy-1"]
        # Adopted, not marked: Thingpress did not create it.
        assert p.iot.describe_thing(thingName="legacy-1")["attributes"] == {"owner": "ops"}
        assert_agreement(p, result)


def test_a_target_deleted_mid_import_is_reported_as_iot_holds_it(stack: Pipeline, ca: Issued) -> None:
    p = stack
    certs = [make_device_cert(f"mid-{index}", ca) for index in range(3)]
    deleted: list[str] = []

    def delete_the_policy_before_the_import(function: str, event: dict[str, Any]) -> dict[str, Any]:
        if function == "BulkImporterFunction" and not deleted:
            p.iot.delete_policy(policyName=POLICY)  # after the provider's pre-flight check passed
            deleted.append(POLICY)
        return event

    p.s3.put_object(Bucket=p.stack.bucket, Key="espressif/mid.csv", Body=csv_of(certs))
    emulator = EventSourceMappingEmulator(
        p.stack, max_concurrency=None, before_invoke=delete_the_policy_before_the_import
    )

    stats = emulator.run_until_idle(max_seconds=120)

    assert stats.idle and stats.errors == 0 and stats.failed_records == 0
    (job,) = [job for job in p.jobs.list_jobs() if job.key == "espressif/mid.csv"]
    assert job.status == JobStatus.COMPLETED_WITH_ERRORS
    report = p.jobs.build_report(job)
    result = Result(report, job, p.things())
    assert len(report["failures"]) == 3
    for failure in report["failures"]:
        assert f"AttachPolicy for policy {POLICY} failed" in failure["reason"]
        assert "Left in AWS IoT: certificate" in failure["reason"]
    assert_agreement(p, result)


def test_forged_import_messages_make_zero_iot_calls(stack: Pipeline, ca: Issued) -> None:
    p = stack
    done = p.run("espressif/done.csv", csv_of([make_device_cert("done-1", ca)]))
    created, importing = p.jobs.create_job(p.stack.bucket, "espressif/open.csv", "v1")
    assert created
    lease = datetime.now(UTC) + timedelta(hours=1)
    claimed = p.jobs.claim_parse(importing.job_id, "test", lease)
    assert claimed is not None and claimed.secret
    assert p.jobs.mark_parsed(importing.job_id, "test", 1, {"entries_done": 1}) is not None
    victim = make_device_cert("done-1", ca)  # the thing name of an imported certificate
    entry = ImportEntry("row 1", "done-1", hashlib.sha256(victim.der()).hexdigest(), victim.pem())
    admin = MessageSettings(policies=(POLICY,), thing_groups=(GROUP,))
    forged = {
        "unknown job": ImportMessage("0" * 32, "000000", admin, (entry,)),
        "job not importing": sign_import_message(
            ImportMessage(done.job.job_id, "000009", admin, (entry,)), "guessed"
        ),
        "no mac": ImportMessage(importing.job_id, "000000", admin, (entry,)),
        "wrong mac": sign_import_message(
            ImportMessage(importing.job_id, "000000", admin, (entry,)), "guessed"
        ),
    }
    queue_url = p.stack.physical_id("ImportQueue")
    things_before = p.things()

    with QuotaEmulator(enabled=False) as quota:
        for body in forged.values():
            p.sqs.send_message(QueueUrl=queue_url, MessageBody=encode_import_message(body))
        stats = EventSourceMappingEmulator(p.stack, max_concurrency=None).run_until_idle(max_seconds=60)

    assert stats.idle and stats.errors == 0 and stats.failed_records == 0
    assert stats.records.get("BulkImporterFunction") == len(forged)
    assert quota.counts().service_calls("iot") == 0
    assert p.things() == things_before
    assert p.dlq_depths() == {"IntakeDLQ": 0, "ImportDLQ": 0}  # dropped, not looping
    job = p.jobs.get_job(importing.job_id)
    assert job is not None and (job.status, job.settled) == (JobStatus.IMPORTING, 0)
