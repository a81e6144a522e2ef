"""The ``thingpress`` command line: run, check and inspect Thingpress without (or with) AWS.

Exit codes: 0 when everything was imported or valid, 1 when some entries failed, 2 for a usage or
environment error. Errors are one line on stderr, never a traceback (set ``THINGPRESS_DEBUG=1`` to
see the traceback of an unexpected error). ``--json`` prints exactly one JSON document on stdout.
A bare ``thingpress`` prints the help on stdout and exits 2 (no command is a usage error);
``thingpress --version`` prints the version. The commands that talk to a deployed stack (``status``,
``report``, ``sweep``, ``redrive``) take ``--region`` and ``--profile``, as the AWS CLI does.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from botocore.exceptions import NoCredentialsError, NoRegionError

from layer_utils.cert_utils import DEFAULT_NAME_SOURCES, parse_name_sources
from thingpress.console import CliError, handler_logs_to_stderr

EXIT_OK = 0
EXIT_FAILED_ENTRIES = 1
EXIT_USAGE = 2

VENDORS = ("espressif", "infineon", "microchip", "generated")
BUNDLE_TYPES = ("E0E0", "E0E1", "E0E2")


def version() -> str:
    """Return the installed package's version, else the one in the source tree's ``pyproject.toml``."""
    try:
        return metadata.version("thingpress")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports usage errors as a ``CliError`` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise ``CliError`` with the usage error (one line) and exit code 2."""
        raise CliError(f"{self.prog}: {message} (see {self.prog} --help)", EXIT_USAGE)


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise CliError(f"File not found: {value}.", EXIT_USAGE)
    return path


