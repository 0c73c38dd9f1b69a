#!/usr/bin/env bash
# Installs NVIDIA's NVRTC (compiler library) and CUDA runtime headers from PyPI
# into a git-ignored folder, so kernels compile with NVRTC on a machine with no
# GPU and no CUDA toolkit. build.rs and the tests find them there (docs/build.md).
#
#   scripts/install-nvrtc.sh            # installs into ./.nvrtc
#   ASIF_NVRTC_HOME=/opt/x scripts/install-nvrtc.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${ASIF_NVRTC_HOME:-$PWD/.nvrtc}"
NVRTC_VERSION=12.9.86
RUNTIME_VERSION=12.9.79
marker="$dest/.installed-$NVRTC_VERSION-$RUNTIME_VERSION"
if [ -f "$marker" ]; then
  echo "NVRTC $NVRTC_VERSION and CUDA runtime headers $RUNTIME_VERSION already in $dest"
  exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
  --target "$dest" \
  "nvidia-cuda-nvrtc-cu12==$NVRTC_VERSION" \
  "nvidia-cuda-runtime-cu12==$RUNTIME_VERSION"
# The wheels ship only versioned sonames; loaders that look for the plain name
# (cudarc tries libnvrtc.so first) find it through this link.
lib="$dest/nvidia/cuda_nvrtc/lib"
[ -e "$lib/libnvrtc.so" ] || ln -s libnvrtc.so.12 "$lib/libnvrtc.so"
touch "$marker"
echo "installed NVRTC $NVRTC_VERSION and CUDA runtime headers $RUNTIME_VERSION into $dest"
