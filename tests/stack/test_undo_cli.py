"""``thingpress undo``: dry run, confirmation, the request to the UndoQueue, exit codes, reconcile after."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layer_utils.cert_utils import certificate_arn
from layer_utils.circuit import CircuitRegistry
from layer_utils.jobs import JobStatus
from testing.pipeline import Pipeline, Result, pipeline
from thingpress import cli, undo_cli
from thingpress.certfactory import make_ca, make_device_cert
from thingpress.console import CliError
from thingpress.generate import generate
from thingpress.localrun import ensure_iot_resources, operator_settings
from thingpress.localstate import RunningStack, write_state
from thingpress.remote import Deployment
from undo_worker.undo import undo_job

POLICY, GROUP, TYPE = "undo-policy", "undo-group", "undo-type"
KEY = "espressif/undo-cli.csv"
ACCOUNT = "123456789012"


class UndoFunction:
    """Stands in for the deployed UndoFunction: each SQS message ``{"job_id": ...}`` runs ``undo_job``."""

    def __init__(self, p: Pipeline, queue: str) -> None:
        self.p = p
        self.queue = queue
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, _seconds: float) -> None:
        """Poll once (the CLI's sleep between polls of the job item)."""
        received = self.p.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10)
        region = self.p.iot.meta.region_name
        for message in received.get("Messages", []):
            body = json.loads(message["Body"])
            self.bodies.append(body)
            undo_job(
                self.p.jobs,
                body["job_id"],
                iot=self.p.iot,
                cert_arn=lambda cid: certificate_arn(cid, region=region, account=ACCOUNT),
                limiter=None,
                registry=CircuitRegistry(),
            )
            self.p.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def imported(tmp_path: Path) -> Iterator[tuple[Pipeline, Result]]:
    """A clean import of 5 devices with a policy, a group and a type, and a CloudFormation stack ``tp``."""
    with pipeline() as p:
        ensure_iot_resources(p.iot, policies=[POLICY], thing_groups=[GROUP], thing_type=TYPE)
        p.configure(**operator_settings(policies=[POLICY], thing_groups=[GROUP], thing_type=TYPE))
        manifest = tmp_path / "undo-cli.csv"
        generate("espressif", 5, manifest, seed=41)
        result = p.run(KEY, manifest.read_bytes())
        assert result.report["imported"] == 5
        outputs = {
            "ManifestBucketName": {"Value": p.stack.bucket},
            "JobsTableName": {"Value": p.stack.physical_id("JobsTable")},
            "UndoQueueUrl": {"Value": {"Ref": "UndoQueue"}},
        }
        p.stack.client("cloudformation").create_stack(
            StackName="tp",
            TemplateBody=json.dumps(
                {"Resources": {"UndoQueue": {"Type": "AWS::SQS::Queue"}}, "Outputs": outputs}
            ),
        )
        yield p, result


def undo_queue(p: Pipeline) -> str:
    cloudformation = p.stack.client("cloudformation")
    (stack,) = cloudformation.describe_stacks(StackName="tp")["Stacks"]
    return next(o["OutputValue"] for o in stack["Outputs"] if o["OutputKey"] == "UndoQueueUrl")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def target(p: Pipeline) -> list[str]:
    return ["--bucket", p.stack.bucket, "--table", p.stack.physical_id("JobsTable")]


def local_state(p: Pipeline, folder: Path) -> list[str]:
    """A state file that points ``--local`` at this process's stack (no UndoQueue: undone in-process)."""
    write_state(
        folder,
        RunningStack(
            pid=os.getpid(),
            endpoint=p.stack.endpoint_url,
            region=p.iot.meta.region_name,
            deployment=Deployment(p.stack.bucket, p.stack.physical_id("JobsTable")),
        ),
    )
    return ["--local", "--state", str(folder)]


def iot_state(p: Pipeline) -> tuple[dict[str, frozenset[str]], list[str]]:
    certificates = sorted(c["certificateId"] for c in p.iot.list_certificates()["certificates"])
    return p.things(), certificates


