//! The DIF-SR layer (Xie et al., SIGIR'22, "Decoupled side information fusion for sequential
//! recommendation"; spec §4's DIF-SR row), `layers.{l}.*`, and its attribute-prediction loss.
//!
//! DIF-SR keeps the side information out of the ID stream and out of the values: every layer
//! computes one score matrix per source, each from its own query and key, and fuses the score
//! matrices, not the embeddings:
//!
//! 1. C_X = (X W_q)(X W_k)ᵀ from the current ID state X^{l−1} (`query`, `key`);
//!    C_Aj = (A_j W_qj)(A_j W_kj)ᵀ from the raw pooled attribute embedding A_j at its own width
//!    d_a (`attribute_query.{j}`, `attribute_key.{j}`, d_a → d_a, so d_a/h per head);
//!    C_P = (E_P W_qp)(E_P W_kp)ᵀ from the raw position table (`query_position`, `key_position`).
//!    Every C is `[B, h, n, n]`, unscaled.
//! 2. C = fuse(C_A1 … C_Am, C_X, C_P) (`layers.{l}.fusion.*`, the config's fusion at width n):
//!    `sum` ΣC; `concat` a linear map (m+2)n → n of the stacked rows (stored as one n × n map per
//!    source, `fusion.item` for C_X, `fusion.attribute.{j}`, `fusion.position`, summed);
//!    `gate` RecBole's VanillaAttention over the m+2 score rows of length n (softmax over the
//!    sources).
//! 3. Π = Drop(softmax(C/√d_h + M)) with d_h = d/h from d, whatever d_a; O = Π V, V = X W_v
//!    (values from X only); H = LN(Drop(O W_o + b) + X), X' = FFN(H), as SASRec.
//!
//! The attribute and position embeddings are never updated by a layer.
//!
//! **Which path each fusion takes.** The attention kernel takes score pairs of one head size and
//! fuses them only by summing inside its softmax, so DIF-SR does not run on it: its d_a/h ≠ d_h
//! pairs and the gate's and concat's non-linear fusion of whole score rows need the score
//! matrices materialised. All three fusions therefore take one path: two small host-computed
//! tape ops of this file ([`decoupled_scores`]: C = Q Kᵀ per head at any head width;
//! [`attend_scores`]: masked softmax, attention dropout and Π V), with the fusion between them
//! built from the existing tape ops (`add` for sum; `linear` for concat; `stack_sources`,
//! `linear`, `relu`, `source_attention` for gate, the same [`FusionBlock`] SASRec_F and NOVA
//! use, at width n). The host ops copy their inputs to the host and their results back, so they
//! run on the CPU, the emulator and a GPU alike, slowly on a GPU (no kernel; B·h·n² scores per
//! layer). A kernel path for `sum` (zero-padding each attribute head's d_a/h columns to d_h and
//! feeding the m+2 pairs to the attention kernel) is not built: the kernel takes at most three
//! pairs.
//!
//! The attribute-prediction (AAP) loss: a linear head per attribute type maps u (the sample
//! representation) to |A_j| logits (`attribute_prediction.{j}`); the target is the target item's
//! multi-hot attribute vector (a token's count, as DIF-SR's summed one-hot); binary
//! cross-entropy with logits, averaged over the batch and the classes 1.. (the pad class 0
//! dropped) ([`attribute_prediction_loss`]); L = L_ce + λ_aap Σ_j L_attr,j.
use crate::autograd::{Tape, Var};
use crate::ops::add::add;
use crate::rng;
use crate::{Error, IndexTensor, Result, Tensor};

use super::blocks::{FeedForward, LayerNorm, Linear};
use super::forward::Forward;
use super::fusion::FusionBlock;
use super::parameters::{Block, ParameterBuilder, ParameterId};

/// The raw side information every DIF-SR layer reads: A_1 … A_m `[B, n, d_a]` and E_P broadcast
/// to `[B, n, d]`.
pub(super) struct DifSrSideInformation {
    pub attributes: Vec<Var>,
    pub positions: Var,
}

/// One DIF-SR layer `layers.{l}.*` (module docs).
#[derive(Debug, Clone)]
pub(super) struct DifSrLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    query_position: Linear,
    key_position: Linear,
    attribute_query: Vec<Linear>,
    attribute_key: Vec<Linear>,
    /// fuse(C_X; C_A1 … C_Am, C_P) at width n.
    fusion: FusionBlock,
    output: Linear,
    attention_norm: LayerNorm,
    ffn: FeedForward,
}

