#!/usr/bin/env python3
"""The PyTorch peer of one whole training step (issue 20): what a user would run instead of ours.

One step = embeddings and attribute pooling, L layers, cross-entropy over all items, RSA, HIE,
Adam (torch.optim.Adam), for SASRec and ASIF, with the plain PyTorch model of
`scripts/oracle/asif_oracle.py` (imported, not restated). Two of the oracle's blocks are loops over
the sequences there (it is a statement of the model, not a fast one); here they are replaced by
batched equivalents, checked against the oracle's fixtures (`--check-fixture`):
  - HIE (spec §3.3, A6 padding rows zeroed, A7 Q a constant): Q of M_b = H_X,bᵀ W_r for all b at
    once, by CholeskyQR2 (`bench/peers/hie.py`'s `cholesky_qr`) or by batched `torch.linalg.qr`.
    The spec's rank guard zeros Q's columns with |R_kk| ≤ 1e-6·max|R_jj|. CholeskyQR's shift
    (1e-6·tr(MᵀM)/r) hides |R_kk| below about 1e-3·‖M‖, so the CholeskyQR2 rows drop a column when
    the first pass leaves it with squared norm ≤ 1/2 (an exactly dependent column, as every column
    past L_b when L_b < r, comes out of the first pass with norm ~1e-4; an independent one ~1):
    the same Q as the spec for exactly rank-deficient M, and a coarser guard (~1e-3 instead of
    1e-6) for nearly deficient ones.
  - RSA (spec §3.4, mean reduction, no dedup): the per-sequence L_b × L_b similarity as one
    masked B × n × n batch.
Rows (ASIF with HIE by CholeskyQR2): eager, torch.compile, AMP bf16, compile + AMP, and one eager
row with HIE by torch.linalg.qr; SASRec: eager and compile + AMP (its expected best row). The
compiled variants are few on purpose: compilation time comes out of the same GPU call.

What differs from the crate's step (`benches/train_step.rs`), so read the numbers with it: the
oracle models no dropout (ours runs hidden 0.5 / attention 0.3 dropout in training mode), which
favours the peer slightly.

    /work/venvs/e/bin/python bench/peers/train_step.py --tiny                # CPU, tiny, seconds
    python3 bench/peers/train_step.py                                        # CUDA, paper size
    /work/venvs/e/bin/python bench/peers/train_step.py --check-fixture       # parity, float64/32

Prints one table and writes `peers-train_step.json` under --out. `--check-fixture` runs the
peer's forward and backward on the weights and batch of `tests/fixtures/oracle/{asif,sasrec}.
safetensors` and compares its loss and every gradient with the fixture's (which the crate's
model matches in `tests/model_oracle.rs`) at that test's tolerance: loss within 2e-5 relative,
each gradient within ‖g − g_oracle‖ ≤ 2e-3·‖g_oracle‖ + 1e-6.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "scripts" / "oracle"))
import asif_oracle as oracle  # noqa: E402
from hie import cholesky_qr  # noqa: E402

# The paper's size (spec §6; benches/train_step.rs): B 2048, d 256, L 3, h 4, n 50, r 16, λ 10,
# ml-100k's 20 genres as the attribute (two tokens per item), 1,350 items (ml-100k) and 12,101
# (Beauty).
PAPER = dict(B=2048, d=256, layers=3, heads=4, n=50, r=16, genres=20, width=2, items=[1350, 12101])
# The CPU-sized setting of benches/train_step.rs (the train example's small size; r and λ at the
# spec's defaults as there), so the CPU rows of both sit side by side.
TINY = dict(B=128, d=32, layers=2, heads=2, n=20, r=16, genres=21, width=2, items=[2801])
LOSS_RELATIVE = 2e-5
GRADIENT_RELATIVE = 2e-3
GRADIENT_ABSOLUTE = 1e-6


def hie_q(m: torch.Tensor, qr: str) -> torch.Tensor:
    """Q of every M_b (B, d, r), its rank-guarded columns zeroed."""
    if qr == "linalg":
        q, r = torch.linalg.qr(m, mode="reduced")
        diag = torch.diagonal(r, dim1=-2, dim2=-1).abs()
        keep = diag > oracle.RANK_GUARD * diag.amax(-1, keepdim=True)
        return q * keep[:, None, :].to(q.dtype)
    q1, _ = cholesky_qr(m)
    keep = ((q1 * q1).sum(1) > 0.5)[:, None, :].to(q1.dtype)
    q, _ = cholesky_qr(q1 * keep)
    return q * keep


class PeerModel(oracle.Model):
    """The oracle's model with HIE and RSA batched over the sequences (see the module doc)."""

    def __init__(self, c, params, qr="cholesky_qr2"):
        super().__init__(c, params)
        self.qr = qr

    def hie(self, hx, ha, lengths, w_r):
        c = self.c
        if c.hie_keep_padding or c.hie_full_qr:
            return super().hie(hx, ha, lengths, w_r)  # the switches off the paper's defaults
        valid = (torch.arange(c.n, device=hx.device)[None, :] < lengths[:, None]).to(hx.dtype)
        x, a = hx * valid[:, :, None], ha * valid[:, :, None]
        with torch.no_grad(), torch.autocast(hx.device.type, enabled=False):
            m = x.transpose(1, 2) @ w_r.to(x.dtype)
            if m.dtype == torch.bfloat16:
                m = m.float()
            q = hie_q(m, self.qr).to(x.dtype)
        cx, ca = x @ q, a @ q
        phi = (cx * ca > 0).to(ca.dtype).detach()
        return (phi * ca) @ q.transpose(1, 2)

    def contrastive(self, x, a, lengths, groups):
        c = self.c
        if c.rsa_dedup:
            return super().contrastive(x, a, lengths, groups)
        kappa = torch.clamp(torch.exp(self.P["logit_scale"][0]), max=oracle.LOGIT_SCALE_MAX)
        xt = x / torch.clamp(x.norm(dim=-1, keepdim=True), min=1e-8)
        at = a / torch.clamp(a.norm(dim=-1, keepdim=True), min=1e-8)
        s = kappa * (xt @ at.transpose(1, 2))  # (B, n, n): S[b, t, u]
        valid = torch.arange(c.n, device=x.device)[None, :] < lengths[:, None]
        if s.dtype == torch.bfloat16:
            s = s.float()
        s = s.masked_fill(~(valid[:, :, None] & valid[:, None, :]), -1e9)  # pairs with u or t ≥ L_b
        ell_x = -torch.diagonal(torch.log_softmax(s, dim=2), dim1=1, dim2=2)  # row t over u
        ell_a = -torch.diagonal(torch.log_softmax(s, dim=1), dim1=1, dim2=2)  # column t over u
        per = ((ell_x + ell_a) * valid.to(ell_x.dtype)).sum(1)
        if c.rsa_reduction == "mean":
            per = per / (2 * lengths.to(per.dtype))
        else:
            per = per / 2
        return per.mean()


