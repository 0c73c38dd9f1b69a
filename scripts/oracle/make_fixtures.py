#!/usr/bin/env python3
"""Writes the whole-model oracle fixtures `tests/fixtures/oracle/<case>.safetensors`.

Each case is one tiny model (d 8, 2 layers, 2 heads, n 5, r 3, 7 items, two attribute types with
vocabularies 5 and 4 and up to two tokens per item) and one batch of B = 3 sequences with lengths
1, 3 and 5. Per case the file holds, under the crate's parameter names:
  - the weights, float32 (drawn here from a fixed numpy seed; the crate loads them by name);
  - `expected.grad.<name>`: dL/d(parameter) from `asif_oracle.py`, float64, one per oracle
    parameter (those the crate does not build must come out zero);
  - `expected.loss`, `expected.cross_entropy`, `expected.contrastive` (float64, [1]);
  - `batch.items` [B, n], `batch.lengths` [B], `batch.targets` [B], `batch.attributes.<j>`
    [B, n, width] (int32);
  - metadata `oracle_config`: the case's configuration (JSON), read by `tests/model_oracle.rs`.
Dropout is off (p = 0) in every case.

  python3 scripts/oracle/make_fixtures.py            # (re)write the fixtures
  python3 scripts/oracle/make_fixtures.py --check    # regenerate in a temporary folder and compare
                                                     # with the committed files (exit 1 on a change)

Needs the pinned packages of `requirements.txt` (CPU is enough).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from asif_oracle import Config, Model, parameter_shapes, to_crate_names  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "oracle"

N = 5
WIDTH = 2
ATTRIBUTE_VOCAB = [5, 4]
N_ITEMS = 8  # 7 real items + the pad 0
# Attribute tokens per item id (type 0, type 1); item 6 has item 1's sets in another order.
ITEM_TOKENS = {
    0: ([0, 0], [0, 0]),
    1: ([1, 3], [2, 0]),
    2: ([2, 0], [1, 3]),
    3: ([4, 0], [3, 0]),
    4: ([1, 2], [1, 0]),
    5: ([3, 4], [2, 0]),
    6: ([3, 1], [2, 0]),
    7: ([2, 4], [3, 1]),
}
# Lengths 1 (below r: HIE's rank guard), 3 (= r) and n; item 5 repeats in row 1 and items 1 and 6
# share their attribute sets in row 2 (rsa_dedup's false negatives).
ROWS = [[3], [5, 2, 5], [1, 4, 6, 7, 2]]
TARGETS = [2, 7, 3]

CASES = {
    "sasrec": dict(kind="sasrec"),
    "sasrec_f_sum": dict(kind="sasrec_f", fusion="sum"),
    "sasrec_f_concat": dict(kind="sasrec_f", fusion="concat"),
    "sasrec_f_gate": dict(kind="sasrec_f", fusion="gate"),
    "asif": dict(kind="asif"),
    "asif_concat": dict(kind="asif", fusion="concat"),
    "asif_gate": dict(kind="asif", fusion="gate"),
    "asif_wo_rsa": dict(kind="asif_wo_rsa"),
    "asif_wo_hie": dict(kind="asif_wo_hie"),
    "asif_wo_up": dict(kind="asif_wo_up"),
    "asif_wo_fa": dict(kind="asif_wo_fa"),
    "asif_rsa_sum_dedup_mean_pooling": dict(
        kind="asif", rsa_reduction="sum", rsa_dedup=True, pooling="mean"
    ),
    "asif_full_qr_r2": dict(kind="asif", hie_full_qr=True, hie_rank=2),
    "asif_hie_keep_padding_r2": dict(kind="asif", hie_keep_padding=True, hie_rank=2, padding_rows="zero"),
    # r = 2: with padding kept, X's padding rows are all alike (X carries no position), so
    # L_b = 1 gives rank 2, and the full QR backward needs full rank (spec A7).
    "asif_hie_keep_padding_full_qr": dict(
        kind="asif", hie_keep_padding=True, hie_full_qr=True, hie_rank=2, padding_rows="zero"
    ),
    # Added after the cases above (each case's weight seed is 1000 + its place in this list).
    "nova": dict(kind="nova"),
    "nova_concat": dict(kind="nova", fusion="concat"),
    "nova_gate": dict(kind="nova", fusion="gate"),
    # DIF-SR: d_a = 4 (d_a / h = 2 per head, d_h = 4), lambda_aap = 10 (spec 4).
    "difsr": dict(kind="difsr"),
    "difsr_concat": dict(kind="difsr", fusion="concat"),
    "difsr_gate": dict(kind="difsr", fusion="gate"),
}


def batch():
    b = len(ROWS)
    items = np.zeros((b, N), dtype=np.int32)
    for r, row in enumerate(ROWS):
        items[r, : len(row)] = row
    lengths = np.array([len(r) for r in ROWS], dtype=np.int32)
    targets = np.array(TARGETS, dtype=np.int32)
    attributes = [
        np.array([[ITEM_TOKENS[int(i)][j] for i in row] for row in items], dtype=np.int32)
        for j in range(len(ATTRIBUTE_VOCAB))
    ]
    # Attribute-set ids for rsa_dedup: same id <=> same multiset of non-zero tokens, every type.
    groups = np.full((b, N), -1, dtype=np.int64)
    seen: dict = {}
    for r in range(b):
        for t in range(N):
            if items[r, t] == 0:
                continue
            key = tuple(tuple(sorted(x for x in ITEM_TOKENS[int(items[r, t])][j] if x)) for j in range(2))
            groups[r, t] = seen.setdefault(key, len(seen))
    return items, lengths, targets, attributes, groups


def target_attributes():
    """The target items' tokens per attribute type, (B, WIDTH) (DIF-SR's attribute prediction)."""
    return [
        np.array([ITEM_TOKENS[t][j] for t in TARGETS], dtype=np.int32)
        for j in range(len(ATTRIBUTE_VOCAB))
    ]


def weights(c: Config, seed: int) -> dict[str, np.ndarray]:
    """Random weights, scaled so every term matters at this size (not RecBole's 0.02)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in sorted(parameter_shapes(c).items()):
        if name.endswith("_embedding.weight") or name.startswith("attribute_embedding"):
            w = rng.normal(0.0, 0.5, shape)
            if not name.startswith("position"):
                w[0] = 0.0  # the pad row (spec §1 recommends zero)
        elif name.endswith("hie_bases"):
            w = rng.normal(0.0, 1.0, shape)  # W_r ~ N(0, 1) (spec §3.3)
        elif name == "logit_scale":
            w = np.array([2.0])  # kappa = e^2 ~ 7.4, below the clamp
        elif "norm" in name and name.endswith(".weight"):
            w = 1.0 + rng.normal(0.0, 0.1, shape)
        elif name.endswith(".bias"):
            w = rng.normal(0.0, 0.1, shape)
        else:
            w = rng.normal(0.0, 0.35, shape)
        out[name] = np.asarray(w, dtype=np.float32)
    return out


def run_case(name: str, options: dict, seed: int):
    c = Config(attribute_vocab=list(ATTRIBUTE_VOCAB), n_items=N_ITEMS, n=N, **options)
    w32 = weights(c, seed)
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w32.items()}
    items, lengths, targets, attributes, groups = batch()
    model = Model(c, params)
    loss, ce, co = model.loss(
        torch.tensor(items, dtype=torch.long),
        torch.tensor(lengths, dtype=torch.long),
        torch.tensor(targets, dtype=torch.long),
        [torch.tensor(a, dtype=torch.long) for a in attributes],
        torch.tensor(groups),
        [torch.tensor(t, dtype=torch.long) for t in target_attributes()] if c.difsr else None,
    )
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    grads = {
        k: (g if g is not None else torch.zeros_like(params[k])).detach()
        for k, g in zip(params.keys(), grads)
    }
    tensors = {k: v for k, v in to_crate_names(c, {k: torch.tensor(v) for k, v in w32.items()}).items()}
    out = {k: v.numpy().astype(np.float32) for k, v in tensors.items()}
    for k, g in to_crate_names(c, grads).items():
        out[f"expected.grad.{k}"] = g.numpy().astype(np.float64)
    out["expected.loss"] = np.array([loss.item()])
    out["expected.cross_entropy"] = np.array([ce.item()])
    out["expected.contrastive"] = np.array([co.item() if co is not None else math.nan])
    out["batch.items"] = items
    out["batch.lengths"] = lengths
    out["batch.targets"] = targets
    for j, a in enumerate(attributes):
        out[f"batch.attributes.{j}"] = a
    if c.difsr:
        for j, t in enumerate(target_attributes()):
            out[f"batch.target_attributes.{j}"] = t
    config = dict(options)
    config.update(
        hidden_size=c.d, heads=c.heads, layers=c.layers, max_len=c.n, inner_size=c.inner,
        rsa_lambda=c.rsa_lambda, hie_rank=c.hie_rank, layer_norm_eps=c.eps,
        attribute_width=WIDTH, attribute_vocab=c.attribute_vocab, n_item_ids=c.n_items,
        fusion=c.fusion, rsa_reduction=c.rsa_reduction, rsa_dedup=c.rsa_dedup,
        pooling=c.pooling, hie_keep_padding=c.hie_keep_padding, hie_full_qr=c.hie_full_qr,
    )
    if c.difsr:
        config.update(attribute_hidden_size=c.d_a, aap_lambda=c.aap_lambda)
    return out, {"oracle_config": json.dumps(config, sort_keys=True)}, (loss.item(), ce.item(), co)


