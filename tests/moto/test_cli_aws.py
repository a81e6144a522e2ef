"""The AWS CLI conventions of the commands that talk to a deployed stack: --region, --profile, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from thingpress import cli

REMOTE_COMMANDS = [
    ["status", "--stack", "s"],
    ["report", "job", "--bucket", "b", "--table", "t"],
    ["sweep", "--stack", "s"],
    ["redrive", "--stack", "s"],
]
TABLE = {
    "TableName": "regional-jobs",
    "BillingMode": "PAY_PER_REQUEST",
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def aws_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty AWS config and credentials files, so nothing from the machine's ~/.aws leaks in."""
    config, credentials = tmp_path / "config", tmp_path / "credentials"
    config.write_text("")
    credentials.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def regional_table(aws_home: Path) -> Iterator[None]:
    """A jobs table that exists only in eu-west-1 (moto keeps regions apart)."""
    with mock_aws():
        boto3.client("dynamodb", region_name="eu-west-1").create_table(**TABLE)
        yield


def status_table(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    return run_cli(capsys, "status", "--bucket", "b", "--table", "regional-jobs", "--json", *flags)


def test_region_flag_wins_over_the_environment(
    capsys: pytest.CaptureFixture[str], regional_table: None
) -> None:
    code, out, _ = status_table(capsys, "--region", "eu-west-1")
    assert (code, json.loads(out)["jobs"]) == (0, [])
    code, out, err = status_table(capsys)  # us-east-1 from the environment: no such table there
    assert code == 2
    assert out == ""
    assert err.startswith("thingpress: ")
    assert "ResourceNotFoundException" in err
    assert len(err.splitlines()) == 1  # no JSON log line besides the error


def test_aws_region_is_honoured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, regional_table: None
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    code, out, _ = status_table(capsys)
    assert (code, json.loads(out)["jobs"]) == (0, [])


def test_aws_region_wins_over_aws_default_region(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, regional_table: None
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    code, _, _ = status_table(capsys)
    assert code == 0


def test_profile_gives_region_and_credentials(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, aws_home: Path, regional_table: None
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    (aws_home / "config").write_text("[profile ops]\nregion = eu-west-1\n")
    (aws_home / "credentials").write_text("[ops]\naws_access_key_id = a\naws_secret_access_key = b\n")
    code, out, _ = status_table(capsys, "--profile", "ops")
    assert (code, json.loads(out)["jobs"]) == (0, [])


@pytest.mark.parametrize("argv", REMOTE_COMMANDS)
def test_no_region_is_one_sentence_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, aws_home: Path, argv: list[str]
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    code, out, err = run_cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == "thingpress: No AWS region: pass --region or set AWS_REGION.\n"


@pytest.mark.parametrize("argv", REMOTE_COMMANDS)
def test_no_credentials_is_one_sentence_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, aws_home: Path, argv: list[str]
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    code, out, err = run_cli(capsys, *argv, "--region", "eu-west-1")
    assert (code, out) == (2, "")
    assert err == (
        "thingpress: No AWS credentials found: configure a profile (aws configure) or pass --profile.\n"
    )


def test_unknown_profile_is_one_sentence_exit_2(capsys: pytest.CaptureFixture[str], aws_home: Path) -> None:
    code, out, err = run_cli(capsys, "status", "--stack", "s", "--profile", "nobody")
    assert (code, out) == (2, "")
    assert err == "thingpress: No AWS profile named 'nobody': check --profile or AWS_PROFILE.\n"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("NoRegionError", "No AWS region: pass --region or set AWS_REGION."),
        (
            "NoCredentialsError",
            "No AWS credentials found: configure a profile (aws configure) or pass --profile.",
        ),
    ],
)
def test_botocore_setup_errors_anywhere_are_one_sentence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, error: str, message: str
) -> None:
    from botocore import exceptions

    from thingpress import remote_cli

    def fail(**_kwargs: object) -> int:
        raise getattr(exceptions, error)()

    monkeypatch.setattr(remote_cli, "sweep_command", fail)
    code, out, err = run_cli(capsys, "sweep", "--stack", "s")
    assert (code, out, err) == (2, "", f"thingpress: {message}\n")
