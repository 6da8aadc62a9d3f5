"""``python -m pipeline <stage> ...``: the commands both Snakemake and DVC run; stage ``x-y`` is
``pipeline/stages/x_y.py``.

Every stage reads the params file ($PIPELINE_PARAMS, default ./params.yaml), validates it,
and writes its outputs atomically. ``--log FILE`` copies everything the stage prints to FILE.
A problem in params.yaml, a ``--split`` it does not define, a ``--data`` folder of another split
and a damaged input file end the command with ``error: <reason>`` and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, data):
        for s in self.streams:
            s.write(data)
            s.flush()
        return len(data)

    def flush(self):
        for s in self.streams:
            s.flush()


@contextlib.contextmanager
def _logging_to(path: str | None):
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, fh), _Tee(err, fh)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def cmd_download(args, params):
    from pipeline.stages.download import main

    main(params, args.source, args.out)


def cmd_synthesize(args, params):
    from pipeline.stages.synthesize import main

    main(params, args.name, args.out)


def cmd_prepare(args, params):
    from pipeline.stages.prepare import main

    main(params, args.split, args.raw, args.out)


def cmd_embed(args, params):
    from pipeline.stages.embed import main

    main(params, args.split, args.model, args.data, args.run, args.out, args.tuned)


def cmd_import_embeddings(args, params):
    from pipeline.stages.import_embeddings import main

    main(args.raw, args.data, args.out)


def cmd_cluster(args, params):
    from pipeline.stages.cluster import main

    main(params, args.split, args.embeddings, args.out)


def cmd_tune(args, params):
    from pipeline.stages.tune import main

    main(params, args.split, args.model, args.seed, args.data, args.out, args.clusters)


def cmd_train(args, params):
    from pipeline.stages.train import main

    main(params, args.split, args.model, args.seed, args.data, args.out, args.clusters, args.tuned, args.hyperbolic)


def cmd_significance(args, params):
    from pipeline.stages.significance import main

    main(params, args.runs, args.out)


def cmd_aggregate(args, params):
    from pipeline.stages.aggregate import main

    main(params, args.runs, args.out, args.efficiency, args.significance)


def cmd_check(args, params):
    from pipeline.stages.check import main

    main(params)


def cmd_dvc_yaml(args, params):
    from pipeline.stages.dvc_yaml import main

    main(params, args.out)


def cmd_resolve_params(args, params):
    from pipeline.stages.resolve_params import main

    main(params, args.params, args.out)


def cmd_verify(args, params):
    from pipeline.stages import verify

    if args.inputs:
        print("\n".join(verify.input_targets(params, args.run)))
        return
    verify.main(params, args.run, args.work, args.reuse)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--params", help="params file (default: $PIPELINE_PARAMS or ./params.yaml)")
    sub = parser.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("download", help="fetch one source (mirror or upstream), verify, extract")
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("synthesize", help="generate a synthetic raw source from a synthetic.presets entry")
    p.add_argument("--name", required=True, help="preset name in params.yaml synthetic.presets")
    p.add_argument("--out", required=True, help="output folder, e.g. data/raw/synthetic-<name>")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("prepare", help="raw source -> canonical interaction table + statistics")
    p.add_argument("--split", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train one model on one split with one seed; evaluate")
    p.add_argument("--split", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--data", required=True)
    p.add_argument("--clusters", help="data/clusters/<split> (latent models: L-DiffRec, LT-DiffRec)")
    p.add_argument("--tuned", help="runs/<split>/<model>/tuning/selected.json (variants with a grid)")
    p.add_argument("--hyperbolic", help="data/embeddings/<split>/hgcf (HDRM: the embed stage's HGCF points)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="train a variant's hyperparameter grid (first seed), select on validation")
    p.add_argument("--split", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, required=True, help="the seed the grid is trained with (the first seed the plan runs)")
    p.add_argument("--data", required=True)
    p.add_argument("--clusters", help="data/clusters/<split> (latent models)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("embed", help="export a trained embedding model's vectors (lightgcn: item vectors to cluster; hgcf: HDRM's stage-1 points)")
    p.add_argument("--split", required=True)
    p.add_argument("--model", required=True, help="a variant of an embedding class, e.g. lightgcn or hgcf (pipeline.plan.EMBED_CLASSES)")
    p.add_argument("--data", required=True)
    p.add_argument("--run", required=True, help="the model's train run, runs/<split>/<model>/seed<embeddings.seed>")
    p.add_argument("--tuned", help="runs/<split>/<model>/tuning/selected.json (variants with a grid)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("import-embeddings", help="take the released item_emb.npy of a DiffRec archive")
    p.add_argument("--split", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_import_embeddings)

    p = sub.add_parser("cluster", help="k-means on item embeddings -> item clusters")
    p.add_argument("--split", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("aggregate", help="collect run metrics into results/ tables, significance tests and figures")
    p.add_argument("--runs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--efficiency", help="efficiency.json of benchmarks/bench_efficiency.py (draws figures/efficiency.png)")
    p.add_argument("--significance", help="the significance stage's CSV (else the tests run here, from per_user.parquet)")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("significance", help="paired Wilcoxon tests of every model against DiffRec from the per-user tables")
    p.add_argument("--runs", required=True)
    p.add_argument("--out", required=True, help="the CSV to write, e.g. results/significance.csv")
    p.set_defaults(func=cmd_significance)

    p = sub.add_parser("verify", help="retrain committed runs and compare them with what is committed")
    p.add_argument("--run", action="append", required=True, help="a committed run folder runs/<split>/<model>/seed<N> (repeatable)")
    p.add_argument("--work", default="verify", help="folder for the retrained runs and report.json")
    p.add_argument("--inputs", action="store_true", help="only print the input files the runs need (targets for the DAG runner)")
    p.add_argument("--reuse", action="store_true", help="compare retrainings already finished in --work instead of training again")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("check", help="validate the params file and build every planned model config (imports the models)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("dvc-yaml", help="render dvc.yaml from params.yaml (the run plan) for DVC")
    p.add_argument("--out", default="dvc.yaml")
    p.set_defaults(func=cmd_dvc_yaml)

    p = sub.add_parser("resolve-params", help="write the params file resolved (an overlay merged onto its base, "
                       "see pipeline.config.read_params), e.g. for DVC, which reads params.yaml as it is")
    p.add_argument("--out", required=True, help="the YAML file to write, e.g. a scratch folder's params.yaml")
    p.set_defaults(func=cmd_resolve_params)

    for p in sub.choices.values():
        p.add_argument("--log", help="also write the stage's output to this file")
    return parser


def check_arguments(args, params) -> None:
    """Checks of the command line against params.yaml and the inputs it names, before any stage
    runs: ``--split`` must be a split of params.yaml, and ``--data`` (a prepare stage's folder)
    must have been prepared for that split."""
    from pipeline.config import split_argument

    if getattr(args, "split", None) is None:
        return
    split = split_argument(params, args.split)
    if getattr(args, "data", None) is not None:
        from pipeline.data.dataset import check_prepared_for

        check_prepared_for(args.data, split)


def main(argv=None) -> int:
    from pipeline.config import ConfigError, load_params
    from pipeline.io import ArtifactError
    from pipeline.supervision import exit_with_supervisor

    args = build_parser().parse_args(argv)
    exit_with_supervisor(args.stage)  # stop when the DAG runner that started this stage is gone
    with _logging_to(args.log):
        start = time.perf_counter()
        try:
            params = load_params(args.params)
            check_arguments(args, params)
            args.func(args, params)
        except (ConfigError, ArtifactError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"[{args.stage}] interrupted after {time.perf_counter() - start:.1f}s; the same command resumes "
                  "from the last checkpoint", file=sys.stderr, flush=True)
            return 130
        except Exception as err:  # a clear one-line reason, then the traceback for debugging
            print(f"error in stage '{args.stage}': {type(err).__name__}: {err}", file=sys.stderr)
            raise
        print(f"[{args.stage}] done in {time.perf_counter() - start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    from pipeline.allocator import keep_freed_memory_if_asked

    keep_freed_memory_if_asked()  # a process setting, so here and not in main() (pipeline/allocator.py)
    sys.exit(main())
