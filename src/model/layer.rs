//! The layers a model stacks: the SASRec layer (spec §2) and one ASIF layer (spec §3.2), each a
//! typed block that creates its own parameters (deciding which exist) and runs its own forward.
//! An ASIF layer is public through [`super::Model::asif_layer`], what `benches/asif_layer.rs`
//! times against the eager PyTorch layer of `bench/peers/asif_layer.py` (the GPU check's
//! end-to-end row).
//!
//! An ASIF layer reads the three streams X (ID), F (fused, the paper's h_A) and P (position)
//! and, on the tape:
//! 1. projects Q_f, K_f from F, Q_p, K_p from P (and, for `asif_wo_fa`, Q_x, K_x from X), and the
//!    values V_X = X W_v1, V_A = F W_v2, V_P = P W_v3;
//! 2. runs the fused dual-score attention (eqs. 3 to 5: Π_X, Π_A, Π_P with one mask and one
//!    attention-dropout mask) giving O_X, O_A, O_P;
//! 3. per stream H_s = LN_s(Drop(O_s W_os + b) + residual) (the fused residual + LN op);
//! 4. HIE after the sublayer LN (A4): H_X ← H_X + HIE(H_X, H_A);
//! 5. per-stream FFNs (A5): X' = FFN_X(H_X), F' = FFN_A(H_A), P' = FFN_P(H_P).
//!
//! The last layer builds only what is read afterwards (X'; H_A for HIE): see `docs/model.md`.
use crate::autograd::{Tape, Var};
use crate::ops::add::add;
use crate::ops::attention::attention_seeded;
use crate::ops::hie::{hie, HieOptions};
use crate::ops::linear::linear;
use crate::{Error, IndexTensor, Result, Tensor};

use super::blocks::{FeedForward, LayerNorm, Linear};
use super::forward::Forward;
use super::parameters::{Block, Init, ParameterBuilder, ParameterId};

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

fn reshape(tape: &Tape, x: &Var, shape: &[usize]) -> Result<Var> {
    let original = x.value().shape().to_vec();
    let id = x.id();
    Ok(tape.record(x.value().reshape(shape)?, move |dy| {
        Ok(vec![(id, dy.reshape(&original)?)])
    }))
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

/// One SASRec layer `layers.{l}.*`: one score pair and value from X, H = LN(Drop(O W_o) + X),
/// X' = FFN(H).
#[derive(Debug, Clone)]
pub(super) struct SasRecLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    attention_norm: LayerNorm,
    ffn: FeedForward,
}

impl SasRecLayer {
    pub fn new(builder: &mut ParameterBuilder, l: usize) -> Result<SasRecLayer> {
        let cfg = builder.config();
        let (d, inner) = (cfg.hidden_size, cfg.inner_size);
        let p = |s: &str| format!("layers.{l}.{s}");
        Ok(SasRecLayer {
            query: Linear::square(builder, &p("query"), d)?,
            key: Linear::square(builder, &p("key"), d)?,
            value: Linear::square(builder, &p("value"), d)?,
            output: Linear::square(builder, &p("output"), d)?,
            attention_norm: LayerNorm::new(builder, &p("attention_norm"), d)?,
            ffn: FeedForward::new(builder, &p("ffn"), d, inner)?,
        })
    }

    pub fn forward(&self, pass: &Forward, x: &Var, lengths: &IndexTensor) -> Result<Var> {
        let q = self.query.forward(pass, x)?;
        let k = self.key.forward(pass, x)?;
        let v = self.value.forward(pass, x)?;
        let (config, seed) = pass.attention_config();
        let o = attention_seeded(
            pass.tape,
            &[(&q, &k)],
            &v,
            None,
            None,
            lengths,
            &config,
            seed,
        )?;
        let y = self.output.forward(pass, &o.id)?;
        let h = self.attention_norm.residual(pass, &y, x)?;
        self.ffn.forward(pass, &h)
    }
}

impl Block for SasRecLayer {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        for linear in [&self.query, &self.key, &self.value, &self.output] {
            linear.visit(visitor);
        }
        self.attention_norm.visit(visitor);
        self.ffn.visit(visitor);
    }
}

/// A stream's value projection, output projection and sublayer norm (`value_s`, `output_s`,
/// `norm_s`): built where the stream's H_s is read.
#[derive(Debug, Clone)]
struct StreamOutput {
    value: Linear,
    output: Linear,
    norm: LayerNorm,
}

