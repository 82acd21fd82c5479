#!/usr/bin/env bash
# DCGAN ablations (docs/families.md, "GANs"), each change alone against a baseline, then together.
#   bash experiments/dcgan_ablation.sh OUT [EPOCHS] [SET]    (defaults: 3 epochs, SET=first)
# SET=first:  the first ablation, over the seed's defaults (G 64,32; no EMA statistics, R1, TTUR).
# SET=second: the second, over the first one's result (G 128,64, R1 1, EMA statistics): the
#             InfoGAN MNIST architecture's dense hidden layers (--gan_hidden) and batch 64.
# Every row is one `mnistgen-train` run (train + the standard evaluation of 10,000 samples) in
# OUT/<row>; the table is OUT/ablation.md (experiments.compare). Rows run one after another, so
# their epoch times are comparable on a quiet machine. ONLY="row ..." runs some rows.
set -euo pipefail
OUT=${1:?usage: dcgan_ablation.sh OUT [EPOCHS] [SET]}
EPOCHS=${2:-3}
SET=${3:-first}
BIN=${BIN:-.venv/bin}
declare -A ROWS
case "$SET" in
  first)
    BASE="--generator_channels=64,32 --nogan_ema_batch_stats --gan_d_learning_rate=0 \
--gan_label_smoothing=0 --gan_r1_gamma=0 --gan_hidden=0 --batch_size=128"
    ROWS=(
      [a_old_defaults]=""
      [b_ema_batch_stats]="--gan_ema_batch_stats"
      [c_generator_128_64]="--generator_channels=128,64"
      [d_ttur_d4e-4]="--gan_d_learning_rate=4e-4"
      [e_label_smoothing_0.1]="--gan_label_smoothing=0.1"
      [f_r1_gamma_1]="--gan_r1_gamma=1"
    )
    ROWS[g_all]="${ROWS[b_ema_batch_stats]} ${ROWS[c_generator_128_64]} ${ROWS[d_ttur_d4e-4]} \
${ROWS[e_label_smoothing_0.1]} ${ROWS[f_r1_gamma_1]}" ;;
  second)
    BASE="--generator_channels=128,64 --gan_ema_batch_stats --gan_d_learning_rate=0 \
--gan_label_smoothing=0 --gan_r1_gamma=1"
    ROWS=(
      [h_first_result]="--gan_hidden=0 --batch_size=128"
      [i_batch_64]="--gan_hidden=0 --batch_size=64"
      [j_hidden_1024]="--gan_hidden=1024 --batch_size=128"
      [k_hidden_1024_batch_64]="--gan_hidden=1024 --batch_size=64"
    ) ;;
  *) echo "dcgan_ablation.sh: SET must be first or second, got '$SET'" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
done_rows=()
for row in $(printf '%s\n' "${!ROWS[@]}" | sort); do
  if [[ -n "${ONLY:-}" && ! " $ONLY " =~ " $row " ]]; then continue; fi
  echo "== $row: $BIN/mnistgen-train --model=dcgan --workdir=$OUT/$row --num_epochs=$EPOCHS $BASE ${ROWS[$row]}"
  # shellcheck disable=SC2086
  "$BIN/mnistgen-train" --model=dcgan --workdir="$OUT/$row" --num_epochs="$EPOCHS" --iwae_samples=0 \
    $BASE ${ROWS[$row]} 2>&1 | tee "$OUT/$row.log" | grep -E "^(step .*0/|evaluat|fid|samples)" || true
  done_rows+=("$OUT/$row")
done
"$BIN/mnistgen-compare" --workdirs="$(IFS=,; echo "${done_rows[*]}")" --out="$OUT/ablation.md"
