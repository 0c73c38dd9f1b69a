"""A plain PyTorch statement of SASRec, SASRec_F, NOVA, DIF-SR and ASIF (with its ablations), in
float64.

Written from the paper (`../shared/paper/asif-paper.md`) and the project's specification
(`../shared/design/asif-spec.md`, cited below as "spec §N" / "spec AN"), NOT from the crate's Rust
or `docs/model.md`: it is the independent statement the whole-model test (`tests/model_oracle.rs`)
compares the crate with. Dropout is not modelled (the fixtures use p = 0), so every forward here is
deterministic. Autograd gives every parameter's gradient.

Parameters are a dict name -> float64 tensor. Names follow the crate's checkpoint names where the
crate has the parameter (an interface, like a file format), except for the concat fusion, which is
one Linear_{(1+m)d->d} here (spec 3.1) and is split into the crate's names by `to_crate_names`
(NOVA's per-layer concat likewise, over [X; A_1 .. A_m; E_P]; DIF-SR's per-layer concat of score
rows is one Linear_{(m+2)n->n} over [C_A1 .. C_Am; C_X; C_P], DIF-SR's order).
DIF-SR (spec 4) is also stated from DIF-SR's public code (AIM-SE/DIF-SR, DIFMultiHeadAttention and
the attribute-prediction loss), except that its attribute tables are trained (spec 4, A16).
The oracle builds every parameter the spec describes, including those whose output is never read
(the last layer's h_P and h_A sublayers, the gate's b2); their gradients must come out zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

MASK_VALUE = -10000.0  # spec §1: additive mask, RecBole's get_attention_mask
RANK_GUARD = 1e-6  # spec §3.3 step 3
LOGIT_SCALE_MAX = 100.0  # spec §3.4 / A9: kappa clamped at <= 100


@dataclass
class Config:
    kind: str  # sasrec | sasrec_f | nova | difsr | asif | asif_wo_rsa | asif_wo_hie | asif_wo_up | asif_wo_fa
    fusion: str = "sum"  # sum | concat | gate (spec §3.1)
    d: int = 8
    heads: int = 2
    layers: int = 2
    n: int = 5
    inner: int = 12
    rsa_lambda: float = 0.7
    rsa_reduction: str = "mean"  # mean (A8 default) | sum (eq. 9 literal)
    rsa_dedup: bool = False
    hie_rank: int = 3
    hie_keep_padding: bool = False  # A6
    hie_full_qr: bool = False  # A7: False = Q constant (stop-gradient)
    # Attention rows of padding queries (t >= L_b). "recbole": the spec's mask (§1) lets them
    # attend to the valid keys. "zero": the crate's documented choice (docs/attention.md): O_X,
    # O_A, O_P are 0 there. Only HIE with padding kept (A6) can tell the two apart: otherwise
    # padding rows never reach a valid row or the loss.
    padding_rows: str = "recbole"
    eps: float = 1e-12
    pooling: str = "sum"  # sum | mean (spec §1)
    attribute_vocab: list = field(default_factory=list)
    n_items: int = 8  # |V| including the pad 0
    d_a: int = 4  # DIF-SR's attribute width (d_a / h per head, here != d_h)
    aap_lambda: float = 10.0  # DIF-SR's lambda of the attribute-prediction loss (spec 4)

    @property
    def sasrec(self):
        return self.kind in ("sasrec", "sasrec_f")

    @property
    def nova(self):
        return self.kind == "nova"

    @property
    def difsr(self):
        return self.kind == "difsr"

    @property
    def asif(self):
        return self.kind.startswith("asif")

    @property
    def uses_attributes(self):
        return self.kind != "sasrec"

    @property
    def position_stream(self):
        return self.asif and self.kind != "asif_wo_up"

    @property
    def hie(self):
        return self.asif and self.kind != "asif_wo_hie"

    @property
    def rsa(self):
        return self.asif and self.kind != "asif_wo_rsa" and self.rsa_lambda > 0


# ---------------------------------------------------------------------------------------------
# Parameter shapes: what the spec says the model has.
# ---------------------------------------------------------------------------------------------


def parameter_shapes(c: Config) -> dict[str, tuple]:
    d, n, inner = c.d, c.n, c.inner
    m = len(c.attribute_vocab)
    s: dict[str, tuple] = {}

    def linear(name, d_in, d_out, bias=True):
        s[f"{name}.weight"] = (d_in, d_out)  # y = x W + b
        if bias:
            s[f"{name}.bias"] = (d_out,)

    def norm(name):
        s[f"{name}.weight"] = (d,)
        s[f"{name}.bias"] = (d,)

    def ffn(name):
        linear(f"{name}.dense1", d, inner)
        linear(f"{name}.dense2", inner, d)
        norm(f"{name}.norm")

    def fusion(prefix, side_sources):
        # spec 3.1's F over the item stream and `side_sources` more vectors of width d
        if c.fusion == "concat":
            linear(f"{prefix}.concat", (1 + side_sources) * d, d)
        if c.fusion == "gate":
            # VanillaAttention: Linear(d, d), ReLU, Linear(d, 1) with its bias b2.
            linear(f"{prefix}.gate.projection.0", d, d)
            linear(f"{prefix}.gate.projection.2", d, 1)

    s["item_embedding.weight"] = (c.n_items, d)
    s["position_embedding.weight"] = (n, d)
    if c.uses_attributes:
        for j, v in enumerate(c.attribute_vocab):
            s[f"attribute_embedding.{j}.weight"] = (v, c.d_a if c.difsr else d)
        if c.kind not in ("asif_wo_fa", "nova", "difsr"):
            fusion("fusion", m)
    norm("input_norm")
    if c.asif:
        norm("fused_input_norm")
    for l in range(c.layers):
        p = f"layers.{l}."
        if c.nova:
            # spec 4: G = F(X, A_1..A_m, E_P) in every layer (its own F), LN on G (A14)
            fusion(p + "fusion", m + 1)
            norm(p + "fused_norm")
        if c.difsr:
            # DIFMultiHeadAttention: Q, K, V of X; Q_p, K_p of E_P; per attribute Q_j, K_j at d_a;
            # the fusion of the m + 2 score matrices at width n; dense, LayerNorm; then the FFN.
            for x in ("query", "key", "value", "query_position", "key_position"):
                linear(p + x, d, d)
            for j in range(m):
                linear(p + f"attribute_query.{j}", c.d_a, c.d_a)
                linear(p + f"attribute_key.{j}", c.d_a, c.d_a)
            if c.fusion == "concat":
                linear(p + "fusion.concat", (m + 2) * n, n)
            if c.fusion == "gate":
                linear(p + "fusion.gate.projection.0", n, n)  # VanillaAttention(n, n)
                linear(p + "fusion.gate.projection.2", n, 1)
            linear(p + "output", d, d)
            norm(p + "attention_norm")
            ffn(p + "ffn")
            continue
        if c.sasrec or c.nova:
            for x in ("query", "key", "value", "output"):
                linear(p + x, d, d)
            norm(p + "attention_norm")
            ffn(p + "ffn")
            continue
        for x in ("query_fused", "key_fused", "value_id", "value_fused", "output_id", "output_fused"):
            linear(p + x, d, d)
        norm(p + "norm_id")
        norm(p + "norm_fused")
        if c.position_stream:
            for x in ("query_position", "key_position", "value_position", "output_position"):
                linear(p + x, d, d)
            norm(p + "norm_position")
        if c.kind == "asif_wo_fa":
            linear(p + "query_id", d, d)
            linear(p + "key_id", d, d)
        if c.hie:
            s[p + "hie_bases"] = (n, c.hie_rank)
        ffn(p + "ffn_id")
        ffn(p + "ffn_fused")
        if c.position_stream:
            ffn(p + "ffn_position")
    if c.difsr:
        for j, v in enumerate(c.attribute_vocab):
            linear(f"attribute_prediction.{j}", d, v)  # DIF-SR's `ap`: Linear(d, |A_j|)
    if c.rsa:
        s["logit_scale"] = (1,)
    return s


def to_crate_names(c: Config, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The crate's names for the same numbers: the concat Linear's weight rows split per source."""
    out = {}
    d = c.d
    m = len(c.attribute_vocab)
    for name, t in tensors.items():
        if c.difsr and name.endswith("fusion.concat.weight"):
            # rows: [C_A1 .. C_Am; C_X; C_P], n each
            n = c.n
            prefix = name[: -len("concat.weight")]
            for j in range(m):
                out[f"{prefix}attribute.{j}.weight"] = t[j * n : (j + 1) * n]
            out[prefix + "item.weight"] = t[m * n : (m + 1) * n]
            out[prefix + "position.weight"] = t[(m + 1) * n :]
        elif name.endswith("fusion.concat.weight"):
            prefix = name[: -len("concat.weight")]
            out[prefix + "item.weight"] = t[:d]
            for j in range(m):
                out[f"{prefix}attribute.{j}.weight"] = t[(1 + j) * d : (2 + j) * d]
            if t.shape[0] == (m + 2) * d:  # NOVA: the position source last
                out[prefix + "position.weight"] = t[(1 + m) * d :]
        elif name.endswith("fusion.concat.bias"):
            out[name[: -len("concat.bias")] + "item.bias"] = t
        else:
            out[name] = t
    return out


