//! The NOVA layer (Liu et al., AAAI'21, "Non-invasive self-attention for side information
//! fusion in sequential recommendation"; spec §4's NOVA row and A14), `layers.{l}.*`.
//!
//! NOVA keeps the side information out of the ID stream: the values (and so the residual
//! stream X) are IDs only, and the attributes and positions enter only the attention scores'
//! query and key, through a fused stream recomputed in every layer:
//!
//! 1. G = LN_g(𝓕(X^{l−1}, A_1 … A_m, E_P)): the layer's own fusion (`layers.{l}.fusion.*`, the
//!    config's `sum`, `concat` or `gate`) of the current ID state with the raw attribute
//!    embeddings and the raw position table (side sources `attribute.{j}` and `position`),
//!    then a layer norm (`layers.{l}.fused_norm`; A14 recommends one to match the scales of the
//!    layer-normed X and the raw tables). No dropout on G.
//! 2. C = (G W_q)(G W_k)ᵀ, V = X W_v: one score pair, so this is the attention op's one-pair
//!    mode (the SASRec form, `docs/attention.md`), with the fused pair from G.
//! 3. H = LN(Drop(O W_o + b) + X), X' = FFN(H), as SASRec.
//!
//! The attribute and position embeddings are never updated by a layer: every layer reads the
//! same raw A_j and E_P ([`NovaSideInformation`], built once per pass).
//!
//! Adding NOVA touched this file and the kind table (`config.rs`: the kind, its switches and
//! its layer); `mod.rs` stacks the layer (the `Layers` variant, the constructor's arm and the
//! encoder's arm) and `fusion.rs` takes a name prefix and named side sources so a layer can own
//! a fusion.
use crate::autograd::{Tape, Var};
use crate::ops::add::add;
use crate::ops::attention::attention_seeded;
use crate::{Error, IndexTensor, Result};

use super::blocks::{FeedForward, LayerNorm, Linear};
use super::forward::Forward;
use super::fusion::FusionBlock;
use super::parameters::{Block, ParameterBuilder, ParameterId};

/// The raw side sources every NOVA layer fuses with its ID state: A_1 … A_m and E_P broadcast
/// to `[B, n, d]`, and their sum (the `sum` fusion's term).
pub(super) struct NovaSideInformation {
    sources: Vec<Var>,
    sum: Var,
}

impl NovaSideInformation {
    /// From the pooled attribute embeddings A_j `[B, n, d]`, their sum and E_P broadcast to
    /// `[B, n, d]`.
    pub fn new(
        tape: &Tape,
        attributes: &[Var],
        attribute_sum: Option<&Var>,
        positions: Var,
    ) -> Result<NovaSideInformation> {
        let attribute_sum = attribute_sum
            .ok_or_else(|| Error::argument("nova_layer", "no attribute embeddings"))?;
        let sum = add(tape, attribute_sum, &positions)?;
        let mut sources = attributes.to_vec();
        sources.push(positions);
        Ok(NovaSideInformation { sources, sum })
    }
}

/// One NOVA layer `layers.{l}.*` (module docs).
#[derive(Debug, Clone)]
pub(super) struct NovaLayer {
    /// 𝓕 of X with A_1 … A_m and E_P.
    fusion: FusionBlock,
    /// LN_g of G.
    fused_norm: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    attention_norm: LayerNorm,
    ffn: FeedForward,
}

impl NovaLayer {
    /// Layer `l` of a model with `n_attributes` attribute types.
    pub fn new(builder: &mut ParameterBuilder, l: usize, n_attributes: usize) -> Result<NovaLayer> {
        let cfg = builder.config();
        let (d, inner, fusion) = (cfg.hidden_size, cfg.inner_size, cfg.fusion);
        let p = |s: &str| format!("layers.{l}.{s}");
        let mut sources: Vec<String> = (0..n_attributes)
            .map(|j| format!("attribute.{j}"))
            .collect();
        sources.push("position".into());
        Ok(NovaLayer {
            fusion: FusionBlock::named(builder, &p("fusion"), fusion, d, &sources)?,
            fused_norm: LayerNorm::new(builder, &p("fused_norm"), d)?,
            query: Linear::square(builder, &p("query"), d)?,
            key: Linear::square(builder, &p("key"), d)?,
            value: Linear::square(builder, &p("value"), d)?,
            output: Linear::square(builder, &p("output"), d)?,
            attention_norm: LayerNorm::new(builder, &p("attention_norm"), d)?,
            ffn: FeedForward::new(builder, &p("ffn"), d, inner)?,
        })
    }

    /// X' from X `[B, n, d]` and the raw side sources (dropout sites: attention, the sublayer
    /// end, the FFN).
    pub fn forward(
        &self,
        pass: &Forward,
        x: &Var,
        side: &NovaSideInformation,
        lengths: &IndexTensor,
    ) -> Result<Var> {
        let fused = self
            .fusion
            .forward(pass, x, &side.sources, Some(&side.sum))?;
        let g = self.fused_norm.forward(pass, &fused)?;
        let q = self.query.forward(pass, &g)?;
        let k = self.key.forward(pass, &g)?;
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

impl Block for NovaLayer {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        self.fusion.visit(visitor);
        self.fused_norm.visit(visitor);
        for linear in [&self.query, &self.key, &self.value, &self.output] {
            linear.visit(visitor);
        }
        self.attention_norm.visit(visitor);
        self.ffn.visit(visitor);
    }
}
