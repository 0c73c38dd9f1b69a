"""Builds the GPU check's table: per row our median, the best peer's median, the ratio, and bytes
moved over time as a fraction of the measured copy bandwidth. Writes summary.json and table.md.

    python3 bench/summarize.py OUT_DIR

Reads OUT_DIR/criterion/**/new/estimates.json (our criterion benchmarks), OUT_DIR/peers-*.json
(the PyTorch peers) and OUT_DIR/copy-bandwidth.log. A row whose side is missing is shown as such.
"""
import glob
import json
import os
import re
import sys

# Each row: our criterion benchmark (group/function/parameter as a path fragment), the peers'
# (kernel, lengths, passes), and the minimal bytes one call moves (perf-floors.md), in MB.
ROWS = []
for _lengths in ("full", "short"):
    _label = "all 50 valid" if _lengths == "full" else "short lengths (mean about 8)"
    # Minimal bytes are the dense floors of perf-floors.md; at short lengths a kernel that skips
    # padding moves less, so the fraction is left out there.
    _mb = (lambda dense: dense) if _lengths == "full" else (lambda dense: None)
    ROWS += [
        (f"attention forward, {_label}", "attention/forward/cuda", "attention", _lengths, "forward", _mb(1049)),
        (f"attention forward+backward, {_label}", "attention/forward_backward/cuda", "attention", _lengths, "forward+backward", _mb(1049 + 1783)),
        (f"HIE forward, {_label}", "hie/forward/cuda", "hie", _lengths, "forward", _mb(315)),
        (f"HIE forward+backward, {_label}", "hie/forward_backward/cuda", "hie", _lengths, "forward+backward", _mb(315 + 593)),
        (f"contrastive forward+backward, {_label}", "contrastive/forward_backward/cuda", "contrastive", _lengths, "forward+backward", _mb(419)),
        # One whole ASIF layer (benches/asif_layer.rs against bench/peers/asif_layer.py): no
        # floor is defined for a layer, so no fraction of the copy bandwidth.
        (f"ASIF layer forward, {_label}", "asif_layer/forward/cuda", "asif_layer", _lengths, "forward", None),
        (f"ASIF layer forward+backward, {_label}", "asif_layer/forward_backward/cuda", "asif_layer", _lengths, "forward+backward", None),
    ]


def ours(out):
    medians = {}
    for path in glob.glob(os.path.join(out, "criterion", "**", "new", "estimates.json"), recursive=True):
        with open(path) as f:
            estimate = json.load(f)
        key = os.path.relpath(os.path.dirname(os.path.dirname(path)), os.path.join(out, "criterion"))
        medians[key] = estimate["median"]["point_estimate"] / 1e6  # ns -> ms
    return medians


def peers(out):
    rows = []
    for path in glob.glob(os.path.join(out, "peers-*.json")):
        with open(path) as f:
            rows.extend(json.load(f)["rows"])
    return rows


def bandwidth(out):
    try:
        with open(os.path.join(out, "copy-bandwidth.log")) as f:
            match = re.search(r"copy bandwidth: (\d+) GB/s", f.read())
            return float(match.group(1)) if match else None
    except OSError:
        return None


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    our_medians, peer_rows, gbps = ours(out), peers(out), bandwidth(out)
    table = []
    for name, fragment, kernel, lengths, passes, megabytes in ROWS:
        mine = [v for k, v in our_medians.items() if fragment in k.replace(os.sep, "/") and lengths in k]
        mine = min(mine) if mine else None
        candidates = [r for r in peer_rows if r["kernel"] == kernel and r["lengths"] == lengths and r["passes"] == passes and r["median_ms"]]
        best = min(candidates, key=lambda r: r["median_ms"]) if candidates else None
        row = dict(row=name, ours_ms=mine, best_peer=best["peer"] if best else None, best_peer_ms=best["median_ms"] if best else None)
        row["speedup"] = (best["median_ms"] / mine) if (best and mine) else None
        row["fraction_of_copy_bandwidth"] = (megabytes * 1e6 / (mine * 1e-3) / (gbps * 1e9)) if (mine and gbps and megabytes) else None
        table.append(row)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(dict(copy_bandwidth_gbps=gbps, rows=table, ours=our_medians, peers=peer_rows), f, indent=1)
    fmt = lambda v, spec: "missing" if v is None else format(v, spec)  # noqa: E731
    lines = [f"copy bandwidth: {fmt(gbps, '.0f')} GB/s", "", "| row | ours (ms) | best peer | peer (ms) | speed-up | of copy bandwidth |", "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['row']} | {fmt(r['ours_ms'], '.3f')} | {r['best_peer'] or 'missing'} | {fmt(r['best_peer_ms'], '.3f')} | {fmt(r['speedup'], '.2f')}× | {fmt(r['fraction_of_copy_bandwidth'], '.0%')} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
