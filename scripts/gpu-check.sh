#!/usr/bin/env bash
# The GPU check (docs/gpu.md): build here, run there in one call.
#
#   scripts/gpu-check.sh prepare          # here: release test and bench binaries into .gpu-bundle/
#   scripts/gpu-check.sh run              # on the GPU machine: device info, GPU parity tests,
#                                         # benchmarks, a summary in $OUT (or .gpu-bundle/out)
#   scripts/gpu-check.sh run --dry-run    # here: the same steps on the CPU (GPU tier skipped)
#
# Each section runs under its own time limit and writes its own log; a failed or timed-out
# section is recorded and the next one still runs. The summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=.gpu-bundle
mode="${1:-}"

prepare() {
  set -e
  rm -rf "$bundle" && mkdir -p "$bundle/bin"
  # The sm_90 cubin must be embedded (no NVRTC is needed on the GPU machine then).
  scripts/install-nvrtc.sh
  export ASIF_REQUIRE_NVRTC=1
  for step in "test --release --no-run" "bench --no-run"; do
    # shellcheck disable=SC2086
    cargo $step --message-format=json 2>/dev/null | python3 -c '
import json, sys, shutil, os, re
for line in sys.stdin:
    try: msg = json.loads(line)
    except ValueError: continue
    exe = msg.get("executable")
    if msg.get("reason") == "compiler-artifact" and exe and msg["target"]["kind"][0] in ("test", "bench"):
        name = re.sub(r"-[0-9a-f]{16}$", "", os.path.basename(exe))
        if msg["target"]["kind"][0] == "bench":
            name = "bench-" + name
        shutil.copy(exe, os.path.join(sys.argv[1], name))
        print("bundled", name, msg["target"]["kind"][0])
' "$bundle/bin"
  done
  strip "$bundle"/bin/* 2>/dev/null || true
  cp -r bench/peers bench/summarize.py "$bundle/"
  git rev-parse --short HEAD > "$bundle/commit" 2>/dev/null || echo unknown > "$bundle/commit"
  # At most 64 MiB travels to the GPU machine: the stripped binaries go as one xz archive
  # (about a quarter of their size), unpacked there by `run`.
  du -sh "$bundle" | awk '{print "unpacked: " $1}'
  tar -C "$bundle" -cf - bin peers summarize.py commit | xz -T2 -6 > "$bundle.tar.xz"
  rm -rf "$bundle" && mkdir -p "$bundle" && mv "$bundle.tar.xz" "$bundle/bundle.tar.xz"
  size=$(stat -c %s "$bundle/bundle.tar.xz")
  echo "bundle: $bundle/bundle.tar.xz, $((size / 1048576)) MiB (at most 64 MiB travels)"
  [ "$size" -lt $((60 * 1048576)) ] || { echo "bundle too large to carry" >&2; exit 1; }
}

# The whole run stays under 8 minutes: a section that would start after 7 is skipped.
RUN_BUDGET_S=${ASIF_GPU_RUN_BUDGET_S:-420}

section() { # name seconds command...
  local name=$1 seconds=$2; shift 2
  local started=$SECONDS
  if [ $SECONDS -ge $RUN_BUDGET_S ]; then
    printf '| %s | skipped (run budget of %ss spent) | 0s |\n' "$name" "$RUN_BUDGET_S" >>"$out/sections.md"
    return 0
  fi
  [ $((SECONDS + seconds)) -gt $RUN_BUDGET_S ] && seconds=$((RUN_BUDGET_S - SECONDS))
  timeout "$seconds" "$@" >"$out/$name.log" 2>&1
  local status=$?
  local verdict=ok
  [ $status -eq 124 ] && verdict="TIMED OUT after ${seconds}s"
  [ $status -ne 0 ] && [ $status -ne 124 ] && verdict="FAILED (exit $status)"
  printf '| %s | %s | %ss |\n' "$name" "$verdict" "$((SECONDS - started))" >>"$out/sections.md"
  return 0
}

gpu_libraries() {
  # cudarc's CUDA 12 bindings load libcublas.so / libnvrtc.so by plain or .12 names; the GPU
  # machine ships CUDA 13 libraries in PyTorch's site-packages. Point plain names at them.
  local links="$out/lib-links" site
  mkdir -p "$links"
  site=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null) || return 0
  for lib in libcublas libcublasLt libnvrtc; do
    local found
    found=$(find "$site/nvidia" -name "$lib.so.*" 2>/dev/null | sort | tail -n 1)
    [ -n "$found" ] && ln -sf "$found" "$links/$lib.so"
  done
  export LD_LIBRARY_PATH="$links:${LD_LIBRARY_PATH:-}"
}

# The training step (issue 20): our step (bench-train_step: ms/step, samples/s, launches/step for
# SASRec and ASIF at the paper's size with 1,350 and 12,101 items; the CPU-sized rows in a dry
# run) and the PyTorch peer's rows (bench/peers/train_step.py; its tiny CPU rows in a dry run, none
# without PyTorch), then one table of both: $out/train-step.md (also in the summary).
train_step_rows() { # dry_run bench_filter
  local dry_run=$1 filter=$2 bench="$bundle/bin/bench-train_step"
  if [ -x "$bench" ]; then
    # shellcheck disable=SC2086
    CRITERION_HOME="$out/criterion" "$bench" --bench $filter --warm-up-time 0.5 --measurement-time 2 \
      | tee "$out/train-step-ours.log"
  else
    echo "no $bench" | tee "$out/train-step-ours.log"
  fi
  if python3 -c 'import torch' 2>/dev/null; then
    local peer_args=(--out "$out" --items "${ASIF_TRAIN_PEER_ITEMS:-1350,12101}" --runs 10)
    # A dry run (CPU) leaves the compiled rows out: torch.compile takes minutes on a CPU.
    [ "$dry_run" -eq 1 ] && peer_args=(--out "$out" --dry-run --no-compile)
    python3 "$bundle/peers/train_step.py" "${peer_args[@]}" | tee "$out/train-step-peer.log"
  else
    echo "SKIPPED the PyTorch training-step peer: no PyTorch in this Python" | tee "$out/train-step-peer.log"
  fi
  python3 - "$out" <<'PY'
import json, os, re, sys
out = sys.argv[1]
rows, launches = [], {}
name = None
units = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
for line in open(os.path.join(out, "train-step-ours.log"), errors="replace"):
    m = re.match(r"train_step launches/step (\S+) (.*): (\d+) launches", line)
    if m:
        launches[(m.group(1), m.group(2).strip())] = int(m.group(3))
        continue
    m = re.match(r"^(train_step/\S+/.+?)\s*(time:.*)?$", line.strip())
    if m and line.startswith("train_step/"):
        name = m.group(1).strip()
        line = m.group(2) or ""
    t = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+)", line)
    if t and name:
        ms = float(t.group(1)) * units[t.group(2)]
        _, model, label = name.split("/", 2)
        batch = int(re.search(r"B(\d+)", label).group(1))
        rows.append(("ours", model, label, ms, batch / (ms / 1e3), launches.get((model, label), "")))
        name = None
path = os.path.join(out, "peers-train_step.json")
if os.path.exists(path):
    for r in json.load(open(path))["rows"]:
        label = f"{r['device']} B{r['B']} d{r['d']} L{r['layers']} n{r['n']} V{r['items']}"
        ms = r["ms_per_step"]
        rows.append(("PyTorch", f"{r['model']}: {r['row']}", label, ms, r["samples_per_s"], r["note"]))
with open(os.path.join(out, "train-step.md"), "w") as f:
    f.write("| who | model / row | setting | ms/step | samples/s | launches/step or note |\n|---|---|---|---|---|---|\n")
    for who, model, label, ms, sps, extra in rows:
        ms_s = f"{ms:.3f}" if ms else "-"
        sps_s = f"{sps:.0f}" if sps else "-"
        f.write(f"| {who} | {model} | {label} | {ms_s} | {sps_s} | {extra} |\n")
print(open(os.path.join(out, "train-step.md")).read())
PY
}

run() {
  local dry_run=0
  [ "${1:-}" = "--dry-run" ] && dry_run=1
  out="${OUT:-$bundle/out}"
  mkdir -p "$out"
  : >"$out/sections.md"
  if [ ! -d "$bundle/bin" ] && [ -f "$bundle/bundle.tar.xz" ]; then
    # Python's tarfile reads xz wherever the xz tool is missing.
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle/bundle.tar.xz" "$bundle"
  fi
  [ -d "$bundle/bin" ] || { echo "no $bundle/bin: run '$0 prepare' first" >&2; exit 2; }
  # On the GPU machine: the GPU tier must run, the emulated tier is left to CI, and benchmarks
  # run their CUDA rows only (their CPU rows cost ~100 s of the budget). A dry run keeps all.
  local bench_filter=""
  if [ $dry_run -eq 0 ]; then
    export ASIF_REQUIRE_GPU=1 ASIF_SKIP_EMULATED=1
    bench_filter="/cuda"
    gpu_libraries
  fi
  {
    echo "commit: $(cat "$bundle/commit" 2>/dev/null)"
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi (dry run or no GPU)"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo "no PyTorch"
  } >"$out/device.txt"
  section device-info 30 cat "$out/device.txt"
  if [ $dry_run -eq 0 ]; then
    section copy-bandwidth 60 python3 -c '
import torch
x = torch.empty(256 * 2**20, dtype=torch.float32, device="cuda")  # 1 GiB
y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
times = []
for _ in range(20):
    start.record(); y.copy_(x); end.record(); torch.cuda.synchronize(); times.append(start.elapsed_time(end))
times.sort(); ms = times[len(times)//2]
print(f"copy bandwidth: {2 * x.numel() * 4 / (ms * 1e-3) / 1e9:.0f} GB/s (read + write, median of 20, 1 GiB)")'
  fi
  for test in "$bundle"/bin/*; do
    case "$(basename "$test")" in bench-*) continue ;; esac
    # Poison mode (docs/testing.md): uninitialised buffers start as NaN in every test binary.
    ASIF_POISON_UNINIT=1 section "test-$(basename "$test")" 60 "$test" --test-threads=1
  done
  for bench in "$bundle"/bin/bench-*; do
    [ -x "$bench" ] || continue
    [ "$(basename "$bench")" = bench-train_step ] && continue # the train-step section runs it
    CRITERION_HOME="$out/criterion" section "$(basename "$bench")" 120 "$bench" --bench $bench_filter --warm-up-time 0.5 --measurement-time 2
  done
  # `section` runs a command under `timeout`: the function goes through bash.
  export -f train_step_rows
  export out bundle
  section train-step 240 bash -c 'train_step_rows "$@"' train_step_rows "$dry_run" "$bench_filter"
  local dry=""
  [ $dry_run -eq 1 ] && dry="--dry-run"
  if python3 -c 'import torch' 2>/dev/null; then
    # The end-to-end row (one whole layer, eager, no torch.compile) first: it is the headline
    # comparison and the shortest peer, so a run that nears its budget still has it.
    section peers-asif_layer 60 python3 "$bundle/peers/asif_layer.py" --out "$out" $dry
    section peers-attention 120 python3 "$bundle/peers/attention.py" --out "$out" $dry
    section peers-hie 75 python3 "$bundle/peers/hie.py" --out "$out" $dry
    section peers-contrastive 60 python3 "$bundle/peers/contrastive.py" --out "$out" $dry
  else
    echo "SKIPPED PyTorch peers: no PyTorch in this Python" >"$out/peers.log"
    printf '| peers | skipped: no PyTorch here | 0s |\n' >>"$out/sections.md"
  fi
  section summarize 30 python3 "$bundle/summarize.py" "$out"

  {
    echo "# GPU check summary"
    echo
    echo '```'
    cat "$out/device.txt"
    grep -h "copy bandwidth" "$out"/copy-bandwidth.log 2>/dev/null
    echo '```'
    echo
    echo "| section | result | time |"
    echo "|---|---|---|"
    cat "$out/sections.md"
    echo
    echo "Test results:"
    echo '```'
    for log in "$out"/test-*.log; do
      printf '%s: %s\n' "$(basename "$log" .log)" "$(grep -h 'test result' "$log" | tail -n 1)"
      grep -h "SKIPPED\|panicked" "$log" | sed 's/^/    /'
    done
    echo '```'
    echo
    echo "Benchmarks (criterion: [low median high]):"
    echo '```'
    for log in "$out"/bench-*.log; do
      [ -f "$log" ] || continue
      grep -h -B1 "time:" "$log" | grep -v "^--" | paste - - | sed 's/  */ /g'
      grep -h "SKIPPED" "$log"
    done
    echo '```'
    echo
    echo "Training step, ours and PyTorch's (train-step section):"
    echo
    cat "$out/train-step.md" 2>/dev/null || echo "no train-step table"
    echo
    echo "Against PyTorch (bench/summarize.py):"
    echo
    cat "$out/table.md" 2>/dev/null || echo "no table"
    cat "$out/peers.log" 2>/dev/null
  } >"$out/summary.md"
  local verdict=0
  grep -q "FAILED\|TIMED OUT" "$out/sections.md" && verdict=1
  # At most 8 files come back from the device machine: keep the summary, the table and its JSON
  # loose, and pack every log, peer JSON and criterion folder into one archive.
  local packed
  packed=$(cd "$out" && ls -A | grep -v -x -e summary.md -e table.md -e summary.json -e logs.tar.gz)
  if [ -n "$packed" ]; then
    (cd "$out" && tar czf logs.tar.gz $packed && rm -rf $packed)
  fi
  cat "$out/summary.md"
  return $verdict
}

case "$mode" in
prepare) prepare ;;
run) shift; run "$@" ;;
*) echo "usage: $0 prepare | run [--dry-run]" >&2; exit 2 ;;
esac
