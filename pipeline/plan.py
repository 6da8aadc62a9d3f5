"""The run plan: every job of the DAG, derived from params.yaml and what each model declares.

Both engines take their jobs, commands, inputs and parameter dependencies from here: the
Snakemake rules (``workflow/rules/*.smk``) and the renderer of dvc.yaml (``pipeline/stages/dvc_yaml.py``).
It reads the models' declarations from their files (``pipeline/models/declared.py``), so
planning imports no torch. It assumes params that passed ``pipeline.config.check_semantics``.

What follows from what:
    ``experiments``  blocks of ``{splits, models, seeds}``: the runs the tables show
                     (:func:`table_runs`), each split x model variant x seed of a block
    reuse            a temporal split holds the same rows as its clean twin (same dataset, source
                     and format: ``pipeline/stages/prepare.py``), in time order. A model that does
                     not declare ``uses_time_order`` gets the same result on both, so its temporal
                     run is the clean split's run (:func:`trained_run`), trained once; the same
                     holds for the item embeddings and clusters a temporal run reads
    tuning           a variant with a grid on a split (``models.<v>.grid``, or that split's own
                     ``models.<v>.per_split.<split>.grid``, which replaces it there) runs the tune
                     stage first on that split, with the first seed planned for it there
                     (:func:`tune_runs`); a grid point that another variant's run already is (same
                     split, seed and setting: :func:`shared_points`) is that run, copied, and so is
                     a later seed's run of the selected setting when that setting is another
                     variant's run of that seed (:func:`twin_runs`)
    clusters         a variant whose class ``requires`` "clusters" reads k-means clusters of
                     ``models.<v>.embeddings``: an embedding model's vectors (the embed stage) or
                     "released" (the import-embeddings stage) (:func:`cluster_jobs`)
    stage-1 points   a variant whose class ``requires`` "hyperbolic" reads the embed stage's
                     points of ``models.<v>.embeddings`` (default hgcf) on its split (:func:`embed_jobs`)
    embeddings       the embed stage trains nothing: it exports the final vectors of the embedding
                     model's train run of seed ``embeddings.seed`` (:func:`embed_source`), a run
                     the DAG trains whether or not the tables show it (:func:`trained_runs`), so
                     no run is computed twice and a tuned embedding model exports its selected setting
"""

from __future__ import annotations

import ast
import functools
import itertools
import json
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.models.declared import Declared, declared_models

RELEASED = "released"  # embeddings source: the authors' item_emb.npy, imported from the raw archive
HYPERBOLIC_MODEL = "hgcf"  # the class (and default variant) of the points a "hyperbolic" model reads (HDRM's stage 1)
RUN_DIR = "runs/{split}/{model}/seed{seed}"
TUNE_DIR = "runs/{split}/{model}/tuning"
EMBED_DIR = "data/embeddings/{split}/{model}"
CLUSTER_DIR = "data/clusters/{split}"  # one folder per embeddings source inside
PREPARED = ("data/prepared/{split}/interactions.parquet", "data/prepared/{split}/stats.json")
EMBED_CLASSES = ("lightgcn", HYPERBOLIC_MODEL)  # the classes whose trained vectors the embed stage exports
EMBED_FILES = ("user_emb.npy", "item_emb.npy")  # what the embed stage writes (from a run's model.pt)
RUN_FILES = ("model.pt", "per_user.parquet", "history.csv", "metrics.json")
PACKAGE_DIR = Path(__file__).resolve().parent
# Modules every stage runs whose effect on a result goes through what is tracked anyway (the
# params a job reads, its command): loading and checking params, planning, file plumbing. They
# are not code dependencies, so that editing them reruns nothing.
PLUMBING = ("pipeline.config", "pipeline.plan", "pipeline.models.declared", "pipeline.io", "pipeline.supervision",
            "pipeline.__main__")


class Run(NamedTuple):
    split: str
    model: str  # a variant of params.yaml's models
    seed: int


def declared(params: dict, variant: str) -> Declared:
    """The declarations of a variant's class (``models.<variant>.class``, default the variant)."""
    return declared_models()[params.get("models", {}).get(variant, {}).get("class", variant)]


def requires(params: dict, variant: str) -> frozenset[str]:
    return declared(params, variant).requires


