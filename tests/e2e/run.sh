#!/usr/bin/env bash
# Small end-to-end DAG run through Snakemake, in a scratch copy of the workflow so the
# repository's own data/, runs/ and results/ stay untouched. Needs the mirror folder
# (PIPELINE_MIRROR, default ../shared/datasets beside the repository).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
export PIPELINE_MIRROR=$(realpath "${PIPELINE_MIRROR:-$repo/../shared/datasets}")
work=${E2E_DIR:-$(mktemp -d /tmp/pipeline-e2e.XXXXXX)}
mkdir -p "$work"
cp -r "$repo/Snakefile" "$repo/workflow" "$repo/pipeline" "$work/"
# the e2e params are an overlay on the repository's params.yaml: written resolved, so that DVC
# (which reads params.yaml as it is) tracks the values the stages use
(cd "$repo" && python -m pipeline --params tests/e2e/params.yaml resolve-params --out "$work/params.yaml")
cd "$work"
python -m pipeline dvc-yaml  # dvc.yaml for these params, rendered by the same planner
echo "e2e: running the DAG in $work with mirror $PIPELINE_MIRROR"
snakemake --cores 2
# every expected artifact exists and the table has one row per model
test -s results/metrics.csv
test -s results/tables/clean.md && test -s results/tables/noisy.md && test -s results/tables/temporal.md
cat results/tables/clean.md
# a second run has nothing to do
snakemake --cores 2 --dry-run 2>&1 | grep -q "Nothing to be done" && echo "e2e: second run has nothing to do"
# DVC runs the same commands: re-run HDRM's three stages (HGCF's run and export, HDRM's run) and a TV-Diff (AR-GSP) run through
# `dvc repro` and compare with what Snakemake wrote (byte-identical)
mkdir -p snakemake-out
for f in runs/ml-100k_clean/hgcf/seed1/metrics.json data/embeddings/ml-100k_clean/hgcf/user_emb.npy runs/ml-100k_clean/hdrm/seed1/metrics.json \
         runs/ml-100k_clean/hdrm/seed1/history.csv runs/ml-100k_clean/tvdiff-argsp/seed1/metrics.json; do
  mkdir -p "snakemake-out/$(dirname "$f")" && cp "$f" "snakemake-out/$f"
done
dvc init --no-scm --quiet
dvc repro --single-item train-ml-100k_clean-hgcf-1 embed-ml-100k_clean-hgcf train-ml-100k_clean-hdrm-1 \
  train-ml-100k_clean-tvdiff-argsp-1 > dvc-repro.log 2>&1 || { cat dvc-repro.log; exit 1; }
for f in $(cd snakemake-out && find . -type f); do
  cmp "snakemake-out/$f" "$f" || { echo "e2e: dvc repro wrote a different $f"; exit 1; }
done
echo "e2e: dvc repro of HGCF's train and embed, HDRM's train and TV-Diff (AR-GSP) matches Snakemake's outputs"
echo "e2e: OK"
