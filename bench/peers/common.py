"""Shared by the PyTorch peers: sizes, lengths, masks, timing, results.

Run on the GPU machine by scripts/gpu-check.sh (PyTorch there; nothing to install). On a machine
without a GPU the same code runs on the CPU at small sizes (--dry-run), so the scripts cannot rot.
"""
import argparse
import json
import math
import os
import statistics
import time

import torch

# Paper sizes (perf-floors.md).
PAPER = dict(B=2048, n=50, d=256, h=4, r=16)
# CPU dry run: same code, small enough to finish in seconds.
DRY = dict(B=8, n=12, d=32, h=4, r=4)


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dry-run", action="store_true", help="CPU, small sizes, 2 runs")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for the JSON results")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile peers")
    args = parser.parse_args()
    args.device = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
    args.sizes = DRY if args.device == "cpu" else PAPER
    if args.device == "cpu":
        args.runs = min(args.runs, 2)
    return args


def lengths(B, n, mode, generator):
    """Sequence lengths L_b: 'full' = all n valid; 'short' = realistic, mean about 8 (the paper's
    datasets average 8.5 to 10.4 actions per user): geometric, clipped to [1, n]."""
    if mode == "full":
        return torch.full((B,), n, dtype=torch.long)
    p = 1.0 / 8.0
    u = torch.rand(B, generator=generator).clamp_min(1e-12)
    geometric = torch.ceil(torch.log(u) / math.log(1.0 - p)).long()
    return geometric.clamp(1, n)


def causal_padding_mask(L, n, device):
    """Boolean (B, 1, n, n): key j visible to query i iff j <= i and j < L_b."""
    i = torch.arange(n, device=device)
    causal = i[None, :] <= i[:, None]
    valid = i[None, :] < L.to(device)[:, None]
    return (causal[None] & valid[:, None, :])[:, None]


def additive_mask(bool_mask):
    """RecBole's additive mask: 0 where visible, -10000 elsewhere."""
    return (~bool_mask).float() * -10000.0


def time_call(fn, input_sets, runs, device):
    """Median milliseconds of fn(*inputs), cycling through input sets so the L2 cache does not hold
    everything; CUDA events after a warm-up on the GPU, perf_counter on the CPU."""
    for inputs in input_sets:
        fn(*inputs)
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for k in range(runs):
        inputs = input_sets[k % len(input_sets)]
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*inputs)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(*inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class Results:
    def __init__(self, kernel, args):
        self.kernel = kernel
        self.args = args
        self.rows = []

    def add(self, peer, lengths_mode, pass_, median_ms, note=""):
        row = dict(kernel=self.kernel, peer=peer, lengths=lengths_mode, passes=pass_, median_ms=median_ms, note=note)
        self.rows.append(row)
        print(f"{self.kernel:12s} {peer:34s} {lengths_mode:5s} {pass_:16s} {median_ms:10.3f} ms {note}", flush=True)

    def attempt(self, peer, lengths_mode, pass_, thunk):
        """Runs one measurement; a failing peer is recorded, not fatal."""
        try:
            self.add(peer, lengths_mode, pass_, thunk())
        except Exception as error:  # noqa: BLE001 - a peer that fails is a result too
            message = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            self.rows.append(dict(kernel=self.kernel, peer=peer, lengths=lengths_mode, passes=pass_, median_ms=None, note=message))
            print(f"{self.kernel:12s} {peer:34s} {lengths_mode:5s} {pass_:16s}     FAILED {message}", flush=True)

    def write(self):
        os.makedirs(self.args.out, exist_ok=True)
        meta = dict(
            torch=torch.__version__,
            cuda=torch.version.cuda,
            device=torch.cuda.get_device_name(0) if self.args.device == "cuda" else "cpu",
            tf32_matmul_default=torch.backends.cuda.matmul.allow_tf32,
            sizes=self.args.sizes,
            runs=self.args.runs,
        )
        path = os.path.join(self.args.out, f"peers-{self.kernel}.json")
        with open(path, "w") as f:
            json.dump(dict(meta=meta, rows=self.rows), f, indent=1)
        print(f"wrote {path}")


def forward_backward(fn):
    """Times forward plus backward: the outputs are reduced against fixed random weights so every
    element gets a gradient."""

    def run(*inputs):
        outputs = fn(*inputs)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        total = sum((o * o.detach().sign()).sum() for o in outputs)
        total.backward()

    return run


def leaf(t):
    return t.detach().requires_grad_(True)


def maybe_compile(fn, args):
    if args.no_compile:
        raise RuntimeError("torch.compile peers disabled (--no-compile)")
    return torch.compile(fn, dynamic=False)