def table_runs(params: dict) -> list[Run]:
    """Every (split, variant, seed) the tables show: the product of each ``experiments`` block's
    splits, models and seeds, block by block, in the order they are written; a deterministic
    variant (its class's ``deterministic``: every seed gives the same result, e.g. MostPop, EASE)
    runs its block's first seed only."""
    return [
        Run(split, variant, int(seed))
        for block in params["experiments"]
        for split, variant in itertools.product(block["splits"], block["models"])
        for seed in (block["seeds"][:1] if declared(params, variant).deterministic else block["seeds"])
    ]


def clean_twin(params: dict, split: str) -> str | None:
    """The clean split whose rows a temporal split repeats (same dataset, source and format),
    or None."""
    cfg = params["splits"][split]
    if cfg["setting"] != "temporal":
        return None
    for name, other in params["splits"].items():
        if other["setting"] == "clean" and all(other[k] == cfg[k] for k in ("dataset", "source", "format")):
            return name
    return None


def rows_split(params: dict, split: str, model: str | None) -> str:
    """The split whose job stands for ``model`` on ``split``: the clean twin of a temporal split
    when the model (a variant, or an embedding model; None: order-free input such as clusters of
    embeddings) ignores the time order, else the split itself."""
    twin = clean_twin(params, split)
    if twin is None or (model is not None and declared(params, model).uses_time_order):
        return split
    return twin


def trained_run(params: dict, run: Run) -> Run:
    """The run that is trained for a table run (itself, or the same seed on the clean twin)."""
    return Run(rows_split(params, run.split, run.model), run.model, run.seed)


def _table_trained(params: dict) -> list[Run]:
    """The runs trained for the table runs, reused ones counted once."""
    return list(dict.fromkeys(trained_run(params, run) for run in table_runs(params)))


def embed_source(params: dict, split: str, model: str) -> Run:
    """The train run whose model the embed stage exports for ``model`` on ``split``: seed
    ``embeddings.seed``."""
    return Run(split, model, int(params["embeddings"]["seed"]))


def trained_runs(params: dict) -> list[Run]:
    """The runs the DAG trains: the table runs (reused ones counted once), then the embed
    stage's source runs that are not among them."""
    sources = [embed_source(params, split, model) for split, model in embed_jobs(params)]
    return list(dict.fromkeys(_table_trained(params) + sources))


def run_files(params: dict, name: str) -> list[str]:
    """File ``name`` of every trained run (``metrics.json``, ``history.csv``,
    ``per_user.parquet``): the inputs of the reporting stages in both engines."""
    return [f"{RUN_DIR.format(**run._asdict())}/{name}" for run in trained_runs(params)]


def split_entry(params: dict, variant: str, split: str) -> dict[str, Any]:
    """``models.<variant>.per_split.<split>``: the split's overrides and its own grid ({} where unset)."""
    return (params["models"][variant].get("per_split") or {}).get(split) or {}


def grid_key(params: dict, variant: str, split: str) -> str:
    """The dotted params key of the grid a variant tries on ``split``: the split's own
    (``models.<variant>.per_split.<split>.grid``, which replaces the variant's there; ``{}`` leaves
    the split untuned) where set, else ``models.<variant>.grid``."""
    if "grid" in split_entry(params, variant, split):
        return f"models.{variant}.per_split.{split}.grid"
    return f"models.{variant}.grid"


def grid(params: dict, variant: str, split: str) -> list[dict[str, list]]:
    """The grid a variant tries on ``split`` (:func:`grid_key`) as a list of sub-grids
    (hyperparameter -> values): a mapping is one, a list of mappings (settings that only go
    together, e.g. a loss form with its own schedule) is several; [] for none."""
    value = split_entry(params, variant, split).get("grid", params["models"][variant].get("grid")) or []
    return [g for g in ([value] if isinstance(value, dict) else value) if g]


def is_tuned(params: dict, variant: str, split: str) -> bool:
    """A variant with a grid on ``split`` (:func:`grid`) runs the tune stage first there."""
    return bool(grid(params, variant, split))


def grid_points(params: dict, variant: str, split: str) -> list[dict[str, Any]]:
    """The settings a tuned variant tries on ``split``: each sub-grid's product (:func:`grid`; in
    the order its keys are written), the sub-grids in the order written, a setting listed twice
    tried once; [] where it has no grid."""
    points: list[dict[str, Any]] = []
    for values in grid(params, variant, split):
        keys = list(values)
        for combo in itertools.product(*(values[k] for k in keys)):
            point = dict(zip(keys, combo))
            if point not in points:
                points.append(point)
    return points


def grid_keys(params: dict, variant: str, split: str) -> list[str]:
    """Every hyperparameter a variant's grid on ``split`` sets, in the order first written."""
    return list(dict.fromkeys(k for values in grid(params, variant, split) for k in values))


