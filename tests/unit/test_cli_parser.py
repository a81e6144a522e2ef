"""The ``thingpress`` parser: help on every option, an example on every command, global options anywhere."""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from thingpress import cli
from thingpress.cli_options import EXIT_CODES
from thingpress.console import handler_logs, handler_logs_to_stderr

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = str(REPO_ROOT / "events" / "manifest-espressif.csv")


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Yield the path of every parser below ``parser`` (``()`` is the top one)."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


def parser_at(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    for name in path:
        (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subparsers.choices[name]
    return parser


ALL = list(commands(cli.build_parser()))


def test_the_walk_finds_every_command() -> None:
    assert {" ".join(path) for path in ALL} >= {
        "",
        "local",
        "local import",
        "check",
        "invoke",
        "status",
        "report",
        "generate",
        "sweep",
        "redrive",
        "demo",
    }


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "thingpress")
def test_every_option_has_help(path: tuple[str, ...]) -> None:
    parser = parser_at(path)
    missing = [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert missing == [], f"thingpress {' '.join(path)}: options without help text"


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "thingpress")
def test_every_command_has_an_example(path: tuple[str, ...]) -> None:
    epilog = parser_at(path).epilog or ""
    assert epilog.startswith("example:\n"), f"thingpress {' '.join(path)} has no example"
    runnable = [line.split() for line in epilog.splitlines()[1:] if line.startswith("  thingpress ")]
    assert runnable, epilog
    for words in runnable:  # each example runs the command it documents
        at = [i for i in range(len(words)) if tuple(words[i : i + len(path)]) == path]
        assert at, (path, words)


def test_help_shows_examples_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "example:\n  thingpress demo" in out
    assert EXIT_CODES in out
    with pytest.raises(SystemExit):
        cli.main(["status", "--help"])
    assert "--fail-on-errors" in capsys.readouterr().out


def test_exit_codes_are_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "--fail-on-errors" in readme
    for code in ("| 0 |", "| 1 |", "| 2 |"):
        assert code in readme


@pytest.mark.parametrize(
    "argv",
    [
        ["--region", "eu-west-1", "--profile", "p", "-v", "status", "--stack", "s"],
        ["status", "--stack", "s", "--region", "eu-west-1", "--profile", "p", "-v"],
        ["--profile", "p", "status", "--region", "eu-west-1", "--stack", "s", "--verbose"],
    ],
)
def test_global_options_before_or_after_the_command(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert (args.command, args.stack, args.region, args.profile, args.verbose) == (
        "status",
        "s",
        "eu-west-1",
        "p",
        True,
    )


def test_global_options_default_when_absent() -> None:
    args = cli.build_parser().parse_args(["status", "--stack", "s"])
    assert (args.region, args.profile, args.verbose, args.fail_on_errors) == (None, None, False, False)
    args = cli.build_parser().parse_args(["-v", "local", "import", MANIFEST])
    assert (args.command, args.local_command, args.verbose) == ("local", "import", True)


@pytest.mark.parametrize(
    "argv",
    [
        ["--region", "eu-west-1", "check", MANIFEST],
        ["--profile", "p", "demo"],
        ["check", MANIFEST, "--region", "eu-west-1"],
    ],
)
def test_aws_options_with_a_local_command_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("thingpress: ")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["check"],
        ["frobnicate"],
        ["local", "import"],
        ["status", "--bogus"],
        ["generate", "--vendor", "nokia", "--count", "1", "--out", "x"],
        ["check", "/nonexistent/manifest.csv"],
        ["--region"],
    ],
)
def test_messages_never_repeat_the_program_name(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("thingpress: ")
    assert not err.startswith("thingpress: thingpress")


def test_a_subcommand_usage_error_names_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["local", "import"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thingpress: local import: the following arguments are required: MANIFEST")
    assert err.rstrip().endswith("(see thingpress local import --help)")


# --- handler logs ---------------------------------------------------------------------------------------


@pytest.fixture
def handler_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger like Powertools': its own handler on the stdout of the moment (here a buffer)."""
    stdout = io.StringIO()
    logger = logging.getLogger("thingpress-test-handler")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stdout)
    logger.addHandler(handler)
    yield logger, stdout
    logger.removeHandler(handler)


def test_handler_logs_are_dropped_without_verbose(
    handler_logger: tuple[logging.Logger, io.StringIO], capsys: pytest.CaptureFixture[str]
) -> None:
    logger, stdout = handler_logger
    with handler_logs(verbose=False):
        logger.warning("inside")
        made_inside = logging.getLogger("thingpress-test-made-inside")
        made_inside.error("also dropped")
        with handler_logs_to_stderr():
            logger.error("a command's own redirect does not bring them back")
    logger.warning("after")
    assert stdout.getvalue() == "after\n"
    assert capsys.readouterr().err == ""


def test_handler_logs_go_to_stderr_with_verbose(
    handler_logger: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, stdout = handler_logger
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    with handler_logs(verbose=True):
        logger.info("info shows with -v")
        with handler_logs_to_stderr(logging.ERROR):  # a command's redirect keeps every level with -v
            logger.info("still shown")
    logger.info("back on stdout")
    # (pytest's own capture handler is a stream handler too, and is redirected alike: skip its lines)
    ours = [line for line in stderr.getvalue().splitlines() if "test_cli_parser.py" not in line]
    assert ours == ["info shows with -v", "still shown"]
    assert stdout.getvalue() == "back on stdout\n"


def test_a_timed_out_request_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from thingpress import check

    def times_out(*_args: object, **_kwargs: object) -> int:
        raise TimeoutError("timed out")

    monkeypatch.setattr(check, "check_command", times_out)
    manifest = tmp_path / "m.csv"
    manifest.write_text("x")
    assert cli.main(["check", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thingpress: a request timed out: ") and err.count("\n") == 1
