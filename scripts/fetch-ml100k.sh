#!/usr/bin/env bash
# Fetches MovieLens-100k in RecBole's atomic-file format into the git-ignored
# data/ml-100k/ folder (ml-100k.inter, ml-100k.item, ml-100k.user).
#
# RecBole ships the dataset inside its wheel (recbole/dataset_example/ml-100k/),
# so this downloads that wheel from PyPI with pip (no dependencies, nothing
# installed) and extracts only that folder. Running it again does nothing once
# the files are there. See docs/data.md.
#
#   scripts/fetch-ml100k.sh                # into ./data/ml-100k
#   ASIF_DATA_DIR=/somewhere scripts/fetch-ml100k.sh   # into /somewhere/ml-100k
set -euo pipefail
cd "$(dirname "$0")/.."
RECBOLE_VERSION="${RECBOLE_VERSION:-1.2.1}"
data_dir="${ASIF_DATA_DIR:-$PWD/data}"
dest="$data_dir/ml-100k"
if [ -s "$dest/ml-100k.inter" ] && [ -s "$dest/ml-100k.item" ]; then
  echo "ml-100k already in $dest"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: --dest "$tmp" "recbole==$RECBOLE_VERSION"
wheel="$(ls "$tmp"/recbole-*.whl | head -n 1)"
mkdir -p "$data_dir"
# Extract into a staging folder first and move it into place at the end, so an
# interrupted run never leaves a half-written data/ml-100k behind.
python3 - "$wheel" "$tmp/stage" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "recbole/dataset_example/ml-100k/"
os.makedirs(out, exist_ok=True)
n = 0
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            base = os.path.basename(name)
            with z.open(name) as src, open(os.path.join(out, base), "wb") as dst:
                dst.write(src.read())
            n += 1
if n == 0:
    sys.exit(f"{wheel}: no files under {prefix}")
PY
rm -rf "$dest"
mv "$tmp/stage" "$dest"
echo "fetched ml-100k (RecBole $RECBOLE_VERSION wheel) into $dest:"
ls -l "$dest"