def tune_runs(params: dict) -> list[Run]:
    """Every tune stage: each tuned variant on each split it trains on, with the first seed
    planned for it there (the grid is trained with that seed)."""
    first: dict[tuple[str, str], int] = {}
    for split, variant, seed in trained_runs(params):
        if is_tuned(params, variant, split):
            first.setdefault((split, variant), seed)
    return [Run(split, variant, seed) for (split, variant), seed in first.items()]


def run_setting(params: dict, split: str, variant: str, point: dict[str, Any] | None = None) -> tuple:
    """What a run of ``variant`` on ``split`` computes with, besides the split's data and training
    schedule, the evaluation and the seed (the same for any variant there): its class, the
    hyperparameters params.yaml sets (the variant's defaults, the split's overrides, then the grid
    ``point``; the class's code defaults fill the rest alike), its thread count and the clusters
    and stage-1 points it reads. Runs of two variants with equal settings on one split and seed
    compute the same bits."""
    block = params["models"][variant]
    overrides = {k: v for k, v in split_entry(params, variant, split).items() if k != "grid"}
    hyper = {**(block.get("defaults") or {}), **overrides, **(point or {})}
    return (declared(params, variant).key, json.dumps(hyper, sort_keys=True), run_threads(params, variant),
            clusters_of(params, split, variant), stage1_of(params, split, variant))


def tune_seed(params: dict, split: str, variant: str) -> int | None:
    """The seed a tuned variant's grid is trained with on ``split`` (:func:`tune_runs`); None for
    a variant that runs no tune stage there."""
    return next((run.seed for run in tune_runs(params) if (run.split, run.model) == (split, variant)), None)


def twin_runs(params: dict, split: str, variant: str, seed: int) -> dict[int, Run]:
    """The points of ``variant``'s grid on ``split`` whose run with ``seed`` another variant's
    planned train run already is: point index -> that run (same split and seed, an equal
    :func:`run_setting`; a variant untuned on the split, whose setting is known before any tune
    stage runs). Such a run is copied, not trained a second time: as a grid point by the tune
    stage (:func:`shared_points`), and as the train run of a later seed when the tune stage
    selects that point (``pipeline.training.reuse``)."""
    settings: dict[tuple, Run] = {}
    for run in trained_runs(params):
        if run.split == split and run.seed == seed and run.model != variant and not is_tuned(params, run.model, split):
            settings.setdefault(run_setting(params, split, run.model), run)
    points = enumerate(grid_points(params, variant, split))
    return {i: settings[key] for i, point in points if (key := run_setting(params, split, variant, point)) in settings}


def shared_points(params: dict, split: str, variant: str) -> dict[int, Run]:
    """The grid points of ``variant``'s tune stage on ``split`` that another variant's train run
    computes anyway (:func:`twin_runs` at the grid's seed). The tune stage copies these runs
    instead of training them a second time, and reads them as inputs."""
    seed = tune_seed(params, split, variant)
    return {} if seed is None else twin_runs(params, split, variant, seed)


