"""PyTorch peers of the RSA contrastive loss (eqs. 6-9): normalize, bmm, masked cross-entropy in
both directions with identity targets over valid positions, mean per sequence (spec A8), logit
scale exp(s) clamped at 100. Eager and compiled; the loss's forward and forward+backward.
"""
import math

import torch
import torch.nn.functional as F

from common import Results, leaf, lengths, maybe_compile, parse_args, time_call


def contrastive_loss(x, a, s, L):
    B, n, _ = x.shape
    x_n = F.normalize(x, dim=-1, eps=1e-8)
    a_n = F.normalize(a, dim=-1, eps=1e-8)
    kappa = s.exp().clamp(max=100.0)
    logits = kappa * torch.bmm(x_n, a_n.transpose(1, 2))  # (B, n, n)
    positions = torch.arange(n, device=x.device)
    valid = positions[None, :] < L[:, None]  # (B, n)
    pair_valid = valid[:, :, None] & valid[:, None, :]
    logits = logits.masked_fill(~pair_valid, float("-inf"))
    diagonal = torch.diagonal(logits, dim1=1, dim2=2)
    loss_x = torch.logsumexp(logits, dim=2) - diagonal  # row t: softmax over u
    loss_a = torch.logsumexp(logits, dim=1) - diagonal  # column t: softmax over u
    per_position = torch.where(valid, loss_x + loss_a, torch.zeros_like(loss_x))
    per_sequence = per_position.sum(1) / (2 * L.clamp_min(1))
    return per_sequence.mean()


def main():
    args = parse_args(__doc__)
    B, n, d = (args.sizes[k] for k in ("B", "n", "d"))
    results = Results("contrastive", args)
    generator = torch.Generator().manual_seed(2)
    for lengths_mode in ("full", "short"):
        L = lengths(B, n, lengths_mode, generator).to(args.device)
        sets = [(torch.randn(B, n, d, device=args.device), torch.randn(B, n, d, device=args.device)) for _ in range(3 if args.device == "cuda" else 1)]
        s = torch.tensor(math.log(1 / 0.07), device=args.device)
        for pass_name, grad in (("forward", False), ("forward+backward", True)):
            inputs = [((leaf(x), leaf(a), leaf(s)) if grad else (x, a, s)) + (L,) for x, a in sets]

            def run(fn):
                def call(*ins):
                    loss = fn(*ins)
                    if grad:
                        loss.backward()

                return call

            with torch.enable_grad() if grad else torch.no_grad():
                results.attempt("eager", lengths_mode, pass_name, lambda: time_call(run(contrastive_loss), inputs, args.runs, args.device))
                results.attempt("compiled", lengths_mode, pass_name, lambda: time_call(run(maybe_compile(contrastive_loss, args)), inputs, args.runs, args.device))
    results.write()


if __name__ == "__main__":
    main()
