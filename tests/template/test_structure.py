"""The shape of src/: no import cycle, the architecture page's source-layout table, module sizes.

The source-layout table is the first table under ``## Source layout`` in docs/ARCHITECTURE.md. A row
whose first cell holds a backticked ``src/…`` path describes it:

* a package (a directory with ``__init__.py``) is named by its path ending in ``/`` in the first cell,
  e.g. ``src/thingpress/local/``; its modules are named by their file names in backticks anywhere in
  the same row (``stack.py``, ``faults.py``), or each in a row of its own;
* a module has its own row when the first cell holds its full path, e.g. ``src/thingpress/cli.py``.

Every package and every module (``__init__.py`` aside) under src/ must be named, and every path or
file name the table names must exist. Rows whose first cell is not under ``src/`` (``tests/``,
``events/``) are not checked.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

from testing.helpers import REPO_ROOT

SRC = REPO_ROOT / "src"
ARCHITECTURE = REPO_ROOT / "docs" / "ARCHITECTURE.md"
MAX_LINES = 450
SIZE_REASON = "Size:"


def python_files() -> list[Path]:
    """Return every .py file under src/, caches aside, sorted."""
    return sorted(path for path in SRC.rglob("*.py") if "__pycache__" not in path.parts)


def is_package(directory: Path) -> bool:
    """Tell whether ``directory`` is a Python package (it holds ``__init__.py``)."""
    return (directory / "__init__.py").is_file()


def module_name(path: Path) -> str:
    """Return the dotted name a .py file under src/ is imported as (from its top package)."""
    root = path.parent
    while is_package(root):
        root = root.parent
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# ------------------------------------------------------------------------------------- import graph


def _type_checking_only(node: ast.If) -> bool:
    """Tell whether an ``if`` runs only for type checkers (``if TYPE_CHECKING:``)."""
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Yield every import statement that can run: module level, in functions and classes, in ``try``.

    Imports under ``if TYPE_CHECKING:`` never run, so they close no loop.
    """
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                yield from _runtime_imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _runtime_imports(node)


def import_graph() -> dict[str, set[str]]:
    """Return module -> the modules under src/ it imports, from the AST of every file under src/.

    ``import a.b`` and ``from a import b`` point at ``a.b`` when that is a module under src/, else at
    ``a``; relative imports are resolved against the importing module's package. Only edges between
    modules under src/ are kept.
    """
    files = {module_name(path): path for path in python_files()}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    targets.append(candidate if candidate in files else base)
            graph[name].update(target for target in targets if target in files and target != name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the shortest cycle through each module that is on one (first module repeated at the end).

    Cycles are found per strongly connected component; a cycle already listed is not listed again.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles: list[list[str]] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    for component in components:
        for member in component:
            cycle = _cycle_in(graph, set(component), member)
            edges = frozenset(itertools.pairwise(cycle))
            if edges not in seen:
                seen.add(edges)
                cycles.append(cycle)
    return cycles


def _cycle_in(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """Return the shortest path from ``start`` back to itself inside ``component``."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - a component has one


def test_find_cycles_reports_a_loop_and_ignores_a_tree() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_import_graph_sees_function_level_and_relative_imports() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n    from pkg import typed_only\n"
        "def later():\n    import pkg.inner\n"
    )
    found = {
        (node.level, node.module) if isinstance(node, ast.ImportFrom) else node.names[0].name
        for node in _runtime_imports(tree)
    }
    assert found == {(0, "typing"), (1, None), "pkg.inner"}


def test_no_import_cycle_inside_src() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles inside src/ (module-level or function-level imports):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles
    )


# ------------------------------------------------------------------------------------ layout table


def layout_rows() -> list[list[str]]:
    """Return the cells of each body row of the first table under ``## Source layout``."""
    lines = ARCHITECTURE.read_text().splitlines()
    start = lines.index("## Source layout")
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert rows, f"no table under '## Source layout' in {ARCHITECTURE}"
    return rows[2:]  # after the header and its separator


def listed_paths() -> set[str]:
    """Return every src/ path the source-layout table names (packages end in ``/``)."""
    listed: set[str] = set()
    for row in layout_rows():
        heads = re.findall(r"`([^`]+)`", row[0])
        for head in heads:
            if not head.startswith("src/"):
                continue
            listed.add(head)
            if head.endswith("/"):
                for cell in row:
                    listed.update(
                        head + name for name in re.findall(r"`([^`/]+\.py)`", cell) if name != "__init__.py"
                    )
    return listed


def tree_paths() -> set[str]:
    """Return every package (ending in ``/``) and module (``__init__.py`` aside) under src/."""
    paths: set[str] = set()
    for path in python_files():
        relative = path.relative_to(REPO_ROOT).as_posix()
        if path.name == "__init__.py":
            paths.add(relative.removesuffix("__init__.py"))
        else:
            paths.add(relative)
    return paths


def test_architecture_source_layout_table_matches_src() -> None:
    listed, present = listed_paths(), tree_paths()
    missing = sorted(present - listed)
    extra = sorted(listed - present)
    assert not missing and not extra, (
        "docs/ARCHITECTURE.md '## Source layout' table is out of date.\n"
        "Missing from the table (add a row, or name the module in its package's row):\n  "
        + "\n  ".join(missing or ["(none)"])
        + "\nListed but not in the tree:\n  "
        + "\n  ".join(extra or ["(none)"])
    )


# ------------------------------------------------------------------------------------- module size


def test_no_module_in_src_is_over_the_size_limit_without_a_reason() -> None:
    oversized = []
    for path in python_files():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.strip().startswith(SIZE_REASON) for line in docstring.splitlines()):
            oversized.append(f"{path.relative_to(REPO_ROOT)}: {lines} lines")
    assert not oversized, (
        f"modules over {MAX_LINES} lines whose docstring has no '{SIZE_REASON} <one-line reason>' line:\n  "
        + "\n  ".join(oversized)
    )


def test_pyproject_lists_every_package_under_src() -> None:
    """``pip install .`` ships exactly the packages under src/ (setuptools' explicit package list)."""
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {name: REPO_ROOT / path for name, path in config["package-dir"].items()}
    found = {
        ".".join([top, *init.parent.relative_to(root).parts])
        for top, root in roots.items()
        for init in root.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert listed == found, (
        f"pyproject packages: missing {sorted(found - listed)}, extra {sorted(listed - found)}"
    )
