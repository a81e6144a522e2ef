"""The README documents every template parameter and output, CLI command and Makefile target."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from thingpress.cfn import load_template
from thingpress.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TEMPLATE = load_template(ROOT / "template.yaml")


@pytest.mark.parametrize("section", ["Parameters", "Outputs"])
def test_every_template_name_is_documented(section: str) -> None:
    missing = [name for name in TEMPLATE[section] if f"`{name}`" not in README]
    assert missing == []


def test_every_parameter_default_is_the_documented_one() -> None:
    for name, parameter in TEMPLATE["Parameters"].items():
        default = str(parameter.get("Default", "")).replace("|", "\\|")
        assert f"| `{name}` | `{default}` |" in README, name


def test_every_cli_command_is_documented() -> None:
    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command")
    names = set(commands.choices) - {"local"}
    names.add("local import")
    missing = [name for name in sorted(names) if f"thingpress {name}" not in README]
    assert missing == []


def test_every_makefile_target_is_documented() -> None:
    targets = re.findall(r"^([a-z-]+):.*## ", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    assert targets
    missing = [target for target in targets if f"make {target}" not in README and f"`{target}`" not in README]
    assert missing == []
