#!/usr/bin/env python3
"""Writes `tests/fixtures/oracle/ops.json`: the three fused ops (dual-score attention, HIE, the RSA
contrastive loss) computed by PyTorch in float64, for `tests/op_oracle.rs` (issue 16: the CPU leg
of the op parity tests compared the crate's f32 reference with its own f64 reference, the same
code; here every device, the CPU included, is compared with PyTorch).

The ops are stated from the paper and `../shared/design/asif-spec.md` (HIE, spec §3.3, and RSA,
spec §3.4, are `asif_oracle.Model`'s, the statements the whole-model oracle uses; attention,
eqs. 3 to 5, is written below with `Model.mask`), not from the crate's Rust. Each case holds its
inputs (drawn from a fixed numpy seed and rounded to float32, so the crate's f32 inputs are exactly
the oracle's), the upstream gradients of its outputs (also float32 values), the outputs, and the
gradients of Σ_k ⟨upstream_k, output_k⟩ with respect to every input, in float64.

  python3 scripts/oracle/make_op_fixtures.py           # (re)write the fixture
  python3 scripts/oracle/make_op_fixtures.py --check   # regenerate and compare with the committed
                                                       # file (exit 1 on a change)

Needs the pinned packages of `requirements.txt` (CPU is enough).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from asif_oracle import Config, Model  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "oracle" / "ops.json"


def draw(rng, shape, spread=1.0):
    """Uniform in [-spread, spread), rounded to float32, as a float64 leaf that wants a gradient."""
    values = rng.uniform(-spread, spread, size=shape).astype(np.float32).astype(np.float64)
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def plain(t):
    return {"shape": list(t.shape), "data": [float(v) for v in t.detach().reshape(-1).tolist()]}


def attention(pairs, values, lengths, heads):
    """Spec §3.2 steps 3 and 4 (eqs. 3 to 5) for 1 to 3 score pairs:
    Π_X = softmax(Σ_k Q_k K_kᵀ/√d_h + M), O_X = Π_X V_1; with `values[1]`, Π_A = softmax(Q_1 K_1ᵀ/√d_h
    + M), O_A = Π_A V_2; with `values[2]`, Π_P = softmax(Q_2 K_2ᵀ/√d_h + M), O_P = Π_P V_3. M is the
    causal + padding mask of spec §1. Rows of padding queries (t ≥ L_b) are zero (the crate's
    documented choice, `padding_rows = "zero"` in the whole-model oracle)."""
    b, n, d = values[0].shape
    model = Model(Config(kind="asif", n=n, d=d, heads=heads, padding_rows="zero"), {})
    mask = model.mask(lengths)
    model.valid = (torch.arange(n).view(1, -1) < lengths.view(-1, 1)).to(torch.float64).unsqueeze(-1)
    scores = [model.heads(q) @ model.heads(k).transpose(-1, -2) for q, k in pairs]
    outputs = [model.attend(sum(scores), mask, values[0])]
    if len(values) > 1 and values[1] is not None:
        outputs.append(model.attend(scores[0], mask, values[1]))
    if len(values) > 2 and values[2] is not None:
        outputs.append(model.attend(scores[1], mask, values[2]))
    return outputs


def attention_case(name, seed, lengths, n, heads, head_dim, pairs, fused, position):
    rng = np.random.default_rng(seed)
    b, d = len(lengths), heads * head_dim
    lengths_t = torch.tensor(lengths)
    inputs = {}
    pair_tensors = []
    for k in range(pairs):
        q, key = draw(rng, (b, n, d)), draw(rng, (b, n, d))
        inputs[f"query{k}"], inputs[f"key{k}"] = q, key
        pair_tensors.append((q, key))
    values = [draw(rng, (b, n, d))]
    inputs["id_values"] = values[0]
    if fused:
        values.append(draw(rng, (b, n, d)))
        inputs["fused_values"] = values[-1]
    if position:
        values.append(draw(rng, (b, n, d)))
        inputs["position_values"] = values[-1]
    outputs = attention(pair_tensors, values, lengths_t, heads)
    names = ["id", "fused", "position"][: len(outputs)]
    if not fused and position:
        raise ValueError("the position output comes after the fused one in this fixture")
    upstream = {f"d_{o}": draw(rng, (b, n, d)).detach() for o in names}
    objective = sum((upstream[f"d_{o}"] * out).sum() for o, out in zip(names, outputs))
    objective.backward()
    return {
        "op": "attention",
        "name": name,
        "config": {"heads": heads, "seq_len": n, "pairs": pairs, "fused": fused, "position": position},
        "lengths": lengths,
        "inputs": {k: plain(v) for k, v in inputs.items()},
        "upstream": {k: plain(v) for k, v in upstream.items()},
        "outputs": {o: plain(out) for o, out in zip(names, outputs)},
        "gradients": {k: plain(v.grad) for k, v in inputs.items()},
    }


def hie_case(name, seed, lengths, n, d, r, full_qr):
    rng = np.random.default_rng(seed)
    b = len(lengths)
    h_x, h_a = draw(rng, (b, n, d)), draw(rng, (b, n, d))
    w_r = draw(rng, (n, r))
    model = Model(Config(kind="asif", n=n, d=d, hie_rank=r, hie_full_qr=full_qr), {})
    out = model.hie(h_x, h_a, torch.tensor(lengths), w_r)
    upstream = draw(rng, (b, n, d)).detach()
    (upstream * out).sum().backward()
    inputs = {"h_x": h_x, "h_a": h_a, "w_r": w_r}
    gradients = {"h_a": plain(h_a.grad)}
    if full_qr:
        gradients["h_x"] = plain(h_x.grad)
        gradients["w_r"] = plain(w_r.grad)
    return {
        "op": "hie",
        "name": name,
        "config": {"full_qr": full_qr},
        "lengths": lengths,
        "inputs": {k: plain(v) for k, v in inputs.items()},
        "upstream": {"d_out": plain(upstream)},
        "outputs": {"out": plain(out)},
        "gradients": gradients,
    }


def contrastive_case(name, seed, lengths, n, d, reduction, dedup):
    rng = np.random.default_rng(seed)
    b = len(lengths)
    x, a = draw(rng, (b, n, d)), draw(rng, (b, n, d))
    scale = torch.tensor([math.log(1 / 0.07)], dtype=torch.float32).to(torch.float64)
    scale.requires_grad_(True)
    # Groups: identical attribute sets share a group id (drawn from 3 values so some repeat).
    groups = torch.tensor(rng.integers(1, 4, size=(b, n)).astype(np.int64))
    model = Model(Config(kind="asif", n=n, d=d, rsa_reduction=reduction, rsa_dedup=dedup), {"logit_scale": scale})
    loss = model.contrastive(x, a, torch.tensor(lengths), groups)
    loss.backward()
    inputs = {"x": x, "a": a, "logit_scale": scale}
    return {
        "op": "contrastive",
        "name": name,
        "config": {"reduction": reduction, "dedup": dedup},
        "lengths": lengths,
        "groups": {"shape": [b, n], "data": [int(g) for g in groups.reshape(-1).tolist()]},
        "inputs": {k: plain(v) for k, v in inputs.items()},
        "upstream": {},
        "outputs": {"loss": plain(loss.reshape(1))},
        "gradients": {k: plain(v.grad) for k, v in inputs.items()},
    }


def build():
    torch.manual_seed(0)
    cases = [
        # ASIF: C_XA + C_P with O_A and O_P; lengths n, a middle one, 1 and 0.
        attention_case("attention_asif", 1, [7, 4, 1, 0], n=7, heads=2, head_dim=4, pairs=2, fused=True, position=True),
        # SASRec: one pair, odd head width and three heads.
        attention_case("attention_sasrec", 2, [5, 2, 5], n=5, heads=3, head_dim=3, pairs=1, fused=False, position=False),
        # w/o FA: three pairs summed, O_A only.
        attention_case("attention_three_pairs", 3, [6, 3], n=6, heads=2, head_dim=5, pairs=3, fused=True, position=False),
        # HIE with Q constant (A7 default) and through the full QR; L_b = 2 < r exercises the
        # rank guard (rank M_b ≤ L_b).
        hie_case("hie_q_constant", 4, [6, 4, 2], n=6, d=8, r=3, full_qr=False),
        hie_case("hie_full_qr", 5, [6, 5, 3], n=6, d=9, r=3, full_qr=True),
        # RSA: mean (A8) and sum (eq. 9 literal) reductions, with and without the dedup switch.
        contrastive_case("contrastive_mean", 6, [6, 3, 1], n=6, d=8, reduction="mean", dedup=False),
        contrastive_case("contrastive_sum_dedup", 7, [5, 5, 2], n=5, d=7, reduction="sum", dedup=True),
    ]
    return {
        "generator": "scripts/oracle/make_op_fixtures.py",
        "torch": torch.__version__,
        "cases": cases,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = json.dumps(build(), indent=1) + "\n"
    if args.check:
        committed = FIXTURE.read_text()
        if committed != text:
            print(f"{FIXTURE} differs from a fresh run", file=sys.stderr)
            sys.exit(1)
        print(f"{FIXTURE}: reproduced exactly")
        return
    FIXTURE.write_text(text)
    print(f"wrote {FIXTURE} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
