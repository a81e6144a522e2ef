"""Set-up tells the truth: supported Python versions, declared dependencies and the interpreter check."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from testing.helpers import REPO_ROOT

FIND_PYTHON = REPO_ROOT / "scripts" / "find-python.sh"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
DECLARED = {
    canonicalize_name(requirement.name): requirement
    for requirement in map(Requirement, PYPROJECT["dependencies"])
}
# Every package the CLI, the local stack and the functions import at run time.
SOURCE_ROOTS = [
    REPO_ROOT / "src" / "thingpress",
    *(path.parent for path in (REPO_ROOT / "src").glob("*/requirements.txt")),
]


def _script_setting(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", FIND_PYTHON.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, name
    return match.group(1)


SUPPORTED_MIN = _script_setting("SUPPORTED_MIN")
LAMBDA_RUNTIME = _script_setting("LAMBDA_RUNTIME")


def test_pyproject_readme_and_makefile_claim_the_same_python_versions() -> None:
    assert PYPROJECT["requires-python"] == f">={SUPPORTED_MIN}"
    classifiers = {
        line.removeprefix("Programming Language :: Python :: ")
        for line in PYPROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", line)
    }
    assert classifiers == {SUPPORTED_MIN, LAMBDA_RUNTIME}
    assert set(re.findall(r"Python (3\.\d+) or newer", README)) == {SUPPORTED_MIN}
    assert f"Python {LAMBDA_RUNTIME}, the Lambda runtime" in README
    assert not re.search(r"\b3\.\d+\+", README), "README claims a version range with '+'"
    template = (REPO_ROOT / "template.yaml").read_text(encoding="utf-8")
    assert set(re.findall(r"Runtime: python(3\.\d+)", template)) == {LAMBDA_RUNTIME}


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of absolute imports that run (not those under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for statement in branch.body
        for node in ast.walk(statement)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__"}


def test_third_party_import_finder_skips_typing_only_and_standard_imports(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        "import os\nimport yaml.loader\nfrom rich.table import Table\nfrom . import sibling\n"
        "if TYPE_CHECKING:\n    from mypy_boto3_s3 import S3Client\n"
        "def f():\n    from OpenSSL import crypto\n",
        encoding="utf-8",
    )
    assert _third_party_imports(module) == {"yaml", "rich", "OpenSSL"}


def test_pyproject_declares_every_third_party_import() -> None:
    own = {path.name for root in SOURCE_ROOTS for path in [root, *root.iterdir()] if path.is_dir()}
    distributions = packages_distributions()
    undeclared: dict[str, list[str]] = {}
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            for name in sorted(_third_party_imports(path) - own):
                names = {canonicalize_name(dist) for dist in distributions.get(name, [name])}
                if not names & DECLARED.keys():
                    undeclared.setdefault(name, []).append(str(path.relative_to(REPO_ROOT)))
    assert undeclared == {}


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "src").glob("*/requirements.txt")), ids=lambda path: path.parent.name
)
def test_pyproject_declares_what_sam_build_packages_with_the_same_extras(path: Path) -> None:
    for requirement in _requirements(path):
        declared = DECLARED.get(canonicalize_name(requirement.name))
        assert declared is not None, requirement.name
        assert requirement.extras <= declared.extras, requirement.name
        (pin,) = requirement.specifier
        assert declared.specifier.contains(pin.version), f"{requirement} is outside {declared}"


def test_constraints_pin_every_declared_dependency_inside_its_bounds() -> None:
    pins = {canonicalize_name(req.name): req for req in _requirements(REPO_ROOT / "constraints.txt")}
    for name, declared in DECLARED.items():
        assert name in pins, f"constraints.txt does not pin {name}"
        (pin,) = pins[name].specifier
        assert declared.specifier.contains(Version(pin.version)), f"{pins[name]} is outside {declared}"


def test_dev_requirements_repeat_a_runtime_dependency_only_to_add_extras() -> None:
    for requirement in _requirements(REPO_ROOT / "requirements-dev.txt"):
        declared = DECLARED.get(canonicalize_name(requirement.name))
        assert declared is None or requirement.extras - declared.extras, f"{requirement} is in pyproject.toml"


def _fake_python(path: Path, version: str, *, works: bool = True) -> Path:
    """An executable that answers find-python.sh's probe like an interpreter of VERSION (or fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    failure = f'echo "pyenv: {path.name}: command not found" >&2; exit 127'
    body = f'echo "{path} {version}"' if works else failure
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def _find_python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYENV_VERSION": "3.11.7", "HOME": str(tmp_path)}
    return subprocess.run(
        [str(FIND_PYTHON), *args], capture_output=True, text=True, env=env, check=False, timeout=30
    )


def test_find_python_names_what_it_needs_and_what_it_found(tmp_path: Path) -> None:
    old = _fake_python(tmp_path / "bin" / "python3.11", "3.11.7")
    result = _find_python(tmp_path, "python3.11")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"Thingpress needs Python {SUPPORTED_MIN} or newer ({LAMBDA_RUNTIME} for sam build); "
        f"found python3.11 3.11.7 at {old}. Set PYTHON="
    )


def test_find_python_sees_through_a_pyenv_shim_that_the_users_pyenv_version_hides(tmp_path: Path) -> None:
    # The shim on PATH fails under PYENV_VERSION=3.11.7, as pyenv's do; pyenv root holds the real one.
    _fake_python(tmp_path / "bin" / "python3.13", "3.11.7", works=False)
    real = _fake_python(tmp_path / "pyenv" / "versions" / "3.13.0" / "bin" / "python3.13", "3.13.0")
    pyenv = tmp_path / "bin" / "pyenv"
    pyenv.write_text(f'#!/bin/sh\n[ "$1" = root ] && echo "{tmp_path / "pyenv"}"\n', encoding="utf-8")
    pyenv.chmod(0o755)
    result = _find_python(tmp_path, "--min", LAMBDA_RUNTIME, "--for", "sam build", "python3.13")
    assert (result.returncode, result.stdout.strip()) == (0, str(real))


def test_find_python_takes_the_first_candidate_that_is_new_enough(tmp_path: Path) -> None:
    _fake_python(tmp_path / "bin" / "python3", "3.11.2")
    newer = _fake_python(tmp_path / "bin" / "python3.12", "3.12.1")
    result = _find_python(tmp_path, "python3.13", "python3", "python3.12")
    assert (result.returncode, result.stdout.strip()) == (0, str(newer))


def test_makefile_demo_installs_the_runtime_only_and_install_adds_the_tools() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo: install-demo ##", makefile, re.MULTILINE)
    assert re.search(r"^\$\(VENV\)/\.installed: \$\(VENV\)/\.runtime ", makefile, re.MULTILINE)
    assert "export PYENV_VERSION" not in makefile
