"""The thingpress CLI: argument handling, exit codes, one-line errors, invoke plumbing, generate."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from thingpress import cli, invoke

REPO_ROOT = Path(__file__).resolve().parents[2]
THINGPRESS = REPO_ROOT / ".venv" / "bin" / "thingpress"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what fixtures printed
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("thingpress: ")
    assert "Traceback" not in err


# --- usage and environment errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["check"],
        ["local"],
        ["local", "import"],
        ["generate", "--vendor", "espressif", "--count", "x", "--out", "o.csv"],
        ["generate", "--vendor", "nokia", "--count", "1", "--out", "o.csv"],
        ["generate", "--vendor", "generated", "--count", "1", "--out", "o", "--bad-fraction", "2"],
        ["check", "m.csv", "--bundle-type", "E0E9"],
        ["status"],
        ["status", "--stack", "s", "--bucket", "b", "--table", "t"],
        ["report", "job", "--bucket", "b"],
        ["redrive", "--queue", "q"],
        ["sweep"],
        ["sweep", "--stack", "s", "--table", "t"],
    ],
)
def test_usage_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert_one_line_error(err)


@pytest.mark.parametrize("command", [["check"], ["local", "import"], ["invoke", "ManifestProviderFunction"]])
def test_missing_file_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nope.json"
    code, out, err = run_cli(capsys, *command, str(missing))
    assert code == 2
    assert out == ""
    assert_one_line_error(err)
    assert str(missing) in err


def test_check_verifiers_must_be_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("MAC,cn,cert\n")
    code, _, err = run_cli(capsys, "check", str(manifest), "--verifiers", str(tmp_path / "absent"))
    assert code == 2
    assert_one_line_error(err)
    assert "Directory not found" in err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("local", "check", "invoke", "status", "report", "generate", "sweep", "redrive", "demo"):
        assert command in out


def test_bare_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys)
    assert code == 2
    assert out.startswith("usage: thingpress")
    assert "status" in out
    assert err == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    expected = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out == f"thingpress {expected}\n"


def test_version_falls_back_to_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib
    from importlib import metadata

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    expected = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert cli.version() == expected


def test_console_script_usage_error_has_no_traceback() -> None:
    if not THINGPRESS.exists():
        pytest.skip(f"{THINGPRESS} is not installed (run make install)")
    completed = subprocess.run(
        [str(THINGPRESS), "check", "/definitely/not/here.csv"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert_one_line_error(completed.stderr)


def test_unexpected_error_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def explode(*_args: object, **_kwargs: object) -> int:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(invoke, "invoke_command", explode)
    event = tmp_path / "e.json"
    event.write_text("{}")
    code, _, err = run_cli(capsys, "invoke", "Fn", str(event))
    assert code == 2
    assert_one_line_error(err)
    assert "RuntimeError: boom second line" in err


# --- invoke plumbing with a tiny handler ------------------------------------------------------

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Timeout: 30
    Environment:
      Variables:
        GREETING: hello
Resources:
  Bucket:
    Type: AWS::S3::Bucket
  TinyLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: src/tinylayer
  TinyFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/tinyfn
      Handler: tinyfn.app.handler
      Layers: [!Ref TinyLayer]
      Environment:
        Variables:
          THINGPRESS_BUCKET: !Ref Bucket
          PARTITION: !Sub "${AWS::Partition}"
"""

HANDLER = """\
import os

import tinylayer


def handler(event, context):
    if event.get("fail"):
        raise ValueError("the event asked to fail")
    return {{
        "code": "{where}",
        "layer": tinylayer.WHERE,
        "greeting": os.environ["GREETING"],
        "partition": os.environ["PARTITION"],
        "bucket": os.environ["THINGPRESS_BUCKET"],
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "event": event,
        "function": context.function_name,
        "time_left": context.get_remaining_time_in_millis() > 0,
    }}
"""


def _write_function(root: Path, where: str) -> None:
    (root / "tinyfn").mkdir(parents=True)
    (root / "tinyfn" / "__init__.py").write_text("")
    (root / "tinyfn" / "app.py").write_text(HANDLER.format(where=where))


def _write_layer(root: Path, where: str) -> None:
    (root / "tinylayer").mkdir(parents=True)
    (root / "tinylayer" / "__init__.py").write_text(f'WHERE = "{where}"\n')


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    _write_function(tmp_path / "src" / "tinyfn", "source")
    _write_layer(tmp_path / "src" / "tinylayer", "source")
    (tmp_path / "event.json").write_text(
        json.dumps({"Records": [{"s3": {"bucket": {"name": invoke.EXAMPLE_BUCKET}}}]})
    )
    return tmp_path