impl DifSrLayer {
    /// Layer `l` of a model with `n_attributes` attribute types.
    pub fn new(
        builder: &mut ParameterBuilder,
        l: usize,
        n_attributes: usize,
    ) -> Result<DifSrLayer> {
        let cfg = builder.config();
        let (d, d_a, n, inner, fusion) = (
            cfg.hidden_size,
            cfg.attribute_hidden_size,
            cfg.max_len,
            cfg.inner_size,
            cfg.fusion,
        );
        let p = |s: &str| format!("layers.{l}.{s}");
        let query = Linear::square(builder, &p("query"), d)?;
        let key = Linear::square(builder, &p("key"), d)?;
        let value = Linear::square(builder, &p("value"), d)?;
        let query_position = Linear::square(builder, &p("query_position"), d)?;
        let key_position = Linear::square(builder, &p("key_position"), d)?;
        let mut attribute_query = Vec::new();
        let mut attribute_key = Vec::new();
        for j in 0..n_attributes {
            attribute_query.push(Linear::square(
                builder,
                &p(&format!("attribute_query.{j}")),
                d_a,
            )?);
            attribute_key.push(Linear::square(
                builder,
                &p(&format!("attribute_key.{j}")),
                d_a,
            )?);
        }
        let mut sources: Vec<String> = (0..n_attributes)
            .map(|j| format!("attribute.{j}"))
            .collect();
        sources.push("position".into());
        Ok(DifSrLayer {
            query,
            key,
            value,
            query_position,
            key_position,
            attribute_query,
            attribute_key,
            fusion: FusionBlock::named(builder, &p("fusion"), fusion, n, &sources)?,
            output: Linear::square(builder, &p("output"), d)?,
            attention_norm: LayerNorm::new(builder, &p("attention_norm"), d)?,
            ffn: FeedForward::new(builder, &p("ffn"), d, inner)?,
        })
    }

    /// X' from X `[B, n, d]` and the raw side information (dropout sites: attention, the
    /// sublayer end, the FFN).
    pub fn forward(
        &self,
        pass: &Forward,
        x: &Var,
        side: &DifSrSideInformation,
        lengths: &IndexTensor,
    ) -> Result<Var> {
        let tape = pass.tape;
        let heads = pass.config.heads;
        let score = |q: &Linear, k: &Linear, source: &Var| -> Result<Var> {
            decoupled_scores(
                tape,
                &q.forward(pass, source)?,
                &k.forward(pass, source)?,
                heads,
            )
        };
        let id_scores = score(&self.query, &self.key, x)?;
        let mut side_scores = Vec::with_capacity(side.attributes.len() + 1);
        for ((q, k), a) in self
            .attribute_query
            .iter()
            .zip(&self.attribute_key)
            .zip(&side.attributes)
        {
            side_scores.push(score(q, k, a)?);
        }
        side_scores.push(score(
            &self.query_position,
            &self.key_position,
            &side.positions,
        )?);
        let mut side_sum = side_scores[0].clone();
        for s in &side_scores[1..] {
            side_sum = add(tape, &side_sum, s)?;
        }
        let fused = self
            .fusion
            .forward(pass, &id_scores, &side_scores, Some(&side_sum))?;
        let v = self.value.forward(pass, x)?;
        // A host-computed op: a step-counter seed is read back here (never captured).
        let (attention, seed) = pass.attention_config();
        let head_dim = pass.config.hidden_size / heads;
        let o = attend_scores(
            tape,
            &fused,
            &v,
            lengths,
            1.0 / (head_dim as f32).sqrt(),
            attention.dropout,
            seed.value()?,
        )?;
        let y = self.output.forward(pass, &o)?;
        let h = self.attention_norm.residual(pass, &y, x)?;
        self.ffn.forward(pass, &h)
    }
}

impl Block for DifSrLayer {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        for linear in [
            &self.query,
            &self.key,
            &self.value,
            &self.query_position,
            &self.key_position,
        ] {
            linear.visit(visitor);
        }
        for (q, k) in self.attribute_query.iter().zip(&self.attribute_key) {
            q.visit(visitor);
            k.visit(visitor);
        }
        self.fusion.visit(visitor);
        self.output.visit(visitor);
        self.attention_norm.visit(visitor);
        self.ffn.visit(visitor);
    }
}