def write_all(folder: pathlib.Path, quiet=False):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, options) in enumerate(CASES.items()):
        tensors, metadata, (loss, ce, co) = run_case(name, options, seed=1000 + i)
        save_file(tensors, str(folder / f"{name}.safetensors"), metadata=metadata)
        if not quiet:
            co_s = f"{co.item():.6f}" if co is not None else "-"
            print(f"{name:34s} L = {loss:.10f}  L_ce = {ce:.10f}  L_co = {co_s}")


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        write_all(tmp, quiet=True)
        bad = 0
        worst = 0.0
        for name in CASES:
            new = load_file(str(tmp / f"{name}.safetensors"))
            path = FIXTURES / f"{name}.safetensors"
            if not path.exists():
                print(f"{name}: no committed fixture at {path}")
                bad += 1
                continue
            old = load_file(str(path))
            if set(new) != set(old):
                print(f"{name}: tensor names differ: {sorted(set(new) ^ set(old))}")
                bad += 1
                continue
            for k in sorted(new):
                a, b = new[k], old[k]
                if a.shape != b.shape or a.dtype != b.dtype:
                    print(f"{name}/{k}: shape or dtype changed")
                    bad += 1
                    continue
                if k.startswith("expected."):
                    a64, b64 = a.astype(np.float64), b.astype(np.float64)
                    if np.isnan(b64).all() and np.isnan(a64).all():
                        continue
                    diff = float(np.max(np.abs(a64 - b64))) if a.size else 0.0
                    scale = float(np.max(np.abs(b64))) if b.size else 0.0
                    rel = diff / max(scale, 1e-300)
                    worst = max(worst, rel if scale > 0 else diff)
                    if diff > 1e-12 * max(scale, 1.0):
                        print(f"{name}/{k}: changed by {diff:.3e} (scale {scale:.3e})")
                        bad += 1
                elif not np.array_equal(a, b):
                    print(f"{name}/{k}: weights or batch changed")
                    bad += 1
        print(
            f"regenerated {len(CASES)} cases: {'identical within 1e-12' if not bad else f'{bad} differences'}"
            f" (largest relative change of an expected value {worst:.3e})"
        )
        return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    if args.check:
        sys.exit(check())
    write_all(FIXTURES)


if __name__ == "__main__":
    main()
