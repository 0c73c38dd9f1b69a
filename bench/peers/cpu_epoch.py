#!/usr/bin/env python3
"""The PyTorch peer of one CPU training epoch (issue 23): SASRec or ASIF on a RecBole dataset,
with the plain PyTorch model of `scripts/oracle/asif_oracle.py` (imported, not restated) and a
training loop written here, at the same setting and on the same leave-one-out training samples as
`cargo run --release --example train`. PyTorch's default threads (`torch.get_num_threads()`).

    /work/venvs/e/bin/python bench/peers/cpu_epoch.py --model sasrec --max-batches 20

Prints one JSON object: samples, seconds, samples/s, s/epoch extrapolated from samples/s (labelled
so), peak RSS, threads. Dropout as the crate's run (`--hidden-dropout`, `--attention-dropout`,
0.5/0.5 by default, the issue's setting): the oracle model has none, so `DropoutModel` below adds
it at the crate's sites (after the input LN of X and of F, on the attention probabilities, on each
sublayer's output projection and on each FFN's second linear, before the residual and LN). What
still differs from the crate's run, so read the numbers with it:
  - the attention-dropout mask is drawn per softmax here; the crate's ASIF shares one mask among
    Π_X, Π_A and Π_P;
  - the oracle is written in float64 with explicit float64 constants; `--dtype float32` (the
    default) runs it in float32 by giving its module a `torch` whose `float64` is float32, so the
    arithmetic is the crate's precision;
  - HIE and the contrastive loss are Python loops over the sequences, as the oracle states them.
Training samples: RecBole's leave-one-out without k-core: per user, in time order, every prefix of
the sequence but its last two items predicts the next item (n most recent items, left-aligned).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import resource
import sys
import time
import types

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "oracle"))
import asif_oracle  # noqa: E402
from asif_oracle import Config, Model, parameter_shapes  # noqa: E402


def use_dtype(dtype: torch.dtype) -> None:
    """The oracle's `torch.float64` constants become `dtype` (its module sees this `torch`)."""
    if dtype == torch.float64:
        return

    class Torch(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

    shim = Torch("torch")
    shim.float64 = dtype
    asif_oracle.torch = shim


# The linear layers whose outputs the crate drops before the residual and LN (spec §2, §3.2).
HIDDEN_DROPOUT_AFTER = (".output", ".output_id", ".output_fused", ".output_position", ".dense2")
# The layer norms whose outputs the crate drops: X⁰ = Drop(LN(..)) and F⁰ = Drop(LN(..)).
HIDDEN_DROPOUT_AFTER_NORM = ("input_norm", "fused_input_norm")


class DropoutModel(Model):
    """The oracle model with the crate's training dropout (inverted dropout, PyTorch's RNG)."""

    def __init__(self, c: Config, params, hidden: float, attention: float):
        super().__init__(c, params)
        self.hidden = hidden
        self.attention = attention

    def lin(self, x, name):
        y = super().lin(x, name)
        if name.endswith(HIDDEN_DROPOUT_AFTER):
            y = torch.nn.functional.dropout(y, self.hidden, training=True)
        return y

    def ln(self, x, name):
        y = super().ln(x, name)
        if name in HIDDEN_DROPOUT_AFTER_NORM:
            y = torch.nn.functional.dropout(y, self.hidden, training=True)
        return y

    def attend(self, score_sum, mask, v):
        # The oracle's attend with dropout on the probabilities Π.
        dh = self.c.d // self.c.heads
        pi = torch.softmax(score_sum / math.sqrt(dh) + mask, dim=-1)
        pi = torch.nn.functional.dropout(pi, self.attention, training=True)
        out = self.merge(pi @ self.heads(v))
        if self.c.padding_rows == "zero":
            out = out * self.valid
        return out


def read_atomic(path: pathlib.Path):
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0] for h in header]
        for line in f:
            yield dict(zip(names, line.rstrip("\n").split("\t")))


def load(data_dir: pathlib.Path, dataset: str, attribute: str):
    """Users' item sequences in time order (ties by file order) with item ids 1.. in order of first
    appearance in the .inter file, and each item's attribute tokens (ids 1.., 0 = none)."""
    by_user: dict[str, list[tuple[float, int, str]]] = {}
    item_ids: dict[str, int] = {}
    for k, row in enumerate(read_atomic(data_dir / f"{dataset}.inter")):
        item = row["item_id"]
        item_ids.setdefault(item, len(item_ids) + 1)
        by_user.setdefault(row["user_id"], []).append((float(row["timestamp"]), k, item))
    sequences = [[item_ids[i] for _, _, i in sorted(v)] for v in by_user.values()]
    tokens: dict[int, list[int]] = {}
    vocab: dict[str, int] = {}
    item_file = data_dir / f"{dataset}.item"
    if item_file.exists():
        for row in read_atomic(item_file):
            if row["item_id"] in item_ids and attribute in row:
                ids = [vocab.setdefault(t, len(vocab) + 1) for t in row[attribute].split()]
                tokens[item_ids[row["item_id"]]] = ids
    return sequences, len(item_ids) + 1, tokens, len(vocab) + 1