fn shape_error(op: &'static str, message: String) -> Error {
    Error::shape(op, message)
}

/// C = Q Kᵀ per head, unscaled: `query` and `key` `[B, n, w]` with `heads` heads of w/h
/// channels give `[B, h, n, n]` (host-computed tape op; module docs).
pub(super) fn decoupled_scores(tape: &Tape, query: &Var, key: &Var, heads: usize) -> Result<Var> {
    let shape = query.value().shape().to_vec();
    if shape.len() != 3 || key.value().shape() != shape.as_slice() {
        return Err(shape_error(
            "decoupled_scores",
            format!(
                "query and key must be the same [B, n, w], got {shape:?} and {:?}",
                key.value().shape()
            ),
        ));
    }
    let (b, n, w) = (shape[0], shape[1], shape[2]);
    if heads == 0 || w % heads != 0 {
        return Err(shape_error(
            "decoupled_scores",
            format!("width {w} is not a multiple of {heads} heads"),
        ));
    }
    let dh = w / heads;
    let device = query.value().device().clone();
    let (q, k) = (query.value().to_vec()?, key.value().to_vec()?);
    let mut scores = vec![0f32; b * heads * n * n];
    for bi in 0..b {
        for h in 0..heads {
            for i in 0..n {
                let qi = &q[(bi * n + i) * w + h * dh..][..dh];
                for j in 0..n {
                    let kj = &k[(bi * n + j) * w + h * dh..][..dh];
                    scores[((bi * heads + h) * n + i) * n + j] =
                        qi.iter().zip(kj).map(|(a, b)| a * b).sum();
                }
            }
        }
    }
    let value = Tensor::from_vec(&device, &[b, heads, n, n], scores)?;
    let (query_id, key_id) = (query.id(), key.id());
    Ok(tape.record(value, move |grad| {
        let g = grad.to_vec()?;
        let mut dq = vec![0f32; b * n * w];
        let mut dk = vec![0f32; b * n * w];
        for bi in 0..b {
            for h in 0..heads {
                for i in 0..n {
                    for j in 0..n {
                        let gij = g[((bi * heads + h) * n + i) * n + j];
                        if gij == 0.0 {
                            continue;
                        }
                        let (ri, rj) = ((bi * n + i) * w + h * dh, (bi * n + j) * w + h * dh);
                        for c in 0..dh {
                            dq[ri + c] += gij * k[rj + c];
                            dk[rj + c] += gij * q[ri + c];
                        }
                    }
                }
            }
        }
        Ok(vec![
            (query_id, Tensor::from_vec(&device, &[b, n, w], dq)?),
            (key_id, Tensor::from_vec(&device, &[b, n, w], dk)?),
        ])
    }))
}

