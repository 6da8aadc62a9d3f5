"""params.yaml: loading, validation and typed views of its blocks.

Both engines read the same file. Snakemake validates it with the JSON schema in
``pipeline/params.schema.yaml`` (package data, next to this module) and then calls
:func:`check_semantics`; every ``python -m pipeline`` command calls :func:`load_params`, which does both. Errors name the
offending key and, where there is a closed set, the allowed values.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import itertools
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pipeline import plan

PARAMS_ENV = "PIPELINE_PARAMS"
MIRROR_ENV = "PIPELINE_MIRROR"
REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = Path(__file__).resolve().with_name("params.schema.yaml")  # shipped as package data


# Settings of a split (``splits.*.setting``). TV-Diff's given train/test files (formats
# tvdiff-*) have two: carved (validation carved from train) and authors (test-selected); the
# other formats have the first three (pipeline.stages.prepare).
SETTINGS = ("clean", "noisy", "temporal", "carved", "authors")
GIVEN_SPLIT_SETTINGS = ("carved", "authors")
GIVEN_SPLIT_FORMATS = ("tvdiff-count", "tvdiff-time")


class ConfigError(ValueError):
    """A problem in params.yaml, with the dotted key that causes it."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"params: key '{key}': {message}")


@dataclass(frozen=True)
class SourceFile:
    """One upstream file of a multi-file source (``sources.<name>.files[i]``)."""

    url: str
    mirror: str
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class SourceConfig:
    """A ``sources`` entry: one upstream file (``url``, ``mirror``, checksum, ``archive``) or, with
    ``files``, several plain files (each with its own url, mirror path and checksum) that the
    download stage copies side by side into one folder."""

    name: str
    url: str = ""
    mirror: str = ""
    archive: str = "none"
    sha256: str | None = None
    md5: str | None = None
    files: tuple[SourceFile, ...] = ()

    def entries(self) -> tuple[SourceFile, ...]:
        """The upstream files: ``files``, or the single file of the one-file form."""
        if self.files:
            return self.files
        return (SourceFile(self.url, self.mirror, self.sha256, self.md5),)


@dataclass(frozen=True)
class SplitConfig:
    name: str
    dataset: str
    setting: str
    source: str
    format: str


@dataclass(frozen=True)
class ProtocolConfig:
    rating_threshold: float
    k_core: int
    ratios: tuple[float, float, float]
    rounding: str
    noisy_max_fraction: float
    # the validation rows carved from a given train part (setting ``carved`` of the tvdiff-*
    # formats; rule in pipeline.stages.prepare); optional in params.yaml, these are the defaults
    valid_fraction: float = 0.1
    valid_min_train: int = 5
    valid_seed: int = 1


@dataclass(frozen=True)
class TrainingConfig:
    device: str
    threads: int
    eval_every: int
    patience: int
    select_metric: str
    checkpoint_every: int
    fast: bool = True  # the CPU speed-ups of pipeline/models/fast (same results up to float rounding)


@dataclass(frozen=True)
class EvaluationConfig:
    topk: tuple[int, ...]
    batch_size: int


def params_path(path: str | os.PathLike | None = None) -> Path:
    """The params file: explicit path, else $PIPELINE_PARAMS, else ./params.yaml."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(PARAMS_ENV) or "params.yaml")


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read (:func:`read_params`: an overlay resolved onto its base) and fully validate the params
    file; returns the plain dictionary."""
    p = params_path(path)
    if not p.is_file():
        raise FileNotFoundError(f"params file not found: {p} (set {PARAMS_ENV} or run from the repository root)")
    params = read_params(p)
    check_schema(params)
    check_semantics(params)
    params["_path"] = str(p.resolve())
    return params


EXTENDS_KEY = "extends"


