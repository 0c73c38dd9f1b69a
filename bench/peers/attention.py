"""PyTorch peers of the fused dual-score attention (eqs. 1-5): what a user would run instead.

Rows: eager (RecBole-style: split heads, matmul, additive mask, three softmaxes, three matmuls),
torch.compile of it, and three scaled_dot_product_attention calls (the S1+S2 softmax is one SDPA
call with Q=[Q1|Q2], K=[K1|K2] at head dim 2*d_h and scale 1/sqrt(d_h)) in fp32 with TF32 off and
on, and in bf16. Full length (all 50 valid) and short realistic lengths; forward and forward+backward.
"""
import math

import torch
import torch.nn.functional as F

from common import Results, additive_mask, causal_padding_mask, forward_backward, leaf, lengths, maybe_compile, parse_args, time_call


def split_heads(x, h):
    B, n, d = x.shape
    return x.view(B, n, h, d // h).permute(0, 2, 1, 3)


def merge_heads(x):
    B, h, n, dh = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, n, h * dh)


def make_eager(h):
    def eager(q1, k1, q2, k2, v1, v2, v3, mask):
        q1, k1, q2, k2, v1, v2, v3 = (split_heads(t, h) for t in (q1, k1, q2, k2, v1, v2, v3))
        scale = 1.0 / math.sqrt(q1.shape[-1])
        s1 = torch.matmul(q1, k1.transpose(-1, -2))
        s2 = torch.matmul(q2, k2.transpose(-1, -2))
        p_x = torch.softmax((s1 + s2) * scale + mask, dim=-1)
        p_a = torch.softmax(s1 * scale + mask, dim=-1)
        p_p = torch.softmax(s2 * scale + mask, dim=-1)
        return merge_heads(p_x @ v1), merge_heads(p_a @ v2), merge_heads(p_p @ v3)

    return eager


def make_sdpa(h):
    def sdpa(q1, k1, q2, k2, v1, v2, v3, mask):
        q1, k1, q2, k2, v1, v2, v3 = (split_heads(t, h) for t in (q1, k1, q2, k2, v1, v2, v3))
        scale = 1.0 / math.sqrt(q1.shape[-1])
        o_x = F.scaled_dot_product_attention(torch.cat([q1, q2], -1), torch.cat([k1, k2], -1), v1, attn_mask=mask, scale=scale)
        o_a = F.scaled_dot_product_attention(q1, k1, v2, attn_mask=mask, scale=scale)
        o_p = F.scaled_dot_product_attention(q2, k2, v3, attn_mask=mask, scale=scale)
        return merge_heads(o_x), merge_heads(o_a), merge_heads(o_p)

    return sdpa


def main():
    args = parse_args(__doc__)
    B, n, d, h = (args.sizes[k] for k in ("B", "n", "d", "h"))
    results = Results("attention", args)
    generator = torch.Generator().manual_seed(0)
    for lengths_mode in ("full", "short"):
        L = lengths(B, n, lengths_mode, generator)
        bool_mask = causal_padding_mask(L, n, args.device)
        sets = []
        for _ in range(3 if args.device == "cuda" else 1):
            tensors = [torch.randn(B, n, d, device=args.device) for _ in range(7)]
            sets.append(tensors)

        def with_mask(tensors, mask, dtype=torch.float32, grad=False):
            ts = [t.to(dtype) for t in tensors]
            if grad:
                ts = [leaf(t) for t in ts]
            return ts + [mask]

        eager = make_eager(h)
        sdpa = make_sdpa(h)
        add_mask = additive_mask(bool_mask)
        for pass_name, grad in (("forward", False), ("forward+backward", True)):
            wrap = forward_backward if grad else (lambda f: f)
            for peer, fn, mask, dtype, tf32 in (
                ("eager fp32", eager, add_mask, torch.float32, False),
                ("sdpa fp32 tf32-off", sdpa, bool_mask, torch.float32, False),
                ("sdpa fp32 tf32-on", sdpa, bool_mask, torch.float32, True),
                ("sdpa bf16", sdpa, bool_mask, torch.bfloat16, False),
            ):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                inputs = [with_mask(s, mask, dtype, grad) for s in sets]
                context = torch.no_grad() if not grad else torch.enable_grad()
                with context:
                    results.attempt(peer, lengths_mode, pass_name, lambda: time_call(wrap(fn), inputs, args.runs, args.device))
            torch.backends.cuda.matmul.allow_tf32 = False
            inputs = [with_mask(s, add_mask, torch.float32, grad) for s in sets]
            with torch.no_grad() if not grad else torch.enable_grad():
                results.attempt("compiled eager fp32", lengths_mode, pass_name, lambda: time_call(wrap(maybe_compile(eager, args)), inputs, args.runs, args.device))
    results.write()


if __name__ == "__main__":
    main()
