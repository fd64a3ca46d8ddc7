#!/usr/bin/env bash
# The learned-prior runs behind MODEL_CARD.md's "The prior is the limit now" section: the
# quickstart `cqf` with p(z) = N(0, I) (configs/quickstart.cfg, 1,200 steps) against a
# learned mixture of K diagonal Gaussians, each row trained and then evaluated exactly as
# the quickstart evaluates (validation BPD with IW K=8, latent use, 2,000 samples at T=0
# and T=1 in the MNIST classifier's features).
#
#   bash experiments/prior_sweep.sh [ROW ...]          # default: every row; finished rows are kept
#   python experiments/summarize_runs.py --script experiments/prior_sweep.sh work/prior/*
#
# Needs the quickstart's data, classifier and reference statistics (make quickstart, or
# python experiments/ablation.py creates them under work/quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
W=work/quickstart
D=$W/data/mnist28
OUT=${OUT:-work/prior}
BASE=configs/quickstart.cfg
export TF_CPP_MIN_LOG_LEVEL=2
declare -A ROWS=(
  [std]=""
  [mix10]="--prior=mixture --prior_components=10"
  [mix50]="--prior=mixture --prior_components=50"
  # Not trained: the std row's model with its prior refitted after training (EM, 50
  # diagonal Gaussians on posterior draws of the training digits), as the quickstart does.
  [std_fit50]="std, then pipeline.fit_prior --components=50"
)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(std mix10 mix50 std_fit50)
mkdir -p "$OUT"
for name in "${names[@]}"; do
  dir=$OUT/$name
  [ -f "$dir/ev_t1.json" ] && { echo "$name: done"; continue; }
  echo "=== $name: ${ROWS[$name]}"
  if [[ ${ROWS[$name]} == "std, then pipeline.fit_prior"* ]]; then
    [ -f "$OUT/std/ev_t1.json" ] || { echo "$name needs the std row first" >&2; exit 2; }
    rm -rf "$dir"
    $PY -m pipeline.fit_prior --model_dir=$OUT/std --output_model_dir=$dir --components=50
  else
    # shellcheck disable=SC2086
    $PY -m pipeline.train --flagfile=$BASE --data_dir=$D --model_dir=$dir --train_steps=1200 \
        --show_progress=false --experiment=prior --run_name=$name ${ROWS[$name]}
  fi
  for t in 0 1; do
    extra=()
    [ "$t" = 0 ] && extra=(--data_dir=$D --importance_samples=8)
    $PY -m pipeline.evaluate --model_dir=$dir "${extra[@]}" --fid_samples=2000 --temperature=$t \
        --extractor_path=$W/mnist_classifier --reference_stats=$W/reference_train_stats.npz 2>/dev/null \
        | python3 -c "import sys; t=sys.stdin.read(); print(t[t.rfind(chr(10)+'{')+1:])" > $dir/ev_t$t.json
  done
done