def read_params(path: str | os.PathLike) -> dict[str, Any]:
    """The params file as one mapping, not validated. A file whose top level has
    ``extends: <base file>`` (a path relative to the file) is an overlay: it is merged onto its
    base (itself possibly an overlay) as a JSON merge patch (RFC 7396): a mapping merges into the
    base's mapping key by key, recursively; a list or scalar replaces the base's value; ``null``
    deletes the base's key. The result has no ``extends`` key; both engines read it (the
    Snakefile, every stage; ``python -m pipeline resolve-params`` writes it for DVC)."""
    return _read_params(Path(path), ())


def _read_params(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    doc = read_yaml(path)
    if not isinstance(doc, dict):
        raise ConfigError("<root>", f"{path} must hold a mapping, got {type(doc).__name__}")
    if EXTENDS_KEY not in doc:
        return doc
    base = doc.pop(EXTENDS_KEY)
    if not isinstance(base, str) or not base:
        raise ConfigError(EXTENDS_KEY, f"{path}: must be the path of the params file this one overlays, "
                          f"relative to {path.parent or '.'}; got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(EXTENDS_KEY, f"{path}: the base file {base_path} does not exist")
    chain = (*chain, path.resolve())
    if base_path.resolve() in chain:
        raise ConfigError(EXTENDS_KEY, f"{path}: extends a file that extends it: "
                          f"{' -> '.join(str(c) for c in (*chain, base_path.resolve()))}")
    return merge_patch(_read_params(base_path, chain), doc)


def merge_patch(base: Any, patch: Any) -> Any:
    """``patch`` applied to ``base`` as a JSON merge patch (RFC 7396): mappings merge key by key
    (a ``None`` value deletes the key), anything else replaces. Neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def read_yaml(path: str | os.PathLike) -> Any:
    """The YAML document in ``path``; a syntax error names the file, line and column."""
    with open(path) as fh:
        try:
            return yaml.safe_load(fh)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
            raise ConfigError("<root>", f"{path}: YAML syntax error at {where}: {err.problem or err.context}") from None


def _load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _dotted(path) -> str:
    """A JSON-schema error path as the dotted key: ``experiments[0].seeds``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def check_schema(params: dict) -> None:
    """JSON-schema validation with a message that names the key and the allowed values."""
    params = {k: v for k, v in params.items() if not k.startswith("_")}
    validator = jsonschema.Draft202012Validator(_load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(params))
    if error is None:
        return
    key = _dotted(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = _dotted(list(error.absolute_path) + [extra[0]]) if extra else key
        raise ConfigError(key, f"unknown key; allowed keys here: {allowed}")
    if error.validator == "enum":
        raise ConfigError(key, f"{error.instance!r} is not allowed; allowed values: {error.validator_value}")
    if error.validator == "required":
        raise ConfigError(key, error.message)
    if error.validator in ("anyOf", "not") and "description" in error.schema:
        raise ConfigError(key, error.schema["description"])  # says what the alternatives are
    raise ConfigError(key, error.message)


def _require_member(key: str, value: str, allowed) -> None:
    allowed = sorted(allowed)
    if value not in allowed:
        raise ConfigError(key, f"unknown name {value!r}; allowed values: {allowed}")


def check_semantics(params: dict) -> None:
    """Cross-references and value constraints the schema cannot express."""

    ratios = params["protocol"]["ratios"]
    if not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ConfigError("protocol.ratios", f"train/valid/test ratios must sum to 1, got {ratios} (sum {sum(ratios)})")
    synthetic = synthetic_sources(params)
    for name in sorted(set(synthetic) & (set(params["sources"]) | set(params.get("more_sources") or {}))):
        raise ConfigError(f"sources.{name}", f"the name is taken by synthetic.presets.{synthetic[name]} "
                          f"(its synthesize stage writes data/raw/{name}); rename the source")
    for preset in (params.get("synthetic") or {}).get("presets") or {}:
        synthetic_config(params, preset)
    for i, preset in enumerate((params.get("synthetic") or {}).get("build") or []):
        _require_member(f"synthetic.build[{i}]", preset, params["synthetic"]["presets"])
    for name, split in params["splits"].items():
        if split["source"] not in synthetic:  # a synthetic-<preset> source comes from the synthesize stage
            if split["source"] not in params["sources"]:
                raise ConfigError(f"splits.{name}.source", f"unknown name {split['source']!r}; allowed values: "
                                  f"{sorted(params['sources'])} (or a synthetic source: {sorted(synthetic)})")
        expected = f"{split['dataset']}_{split['setting']}"
        if name != expected:
            raise ConfigError(f"splits.{name}", f"split names are <dataset>_<setting>; expected {expected!r}")
        given = split["format"] in GIVEN_SPLIT_FORMATS
        if given != (split["setting"] in GIVEN_SPLIT_SETTINGS):
            allowed = GIVEN_SPLIT_SETTINGS if given else tuple(s for s in SETTINGS if s not in GIVEN_SPLIT_SETTINGS)
            raise ConfigError(f"splits.{name}.setting", f"{split['setting']!r} does not go with format "
                              f"{split['format']!r}; allowed settings for it: {list(allowed)}")
    for block in ("sources", "more_sources"):
        for name, entry in (params.get(block) or {}).items():
            names = [Path(f["mirror"]).name for f in entry.get("files") or ()]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(f"{block}.{name}.files", f"two files would be saved as {twice[0]!r} (the "
                                  "basename of mirror): the files of a source need distinct basenames")
    for variant, block in params["models"].items():
        declared = model_declared(params, variant)
        for split in block.get("per_split", {}) or {}:
            _require_member(f"models.{variant}.per_split.{split}", split, params["splits"])
        if "clusters" in declared.requires:
            sources = embedding_sources(params)
            if "embeddings" not in block:
                raise ConfigError(f"models.{variant}", f"latent model variants name their item embeddings; add embeddings: one of {sources}")
            _require_member(f"models.{variant}.embeddings", block["embeddings"], sources)
        if "hyperbolic" in declared.requires and "embeddings" in block:
            _require_member(f"models.{variant}.embeddings", block["embeddings"], stage1_sources(params))
    seen: dict[tuple[str, str, int], int] = {}
    for b, block in enumerate(params["experiments"]):
        for key, known in (("splits", params["splits"]), ("models", params["models"])):
            for i, name in enumerate(block[key]):
                _require_member(f"experiments[{b}].{key}[{i}]", name, known)
        for run in itertools.product(block["splits"], block["models"], block["seeds"]):
            if run in seen:
                raise ConfigError(f"experiments[{b}]", f"the run {run} is also planned by experiments[{seen[run]}]; "
                                  "list each (split, model, seed) once")
            seen[run] = b
    overlap = sorted(set(params["sources"]) & set(params["more_sources"]))
    if overlap:
        raise ConfigError(f"more_sources.{overlap[0]}", "is also in sources; keep each source in one block")
    metric, k = params["training"]["select_metric"].split("@")
    if int(k) not in params["evaluation"]["topk"]:
        raise ConfigError("training.select_metric", f"cut-off {k} is not in evaluation.topk {params['evaluation']['topk']}")
    per_split = params["training"].get("per_split") or {}
    for split in per_split:
        _require_member("training.per_split", split, params["splits"])
    for split in [None, *per_split]:
        schedule = training_settings(params, split)
        eval_every, patience = schedule["eval_every"], schedule["patience"]
        where = "training" if split is None else f"training.per_split.{split}"
        if eval_every >= patience:
            # the trainer stops before epoch e when e - best_epoch >= patience, best_epoch = 0 until the
            # first evaluation (epoch eval_every): so it stops before epoch `patience`, never evaluating
            raise ConfigError(f"{where}.eval_every", f"{eval_every} is not below {where}.patience ({patience}): "
                              f"patience counts epochs since the last new best (0 before the first evaluation), so "
                              f"every run would stop before epoch {patience}, before its first evaluation at epoch "
                              f"{eval_every}; make {where}.eval_every < {where}.patience")
    for split, model in plan.embed_jobs(params):
        if model not in params["models"]:
            raise ConfigError("models", f"models.{model} is missing: it is trained on {split!r} and the embed stage "
                              "exports its embeddings for the models that read them")
    for split, model, point in plan.model_jobs(params):
        _check_run_config(params, model, split, point)


def _check_run_config(params: dict, model: str, split: str, tuned: dict[str, Any] | None = None) -> None:
    """The run's hyperparameters by name and type (:func:`hyperparameters`), and that the run
    reaches an evaluation: the trainer evaluates at the epochs divisible by
    training.eval_every, up to the model's ``epochs`` (a model without ``epochs`` trains nothing
    and is evaluated once)."""
    merged = hyperparameters(params, model, split, tuned)
    eval_every = training_settings(params, split)["eval_every"]
    epochs = merged.get("epochs", model_declared(params, model).defaults.get("epochs"))
    if epochs is not None and eval_every > epochs:
        key = hyperparameter_key(params, model, split, "epochs", tuned)
        note = code_default_note(params, model, split, "epochs", tuned)
        raise ConfigError("training.eval_every", f"{eval_every} is more than {key} ({epochs}{note}): the run of {model!r} "
                          f"on {split!r} would end before its first evaluation at epoch {eval_every}; make "
                          f"training.eval_every <= {key}")


def embedding_sources(params: dict) -> list[str]:
    """What a latent variant's ``models.<v>.embeddings`` may name: an embedding model whose
    vectors the embed stage exports (a variant of an embedding class), or "released" (the authors' item_emb.npy in
    the split's raw archive)."""
    return sorted({*plan.embed_models(params), plan.RELEASED})


def stage1_sources(params: dict) -> list[str]:
    """What a hyperbolic variant's (HDRM's) ``models.<v>.embeddings`` may name: a variant of the
    stage-1 class (``hgcf``), whose points the embed stage exports."""
    return sorted(v for v in plan.embed_models(params) if plan.declared(params, v).key == plan.HYPERBOLIC_MODEL)


def model_declared(params: dict, variant: str):
    """What the class behind a variant declares (``models.<variant>.class``, default the variant
    name), read from its file without importing it (:mod:`pipeline.models.declared`)."""
    from pipeline.models.declared import declared_models

    _require_member("models", variant, params["models"])
    name = params["models"][variant].get("class", variant)
    known = declared_models()
    _require_member(f"models.{variant}.class" if "class" in params["models"][variant] else f"models.{variant}", name, known)
    return known[name]


def model_class(params: dict, variant: str):
    """The class behind a model variant (imports its model file, and with it torch; not the other
    model files: HDRM's and HGCF's import geoopt, half a second of a job's start-up)."""
    from pipeline.models.base import Recommender

    declared = model_declared(params, variant)
    importlib.import_module(declared.module)
    return Recommender.registry[declared.key]


def display_names(params: dict, variant: str) -> tuple[str, str | None]:
    """(row name in the tables, model name in the papers' results) of a variant: ``display`` and
    ``paper``, each defaulting to its class's display name; ``paper: null`` marks a configuration
    the papers did not run (its rows get no published number)."""
    name = model_declared(params, variant).display_name
    block = params["models"][variant]
    return block.get("display", name), block.get("paper", name)


def split_overrides(params: dict, model: str, split: str) -> dict[str, Any]:
    """The hyperparameters ``models.<model>.per_split.<split>`` sets for runs on ``split`` (its
    ``grid``, the split's own grid, is not one of them: :func:`pipeline.plan.grid`)."""
    return {k: v for k, v in plan.split_entry(params, model, split).items() if k != "grid"}


def hyperparameters(params: dict, model: str, split: str, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters params.yaml sets for a run, checked by name and type against the
    model's Config as its file declares it (no torch): ``models.<model>.defaults``, then the
    split's overrides, then ``tuned`` (a grid point: a setting of some of the keys of the split's
    grid, :func:`pipeline.plan.grid`). The Config's own defaults (in the model's file) fill the rest."""
    declared = model_declared(params, model)
    block = params["models"][model]
    tuned = tuned or {}
    merged = {**(block.get("defaults") or {}), **split_overrides(params, model, split), **tuned}
    for key, value in merged.items():
        where = hyperparameter_key(params, model, split, key, tuned)
        if key not in declared.fields:
            raise ConfigError(where, f"unknown hyperparameter; allowed: {sorted(declared.fields)}")
        problem = _type_problem(declared.fields[key], value)
        if problem:
            raise ConfigError(where, problem)
    return merged


def model_config(params: dict, model: str, split: str, tuned: dict[str, Any] | None = None):
    """The model's config dataclass: :func:`hyperparameters` (checked by name and type) over the
    Config's own defaults (the authors' settings, in the model's file ``pipeline/models/<model>.py``;
    the shared diffusion ones in ``pipeline/models/diffusion.py``), then the Config's value checks
    (``problems()``). Imports the model. An error names the params key the value comes from, or for
    a code default the key that would override it."""
    merged = hyperparameters(params, model, split, tuned)
    cls = model_class(params, model).Config
    in_code = {f.name for f in dataclasses.fields(cls)
               if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    missing = sorted({f.name for f in dataclasses.fields(cls)} - set(merged) - in_code)
    if missing:
        raise ConfigError(f"models.{model}.defaults", f"missing hyperparameters: {missing}")
    cfg = cls(**merged)
    overrides = {**split_overrides(params, model, split), **(tuned or {})}
    for keys, message in cfg.problems():
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        # the override that broke it: a split's or grid point's value, else the variant's defaults
        blamed = next((k for k in keys if k in overrides), next((k for k in keys if k in merged), keys[0]))
        raise ConfigError(hyperparameter_key(params, model, split, blamed, tuned),
                          message + code_default_note(params, model, split, blamed, tuned, override=True))
    return cfg


def check_model_configs(params: dict) -> int:
    """Build every planned job's model config (value checks included; imports the models): what
    ``python -m pipeline check`` adds to the torch-free validation. Returns how many."""
    jobs = plan.model_jobs(params)
    for split, model, point in jobs:
        model_config(params, model, split, point)
    return len(jobs)


def hyperparameter_key(params: dict, model: str, split: str, key: str, tuned: dict[str, Any] | None = None) -> str:
    """The dotted params key a hyperparameter's value comes from: the grid (``tuned``), else the
    split's override, else the defaults."""
    if key in (tuned or {}):
        return f"{plan.grid_key(params, model, split)}.{key}"
    if key in split_overrides(params, model, split):
        return f"models.{model}.per_split.{split}.{key}"
    return f"models.{model}.defaults.{key}"


def code_default_note(params: dict, model: str, split: str, key: str, tuned: dict[str, Any] | None = None,
                      *, override: bool = False) -> str:
    """'' when params sets ``key`` for this run; else a note that the value is the default of the
    model's Config, naming the file that sets it (and with ``override``, the key that would
    override it)."""
    block = params["models"][model]
    if key in (tuned or {}) or key in (block.get("defaults") or {}) or key in split_overrides(params, model, split):
        return ""
    cls = model_class(params, model).Config
    owner = next((k for k in cls.__mro__ if key in inspect.get_annotations(k)), cls)  # the class that declares it
    where = owner.__module__.replace(".", "/") + ".py"
    return f"; the value is the code default in {where}" + (f" (set models.{model}.defaults.{key} to override it)" if override else "")


_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "tuple": list}


