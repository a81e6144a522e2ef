"""``thingpress reconcile``: no drift right after a clean import, and each kind of drift after IoT changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from layer_utils.reconcile import reconcile
from testing.pipeline import Pipeline, Result, pipeline
from thingpress import cli
from thingpress.certfactory import make_ca, make_device_cert
from thingpress.generate import generate
from thingpress.localrun import ensure_iot_resources, operator_settings

POLICY, GROUP, TYPE = "rc-policy", "rc-group", "rc-type"
KEY = "espressif/reconcile.csv"


@pytest.fixture
def imported(tmp_path: Path) -> Iterator[tuple[Pipeline, Result]]:
    """A clean import of 7 devices with a policy, a group and a type."""
    with pipeline() as p:
        ensure_iot_resources(p.iot, policies=[POLICY, "other-policy"], thing_groups=[GROUP, "other-group"])
        ensure_iot_resources(p.iot, thing_type=TYPE)
        ensure_iot_resources(p.iot, thing_type="other-type")
        p.configure(**operator_settings(policies=[POLICY], thing_groups=[GROUP], thing_type=TYPE))
        manifest = tmp_path / "reconcile.csv"
        generate("espressif", 7, manifest, seed=31)
        result = p.run(KEY, manifest.read_bytes())
        assert result.report["imported"] == 7
        yield p, result


def drift_of(p: Pipeline, result: Result) -> set[tuple[str, str, str, str | None, str | None]]:
    found = reconcile(p.iot, p.jobs.ledger(result.job.job_id))
    assert found.entries == 7
    return {(d.kind, d.resource, d.thing_name, d.expected, d.actual) for d in found.drifts}


def cli_reconcile(p: Pipeline, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    table = p.stack.physical_id("JobsTable")
    code = cli.main(["reconcile", KEY, "--bucket", p.stack.bucket, "--table", table, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_no_drift_right_after_a_clean_import(
    imported: tuple[Pipeline, Result], capsys: pytest.CaptureFixture[str]
) -> None:
    p, result = imported
    assert drift_of(p, result) == set()
    code, document = cli_reconcile(p, capsys)
    assert code == 0
    assert document["drift"] == {"missing": 0, "extra": 0, "changed": 0}
    assert document["entries"] == 7


def test_each_kind_of_drift_is_reported(
    imported: tuple[Pipeline, Result], capsys: pytest.CaptureFixture[str]
) -> None:
    p, result = imported
    iot = p.iot
    entries = sorted(result.report["imported_entries"], key=lambda entry: entry["thing_name"])
    things = [entry["thing_name"] for entry in entries]
    arns = [
        iot.describe_certificate(certificateId=entry["certificate_id"])["certificateDescription"][
            "certificateArn"
        ]
        for entry in entries
    ]
    gone, unpolicied, grouped, retyped, deactivated, shared, stolen = range(7)
    # delete a thing (AWS needs its principal detached first)
    iot.detach_thing_principal(thingName=things[gone], principal=arns[gone])
    iot.delete_thing(thingName=things[gone])
    iot.detach_policy(policyName=POLICY, target=arns[unpolicied])
    iot.attach_policy(policyName="other-policy", target=arns[unpolicied])
    iot.add_thing_to_thing_group(thingGroupName="other-group", thingName=things[grouped])
    iot.update_thing(thingName=things[retyped], thingTypeName="other-type")
    iot.update_certificate(certificateId=entries[deactivated]["certificate_id"], newStatus="INACTIVE")
    extra = make_device_cert("intruder", make_ca("intruder-ca"))
    extra_arn = iot.register_certificate_without_ca(certificatePem=extra.pem(), status="ACTIVE")[
        "certificateArn"
    ]
    iot.attach_thing_principal(thingName=things[shared], principal=extra_arn)
    iot.detach_thing_principal(thingName=things[stolen], principal=arns[stolen])
    iot.create_thing(thingName="elsewhere")
    iot.attach_thing_principal(thingName="elsewhere", principal=arns[stolen])

    assert drift_of(p, result) == {
        ("missing", "thing", things[gone], things[gone], None),
        ("missing", "policy", things[unpolicied], POLICY, None),
        ("extra", "policy", things[unpolicied], None, "other-policy"),
        ("extra", "thing_group", things[grouped], None, "other-group"),
        ("changed", "thing_type", things[retyped], TYPE, "other-type"),
        ("changed", "certificate", things[deactivated], "ACTIVE", "INACTIVE"),
        ("extra", "principal", things[shared], None, extra_arn.rsplit("/", 1)[-1]),
        ("missing", "principal", things[stolen], entries[stolen]["certificate_id"], None),
        ("extra", "thing", things[stolen], None, "elsewhere"),
    }
    code, document = cli_reconcile(p, capsys)
    assert code == 1
    assert document["drift"] == {"missing": 3, "extra": 4, "changed": 2}
