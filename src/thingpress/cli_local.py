"""The command line of the persistent local stack: ``local up``, ``local down``, ``--local`` and ``--state``.

`thingpress.cli` adds these to its parser; the commands are in `thingpress.localserve`, the state
folder in `thingpress.localstate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from thingpress.cli_options import (
    STATE_HELP,
    add_global_options,
    add_import_settings,
    add_operator_options,
    example,
    existing_dir,
)
from thingpress.console import CliError


def add_local_up_down(local_commands: Any) -> None:
    """Add ``local up`` (serve a stack until stopped) and ``local down`` (stop it).

    Args:
        local_commands: The ``local`` command's subparsers.

    """
    up = local_commands.add_parser(
        "up",
        help="serve a local stack on 127.0.0.1 until `local down` or Ctrl-C",
        epilog=example(
            "thingpress local up --policy demo-policy --thing-group demo-group",
            "thingpress local up --state /tmp/tp-local --allow-expired --json",
        ),
    )
    add_import_settings(up)
    up.add_argument(
        "--verifiers", type=existing_dir, metavar="DIR", help="folder of Microchip signer certificates"
    )
    add_operator_options(up)
    up.add_argument("--state", type=Path, metavar="DIR", help=STATE_HELP)
    up.add_argument("--json", action="store_true", help="print the stack's state as one JSON document")
    add_global_options(up, aws=False)
    up.set_defaults(handler=_cmd_local_up)
    down = local_commands.add_parser(
        "down", help="stop the local stack `local up` serves", epilog=example("thingpress local down")
    )
    down.add_argument("--state", type=Path, metavar="DIR", help=STATE_HELP)
    add_global_options(down, aws=False)
    down.set_defaults(handler=_cmd_local_down)


def local_folder(args: argparse.Namespace) -> Path | None:
    """Return the state folder of ``--local`` (None without it).

    Raises:
        CliError: ``--local`` with a deployed target (``--stack``, ``--region``...), or ``--state``
            without ``--local``.

    """
    from thingpress.localstate import state_dir  # noqa: PLC0415

    if not getattr(args, "local", False):
        if getattr(args, "state", None) is not None:
            raise CliError("--state names a local stack's folder; use it with --local.")
        return None
    others = [
        f"--{name}" for name in ("stack", "bucket", "table", "region", "profile") if getattr(args, name, None)
    ]
    if others:
        raise CliError(f"--local reaches the local stack; it does not combine with {', '.join(others)}.")
    return state_dir(args.state)


def _cmd_local_up(args: argparse.Namespace) -> int:
    from thingpress.localserve import OperatorSettings, up_command  # noqa: PLC0415
    from thingpress.localstate import state_dir  # noqa: PLC0415

    settings = OperatorSettings(
        policies=tuple(args.policies),
        thing_groups=tuple(args.thing_groups),
        thing_type=args.thing_type or None,
        allow_expired=args.allow_expired,
        trusted_cas=tuple(args.trusted_ca),
        name_sources=tuple(args.thing_name_source),
        thing_name_prefix=args.thing_name_prefix,
    )
    return up_command(state_dir(args.state), settings, verifiers=args.verifiers, as_json=args.json)


def _cmd_local_down(args: argparse.Namespace) -> int:
    from thingpress.localserve import down_command  # noqa: PLC0415
    from thingpress.localstate import state_dir  # noqa: PLC0415

    return down_command(state_dir(args.state))