def _type_problem(annotation, value) -> str | None:
    """A message when ``value`` does not fit the dataclass field type (bool is not a number);
    ``annotation`` is the type or its text as the file writes it (``list[int]`` is a list)."""
    if isinstance(annotation, str):
        annotation = _TYPES.get(annotation.split("[")[0].strip(), annotation)
    if annotation is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif annotation is int:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif annotation is float:
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif annotation is str:
        ok, want = isinstance(value, str), "a string"
    elif annotation is list:
        ok, want = isinstance(value, list), "a list"
    else:
        return None
    if ok:
        return None
    hint = " (YAML reads 1e-3 as a string; write 1.0e-3)" if isinstance(value, str) and annotation is float else ""
    return f"must be {want}, got {value!r} ({type(value).__name__}){hint}"


def source_config(params: dict, name: str) -> SourceConfig:
    known = {**params.get("more_sources", {}), **params["sources"]}
    _require_member("sources", name, known)
    entry = dict(known[name])
    files = tuple(SourceFile(**f) for f in entry.pop("files", None) or ())
    return SourceConfig(name=name, files=files, **entry)


SYNTHETIC_PREFIX = "synthetic-"  # preset NAME is written to data/raw/synthetic-NAME, usable as a split source


def synthetic_sources(params: dict) -> dict[str, str]:
    """{source name ``synthetic-<preset>``: preset} for every preset of the ``synthetic`` block."""
    presets = (params.get("synthetic") or {}).get("presets") or {}
    return {f"{SYNTHETIC_PREFIX}{name}": name for name in presets}


