"""PyTorch peers of HIE (eqs. 10-13): thin QR of M_b = H_X^T W_r per sequence, then the sign-masked
projection h_A* = (1[C_X * C_A > 0] * C_A) Q^T with C_X = H_X Q, C_A = H_A Q.

Rows: torch.linalg.qr + projection; geqrf + householder_product alone (the QR only); CholeskyQR2
with batched matmuls + projection, eager and compiled. Padding rows (t >= L_b) are zeroed first
(spec A6). Cholesky of a rank-deficient Gram matrix (L_b < r, the common case) fails, so the
CholeskyQR2 peer uses a shifted Gram matrix G + 1e-6 tr(G)/r I; it is a speed peer, not a correct
rank-deficient QR.
"""
import torch

from common import Results, forward_backward, leaf, lengths, maybe_compile, parse_args, time_call


def masked(h, L):
    n = h.shape[1]
    valid = (torch.arange(n, device=h.device)[None, :] < L.to(h.device)[:, None]).to(h.dtype)
    return h * valid[:, :, None]


def projection(hx, ha, q):
    c_x = hx @ q
    c_a = ha @ q
    return ((c_x * c_a > 0).to(c_a.dtype) * c_a) @ q.transpose(-1, -2)


def rank_guard(q, r_diag):
    magnitude = r_diag.abs()
    keep = magnitude > 1e-6 * magnitude.amax(dim=-1, keepdim=True)
    return q * keep[:, None, :].to(q.dtype)


def linalg_qr(hx, ha, w_r, L):
    hx, ha = masked(hx, L), masked(ha, L)
    q, r = torch.linalg.qr(hx.transpose(1, 2) @ w_r, mode="reduced")
    q = rank_guard(q, torch.diagonal(r, dim1=-2, dim2=-1))
    return projection(hx, ha, q)


def geqrf_only(hx, ha, w_r, L):
    a, tau = torch.geqrf(masked(hx, L).transpose(1, 2) @ w_r)
    return torch.linalg.householder_product(a, tau)


def cholesky_qr(m):
    gram = m.transpose(-1, -2) @ m
    r = gram.shape[-1]
    shift = 1e-6 * torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1).clamp_min(1e-30) / r
    gram = gram + shift[:, None, None] * torch.eye(r, device=m.device, dtype=m.dtype)
    upper = torch.linalg.cholesky_ex(gram).L.transpose(-1, -2)
    q = torch.linalg.solve_triangular(upper, m, upper=True, left=False)
    return q, upper


def cholesky_qr2(hx, ha, w_r, L):
    hx, ha = masked(hx, L), masked(ha, L)
    m = hx.transpose(1, 2) @ w_r
    q1, r1 = cholesky_qr(m)
    q, r2 = cholesky_qr(q1)
    r = r2 @ r1
    q = rank_guard(q, torch.diagonal(r, dim1=-2, dim2=-1))
    return projection(hx, ha, q)


def main():
    args = parse_args(__doc__)
    B, n, d, r = (args.sizes[k] for k in ("B", "n", "d", "r"))
    results = Results("hie", args)
    generator = torch.Generator().manual_seed(1)
    torch.backends.cuda.matmul.allow_tf32 = False
    for lengths_mode in ("full", "short"):
        L = lengths(B, n, lengths_mode, generator).to(args.device)
        w_r = torch.randn(n, r, device=args.device)
        sets = [(torch.randn(B, n, d, device=args.device), torch.randn(B, n, d, device=args.device)) for _ in range(3 if args.device == "cuda" else 1)]
        for pass_name, grad in (("forward", False), ("forward+backward", True)):
            inputs = [((leaf(hx), leaf(ha)) if grad else (hx, ha)) + (w_r, L) for hx, ha in sets]
            wrap = forward_backward if grad else (lambda f: f)
            with torch.enable_grad() if grad else torch.no_grad():
                results.attempt("linalg.qr + projection", lengths_mode, pass_name, lambda: time_call(wrap(linalg_qr), inputs, args.runs, args.device))
                if not grad:
                    results.attempt("geqrf + householder_product (QR only)", lengths_mode, pass_name, lambda: time_call(geqrf_only, inputs, args.runs, args.device))
                results.attempt("CholeskyQR2 + projection", lengths_mode, pass_name, lambda: time_call(wrap(cholesky_qr2), inputs, args.runs, args.device))
                results.attempt("compiled CholeskyQR2 + projection", lengths_mode, pass_name, lambda: time_call(wrap(maybe_compile(cholesky_qr2, args)), inputs, args.runs, args.device))
    results.write()


if __name__ == "__main__":
    main()
