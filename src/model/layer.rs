//! One ASIF layer (spec §3.2) as a public unit: the code [`Model::encode`] runs per layer, and
//! what `benches/asif_layer.rs` times against the eager PyTorch layer of
//! `bench/peers/asif_layer.py` (the GPU check's end-to-end row).
//!
//! A layer reads the three streams X (ID), F (fused, the paper's h_A) and P (position) and, on
//! the tape:
//! 1. projects Q_f, K_f from F, Q_p, K_p from P (and, for `asif_wo_fa`, Q_x, K_x from X), and the
//!    values V_X = X W_v1, V_A = F W_v2, V_P = P W_v3;
//! 2. runs the fused dual-score attention (eqs. 3 to 5: Π_X, Π_A, Π_P with one mask and one
//!    attention-dropout mask) giving O_X, O_A, O_P;
//! 3. per stream H_s = LN_s(Drop(O_s W_os + b) + residual) (the fused residual + LN op);
//! 4. HIE after the sublayer LN (A4): H_X ← H_X + HIE(H_X, H_A);
//! 5. per-stream FFNs (A5): X' = FFN_X(H_X), F' = FFN_A(H_A), P' = FFN_P(H_P).
//!
//! The last layer builds only what is read afterwards (X'; H_A for HIE): see `docs/model.md`.
use std::cell::Cell;

use super::{fused_output_read, position_output_read, reshape, Model, ModelConfig, Params};
use crate::autograd::{Tape, Var};
use crate::ops::add::add;
use crate::ops::attention::{attention, AttentionConfig};
use crate::ops::dropout::DropoutMode;
use crate::ops::gelu::gelu;
use crate::ops::hie::{hie, HieOptions};
use crate::ops::linear::linear;
use crate::ops::residual_norm::{residual_layer_norm, DropoutSettings};
use crate::rng::hash64;
use crate::{Error, IndexTensor, Precision, Result, Tensor};

use super::Mode;

/// Where a forward pass's dropout masks come from: a fresh seed per dropout site, drawn in
/// order from (base seed, site counter), and the dropout mode (training or evaluation).
///
/// The model draws its sites in a fixed order (input dropouts, then per layer: attention, the
/// three sublayer ends, the FFNs), so the same [`DropoutSeeds`] gives the same masks.
#[derive(Debug)]
pub struct DropoutSeeds {
    base: u64,
    counter: Cell<u64>,
    /// Training (masks drawn) or evaluation (dropout is the identity).
    pub mode: DropoutMode,
}

impl DropoutSeeds {
    /// Seeds `hash64(base, 0)`, `hash64(base, 1)`, … in `mode`.
    pub fn new(base: u64, mode: DropoutMode) -> DropoutSeeds {
        DropoutSeeds {
            base,
            counter: Cell::new(0),
            mode,
        }
    }

    /// The seeds [`Model::forward`] and [`Model::scores`] use for a model seeded `model_seed`:
    /// in training a base from (model seed, step), so each step draws new masks.
    pub fn for_model(model_seed: u64, mode: Mode) -> DropoutSeeds {
        match mode {
            Mode::Train { step } => {
                DropoutSeeds::new(hash64(model_seed ^ 0xD50_0000, step), DropoutMode::Train)
            }
            Mode::Eval => DropoutSeeds::new(0, DropoutMode::Eval),
        }
    }

    /// The next site's seed.
    pub fn next(&self) -> u64 {
        let c = self.counter.get();
        self.counter.set(c + 1);
        hash64(self.base, c)
    }
}

/// The position stream P entering a layer.
#[derive(Debug, Clone)]
pub struct PositionStream {
    /// What the projections (Q_p, K_p, V_P) read: E_P `[n, d]` in layer 1 (read once for the
    /// batch: the attention op's shared input), h_P `[B, n, d]` after.
    pub source: Var,
    /// The residual of H_P's sublayer: E_P broadcast to `[B, n, d]` in layer 1, h_P after.
    pub residual: Var,
}

impl PositionStream {
    /// Layer 1's P⁰: the raw table E_P `[n, d]` and its broadcast to `[batch, n, d]`.
    pub fn from_table(tape: &Tape, table: &Var, batch: usize) -> Result<PositionStream> {
        Ok(PositionStream {
            source: table.clone(),
            residual: broadcast_positions(tape, table, batch)?,
        })
    }

    /// A later layer's P: the previous layer's h_P `[B, n, d]`, read by both.
    pub fn from_hidden(hidden: Var) -> PositionStream {
        PositionStream {
            source: hidden.clone(),
            residual: hidden,
        }
    }
}

