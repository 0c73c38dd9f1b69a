#!/usr/bin/env python3
"""Mean and spread over seeds of the train example's JSON results files.

    python3 scripts/results-table.py target/asif-results/synthetic

Groups `<model>-seed<S>.json` files by model and prints a Markdown table of test HR@10/20 and
NDCG@10/20 (mean ± sample standard deviation over seeds; a single seed without spread), the
validation NDCG@20 of the best epoch, the best and the last epoch run, and seconds per epoch.
"""
import glob
import json
import os
import re
import statistics
import sys


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "target/asif-results"
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*-seed*.json"))):
        model = re.sub(r"-seed\d+\.json$", "", os.path.basename(path))
        with open(path) as f:
            runs.setdefault(model, []).append(json.load(f))
    if not runs:
        sys.exit(f"no <model>-seed<S>.json files in {folder}")
    order = ["sasrec", "sasrec_f", "asif", "asif_wo_rsa", "asif_wo_hie", "asif_wo_up", "asif_wo_fa"]
    print("| model | seeds | test HR@10 | test NDCG@10 | test HR@20 | test NDCG@20 | valid NDCG@20 | best / run epochs | s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in sorted(runs, key=lambda m: order.index(m) if m in order else len(order)):
        results = runs[model]

        def cell(key, split="test"):
            values = [r[split][key] for r in results]
            if len(values) == 1:
                return f"{values[0]:.4f}"
            return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

        epochs = ", ".join(f"{r['best_epoch']}/{len(r['epochs'])}" for r in results)
        seconds = statistics.mean(e["seconds"] for r in results for e in r["epochs"] if "seconds" in e) if any("seconds" in e for r in results for e in r["epochs"]) else float("nan")
        print(f"| {model} | {len(results)} | {cell('hr10')} | {cell('ndcg10')} | {cell('hr20')} | {cell('ndcg20')} | {cell('ndcg20', 'best_valid')} | {epochs} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
