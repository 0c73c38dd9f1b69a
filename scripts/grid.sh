#!/usr/bin/env bash
# The comparisons of docs/results.md: each run of the train example to early stopping, on the CPU,
# resumable.
#
#   bash scripts/grid.sh EXPERIMENT [OUT_DIR] [LANES]
#
# EXPERIMENT is one of
#   ml-100k           every model × seeds 1-3 at the CPU-sized ml-100k setting (needs data/ml-100k:
#                     scripts/fetch-ml100k.sh)
#   synthetic         SASRec, SASRec_F, ASIF and ASIF w/o RSA × seeds 1-3 on the built-in
#                     synthetic data at the example's small setting, to early stopping
#   synthetic-lambda  ASIF at λ ∈ {0.1, 1} × seeds 1-3 on the synthetic data, judged on
#                     validation only (results-table.py --valid-only)
#   ml-100k-lambda    ASIF at λ ∈ {0.1, 1}, seed 1, at the ml-100k setting, judged on validation
#   beauty            the paper's Beauty (S³-Rec files, converted into data/Beauty if missing) at a
#                     reduced CPU setting and a fixed epoch budget (docs/results.md): SASRec and
#                     SASRec_F × seeds 1-3, ASIF at λ ∈ {0.1, 1, 10} × seed 1; λ is chosen on
#                     validation NDCG@20 of seed 1 alone, and ASIF runs seeds 2-3 at that λ;
#                     one thread a run (the lanes fill the cores; results do not depend on it)
#
# OUT_DIR (default target/asif-results/EXPERIMENT) gets `<name>-seed<S>.json` per finished run and
# `checkpoints/<name>-seed<S>/` per run. A run whose JSON exists is skipped; an interrupted run
# resumes from its last checkpoint (the trainer's `--resume`: on the CPU the resumed run ends
# bit-identical to an uninterrupted one), so a grid can be stopped and restarted at any time,
# across sessions. LANES (default 2) runs that many at once; a second invocation on the same
# OUT_DIR adds lanes (runs are claimed, never run twice). Order: seed 1 of every run first,
# then seed 2, then seed 3, so a partial grid still compares every model.
# The table: python3 scripts/results-table.py OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
experiment=${1:?usage: scripts/grid.sh ml-100k|synthetic|synthetic-lambda|ml-100k-lambda|beauty [OUT_DIR] [LANES]}
out=${2:-target/asif-results/$experiment}
lanes=${3:-2}

# Each run is "name|seed|flags"; the flags come after the experiment's setting.
every_model=(sasrec sasrec_f nova asif asif_wo_rsa asif_wo_hie asif_wo_up asif_wo_fa)
runs=()
add_models() { # seeds... -- models...
  local seeds=() s m
  while [ "$1" != "--" ]; do seeds+=("$1"); shift; done
  shift
  for s in "${seeds[@]}"; do for m in "$@"; do runs+=("$m|$s|--model $m"); done; done
}
add_lambdas() { # seeds... -- lambdas...
  local seeds=() s l
  while [ "$1" != "--" ]; do seeds+=("$1"); shift; done
  shift
  for s in "${seeds[@]}"; do for l in "$@"; do runs+=("asif-lambda$l|$s|--model asif --rsa-lambda $l"); done; done
}
# The ml-100k setting (docs/results.md explains the choice): d 32, 2 layers, 2 heads, n 20,
# inner 64, lr 1e-3, batch 256, patience 5, at most 60 epochs; the rest at the spec's defaults.
ml100k=(--data-dir data/ml-100k --dataset ml-100k --hidden-size 32 --heads 2 --layers 2
  --max-len 20 --inner-size 64 --lr 1e-3 --batch-size 256 --epochs 60 --patience 5 --device cpu)
# The synthetic setting: the example's defaults (400 users, d 32, 2 layers, 2 heads, n 20,
# inner 32, lr 1e-3, batch 128), to early stopping under the same rule as ml-100k.
synthetic=(--epochs 200 --patience 5 --device cpu)
# The Beauty setting (docs/results.md, "Beauty on the CPU"): d 32, 2 layers, 2 heads, n 20 (the
# median sequence is 6 long, the mean 8.9), inner 64, lr 1e-3, batch 256, a fixed budget of 5
# epochs (no early stopping inside it), one thread a run (the runs fill the cores instead).
beauty=(--threads 1 --data-dir data/Beauty --dataset Beauty --attributes categories --kcore 0 --hidden-size 32
  --heads 2 --layers 2 --max-len 20 --inner-size 64 --lr 1e-3 --batch-size 256 --epochs 5
  --patience 5 --device cpu)
