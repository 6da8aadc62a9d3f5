"""What each model file declares, read from its source without importing it (no torch).

Planning the DAG and validating params.yaml need a model's declarations — its name in
params.yaml (``key=``), its traits (``requires``, ``family``, ``deterministic``, …) and the
names and types of its ``Config`` fields — but not its network. Importing a model file imports
torch (about 1.7 s); reading the same declarations from the file's syntax tree takes a few
milliseconds. This module is that reader: it looks at class statements only, never runs them.

What it reads (the contract in ``pipeline/models/base.py``):
    ``class X(Base, ..., key="name")``   a registered model; ``Base`` resolved by class name among
                                       the package's files (``Recommender`` in ``base.py``)
    ``trait = <literal>``              in a model class body (``frozenset({...})`` allowed);
                                       inherited from base classes, ``Recommender``'s defaults last
    ``Config = SomeConfig``            the hyperparameter dataclass: its annotated fields
                                       (``ClassVar`` excluded), inherited fields first

A declaration written any other way (computed, or assigned outside the class body) is not
read; ``tests/test_contract.py`` checks that every registered model's declarations read here
equal the imported class's, so such a file fails the tests instead of misplanning.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BASE_CLASS = "Recommender"
TRAITS = ("display_name", "family", "requires", "trainable", "deterministic", "samples_when_scoring", "uses_time_order")


@dataclass(frozen=True)
class Declared:
    """A registered model as its file declares it."""

    key: str
    module: str  # pipeline.models.<file>
    class_name: str
    config_name: str
    traits: dict  # TRAITS -> value
    fields: dict  # Config field -> annotation text ("float", "int", "list", ...), in dataclass order
    defaults: dict  # Config field -> its default in code, where the file writes it as a literal

    def __getattr__(self, name: str):
        if name in TRAITS:
            return self.traits[name]
        raise AttributeError(name)


def _literal(node: ast.expr):
    """A literal value; ``frozenset``, ``set``, ``tuple`` and ``list`` of a literal too."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("frozenset", "set", "tuple", "list"):
        inner = ast.literal_eval(node.args[0]) if node.args else ()
        return {"frozenset": frozenset, "set": frozenset, "tuple": tuple, "list": list}[node.func.id](inner)
    return ast.literal_eval(node)


@dataclass(frozen=True)
class _Class:
    module: str
    node: ast.ClassDef

    @property
    def bases(self) -> list[str]:
        return [b.id if isinstance(b, ast.Name) else b.attr for b in self.node.bases if isinstance(b, (ast.Name, ast.Attribute))]

    def key(self) -> str | None:
        for kw in self.node.keywords:
            if kw.arg == "key":
                return ast.literal_eval(kw.value)
        return None

    def assignments(self) -> dict[str, ast.expr]:
        """name -> value of the simple assignments in the class body (``x = v`` and ``x: T = v``)."""
        out = {}
        for stmt in self.node.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                out[stmt.targets[0].id] = stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                out[stmt.target.id] = stmt.value
        return out

    def fields(self) -> dict[str, tuple[str, object]]:
        """Annotated fields of a dataclass body (ClassVar excluded): name -> (annotation text,
        default: a literal, ``field(default=<literal>)`` or ``field(default_factory=lambda:
        <literal>)``; NO_DEFAULT when there is none or it is not written as a literal)."""
        out = {}
        for stmt in self.node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                text = ast.unparse(stmt.annotation)
                if not text.startswith(("ClassVar", "typing.ClassVar")):
                    out[stmt.target.id] = (text, _default(stmt.value))
        return out


NO_DEFAULT = object()


def _default(node: ast.expr | None):
    if node is None:
        return NO_DEFAULT
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "field":
        for kw in node.keywords:
            if kw.arg == "default":
                node = kw.value
                break
            if kw.arg == "default_factory":
                node = kw.value.body if isinstance(kw.value, ast.Lambda) else ast.Call(kw.value, [], [])
                break
        else:
            return NO_DEFAULT
    try:
        return _literal(node)
    except (ValueError, TypeError, SyntaxError):
        return NO_DEFAULT


@functools.cache
def _classes() -> dict[str, _Class]:
    """Every class statement of the package's model files, by class name (names are unique)."""
    found: dict[str, _Class] = {}
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        if path.name == "__init__.py":
            continue
        module = f"pipeline.models.{path.stem}"
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if isinstance(node, ast.ClassDef):
                if node.name in found:
                    raise TypeError(f"class name {node.name!r} is defined in {found[node.name].module} and {module}; "
                                    "model and config class names must be unique across pipeline/models")
                found[node.name] = _Class(module, node)
    return found


def _lineage(name: str) -> list[_Class]:
    """The class and its package base classes, most derived first (depth-first, left to right)."""
    classes = _classes()
    out, todo = [], [name]
    while todo:
        current = todo.pop(0)
        if current in classes and classes[current] not in out:
            out.append(classes[current])
            todo = classes[current].bases + todo
    return out


def _config_fields(config_name: str) -> dict[str, tuple[str, object]]:
    fields: dict[str, tuple[str, object]] = {}
    for cls in reversed(_lineage(config_name)):  # base fields first, as dataclasses order them
        for name, annotation in cls.fields().items():
            fields[name] = annotation  # a redefined field keeps its place, as in dataclasses
    return fields


@functools.cache
def declared_models() -> dict[str, Declared]:
    """Registered model name -> its declarations, sorted by name."""
    models = {}
    for name, cls in _classes().items():
        key = cls.key()
        if key is None:
            continue
        if key in models:
            raise TypeError(f"model name {key!r} is declared by {models[key].class_name} and {name}")
        values: dict[str, object] = {}
        for ancestor in reversed(_lineage(name)):  # Recommender's defaults first, the class's own last
            values.update(ancestor.assignments())
        config = values.get("Config")
        if not isinstance(config, ast.Name):
            raise TypeError(f"{cls.module}.{name} (model {key!r}) must declare `Config = <dataclass name>` in its class body")
        traits = {t: _literal(values[t]) for t in TRAITS if t in values}
        missing = [t for t in TRAITS if t not in traits]
        if missing:
            raise TypeError(f"{cls.module}.{name} (model {key!r}) does not declare {missing} as literals in its class body")
        fields = _config_fields(config.id)
        models[key] = Declared(key, cls.module, name, config.id, traits, {f: a for f, (a, _) in fields.items()},
                               {f: d for f, (_, d) in fields.items() if d is not NO_DEFAULT})
    return dict(sorted(models.items()))
