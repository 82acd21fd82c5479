#!/usr/bin/env bash
# `cond_flow --preset=accelerator` on one GPU: train it, then classifier-free guidance against
# fid_lenet / recall / digit accuracy, a sample grid per guidance, and the ODE likelihood.
#
#   bash experiments/accelerator_guidance.sh OUT_DIR [GUIDANCES] [STEPS]
#
# 1. trains the preset (30 epochs, --evaluate=false: the curves below are the evaluation);
# 2. experiments.sampling_curve at STEPS (default 16,32) for each guidance in GUIDANCES (default
#    1,1.25,1.5), one after the other so samples/s are those of a GPU used by nothing else;
# 3. a 10x10 grid per guidance (one row per digit) with experiments.generate;
# 4. experiments.flow_likelihood: bits/dim of 1,000 dequantized test digits, 32 Heun steps;
# 5. OUT_DIR/runs.tgz: the run without checkpoints (metrics, curves, pictures) and the logs.
# TRAIN_ARGS / CURVE_ARGS / LIKELIHOOD_ARGS add flags (e.g. a tiny network, to try it on a CPU).
set -u
out=${1:?usage: accelerator_guidance.sh OUT_DIR [GUIDANCES] [STEPS]}
guidances=${2:-1,1.25,1.5}
steps=${3:-16,32}
py=${PYTHON:-python3}
run=${RUNS_DIR:-/tmp/accelerator_guidance}/cond_flow
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
rm -rf "$run"; mkdir -p "$(dirname "$run")" "$out"
export PYTHONUNBUFFERED=1

$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== train ($(elapsed) s)"
$py -m experiments.train --model=cond_flow --preset=accelerator --workdir="$run" \
    --evaluate=false ${TRAIN_ARGS:-} > "$out/train.log" 2>&1 || { tail -n 20 "$out/train.log"; exit 1; }
grep -E "img/s|test" "$out/train.log" | tail -n 4

for g in ${guidances//,/ }; do
  echo "== guidance $g ($(elapsed) s)"
  $py -m experiments.sampling_curve --workdir="$run" --guidance="$g" --steps="$steps" \
      --name="guidance_$g" --progress=false ${CURVE_ARGS:-} 2>&1 | grep -v "^[IW]0" | tee "$out/curve_$g.log"
  $py -m experiments.generate --workdir="$run" --guidance="$g" --num=100 \
      --sample_steps="${steps##*,}" --out="$run/grid_guidance_$g.png" > /dev/null 2>&1
done

echo "== likelihood ($(elapsed) s)"
$py -m experiments.flow_likelihood --workdir="$run" ${LIKELIHOOD_ARGS:-} 2>&1 | grep -v "^[IW]0" \
    | tee "$out/likelihood.log"

tar czf "$out/runs.tgz" --exclude=checkpoints -C "$(dirname "$run")" cond_flow -C "$out" \
  $(cd "$out" && ls *.log)
echo "== done in $(elapsed) s"
