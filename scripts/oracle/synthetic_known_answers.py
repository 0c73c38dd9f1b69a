#!/usr/bin/env python3
"""Known answers for src/data/synthetic.rs (the built-in synthetic dataset), issue 16.

The crate promises that a seed gives byte-identical files (docs/data.md), and the README's
default run and docs/data.md's tables are made from the default world, so a change to the
generator's arithmetic must show. This is a second statement of the generator, in Python: the
world of the module doc (a sparse Markov chain over categories, a churning catalogue of items
with log-normal popularity, users walking the chain on a timeline), drawn in the order the crate
fixes (which SplitMix64 stream each draw comes from, and in what order), on the generator of
splitmix64_known_answers.py. Plain Python floats are IEEE doubles and math.log/cos/exp/sqrt are
the C library's, as Rust's f64 methods are.

    python3 scripts/oracle/synthetic_known_answers.py [OUT_DIR]

writes OUT_DIR/tiny.inter and OUT_DIR/tiny.item (OUT_DIR: tests/fixtures/synthetic), the files of
the small world TINY below, and prints what tests/data_synthetic.rs::synthetic_files_are_known
writes as numbers about the default world (its row count, first and last rows, and the FNV-1a
hash of each file). No dependencies."""
import math
import os
import sys
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from splitmix64_known_answers import SplitMix64, left_to_right_sum  # noqa: E402

DEFAULT = dict(name="synthetic", seed=2024, n_users=1000, n_categories=20,
               active_per_category=24, churn_per_period=4, n_periods=30, period_len=86_400,
               min_len=10, max_len=60, mean_gap_periods=0.5, stay_prob=0.3, successors=3,
               popularity_sigma=1.0)
# Small enough to read: 9 users, 4 categories, 3 items on the market per category, 2 replaced
# every 2-hour period, 2 successors per category.
TINY = dict(name="tiny", seed=77, n_users=9, n_categories=4, active_per_category=3,
            churn_per_period=2, n_periods=5, period_len=7200, min_len=3, max_len=7,
            mean_gap_periods=0.7, stay_prob=0.25, successors=2, popularity_sigma=1.3)


def normal(rng):
    # Box-Muller, u1 in (0, 1].
    u1 = 1.0 - rng.next_f64()
    u2 = rng.next_f64()
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def generate(cfg):
    """Returns (inter_text, item_text)."""
    c_n = cfg["n_categories"]
    rng = SplitMix64.stream(cfg["seed"], 0)

    # The chain: stay with stay_prob, else move to one of `successors` other categories chosen
    # by a shuffle, with weights 0.5 + U[0, 1) normalised.
    transition = [[0.0] * c_n for _ in range(c_n)]
    for c in range(c_n):
        others = [x for x in range(c_n) if x != c]
        k = min(cfg["successors"], len(others))
        row = transition[c]
        if k == 0:
            row[c] = 1.0
            continue
        row[c] = cfg["stay_prob"]
        rng.shuffle(others)
        w = [0.5 + rng.next_f64() for _ in range(k)]
        total = left_to_right_sum(w)
        for d, wd in zip(others[:k], w):
            row[d] += (1.0 - cfg["stay_prob"]) * wd / total

    # The catalogue: per category a FIFO of items on the market; at every period boundary the
    # `churn_per_period` oldest leave and as many new ids join. Popularity weight
    # exp(sigma * N(0, 1)), drawn as each item is born, from the same stream as the chain.
    item_category, item_weight = [], []

    def new_item(c):
        item_category.append(c)
        item_weight.append(math.exp(cfg["popularity_sigma"] * normal(rng)))
        return len(item_category) - 1

    current = [deque(new_item(c) for _ in range(cfg["active_per_category"])) for c in range(c_n)]
    active = []  # active[p * c_n + c]
    for p in range(cfg["n_periods"]):
        if p > 0:
            for c, q in enumerate(current):
                for _ in range(cfg["churn_per_period"]):
                    q.popleft()
                    q.append(new_item(c))
        for q in current:
            active.append(list(q))

    # Users, each on its own stream 1 + u: a length, a start time, a first category, then per
    # interaction an item of the current category's market by popularity, the next category by
    # the chain, and a gap uniform in [0.5, 1.5] x the mean gap, kept on the timeline.
    period_len = float(cfg["period_len"])
    horizon = cfg["n_periods"] * period_len
    mean_gap = cfg["mean_gap_periods"] * period_len
    rows = []
    for u in range(cfg["n_users"]):
        urng = SplitMix64.stream(cfg["seed"], 1 + u)
        length = urng.range_inclusive(cfg["min_len"], cfg["max_len"])
        span = min(length * mean_gap, horizon * 0.999)
        t = urng.next_f64() * (horizon - span)
        c = urng.below(c_n)
        for _ in range(length):
            p = min(int(t / period_len), cfg["n_periods"] - 1)
            pool = active[p * c_n + c]
            item = pool[urng.weighted([item_weight[i] for i in pool])]
            rows.append((int(t), u, item))
            c = urng.weighted(transition[c])
            t = min(t + mean_gap * (0.5 + urng.next_f64()), horizon - 1.0)
    rows.sort(key=lambda r: r[0])  # stable: ties keep user order

    inter = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
        f"u{u + 1}\ti{i + 1}\t{t}\n" for t, u, i in rows)
    item = "item_id:token\tcategory:token_seq\n" + "".join(
        f"i{i + 1}\tc{c + 1:02d}\n" for i, c in enumerate(item_category))
    return inter, item


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & ((1 << 64) - 1)
    return h


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "synthetic")
    os.makedirs(out, exist_ok=True)
    inter, item = generate(TINY)
    for ext, text in (("inter", inter), ("item", item)):
        with open(os.path.join(out, f"tiny.{ext}"), "w", newline="\n") as f:
            f.write(text)
    print(f"tiny: {inter.count(chr(10)) - 1} interactions, {item.count(chr(10)) - 1} items "
          f"-> {os.path.normpath(out)}")
    inter, item = generate(DEFAULT)
    lines = inter.splitlines()
    print(f"default: {len(lines) - 1} interactions, {item.count(chr(10)) - 1} items")
    print("default first rows:", lines[1:4])
    print("default last rows:", lines[-3:])
    print(f"default fnv1a64: inter {fnv1a64(inter.encode()):#018x}, "
          f"item {fnv1a64(item.encode()):#018x}")


if __name__ == "__main__":
    main()
