#!/usr/bin/env bash
# cargo-mutants over the Rust side (issue 16): a documented longer job, not part of CI.
#
#   scripts/cargo-mutants.sh AREA [--shard K/N] [--exclude GLOB]... [--again FILE] [--cpu-only]
#                                 [--out NAME] [--list]
#
# --again FILE runs only the mutants named in FILE (one cargo-mutants name a line, as in a
# missed.txt), to check that new tests kill the survivors of an earlier run. (cargo-mutants
# 27.1.0 lists its struct-field deletions whatever --re and --exclude-re say: the data area's
# one, in SyntheticConfig::with_seed, runs too.)
# --exclude leaves out files already done (cargo-mutants' own --exclude), to go on with an area
# that an earlier sitting stopped part way (docs/testing.md says how far each got).
# --cpu-only skips the emulated tier (ASIF_SKIP_EMULATED=1): a quick first pass, since a mutant
# it catches is caught by the whole suite too; its survivors then go to --again without it.
# Results go to results/cargo-mutants/NAME, by default AREA[-shard-K-of-N][-again][-cpu-only].
#
# AREA and the test binaries that run against each mutant (with the library's unit tests):
#   metrics  src/metrics.rs                      metrics, known_answers
#   data     src/data/**                         data_reader, data_fuzz, data_s3rec,
#                                                data_synthetic, data_ml100k, known_answers
#                                                (a mutant is cut after 120 s: they take 2 s)
#   model    src/model/**                        model, model_oracle, gradients,
#                                                checkpoint_compat, train (CPU device only;
#                                                a mutant is cut after 300 s: they take 18 s)
#   ops      src/ops/mod.rs, src/ops/*/mod.rs    op_oracle, devices, tape, launch_counts and
#                                                every binary that names an op (the emulated
#                                                tier on: the mod.rs files hold the
#                                                kernel-device dispatch)
#   ops/mod  src/ops/mod.rs                      op_oracle, devices, tape, launch_counts, kernels:
#                                                the shared dispatch (run, record, the checks)
#                                                that every op goes through, a first pass whose
#                                                survivors go to `ops --again`
#   ops/OP   src/ops/OP/mod.rs                   op_oracle, devices, tape, launch_counts and the
#                                                binaries that name OP (`ops::OP`, or OP in a
#                                                `use ...::ops::{...}` list): a first pass over
#                                                one op with fewer binaries to relink; its
#                                                survivors go to `ops --again`
#
# Cost on the 2-core machine: every mutant rebuilds the crate in the test profile (incremental:
# about 6 s) and relinks the area's test binaries, then runs them: 5 to 15 s each for data on
# an idle machine, about 25 s for model (model_oracle's CPU cases take 15 s); for ops/embedding
# at ae900de, 9 s of rebuild and 8 s of tests with the emulated tier (4.5 s without: since the
# fibered emulator the emulated tier is cheap, so --cpu-only no longer pays for ops). `--list`
# counts them (2026-12-02: metrics 90, data 773, model 614, ops 1326). `--shard K/N` runs one
# contiguous slice of the list, K counted from 0 (0/8 to 7/8: cargo-mutants' numbering), so a
# long area can be spread over several sittings (the slices hold only while the area's list is
# unchanged).
#
# The working tree is never touched: the tracked files are copied to target/cargo-mutants/src
# and mutated there in place, sharing the crate's target folder for the dependencies.
# Needs cargo-mutants (`cargo install cargo-mutants --locked`; 27.1.0 was used).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

area=${1:-}
shift || true
shard="" list=0 excludes=() again="" cpu_only=0 out_name=""
while [ $# -gt 0 ]; do
    case "$1" in
        --shard) shard=$2; shift 2 ;;
        --list) list=1; shift ;;
        --exclude) excludes+=("$2"); shift 2 ;;
        --again) again=$(realpath "$2"); shift 2 ;;
        --cpu-only) cpu_only=1; shift ;;
        --out) out_name=$2; shift 2 ;;
        *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

# The test binaries that name an op: `ops::NAME` or NAME inside a `use ...::ops::{...}` list
# (kernels.rs checks add, gelu, layer_norm and relu; residual.rs residual_norm; train_step.rs
# adam, bias_gelu and input_embedding; none of those has a test file of its own name).
tests_using() {
    grep -lE "ops::(\{[^}]*\b$1\b[^}]*\}|$1\b)" tests/*.rs | xargs -n1 basename | sed 's/\.rs$//'
}

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
        # About 18 s of tests on an idle machine: a mutant is cut after 5 minutes, not 15.
        timeout=300
        env_skip=1 ;;
    ops)
        files=(src/ops/mod.rs 'src/ops/*/mod.rs')
        tests=(op_oracle devices tape launch_counts)
        for op in src/ops/*/; do
            tests+=($(tests_using "$(basename "$op")"))
        done ;;
    ops/mod)
        # The shared dispatch alone, with the binaries that run every op through it (all of
        # `ops` would relink and run some 35 binaries for each mutant).
        files=(src/ops/mod.rs)
        tests=(op_oracle devices tape launch_counts kernels) ;;
    ops/*)
        # One op's mod.rs with its own binary and the cross-op ones only: a quicker first pass
        # (fewer binaries to relink and run); its survivors go to `ops --again`, the whole set.
        name=${area#ops/}
        [ -f "src/ops/$name/mod.rs" ] || { echo "no src/ops/$name/mod.rs" >&2; exit 2; }
        files=("src/ops/$name/mod.rs")
        tests=(op_oracle devices tape launch_counts $(tests_using "$name")) ;;
    *) echo "usage: $0 metrics|data|model|ops|ops/mod|ops/OP [--shard K/N] [--list]" >&2; exit 2 ;;
esac
# Each binary once (several ops name the same ones).
mapfile -t tests < <(printf '%s\n' "${tests[@]}" | awk '!seen[$0]++')
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
suffix=""
[ -n "$shard" ] && suffix+="-shard-${shard//\//-of-}"
[ -n "$again" ] && suffix+="-again"
[ "$cpu_only" = 1 ] && suffix+="-cpu-only"
out="$root/results/cargo-mutants/${out_name:-$area$suffix}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
# The model area always skips the emulated tier; --cpu-only skips it for any area (a mutant
# that a CPU-only pass catches is caught by the whole suite too; its survivors want --again
# without it).
if [ -n "$env_skip" ] || [ "$cpu_only" = 1 ]; then
    export ASIF_SKIP_EMULATED=1
fi
status=0
cargo mutants --in-place --baseline skip --timeout "$timeout" "${args[@]}" || status=$?
rm -rf "$out"
mkdir -p "$out"
for f in caught missed timeout unviable; do
    cp "mutants.out/$f.txt" "$out/$f.txt"
done
{
    echo "cargo-mutants $(cargo mutants --version | awk '{print $2}') on $area${shard:+ shard $shard}${again:+, again over $(realpath --relative-to="$root" "$again")}, commit $(git -C "$root" rev-parse --short HEAD), $(date -u +%FT%TZ)"
    echo "emulated tier: $([ -n "${ASIF_SKIP_EMULATED:-}" ] && echo skipped || echo run)"
    echo "tests: ${tests[*]}"
    for f in caught missed timeout unviable; do
        echo "$f: $(wc -l <"$out/$f.txt")"
    done
} | tee "$out/summary.txt"
# cargo-mutants exits 2 when some mutant was missed, 3 on a timeout: the lists say which.
exit "$status"