def model_jobs(params: dict) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(split, model, grid point or None) of every model config a job builds: each trained
    variant on its splits (the embed stage's source runs among them), each grid point of a tuned one."""
    pairs = _split_variants(trained_runs(params))
    return ([(split, variant, None) for split, variant in pairs]
            + [(split, variant, point) for split, variant in pairs for point in grid_points(params, variant, split)])


def run_threads(params: dict, variant: str) -> int:
    """CPU threads of a variant's jobs: ``models.<variant>.threads`` where set (small models run
    better as parallel one-thread jobs), else ``training.threads``."""
    return int(params["models"][variant].get("threads", params["training"]["threads"]))


def clusters_of(params: dict, split: str, variant: str) -> tuple[str, str] | None:
    """(cluster folder, embeddings source) a variant's run on ``split`` reads: the clusters are
    ``<folder>/<source>/clusters.parquet``. None: the variant needs no clusters."""
    if "clusters" not in requires(params, variant):
        return None
    source = params["models"][variant]["embeddings"]
    return CLUSTER_DIR.format(split=rows_split(params, split, None if source == RELEASED else source)), source


def embed_models(params: dict) -> list[str]:
    """The variants the embed stage can export: those of an embedding class (``EMBED_CLASSES``)."""
    return [v for v in params["models"] if declared(params, v).key in EMBED_CLASSES]


def stage1_model(params: dict, variant: str) -> str:
    """The HGCF variant whose points a "hyperbolic" variant reads: ``models.<variant>.embeddings``,
    default ``hgcf``."""
    return params["models"][variant].get("embeddings", HYPERBOLIC_MODEL)


def stage1_of(params: dict, split: str, variant: str) -> str | None:
    """The stage-1 folder (HGCF points) a variant's run on ``split`` reads (None: not needed)."""
    if "hyperbolic" not in requires(params, variant):
        return None
    source = stage1_model(params, variant)
    return EMBED_DIR.format(split=rows_split(params, split, source), model=source)


def _split_variants(runs: list[Run]) -> list[tuple[str, str]]:
    """(split, variant) of ``runs``, each once, in order."""
    return list(dict.fromkeys((run.split, run.model) for run in runs))


def cluster_jobs(params: dict) -> list[tuple[str, str]]:
    """(split, embeddings source) of every cluster job: those the latent runs read."""
    out = []
    for split, variant in _split_variants(_table_trained(params)):  # an embedding model reads no clusters
        found = clusters_of(params, split, variant)
        if found:
            out.append((found[0].split("/")[-1], found[1]))
    return list(dict.fromkeys(out))


def embed_jobs(params: dict) -> list[tuple[str, str]]:
    """(split, embedding model) of every embed job: the item embeddings the cluster jobs read
    and the stage-1 points HDRM's runs read, each exported from :func:`embed_source`'s run."""
    out = [(split, source) for split, source in cluster_jobs(params) if source != RELEASED]
    for split, variant in _split_variants(_table_trained(params)):  # nor stage-1 points
        folder = stage1_of(params, split, variant)
        if folder:
            out.append((folder.split("/")[2], stage1_model(params, variant)))
    return list(dict.fromkeys(out))


def import_jobs(params: dict) -> list[str]:
    """Splits whose released item embeddings are imported (the clusters of "released")."""
    return list(dict.fromkeys(split for split, source in cluster_jobs(params) if source == RELEASED))


JOB_SECONDS = "workflow/job_seconds.json"  # jobs' measured lengths: benchmarks/dag_timeline.py --job-seconds


def job_key(rule: str, split: str, name: str | None = None, seed: int | str | None = None) -> str:
    """A job's name in :data:`JOB_SECONDS` and :func:`job_priorities`: ``rule/split[/model or
    embeddings source][/seed]`` (train: with its seed; tune, embed, cluster: without;
    import_embeddings: the split alone)."""
    return "/".join(str(part) for part in (rule, split, name, seed) if part is not None)


ORDERED_RULES = ("train", "tune", "embed", "cluster", "import_embeddings")  # the rules whose jobs have a priority


def wildcards_job_key(rule: str, wildcards) -> str:
    """:func:`job_key` of a Snakemake job of ``rule`` from its wildcards (a mapping: split, and
    model or source, and seed where the rule has them)."""
    return job_key(rule, wildcards["split"], wildcards.get("model") or wildcards.get("source"), wildcards.get("seed"))


def read_job_seconds(path: str | Path = JOB_SECONDS) -> dict[str, float]:
    """{job key: seconds} measured in a timed run (:data:`JOB_SECONDS`); empty where there is none."""
    path = Path(path)
    return {str(k): float(v) for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}


def _ordered_jobs(params: dict) -> dict[str, tuple[list[str], list[str]]]:
    """{job key: (the files it reads, the files it writes)} of every train, tune, embed, cluster
    and import job, from the same functions the engines take the jobs' inputs from."""
    jobs = {job_key("train", *run): (train_inputs(params, run), _run_files([run])) for run in trained_runs(params)}
    for run in tune_runs(params):
        jobs[job_key("tune", run.split, run.model)] = (tune_inputs(params, run), [TUNE_DIR.format(split=run.split, model=run.model)])
    for split, model in embed_jobs(params):
        folder = EMBED_DIR.format(split=split, model=model)
        jobs[job_key("embed", split, model)] = (embed_inputs(params, split, model), [f"{folder}/{name}" for name in EMBED_FILES])
    for split, source in cluster_jobs(params):
        jobs[job_key("cluster", split, source)] = ([f"{EMBED_DIR.format(split=split, model=source)}/item_emb.npy"],
                                                   [f"{CLUSTER_DIR.format(split=split)}/{source}/clusters.parquet"])
    for split in import_jobs(params):
        jobs[job_key("import_embeddings", split)] = ([], [f"{EMBED_DIR.format(split=split, model=RELEASED)}/item_emb.npy"])
    return jobs


def job_priorities(params: dict, seconds: dict[str, float]) -> dict[str, float]:
    """Each train, tune, embed, cluster and import job's scheduling priority: its own measured
    seconds plus the longest chain of measured jobs that waits on it (its critical path), so the
    scheduler starts first the jobs that hold up the most work, e.g. HGCF's seed-1 run, whose
    embed job HDRM's runs wait on. A job absent from ``seconds`` counts as the longest measured
    job of its rule (an unknown job is started early rather than left to end the run alone; 0
    where its rule has none measured). The order changes no result. Keys: :func:`job_key`."""
    jobs = _ordered_jobs(params)
    maker = {path: job for job, (_, writes) in jobs.items() for path in writes}
    readers: dict[str, set[str]] = {}
    for job, (reads, _) in jobs.items():
        for path in reads:
            if path in maker:
                readers.setdefault(maker[path], set()).add(job)
    longest: dict[str, float] = {}
    for job, value in seconds.items():
        rule = job.split("/")[0]
        longest[rule] = max(longest.get(rule, 0.0), value)

    @functools.cache
    def rank(job: str) -> float:
        own = seconds.get(job, longest.get(job.split("/")[0], 0.0))
        return own + max((rank(reader) for reader in readers.get(job, ())), default=0.0)

    return {job: round(rank(job), 1) for job in jobs}


def prepared_splits(params: dict) -> list[str]:
    """Splits the jobs read, in plan order."""
    out = [run.split for run in trained_runs(params)] + [split for split, _ in embed_jobs(params)] + import_jobs(params)
    return list(dict.fromkeys(out))


def param_value(params: dict, key: str):
    """The value of a dotted params key (``models.mf.grid``), as :func:`model_params` names them."""
    value = params
    for part in key.split("."):
        value = value[part]
    return value


def model_params(params: dict, split: str, variant: str) -> list[str]:
    """The dotted params keys a train or tune job of ``variant`` on ``split`` reads: the class,
    the variant's defaults, the split's overrides (its own grid among them), the variant's grid
    unless the split's replaces it, its embeddings where present, its
    thread count (results depend on it), the training block with the split's own schedule
    (``training.per_split.<split>``) and the evaluation block. Not ``display`` (a table label) or
    another split's overrides."""
    block = params["models"][variant]
    own_grid = grid_key(params, variant, split) != f"models.{variant}.grid"  # the split's grid replaces it
    keys = [f"models.{variant}.{k}" for k in ("class", "defaults", "grid", "embeddings", "threads")
            if k in block and not (k == "grid" and own_grid)]
    if split in (block.get("per_split") or {}):
        keys.append(f"models.{variant}.per_split.{split}")
    if "threads" not in block:
        keys.append("training.threads")
    training = [f"training.{k}" for k in params["training"] if k not in ("threads", "per_split")]
    if split in (params["training"].get("per_split") or {}):
        training.append(f"training.per_split.{split}")
    return keys + training + ["evaluation"]


def embed_params(params: dict, split: str, model: str) -> list[str]:
    """The dotted params keys an embed job reads: what builds the model (its variant's keys, its
    threads, the speed switch its propagation follows) and which run it exports; not the training
    schedule or evaluation, which only its source run read."""
    keys = [k for k in model_params(params, split, model) if k.startswith("models.") or k == "training.threads"]
    return keys + ["training.fast", "embeddings.seed"]


def train_command(params: dict, run: Run) -> str:
    split, model, seed = run
    args = [f"--split {split} --model {model} --seed {seed} --data data/prepared/{split}"]
    clusters, stage1 = clusters_of(params, split, model), stage1_of(params, split, model)
    if clusters:
        args.append(f"--clusters {clusters[0]}")
    if is_tuned(params, model, split):
        args.append(f"--tuned {TUNE_DIR.format(split=split, model=model)}/selected.json")
    if stage1:
        args.append(f"--hyperbolic {stage1}")
    return (f"python -m pipeline train {' '.join(args)} --out {RUN_DIR.format(**run._asdict())}"
            f" --log logs/train/{split}/{model}/seed{seed}.log")


def tune_command(params: dict, run: Run) -> str:
    split, model, seed = run
    clusters = clusters_of(params, split, model)
    return (f"python -m pipeline tune --split {split} --model {model} --seed {seed} --data data/prepared/{split}"
            + (f" --clusters {clusters[0]}" if clusters else "")
            + f" --out {TUNE_DIR.format(split=split, model=model)} --log logs/tune/{split}/{model}.log")


def embed_command(params: dict, split: str, model: str) -> str:
    source = embed_source(params, split, model)
    tuned = f" --tuned {TUNE_DIR.format(split=split, model=model)}/selected.json" if is_tuned(params, model, split) else ""
    return (f"python -m pipeline embed --split {split} --model {model} --data data/prepared/{split}"
            f" --run {RUN_DIR.format(**source._asdict())}{tuned}"
            f" --out {EMBED_DIR.format(split=split, model=model)} --log logs/embed/{split}/{model}.log")


def embed_inputs(params: dict, split: str, model: str) -> list[str]:
    """What an embed job reads besides code: the prepared split (the graph), its source run's
    model and, for a tuned model, the tune stage's folder (its ``selected.json``, the architecture
    the state fits: the folder, the tune job's declared output, as for a train job)."""
    out = [p.format(split=split) for p in PREPARED] + [f"{RUN_DIR.format(**embed_source(params, split, model)._asdict())}/model.pt"]
    if is_tuned(params, model, split):
        out.append(TUNE_DIR.format(split=split, model=model))
    return out


def train_inputs(params: dict, run: Run) -> list[str]:
    """Files and folders a train job reads besides code: the prepared split, the clusters, the
    tune stage's folder, the runs of other variants its selected setting may be
    (:func:`twin_runs`; for a seed other than the grid's, whose run is the tune stage's), the
    stage-1 points."""
    split, model, seed = run
    out = [p.format(split=split) for p in PREPARED]
    clusters, stage1 = clusters_of(params, split, model), stage1_of(params, split, model)
    if clusters:
        out.append(f"{clusters[0]}/{clusters[1]}/clusters.parquet")
    if is_tuned(params, model, split):
        out.append(TUNE_DIR.format(split=split, model=model))
        if seed != tune_seed(params, split, model):
            out += _run_files(twin_runs(params, split, model, seed).values())
    if stage1:
        out += [f"{stage1}/{f}" for f in EMBED_FILES]
    return out


def tune_inputs(params: dict, run: Run) -> list[str]:
    """Files a tune job reads besides code: the prepared split, the clusters, and the runs of
    other variants that stand for some of its grid points (:func:`shared_points`)."""
    clusters = clusters_of(params, run.split, run.model)
    return ([p.format(split=run.split) for p in PREPARED] + ([f"{clusters[0]}/{clusters[1]}/clusters.parquet"] if clusters else [])
            + _run_files(shared_points(params, run.split, run.model).values()))


def _run_files(runs) -> list[str]:
    return [f"{RUN_DIR.format(**run._asdict())}/{name}" for run in runs for name in RUN_FILES]


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package modules a module's code imports: anywhere in it (function-level imports
    included), but not under ``if TYPE_CHECKING:`` (annotations only)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "pipeline":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found & modules