# ---------------------------------------------------------------------------------------------
# Building blocks (spec §2)
# ---------------------------------------------------------------------------------------------


class Model:
    def __init__(self, c: Config, params: dict[str, torch.Tensor]):
        self.c = c
        self.P = params
        # The parameters' dtype and device (float64 on the CPU for the fixtures); the masks and
        # index ranges built below follow them, so the training-step peer
        # (`bench/peers/train_step.py`) can run this same model in float32 on a GPU.
        # Without parameters (the op fixtures of make_op_fixtures.py use single ops): float64 on
        # the CPU.
        first = next(iter(params.values()), torch.zeros((), dtype=torch.float64))
        self.dtype, self.device = first.dtype, first.device

    def lin(self, x, name):
        y = x @ self.P[f"{name}.weight"]
        b = self.P.get(f"{name}.bias")
        return y if b is None else y + b

    def ln(self, x, name):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance, as LayerNorm
        return (x - mu) / torch.sqrt(var + self.c.eps) * self.P[f"{name}.weight"] + self.P[f"{name}.bias"]

    @staticmethod
    def gelu(x):
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))

    def ffn(self, x, name):
        # LN(Drop(W2 gelu(W1 x + b1) + b2) + x), no dropout here
        y = self.lin(self.gelu(self.lin(x, f"{name}.dense1")), f"{name}.dense2")
        return self.ln(y + x, f"{name}.norm")

    def mask(self, lengths):
        """M[b, i, j] = 0 if j <= i and j < L_b, else -10000 (spec §1). Shape (B, 1, n, n)."""
        n = self.c.n
        i = torch.arange(n, device=self.device).view(n, 1)
        j = torch.arange(n, device=self.device).view(1, n)
        causal = j <= i
        valid = torch.arange(n, device=self.device).view(1, n) < lengths.view(-1, 1)  # (B, n) over j
        allowed = causal.view(1, n, n) & valid.view(-1, 1, n)
        m = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        m[~allowed] = MASK_VALUE
        return m.unsqueeze(1)

    def heads(self, x):
        b, n, d = x.shape
        h = self.c.heads
        return x.view(b, n, h, d // h).transpose(1, 2)  # (B, h, n, d_h)

    def merge(self, x):
        b, h, n, dh = x.shape
        return x.transpose(1, 2).reshape(b, n, h * dh)

    def scores(self, q_src, k_src, qname, kname):
        q = self.heads(self.lin(q_src, qname))
        k = self.heads(self.lin(k_src, kname))
        return q @ k.transpose(-1, -2)  # (B, h, n, n), unscaled

    def attend(self, score_sum, mask, v):
        dh = self.c.d // self.c.heads
        pi = torch.softmax(score_sum / math.sqrt(dh) + mask, dim=-1)
        out = self.merge(pi @ self.heads(v))
        if self.c.padding_rows == "zero":
            out = out * self.valid
        return out

    # -----------------------------------------------------------------------------------------
    # Inputs (spec §3.1 and the switch table §4)
    # -----------------------------------------------------------------------------------------

    def attribute_embeddings(self, attributes):
        """A_j[b, t]: sum (or mean) of the embeddings of the item's non-zero tokens (spec §1)."""
        out = []
        for j, tokens in enumerate(attributes):  # tokens (B, n, width)
            table = self.P[f"attribute_embedding.{j}.weight"]
            nonzero = (tokens != 0).to(self.dtype).unsqueeze(-1)
            summed = (table[tokens] * nonzero).sum(2)
            if self.c.pooling == "mean":
                count = nonzero.sum(2)
                summed = summed / torch.clamp(count, min=1.0)
            out.append(summed)
        return out

    def fuse(self, ex, attrs, prefix="fusion"):
        f = self.c.fusion
        if f == "sum":
            return ex + sum(attrs)
        if f == "concat":
            return self.lin(torch.cat([ex] + attrs, dim=-1), f"{prefix}.concat")
        if f == "gate":
            stacked = torch.stack([ex] + attrs, dim=2)  # (B, n, 1 + sources, d)
            hidden = torch.relu(self.lin(stacked, f"{prefix}.gate.projection.0"))
            energies = self.lin(hidden, f"{prefix}.gate.projection.2")  # (B, n, 1 + sources, 1)
            alpha = torch.softmax(energies, dim=2)
            return (alpha * stacked).sum(2)
        raise ValueError(f)

    # -----------------------------------------------------------------------------------------
    # HIE (spec §3.3, eqs. 10 to 12)
    # -----------------------------------------------------------------------------------------

    def hie(self, hx, ha, lengths, w_r):
        c = self.c
        outs = []
        for b in range(hx.shape[0]):
            x, a = hx[b], ha[b]
            if not c.hie_keep_padding:
                v = (torch.arange(c.n, device=self.device) < lengths[b]).to(self.dtype).unsqueeze(1)
                x, a = x * v, a * v
            m = x.T @ w_r  # (d, r)
            q, r = torch.linalg.qr(m, mode="reduced")
            diag = torch.diagonal(r).abs()
            keep = (diag > RANK_GUARD * diag.max()).to(self.dtype)
            q = q * keep  # rank guard: zero the columns with |R_kk| <= 1e-6 max |R_jj|
            if not c.hie_full_qr:
                q = q.detach()  # A7 default: Q is a constant
            cx = x @ q
            ca = a @ q
            phi = (cx * ca > 0).to(self.dtype).detach()  # strict, no gradient
            outs.append((phi * ca) @ q.T)
        return torch.stack(outs)

    # -----------------------------------------------------------------------------------------
    # Layers
    # -----------------------------------------------------------------------------------------

    def sasrec_layer(self, l, x, mask):
        p = f"layers.{l}."
        o = self.attend(self.scores(x, x, p + "query", p + "key"), mask, self.lin(x, p + "value"))
        h = self.ln(self.lin(o, p + "output") + x, p + "attention_norm")
        return self.ffn(h, p + "ffn")

    def nova_layer(self, l, x, attrs, ep, mask):
        """Spec 4, NOVA (A14): query and key from G = LN(F(X^{l-1}, A_1..A_m, E_P)), recomputed
        in this layer from the current ID state and the raw side information; values from X."""
        p = f"layers.{l}."
        g = self.ln(self.fuse(x, attrs + [ep], p + "fusion"), p + "fused_norm")
        o = self.attend(self.scores(g, g, p + "query", p + "key"), mask, self.lin(x, p + "value"))
        h = self.ln(self.lin(o, p + "output") + x, p + "attention_norm")
        return self.ffn(h, p + "ffn")

    def difsr_layer(self, l, x, attrs, ep, mask):
        """Spec 4, DIF-SR (DIFMultiHeadAttention): decoupled scores C_X from X^{l-1}, C_Aj from
        the raw A_j at d_a (d_a / h per head), C_P from raw E_P with its own W_q, W_k; fused;
        / sqrt(d_h) with d_h = d / h; mask, softmax; values from X only."""
        c = self.c
        p = f"layers.{l}."
        c_x = self.scores(x, x, p + "query", p + "key")  # (B, h, n, n)
        c_a = [
            self.scores(a, a, p + f"attribute_query.{j}", p + f"attribute_key.{j}")
            for j, a in enumerate(attrs)
        ]
        c_p = self.scores(ep, ep, p + "query_position", p + "key_position")
        if c.fusion == "sum":
            fused = sum(c_a) + c_x + c_p
        elif c.fusion == "concat":
            fused = self.lin(torch.cat(c_a + [c_x, c_p], dim=-1), p + "fusion.concat")
        elif c.fusion == "gate":
            stacked = torch.stack(c_a + [c_x, c_p], dim=-2)  # (B, h, n, m + 2, n)
            hidden = torch.relu(self.lin(stacked, p + "fusion.gate.projection.0"))
            energies = self.lin(hidden, p + "fusion.gate.projection.2")  # (B, h, n, m + 2, 1)
            alpha = torch.softmax(energies, dim=-2)
            fused = (alpha * stacked).sum(-2)
        else:
            raise ValueError(c.fusion)
        o = self.attend(fused, mask, self.lin(x, p + "value"))
        h = self.ln(self.lin(o, p + "output") + x, p + "attention_norm")
        return self.ffn(h, p + "ffn")

    def attribute_prediction(self, u, target_attributes):
        """DIF-SR's L_attr summed over the attribute types: BCE with logits of a linear head on u
        against the target item's multi-hot vector (one_hot(...).sum over its tokens), averaged
        over the batch and the classes 1.. (pad class dropped)."""
        total = torch.zeros((), dtype=torch.float64)
        for j, tokens in enumerate(target_attributes):  # (B, width)
            logits = self.lin(u, f"attribute_prediction.{j}")
            labels = torch.nn.functional.one_hot(tokens, num_classes=self.c.attribute_vocab[j])
            labels = labels.sum(1).to(torch.float64)
            per = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
            total = total + per[:, 1:].mean()
        return total

    def asif_layer(self, l, x, f, pos, mask, lengths):
        """Spec §3.2 steps 1 to 7; pos is None without the position stream (w/o UP)."""
        c = self.c
        p = f"layers.{l}."
        c_xa = self.scores(f, f, p + "query_fused", p + "key_fused")  # eq. 1
        id_scores = c_xa
        if pos is not None:
            c_p = self.scores(pos, pos, p + "query_position", p + "key_position")  # eq. 2
            id_scores = id_scores + c_p
        if c.kind == "asif_wo_fa":
            c_x = self.scores(x, x, p + "query_id", p + "key_id")
            id_scores = id_scores + c_x  # (C_X + C_A + C_P)
        o_x = self.attend(id_scores, mask, self.lin(x, p + "value_id"))  # eq. 3, V_X = X W_v1
        o_a = self.attend(c_xa, mask, self.lin(f, p + "value_fused"))  # eq. 4, V_A = F W_v2
        h_x = self.ln(self.lin(o_x, p + "output_id") + x, p + "norm_id")
        h_a = self.ln(self.lin(o_a, p + "output_fused") + f, p + "norm_fused")
        h_p = None
        if pos is not None:
            o_p = self.attend(c_p, mask, self.lin(pos, p + "value_position"))  # eq. 5
            h_p = self.ln(self.lin(o_p, p + "output_position") + pos, p + "norm_position")
        if c.hie:
            h_x = h_x + self.hie(h_x, h_a, lengths, self.P[p + "hie_bases"])  # eq. 13 (A4 site)
        x_next = self.ffn(h_x, p + "ffn_id")
        f_next = self.ffn(h_a, p + "ffn_fused")
        p_next = self.ffn(h_p, p + "ffn_position") if h_p is not None else None
        return x_next, f_next, p_next

    # -----------------------------------------------------------------------------------------
    # Losses
    # -----------------------------------------------------------------------------------------

    def contrastive(self, x, a, lengths, groups):
        """RSA (spec §3.4, eqs. 6 to 9) over valid positions of each sample."""
        c = self.c
        s = self.P["logit_scale"][0]
        kappa = torch.clamp(torch.exp(s), max=LOGIT_SCALE_MAX)
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for b in range(x.shape[0]):
            L = int(lengths[b])
            xb = x[b, :L]
            ab = a[b, :L]
            xt = xb / torch.clamp(xb.norm(dim=1, keepdim=True), min=1e-8)
            at = ab / torch.clamp(ab.norm(dim=1, keepdim=True), min=1e-8)
            S = kappa * (xt @ at.T)  # S[t, u] = kappa x~_t . a~_u
            if c.rsa_dedup:
                g = groups[b, :L]
                same = (g.view(-1, 1) == g.view(1, -1)) & ~torch.eye(L, dtype=torch.bool, device=self.device)
                S = S.masked_fill(same, float("-inf"))  # identical attribute sets: not negatives
            ell_x = -torch.diagonal(torch.log_softmax(S, dim=1))  # row t over u
            ell_a = -torch.diagonal(torch.log_softmax(S, dim=0))  # column t over u
            per = (ell_x + ell_a).sum()
            total = total + (per / (2 * L) if c.rsa_reduction == "mean" else per / 2)
        return total / x.shape[0]

    def loss(self, items, lengths, targets, attributes, groups, target_attributes=None):
        """Returns (L, L_ce, L_co or None)."""
        c = self.c
        P = self.P
        # RecBole's nn.Embedding(padding_idx=0): the pad id reads row 0 and passes it no gradient.
        ex = P["item_embedding.weight"][items] * (items != 0).to(self.dtype).unsqueeze(-1)
        ep = P["position_embedding.weight"].unsqueeze(0).expand(items.shape[0], -1, -1)
        attrs = self.attribute_embeddings(attributes) if c.uses_attributes else []
        a_sum = sum(attrs) if attrs else None
        mask = self.mask(lengths)
        self.valid = (torch.arange(c.n, device=self.device).view(1, -1) < lengths.view(-1, 1)).to(self.dtype).unsqueeze(-1)
        if c.sasrec:
            src = self.fuse(ex, attrs) if c.kind == "sasrec_f" else ex
            x = self.ln(src + ep, "input_norm")
            for l in range(c.layers):
                x = self.sasrec_layer(l, x, mask)
        elif c.nova:
            x = self.ln(ex, "input_norm")  # X^0 = Drop(LN(E_X)): IDs only
            for l in range(c.layers):
                x = self.nova_layer(l, x, attrs, ep, mask)
        elif c.difsr:
            x = self.ln(ex, "input_norm")  # X^0 = Drop(LN(E_X)): IDs only
            for l in range(c.layers):
                x = self.difsr_layer(l, x, attrs, ep, mask)
        else:
            x = self.ln(ex, "input_norm")  # X^0 = Drop(LN_x(E_X[s])): no position
            if c.kind == "asif_wo_fa":
                f_src = a_sum
            elif c.kind == "asif_wo_up":
                f_src = self.fuse(ex, attrs) + ep
            else:
                f_src = self.fuse(ex, attrs)
            f = self.ln(f_src, "fused_input_norm")
            pos = ep if c.position_stream else None  # P^0 = E_P raw
            for l in range(c.layers):
                x, f, pos = self.asif_layer(l, x, f, pos, mask, lengths)
        u = x[torch.arange(x.shape[0], device=self.device), lengths - 1]  # H[b, L_b - 1]
        logits = u @ P["item_embedding.weight"].T  # all |V| rows, pad included
        ce = torch.nn.functional.cross_entropy(logits, targets)
        if c.difsr:
            return ce + c.aap_lambda * self.attribute_prediction(u, target_attributes), ce, None
        if c.rsa:
            co = self.contrastive(ex, a_sum, lengths, groups)
            return ce + c.rsa_lambda * co, ce, co
        return ce, ce, None