/// The streams entering (and leaving) an ASIF layer.
#[derive(Debug, Clone)]
pub struct AsifStreams {
    /// X: the ID stream `[B, n, d]`.
    pub id: Var,
    /// F: the fused stream `[B, n, d]` (h_A from layer 2 on). Required as input; `None` after
    /// the last layer (its FFN_A is not built).
    pub fused: Option<Var>,
    /// P, for models with a position stream; `None` after the last layer.
    pub position: Option<PositionStream>,
}

/// E_P `[n, d]` broadcast to `[batch, n, d]` on the tape: ones[batch, 1] · E_P[1, n·d] (its
/// gradient is the sum over the batch), so every device runs it through the linear op.
pub fn broadcast_positions(tape: &Tape, table: &Var, batch: usize) -> Result<Var> {
    let shape = table.value().shape().to_vec();
    if shape.len() != 2 {
        return Err(Error::shape(
            "broadcast_positions",
            format!("E_P must be [n, d], got {shape:?}"),
        ));
    }
    let (n, d) = (shape[0], shape[1]);
    let ones = tape.leaf(Tensor::from_vec(
        table.value().device(),
        &[batch, 1],
        vec![1.0; batch],
    )?);
    let flat = reshape(tape, table, &[1, n * d])?;
    let full = linear(tape, &ones, &flat, None)?;
    reshape(tape, &full, &[batch, n, d])
}

/// The sublayer building blocks of a forward pass: parameters by name, the config's sizes and
/// dropouts, and the seed stream (shared by [`Model::encode`]'s SASRec and ASIF layers).
pub(super) struct Sublayers<'a> {
    pub tape: &'a Tape,
    pub config: &'a ModelConfig,
    pub params: &'a Params<'a>,
    pub seeds: &'a DropoutSeeds,
}

impl Sublayers<'_> {
    /// x W + b with the named linear.
    pub fn dense(&self, x: &Var, prefix: &str) -> Result<Var> {
        linear(
            self.tape,
            x,
            self.params.get(&format!("{prefix}.weight")),
            Some(self.params.get(&format!("{prefix}.bias"))),
        )
    }

    /// LN(Dropout(y) + residual) with the named norm (one seed).
    pub fn sublayer_end(&self, y: &Var, residual: &Var, prefix: &str) -> Result<Var> {
        residual_layer_norm(
            self.tape,
            y,
            residual,
            self.params.get(&format!("{prefix}.weight")),
            self.params.get(&format!("{prefix}.bias")),
            self.config.layer_norm_eps,
            DropoutSettings {
                p: self.config.hidden_dropout,
                seed: self.seeds.next(),
                mode: self.seeds.mode,
            },
        )
    }

    /// The position-wise FFN: LN(Drop(GELU(x W_1 + b_1) W_2 + b_2) + x).
    pub fn ffn(&self, x: &Var, prefix: &str) -> Result<Var> {
        let h = gelu(self.tape, &self.dense(x, &format!("{prefix}.dense1"))?)?;
        let y = self.dense(&h, &format!("{prefix}.dense2"))?;
        self.sublayer_end(&y, x, &format!("{prefix}.norm"))
    }

    /// The attention op's heads and dropout (none in evaluation), with the next seed.
    pub fn attention_config(&self) -> AttentionConfig {
        AttentionConfig {
            heads: self.config.heads,
            dropout: match self.seeds.mode {
                DropoutMode::Train => self.config.attention_dropout,
                DropoutMode::Eval => 0.0,
            },
            seed: self.seeds.next(),
            precision: Precision::Fp32,
        }
    }

    /// Layer `l` (0-based) of an ASIF-family model: spec §3.2, steps 1 to 7.
    pub fn asif_layer(
        &self,
        l: usize,
        streams: &AsifStreams,
        lengths: &IndexTensor,
    ) -> Result<AsifStreams> {
        let cfg = self.config;
        let kind = cfg.kind;
        let p = |s: &str| format!("layers.{l}.{s}");
        let last = l + 1 == cfg.layers;
        let x = &streams.id;
        let f = streams
            .fused
            .as_ref()
            .ok_or_else(|| Error::argument("asif_layer", "the fused stream F is missing"))?;
        let qf = self.dense(f, &p("query_fused"))?;
        let kf = self.dense(f, &p("key_fused"))?;
        let mut position_pair = None;
        let mut position_values = None;
        if let Some(position) = &streams.position {
            let ps = &position.source;
            position_pair = Some((
                self.dense(ps, &p("query_position"))?,
                self.dense(ps, &p("key_position"))?,
            ));
            if position_output_read(kind, last) {
                position_values = Some(self.dense(ps, &p("value_position"))?);
            }
        }
        let id_pair = if kind == super::ModelKind::AsifWithoutFa {
            Some((self.dense(x, &p("query_id"))?, self.dense(x, &p("key_id"))?))
        } else {
            None
        };
        let mut pairs: Vec<(&Var, &Var)> = vec![(&qf, &kf)];
        if let Some((q, k)) = &position_pair {
            pairs.push((q, k));
        }
        if let Some((q, k)) = &id_pair {
            pairs.push((q, k));
        }
        let vx = self.dense(x, &p("value_id"))?;
        let va = if fused_output_read(kind, last) {
            Some(self.dense(f, &p("value_fused"))?)
        } else {
            None
        };
        let o = attention(
            self.tape,
            &pairs,
            &vx,
            va.as_ref(),
            position_values.as_ref(),
            lengths,
            &self.attention_config(),
        )?;
        let mut h_x = self.sublayer_end(&self.dense(&o.id, &p("output_id"))?, x, &p("norm_id"))?;
        let h_a = match &o.fused {
            Some(o_a) => Some(self.sublayer_end(
                &self.dense(o_a, &p("output_fused"))?,
                f,
                &p("norm_fused"),
            )?),
            None => None,
        };
        let h_p = match (&o.position, &streams.position) {
            (Some(o_p), Some(position)) => Some(self.sublayer_end(
                &self.dense(o_p, &p("output_position"))?,
                &position.residual,
                &p("norm_position"),
            )?),
            _ => None,
        };
        if let (true, Some(h_a)) = (kind.hie(), &h_a) {
            let homogeneous = hie(
                self.tape,
                &h_x,
                h_a,
                self.params.get(&p("hie_bases")),
                lengths,
                HieOptions {
                    keep_padding: cfg.hie_keep_padding,
                    ..HieOptions::default()
                },
                cfg.hie_gradient.into(),
            )?;
            h_x = add(self.tape, &h_x, &homogeneous)?;
        }
        let id = self.ffn(&h_x, &p("ffn_id"))?;
        let mut next = AsifStreams {
            id,
            fused: None,
            position: None,
        };
        if !last {
            next.fused = Some(self.ffn(h_a.as_ref().expect("h_A is read"), &p("ffn_fused"))?);
            if let Some(h_p) = h_p {
                next.position = Some(PositionStream::from_hidden(
                    self.ffn(&h_p, &p("ffn_position"))?,
                ));
            }
        }
        Ok(next)
    }
}

