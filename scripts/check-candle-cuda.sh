#!/usr/bin/env bash
# Builds the candle CUDA side (feature `candle-cuda`) on a machine with no GPU and no CUDA
# toolkit: NVIDIA's nvcc, cicc, CUDA runtime headers and CCCL come from PyPI into the
# git-ignored `.nvcc/`, candle-kernels compiles its kernels with that nvcc (sm_90), and cargo
# checks this crate, its tests and examples against candle's CUDA API. Nothing is linked (the
# CUDA libraries candle links are absent here) and nothing runs: the GPU tier runs the test
# (`cargo test --features candle-cuda --test candle` on a machine with a GPU and the CUDA
# libraries). Not in CI: candle-kernels' nvcc build takes long on 2 cores (docs/interop.md).
#
#   scripts/check-candle-cuda.sh            # result in results/tests/candle-cuda-check.txt
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${ASIF_NVCC_HOME:-$PWD/.nvcc}"
NVCC_VERSION=13.5.37   # nvidia-cuda-nvcc, -runtime, -crt, nvidia-nvvm
CCCL_VERSION=13.3.5.0.6
marker="$dest/.installed-$NVCC_VERSION-$CCCL_VERSION"
if [ ! -f "$marker" ]; then
  # One pip call: the wheels share the `nvidia/` folder, which pip --target replaces as a whole.
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$dest" \
    "nvidia-cuda-nvcc==$NVCC_VERSION" "nvidia-cuda-runtime==$NVCC_VERSION" \
    "nvidia-cuda-crt==$NVCC_VERSION" "nvidia-nvvm==$NVCC_VERSION" \
    "nvidia-cuda-cccl==$CCCL_VERSION"
  touch "$marker"
fi
export PATH="$dest/nvidia/cu13/bin:$PATH"
# candle-kernels asks nvidia-smi for the compute capability unless told.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/candle-cuda}"
mkdir -p results/tests
log=results/tests/candle-cuda-check.txt
start=$(date +%s)
{
  echo "# scripts/check-candle-cuda.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD)"
  nvcc --version | tail -2
  echo "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
} > "$log"
set +e
cargo check --features candle-cuda --lib --tests --examples >> "$log" 2>&1
status=$?
set -e
tail -20 "$log"
echo "status=$status seconds=$(( $(date +%s) - start ))" | tee -a "$log"
exit $status
