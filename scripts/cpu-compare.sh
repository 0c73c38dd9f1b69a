#!/usr/bin/env bash
# Our CPU training epoch against PyTorch's, side by side on this machine (issue 23).
#
#   bash scripts/cpu-compare.sh [--max-batches N] [--repeats R] [--threads "1 2"] [--models "sasrec asif"]
#
# For each model: R repeats of, one after the other, our train example at each thread count
# (`--threads`) and the PyTorch peer (`bench/peers/cpu_epoch.py`, the oracle model of
# scripts/oracle/ with a training loop, torch's default threads), each on the first N training
# batches of epoch 1 of ml-100k (no k-core). Reports the median over the repeats of samples/s,
# s/epoch EXTRAPOLATED from samples/s (the full epoch's samples / rate), and peak RSS of the whole
# process (`/usr/bin/time -v`, ours includes the evaluation after the epoch). Writes
# results/cpu-compare.json and the "CPU epoch, side by side" section of docs/results.md.
# Run it on an otherwise idle machine: every number is a wall-clock time.
#
# Settings (the issue's): SASRec d 64, 2 layers, 2 heads, n 50, inner 256, batch 256, dropout
# 0.5/0.5; ASIF d 32, 2 layers, 2 heads, n 20, inner 256, batch 256, dropout 0.5/0.5, r 16, λ 10.
# Environment: PYTHON (default /work/venvs/e/bin/python, CPU PyTorch), DATA (data/ml-100k).
set -euo pipefail
cd "$(dirname "$0")/.."

max_batches=20
repeats=3
threads="1 2"
models="sasrec asif"
while [ $# -gt 0 ]; do
    case "$1" in
        --max-batches) max_batches=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --models) models=$2; shift 2 ;;
        *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
python=${PYTHON:-/work/venvs/e/bin/python}
data=${DATA:-data/ml-100k}
[ -f "$data/ml-100k.inter" ] || { echo "no $data/ml-100k.inter (scripts/fetch-ml100k.sh)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (GNU time) for peak RSS" >&2; exit 1; }

cargo build --release --example train
out=target/cpu-compare
mkdir -p "$out" results
runs="$out/runs.jsonl"
: > "$runs"

setting() {
    case "$1" in
        sasrec) echo "--hidden-size 64 --layers 2 --heads 2 --max-len 50 --inner-size 256 --batch-size 256" ;;
        asif) echo "--hidden-size 32 --layers 2 --heads 2 --max-len 20 --inner-size 256 --batch-size 256 --hie-rank 16 --rsa-lambda 10" ;;
    esac
}

peak_kib() { sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$1"; }

for repeat in $(seq 1 "$repeats"); do
    for model in $models; do
        for t in $threads; do
            json="$out/ours-$model-t$t-r$repeat.json"
            /usr/bin/time -v -o "$out/time.txt" target/release/examples/train \
                --data-dir "$data" --dataset ml-100k --kcore 0 --device cpu --model "$model" \
                $(setting "$model") --hidden-dropout 0.5 --attention-dropout 0.5 --lr 1e-3 \
                --epochs 1 --max-batches "$max_batches" --threads "$t" --quiet --results "$json" \
                > /dev/null
            python3 - "$json" "$model" "$t" "$(peak_kib "$out/time.txt")" >> "$runs" <<'EOF'
import json, sys
path, model, threads, peak = sys.argv[1:]
r = json.load(open(path))
e = r["epochs"][0]
print(json.dumps({"system": "ours", "model": model, "threads": int(threads),
                  "samples_per_second": e["samples_per_second"], "seconds": e["seconds"],
                  "peak_rss_kib": int(peak), "train_loss": e["train_loss"]}))
EOF
            echo "ours $model, $t threads, repeat $repeat: $(tail -1 "$runs")" >&2
        done
        /usr/bin/time -v -o "$out/time.txt" "$python" bench/peers/cpu_epoch.py --data-dir "$data" \
            --model "$model" $(setting "$model") --hidden-dropout 0.5 --attention-dropout 0.5 \
            --max-batches "$max_batches" > "$out/peer.json"
        python3 - "$out/peer.json" "$(peak_kib "$out/time.txt")" >> "$runs" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
r["peak_rss_kib"] = int(sys.argv[2])
print(json.dumps(r))
EOF
        echo "pytorch $model, repeat $repeat: $(tail -1 "$runs")" >&2
    done
done

python3 - "$runs" "$max_batches" "$repeats" "$models" "$threads" <<'EOF'
import json, platform, statistics, subprocess, sys, datetime, os
runs_path, max_batches, repeats, models, threads = sys.argv[1:]
runs = [json.loads(l) for l in open(runs_path)]
peer_epoch = {r["model"]: r["epoch_samples"] for r in runs if r["system"] == "pytorch"}
def median(rows, key):
    return statistics.median(r[key] for r in rows)
rows = []
for model in models.split():
    epoch_samples = peer_epoch[model]
    groups = [(f"ours, {t} thread{'s' if t != '1' else ''}", [r for r in runs if r["system"] == "ours" and r["model"] == model and r["threads"] == int(t)]) for t in threads.split()]
    peer = [r for r in runs if r["system"] == "pytorch" and r["model"] == model]
    groups.append((f"PyTorch {peer[0]['torch']} ({peer[0]['threads']} threads, {peer[0]['dtype']})", peer))
    for name, g in groups:
        rate = median(g, "samples_per_second")
        rows.append({"model": model, "run": name, "samples_per_second": rate,
                     "epoch_seconds_extrapolated": epoch_samples / rate,
                     "peak_rss_mib": median(g, "peak_rss_kib") / 1024, "repeats": len(g)})
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
        "cpu": cpu, "cores": os.cpu_count(), "max_batches": int(max_batches), "repeats": int(repeats),
        "load_average_at_end": os.getloadavg()}
