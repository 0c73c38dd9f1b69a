#!/usr/bin/env python3
"""Mean and spread over seeds of the train example's JSON results files.

    python3 scripts/results-table.py [--valid-only] target/asif-results/synthetic

Groups `<model>-seed<S>.json` files by model and prints a Markdown table of test HR@10/20 and
NDCG@10/20 (mean ± sample standard deviation over seeds; a single seed without spread), the
validation NDCG@20 of the best epoch, the best and the last epoch run, and seconds per epoch.
With --valid-only the test columns are left out: for choosing a hyper-parameter (λ), which must
not look at the test split.
"""
import glob
import json
import os
import re
import statistics
import sys


def main():
    args = sys.argv[1:]
    valid_only = "--valid-only" in args
    args = [a for a in args if a != "--valid-only"]
    folder = args[0] if args else "target/asif-results"
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*-seed*.json"))):
        model = re.sub(r"-seed\d+\.json$", "", os.path.basename(path))
        with open(path) as f:
            runs.setdefault(model, []).append(json.load(f))
    if not runs:
        sys.exit(f"no <model>-seed<S>.json files in {folder}")
    order = ["sasrec", "sasrec_f", "nova", "asif", "asif_wo_rsa", "asif_wo_hie", "asif_wo_up", "asif_wo_fa"]
    test_columns = [] if valid_only else ["test HR@10", "test NDCG@10", "test HR@20", "test NDCG@20"]
    columns = ["model", "seeds"] + test_columns + ["valid HR@20", "valid NDCG@20", "best / run epochs", "s/epoch"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for model in sorted(runs, key=lambda m: order.index(m) if m in order else len(order)):
        results = runs[model]

        def cell(key, split="test"):
            values = [r[split][key] for r in results]
            if len(values) == 1:
                return f"{values[0]:.4f}"
            return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

        epochs = ", ".join(f"{r['best_epoch']}/{len(r['epochs'])}" for r in results)
        seconds = statistics.mean(e["seconds"] for r in results for e in r["epochs"] if "seconds" in e) if any("seconds" in e for r in results for e in r["epochs"]) else float("nan")
        tests = [] if valid_only else [cell("hr10"), cell("ndcg10"), cell("hr20"), cell("ndcg20")]
        cells = [model, str(len(results))] + tests + [cell("hr20", "best_valid"), cell("ndcg20", "best_valid"), epochs, f"{seconds:.1f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