def config(kind: str, s: dict, items: int) -> oracle.Config:
    return oracle.Config(
        kind=kind, d=s["d"], heads=s["heads"], layers=s["layers"], n=s["n"], inner=s["d"],
        rsa_lambda=10.0, hie_rank=s["r"], attribute_vocab=[s["genres"]], n_items=items,
    )


def parameters(c: oracle.Config, device, generator) -> dict[str, torch.Tensor]:
    """RecBole-like initial weights (N(0, 0.02), LayerNorm 1/0, pad rows 0, W_r ~ N(0, 1))."""
    out = {}
    for name, shape in sorted(oracle.parameter_shapes(c).items()):
        if name.endswith("hie_bases"):
            w = torch.randn(shape, generator=generator)
        elif name == "logit_scale":
            w = torch.zeros(shape)
        elif "norm" in name:
            w = torch.ones(shape) if name.endswith(".weight") else torch.zeros(shape)
        elif name.endswith(".bias"):
            w = torch.zeros(shape)
        else:
            w = 0.02 * torch.randn(shape, generator=generator)
            if name.startswith(("item_embedding", "attribute_embedding")):
                w[0] = 0.0
        out[name] = w.to(device).requires_grad_(True)
    return out


def batch(s: dict, items: int, device, generator):
    """B sequences with lengths uniform in 1..n (left-aligned), item ids in 1..|V|-1, one genre
    token per item (and a 0 second slot), as `benches/train_step.rs` builds its batch."""
    B, n = s["B"], s["n"]
    lengths = torch.randint(1, n + 1, (B,), generator=generator)
    ids = torch.randint(1, items, (B, n), generator=generator)
    ids = ids * (torch.arange(n)[None, :] < lengths[:, None])
    genres = torch.zeros(B, n, s["width"], dtype=torch.long)
    genres[:, :, 0] = torch.where(ids > 0, 1 + ids % (s["genres"] - 1), 0)
    targets = torch.randint(1, items, (B,), generator=generator)
    return ids.to(device), lengths.to(device), targets.to(device), [genres.to(device)]