def _invoke(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, project: Path, *extra: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("THINGPRESS_BUCKET", "real-bucket")
    monkeypatch.chdir(project)
    return run_cli(capsys, "invoke", "TinyFunction", "event.json", *extra)


def test_invoke_falls_back_to_source_with_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_project: Path
) -> None:
    code, out, err = _invoke(capsys, monkeypatch, tiny_project)
    assert code == 0, err
    response = json.loads(out)
    assert response["code"] == "source"
    assert response["layer"] == "source"
    assert response["greeting"] == "hello"
    assert response["partition"] == "aws"
    assert response["bucket"] == "real-bucket"
    assert response["endpoint"] == "http://127.0.0.1:9"
    assert response["event"]["Records"][0]["s3"]["bucket"]["name"] == "real-bucket"
    assert response["function"] == "TinyFunction"
    assert response["time_left"] is True
    assert "warning" in err
    assert "source tree" in err


def test_invoke_prefers_build_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_project: Path
) -> None:
    build = tiny_project / ".aws-sam" / "build"
    _write_function(build / "TinyFunction", "build")
    _write_layer(build / "TinyLayer" / "python", "build")
    code, out, err = _invoke(capsys, monkeypatch, tiny_project)
    assert code == 0, err
    response = json.loads(out)
    assert (response["code"], response["layer"]) == ("build", "build")
    assert "older than the source" in err  # the build copies differ from the source files

    for source, built in (
        (tiny_project / "src" / "tinyfn", build / "TinyFunction"),
        (tiny_project / "src" / "tinylayer", build / "TinyLayer" / "python"),
    ):
        for path in source.rglob("*.py"):
            (built / path.relative_to(source)).write_bytes(path.read_bytes())
    code, out, err = _invoke(capsys, monkeypatch, tiny_project)
    assert code == 0, err
    assert json.loads(out)["code"] == "source"  # the current copy of the source, run from the build dir
    assert "warning" not in err


def test_invoke_build_dir_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_project: Path
) -> None:
    build = tiny_project / "elsewhere"
    _write_function(build / "TinyFunction", "build")
    _write_layer(build / "TinyLayer" / "python", "build")
    code, out, _ = _invoke(capsys, monkeypatch, tiny_project, "--build-dir", "elsewhere")
    assert code == 0
    assert json.loads(out)["code"] == "build"


def test_invoke_handler_error_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_project: Path
) -> None:
    (tiny_project / "event.json").write_text(json.dumps({"fail": True}))
    code, out, _ = _invoke(capsys, monkeypatch, tiny_project)
    assert code == 1
    document = json.loads(out)
    assert document["errorType"] == "ValueError"
    assert document["errorMessage"] == "the event asked to fail"


def test_invoke_unresolvable_variable_against_endpoint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_project: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("THINGPRESS_BUCKET", raising=False)
    monkeypatch.chdir(tiny_project)
    code, out, err = run_cli(capsys, "invoke", "TinyFunction", "event.json")
    assert code == 2
    assert out == ""
    assert_one_line_error(err)
    assert "THINGPRESS_BUCKET" in err


def test_invoke_unknown_function(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_project: Path
) -> None:
    monkeypatch.chdir(tiny_project)
    code, _, err = run_cli(capsys, "invoke", "NoSuchFunction", "event.json")
    assert code == 2
    assert_one_line_error(err)
    assert "NoSuchFunction" in err


def test_invoke_bad_event_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_project: Path
) -> None:
    (tiny_project / "event.json").write_text("{not json")
    monkeypatch.chdir(tiny_project)
    code, _, err = run_cli(capsys, "invoke", "TinyFunction", "event.json")
    assert code == 2
    assert_one_line_error(err)
    assert "not valid JSON" in err


def test_invoke_child_has_clean_pythonpath(tiny_project: Path) -> None:
    spec = invoke.resolve_function(tiny_project / "template.yaml", "TinyFunction", Path(".aws-sam/build"))
    (tiny_project / "src" / "tinyfn" / "tinyfn" / "app.py").write_text(
        "import os, sys\n"
        "def handler(event, context):\n"
        "    return {'pythonpath': os.environ['PYTHONPATH'], 'first': sys.path[1]}\n"
    )
    outcome = invoke.run_handler(spec, {}, {"X": "1"}, python=sys.executable)
    assert outcome.error is None
    assert outcome.response["pythonpath"].split(":") == [str(spec.code_dir), *map(str, spec.layer_dirs)]
    assert outcome.response["first"] == str(spec.code_dir)
    assert outcome.module_file == str(spec.code_dir / "tinyfn" / "app.py")