def synthetic_config(params: dict, name: str):
    """The :class:`pipeline.data.synthetic.SyntheticSpec` of preset ``synthetic.presets.<name>``."""
    from pipeline.data.synthetic import SyntheticSpec

    presets = (params.get("synthetic") or {}).get("presets") or {}
    _require_member("synthetic.presets", name, presets)
    fields = {f.name for f in dataclasses.fields(SyntheticSpec)}
    for key in presets[name]:
        if key not in fields:
            raise ConfigError(f"synthetic.presets.{name}.{key}", f"unknown key; allowed keys here: {sorted(fields)}")
    hints = typing.get_type_hints(SyntheticSpec)
    for key, value in presets[name].items():
        problem = _type_problem(hints[key], value)
        if problem:
            raise ConfigError(f"synthetic.presets.{name}.{key}", problem)
    spec = SyntheticSpec(**presets[name])
    for key, message in spec.problems():
        raise ConfigError(f"synthetic.presets.{name}.{key}", message)
    return spec


def split_argument(params: dict, name: str) -> SplitConfig:
    """The split a stage's ``--split`` names; a name params.yaml's ``splits`` does not define is
    refused (no stage runs, trains with bare defaults or labels its outputs with it)."""
    if name not in params["splits"]:
        raise ConfigError("splits", f"--split {name!r} is not a split of {params.get('_path', 'the params file')}; "
                          f"known splits: {sorted(params['splits'])}")
    return split_config(params, name)