case "$experiment" in
ml-100k) setting=("${ml100k[@]}"); add_models 1 2 3 -- "${every_model[@]}" ;;
ml-100k-lambda) setting=("${ml100k[@]}"); add_lambdas 1 -- 0.1 1 ;;
synthetic) setting=("${synthetic[@]}"); add_models 1 2 3 -- sasrec sasrec_f asif asif_wo_rsa ;;
synthetic-lambda) setting=("${synthetic[@]}"); add_lambdas 1 2 3 -- 0.1 1 ;;
beauty)
  setting=("${beauty[@]}")
  add_lambdas 1 -- 0.1 1 10
  add_models 1 2 -- sasrec sasrec_f
  runs+=("asif-lambda@|2|--model asif --rsa-lambda @")
  add_models 3 -- sasrec sasrec_f
  runs+=("asif-lambda@|3|--model asif --rsa-lambda @")
  ;;
*) echo "unknown experiment '$experiment'" >&2; exit 2 ;;
esac
case "$experiment" in
ml-100k*) [ -f data/ml-100k/ml-100k.inter ] || { echo "data/ml-100k missing: run scripts/fetch-ml100k.sh" >&2; exit 1; } ;;
beauty) [ -f data/Beauty/Beauty.inter ] ||
  cargo run --release --example convert_s3rec -- "${ASIF_S3REC_DIR:-../shared/data/s3rec}" Beauty data/Beauty ;;
esac

cargo build --release --example train
mkdir -p "$out/checkpoints" "$out/logs"
# A private copy of the binary, so a rebuild while the grid runs does not swap it mid-run.
bin="$out/train-$(git rev-parse --short HEAD)"
[ -x "$bin" ] || cp target/release/examples/train "$bin"   # a second invocation shares it

# Lanes take runs from the one list in order; a lane claims a run by creating
# `claims/<name>-seed<S>/` (atomic), holding its process id, so lanes, and a second invocation of
# the same grid, never run one twice; a claim whose process is gone is taken over (resume).
claim() { # name-seed
  local dir="$out/claims/$1"
  if ! mkdir "$dir" 2>/dev/null; then
    local holder
    holder=$(cat "$dir/pid" 2>/dev/null || true)
    if [ -n "$holder" ] && kill -0 "$holder" 2>/dev/null; then return 1; fi
    rm -rf "$dir"
    mkdir "$dir" 2>/dev/null || return 1
  fi
  echo "$BASHPID" >"$dir/pid"
}
# Beauty's "asif-lambda@" runs take the λ chosen on seed 1's validation NDCG@20 (best epoch)
# alone, once the three λ runs of seed 1 have finished; the test split is not read.
chosen_lambda() {
  python3 - "$out" <<'PY'
import json, os, sys
scores = {}
for l in ("0.1", "1", "10"):
    path = f"{sys.argv[1]}/asif-lambda{l}-seed1.json"
    if not os.path.exists(path):
        sys.exit(0)
    with open(path) as f:
        scores[l] = json.load(f)["best_valid"]["ndcg20"]
print(max(scores, key=scores.get))
PY
}
run_lane() {
  local lane=$1 run name seed flags lambda waiting
  while true; do
    waiting=0
    for run in "${runs[@]}"; do
      IFS='|' read -r name seed flags <<<"$run"
      if [[ $name == *@* ]]; then
        lambda=$(chosen_lambda)
        if [ -z "$lambda" ]; then waiting=1; continue; fi
        name=${name//@/$lambda} flags=${flags//@/$lambda}
      fi
      [ -f "$out/$name-seed$seed.json" ] && continue
      claim "$name-seed$seed" || continue
      echo "$(date -u +%H:%M:%S) lane $lane: $name seed $seed"
      # shellcheck disable=SC2086 # flags are words
      "$bin" "${setting[@]}" $flags --seed "$seed" \
        --checkpoint-dir "$out/checkpoints/$name-seed$seed" --resume \
        --results "$out/$name-seed$seed.json" >>"$out/logs/$name-seed$seed.log" 2>&1 ||
        echo "$(date -u +%H:%M:%S) lane $lane: $name seed $seed FAILED (see $out/logs/$name-seed$seed.log)"
      waiting=-1
      break
    done
    case $waiting in
    -1) ;;              # ran one: look again from the top of the list
    1) sleep 30 ;;      # only runs waiting for λ are left
    *) return 0 ;;      # every run is done or claimed
    esac
  done
}
mkdir -p "$out/claims"
for lane in $(seq 0 $((lanes - 1))); do run_lane "$lane" & done
wait
python3 scripts/results-table.py "$out"
