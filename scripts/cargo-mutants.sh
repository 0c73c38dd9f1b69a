#!/usr/bin/env bash
# cargo-mutants over the Rust side (issue 16): a documented longer job, not part of CI.
#
#   scripts/cargo-mutants.sh AREA [--shard K/N] [--exclude GLOB]... [--again FILE] [--list]
#
# --again FILE runs only the mutants named in FILE (one cargo-mutants name a line, as in a
# missed.txt), to check that new tests kill the survivors of an earlier run; its results go to
# results/cargo-mutants/AREA-again/. (cargo-mutants 27.1.0 lists its struct-field deletions
# whatever --re and --exclude-re say: the data area's one, in SyntheticConfig::with_seed, runs too.)
# --exclude leaves out files already done (cargo-mutants' own --exclude), to go on with an area
# that an earlier sitting stopped part way (docs/testing.md says how far each got).
#
# AREA and the test binaries that run against each mutant (with the library's unit tests):
#   metrics  src/metrics.rs                      metrics, known_answers
#   data     src/data/**                         data_reader, data_fuzz, data_s3rec,
#                                                data_synthetic, data_ml100k, known_answers
#                                                (a mutant is cut after 120 s: they take 2 s)
#   model    src/model/**                        model, model_oracle, gradients,
#                                                checkpoint_compat, train (CPU device only)
#   ops      src/ops/mod.rs, src/ops/*/mod.rs    every op's binary, op_oracle, devices, tape,
#                                                launch_counts (the emulated tier on: the mod.rs
#                                                files hold the kernel-device dispatch)
#
# Cost on the 2-core machine: every mutant rebuilds the crate in the test profile and relinks the
# area's test binaries: 5 to 15 s each for data on an idle machine (2026-12-02), minutes for the
# emulated areas; `--list` counts them (metrics 90, data 776, model 614, ops 634 on
# 2026-12-02). `--shard K/N` runs one slice, so a long area can be spread over several
# sittings; results of every sitting stay under results/cargo-mutants/AREA[-shard-K-of-N]/
# (caught, missed, timeout, unviable; cargo-mutants' own lists). docs/testing.md lists the
# surviving mutants with a reason each.
#
# The working tree is never touched: the tracked files are copied to target/cargo-mutants/src
# and mutated there in place, sharing the crate's target folder for the dependencies.
# Needs cargo-mutants (`cargo install cargo-mutants --locked`; 27.1.0 was used).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

area=${1:-}
shift || true
shard="" list=0 excludes=() again=""
while [ $# -gt 0 ]; do
    case "$1" in
        --shard) shard=$2; shift 2 ;;
        --list) list=1; shift ;;
        --exclude) excludes+=("$2"); shift 2 ;;
        --again) again=$(realpath "$2"); shift 2 ;;
        *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

files=() tests=() env_skip="" timeout=900
case "$area" in
    metrics) files=(src/metrics.rs); tests=(metrics known_answers) ;;
    data)
        files=('src/data/**')
        tests=(data_reader data_fuzz data_s3rec data_synthetic data_ml100k known_answers)
        # These binaries take about 2 s together: a mutant that loops (an epoch that never ends)
        # is cut after 2 minutes instead of 15.
        timeout=120 ;;
    model)
        files=('src/model/**')
        tests=(model model_oracle gradients checkpoint_compat train)
        env_skip=1 ;;
    ops)
        files=(src/ops/mod.rs 'src/ops/*/mod.rs')
        tests=(op_oracle devices tape launch_counts)
        for op in src/ops/*/; do
            name=$(basename "$op")
            [ -f "tests/$name.rs" ] && tests+=("$name")
        done ;;
    *) echo "usage: $0 metrics|data|model|ops [--shard K/N] [--list]" >&2; exit 2 ;;
esac
command -v cargo-mutants >/dev/null || {
    echo "needs cargo-mutants: cargo install cargo-mutants --locked" >&2
    exit 1
}

args=()
for f in "${files[@]}"; do args+=(-f "$f"); done
for e in "${excludes[@]}"; do args+=(-e "$e"); done
# The library's own unit tests (21, about 3 s) run against every mutant too: some checks live
# beside the code they check (src/model/mod.rs's parameter order check).
args+=("-C=--lib")
for t in "${tests[@]}"; do args+=("-C=--test=$t"); done
[ -n "$shard" ] && args+=(--shard "$shard")
if [ -n "$again" ]; then
    # Each name as an anchored regex, its metacharacters escaped.
    while IFS= read -r name; do
        [ -n "$name" ] && args+=(--re "^$(printf '%s' "$name" | sed 's/[][\\.^$*+?(){}|-]/\\&/g')\$")
    done <"$again"
fi

scratch="$root/target/cargo-mutants/src"
rm -rf "$scratch"
mkdir -p "$scratch"
git ls-files -z | xargs -0 cp --parents -t "$scratch"
for ignored in .nvrtc data/ml-100k; do
    if [ -e "$ignored" ]; then
        mkdir -p "$(dirname "$scratch/$ignored")"
        ln -s "$root/$ignored" "$scratch/$ignored"
    fi
done
# ../shared (the data sets of the paper) resolves beside the scratch copy as beside the checkout.
if [ -e "$root/../shared" ] && [ ! -e "$scratch/../shared" ]; then
    ln -s "$root/../shared" "$scratch/../shared"
fi

cd "$scratch"
if [ "$list" = 1 ]; then
    cargo mutants --list "${args[@]}"
    exit 0
fi
out="$root/results/cargo-mutants/$area${shard:+-shard-${shard//\//-of-}}${again:+-again}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
[ -n "$env_skip" ] && export ASIF_SKIP_EMULATED=1
status=0
cargo mutants --in-place --baseline skip --timeout "$timeout" "${args[@]}" || status=$?
rm -rf "$out"
mkdir -p "$out"
for f in caught missed timeout unviable; do
    cp "mutants.out/$f.txt" "$out/$f.txt"
done
{
    echo "cargo-mutants $(cargo mutants --version | awk '{print $2}') on $area${shard:+ shard $shard}, commit $(git -C "$root" rev-parse --short HEAD), $(date -u +%FT%TZ)"
    echo "tests: ${tests[*]}"
    for f in caught missed timeout unviable; do
        echo "$f: $(wc -l <"$out/$f.txt")"
    done
} | tee "$out/summary.txt"
# cargo-mutants exits 2 when some mutant was missed, 3 on a timeout: the lists say which.
exit "$status"
