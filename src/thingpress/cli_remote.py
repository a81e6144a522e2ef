"""The ``thingpress`` commands that reach a deployed stack (or, with ``--local``, a running local one).

``status``, ``report``, ``reconcile``, ``sweep`` and ``redrive``; `thingpress.cli` adds them to its
parser.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from thingpress import cli_local, undo_cli
from thingpress.cli_options import (
    add_all_option,
    add_aws_options,
    add_fail_on_errors,
    add_remote_target,
    aws_arguments,
    example,
    remote_exit,
    remote_target,
)
from thingpress.console import CliError, handler_logs_to_stderr


def add_remote_commands(commands: Any) -> None:
    """Add the commands that reach a deployed or running local stack to ``commands`` (the subparsers)."""
    status = commands.add_parser(
        "status",
        help="jobs of a deployed stack",
        epilog=example(
            "thingpress status --stack thingpress",
            "thingpress --profile prod --region eu-west-1 status --stack thingpress --fail-on-errors",
        ),
    )
    add_remote_target(status)
    add_fail_on_errors(status, "a listed job failed or has failed entries")
    status.set_defaults(handler=_cmd_status)

    report = commands.add_parser(
        "report",
        help="the report of one job of a deployed stack",
        epilog=example(
            "thingpress report espressif/batch-7.csv --stack thingpress",
            "thingpress report 3733d1b82ebbde85faa0a6f718496459 --stack thingpress --json",
        ),
    )
    report.add_argument(
        "job", metavar="JOB_ID_OR_MANIFEST_KEY", help="a job id, or the manifest's key in the bucket"
    )
    add_remote_target(report)
    add_all_option(report)
    add_fail_on_errors(report, "the job failed or has failed entries")
    report.set_defaults(handler=_cmd_report)

    reconcile = commands.add_parser(
        "reconcile",
        help="compare a job's ledger with IoT: exit 0 no drift, 1 drift",
        epilog=example(
            "thingpress reconcile espressif/devices.csv --local",
            "thingpress reconcile 3733d1b82ebbde85faa0a6f718496459 --stack thingpress --json",
        ),
    )
    reconcile.add_argument(
        "job", metavar="JOB_ID_OR_MANIFEST_KEY", help="a job id, or the manifest's key in the bucket"
    )
    add_remote_target(reconcile)
    reconcile.set_defaults(handler=_cmd_reconcile)
    undo_cli.add_undo_command(commands)

    sweep = commands.add_parser(
        "sweep",
        help="finish the jobs of a deployed stack that stopped making progress (as the JobSweeper does)",
        epilog=example("thingpress sweep --stack thingpress"),
    )
    add_remote_target(sweep)
    add_fail_on_errors(sweep, "the sweep had to finish a stuck job")
    sweep.set_defaults(handler=_cmd_sweep)

    redrive = commands.add_parser(
        "redrive",
        help="move dead-letter messages back to their source queue",
        epilog=example(
            "thingpress redrive --stack thingpress",
            "thingpress redrive --queue https://sqs.../thingpress-ImportDLQ --to https://sqs.../thingpress-ImportQueue",
        ),
    )
    redrive.add_argument("--stack", help="CloudFormation stack name (redrives both DLQs)")
    redrive.add_argument("--queue", metavar="DLQ_URL", help="the dead-letter queue's URL (with --to)")
    redrive.add_argument("--to", metavar="SOURCE_URL", help="the source queue's URL (with --queue)")
    add_aws_options(redrive)
    redrive.set_defaults(handler=_cmd_redrive)


def _cmd_status(args: argparse.Namespace) -> int:
    from thingpress import remote_cli  # noqa: PLC0415

    stack, bucket, table = remote_target(args)
    with handler_logs_to_stderr(logging.ERROR):  # the CLI reports AWS failures itself
        code = remote_cli.status_command(
            stack=stack, bucket=bucket, table=table, **aws_arguments(args), local=cli_local.local_folder(args)
        )
    return remote_exit(args, code)


def _cmd_report(args: argparse.Namespace) -> int:
    from thingpress import remote_cli  # noqa: PLC0415

    stack, bucket, table = remote_target(args)
    with handler_logs_to_stderr(logging.ERROR):  # the CLI reports AWS failures itself
        code = remote_cli.report_command(
            args.job,
            stack=stack,
            bucket=bucket,
            table=table,
            show_all=args.all,
            **aws_arguments(args),
            local=cli_local.local_folder(args),
        )
    return remote_exit(args, code)


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from thingpress import reconcile_cli  # noqa: PLC0415

    stack, bucket, table = remote_target(args)
    with handler_logs_to_stderr(logging.ERROR):  # the CLI reports AWS failures itself
        return reconcile_cli.reconcile_command(
            args.job,
            stack=stack,
            bucket=bucket,
            table=table,
            local=cli_local.local_folder(args),
            **aws_arguments(args),
        )


def _cmd_sweep(args: argparse.Namespace) -> int:
    from thingpress import remote_cli  # noqa: PLC0415

    stack, bucket, table = remote_target(args)
    with handler_logs_to_stderr(logging.ERROR):  # the CLI reports AWS failures itself
        code = remote_cli.sweep_command(
            stack=stack, bucket=bucket, table=table, **aws_arguments(args), local=cli_local.local_folder(args)
        )
    return remote_exit(args, code)


def _cmd_redrive(args: argparse.Namespace) -> int:
    from thingpress import remote_cli  # noqa: PLC0415

    if args.stack and (args.queue or args.to):
        raise CliError("Use either --stack or --queue with --to, not both.")
    if not args.stack and not (args.queue and args.to):
        raise CliError("Name the queues with --stack NAME or with both --queue DLQ_URL and --to SOURCE_URL.")
    with handler_logs_to_stderr(logging.ERROR):  # the CLI reports AWS failures itself
        return remote_cli.redrive_command(
            stack=args.stack, queue=args.queue, to=args.to, **aws_arguments(args)
        )