impl Model {
    /// Layer `layer` (0-based) of this ASIF-family model on `tape`: exactly the layer
    /// [`Model::forward`] runs (spec §3.2; see the module docs), on the streams `streams` with
    /// lengths L_b `[B]` and dropout seeds `seeds` (drawn in the model's order: attention, H_X,
    /// H_A, H_P, then FFN_X, FFN_A, FFN_P).
    ///
    /// `vars` are this model's parameters on `tape`, one per [`Model::parameters`] entry in that
    /// order (the layer reads its own by name: `layers.{layer}.*`). `streams.fused` is required,
    /// and `streams.position` exactly where the model has a position stream (layer 1's from
    /// [`PositionStream::from_table`]). Returns X' and, unless this is the last layer, F' and P'.
    pub fn asif_layer(
        &self,
        tape: &Tape,
        vars: &[Var],
        layer: usize,
        streams: &AsifStreams,
        lengths: &IndexTensor,
        seeds: &DropoutSeeds,
    ) -> Result<AsifStreams> {
        let cfg = &self.config;
        let bad = |m: String| Err(Error::argument("asif_layer", m));
        if cfg.kind.is_sasrec() {
            return bad(format!("{} has no ASIF layer", cfg.kind));
        }
        if layer >= cfg.layers {
            return bad(format!("layer {layer} of a {}-layer model", cfg.layers));
        }
        if vars.len() != self.parameters.len() {
            return bad(format!(
                "{} variables for {} parameters",
                vars.len(),
                self.parameters.len()
            ));
        }
        if let Some((v, p)) = vars
            .iter()
            .zip(&self.parameters)
            .find(|(v, p)| v.value().shape() != p.value.shape())
        {
            return bad(format!(
                "variable for `{}` is {:?}, the parameter {:?}",
                p.name,
                v.value().shape(),
                p.value.shape()
            ));
        }
        if streams.position.is_some() != cfg.kind.position_stream() {
            return bad(format!(
                "{} {} a position stream",
                cfg.kind,
                if cfg.kind.position_stream() {
                    "needs"
                } else {
                    "has no"
                }
            ));
        }
        let params = Params {
            vars,
            index: &self.index,
        };
        Sublayers {
            tape,
            config: cfg,
            params: &params,
            seeds,
        }
        .asif_layer(layer, streams, lengths)
    }
}