def module_files() -> dict[str, Path]:
    """Package module name -> its file (a package's is its ``__init__.py``)."""
    files = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


@functools.cache
def package_imports() -> dict[str, frozenset[str]]:
    """The package's import graph: module -> the package modules it imports (:func:`imported`)."""
    files = module_files()
    return {name: frozenset(imported(ast.parse(path.read_text(), filename=str(path)), set(files)) - {name})
            for name, path in files.items()}


def code_files(*roots: str) -> list[str]:
    """The source files (repository paths) of the package modules ``roots`` import, themselves
    included, transitively, without :data:`PLUMBING`: what a job's result can depend on. The model
    registry (``pipeline.models``, which imports every model file when asked for a class) counts
    as itself, so a run depends on its own model's file and what that imports, not on the others."""
    graph, seen, todo = package_imports(), set(), list(roots)
    while todo:
        module = todo.pop()
        if module in seen or module in PLUMBING:
            continue
        seen.add(module)
        todo.extend(graph[module])
    paths = []
    for module in seen:
        path = PACKAGE_DIR.parent.joinpath(*module.split("."))
        paths.append(path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))
    return sorted(str(p.relative_to(PACKAGE_DIR.parent)) for p in paths)


def job_code(params: dict, stage: str, model: str | None = None) -> list[str]:
    """The code a job of ``stage`` (a command, ``import-embeddings`` style) runs: its stage module
    and, for a train, tune or embed job, its model's file, with what they import."""
    roots = [f"pipeline.stages.{stage.replace('-', '_')}"]
    if model is not None:
        roots.append(declared(params, model).module)
    return code_files(*roots)