json.dump({"meta": meta, "rows": rows, "runs": runs}, open("results/cpu-compare.json", "w"), indent=1)

def ratio(model, a, b):
    ra = next(r for r in rows if r["model"] == model and r["run"].startswith(a))
    rb = next(r for r in rows if r["model"] == model and r["run"].startswith(b))
    return rb["samples_per_second"] / ra["samples_per_second"]
lines = ["<!-- cpu-compare:begin (written by scripts/cpu-compare.sh) -->",
         "## CPU epoch, side by side with PyTorch",
         "",
         f"`bash scripts/cpu-compare.sh --max-batches {max_batches} --repeats {repeats}` on {meta['cpu']} "
         f"({meta['cores']} cores), {meta['date']}, commit {commit}; load average at the end "
         f"{meta['load_average_at_end'][0]:.2f} (the numbers hold only on an idle machine). Median of "
         f"{repeats} runs of the first {max_batches} batches of epoch 1 on ml-100k (no k-core); "
         "s/epoch is **extrapolated** from samples/s (full epoch = the training samples of the split / rate); "
         "peak RSS is the whole process's (ours includes loading the data and the evaluation). "
         "PyTorch: `bench/peers/cpu_epoch.py`, the oracle model of `scripts/oracle/` with the same dropout (0.5/0.5 at the crate's sites). "
         "Raw runs: `results/cpu-compare.json`.",
         "",
         "| model | run | samples/s | s/epoch (extrapolated) | peak RSS (MiB) |",
         "|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['model']} | {r['run']} | {r['samples_per_second']:.0f} | {r['epoch_seconds_extrapolated']:.1f} | {r['peak_rss_mib']:.0f} |")
lines.append("")
lines.append("| target (issue 23) | measured |")
lines.append("|---|---|")
ts = threads.split()
for model in models.split():
    top = ts[-1]
    label = f"ours, {top} thread"
    peer = "PyTorch"
    speed = ratio(model, peer, label)
    lines.append(f"| {model}: our epoch ≤ 0.5× PyTorch's time | {1 / speed:.2f}× |")
    if len(ts) > 1:
        lines.append(f"| {model}: {top} threads against 1 ≥ 1.8× faster | {ratio(model, 'ours, 1 thread', label):.2f}× |")
    ours_rss = next(r for r in rows if r["model"] == model and r["run"].startswith(label))["peak_rss_mib"]
    peer_rss = next(r for r in rows if r["model"] == model and r["run"].startswith(peer))["peak_rss_mib"]
    lines.append(f"| {model}: peak memory ≤ PyTorch's | {ours_rss:.0f} MiB against {peer_rss:.0f} MiB |")
if "sasrec" in models.split() and "asif" in models.split():
    s = next(r for r in rows if r["model"] == "sasrec" and r["run"].startswith(f"ours, {ts[-1]} thread"))
    a = next(r for r in rows if r["model"] == "asif" and r["run"].startswith(f"ours, {ts[-1]} thread"))
    lines.append(f"| our ASIF epoch ≤ 1.5× our SASRec epoch | {a['epoch_seconds_extrapolated'] / s['epoch_seconds_extrapolated']:.2f}× |")
lines.append("<!-- cpu-compare:end -->")
section = "\n".join(lines) + "\n"
doc = open("docs/results.md").read()
begin, end = "<!-- cpu-compare:begin", "<!-- cpu-compare:end -->\n"
if begin in doc:
    doc = doc[: doc.index(begin)] + section + doc[doc.index(end) + len(end):]
else:
    doc = doc.rstrip("\n") + "\n\n" + section
open("docs/results.md", "w").write(doc)
print(section)
EOF
