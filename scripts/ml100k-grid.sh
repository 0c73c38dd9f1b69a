#!/usr/bin/env bash
# The ml-100k comparison of docs/results.md: every model × seeds at the CPU-sized setting, each
# run to early stopping, resumable.
#
#   bash scripts/ml100k-grid.sh [OUT_DIR] [LANES]
#
# OUT_DIR (default target/asif-results/ml-100k) gets `<model>-seed<S>.json` per finished run and
# `checkpoints/<model>-seed<S>/` per run. A run whose JSON exists is skipped; an interrupted run
# resumes from its last checkpoint (the trainer's `--resume`: on the CPU the resumed run ends
# bit-identical to an uninterrupted one), so the grid can be stopped and restarted at any time,
# across sessions. LANES (default 2) runs that many at once. Order: seed 1 of every model first,
# then seed 2, then seed 3, so a partial grid still compares every model.
# Needs data/ml-100k (scripts/fetch-ml100k.sh). The table: python3 scripts/results-table.py OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/asif-results/ml-100k}
lanes=${2:-2}
models=(sasrec sasrec_f asif asif_wo_rsa asif_wo_hie asif_wo_up asif_wo_fa)
seeds=(1 2 3)
# The setting (docs/results.md explains the choice): d 32, 2 layers, 2 heads, n 20, inner 64,
# lr 1e-3, batch 256, patience 5, at most 60 epochs; everything else at the spec's defaults.
setting=(--data-dir data/ml-100k --dataset ml-100k --hidden-size 32 --heads 2 --layers 2
  --max-len 20 --inner-size 64 --lr 1e-3 --batch-size 256 --epochs 60 --patience 5 --device cpu)

[ -f data/ml-100k/ml-100k.inter ] || { echo "data/ml-100k missing: run scripts/fetch-ml100k.sh" >&2; exit 1; }
cargo build --release --example train
mkdir -p "$out/checkpoints" "$out/logs"
# A private copy of the binary, so a rebuild while the grid runs does not swap it mid-run.
bin="$out/train-$(git rev-parse --short HEAD)"
cp target/release/examples/train "$bin"

jobs=()
for s in "${seeds[@]}"; do for m in "${models[@]}"; do jobs+=("$m:$s"); done; done

run_lane() {
  local lane=$1 i=0 job m s
  for job in "${jobs[@]}"; do
    i=$((i + 1))
    [ $(((i - 1) % lanes)) -eq "$lane" ] || continue
    m=${job%:*}; s=${job#*:}
    [ -f "$out/$m-seed$s.json" ] && continue
    echo "$(date -u +%H:%M:%S) lane $lane: $m seed $s"
    "$bin" "${setting[@]}" --model "$m" --seed "$s" \
      --checkpoint-dir "$out/checkpoints/$m-seed$s" --resume \
      --results "$out/$m-seed$s.json" >>"$out/logs/$m-seed$s.log" 2>&1 ||
      echo "$(date -u +%H:%M:%S) lane $lane: $m seed $s FAILED (see $out/logs/$m-seed$s.log)"
  done
}
for lane in $(seq 0 $((lanes - 1))); do run_lane "$lane" & done
wait
python3 scripts/results-table.py "$out"
