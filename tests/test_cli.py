"""The thingpress CLI: argument handling, exit codes, one-line errors, invoke plumbing, generate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from thingpress import cli, invoke

REPO_ROOT = Path(__file__).resolve().parents[1]
THINGPRESS = REPO_ROOT / ".venv" / "bin" / "thingpress"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
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
        [],
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
    for command in ("local", "check", "invoke", "status", "report", "generate", "redrive", "demo"):
        assert command in out


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
