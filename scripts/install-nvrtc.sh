#!/usr/bin/env bash
# Installs NVIDIA's NVRTC (compiler library), CUDA runtime headers, cuobjdump
# and nvdisasm from PyPI into a git-ignored folder, so kernels compile with NVRTC
# and their sm_90 SASS can be read on a machine with no GPU and no CUDA toolkit.
# build.rs and the tests find them there (docs/build.md). The 13.x cuobjdump and
# nvdisasm read NVRTC 12.9's sm_90 cubins; cuobjdump -sass runs the nvdisasm
# beside it. All four wheels go in one pip call: they share the `nvidia/`
# folder, which pip --target replaces as a whole.
#
#   scripts/install-nvrtc.sh            # installs into ./.nvrtc
#   ASIF_NVRTC_HOME=/opt/x scripts/install-nvrtc.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${ASIF_NVRTC_HOME:-$PWD/.nvrtc}"
NVRTC_VERSION=12.9.86
RUNTIME_VERSION=12.9.79
SASS_TOOLS_VERSION=13.5.37  # nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm
marker="$dest/.installed-$NVRTC_VERSION-$RUNTIME_VERSION-$SASS_TOOLS_VERSION"
if [ -f "$marker" ]; then
  echo "NVRTC $NVRTC_VERSION, CUDA runtime headers $RUNTIME_VERSION, cuobjdump and nvdisasm $SASS_TOOLS_VERSION already in $dest"
  exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
  --target "$dest" \
  "nvidia-cuda-nvrtc-cu12==$NVRTC_VERSION" \
  "nvidia-cuda-runtime-cu12==$RUNTIME_VERSION" \
  "nvidia-cuda-cuobjdump==$SASS_TOOLS_VERSION" \
  "nvidia-cuda-nvdisasm==$SASS_TOOLS_VERSION"
# The wheels ship only versioned sonames; loaders that look for the plain name
# (cudarc tries libnvrtc.so first) find it through this link.
lib="$dest/nvidia/cuda_nvrtc/lib"
[ -e "$lib/libnvrtc.so" ] || ln -s libnvrtc.so.12 "$lib/libnvrtc.so"
rm -f "$dest"/.installed-*
touch "$marker"
echo "installed NVRTC $NVRTC_VERSION, CUDA runtime headers $RUNTIME_VERSION, cuobjdump and nvdisasm $SASS_TOOLS_VERSION into $dest"
