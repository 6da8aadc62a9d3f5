"""The package's modules import one another one way: no import cycle, function-level imports
included (imports under ``if TYPE_CHECKING:`` are annotations only and do not count).

``pipeline/models/__init__.py`` imports every model module (the registry), so importing
``pipeline.models`` counts as importing each of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"


def module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package modules a module's code imports (anywhere in it but TYPE_CHECKING blocks)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "pipeline":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph = {name: imported(ast.parse(path.read_text()), set(files)) - {name} for name, path in files.items()}
    graph["pipeline.models"] |= {name for name in files if name.startswith("pipeline.models.")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": set()}, None),
])
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_function_level_imports_count_and_type_checking_ones_do_not():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pipeline.config import X\n"
        "def f():\n    from pipeline.io import read_json\n"
    )
    assert imported(tree, {"pipeline.config", "pipeline.io"}) == {"pipeline.io"}


def test_stages_sit_on_top():
    """A stage module (``pipeline.stages.<command>``) is imported by the CLI and by other tools,
    never by a library module: the layers run one way, libraries -> stages -> __main__."""
    graph = import_graph()
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if not module.startswith("pipeline.stages") and module != "pipeline.__main__"
        for target in targets
        if target.startswith("pipeline.stages.")
    )
    assert not offenders, offenders


def test_every_command_has_its_stage_module():
    """``python -m pipeline <command>`` runs ``pipeline/stages/<command>.py`` (dashes as underscores)."""
    import argparse

    from pipeline.__main__ import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    stages = {path.stem for path in (PACKAGE / "stages").glob("*.py") if path.stem != "__init__"}
    assert {c.replace("-", "_") for c in commands} == stages
