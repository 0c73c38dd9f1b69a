#!/usr/bin/env python3
"""Mean and spread over seeds of the train example's JSON results files.

    python3 scripts/results-table.py [--valid-only] target/asif-results/synthetic

Groups `<model>-seed<S>.json` files by model and prints a Markdown table of test HR@10/20 and
NDCG@10/20 (mean ± sample standard deviation over seeds; a single seed without spread), the
validation NDCG@20 of the best epoch, the best and the last epoch run, and seconds per epoch.
With --valid-only the test columns are left out: for choosing a hyper-parameter (λ), which must
not look at the test split.

    python3 scripts/results-table.py DIR --paired CANDIDATE BASELINE [BASELINE ...]

adds the paired difference of CANDIDATE against the best baseline: the baseline with the highest
mean validation NDCG@20 (chosen on validation, never on test), and for each test metric the mean
over the seeds both have of (candidate − baseline) with its standard error (sample standard
deviation of the per-seed differences / √seeds; none with one seed).
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
    paired = None
    if "--paired" in args:
        at = args.index("--paired")
        paired = args[at + 1 :]
        args = args[:at]
        if len(paired) < 2:
            sys.exit("--paired needs a candidate and at least one baseline")
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
    if paired:
        print_paired(runs, paired[0], paired[1:])


def by_seed(results):
    return {r["train"]["seed"]: r for r in results}


def print_paired(runs, candidate, baselines):
    for name in [candidate] + baselines:
        if name not in runs:
            sys.exit(f"--paired: no runs of {name}")
    best = max(baselines, key=lambda b: statistics.mean(r["best_valid"]["ndcg20"] for r in runs[b]))
    mine, theirs = by_seed(runs[candidate]), by_seed(runs[best])
    seeds = sorted(set(mine) & set(theirs))
    print()
    print(f"Paired difference {candidate} − {best} (the best baseline by mean validation NDCG@20), "
          f"seeds {', '.join(str(s) for s in seeds)}:")
    print()
    print("| metric | mean difference | standard error | relative to the baseline's mean |")
    print("|---|---|---|---|")
    for key, label in [("hr10", "test HR@10"), ("hr20", "test HR@20"), ("ndcg10", "test NDCG@10"), ("ndcg20", "test NDCG@20")]:
        differences = [mine[s]["test"][key] - theirs[s]["test"][key] for s in seeds]
        mean = statistics.mean(differences)
        error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float("nan")
        base = statistics.mean(theirs[s]["test"][key] for s in seeds)
        print(f"| {label} | {mean:+.4f} | {error:.4f} | {100 * mean / base:+.1f} % |")


if __name__ == "__main__":
    main()
