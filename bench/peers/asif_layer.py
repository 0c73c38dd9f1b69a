"""Eager PyTorch version of one whole ASIF layer (spec section 3.2), forward and backward, at the
paper's sizes: the end-to-end comparison for our layer.

Per layer: seven projections (q1, k1 from the fused stream F; q2, k2 from the position stream P;
v1 from the ID stream X, v2 from F, v3 from P), the dual-score attention with three masked
softmaxes (eqs. 3-5), three output projections with dropout, residual and LayerNorm, HIE on
(H_X, H_A) after the sublayer LN (A4) with padding rows zeroed (A6) and Q as a constant (A7), and
three position-wise FFNs. Training mode: hidden dropout 0.5, attention dropout 0.3.

Two rows: "eager layer" takes HIE's Q from torch.linalg.qr (what a user would write), "eager layer,
CholeskyQR2" from hie.py's CholeskyQR2 peer (batched matmuls, the fast PyTorch QR at this size;
a speed peer, not a correct rank-deficient QR). The first H200 run showed linalg.qr taking about
93 of the eager layer's 117 ms forward, so the second row is the fair end-to-end comparison.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import additive_mask, causal_padding_mask, lengths, parse_args, Results, time_call
from hie import cholesky_qr, rank_guard


class FeedForward(nn.Module):
    def __init__(self, d, inner, dropout):
        super().__init__()
        self.w1, self.w2 = nn.Linear(d, inner), nn.Linear(inner, d)
        self.norm, self.dropout = nn.LayerNorm(d, eps=1e-12), nn.Dropout(dropout)

    def forward(self, x):
        return self.norm(self.dropout(self.w2(F.gelu(self.w1(x)))) + x)


class ASIFLayer(nn.Module):
    def __init__(self, n, d, h, r, qr="linalg", inner=256, hidden_dropout=0.5, attn_dropout=0.3):
        super().__init__()
        self.h, self.qr = h, qr
        self.proj = nn.ModuleDict({k: nn.Linear(d, d) for k in ("q1", "k1", "q2", "k2", "v1", "v2", "v3")})
        self.out = nn.ModuleList(nn.Linear(d, d) for _ in range(3))
        self.norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-12) for _ in range(3))
        self.ffn = nn.ModuleList(FeedForward(d, inner, hidden_dropout) for _ in range(3))
        self.hidden_dropout, self.attn_dropout = nn.Dropout(hidden_dropout), nn.Dropout(attn_dropout)
        self.register_buffer("w_r", torch.randn(n, r))

    def heads(self, x):
        B, n, d = x.shape
        return x.view(B, n, self.h, d // self.h).permute(0, 2, 1, 3)

    def merge(self, x):
        B, h, n, dh = x.shape
        return x.permute(0, 2, 1, 3).reshape(B, n, h * dh)

    def hie(self, hx, ha, L):
        valid = (torch.arange(hx.shape[1], device=hx.device)[None, :] < L[:, None]).to(hx.dtype)[:, :, None]
        hx_m, ha_m = hx * valid, ha * valid
        with torch.no_grad():
            m = hx_m.transpose(1, 2) @ self.w_r
            if self.qr == "linalg":
                q, r = torch.linalg.qr(m)
            else:  # CholeskyQR2
                q1, r1 = cholesky_qr(m)
                q, r2 = cholesky_qr(q1)
                r = r2 @ r1
            q = rank_guard(q, torch.diagonal(r, dim1=-2, dim2=-1))
        c_x, c_a = hx_m @ q, ha_m @ q
        return ((c_x * c_a > 0).to(c_a.dtype) * c_a) @ q.transpose(1, 2)

    def forward(self, x, f, p, mask, L):
        p = p.expand(x.shape[0], -1, -1)
        q1, k1 = self.heads(self.proj["q1"](f)), self.heads(self.proj["k1"](f))
        q2, k2 = self.heads(self.proj["q2"](p)), self.heads(self.proj["k2"](p))
        v1, v2, v3 = (self.heads(self.proj[k](s)) for k, s in (("v1", x), ("v2", f), ("v3", p)))
        scale = 1.0 / math.sqrt(q1.shape[-1])
        c_xa, c_p = q1 @ k1.transpose(-1, -2), q2 @ k2.transpose(-1, -2)
        pis = [self.attn_dropout(torch.softmax(s * scale + mask, -1)) for s in (c_xa + c_p, c_xa, c_p)]
        outs = [self.merge(pi @ v) for pi, v in zip(pis, (v1, v2, v3))]
        h_x, h_a, h_p = (norm(self.hidden_dropout(out(o)) + res) for norm, out, o, res in zip(self.norms, self.out, outs, (x, f, p)))
        h_x = h_x + self.hie(h_x, h_a, L)
        return tuple(ffn(s) for ffn, s in zip(self.ffn, (h_x, h_a, h_p)))


def main():
    args = parse_args(__doc__)
    B, n, d, h, r = (args.sizes[k] for k in ("B", "n", "d", "h", "r"))
    results = Results("asif_layer", args)
    torch.backends.cuda.matmul.allow_tf32 = False
    layers = {name: ASIFLayer(n, d, h, r, qr).to(args.device).train() for name, qr in (("eager layer", "linalg"), ("eager layer, CholeskyQR2", "cholesky"))}
    generator = torch.Generator().manual_seed(3)
    for lengths_mode in ("full", "short"):
        L = lengths(B, n, lengths_mode, generator).to(args.device)
        mask = additive_mask(causal_padding_mask(L, n, args.device))
        sets = [
            (torch.randn(B, n, d, device=args.device, requires_grad=True), torch.randn(B, n, d, device=args.device, requires_grad=True), torch.randn(1, n, d, device=args.device, requires_grad=True), mask, L)
            for _ in range(2 if args.device == "cuda" else 1)
        ]

        for name, layer in layers.items():

            def step(*inputs, layer=layer):
                outputs = layer(*inputs)
                sum(o.square().mean() for o in outputs).backward()

            def forward_only(*inputs, layer=layer):
                with torch.no_grad():
                    layer(*inputs)

            results.attempt(name, lengths_mode, "forward", lambda: time_call(forward_only, sets, args.runs, args.device))
            results.attempt(name, lengths_mode, "forward+backward", lambda: time_call(step, sets, args.runs, args.device))
    results.write()


if __name__ == "__main__":
    main()