/// O = Drop(softmax(scale·C + M)) V per head: `scores` `[B, h, n, n]`, `values` `[B, n, d]`
/// (h heads of d/h channels), lengths L_b `[B]`; the mask M keeps key j for query i when
/// j ≤ i and j < L_b (spec §1's mask, RecBole's and DIF-SR's: a padding query i ≥ L_b attends
/// the valid keys, where the attention op's rows of padding queries are 0; DIF-SR's concat and
/// gate mix every column of a score row, padding columns included, so the rows of padding
/// queries reach the loss from the second layer on). Dropout (p, seed) drops
/// probabilities with [`rng::dropout_keep`] and scales the kept by 1/(1 − p). Host-computed tape
/// op (module docs).
pub(super) fn attend_scores(
    tape: &Tape,
    scores: &Var,
    values: &Var,
    lengths: &IndexTensor,
    scale: f32,
    dropout: f32,
    seed: u64,
) -> Result<Var> {
    let s_shape = scores.value().shape().to_vec();
    let v_shape = values.value().shape().to_vec();
    let bad = |m: String| Err(shape_error("attend_scores", m));
    if s_shape.len() != 4 || v_shape.len() != 3 {
        return bad(format!(
            "scores must be [B, h, n, n] and values [B, n, d], got {s_shape:?} and {v_shape:?}"
        ));
    }
    let (b, heads, n, d) = (s_shape[0], s_shape[1], s_shape[2], v_shape[2]);
    if s_shape[3] != n || v_shape[..2] != [b, n] || heads == 0 || d % heads != 0 {
        return bad(format!(
            "scores {s_shape:?} and values {v_shape:?} do not match (d a multiple of h)"
        ));
    }
    if lengths.shape() != [b] {
        return bad(format!("lengths must be [{b}], got {:?}", lengths.shape()));
    }
    if !(0.0..1.0).contains(&dropout) {
        return Err(Error::argument(
            "attend_scores",
            format!("dropout must be in [0, 1), got {dropout}"),
        ));
    }
    let dh = d / heads;
    let device = scores.value().device().clone();
    let (c, v) = (scores.value().to_vec()?, values.value().to_vec()?);
    let lengths: Vec<usize> = lengths
        .to_vec()?
        .into_iter()
        .map(|l| l.clamp(0, n as i32) as usize)
        .collect();
    let kept = 1.0 / (1.0 - dropout);
    let multiplier = move |bi: usize, h: usize, i: usize, j: usize| -> f32 {
        if dropout <= 0.0 {
            return 1.0;
        }
        let counter = (((bi * heads + h) * n + i) * n + j) as u64;
        if rng::dropout_keep(seed, counter, dropout) {
            kept
        } else {
            0.0
        }
    };
    // Π before dropout, kept for the backward; 0 outside the mask.
    let mut probabilities = vec![0f32; b * heads * n * n];
    let mut out = vec![0f32; b * n * d];
    // Query i attends keys 0..=last(i) = min(i, L_b − 1); none when L_b = 0.
    let last = move |length: usize, i: usize| i.min(length.saturating_sub(1));
    for (bi, &length) in lengths.iter().enumerate() {
        if length == 0 {
            continue;
        }
        for h in 0..heads {
            for i in 0..n {
                let row = ((bi * heads + h) * n + i) * n;
                let logits: Vec<f32> = (0..=last(length, i)).map(|j| c[row + j] * scale).collect();
                let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                let o = &mut out[(bi * n + i) * d + h * dh..][..dh];
                for (j, e) in exps.iter().enumerate() {
                    let p = e / sum;
                    probabilities[row + j] = p;
                    let weight = p * multiplier(bi, h, i, j);
                    let vj = &v[(bi * n + j) * d + h * dh..][..dh];
                    for (oc, vc) in o.iter_mut().zip(vj) {
                        *oc += weight * vc;
                    }
                }
            }
        }
    }
    let value = Tensor::from_vec(&device, &[b, n, d], out)?;
    let (scores_id, values_id) = (scores.id(), values.id());
    Ok(tape.record(value, move |grad| {
        let g = grad.to_vec()?;
        let mut dc = vec![0f32; b * heads * n * n];
        let mut dv = vec![0f32; b * n * d];
        for (bi, &length) in lengths.iter().enumerate() {
            if length == 0 {
                continue;
            }
            for h in 0..heads {
                for i in 0..n {
                    let row = ((bi * heads + h) * n + i) * n;
                    let gi = &g[(bi * n + i) * d + h * dh..][..dh];
                    // dΠ'_j = gᵢ·v_j (Π' the dropped probabilities), dΠ_j = m_j dΠ'_j.
                    let mut dp = vec![0f32; last(length, i) + 1];
                    for (j, dpj) in dp.iter_mut().enumerate() {
                        let m = multiplier(bi, h, i, j);
                        let p = probabilities[row + j];
                        let vj = &v[(bi * n + j) * d + h * dh..][..dh];
                        *dpj = m * gi.iter().zip(vj).map(|(a, b)| a * b).sum::<f32>();
                        let dvj = &mut dv[(bi * n + j) * d + h * dh..][..dh];
                        for (dvc, gc) in dvj.iter_mut().zip(gi) {
                            *dvc += p * m * gc;
                        }
                    }
                    let dot: f32 = dp
                        .iter()
                        .enumerate()
                        .map(|(j, dpj)| probabilities[row + j] * dpj)
                        .sum();
                    for (j, dpj) in dp.iter().enumerate() {
                        dc[row + j] = probabilities[row + j] * (dpj - dot) * scale;
                    }
                }
            }
        }
        Ok(vec![
            (scores_id, Tensor::from_vec(&device, &[b, heads, n, n], dc)?),
            (values_id, Tensor::from_vec(&device, &[b, n, d], dv)?),
        ])
    }))
}

