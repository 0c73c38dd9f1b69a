//! The basic parameter blocks: a linear map, a layer norm and the position-wise feed-forward
//! network, each created with its checkpoint names and run through its own forward.
use crate::autograd::Var;
use crate::kernel_version::{self, KernelVersion};
use crate::ops::bias_gelu::{self, bias_gelu};
use crate::ops::gelu::gelu;
use crate::ops::layer_norm::layer_norm;
use crate::ops::linear::linear;
use crate::ops::residual_norm::{residual_layer_norm, DropoutSettings};
use crate::Result;

use super::forward::Forward;
use super::parameters::{Block, Init, ParameterBuilder, ParameterId};

/// x W (+ b): `{prefix}.weight` `[d_in, d_out]` N(0, σ) and `{prefix}.bias` `[d_out]` zeros.
#[derive(Debug, Clone)]
pub(super) struct Linear {
    weight: ParameterId,
    bias: Option<ParameterId>,
}

impl Linear {
    pub fn new(
        builder: &mut ParameterBuilder,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Linear> {
        let weight = builder.add(format!("{prefix}.weight"), &[d_in, d_out], Init::NORMAL)?;
        let bias = if bias {
            Some(builder.add(format!("{prefix}.bias"), &[d_out], Init::Constant(0.0))?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A d × d linear with bias (the attention projections).
    pub fn square(builder: &mut ParameterBuilder, prefix: &str, d: usize) -> Result<Linear> {
        Linear::new(builder, prefix, d, d, true)
    }

    pub fn forward(&self, pass: &Forward, x: &Var) -> Result<Var> {
        linear(
            pass.tape,
            x,
            pass.parameter(self.weight),
            self.bias.map(|b| pass.parameter(b)),
        )
    }

    /// GELU(x W + b). Where the kernel family `bias_gelu` is at v2 (issue 20), the bias add is
    /// fused into GELU (`ops::bias_gelu`: the GEMM without its bias, then one pass; the same
    /// bits); at v1, the default, the linear op adds the bias and GELU follows.
    pub fn forward_gelu(&self, pass: &Forward, x: &Var) -> Result<Var> {
        match self.bias {
            Some(bias) if kernel_version::selected(bias_gelu::FAMILY)? == KernelVersion::V2 => {
                let y = linear(pass.tape, x, pass.parameter(self.weight), None)?;
                bias_gelu(pass.tape, &y, pass.parameter(bias))
            }
            _ => gelu(pass.tape, &self.forward(pass, x)?),
        }
    }
}

impl Block for Linear {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        self.weight.visit(visitor);
        self.bias.visit(visitor);
    }
}

/// Layer norm: `{prefix}.weight` (γ = 1) and `{prefix}.bias` (β = 0), `[d]`.
#[derive(Debug, Clone)]
pub(super) struct LayerNorm {
    weight: ParameterId,
    bias: ParameterId,
}

impl LayerNorm {
    pub fn new(builder: &mut ParameterBuilder, prefix: &str, d: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: builder.add(format!("{prefix}.weight"), &[d], Init::Constant(1.0))?,
            bias: builder.add(format!("{prefix}.bias"), &[d], Init::Constant(0.0))?,
        })
    }

    /// LN(x).
    pub fn forward(&self, pass: &Forward, x: &Var) -> Result<Var> {
        layer_norm(
            pass.tape,
            x,
            pass.parameter(self.weight),
            pass.parameter(self.bias),
            pass.config.layer_norm_eps,
        )
    }

    /// A sublayer's end: LN(Dropout(y) + residual) (one seed), the fused residual + LN op.
    pub fn residual(&self, pass: &Forward, y: &Var, residual: &Var) -> Result<Var> {
        residual_layer_norm(
            pass.tape,
            y,
            residual,
            pass.parameter(self.weight),
            pass.parameter(self.bias),
            pass.config.layer_norm_eps,
            DropoutSettings {
                p: pass.config.hidden_dropout,
                seed: pass.seeds.next_seed(),
                mode: pass.seeds.mode,
            },
        )
    }
}

impl Block for LayerNorm {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        self.weight.visit(visitor);
        self.bias.visit(visitor);
    }
}

/// The position-wise FFN: LN(Drop(GELU(x W_1 + b_1) W_2 + b_2) + x), as `{prefix}.dense1`,
/// `{prefix}.dense2` and `{prefix}.norm`.
#[derive(Debug, Clone)]
pub(super) struct FeedForward {
    dense1: Linear,
    dense2: Linear,
    norm: LayerNorm,
}

impl FeedForward {
    pub fn new(
        builder: &mut ParameterBuilder,
        prefix: &str,
        d: usize,
        inner: usize,
    ) -> Result<FeedForward> {
        Ok(FeedForward {
            dense1: Linear::new(builder, &format!("{prefix}.dense1"), d, inner, true)?,
            dense2: Linear::new(builder, &format!("{prefix}.dense2"), inner, d, true)?,
            norm: LayerNorm::new(builder, &format!("{prefix}.norm"), d)?,
        })
    }

    pub fn forward(&self, pass: &Forward, x: &Var) -> Result<Var> {
        let h = self.dense1.forward_gelu(pass, x)?;
        let y = self.dense2.forward(pass, &h)?;
        self.norm.residual(pass, &y, x)
    }
}

impl Block for FeedForward {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        self.dense1.visit(visitor);
        self.dense2.visit(visitor);
        self.norm.visit(visitor);
    }
}
