#!/usr/bin/env bash
# The accelerator runs of the pixel-space flows, inside a fixed time budget on one GPU:
#
#   bash experiments/accelerator_flows.sh OUT_DIR [BUDGET_SECONDS]
#
# 1. a probe: `flow` and `cond_flow` (--preset=accelerator) train 30 steps side by side, which
#    measures the seconds per step when both share the device;
# 2. both train side by side for as many epochs of the preset (at most its 30) as the budget
#    leaves after the probe and the evaluation;
# 3. experiments.sampling_curve for each: fid_lenet, precision/recall, digit accuracy and samples/s
#    at 4, 8, 16, 32, 64 Heun steps (10,000 samples each);
# 4. OUT_DIR/runs.tgz: both runs without their checkpoints (metrics, pictures, curves), and logs.
# TRAIN_ARGS / CURVE_ARGS add flags (tests run it with a tiny network on the CPU).
set -u
out=${1:?usage: accelerator_flows.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-560}
py=${PYTHON:-python3}
runs=${RUNS_DIR:-/tmp/accelerator_flows}
curve_seconds=${CURVE_SECONDS:-210}   # both sampling curves, side by side, compilation included
train_overhead=${TRAIN_OVERHEAD:-120}  # compilation, test losses, the end-of-run pictures (H100: ~90 s)
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
rm -rf "$runs"; mkdir -p "$runs" "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}

$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== probe ($(elapsed) s)"
probe_steps=30
for m in flow cond_flow; do
  $py -m experiments.train --model=$m --preset=accelerator --workdir="$runs/probe_$m" \
      ${TRAIN_ARGS:-} --num_epochs=1 --train_size=30000 --log_every=5 \
      --evaluate=false > "$out/probe_$m.log" 2>&1 &
done
# Stopped once both have logged probe_steps steps: their test loss and pictures are not needed.
until $py - "$runs" $probe_steps <<'EOF'
import json, sys
def steps(m):
  try:
    return max(json.loads(l)["step"] for l in open(f"{sys.argv[1]}/probe_{m}/metrics.jsonl"))
  except (OSError, ValueError):
    return 0
sys.exit(0 if min(steps("flow"), steps("cond_flow")) >= int(sys.argv[2]) else 1)
EOF
do
  jobs -r | grep -q . || break  # both ended early (an error: their logs say which)
  sleep 2
done
kill $(jobs -p) 2>/dev/null; wait
tail -n 3 "$out"/probe_*.log
read step_seconds batch_size < <($py - "$runs" <<'EOF'
import json, sys
rates, batch = [], json.load(open(f"{sys.argv[1]}/probe_flow/config.json"))["batch_size"]
for m in ("flow", "cond_flow"):
  recs = [json.loads(l) for l in open(f"{sys.argv[1]}/probe_{m}/metrics.jsonl")]
  chunks = {}
  for r in recs:
    if r["split"] == "train":
      chunks[r["train_seconds"]] = r["step"]   # one train_seconds per scanned chunk
  chunks = sorted(chunks.items())
  (t0, s0), (t1, s1) = chunks[1 if len(chunks) > 2 else 0], chunks[-1]  # skip the compiling one
  rates.append((t1 - t0) / (s1 - s0))
print(max(rates), batch)
EOF
)
[ -n "${batch_size:-}" ] || { echo "probe failed"; exit 1; }
left=$(( budget - $(elapsed) - curve_seconds - train_overhead ))
train_images=${TRAIN_IMAGES:-60000}  # tests: fewer, passed on as --train_size
epochs=$($py -c "print(max(0, min(30, int($left / ($train_images // $batch_size * $step_seconds)))))")
echo "== probe: $step_seconds s/step side by side; $left s for training -> $epochs epochs ($(elapsed) s)"
[ "$epochs" -ge 1 ] || { echo "no time left to train"; exit 1; }

for m in flow cond_flow; do
  timeout $(( budget - curve_seconds - $(elapsed) )) \
    $py -m experiments.train --model=$m --preset=accelerator --workdir="$runs/$m" \
      ${TRAIN_ARGS:-} --num_epochs=$epochs --evaluate=false \
      ${TRAIN_IMAGES:+--train_size=$TRAIN_IMAGES} > "$out/train_$m.log" 2>&1 &
done
wait
grep -h "img/s" "$out"/train_*.log | tail -n 4
echo "== sampling curves ($(elapsed) s)"
for m in flow cond_flow; do
  timeout $(( budget - $(elapsed) - 10 )) $py -m experiments.sampling_curve --workdir="$runs/$m" \
    --progress=false ${CURVE_ARGS:-} > "$out/curve_$m.log" 2>&1 &
done
wait
cat "$out"/curve_*.log | grep -v "^I0\|^W0"
tar czf "$out/runs.tgz" --exclude=checkpoints --exclude='probe_*' -C "$runs" . -C "$out" \
  $(cd "$out" && ls *.log)
echo "== done in $(elapsed) s; epochs $epochs"
