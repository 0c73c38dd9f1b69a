#!/usr/bin/env bash
# ThreadSanitizer for the emulator (docs/emulator.md). Not part of `cargo test`.
#
#   scripts/emulator-sanitize.sh demo     # the race demo: must be reported without __syncthreads,
#                                         # and clean with it (exit 0 when both hold)
#   scripts/emulator-sanitize.sh kernels  # every emulated kernel test binary with the emulator and
#                                         # the kernels built under -fsanitize=thread
#   scripts/emulator-sanitize.sh kernels attention hie   # only these test binaries
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-demo}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

case "$mode" in
demo)
  build() {
    g++ -std=c++20 -fsanitize=thread -g -O1 -pthread -Iemulator/include -include cuda_emulator.h \
      -x c++ emulator/sanitize/race_demo.cu "$@" -o "$work/race_demo"
  }
  build
  # setarch -R: TSan's shadow memory needs the classic address layout on kernels with high ASLR entropy.
  run() { TSAN_OPTIONS="halt_on_error=0 exitcode=0" setarch "$(uname -m)" -R "$work/race_demo" >"$work/out.txt" 2>&1 || true; }
  run
  if grep -q "WARNING: ThreadSanitizer: data race" "$work/out.txt"; then
    echo "missing __syncthreads: ThreadSanitizer reports the race (as it must):"
    grep -m1 -A4 "WARNING: ThreadSanitizer: data race" "$work/out.txt" | sed 's/^/    /'
  else
    echo "FAIL: the missing __syncthreads() was not reported"; cat "$work/out.txt"; exit 1
  fi
  build -DRACE_DEMO_FIXED
  run
  if grep -q "ThreadSanitizer" "$work/out.txt"; then
    echo "FAIL: the fixed kernel is reported"; cat "$work/out.txt"; exit 1
  fi
  echo "with __syncthreads: clean ($(grep reverse_through_shared "$work/out.txt"))"
  ;;
kernels)
  # Every test binary that runs emulated kernels (the whole-model tests, model and model_oracle,
  # run the same kernels at model scale and are left out for time). A separate target folder
  # keeps the instrumented emulator away from the normal build. `kernels BINARY...` runs only those.
  shift || true
  binaries=("$@")
  if ((${#binaries[@]} == 0)); then
    binaries=(kernels tape attention hie contrastive dropout embedding gather linear residual
      cross_entropy adam source_attention devices kernel_finite_differences known_answers)
  fi
  args=()
  for b in "${binaries[@]}"; do args+=(--test "$b"); done
  # --no-fail-fast: one race report does not hide another binary's.
  ASIF_EMULATOR_SANITIZE=thread CARGO_TARGET_DIR=target/tsan \
    TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/emulator/sanitize/tsan.supp" \
    setarch "$(uname -m)" -R cargo test --no-fail-fast "${args[@]}"
  ;;
*)
  echo "usage: $0 [demo|kernels]" >&2; exit 2 ;;
esac
