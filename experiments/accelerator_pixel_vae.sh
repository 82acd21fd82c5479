#!/usr/bin/env bash
# `pixel_vae --preset=accelerator` on one GPU inside a fixed time budget, with the speed of every
# family first and the likelihood bound last (docs/likelihoods.md):
#
#   bash experiments/accelerator_pixel_vae.sh OUT_DIR [BUDGET_SECONDS]
#
# 1. mnistgen-benchmark of the default families (--max_steps=$BENCH_STEPS, scanned loop, no FID),
#    stopped after BENCH_SECONDS whatever it has printed by then;
# 2. a probe: 200 steps of the preset, whose last progress line gives img/s;
# 3. training, cosine-decayed over as many epochs as the budget leaves for it (at most the
#    preset's 60), with --train_loop=scan (no per-step dispatch) and --noevaluate;
# 4. experiments.evaluate: the IWAE bound with IWAE_K importance samples (default 100) on all
#    10,000 fixed-binarized test images, 1,000 samples and 1,000 reconstructions for the pictures
#    and sample metrics;
# 5. OUT_DIR/run.tgz: the run without its checkpoints, and the logs.
# TRAIN_ARGS / EVAL_ARGS add flags (tests run it with a tiny network on the CPU).
set -u
out=${1:?usage: accelerator_pixel_vae.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-540}
py=${PYTHON:-python3}
runs=${RUNS_DIR:-/tmp/accelerator_pixel_vae}
bench_seconds=${BENCH_SECONDS:-150}
bench_steps=${BENCH_STEPS:-100}
eval_seconds=${EVAL_SECONDS:-150}          # step 4, compilation included (estimate)
train_overhead=${TRAIN_OVERHEAD:-60}       # compilation, per-epoch test losses, end pictures
max_epochs=${MAX_EPOCHS:-60}
iwae_k=${IWAE_K:-100}
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
rm -rf "$runs"; mkdir -p "$runs" "$out"
export PYTHONUNBUFFERED=1

$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ "$bench_seconds" -gt 0 ]; then
  echo "== benchmark ($(elapsed) s)"
  timeout "$bench_seconds" $py -m experiments.benchmark --out="$out/benchmark" --repeats=3 \
      --max_steps="$bench_steps" --train_loop=scan --nofid --novae_recipe ${BENCH_ARGS:-} \
      > "$out/benchmark.log" 2>&1
  grep -v "^W\|^I" "$out/benchmark.log" | tail -n 12
fi

echo "== probe ($(elapsed) s)"
$py -m experiments.train --model=pixel_vae --preset=accelerator --workdir="$runs/probe" \
    --num_epochs=1 --train_size=25600 --log_every=50 --train_loop=scan --noevaluate \
    ${TRAIN_ARGS:-} > "$out/probe.log" 2>&1 || { tail -n 20 "$out/probe.log"; exit 1; }
rate=$(grep -o '[0-9,]* img/s' "$out/probe.log" | tail -n 1 | tr -d ', img/s')
train_size=$(sed -n 's/.*train_size=\([0-9]*\).*/\1/p' <<<"${TRAIN_ARGS:-}")
train_size=${train_size:-60000}
left=$(( budget - $(elapsed) - eval_seconds - train_overhead ))
epochs=$(( left * ${rate:-0} / train_size ))
(( epochs > max_epochs )) && epochs=$max_epochs
(( epochs < 1 )) && epochs=1
echo "probe: ${rate:-?} img/s; $left s left for training: $epochs epochs"

echo "== train ($(elapsed) s)"
run="$runs/pixel_vae"
$py -m experiments.train --model=pixel_vae --preset=accelerator --workdir="$run" \
    --num_epochs="$epochs" --train_loop=scan --noevaluate ${TRAIN_ARGS:-} > "$out/train.log" 2>&1 \
    || { tail -n 20 "$out/train.log"; }
grep "test:" "$out/train.log" | tail -n 3

echo "== evaluate, IWAE K=$iwae_k ($(elapsed) s)"
$py -m experiments.evaluate --workdir="$run" --iwae_samples="$iwae_k" --num_samples=1000 \
    --reconstruction_images=1000 --nocalibration --noprogress ${EVAL_ARGS:-} \
    > "$out/evaluate.log" 2>&1 || tail -n 20 "$out/evaluate.log"
grep -v "^W\|^I" "$out/evaluate.log" | tail -n 8

echo "== pack ($(elapsed) s)"
tar -czf "$out/run.tgz" -C "$runs" --exclude=checkpoints pixel_vae
echo "done ($(elapsed) s)"
