"""The built shared layer ships boto3 and botocore together, pinned to one release, or neither.

On Lambda ``/opt/python`` (the layer) comes before the runtime's own packages, so a botocore in the
layer without its boto3 would run under the runtime's boto3. ``make test`` runs ``sam build``
before pytest; these tests read its output.
"""

from __future__ import annotations

import re
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import pytest

from testing.helpers import REPO_ROOT

LAYER_REQUIREMENTS = REPO_ROOT / "src" / "layer_utils" / "requirements.txt"
CONSTRAINTS = REPO_ROOT / "constraints.txt"
PAIR = ("boto3", "botocore")


def layer_logical_id(template: dict[str, Any]) -> str:
    (logical_id,) = [
        name
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::LayerVersion"
        and resource["Properties"]["ContentUri"] == "src/layer_utils"
    ]
    return str(logical_id)


def pins(path: Path) -> dict[str, str]:
    """Return ``name==version`` lines of a requirements or constraints file, names normalised."""
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^]]*\])?==(\S+)", line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def installed_versions(site: Path) -> dict[str, str]:
    """Return the distributions installed in ``site`` (from their dist-info METADATA)."""
    found: dict[str, str] = {}
    for metadata in site.glob("*.dist-info/METADATA"):
        headers = HeaderParser().parsestr(metadata.read_text(encoding="utf-8"))
        found[re.sub(r"[-_.]+", "-", headers["Name"]).lower()] = headers["Version"]
    return found


@pytest.fixture(scope="module")
def built_layer(template: dict[str, Any]) -> Path:
    site = REPO_ROOT / ".aws-sam" / "build" / layer_logical_id(template) / "python"
    if not site.is_dir():
        pytest.fail(
            f"the built layer {site} is missing: run `make build` (sam build) first; `make test` does"
        )
    return site


def test_layer_ships_boto3_and_botocore_together_at_the_pinned_versions(built_layer: Path) -> None:
    versions = installed_versions(built_layer)
    present = [name for name in PAIR if name in versions]
    if not present:
        return
    assert present == list(PAIR), f"the layer ships {present} without the other of {PAIR}"
    wanted = pins(LAYER_REQUIREMENTS)
    for name in PAIR:
        assert name in wanted, f"{name} is in the layer but not pinned in {LAYER_REQUIREMENTS.name}"
        assert versions[name] == wanted[name], (
            f"the built layer has {name} {versions[name]}, requirements.txt pins {wanted[name]}: rebuild"
        )
    assert versions["boto3"] == versions["botocore"], "boto3 and botocore must be one release"


def test_layer_pins_match_the_dev_venv_constraints() -> None:
    wanted, constraints = pins(LAYER_REQUIREMENTS), pins(CONSTRAINTS)
    for name, version in wanted.items():
        assert constraints.get(name) == version, (
            f"src/layer_utils/requirements.txt pins {name}=={version}, constraints.txt has "
            f"{constraints.get(name)}: the tests must run what the layer ships"
        )