def _existing_dir(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise CliError(f"Directory not found: {value}.", EXIT_USAGE)
    return path


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected zero or more, got {number}")
    return number


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {number}")
    return number


def _name_sources(value: str) -> tuple[str, ...]:
    try:
        return parse_name_sources(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def _add_manifest_arguments(parser: argparse.ArgumentParser, *, vendor_help: str) -> None:
    """Add a manifest and every import setting of the stack (``local import``, ``check``).

    Defaults come from the ``THINGPRESS_*`` variables the deployed functions read, so that ``check``
    and ``local import`` agree with the stack.
    """
    parser.add_argument("manifest", type=_existing_file, metavar="MANIFEST")
    parser.add_argument("--vendor", choices=VENDORS, help=vendor_help)
    parser.add_argument(
        "--verifiers", type=_existing_dir, metavar="DIR", help="Microchip signer certificates"
    )
    parser.add_argument(
        "--bundle-type",
        choices=BUNDLE_TYPES,
        default=os.environ.get("THINGPRESS_INFINEON_BUNDLE_TYPE", "").strip().upper() or "E0E0",
        help="Infineon bundle (default: $THINGPRESS_INFINEON_BUNDLE_TYPE or E0E0)",
    )
    parser.add_argument(
        "--allow-expired",
        action="store_true",
        default=_env_flag("THINGPRESS_ALLOW_EXPIRED"),
        help="accept expired device certificates (default: $THINGPRESS_ALLOW_EXPIRED)",
    )
    parser.add_argument(
        "--trusted-ca",
        action="append",
        default=[],
        type=_existing_file,
        metavar="FILE",
        help="trust anchor certificates; device certificates must chain to one (repeatable)",
    )
    parser.add_argument(
        "--thing-name-source",
        type=_name_sources,
        default=os.environ.get("THINGPRESS_THING_NAME_SOURCE", "").strip() or ",".join(DEFAULT_NAME_SOURCES),
        metavar="SOURCES",
        help="ordered thing-name sources, as the ThingNameSource parameter "
        "(default: $THINGPRESS_THING_NAME_SOURCE or vendor,cn,fingerprint)",
    )
    parser.add_argument(
        "--thing-name-prefix",
        default=os.environ.get("THINGPRESS_THING_NAME_PREFIX", ""),
        metavar="PREFIX",
        help="prefix added to every thing name (default: $THINGPRESS_THING_NAME_PREFIX)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _add_aws_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--region`` and ``--profile`` (and ``--json``) to a command that talks to a deployed stack."""
    parser.add_argument(
        "--region", help="AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's region)"
    )
    parser.add_argument("--profile", help="named profile of the AWS config files (default: $AWS_PROFILE)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _add_remote_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", help="CloudFormation stack name (resolves the bucket and table)")
    parser.add_argument("--bucket", help="intake bucket name (with --table, instead of --stack)")
    parser.add_argument("--table", help="jobs table name (with --bucket, instead of --stack)")
    _add_aws_options(parser)


def _add_all_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--all``: list every entry and thing, not only the first ``ROW_LIMIT`` rows (people's output)."""
    parser.add_argument(
        "--all",
        action="store_true",
        help="list every failed entry and every thing (default: failures grouped by reason, 10 things)",
    )


def _aws(args: argparse.Namespace) -> dict[str, Any]:
    return {"region": args.region, "profile": args.profile, "as_json": args.json}


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``thingpress`` command and its subcommands."""
    parser = _Parser(prog="thingpress", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    local = commands.add_parser("local", help="run the pipeline on the embedded local AWS emulator")
    local_commands = local.add_subparsers(dest="local_command", metavar="SUBCOMMAND", required=True)
    imp = local_commands.add_parser("import", help="import one manifest through the local stack")
    _add_manifest_arguments(imp, vendor_help="vendor prefix to upload to (default: sniff)")
    imp.add_argument("--policy", action="append", default=[], dest="policies", metavar="P")
    imp.add_argument("--thing-group", action="append", default=[], dest="thing_groups", metavar="G")
    imp.add_argument("--thing-type", metavar="T")
    imp.add_argument(
        "--dashboard", type=Path, metavar="HTML", help="draw the dashboard from the run's metrics"
    )
    _add_all_option(imp)
    imp.set_defaults(handler=_cmd_local_import)

    check = commands.add_parser("check", help="validate a manifest offline (no emulator, no AWS)")
    _add_manifest_arguments(check, vendor_help="vendor format (default: sniff)")
    _add_all_option(check)
    check.set_defaults(handler=_cmd_check)

    invoke = commands.add_parser("invoke", help="run one function handler on an event, like sam local invoke")
    invoke.add_argument("function", metavar="FUNCTION_LOGICAL_ID")
    invoke.add_argument("event", type=_existing_file, metavar="EVENT_FILE")
    invoke.add_argument("--template", type=_existing_file, default=None, metavar="FILE")
    invoke.add_argument("--build-dir", type=Path, default=Path(".aws-sam/build"), metavar="DIR")
    invoke.add_argument(
        "--upload",
        type=_existing_file,
        default=None,
        metavar="FILE",
        help="the manifest to upload for the event's S3 notification (default: the file in the event's "
        "folder named like the key)",
    )
    invoke.set_defaults(handler=_cmd_invoke)

    status = commands.add_parser("status", help="jobs of a deployed stack")
    _add_remote_target(status)
    status.set_defaults(handler=_cmd_status)

    report = commands.add_parser("report", help="the report of one job of a deployed stack")
    report.add_argument("job", metavar="JOB_ID_OR_MANIFEST_KEY")
    _add_remote_target(report)
    _add_all_option(report)
    report.set_defaults(handler=_cmd_report)

    generate = commands.add_parser("generate", help="write a synthetic manifest")
    generate.add_argument("--vendor", choices=VENDORS, required=True)
    generate.add_argument("--count", type=_positive_int, required=True)
    generate.add_argument("--out", type=Path, required=True, metavar="PATH")
    generate.add_argument("--bad-fraction", type=_fraction, default=0.0, metavar="F")
    generate.add_argument("--signer", type=Path, metavar="PATH_PREFIX")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--json", action="store_true", help="print one JSON document")
    generate.set_defaults(handler=_cmd_generate)

    sweep = commands.add_parser(
        "sweep",
        help="finish the jobs of a deployed stack that stopped making progress (as the JobSweeper does)",
    )
    _add_remote_target(sweep)
    sweep.set_defaults(handler=_cmd_sweep)

    redrive = commands.add_parser("redrive", help="move dead-letter messages back to their source queue")
    redrive.add_argument("--stack", help="CloudFormation stack name (redrives both DLQs)")
    redrive.add_argument("--queue", metavar="DLQ_URL")
    redrive.add_argument("--to", metavar="SOURCE_URL")
    _add_aws_options(redrive)
    redrive.set_defaults(handler=_cmd_redrive)

    demo = commands.add_parser("demo", help="the whole pipeline on every vendor format, locally")
    demo.add_argument("--count", type=_positive_int, default=25, help="certificates per vendor manifest")
    demo.add_argument(
        "--dashboard",
        type=Path,
        default=Path("out/demo-dashboard.html"),
        metavar="HTML",
        help="where to draw the dashboard from the run's metrics (default: %(default)s)",
    )
    _add_all_option(demo)
    demo.add_argument("--json", action="store_true", help="print one JSON document")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _remote_target(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    if args.stack and (args.bucket or args.table):
        raise CliError("Use either --stack or --bucket with --table, not both.")
    if not args.stack and not (args.bucket and args.table):
        raise CliError("Name the deployment with --stack NAME or with both --bucket and --table.")
    return args.stack, args.bucket, args.table


def _manifest_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Return the values of `_add_manifest_arguments`'s options as keyword arguments (check, local import)."""
    return {
        "vendor": args.vendor,
        "verifiers": args.verifiers,
        "trusted_cas": args.trusted_ca,
        "bundle_type": args.bundle_type,
        "allow_expired": args.allow_expired,
        "name_sources": args.thing_name_source,
        "thing_name_prefix": args.thing_name_prefix,
        "as_json": args.json,
    }


def _cmd_local_import(args: argparse.Namespace) -> int:
    from thingpress import demo  # noqa: PLC0415 - the emulator loads only when needed

    return demo.local_import_command(
        args.manifest,
        policies=args.policies,
        thing_groups=args.thing_groups,
        thing_type=args.thing_type,
        dashboard=args.dashboard,
        show_all=args.all,
        **_manifest_settings(args),
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from thingpress import check  # noqa: PLC0415

    return check.check_command(args.manifest, show_all=args.all, **_manifest_settings(args))


def _cmd_invoke(args: argparse.Namespace) -> int:
    from thingpress import invoke  # noqa: PLC0415

    return invoke.invoke_command(
        args.function, args.event, template=args.template, build_dir=args.build_dir, upload=args.upload
    )


def _cmd_status(args: argparse.Namespace) -> int:
    from thingpress import remote_cli  # noqa: PLC0415

    stack, bucket, table = _remote_target(args)
    with handler_logs_to_stderr(logging.ERROR):  # the CLI reports AWS failures itself
        return remote_cli.status_command(stack=stack, bucket=bucket, table=table, **_aws(args))


def _cmd_report(args: argparse.Namespace) -> int:
    from thingpress import remote_cli  # noqa: PLC0415

    stack, bucket, table = _remote_target(args)
    with handler_logs_to_stderr(logging.ERROR):  # the CLI reports AWS failures itself
        return remote_cli.report_command(
            args.job, stack=stack, bucket=bucket, table=table, show_all=args.all, **_aws(args)
        )


def _cmd_generate(args: argparse.Namespace) -> int:
    from thingpress import demo  # noqa: PLC0415

    return demo.generate_command(
        args.vendor,
        args.count,
        args.out,
        bad_fraction=args.bad_fraction,
        signer=args.signer,
        seed=args.seed,
        as_json=args.json,
    )


def _cmd_sweep(args: argparse.Namespace) -> int:
    from thingpress import remote_cli  # noqa: PLC0415

    stack, bucket, table = _remote_target(args)
    with handler_logs_to_stderr(logging.ERROR):  # the CLI reports AWS failures itself
        return remote_cli.sweep_command(stack=stack, bucket=bucket, table=table, **_aws(args))


def _cmd_redrive(args: argparse.Namespace) -> int:
    from thingpress import remote_cli  # noqa: PLC0415

    if args.stack and (args.queue or args.to):
        raise CliError("Use either --stack or --queue with --to, not both.")
    if not args.stack and not (args.queue and args.to):
        raise CliError("Name the queues with --stack NAME or with both --queue DLQ_URL and --to SOURCE_URL.")
    with handler_logs_to_stderr(logging.ERROR):  # the CLI reports AWS failures itself
        return remote_cli.redrive_command(stack=args.stack, queue=args.queue, to=args.to, **_aws(args))


def _cmd_demo(args: argparse.Namespace) -> int:
    from thingpress import demo  # noqa: PLC0415

    return demo.demo_command(count=args.count, dashboard=args.dashboard, show_all=args.all, as_json=args.json)


def _describe(error: BaseException) -> str:
    """Return one line for an unexpected error: its type and message, without newlines."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _aws_setup_message(error: NoRegionError | NoCredentialsError) -> str:
    """Return the one sentence that says how to give the CLI the missing AWS region or credentials."""
    from thingpress import remote_cli  # noqa: PLC0415

    return remote_cli.NO_REGION if isinstance(error, NoRegionError) else remote_cli.NO_CREDENTIALS


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``thingpress`` command; every error is reported as one line on stderr.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 all good, 1 some entries failed, 2 usage or environment error.

    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except CliError as error:
        print(f"thingpress: {error}", file=sys.stderr)
        return error.exit_code
    except (NoRegionError, NoCredentialsError) as error:
        print(f"thingpress: {_aws_setup_message(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("thingpress: interrupted.", file=sys.stderr)
        return 130
    except OSError as error:
        name = f" {error.filename}" if error.filename else ""
        print(f"thingpress: cannot access{name}: {error.strerror or error}.", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:
        if os.environ.get("THINGPRESS_DEBUG"):
            traceback.print_exc()
        print(f"thingpress: {_describe(error)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
