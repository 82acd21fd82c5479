#!/usr/bin/env bash
# DCGAN ablation (README "DCGAN"): each change alone against the old defaults, then all together.
#   bash experiments/dcgan_ablation.sh OUT [EPOCHS]      (default 3 epochs per row)
# Every row is one `mnistgen-train` run (train + the standard evaluation of 10,000 samples) in
# OUT/<row>; the table is OUT/ablation.md (experiments.compare). Rows run one after another, so
# their epoch times are comparable on a quiet machine.
set -euo pipefail
OUT=${1:?usage: dcgan_ablation.sh OUT [EPOCHS]}
EPOCHS=${2:-3}
BIN=${BIN:-.venv/bin}
# The defaults before this ablation: G at half D's widths, EMA weights with the live generator's
# BatchNorm statistics, one learning rate, no smoothing, no R1.
OLD="--generator_channels=64,32 --nogan_ema_batch_stats --gan_d_learning_rate=0 \
--gan_label_smoothing=0 --gan_r1_gamma=0"
declare -A ROWS=(
  [a_old_defaults]=""
  [b_ema_batch_stats]="--gan_ema_batch_stats"
  [c_generator_128_64]="--generator_channels=128,64"
  [d_ttur_d4e-4]="--gan_d_learning_rate=4e-4"
  [e_label_smoothing_0.1]="--gan_label_smoothing=0.1"
  [f_r1_gamma_1]="--gan_r1_gamma=1"
)
ROWS[g_all]="${ROWS[b_ema_batch_stats]} ${ROWS[c_generator_128_64]} ${ROWS[d_ttur_d4e-4]} \
${ROWS[e_label_smoothing_0.1]} ${ROWS[f_r1_gamma_1]}"
mkdir -p "$OUT"
done_rows=()
for row in $(printf '%s\n' "${!ROWS[@]}" | sort); do
  if [[ -n "${ONLY:-}" && ! " $ONLY " =~ " $row " ]]; then continue; fi
  echo "== $row: $BIN/mnistgen-train --model=dcgan --workdir=$OUT/$row --num_epochs=$EPOCHS $OLD ${ROWS[$row]}"
  # shellcheck disable=SC2086
  "$BIN/mnistgen-train" --model=dcgan --workdir="$OUT/$row" --num_epochs="$EPOCHS" --iwae_samples=0 \
    $OLD ${ROWS[$row]} 2>&1 | tee "$OUT/$row.log" | grep -E "^(step .*0/|evaluat|fid|samples)" || true
  done_rows+=("$OUT/$row")
done
"$BIN/mnistgen-compare" --workdirs="$(IFS=,; echo "${done_rows[*]}")" --out="$OUT/ablation.md"
