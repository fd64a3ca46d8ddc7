#!/usr/bin/env bash
# The diagnostic runs behind MODEL_CARD.md's "Why the hybrid failed" section: the quickstart
# `cqf` as it was before the fix (experiments/collapse_sweep_base.cfg, 800 steps) with one change per row, each trained and then
# evaluated exactly like experiments/ablation.py does (validation BPD with IW K=8, latent use,
# 1,000 samples at T=0 and T=1 in the MNIST classifier's features).
#
#   bash experiments/collapse_sweep.sh [ROW ...]      # default: every row; finished rows are kept
#   python experiments/summarize_runs.py work/sweep/*  # the table
#
# Needs the quickstart's data, classifier and reference statistics (make quickstart, or
# python experiments/ablation.py creates them under work/quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
W=work/quickstart
D=$W/data/mnist28
OUT=${OUT:-work/sweep}
export TF_CPP_MIN_LOG_LEVEL=2
declare -A ROWS=(
  [cqf_dequantized]="--disc_inputs=dequantized"   # the earlier discriminator inputs
  [cqf_fix]=""                                     # lattice inputs (the new default)
  [cqf_fb1]="--free_bits=1.0"
  [cqf_warm400]="--kl_warmup_steps=400"
  [cqf_s1]="--flow_scales=1"
  [cqf_s1r0c32]="--flow_scales=1 --flow_res_blocks=0 --enc_dec_channels=32"
  [cqf_l5]="--lambda_adv=5"
  # Flow warm-up: encoder/decoder train first with the flow's nets fixed, so z is used
  # before the flow can explain the data alone.
  [vae_f_fw400]="--variant=vae_f --flow_warmup_steps=400"
  [cqf_fw400]="--flow_warmup_steps=400"
  # A local flow (1x1 coupling nets: pixels coupled within 2x2 blocks only), so image-level
  # structure can only come from z (as in VLAE, Chen et al. 2017).
  [vae_f_k1]="--variant=vae_f --flow_kernel_size=1"
  [cqf_k1]="--flow_kernel_size=1"
  [vae_f_k1s3]="--variant=vae_f --flow_kernel_size=1 --flow_scales=3"   # 4x4 blocks
  [vae_f_k1c32]="--variant=vae_f --flow_kernel_size=1 --enc_dec_channels=32"
  [cqf_k1l10]="--flow_kernel_size=1 --lambda_adv=10"
  [cqf_k1l10sn]="--flow_kernel_size=1 --lambda_adv=10 --spectral_norm"
  [cqf_k1sn]="--flow_kernel_size=1 --spectral_norm"
  [cqf_k1r1]="--flow_kernel_size=1 --gradient_penalty=r1 --gp_weight=1"
  [cqf_k1l10_1600]="--flow_kernel_size=1 --lambda_adv=10 --train_steps=1600"
  [cqf_k1l10c32]="--flow_kernel_size=1 --lambda_adv=10 --enc_dec_channels=32"
  [cqf_k1l20]="--flow_kernel_size=1 --lambda_adv=20"
  [cqf_k1l5]="--flow_kernel_size=1 --lambda_adv=5"
  [cqf_k1l20sn]="--flow_kernel_size=1 --lambda_adv=20 --spectral_norm"
  # A slower flow (its own Adam at lr/10), so the decoder can follow the features.
  [vae_f_fw400_flr2e-4]="--variant=vae_f --flow_warmup_steps=400 --flow_learning_rate=2e-4"
)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${!ROWS[@]}")
mkdir -p "$OUT"
for name in "${names[@]}"; do
  dir=$OUT/$name
  [ -f "$dir/ev_t1.json" ] && { echo "$name: done"; continue; }
  echo "=== $name: ${ROWS[$name]}"
  # shellcheck disable=SC2086
  $PY -m pipeline.train --flagfile=experiments/collapse_sweep_base.cfg --data_dir=$D --model_dir=$dir \
      --validation_every=100 --show_progress=false --experiment=sweep --run_name=$name ${ROWS[$name]}
  $PY -m pipeline.evaluate --model_dir=$dir --data_dir=$D --importance_samples=8 \
      --fid_samples=1000 --temperature=0 --extractor_path=$W/mnist_classifier \
      --reference_stats=$W/reference_train_stats.npz 2>/dev/null \
      | python3 -c "import sys; t=sys.stdin.read(); print(t[t.rfind(chr(10)+'{')+1:])" > $dir/ev_t0.json
  $PY -m pipeline.evaluate --model_dir=$dir --fid_samples=1000 --temperature=1 \
      --extractor_path=$W/mnist_classifier --reference_stats=$W/reference_train_stats.npz 2>/dev/null \
      | python3 -c "import sys; t=sys.stdin.read(); print(t[t.rfind(chr(10)+'{')+1:])" > $dir/ev_t1.json
done
