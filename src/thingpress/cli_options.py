"""The options and argument types of the ``thingpress`` command line (`thingpress.cli` builds the parser).

Global options (``--region``, ``--profile``, ``-v``) are accepted before and after the command, as
with the AWS CLI; every option has help text and every command an example (`example`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, NoReturn

from layer_utils.cert_utils import DEFAULT_NAME_SOURCES, parse_name_sources
from thingpress.console import CliError

EXIT_OK = 0
EXIT_FAILED_ENTRIES = 1
EXIT_USAGE = 2

VENDORS = ("espressif", "infineon", "microchip", "generated")
BUNDLE_TYPES = ("E0E0", "E0E1", "E0E2")


EXIT_CODES = """exit codes:
  0  the command did what was asked; status, report and sweep exit 0 also when jobs had failures
  1  entries or items failed (check, local import, demo, invoke, redrive), reconcile found drift,
     undo ended UNDO_PARTIAL, or --fail-on-errors found a job with failures (status, report, sweep)
  2  usage or environment error: bad arguments, a missing file, no AWS region or credentials"""


class Parser(argparse.ArgumentParser):
    """An argument parser that reports usage errors as a ``CliError`` instead of exiting.

    Help keeps the line breaks of the description and the epilog (the examples).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Create the parser with `argparse.RawDescriptionHelpFormatter`."""
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Raise ``CliError`` with the usage error (one line, naming the subcommand) and exit code 2."""
        command = self.prog.removeprefix("thingpress").strip()
        where = f"{command}: " if command else ""
        raise CliError(f"{where}{message} (see {self.prog} --help)", EXIT_USAGE)


def example(*lines: str) -> str:
    """Return a command's help epilog: ``example:`` and the command lines, indented."""
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def existing_file(value: str) -> Path:
    """Return ``value`` as a path; raise ``CliError`` (exit 2) when it is not an existing file."""
    path = Path(value)
    if not path.is_file():
        raise CliError(f"File not found: {value}.", EXIT_USAGE)
    return path


def existing_dir(value: str) -> Path:
    """Return ``value`` as a path; raise ``CliError`` (exit 2) when it is not an existing directory."""
    path = Path(value)
    if not path.is_dir():
        raise CliError(f"Directory not found: {value}.", EXIT_USAGE)
    return path


def positive_int(value: str) -> int:
    """Return ``value`` as a whole number of zero or more (an ``argparse`` type)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected zero or more, got {number}")
    return number


def seconds(value: str) -> float:
    """Return ``value`` as a number of seconds, zero or more (argparse type).

    Raises:
        argparse.ArgumentTypeError: not a number, negative or NaN.

    """
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected zero or more seconds, got {value}")
    return number


def fraction(value: str) -> float:
    """Return ``value`` as a number between 0 and 1 (an ``argparse`` type)."""
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


def add_manifest_arguments(parser: argparse.ArgumentParser, *, vendor_help: str) -> None:
    """Add a manifest and every import setting of the stack (``local import``, ``check``).

    Defaults come from the ``THINGPRESS_*`` variables the deployed functions read, so that ``check``
    and ``local import`` agree with the stack.
    """
    parser.add_argument("manifest", type=existing_file, metavar="MANIFEST", help="the manifest file")
    parser.add_argument("--vendor", choices=VENDORS, help=vendor_help)
    parser.add_argument(
        "--verifiers",
        type=existing_dir,
        metavar="DIR",
        help="folder of Microchip signer certificates (.crt/.pem) that verify the manifest's signatures",
    )
    parser.add_argument(
        "--bundle-type",
        choices=BUNDLE_TYPES,
        default=os.environ.get("THINGPRESS_INFINEON_BUNDLE_TYPE", "").strip().upper() or "E0E0",
        help="Infineon bundle (default: $THINGPRESS_INFINEON_BUNDLE_TYPE or E0E0)",
    )
    add_operator_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def add_operator_options(parser: argparse.ArgumentParser) -> None:
    """Add the import settings that are the operator's (the stack's parameters), not an uploader's."""
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
        type=existing_file,
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


REGION_HELP = "AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's region)"
PROFILE_HELP = "named profile of the AWS config files (default: $AWS_PROFILE)"
VERBOSE_HELP = "show the Lambda handlers' logs (JSON lines) on stderr"
AWS_COMMANDS = ("status", "report", "reconcile", "undo", "sweep", "redrive")
"""The commands that talk to a deployed stack: they take ``--region`` and ``--profile``."""


