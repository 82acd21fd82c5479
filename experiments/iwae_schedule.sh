#!/usr/bin/env bash
# The IWAE paper's training schedule run stage by stage, with the test NLL measured after each
# stage (docs/likelihoods.md): stage i = 0..7 lasts 3^i epochs, so the stages
# end at epochs 1, 4, 13, 40, 121, 364, 1093 and 3280. After each one the run's latest checkpoint
# gets the k = 5000 importance-sampled bound on the first IWAE_IMAGES binarized test images
# (mnistgen-evaluate), kept as OUT/nll_epoch<E>.json: the NLL-against-epochs curve.
#
#   bash experiments/iwae_schedule.sh OUT LAST_STAGE [mnistgen-train flags]
#   e.g. bash experiments/iwae_schedule.sh runs/iwae1_vae 7 --model=vae --preset=iwae_1layer
#
# LAST_STAGE 7 is the paper's whole schedule (3280 epochs). Stopped (Ctrl-C, a lost machine)?
# Run the same command again: training resumes from the last checkpoint (exactly), and stages
# whose nll_epoch file exists are skipped. Each stage's training is one `mnistgen-train` call
# with --num_epochs=<that stage's end>, which changes nothing else: the schedule is by epoch.
# IWAE_IMAGES=0 evaluates all 10,000 test images (about 10x the time of the default 1,000).
set -euo pipefail
OUT=${1:?usage: iwae_schedule.sh OUT LAST_STAGE [mnistgen-train flags]}
LAST_STAGE=${2:?usage: iwae_schedule.sh OUT LAST_STAGE [mnistgen-train flags]}
shift 2
BIN=${BIN:-.venv/bin}
IWAE_IMAGES=${IWAE_IMAGES:-1000}
if ! [[ "$LAST_STAGE" =~ ^[0-7]$ ]]; then
  echo "iwae_schedule.sh: LAST_STAGE must be 0..7 (7 = all 3280 epochs), got '$LAST_STAGE'" >&2
  exit 2
fi
mkdir -p "$OUT"
end=0
for ((stage = 0; stage <= LAST_STAGE; stage++)); do
  end=$((end + 3 ** stage))
  result="$OUT/nll_epoch${end}.json"
  if [[ -f "$result" ]]; then
    echo "== stage $stage (epochs to $end): done before, $result"
    continue
  fi
  echo "== stage $stage: training to epoch $end ($(date -u +%H:%M:%S))"
  "$BIN/mnistgen-train" "$@" --workdir="$OUT" --num_epochs="$end" --noevaluate
  echo "== stage $stage: k = 5000 bound after epoch $end ($(date -u +%H:%M:%S))"
  "$BIN/mnistgen-evaluate" --workdir="$OUT" --iwae_samples=5000 --iwae_images="$IWAE_IMAGES" \
    --num_samples=1000 --nocalibration --noprogress
  cp "$OUT/eval.json" "$result.tmp" && mv "$result.tmp" "$result"
done
echo "== done: $OUT/nll_epoch*.json"