/// DIF-SR's L_attr for one attribute type: binary cross-entropy with logits of `logits`
/// `[B, |A|]` against the multi-hot vector of each row's target tokens `targets` `[B, width]`
/// (a class's target is its token's count; token 0 is the pad), averaged over the batch and the
/// classes 1..|A| (class 0 dropped). A scalar `[1]` (host-computed tape op).
pub(super) fn attribute_prediction_loss(
    tape: &Tape,
    logits: &Var,
    targets: &IndexTensor,
) -> Result<Var> {
    let shape = logits.value().shape().to_vec();
    if shape.len() != 2 || shape[1] < 2 {
        return Err(shape_error(
            "attribute_prediction_loss",
            format!("logits must be [B, |A| ≥ 2], got {shape:?}"),
        ));
    }
    let (b, classes) = (shape[0], shape[1]);
    let t_shape = targets.shape();
    if t_shape.len() != 2 || t_shape[0] != b {
        return Err(shape_error(
            "attribute_prediction_loss",
            format!("target tokens must be [B = {b}, width], got {t_shape:?}"),
        ));
    }
    let width = t_shape[1];
    let mut labels = vec![0f32; b * classes];
    for (s, &token) in targets.to_vec()?.iter().enumerate() {
        if token < 0 || token as usize >= classes {
            return Err(Error::argument(
                "attribute_prediction_loss",
                format!(
                    "target token {token} (row {}) outside 0..{classes}",
                    s / width.max(1)
                ),
            ));
        }
        labels[(s / width) * classes + token as usize] += 1.0;
    }
    let device = logits.value().device().clone();
    let x = logits.value().to_vec()?;
    let count = (b * (classes - 1)) as f64;
    let mut total = 0f64;
    for r in 0..b {
        for k in 1..classes {
            let (xi, y) = (x[r * classes + k] as f64, labels[r * classes + k] as f64);
            total += xi.max(0.0) - xi * y + (-xi.abs()).exp().ln_1p();
        }
    }
    let value = Tensor::from_vec(&device, &[1], vec![(total / count) as f32])?;
    let logits_id = logits.id();
    Ok(tape.record(value, move |grad| {
        let g = grad.to_vec()?[0] as f64 / count;
        let mut dx = vec![0f32; b * classes];
        for r in 0..b {
            for k in 1..classes {
                let i = r * classes + k;
                let sigmoid = 1.0 / (1.0 + (-(x[i] as f64)).exp());
                dx[i] = (g * (sigmoid - labels[i] as f64)) as f32;
            }
        }
        Ok(vec![(
            logits_id,
            Tensor::from_vec(&device, &[b, classes], dx)?,
        )])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

    fn leaf(tape: &Tape, shape: &[usize]) -> Var {
        let n = shape.iter().product();
        let data = (0..n).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect();
        tape.leaf(Tensor::from_vec(&Device::cpu(), shape, data).unwrap())
    }

    fn index(shape: &[usize], data: Vec<i32>) -> IndexTensor {
        IndexTensor::from_vec(&Device::cpu(), shape, data).unwrap()
    }

    fn is_shape_error<T: std::fmt::Debug>(r: Result<T>) -> bool {
        matches!(r, Err(Error::Shape { .. }))
    }

    /// The host ops' argument checks, one at a time (cargo-mutants: `||` → `&&` between the
    /// clauses of a check survived; the model never passes these ops bad arguments, since
    /// `ModelConfig::validate` runs first, so only a direct call sees the checks).
    #[test]
    fn decoupled_scores_checks_its_arguments() {
        let tape = Tape::new();
        let q = leaf(&tape, &[2, 3, 4]);
        let scores = decoupled_scores(&tape, &q, &leaf(&tape, &[2, 3, 4]), 2).unwrap();
        assert_eq!(scores.value().shape(), [2, 2, 3, 3]);
        assert!(is_shape_error(decoupled_scores(
            &tape,
            &q,
            &leaf(&tape, &[2, 3, 5]),
            2
        )));
        let flat = leaf(&tape, &[2, 3]);
        assert!(is_shape_error(decoupled_scores(&tape, &flat, &flat, 1)));
        assert!(is_shape_error(decoupled_scores(&tape, &q, &q, 0)));
        assert!(is_shape_error(decoupled_scores(&tape, &q, &q, 3)));
    }

    #[test]
    fn attend_scores_checks_its_arguments() {
        let tape = Tape::new();
        let (b, h, n, d) = (2, 2, 3, 4);
        let scores = leaf(&tape, &[b, h, n, n]);
        let values = leaf(&tape, &[b, n, d]);
        let lengths = index(&[b], vec![3, 1]);
        let attend =
            |s: &Var, v: &Var, l: &IndexTensor, p: f32| attend_scores(&tape, s, v, l, 0.5, p, 9);
        let out = attend(&scores, &values, &lengths, 0.0).unwrap();
        assert_eq!(out.value().shape(), [b, n, d]);
        attend(&scores, &values, &lengths, 0.5).unwrap();
        for (what, s, v) in [
            ("scores 3-d", leaf(&tape, &[b, h, n]), values.clone()),
            ("values 2-d", scores.clone(), leaf(&tape, &[b, n])),
            (
                "scores not square",
                leaf(&tape, &[b, h, n, n + 1]),
                values.clone(),
            ),
            (
                "values of another batch",
                scores.clone(),
                leaf(&tape, &[b + 1, n, d]),
            ),
            (
                "values of another length",
                scores.clone(),
                leaf(&tape, &[b, n + 1, d]),
            ),
            ("no heads", leaf(&tape, &[b, 0, n, n]), values.clone()),
            (
                "d not a multiple of h",
                scores.clone(),
                leaf(&tape, &[b, n, 5]),
            ),
        ] {
            assert!(is_shape_error(attend(&s, &v, &lengths, 0.0)), "{what}");
        }
        assert!(is_shape_error(attend(
            &scores,
            &values,
            &index(&[b + 1], vec![1; b + 1]),
            0.0
        )));
        for p in [-0.1, 1.0, f32::NAN] {
            let r = attend(&scores, &values, &lengths, p);
            assert!(matches!(r, Err(Error::Argument { .. })), "dropout {p}");
        }
    }

    /// With dropout on, the host path (`decoupled_scores`, then `attend_scores` at 1/√d_h) gives
    /// the attention op's O_X on every valid query row, forward and backward: both draw their
    /// masks from the same counters ((b·h + head)·n + i)·n + j and scale the kept by 1/(1 − p).
    /// The whole-model oracle runs with p = 0, so only this sees the host path's dropout
    /// (cargo-mutants: the counter's arithmetic and the scale survived it).
    #[test]
    fn attend_scores_with_dropout_matches_the_attention_op() {
        use crate::ops::attention::{attention, AttentionConfig};
        let (b, h, n, d) = (2, 2, 5, 8);
        let seed = 11;
        let length = [5usize, 3];
        let data = |salt: usize| -> Vec<f32> {
            (0..b * n * d)
                .map(|i| ((i * 37 + salt * 11) % 17) as f32 / 8.5 - 1.0)
                .collect()
        };
        // Upstream gradient: 0 on padding query rows (the two paths differ there by design).
        let upstream: Vec<f32> = (0..b * n * d)
            .map(|i| {
                let (bi, i_row) = (i / (n * d), (i / d) % n);
                if i_row < length[bi] {
                    ((i * 13) % 7) as f32 - 3.0
                } else {
                    0.0
                }
            })
            .collect();
        let lengths = index(&[b], length.iter().map(|&l| l as i32).collect());
        let run = |host: bool, p: f32| -> (Vec<f32>, Vec<Vec<f32>>) {
            let tape = Tape::new();
            let leaf =
                |salt| tape.leaf(Tensor::from_vec(&Device::cpu(), &[b, n, d], data(salt)).unwrap());
            let (q, k, v) = (leaf(1), leaf(2), leaf(3));
            let out = if host {
                let scores = decoupled_scores(&tape, &q, &k, h).unwrap();
                let scale = 1.0 / ((d / h) as f32).sqrt();
                attend_scores(&tape, &scores, &v, &lengths, scale, p, seed).unwrap()
            } else {
                let config = AttentionConfig {
                    heads: h,
                    dropout: p,
                    seed,
                    precision: crate::Precision::Fp32,
                };
                attention(&tape, &[(&q, &k)], &v, None, None, &lengths, &config)
                    .unwrap()
                    .id
            };
            let g = Tensor::from_vec(&Device::cpu(), &[b, n, d], upstream.clone()).unwrap();
            let grads = tape.backward(&out, g).unwrap();
            let grad = |x: &Var| grads.get(x).unwrap().to_vec().unwrap();
            (
                out.value().to_vec().unwrap(),
                vec![grad(&q), grad(&k), grad(&v)],
            )
        };
        let ((host, host_grads), (op, op_grads)) = (run(true, 0.3), run(false, 0.3));
        // The masks drop something: the outputs differ from those without dropout.
        assert_ne!(host, run(true, 0.0).0);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
        for (i, (x, y)) in host.iter().zip(&op).enumerate() {
            let (bi, row) = (i / (n * d), (i / d) % n);
            if row < length[bi] {
                assert!(close(*x, *y), "O[{i}]: host {x}, attention op {y}");
            }
        }
        for (name, (gx, gy)) in ["dQ", "dK", "dV"]
            .iter()
            .zip(host_grads.iter().zip(&op_grads))
        {
            for (i, (x, y)) in gx.iter().zip(gy).enumerate() {
                assert!(close(*x, *y), "{name}[{i}]: host {x}, attention op {y}");
            }
        }
    }

    /// Large logits: the softmax subtracts the row's maximum, so scores of 50 and 60 (e^60
    /// overflows f32 after the shift the other way) still give the exact weights.
    #[test]
    fn attend_scores_is_stable_for_large_logits() {
        let tape = Tape::new();
        let scores = Tensor::from_vec(&Device::cpu(), &[1, 1, 2, 2], vec![50.0, 0.0, 50.0, 60.0]);
        let scores = tape.leaf(scores.unwrap());
        let values =
            tape.leaf(Tensor::from_vec(&Device::cpu(), &[1, 2, 1], vec![1.0, 2.0]).unwrap());
        let out =
            attend_scores(&tape, &scores, &values, &index(&[1], vec![2]), 1.0, 0.0, 0).unwrap();
        let e = (-10f64).exp();
        let want = [1.0, (e + 2.0) / (1.0 + e)];
        let got = out.value().to_vec().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} against {want:?}");
        }
    }

    #[test]
    fn attribute_prediction_loss_checks_its_arguments_and_knows_one_answer() {
        let tape = Tape::new();
        // One row, classes {0 (pad), 1}, logit 0 for class 1 and its token once: BCE = ln 2.
        let logits = tape.leaf(Tensor::from_vec(&Device::cpu(), &[1, 2], vec![5.0, 0.0]).unwrap());
        let loss = attribute_prediction_loss(&tape, &logits, &index(&[1, 1], vec![1])).unwrap();
        let value = loss.value().to_vec().unwrap()[0];
        assert!((value - std::f32::consts::LN_2).abs() < 1e-6, "{value}");
        let logits = leaf(&tape, &[2, 3]);
        let targets = index(&[2, 2], vec![1, 2, 0, 2]);
        attribute_prediction_loss(&tape, &logits, &targets).unwrap();
        assert!(is_shape_error(attribute_prediction_loss(
            &tape,
            &leaf(&tape, &[6]),
            &targets
        )));
        assert!(is_shape_error(attribute_prediction_loss(
            &tape,
            &leaf(&tape, &[2, 1]),
            &targets
        )));
        assert!(is_shape_error(attribute_prediction_loss(
            &tape,
            &logits,
            &index(&[4], vec![1; 4])
        )));
        assert!(is_shape_error(attribute_prediction_loss(
            &tape,
            &logits,
            &index(&[3, 2], vec![1; 6])
        )));
        for (token, row) in [(-1, 1), (3, 0)] {
            let mut data = vec![1, 2, 0, 2];
            data[row * 2 + 1] = token;
            let r = attribute_prediction_loss(&tape, &logits, &index(&[2, 2], data));
            match r {
                Err(Error::Argument { message, .. }) => {
                    assert!(
                        message.contains(&format!("token {token} (row {row})")),
                        "{message}"
                    )
                }
                other => panic!("token {token}: {other:?}"),
            }
        }
    }
}
