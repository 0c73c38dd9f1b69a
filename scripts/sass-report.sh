#!/usr/bin/env bash
# Regenerates docs/kernels-sass.md: per kernel, ptxas' resources, theoretical occupancy at its
# declared launch shape, and the instruction mix of its sm_90 SASS (read with cuobjdump; no GPU
# needed). The NVRTC tier (tests/nvrtc.rs) makes the same report in every `cargo test` and fails
# when it differs from the committed copy: run this after changing a kernel and commit the result.
#
#   scripts/sass-report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nvrtc.sh >/dev/null
ASIF_REQUIRE_NVRTC=1 ASIF_WRITE_SASS_REPORT=1 \
  cargo test --quiet --test nvrtc -- --exact sass_report_matches_the_committed_copy
