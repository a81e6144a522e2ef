"""Undo on the local stack: round trip, crash and resume, foreign changes, undo of an undo, dry run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from layer_utils.cert_utils import certificate_arn
from layer_utils.circuit import CircuitRegistry
from layer_utils.jobs import JobStatus
from testing.pipeline import Pipeline, pipeline
from thingpress.certfactory import Issued, make_ca, make_device_cert
from undo_worker.undo import UndoResult, undo_job

POLICY = "device-policy"
GROUP = "fleet"
PARAMETERS = {
    "PolicyNames": POLICY,
    "ThingGroupNames": GROUP,
    "ThingNameSource": "cn",
    "AdoptExistingThings": "true",
}
POLICY_DOCUMENT = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
)


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca("Undo Test CA")


def csv_of(certs: list[Issued]) -> bytes:
    rows = ["MAC,cn,cert"]
    for index, cert in enumerate(certs):
        cn = cert.certificate.subject.rfc4514_string().removeprefix("CN=")
        rows.append(f'24:0A:C4:00:02:{index:02X},{cn},"{cert.pem()}"')
    return ("\n".join(rows) + "\n").encode()


def snapshot(p: Pipeline) -> dict[str, Any]:
    """Everything in IoT an import or an undo can change."""
    iot = p.iot
    things = {}
    for thing in iot.list_things()["things"]:
        name = thing["thingName"]
        described = iot.describe_thing(thingName=name)
        things[name] = (
            described.get("attributes"),
            described.get("thingTypeName"),
            sorted(iot.list_thing_principals(thingName=name)["principals"]),
            sorted(g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=name)["thingGroups"]),
        )
    certificates = {
        cert["certificateId"]: (
            cert["status"],
            sorted(
                p["policyName"] for p in iot.list_attached_policies(target=cert["certificateArn"])["policies"]
            ),
        )
        for cert in iot.list_certificates()["certificates"]
    }
    policies = sorted(policy["policyName"] for policy in iot.list_policies()["policies"])
    groups = sorted(group["groupName"] for group in iot.list_thing_groups()["thingGroups"])
    return {"things": things, "certificates": certificates, "policies": policies, "groups": groups}


class CrashingIot:
    """The IoT client, except that the ``crash_at``-th write raises (a Lambda that dies mid-way)."""

    def __init__(self, client: Any, crash_at: int) -> None:
        self._client = client
        self.crash_at = crash_at
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not name.startswith(("detach", "remove", "update", "delete")):
            return method

        def write(**kwargs: Any) -> Any:
            self.writes += 1
            if self.writes == self.crash_at:
                raise RuntimeError("the function died")
            return method(**kwargs)

        return write


def undo(
    p: Pipeline, job_id: str, *, iot: Any = None, dry_run: bool = False, chunk_size: int = 50
) -> UndoResult:
    region = p.iot.meta.region_name
    return undo_job(
        p.jobs,
        job_id,
        iot=iot or p.iot,
        cert_arn=lambda cid: certificate_arn(cid, region=region, account="123456789012"),
        limiter=None,
        registry=CircuitRegistry(),
        dry_run=dry_run,
        chunk_size=chunk_size,
    )


@pytest.fixture
def imported(ca: Issued) -> Iterator[tuple[Pipeline, str, dict[str, Any]]]:
    """A stack with a pre-existing policy, group and thing (in the group), then an import of 4 certs."""
    with pipeline(**PARAMETERS) as p:
        p.iot.create_policy(policyName=POLICY, policyDocument=POLICY_DOCUMENT)
        p.iot.create_thing_group(thingGroupName=GROUP)
        p.iot.create_thing(thingName="legacy-1", attributePayload={"attributes": {"owner": "ops"}})
        p.iot.add_thing_to_thing_group(thingGroupName=GROUP, thingName="legacy-1")
        before = snapshot(p)
        certs = [make_device_cert(name, ca) for name in ("legacy-1", "new-1", "new-2", "new-3")]
        result = p.run("espressif/undo.csv", csv_of(certs))
        assert result.job.status == JobStatus.COMPLETED, result.failures
        yield p, result.job.job_id, before


def test_undo_puts_iot_back_exactly_and_an_undo_of_the_undo_changes_nothing(
    imported: tuple[Pipeline, str, dict[str, Any]],
) -> None:
    p, job_id, before = imported
    planned = undo(p, job_id, dry_run=True)

    done = undo(p, job_id)

    assert snapshot(p) == before
    assert done.status == "UNDONE" and done.left == []
    assert done.removed == planned.removed  # the dry run listed exactly what the real run removed
    assert "delete thing new-1" in done.removed and "delete thing legacy-1" not in done.removed
    assert {record["resource"] for record in done.kept} >= {"thing legacy-1", f"group membership {GROUP}"}
    job = p.jobs.get_job(job_id)
    assert job is not None and job.status == JobStatus.UNDONE and job.undo_report_key
    report = json.loads(p.s3.get_object(Bucket=job.bucket, Key=job.undo_report_key)["Body"].read())
    assert report["status"] == "UNDONE" and report["removed"] == done.removed

    again = undo(p, job_id)

    assert again.removed == [] and again.left == [] and again.status == "UNDONE"
    assert snapshot(p) == before


def test_a_crashed_undo_resumes_and_ends_the_same(imported: tuple[Pipeline, str, dict[str, Any]]) -> None:
    p, job_id, before = imported
    with pytest.raises(RuntimeError):
        undo(p, job_id, iot=CrashingIot(p.iot, crash_at=13), chunk_size=2)
    job = p.jobs.get_job(job_id)
    assert job is not None and job.status == JobStatus.COMPLETED and job.undo and job.undo["next"] >= 1

    done = undo(p, job_id, chunk_size=2)

    assert done.status == "UNDONE" and done.left == []
    assert snapshot(p) == before


def test_foreign_changes_are_left_in_place_and_reported(
    imported: tuple[Pipeline, str, dict[str, Any]], ca: Issued
) -> None:
    p, job_id, _ = imported
    region = p.iot.meta.region_name
    ledger = {entry.thing_name: entry for entry in p.jobs.ledger(job_id)}
    moved = certificate_arn(ledger["new-1"].certificate_id, region=region, account="123456789012")
    p.iot.detach_thing_principal(thingName="new-1", principal=moved)
    p.iot.create_thing(thingName="other")
    p.iot.attach_thing_principal(thingName="other", principal=moved)
    stranger = make_device_cert("stranger", ca)
    arn = p.iot.register_certificate_without_ca(certificatePem=stranger.pem(), status="ACTIVE")[
        "certificateArn"
    ]
    p.iot.attach_thing_principal(thingName="new-2", principal=arn)
    planned = undo(p, job_id, dry_run=True)

    done = undo(p, job_id)

    assert done.status == "UNDO_PARTIAL"
    assert done.removed == planned.removed and done.left == planned.left
    reasons = {record["resource"]: record["reason"] for record in done.left}
    assert (
        reasons[f"certificate {ledger['new-1'].certificate_id}"]
        == "left in place: it is now attached to thing other"
    )
    assert reasons["thing new-2"].startswith("left in place: it now has other principals")
    assert p.iot.list_principal_things(principal=moved)["things"] == ["other"]
    assert sorted(p.iot.list_thing_principals(thingName="new-2")["principals"]) == sorted(
        [arn, certificate_arn(ledger["new-2"].certificate_id, region=region, account="123456789012")]
    )
    assert "delete thing new-3" in done.removed