impl StreamOutput {
    fn new(builder: &mut ParameterBuilder, l: usize, stream: &str) -> Result<StreamOutput> {
        let d = builder.config().hidden_size;
        let p = |s: &str| format!("layers.{l}.{s}_{stream}");
        Ok(StreamOutput {
            value: Linear::square(builder, &p("value"), d)?,
            output: Linear::square(builder, &p("output"), d)?,
            norm: LayerNorm::new(builder, &p("norm"), d)?,
        })
    }

    /// H_s = LN_s(Drop(O_s W_os + b) + residual).
    fn sublayer_end(&self, pass: &Forward, o: &Var, residual: &Var) -> Result<Var> {
        let y = self.output.forward(pass, o)?;
        self.norm.residual(pass, &y, residual)
    }
}

impl Block for StreamOutput {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        self.value.visit(visitor);
        self.output.visit(visitor);
        self.norm.visit(visitor);
    }
}

/// A pair of score projections (Q, K) from one stream.
#[derive(Debug, Clone)]
struct ScorePair {
    query: Linear,
    key: Linear,
}

impl ScorePair {
    fn new(builder: &mut ParameterBuilder, l: usize, stream: &str) -> Result<ScorePair> {
        let d = builder.config().hidden_size;
        Ok(ScorePair {
            query: Linear::square(builder, &format!("layers.{l}.query_{stream}"), d)?,
            key: Linear::square(builder, &format!("layers.{l}.key_{stream}"), d)?,
        })
    }

    fn forward(&self, pass: &Forward, x: &Var) -> Result<(Var, Var)> {
        Ok((self.query.forward(pass, x)?, self.key.forward(pass, x)?))
    }
}

impl Block for ScorePair {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        self.query.visit(visitor);
        self.key.visit(visitor);
    }
}

/// Layer `l` of an ASIF-family model, `layers.{l}.*` (spec §3.2, steps 1 to 7; module docs).
#[derive(Debug, Clone)]
pub(super) struct AsifLayer {
    /// C_XA's pair from F.
    fused_scores: ScorePair,
    /// V_X.
    value_id: Linear,
    /// C_P's pair from P, where the model has a position stream.
    position_scores: Option<ScorePair>,
    /// C_X's pair from X (`asif_wo_fa`).
    id_scores: Option<ScorePair>,
    output_id: Linear,
    norm_id: LayerNorm,
    /// V_A, W_oA, LN_A: where H_A is read (by the next layer, or by HIE).
    fused_output: Option<StreamOutput>,
    /// V_P, W_oP, LN_P: where H_P is read (by the next layer).
    position_output: Option<StreamOutput>,
    /// HIE's fixed random bases W_r `[n, r]`.
    hie_bases: Option<ParameterId>,
    ffn_id: FeedForward,
    /// FFN_A and FFN_P: not in the last layer, whose F' and P' nobody reads.
    ffn_fused: Option<FeedForward>,
    ffn_position: Option<FeedForward>,
}

impl AsifLayer {
    /// Layer `l` of `layers`. Only X is read out after the last layer, so there h_P (and,
    /// without HIE, h_A) is never read: those values, output projections, norms and FFNs would
    /// get no gradient, and are not built. This is the one place that decides it.
    pub fn new(builder: &mut ParameterBuilder, l: usize, layers: usize) -> Result<AsifLayer> {
        let cfg = builder.config();
        let switches = cfg.kind.switches();
        let (d, n, inner, rank) = (cfg.hidden_size, cfg.max_len, cfg.inner_size, cfg.hie_rank);
        let last = l + 1 == layers;
        let fused_read = !last || switches.hie;
        let position_read = switches.position_stream && !last;
        let p = |s: &str| format!("layers.{l}.{s}");
        let fused_scores = ScorePair::new(builder, l, "fused")?;
        let value_id = Linear::square(builder, &p("value_id"), d)?;
        let position_scores = match switches.position_stream {
            true => Some(ScorePair::new(builder, l, "position")?),
            false => None,
        };
        let id_scores = match switches.id_scores {
            true => Some(ScorePair::new(builder, l, "id")?),
            false => None,
        };
        let output_id = Linear::square(builder, &p("output_id"), d)?;
        let norm_id = LayerNorm::new(builder, &p("norm_id"), d)?;
        let fused_output = match fused_read {
            true => Some(StreamOutput::new(builder, l, "fused")?),
            false => None,
        };
        let position_output = match position_read {
            true => Some(StreamOutput::new(builder, l, "position")?),
            false => None,
        };
        let hie_bases = match switches.hie {
            true => Some(builder.add(p("hie_bases"), &[n, rank], Init::StandardNormal)?),
            false => None,
        };
        let ffn_id = FeedForward::new(builder, &p("ffn_id"), d, inner)?;
        let (mut ffn_fused, mut ffn_position) = (None, None);
        if !last {
            ffn_fused = Some(FeedForward::new(builder, &p("ffn_fused"), d, inner)?);
            if switches.position_stream {
                ffn_position = Some(FeedForward::new(builder, &p("ffn_position"), d, inner)?);
            }
        }
        Ok(AsifLayer {
            fused_scores,
            value_id,
            position_scores,
            id_scores,
            output_id,
            norm_id,
            fused_output,
            position_output,
            hie_bases,
            ffn_id,
            ffn_fused,
            ffn_position,
        })
    }