def test_dry_run_lists_exactly_what_undo_removes_and_reconcile_sees_no_drift_after(
    imported: tuple[Pipeline, Result], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p, result = imported
    before = iot_state(p)
    code, out, _ = run_cli(capsys, "undo", KEY, *target(p), "--dry-run", "--json")
    assert code == 0
    planned = json.loads(out)
    assert iot_state(p) == before  # read only
    assert planned["dry_run"] is True and planned["status"] == "COMPLETED"
    assert (
        planned["counts"]["removed"] == 5 * 6
    )  # per entry: policy, group, principal, INACTIVE, certificate, thing
    code, human, _ = run_cli(capsys, "undo", KEY, *target(p), "--dry-run")
    assert code == 0
    assert human.startswith(f"Dry run of the undo of job {result.job.job_id}")
    assert "Nothing was changed." in human and "Would remove:" in human
    assert all(f"  {text}" in human for text in planned["removed"])

    code, out, _ = run_cli(capsys, "undo", KEY, *local_state(p, tmp_path / "state"), "--yes", "--json")

    assert code == 0
    done = json.loads(out)
    assert done["status"] == "UNDONE" and done["dry_run"] is False
    assert done["removed"] == planned["removed"]  # exactly what the dry run printed
    assert done["left"] == []
    things, certificates = iot_state(p)
    assert not set(things) & set(result.imported.values())
    assert not set(certificates) & {entry["certificate_id"] for entry in result.report["imported_entries"]}
    job = p.jobs.get_job(result.job.job_id)
    assert job is not None and job.status == JobStatus.UNDONE
    assert done["report_key"] == f"s3://{p.stack.bucket}/{job.undo_report_key}"

    code, out, _ = run_cli(capsys, "reconcile", KEY, *target(p), "--json")
    assert code == 0, out
    reconciled = json.loads(out)
    assert reconciled["drift"] == {"missing": 0, "extra": 0, "changed": 0}
    assert (reconciled["status"], reconciled["undone"], reconciled["left"]) == ("UNDONE", 5, [])

    name = sorted(result.imported.values())[0]
    p.iot.create_thing(thingName=name)  # someone brings an undone thing back
    code, out, _ = run_cli(capsys, "reconcile", KEY, *target(p), "--json")
    assert code == 1
    assert [(d["kind"], d["resource"], d["actual"]) for d in json.loads(out)["drifts"]] == [
        ("extra", "thing", name)
    ]


def test_the_deployed_path_sends_the_job_to_the_undo_queue_and_prints_the_report(
    imported: tuple[Pipeline, Result], capsys: pytest.CaptureFixture[str]
) -> None:
    p, result = imported
    function = UndoFunction(p, undo_queue(p))
    capsys.readouterr()

    code = undo_cli.undo_command(
        KEY, stack="tp", bucket=None, table=None, yes=True, sleep=function, clock=lambda: 0.0
    )

    out = capsys.readouterr().out
    assert code == 0
    assert function.bodies == [{"job_id": result.job.job_id}]
    assert out.startswith(f"Undo of job {result.job.job_id} ({KEY}): UNDONE. Removed 30 resources")
    assert "Removed:" in out and f"delete thing {sorted(result.imported.values())[0]}" in out
    assert "Undo report: s3://" in out


def test_a_real_undo_needs_a_confirmation(
    imported: tuple[Pipeline, Result], capsys: pytest.CaptureFixture[str]
) -> None:
    p, result = imported
    before = iot_state(p)
    queue = undo_queue(p)

    code, out, err = run_cli(capsys, "undo", KEY, "--stack", "tp")  # pytest's stdin is no terminal

    assert (code, out) == (2, "")
    assert "no terminal to ask on: pass --yes" in err
    questions: list[str] = []
    with pytest.raises(CliError, match="Undo cancelled; nothing was changed") as refused:
        undo_cli.undo_command(
            KEY,
            stack="tp",
            bucket=None,
            table=None,
            interactive=True,
            ask=lambda q: questions.append(q) or "n",
        )
    assert refused.value.exit_code == 2
    assert questions and questions[0].endswith("[y/N] ") and "remove 30 resources" in questions[0]
    assert "MessageId" not in json.dumps(p.sqs.receive_message(QueueUrl=queue))  # nothing requested
    assert iot_state(p) == before
    job = p.jobs.get_job(result.job.job_id)
    assert job is not None and job.status == JobStatus.COMPLETED and job.undo is None

    code, out, _ = run_cli(capsys, "undo", KEY, "--stack", "tp", "--yes", "--no-wait", "--json")

    assert code == 0
    assert json.loads(out)["requested"] is True
    (message,) = p.sqs.receive_message(QueueUrl=queue)["Messages"]
    assert json.loads(message["Body"]) == {"job_id": result.job.job_id}


def test_a_partial_undo_exits_1_and_reconcile_expects_what_it_left(
    imported: tuple[Pipeline, Result], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p, result = imported
    shared = sorted(result.imported.values())[2]
    stranger = make_device_cert("stranger", make_ca("stranger-ca"))
    arn = p.iot.register_certificate_without_ca(certificatePem=stranger.pem(), status="ACTIVE")[
        "certificateArn"
    ]
    p.iot.attach_thing_principal(thingName=shared, principal=arn)

    code, out, _ = run_cli(capsys, "undo", KEY, *local_state(p, tmp_path / "state"), "--yes", "--json")

    assert code == 1
    done = json.loads(out)
    assert done["status"] == "UNDO_PARTIAL"
    assert {(r["thing_name"], r["resource"]) for r in done["left"]} == {(shared, f"thing {shared}")}
    assert set(p.things()) - {shared} == set(p.things()) - set(result.imported.values())
    code, human, _ = run_cli(capsys, "undo", KEY, *local_state(p, tmp_path / "state"), "--yes")
    assert code == 1
    assert "Left in place" in human and "it now has other principals" in human

    code, out, _ = run_cli(capsys, "reconcile", KEY, *target(p), "--json")
    reconciled = json.loads(out)
    assert code == 1  # the stranger's certificate on the thing the undo left is real drift
    assert [(d["kind"], d["resource"], d["thing_name"]) for d in reconciled["drifts"]] == [
        ("extra", "principal", shared)
    ]
    assert reconciled["undone"] == 4  # no false "missing" for what the undo removed
    assert [record["thing_name"] for record in reconciled["left"]] == [shared]
    code, human, _ = run_cli(capsys, "reconcile", KEY, *target(p))
    assert "Left in place by the undo" in human and "1 resources left in place" in human


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bucket", "B", "--table", "T", "--yes"], "--bucket with --table allows --dry-run only"),
        (["--stack", "bare", "--yes"], "Stack bare has no UndoQueue"),
        (["--stack", "tp", "--yes", "--dry-run"], "No job with id or manifest key 'no/such.csv'"),
    ],
)
def test_usage_and_environment_errors_exit_2(
    imported: tuple[Pipeline, Result], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    p, _ = imported
    outputs = {
        "ManifestBucketName": {"Value": p.stack.bucket},
        "JobsTableName": {"Value": p.stack.physical_id("JobsTable")},
    }
    p.stack.client("cloudformation").create_stack(
        StackName="bare",
        TemplateBody=json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}, "Outputs": outputs}),
    )
    job = KEY if "--dry-run" not in argv else "no/such.csv"
    code, out, err = run_cli(capsys, "undo", job, *argv)
    assert (code, out) == (2, "")
    assert message in err