def test_rewrite_event_reaches_embedded_bodies() -> None:
    body = json.dumps({"bucket": invoke.EXAMPLE_BUCKET, "key": "k"})
    event = {"Records": [{"body": body}]}
    rewritten = invoke.rewrite_event(event, "mine")
    assert json.loads(rewritten["Records"][0]["body"])["bucket"] == "mine"
    assert invoke.rewrite_event(event, None) == event


# --- generate -----------------------------------------------------------------------------------


def test_generate_microchip_writes_and_reuses_its_signer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "m.json"
    assert cli.main(["generate", "--vendor", "microchip", "--count", "4", "--out", str(out)]) == 0
    first = capsys.readouterr().out
    signer = tmp_path / "m-signer.crt"
    assert signer.is_file()
    assert (tmp_path / "m-signer.key").is_file()
    assert "Wrote manifest signer" in first
    assert "4 good, 0 damaged" in first

    assert (
        cli.main(["generate", "--vendor", "microchip", "--count", "4", "--out", str(out), "--seed", "2"]) == 0
    )
    assert "Used manifest signer" in capsys.readouterr().out
    assert (tmp_path / "m-signer.crt").read_bytes() == signer.read_bytes()

    assert cli.main(["check", str(out), "--verifiers", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["imported"] == 4


def test_generate_explicit_signer_prefix(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    prefix = tmp_path / "keys" / "signer"
    out = tmp_path / "m.json"
    argv = ["generate", "--vendor", "microchip", "--count", "2", "--out", str(out), "--signer", str(prefix)]
    assert cli.main(argv) == 0
    assert (tmp_path / "keys" / "signer.crt").is_file()
    capsys.readouterr()
    (tmp_path / "keys" / "signer.key").unlink()
    code = cli.main(argv)
    assert code == 2
    assert_one_line_error(capsys.readouterr().err)


def test_generate_bad_fraction_lists_damage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "g.txt"
    argv = ["generate", "--vendor", "generated", "--count", "10", "--out", str(out), "--bad-fraction", "0.3"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "7 good, 3 damaged (3 garbage certificate)." in text
    assert text.count(": garbage certificate") == 3
    assert len(out.read_text().splitlines()) == 10


def test_generate_signer_only_for_microchip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["generate", "--vendor", "espressif", "--count", "1", "--out", str(tmp_path / "e.csv")]
    assert cli.main([*argv, "--signer", str(tmp_path / "s")]) == 2
    assert_one_line_error(capsys.readouterr().err)


# --- status, report and redrive against an endpoint (moto) ---------------------------------------------

DEPLOYED_TEMPLATE = {
    "Resources": {
        "ManifestBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "deployed-manifests"}},
        "JobsTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "TableName": "deployed-jobs",
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
            },
        },
        "IntakeQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "deployed-intake"}},
        "IntakeDLQ": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "deployed-intake-dlq"}},
        "ImportQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "deployed-import"}},
        "ImportDLQ": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "deployed-import-dlq"}},
    },
    "Outputs": {
        "ManifestBucketName": {"Value": {"Ref": "ManifestBucket"}},
        "JobsTableName": {"Value": {"Ref": "JobsTable"}},
        "IntakeQueueUrl": {"Value": {"Ref": "IntakeQueue"}},
        "IntakeDLQUrl": {"Value": {"Ref": "IntakeDLQ"}},
        "ImportQueueUrl": {"Value": {"Ref": "ImportQueue"}},
        "ImportDLQUrl": {"Value": {"Ref": "ImportDLQ"}},
    },
}


