//! The fusion 𝓕 of the item embeddings E_X and the attribute embeddings A_1 … A_m (spec §2,
//! `docs/blocks.md`): sum, concat (a linear map of each, summed) or gate (RecBole's
//! VanillaAttention over the stacked sources).
use crate::autograd::Var;
use crate::ops::add::add;
use crate::ops::relu::relu;
use crate::ops::source_attention::{source_attention, stack_sources};
use crate::{Error, Result};

use super::blocks::Linear;
use super::forward::Forward;
use super::parameters::{Block, ParameterBuilder, ParameterId};
use super::Fusion;

/// The fusion's weights, as the config's [`Fusion`] asks.
#[derive(Debug, Clone)]
pub(super) enum FusionBlock {
    /// E_X + Σ_j A_j: no weights.
    Sum,
    /// E_X W_x + b + Σ_j A_j W_j: `fusion.item` and `fusion.attribute.{j}` (no bias).
    Concat {
        item: Linear,
        attributes: Vec<Linear>,
    },
    /// Σ_k softmax_k(e_k) s_k over the sources s = [E_X; A_1 … A_m], with
    /// e = w₂ᵀ ReLU(W₁ s + b₁): `fusion.gate.projection.0` (W₁, b₁) and
    /// `fusion.gate.projection.2` (w₂), named after RecBole's nn.Sequential indices. RecBole's b₂
    /// is not built: e_k + b₂ shifts every energy of a position alike, so the softmax cancels it
    /// and its gradient is identically zero.
    Gate { projection: Linear, energy: Linear },
}

impl FusionBlock {
    /// The fusion of `n_attributes` attribute types at width `d`, named `fusion.*`.
    pub fn new(
        builder: &mut ParameterBuilder,
        fusion: Fusion,
        d: usize,
        n_attributes: usize,
    ) -> Result<FusionBlock> {
        let sources: Vec<String> = (0..n_attributes)
            .map(|j| format!("attribute.{j}"))
            .collect();
        FusionBlock::named(builder, "fusion", fusion, d, &sources)
    }

    /// The fusion of the item stream with the side sources named `sources` (in the order
    /// [`FusionBlock::forward`] receives them), its parameters under `prefix`: concat's maps are
    /// `{prefix}.item` and `{prefix}.{source}`, gate's `{prefix}.gate.projection.{0,2}`.
    pub fn named(
        builder: &mut ParameterBuilder,
        prefix: &str,
        fusion: Fusion,
        d: usize,
        sources: &[String],
    ) -> Result<FusionBlock> {
        Ok(match fusion {
            Fusion::Sum => FusionBlock::Sum,
            Fusion::Concat => FusionBlock::Concat {
                item: Linear::new(builder, &format!("{prefix}.item"), d, d, true)?,
                attributes: sources
                    .iter()
                    .map(|source| Linear::new(builder, &format!("{prefix}.{source}"), d, d, false))
                    .collect::<Result<_>>()?,
            },
            Fusion::Gate => FusionBlock::Gate {
                projection: Linear::new(
                    builder,
                    &format!("{prefix}.gate.projection.0"),
                    d,
                    d,
                    true,
                )?,
                energy: Linear::new(builder, &format!("{prefix}.gate.projection.2"), d, 1, false)?,
            },
        })
    }

    /// 𝓕(x, A): `attributes` are A_1 … A_m, `attribute_sum` their sum.
    pub fn forward(
        &self,
        pass: &Forward,
        x: &Var,
        attributes: &[Var],
        attribute_sum: Option<&Var>,
    ) -> Result<Var> {
        let tape = pass.tape;
        match self {
            FusionBlock::Sum => {
                let sum = attribute_sum
                    .ok_or_else(|| Error::argument("fusion", "no attribute embeddings"))?;
                add(tape, x, sum)
            }
            FusionBlock::Concat {
                item,
                attributes: maps,
            } => {
                let mut y = item.forward(pass, x)?;
                for (map, a) in maps.iter().zip(attributes) {
                    y = add(tape, &y, &map.forward(pass, a)?)?;
                }
                Ok(y)
            }
            FusionBlock::Gate { projection, energy } => {
                // [E_X; A_1 … A_m] → [B, n, m+1, d]; e = w₂ᵀ ReLU(W₁ x_k + b₁) → [B, n, m+1, 1].
                let mut sources = vec![x];
                sources.extend(attributes.iter());
                let stacked = stack_sources(tape, &sources)?;
                let hidden = relu(tape, &projection.forward(pass, &stacked)?)?;
                let energies = energy.forward(pass, &hidden)?;
                source_attention(tape, &stacked, &energies)
            }
        }
    }
}

impl Block for FusionBlock {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        match self {
            FusionBlock::Sum => {}
            FusionBlock::Concat { item, attributes } => {
                item.visit(visitor);
                attributes.visit(visitor);
            }
            FusionBlock::Gate { projection, energy } => {
                projection.visit(visitor);
                energy.visit(visitor);
            }
        }
    }
}
