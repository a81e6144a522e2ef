"""The ``thingpress`` command line: run, check and inspect Thingpress without (or with) AWS.

Exit codes (`EXIT_CODES`): 0 when the command did what was asked, 1 when entries or items failed
(or, with ``--fail-on-errors``, when a listed job had failures), 2 for a usage or environment error.
Errors are one line on stderr, never a traceback (set ``THINGPRESS_DEBUG=1`` to see the traceback of
an unexpected error). ``--json`` prints exactly one JSON document on stdout. A bare ``thingpress``
prints the help on stdout and exits 2 (no command is a usage error); ``thingpress --version`` prints
the version. The global options ``--region``, ``--profile`` and ``-v`` go before or after the command,
as with the AWS CLI; the handlers' logs reach stderr only with ``-v``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from botocore.exceptions import NoCredentialsError, NoRegionError

from thingpress import cli_local, cli_remote
from thingpress.cli_options import (
    EXIT_CODES,
    EXIT_USAGE,
    VENDORS,
    Parser,
    add_all_option,
    add_global_options,
    add_import_settings,
    add_local_option,
    add_manifest_arguments,
    check_global_options,
    example,
    existing_dir,
    existing_file,
    fraction,
    manifest_settings,
    positive_int,
    seconds,
)
from thingpress.console import CliError, handler_logs, handler_logs_to_stderr
from thingpress.runlimit import TIMEOUT_HELP


def version() -> str:
    """Return the installed package's version, else the one in the source tree's ``pyproject.toml``."""
    try:
        return metadata.version("thingpress")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``thingpress`` command and its subcommands."""
    parser = Parser(
        prog="thingpress",
        description=__doc__.splitlines()[0],
        epilog=example("thingpress demo", "thingpress --region eu-west-1 status --stack thingpress")
        + "\n\n"
        + EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    add_global_options(parser, aws=True, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    local = commands.add_parser(
        "local",
        help="run the pipeline on the embedded local AWS emulator",
        epilog=example("thingpress local import events/manifest-espressif.csv"),
    )
    local_commands = local.add_subparsers(
        dest="local_command", metavar="SUBCOMMAND", required=True, parser_class=Parser
    )
    imp = local_commands.add_parser(
        "import",
        help="import one manifest through the local stack",
        epilog=example(
            "thingpress local import events/manifest-espressif.csv",
            "thingpress local import my.json --vendor microchip --verifiers signers/ --policy dev-policy",
        ),
    )
    add_manifest_arguments(imp, vendor_help="vendor prefix to upload to (default: sniff)")
    add_import_settings(imp)
    imp.add_argument(
        "--dashboard", type=Path, metavar="HTML", help="draw the dashboard from the run's metrics"
    )
    imp.add_argument(
        "--verify",
        action="store_true",
        help="read every imported thing back from IoT for the report (default: from the job's outcomes)",
    )
    imp.add_argument("--timeout", type=seconds, metavar="SECONDS", help=TIMEOUT_HELP)
    add_local_option(imp, "import into the stack `thingpress local up` serves (default: it, when one runs)")
    add_global_options(imp, aws=False)
    add_all_option(imp)
    imp.set_defaults(handler=_cmd_local_import)
    cli_local.add_local_up_down(local_commands)

    check = commands.add_parser(
        "check",
        help="validate a manifest offline (no emulator, no AWS)",
        epilog=example(
            "thingpress check events/manifest-espressif.csv",
            "thingpress check certificates.txt --allow-expired --json",
        ),
    )
    add_manifest_arguments(check, vendor_help="vendor format (default: sniff)")
    add_global_options(check, aws=False)
    add_all_option(check)
    check.set_defaults(handler=_cmd_check)

    invoke = commands.add_parser(
        "invoke",
        help="run one function handler on an event, like sam local invoke",
        epilog=example(
            "thingpress invoke ManifestProviderFunction events/provider-s3-espressif.json",
            "thingpress invoke BulkImporterFunction events/importer-batch.json",
        ),
    )
    invoke.add_argument(
        "function", metavar="FUNCTION_LOGICAL_ID", help="the function's logical id in the template"
    )
    invoke.add_argument(
        "event", type=existing_file, metavar="EVENT_FILE", help="the event, a JSON file (see events/)"
    )
    invoke.add_argument(
        "--template",
        type=existing_file,
        default=None,
        metavar="FILE",
        help="the SAM template (default: template.yaml)",
    )
    invoke.add_argument(
        "--build-dir",
        type=Path,
        default=Path(".aws-sam/build"),
        metavar="DIR",
        help="the sam build output the code runs from (default: %(default)s)",
    )
    invoke.add_argument(
        "--upload",
        type=existing_file,
        default=None,
        metavar="FILE",
        help="the manifest to upload for the event's S3 notification (default: the file in the event's "
        "folder named like the key)",
    )
    invoke.add_argument(
        "--verifiers",
        type=existing_dir,
        default=None,
        metavar="DIR",
        help="Microchip signer certificates to upload to the verifier prefix first (default: the event's "
        "folder's verifiers/, when there is one)",
    )
    add_global_options(invoke, aws=False)
    invoke.set_defaults(handler=_cmd_invoke)

    cli_remote.add_remote_commands(commands)

    generate = commands.add_parser(
        "generate",
        help="write a synthetic manifest",
        epilog=example(
            "thingpress generate --vendor espressif --count 100 --out out/espressif.csv",
            "thingpress generate --vendor microchip --count 10 --out out/tng.json --bad-fraction 0.2",
        ),
    )
    generate.add_argument("--vendor", choices=VENDORS, required=True, help="the manifest format")
    generate.add_argument("--count", type=positive_int, required=True, help="number of devices")
    generate.add_argument("--out", type=Path, required=True, metavar="PATH", help="the file to write")
    generate.add_argument(
        "--bad-fraction",
        type=fraction,
        default=0.0,
        metavar="F",
        help="fraction of entries to damage, between 0 and 1 (default: %(default)s)",
    )
    generate.add_argument(
        "--signer",
        type=Path,
        metavar="PATH_PREFIX",
        help="Microchip only: the signer's PATH_PREFIX.crt and .key, made if missing "
        "(default: next to --out)",
    )
    generate.add_argument(
        "--seed", type=int, default=0, help="seed of the random choices (default: %(default)s)"
    )
    generate.add_argument("--json", action="store_true", help="print one JSON document")
    add_global_options(generate, aws=False)
    generate.set_defaults(handler=_cmd_generate)

    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on every vendor format, locally",
        epilog=example("thingpress demo", "thingpress demo --count 5 --dashboard /tmp/demo.html"),
    )
    demo.add_argument(
        "--count",
        type=positive_int,
        default=25,
        help="certificates per vendor manifest (default: %(default)s)",
    )
    demo.add_argument(
        "--dashboard",
        type=Path,
        default=Path("out/demo-dashboard.html"),
        metavar="HTML",
        help="where to draw the dashboard from the run's metrics (default: %(default)s)",
    )
    add_all_option(demo)
    demo.add_argument("--json", action="store_true", help="print one JSON document")
    add_global_options(demo, aws=False)
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _cmd_local_import(args: argparse.Namespace) -> int:
    from thingpress import demo  # noqa: PLC0415 - the emulator loads only when needed

    return demo.local_import_command(
        args.manifest,
        policies=args.policies,
        thing_groups=args.thing_groups,
        thing_type=args.thing_type,
        dashboard=args.dashboard,
        verify=args.verify,
        timeout=args.timeout,
        use_local=args.local,
        local_state=args.state,
        show_all=args.all,
        **manifest_settings(args),
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from thingpress import check  # noqa: PLC0415

    with handler_logs_to_stderr():  # the parsers' loggers exist only now
        return check.check_command(args.manifest, show_all=args.all, **manifest_settings(args))


def _cmd_invoke(args: argparse.Namespace) -> int:
    from thingpress import invoke  # noqa: PLC0415

    return invoke.invoke_command(
        args.function,
        args.event,
        template=args.template,
        build_dir=args.build_dir,
        upload=args.upload,
        verifiers=args.verifiers,
        verbose=args.verbose,
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
        The exit code (`EXIT_CODES`): 0 done, 1 entries or items failed, 2 usage or environment error.

    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        check_global_options(args)
        handler: Callable[[argparse.Namespace], int] = args.handler
        with handler_logs(verbose=args.verbose):
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
    except TimeoutError:
        print(
            "thingpress: a request timed out: the AWS endpoint (or the local emulator) did not answer in"
            " time; run the command again, with -v to see the handlers' logs.",
            file=sys.stderr,
        )
        return EXIT_USAGE
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