@pytest.fixture
def deployed() -> Iterator[dict[str, Any]]:
    """A stack shaped like Thingpress (bucket, jobs table, queues and their outputs) on moto."""
    import boto3
    from moto import mock_aws

    from layer_utils.jobs import FailureRecord, ImportedRecord, JobStore

    with mock_aws():
        cloudformation = boto3.client("cloudformation")
        cloudformation.create_stack(StackName="deployed", TemplateBody=json.dumps(DEPLOYED_TEMPLATE))
        s3, dynamodb, iot = boto3.client("s3"), boto3.client("dynamodb"), boto3.client("iot")
        store = JobStore("deployed-jobs", dynamodb=dynamodb, s3=s3, emit=lambda _name: None)
        # A finished job: one thing imported (and registered in IoT), one entry failed.
        _, done = store.create_job("deployed-manifests", "generated/one.txt", "v1", vendor="generated")
        assert store.claim_parse(done.job_id, "test", datetime.now(UTC) + timedelta(minutes=5))
        assert store.mark_parsed(done.job_id, "test", 2, {"entries_done": 2, "next_chunk": 1})
        certificate = iot.create_keys_and_certificate(setAsActive=True)
        iot.create_thing(thingName="device-1")
        iot.attach_thing_principal(thingName="device-1", principal=certificate["certificateArn"])
        store.record_outcome(
            done.job_id,
            "000000",
            [ImportedRecord("line 1", "device-1", certificate["certificateId"])],
            [FailureRecord("line 2", None, "line 2: not a certificate.", "invalid_input")],
        )
        assert store.try_complete(done.job_id) is not None
        # A job still importing.
        _, busy = store.create_job("deployed-manifests", "espressif/two.csv", "v1", vendor="espressif")
        urls = {
            name: boto3.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
            for name in ("deployed-intake", "deployed-intake-dlq", "deployed-import", "deployed-import-dlq")
        }
        yield {"done": done.job_id, "busy": busy.job_id, "urls": urls}