def make_step(c, params, qr, amp, compile_):
    """One training step on `params` (Adam, lr 1e-4 as the paper), eager or compiled, fp32 or AMP bf16."""
    optimizer = torch.optim.Adam(list(params.values()), lr=1e-4)
    device_type = next(iter(params.values())).device.type

    def loss_of(items, lengths, targets, attributes):
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            loss, _, _ = PeerModel(c, params, qr).loss(items, lengths, targets, attributes, None)
        return loss

    forward = torch.compile(loss_of, dynamic=False) if compile_ else loss_of

    def step(items, lengths, targets, attributes):
        optimizer.zero_grad(set_to_none=True)
        loss = forward(items, lengths, targets, attributes)
        loss.backward()
        optimizer.step()
        return loss

    return step


def median_ms(step, inputs, runs, device):
    """Median ms per step after two warm-up steps (the compile happens there); CUDA events on the
    GPU, perf_counter on the CPU."""
    for _ in range(2):
        step(*inputs)
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(*inputs)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step(*inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


ROWS = [
    # (model kind, row name, HIE's QR, AMP bf16, torch.compile)
    ("asif", "eager", "cholesky_qr2", False, False),
    ("asif", "torch.compile", "cholesky_qr2", False, True),
    ("asif", "AMP bf16", "cholesky_qr2", True, False),
    ("asif", "compile + AMP bf16", "cholesky_qr2", True, True),
    ("asif", "eager, HIE by torch.linalg.qr", "linalg", False, False),
    ("sasrec", "eager", None, False, False),
    ("sasrec", "compile + AMP bf16", None, True, True),
]


def write_json(args, s, rows):
    os.makedirs(args.out, exist_ok=True)
    meta = dict(
        torch=torch.__version__, cuda=torch.version.cuda,
        device=torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        sizes={k: v for k, v in s.items() if k != "items"}, runs=args.runs,
        note="no dropout in the peer (the oracle models none); ours trains with dropout",
    )
    path = os.path.join(args.out, "peers-train_step.json")
    with open(path, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    return path


def run_rows(args):
    device = args.device
    s = TINY if args.tiny else PAPER
    items_list = [int(v) for v in args.items.split(",")] if args.items else s["items"]
    rows = []
    print(f"{'model':7s} {'|V|':>6s} {'row':32s} {'ms/step':>10s} {'samples/s':>11s}  note", flush=True)
    for items in items_list:
        for kind, name, qr, amp, compile_ in ROWS:
            if compile_ and args.no_compile:
                continue
            generator = torch.Generator().manual_seed(7)
            c = config(kind, s, items)
            row = dict(model=kind, items=items, row=name, B=s["B"], d=s["d"], layers=s["layers"],
                       n=s["n"], heads=s["heads"], r=s["r"], device=device)
            try:
                params = parameters(c, device, generator)
                inputs = batch(s, items, device, generator)
                ms = median_ms(make_step(c, params, qr or "cholesky_qr2", amp, compile_), inputs, args.runs, device)
                row.update(ms_per_step=ms, samples_per_s=s["B"] / (ms / 1e3), note="")
                print(f"{kind:7s} {items:6d} {name:32s} {ms:10.3f} {row['samples_per_s']:11.1f}", flush=True)
            except Exception as error:  # noqa: BLE001 - a failing row is a result too
                message = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
                row.update(ms_per_step=None, samples_per_s=None, note=message)
                print(f"{kind:7s} {items:6d} {name:32s}     FAILED {message}", flush=True)
            rows.append(row)
            write_json(args, s, rows)  # after every row: a run cut short keeps what it measured
            if device == "cuda":
                torch.cuda.empty_cache()
    for items in items_list:
        for kind in ("asif", "sasrec"):
            timed = [r for r in rows if r["model"] == kind and r["items"] == items and r["ms_per_step"]]
            if timed:
                best = min(timed, key=lambda r: r["ms_per_step"])
                print(f"best {kind} row at |V| {items}: {best['row']} {best['ms_per_step']:.3f} ms/step")
    print(f"wrote {write_json(args, s, rows)}")


def check_fixture(args) -> int:
    """The peer's loss and gradients on the oracle fixtures' weights and batches (see the doc)."""
    from safetensors import safe_open

    failures = 0
    lines = []
    for case in ("asif", "sasrec"):
        path = ROOT / "tests" / "fixtures" / "oracle" / f"{case}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["oracle_config"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        c = oracle.Config(
            kind=meta["kind"], fusion=meta["fusion"], d=meta["hidden_size"], heads=meta["heads"],
            layers=meta["layers"], n=meta["max_len"], inner=meta["inner_size"],
            rsa_lambda=meta["rsa_lambda"], rsa_reduction=meta["rsa_reduction"],
            rsa_dedup=meta["rsa_dedup"], hie_rank=meta["hie_rank"],
            hie_keep_padding=meta["hie_keep_padding"], hie_full_qr=meta["hie_full_qr"],
            eps=meta["layer_norm_eps"], pooling=meta["pooling"],
            attribute_vocab=meta["attribute_vocab"], n_items=meta["n_item_ids"],
        )
        names = sorted(oracle.parameter_shapes(c))
        items = tensors["batch.items"].long()
        lengths = tensors["batch.lengths"].long()
        targets = tensors["batch.targets"].long()
        attributes = [tensors[f"batch.attributes.{j}"].long() for j in range(len(c.attribute_vocab))]
        want_loss = float(tensors["expected.loss"][0])
        qrs = ["cholesky_qr2", "linalg"] if c.hie else ["-"]
        for dtype in (torch.float64, torch.float32):
            for qr in qrs:
                params = {k: tensors[k].to(dtype).clone().requires_grad_(True) for k in names}
                loss, _, _ = PeerModel(c, params, qr).loss(items, lengths, targets, attributes, None)
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                loss_error = abs(loss.item() - want_loss) / abs(want_loss)
                worst, worst_name = 0.0, ""
                bad = []
                for name, g in zip(names, grads):
                    want = tensors[f"expected.grad.{name}"].double()
                    g = torch.zeros_like(want) if g is None else g.double()
                    error = (g - want).norm().item()
                    scale = want.norm().item()
                    used = error / (GRADIENT_RELATIVE * scale + GRADIENT_ABSOLUTE)
                    if used > worst:
                        worst, worst_name = used, name
                    if error > GRADIENT_RELATIVE * scale + GRADIENT_ABSOLUTE:
                        bad.append(name)
                ok = loss_error <= LOSS_RELATIVE and not bad
                failures += not ok
                line = (f"{case:7s} {str(dtype).replace('torch.', ''):8s} HIE {qr:13s} loss {loss.item():.10f} "
                        f"(fixture {want_loss:.10f}, rel. error {loss_error:.2e}); {len(names)} gradients, "
                        f"worst {worst:.1%} of its tolerance ({worst_name}){'' if ok else ' FAIL: ' + ', '.join(bad)}")
                print(line, flush=True)
                lines.append(line)
    verdict = "all within tolerance" if not failures else f"{failures} case(s) out of tolerance"
    print(f"peer against the oracle fixtures: {verdict} (loss 2e-5 relative, gradients 2e-3·‖g‖ + 1e-6)")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ap.add_argument("--tiny", action="store_true", help="the CPU-sized setting (default on the CPU)")
    ap.add_argument("--dry-run", action="store_true", help="= --device cpu --tiny --runs 2")
    ap.add_argument("--items", default=None, help="comma-separated |V| values (default: 1350,12101 at paper size)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--check-fixture", action="store_true", help="parity with the oracle fixtures, then exit")
    args = ap.parse_args()
    if args.check_fixture:
        sys.exit(check_fixture(args))
    if args.dry_run:
        args.device, args.tiny, args.runs = "cpu", True, 2
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu":
        args.tiny = True
    run_rows(args)


if __name__ == "__main__":
    main()