    /// Whether this layer reads a position stream.
    pub fn reads_positions(&self) -> bool {
        self.position_scores.is_some()
    }

    pub fn forward(
        &self,
        pass: &Forward,
        streams: &AsifStreams,
        lengths: &IndexTensor,
    ) -> Result<AsifStreams> {
        let tape = pass.tape;
        let cfg = pass.config;
        let x = &streams.id;
        let f = streams
            .fused
            .as_ref()
            .ok_or_else(|| Error::argument("asif_layer", "the fused stream F is missing"))?;
        let (qf, kf) = self.fused_scores.forward(pass, f)?;
        let mut position_pair = None;
        let mut position_values = None;
        if let (Some(scores), Some(position)) = (&self.position_scores, &streams.position) {
            let ps = &position.source;
            position_pair = Some(scores.forward(pass, ps)?);
            if let Some(output) = &self.position_output {
                position_values = Some(output.value.forward(pass, ps)?);
            }
        }
        let id_pair = match &self.id_scores {
            Some(scores) => Some(scores.forward(pass, x)?),
            None => None,
        };
        let mut pairs: Vec<(&Var, &Var)> = vec![(&qf, &kf)];
        if let Some((q, k)) = &position_pair {
            pairs.push((q, k));
        }
        if let Some((q, k)) = &id_pair {
            pairs.push((q, k));
        }
        let vx = self.value_id.forward(pass, x)?;
        let va = match &self.fused_output {
            Some(output) => Some(output.value.forward(pass, f)?),
            None => None,
        };
        let (config, seed) = pass.attention_config();
        let o = attention_seeded(
            tape,
            &pairs,
            &vx,
            va.as_ref(),
            position_values.as_ref(),
            lengths,
            &config,
            seed,
        )?;
        let mut h_x = self
            .norm_id
            .residual(pass, &self.output_id.forward(pass, &o.id)?, x)?;
        let h_a = match (&o.fused, &self.fused_output) {
            (Some(o_a), Some(output)) => Some(output.sublayer_end(pass, o_a, f)?),
            _ => None,
        };
        let h_p = match (&o.position, &self.position_output, &streams.position) {
            (Some(o_p), Some(output), Some(position)) => {
                Some(output.sublayer_end(pass, o_p, &position.residual)?)
            }
            _ => None,
        };
        if let (Some(bases), Some(h_a)) = (self.hie_bases, &h_a) {
            let homogeneous = hie(
                tape,
                &h_x,
                h_a,
                pass.parameter(bases),
                lengths,
                HieOptions {
                    keep_padding: cfg.hie_keep_padding,
                    ..HieOptions::default()
                },
                cfg.hie_gradient.into(),
            )?;
            h_x = add(tape, &h_x, &homogeneous)?;
        }
        let id = self.ffn_id.forward(pass, &h_x)?;
        let mut next = AsifStreams {
            id,
            fused: None,
            position: None,
        };
        if let Some(ffn) = &self.ffn_fused {
            let h_a = h_a.ok_or_else(|| Error::argument("asif_layer", "H_A is not built"))?;
            next.fused = Some(ffn.forward(pass, &h_a)?);
        }
        if let (Some(ffn), Some(h_p)) = (&self.ffn_position, h_p) {
            next.position = Some(PositionStream::from_hidden(ffn.forward(pass, &h_p)?));
        }
        Ok(next)
    }
}

impl Block for AsifLayer {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        self.fused_scores.visit(visitor);
        self.value_id.visit(visitor);
        self.position_scores.visit(visitor);
        self.id_scores.visit(visitor);
        self.output_id.visit(visitor);
        self.norm_id.visit(visitor);
        self.fused_output.visit(visitor);
        self.position_output.visit(visitor);
        self.hie_bases.visit(visitor);
        self.ffn_id.visit(visitor);
        self.ffn_fused.visit(visitor);
        self.ffn_position.visit(visitor);
    }
}
