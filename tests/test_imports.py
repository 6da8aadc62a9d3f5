"""The package's modules import one another one way: no import cycle, function-level imports
included (imports under ``if TYPE_CHECKING:`` are annotations only and do not count).

``pipeline/models/__init__.py`` imports every model module (the registry), so importing
``pipeline.models`` counts as importing each of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.plan import imported, package_imports

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"


def import_graph() -> dict[str, set[str]]:
    """The planner's import graph (the one code dependencies come from), with the model registry
    counted as importing every model module (it does, when asked for a class)."""
    graph = {name: set(targets) for name, targets in package_imports().items()}
    graph["pipeline.models"] |= {name for name in graph if name.startswith("pipeline.models.")}
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