def split_config(params: dict, name: str) -> SplitConfig:
    _require_member("splits", name, params["splits"])
    return SplitConfig(name=name, **params["splits"][name])


def protocol_config(params: dict) -> ProtocolConfig:
    p = params["protocol"]
    return ProtocolConfig(**{**p, "ratios": tuple(p["ratios"])})


def training_settings(params: dict, split: str | None = None) -> dict[str, Any]:
    """The ``training`` block as a run on ``split`` reads it: ``training.per_split.<split>`` (a
    split's own schedule, e.g. the authors' protocol's evaluation every epoch) over the rest."""
    block = dict(params["training"])
    per_split = block.pop("per_split", None) or {}
    return {**block, **per_split.get(split, {})} if split is not None else block


def training_config(params: dict, split: str | None = None) -> TrainingConfig:
    return TrainingConfig(**training_settings(params, split))


def evaluation_config(params: dict) -> EvaluationConfig:
    e = params["evaluation"]
    return EvaluationConfig(topk=tuple(sorted(e["topk"])), batch_size=e["batch_size"])


def mirror_dir(params: dict) -> Path | None:
    """The mirror folder: $PIPELINE_MIRROR if set ('' = none), else paths.mirror.

    A relative path is taken relative to the params file's folder.
    """
    value = os.environ.get(MIRROR_ENV)
    if value is None:
        value = params["paths"]["mirror"]
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute():
        base = Path(params.get("_path", "params.yaml")).resolve().parent
        path = base / path
    return path