def training_samples(sequences, n):
    samples = []
    for s in sequences:
        for t in range(1, len(s) - 2):
            samples.append((s[max(0, t - n) : t], s[t]))
    return samples


def batch_tensors(batch, n, tokens, width, with_attributes):
    b = len(batch)
    items = np.zeros((b, n), dtype=np.int64)
    lengths = np.zeros(b, dtype=np.int64)
    targets = np.zeros(b, dtype=np.int64)
    attributes = np.zeros((b, n, width), dtype=np.int64)
    for r, (history, target) in enumerate(batch):
        items[r, : len(history)] = history
        lengths[r] = len(history)
        targets[r] = target
        if with_attributes:
            for t, item in enumerate(history):
                row = tokens.get(item, [])[:width]
                attributes[r, t, : len(row)] = row
    attrs = [torch.from_numpy(attributes)] if with_attributes else []
    return torch.from_numpy(items), torch.from_numpy(lengths), torch.from_numpy(targets), attrs


def init_parameters(config: Config, dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in parameter_shapes(config).items():
        if name.endswith("norm.weight") or name.endswith("_norm.weight"):
            value = torch.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            value = torch.zeros(shape, dtype=dtype)
        elif name == "logit_scale":
            value = torch.full(shape, math.log(1 / 0.07), dtype=dtype)
        else:
            value = torch.randn(shape, generator=g, dtype=dtype) * 0.02
        params[name] = value.requires_grad_(True)
    return params


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "ml-100k"))
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--attribute", default="class")
    ap.add_argument("--model", default="sasrec", choices=["sasrec", "asif"])
    ap.add_argument("--hidden-size", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--inner-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--hie-rank", type=int, default=16)
    ap.add_argument("--rsa-lambda", type=float, default=10.0)
    ap.add_argument("--attribute-width", type=int, default=8)
    ap.add_argument("--hidden-dropout", type=float, default=0.5)
    ap.add_argument("--attention-dropout", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-batches", type=int, default=None, help="train on at most N batches")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()

    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    use_dtype(dtype)
    sequences, n_items, tokens, vocab = load(pathlib.Path(args.data_dir), args.dataset, args.attribute)
    samples = training_samples(sequences, args.max_len)
    with_attributes = args.model != "sasrec"
    config = Config(
        kind=args.model,
        d=args.hidden_size,
        heads=args.heads,
        layers=args.layers,
        n=args.max_len,
        inner=args.inner_size,
        rsa_lambda=args.rsa_lambda,
        hie_rank=args.hie_rank,
        attribute_vocab=[vocab] if with_attributes else [],
        n_items=n_items,
    )
    params = init_parameters(config, dtype, args.seed)
    torch.manual_seed(args.seed)
    model = DropoutModel(config, params, args.hidden_dropout, args.attention_dropout)
    optimiser = torch.optim.Adam(list(params.values()), lr=args.lr)
    order = np.random.default_rng(args.seed).permutation(len(samples))
    n_batches = math.ceil(len(samples) / args.batch_size)
    run_batches = n_batches if args.max_batches is None else min(n_batches, args.max_batches)

    done = 0
    started = time.perf_counter()
    for k in range(run_batches):
        batch = [samples[i] for i in order[k * args.batch_size : (k + 1) * args.batch_size]]
        items, lengths, targets, attributes = batch_tensors(
            batch, args.max_len, tokens, args.attribute_width, with_attributes
        )
        optimiser.zero_grad(set_to_none=True)
        loss, _, _ = model.loss(items, lengths, targets, attributes, None)
        loss.backward()
        optimiser.step()
        done += len(batch)
    seconds = time.perf_counter() - started
    rate = done / seconds
    print(
        json.dumps(
            {
                "system": "pytorch",
                "torch": torch.__version__,
                "model": args.model,
                "dtype": args.dtype,
                "threads": torch.get_num_threads(),
                "hidden_dropout": args.hidden_dropout,
                "attention_dropout": args.attention_dropout,
                "batches": run_batches,
                "samples": done,
                "seconds": seconds,
                "samples_per_second": rate,
                "epoch_samples": len(samples),
                "epoch_seconds_extrapolated": len(samples) / rate,
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "last_loss": float(loss),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