def test_status_by_stack(capsys: pytest.CaptureFixture[str], deployed: dict[str, Any]) -> None:
    code, out, _ = run_cli(capsys, "status", "--stack", "deployed", "--json")
    assert code == 0  # it listed the jobs, one with failures and one unfinished: what was asked
    document = json.loads(out)
    assert (document["bucket"], document["table"]) == ("deployed-manifests", "deployed-jobs")
    jobs = {job["key"]: job for job in document["jobs"]}
    assert jobs["generated/one.txt"]["status"] == "COMPLETED_WITH_ERRORS"
    assert (jobs["generated/one.txt"]["imported"], jobs["generated/one.txt"]["failed"]) == (1, 1)
    assert jobs["espressif/two.csv"]["status"] == "RECEIVED"


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--stack", "deployed", "--fail-on-errors"],
        ["--region", "us-east-1", "status", "--fail-on-errors", "--stack", "deployed"],
        ["report", "generated/one.txt", "--stack", "deployed", "--fail-on-errors"],
    ],
)
def test_fail_on_errors_exits_1_when_a_job_had_failures(
    capsys: pytest.CaptureFixture[str], deployed: dict[str, Any], argv: list[str]
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    assert "generated/one.txt" in out
    assert err == ""


def test_fail_on_errors_exits_0_when_no_job_had_failures(
    capsys: pytest.CaptureFixture[str], deployed: dict[str, Any]
) -> None:
    import boto3

    from layer_utils.jobs import JobStore

    store = JobStore("deployed-jobs", dynamodb=boto3.client("dynamodb"), s3=boto3.client("s3"))
    _, clean = store.create_job("deployed-manifests", "espressif/clean.csv", "v1", vendor="espressif")
    assert store.claim_parse(clean.job_id, "t", datetime.now(UTC) + timedelta(minutes=1))
    assert store.mark_parsed(clean.job_id, "t", 0, {"entries_done": 0})
    assert store.try_complete(clean.job_id) is not None
    assert store.get_job(clean.job_id).status == "COMPLETED"  # type: ignore[union-attr]
    code, _, _ = run_cli(capsys, "report", clean.job_id, "--stack", "deployed", "--fail-on-errors")
    assert code == 0


def test_status_human_output(capsys: pytest.CaptureFixture[str], deployed: dict[str, Any]) -> None:
    code, out, _ = run_cli(capsys, "status", "--bucket", "deployed-manifests", "--table", "deployed-jobs")
    assert code == 0
    assert "generated/one.txt" in out
    assert "COMPLETED_WITH_ERRORS" in out


@pytest.mark.parametrize("which", ["job id", "manifest key"])
def test_report_reads_things_back(
    capsys: pytest.CaptureFixture[str], deployed: dict[str, Any], which: str
) -> None:
    target = deployed["done"] if which == "job id" else "generated/one.txt"
    code, out, _ = run_cli(capsys, "report", target, "--stack", "deployed", "--json")
    assert code == 0  # the report was shown; --fail-on-errors makes its failures an exit 1
    report = json.loads(out)
    assert report["job_id"] == deployed["done"]
    assert report["status"] == "COMPLETED_WITH_ERRORS"
    assert report["failures"] == [
        {
            "locator": "line 2",
            "thing_name": None,
            "certificate_id": None,
            "reason": "line 2: not a certificate.",
            "error_class": "invalid_input",
        }
    ]
    (thing,) = report["things"]
    assert thing["thing_name"] == "device-1"
    assert thing["certificate_id"] == report["imported_entries"][0]["certificate_id"]


def test_report_of_a_manifest_key_follows_its_pointer(
    capsys: pytest.CaptureFixture[str], deployed: dict[str, Any]
) -> None:
    import boto3

    from layer_utils.jobs import JobStore

    store = JobStore("deployed-jobs", dynamodb=boto3.client("dynamodb"), s3=boto3.client("s3"))
    # A later upload of the same key whose job has not finished: the pointer still names the first.
    _, pending = store.create_job("deployed-manifests", "generated/one.txt", "v2", vendor="generated")
    assert store.list_jobs()[0].job_id == pending.job_id
    code, out, _ = run_cli(capsys, "report", "generated/one.txt", "--stack", "deployed", "--json")
    assert code == 0
    assert json.loads(out)["job_id"] == deployed["done"]


def test_report_unknown_job(capsys: pytest.CaptureFixture[str], deployed: dict[str, Any]) -> None:
    code, out, err = run_cli(
        capsys, "report", "nope", "--bucket", "deployed-manifests", "--table", "deployed-jobs"
    )
    assert code == 2
    assert out == ""
    assert_one_line_error(err)
    assert "'nope'" in err


def test_unknown_stack(capsys: pytest.CaptureFixture[str], deployed: dict[str, Any]) -> None:
    code, _, err = run_cli(capsys, "status", "--stack", "absent")
    assert code == 2
    assert_one_line_error(err)
    assert "absent" in err


def test_redrive_moves_messages_with_attributes(
    capsys: pytest.CaptureFixture[str], deployed: dict[str, Any]
) -> None:
    import boto3

    sqs = boto3.client("sqs")
    urls = deployed["urls"]
    for number in range(23):
        sqs.send_message(
            QueueUrl=urls["deployed-import-dlq"],
            MessageBody=f"body {number}",
            MessageAttributes={"n": {"DataType": "Number", "StringValue": str(number)}},
        )
    sqs.send_message(QueueUrl=urls["deployed-intake-dlq"], MessageBody="intake body")

    code, out, _ = run_cli(capsys, "redrive", "--stack", "deployed", "--json")
    assert code == 0
    document = json.loads(out)
    assert (document["moved"], document["failed"]) == (24, 0)

    bodies: dict[str, str] = {}
    while messages := sqs.receive_message(
        QueueUrl=urls["deployed-import"], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        for message in messages:
            bodies[message["Body"]] = message["MessageAttributes"]["n"]["StringValue"]
            sqs.delete_message(QueueUrl=urls["deployed-import"], ReceiptHandle=message["ReceiptHandle"])
    assert bodies == {f"body {n}": str(n) for n in range(23)}
    for dlq in ("deployed-import-dlq", "deployed-intake-dlq"):
        attributes = sqs.get_queue_attributes(
            QueueUrl=urls[dlq], AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"

    code, out, _ = run_cli(
        capsys, "redrive", "--queue", urls["deployed-intake-dlq"], "--to", urls["deployed-intake"]
    )
    assert code == 0
    assert "moved 0" in out


# --- sweep, and redrive that leaves every job final -------------------------------------------------------


def stuck_jobs(hours: float = 9) -> dict[str, str]:
    """Create, on the deployed fixture's table, jobs whose last progress was ``hours`` ago.

    ``dlq``: IMPORTING with one of two entries settled, its other import message in the ImportDLQ;
    ``lost``: RECEIVED, its intake message lost. Returns their job ids.
    """
    import boto3

    from layer_utils.jobs import ImportedRecord, JobStore
    from layer_utils.messages import ImportEntry, ImportMessage, MessageSettings, encode_import_message

    then = datetime.now(UTC) - timedelta(hours=hours)
    store = JobStore(
        "deployed-jobs",
        dynamodb=boto3.client("dynamodb"),
        s3=boto3.client("s3"),
        clock=lambda: then,
        emit=lambda _name: None,
    )
    _, dlq = store.create_job("deployed-manifests", "generated/dlq.txt", "v1", vendor="generated")
    assert store.claim_parse(dlq.job_id, "parser", then + timedelta(minutes=15))
    assert store.mark_parsed(dlq.job_id, "parser", 2, {"entries_done": 2, "next_chunk": 2})
    assert store.record_outcome(dlq.job_id, "000000", [ImportedRecord("line 1", "t-1", "a" * 64)], [])
    message = ImportMessage(
        job_id=dlq.job_id,
        chunk="000001",
        attempt=0,
        settings=MessageSettings(),
        entries=(ImportEntry("line 2", "t-2", "b" * 64, "-----BEGIN CERTIFICATE-----\n"),),
    )
    sqs = boto3.client("sqs")
    dlq_url = sqs.get_queue_url(QueueName="deployed-import-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq_url, MessageBody=encode_import_message(message))
    _, lost = store.create_job("deployed-manifests", "generated/lost.txt", "v1")
    return {"dlq": dlq.job_id, "lost": lost.job_id}


def job_status(job_id: str) -> tuple[str, str | None]:
    import boto3

    from layer_utils.jobs import JobStore

    job = JobStore("deployed-jobs", dynamodb=boto3.client("dynamodb"), s3=boto3.client("s3")).get_job(job_id)
    assert job is not None
    return str(job.status), job.reason


def test_sweep_finishes_stuck_jobs_and_leaves_the_rest(
    capsys: pytest.CaptureFixture[str], deployed: dict[str, Any]
) -> None:
    import boto3

    stuck = stuck_jobs()
    code, out, _ = run_cli(capsys, "sweep", "--stack", "deployed", "--json", "--fail-on-errors")
    assert code == 1  # it had to fail stuck jobs; without --fail-on-errors that is exit 0
    document = json.loads(out)
    assert document["examined"] == 3  # the two stuck jobs and the fixture's fresh one
    assert {job["job_id"]: job["status"] for job in document["swept"]} == {
        stuck["dlq"]: "FAILED",
        stuck["lost"]: "FAILED",
    }
    status, reason = job_status(stuck["dlq"])
    assert status == "FAILED"
    assert reason is not None
    assert reason.startswith("The job was stopped because no progress since ")
    assert reason.endswith("; 1 entry that had not settled is counted as failed.")
    report = json.loads(
        boto3.client("s3")
        .get_object(Bucket="deployed-manifests", Key="reports/generated/dlq.txt.json")["Body"]
        .read()
    )
    assert (report["status"], report["imported"], report["failed"], report["unsettled"]) == (
        "FAILED",
        1,
        1,
        1,
    )
    assert job_status(deployed["busy"]) == ("RECEIVED", None)
    code, out, _ = run_cli(capsys, "sweep", "--bucket", "deployed-manifests", "--table", "deployed-jobs")
    assert code == 0
    assert "Jobs finished by the sweep: 0 of 1 unfinished" in out


def test_redrive_gives_redriven_jobs_a_fresh_start_and_sweeps_the_rest(
    capsys: pytest.CaptureFixture[str], deployed: dict[str, Any]
) -> None:
    stuck = stuck_jobs()
    code, out, _ = run_cli(capsys, "redrive", "--stack", "deployed", "--json")
    assert code == 0
    document = json.loads(out)
    assert (document["moved"], document["failed"]) == (1, 0)
    # The job whose import message went back to the ImportQueue waits for it...
    assert document["restarted"] == [stuck["dlq"]]
    assert job_status(stuck["dlq"]) == ("IMPORTING", None)
    # ...the one with nothing left to redrive is finished now.
    assert [(job["job_id"], job["status"]) for job in document["swept"]] == [(stuck["lost"], "FAILED")]


def test_redrive_of_a_swept_job_leaves_it_final(
    capsys: pytest.CaptureFixture[str], deployed: dict[str, Any]
) -> None:
    stuck = stuck_jobs()
    assert run_cli(capsys, "sweep", "--stack", "deployed")[0] == 0
    swept = job_status(stuck["dlq"])
    code, out, _ = run_cli(capsys, "redrive", "--stack", "deployed")
    assert code == 0
    assert "moved 1, failed 0" in out
    assert "Unfinished jobs given a fresh start: 0" in out
    assert job_status(stuck["dlq"]) == swept
    assert swept[0] == "FAILED"