def add_global_options(parser: argparse.ArgumentParser, *, aws: bool, top: bool = False) -> None:
    """Add the global options: on the top parser with defaults, on a command without (``SUPPRESS``).

    A command's parser leaves an option it was not given out of the namespace, so the value given
    before the command (or the top parser's default) stays: ``thingpress --region R status`` and
    ``thingpress status --region R`` mean the same.
    """
    unset = None if top else argparse.SUPPRESS
    if aws:
        parser.add_argument("--region", default=unset, help=REGION_HELP)
        parser.add_argument("--profile", default=unset, help=PROFILE_HELP)
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS, help=VERBOSE_HELP
    )


def add_aws_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--region`` and ``--profile`` (and ``--json``) to a command that talks to a deployed stack."""
    add_global_options(parser, aws=True)
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def add_fail_on_errors(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--fail-on-errors``: exit 1 when ``what`` (a command that only reports exits 0 otherwise)."""
    parser.add_argument(
        "--fail-on-errors",
        action="store_true",
        help=f"exit 1 when {what} (default: exit 0 once the command has done its work)",
    )


STATE_HELP = "the local stack's state folder (default: $THINGPRESS_LOCAL_STATE or .thingpress/local)"


def add_local_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add ``--local`` and ``--state DIR``: reach the stack ``thingpress local up`` serves from DIR."""
    parser.add_argument("--local", action="store_true", help=help_text)
    parser.add_argument("--state", type=Path, metavar="DIR", help=STATE_HELP)


def add_import_settings(parser: argparse.ArgumentParser) -> None:
    """Add ``--policy``, ``--thing-group`` and ``--thing-type`` (``local import``, ``local up``)."""
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        dest="policies",
        metavar="P",
        help="IoT policy to attach to every certificate; created if missing (repeatable)",
    )
    parser.add_argument(
        "--thing-group",
        action="append",
        default=[],
        dest="thing_groups",
        metavar="G",
        help="static thing group to add every thing to; created if missing (repeatable)",
    )
    parser.add_argument("--thing-type", metavar="T", help="thing type of every thing; created if missing")


def add_all_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--all``: list every entry and thing, not only the first ``ROW_LIMIT`` rows (people's output)."""
    parser.add_argument(
        "--all",
        action="store_true",
        help="list every failed entry and every thing (default: failures grouped by reason, 10 things)",
    )


def add_remote_target(parser: argparse.ArgumentParser) -> None:
    """Add the deployment's name (``--stack``, or ``--bucket`` with ``--table``) and the AWS options."""
    parser.add_argument("--stack", help="CloudFormation stack name (resolves the bucket and table)")
    parser.add_argument("--bucket", help="intake bucket name (with --table, instead of --stack)")
    parser.add_argument("--table", help="jobs table name (with --bucket, instead of --stack)")
    add_local_option(parser, "the stack `thingpress local up` serves (instead of --stack)")
    add_aws_options(parser)


def aws_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Return ``--region``, ``--profile`` and ``--json`` as keyword arguments of `thingpress.remote_cli`."""
    return {"region": args.region, "profile": args.profile, "as_json": args.json}


def remote_exit(args: argparse.Namespace, code: int) -> int:
    """Return ``code`` (1: a job had failures) only with ``--fail-on-errors``; 0 otherwise."""
    return code if args.fail_on_errors else EXIT_OK


def check_global_options(args: argparse.Namespace) -> None:
    """Refuse ``--region`` or ``--profile`` before a command that does not talk to AWS."""
    if args.command not in AWS_COMMANDS and (args.region or args.profile):
        option = "--region" if args.region else "--profile"
        raise CliError(
            f"{option} applies only to {', '.join(AWS_COMMANDS)}; {args.command} does not talk to AWS."
        )


def remote_target(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    """Return ``--stack``, ``--bucket`` and ``--table``; ``CliError`` unless exactly one way is used."""
    if getattr(args, "local", False):
        return None, None, None
    if args.stack and (args.bucket or args.table):
        raise CliError("Use either --stack or --bucket with --table, not both.")
    if not args.stack and not (args.bucket and args.table):
        raise CliError("Name the deployment with --stack NAME or with both --bucket and --table.")
    return args.stack, args.bucket, args.table


def manifest_settings(args: argparse.Namespace) -> dict[str, Any]:
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
