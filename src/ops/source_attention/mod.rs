//! The fusion gate 𝓕_gate of spec §3.1: RecBole's `VanillaAttention` over the K = m + 1 stacked
//! vectors [E_X; A_1 … A_m] of every position. Kernels: `kernels/source_attention.cu`; derivation
//! and floors: `docs/source_attention.md`.
//!
//! 𝓕_gate = Σ_k α_k x_k with α = softmax_k(e), e_k = w₂ᵀ ReLU(W₁ x_k + b₁) (+ b₂, which cancels in
//! the softmax). The two projections run on [`crate::ops::linear`] and the ReLU on
//! [`crate::ops::relu`]; this op holds the rest:
//! - [`stack_sources`]: K tensors `[.., d]` → `[.., K, d]` (the input of both the projection and
//!   the pooling);
//! - [`source_attention`]: the softmax over K and the weighted sum, forward and backward fused
//!   (saves α).
//!
//! Plain kernel API: [`stack_sources_forward`], [`unstack_source`], [`source_attention_forward`],
//! [`source_attention_backward`].
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::{
    backward as backward_reference, forward as forward_reference, stack as stack_reference,
    unstack as unstack_reference,
};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::{check_kernel_len, record_one, run, run_one, DeviceOp};
use crate::{Error, Result, Tensor};

/// Most sources K the kernels take (one warp lane per source).
pub const MAX_SOURCES: usize = 32;

const OP: &str = "source_attention";

/// The problem descriptor of the four passes: `rows` R of `k_sources` K sources of width `d`, the
/// source `slot` (unstacking only) and the shapes of the pass's outputs.
#[derive(Debug, Clone)]
struct SourceProblem {
    rows: usize,
    k_sources: usize,
    d: usize,
    slot: usize,
    output_shapes: Vec<Vec<usize>>,
}

impl SourceProblem {
    /// R·K·d, the stacked tensor's length: the 32-bit check of stacking and its allocation on
    /// the kernel devices both read it here.
    fn stacked_len(&self) -> usize {
        self.rows * self.k_sources * self.d
    }
}

/// The four passes under the op contract: stacking (inputs: the K sources), unstacking (input:
/// the stacked tensor), the pooling forward (sources, energies → out, α) and backward (sources,
/// α, dout → dsources, denergies).
enum Pass {
    Stack,
    Unstack,
    Forward,
    Backward,
}

impl DeviceOp for Pass {
    type Problem = SourceProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &SourceProblem) -> Vec<Vec<usize>> {
        p.output_shapes.clone()
    }
    fn reference(&self, p: &SourceProblem, v: &[&[f32]], _: &[&[i32]]) -> Result<Vec<Vec<f32>>> {
        Ok(match self {
            Pass::Stack => vec![cpu::stack(v, p.d)],
            Pass::Unstack => vec![cpu::unstack(v[0], p.k_sources, p.slot, p.d)],
            Pass::Forward => {
                let (out, weights) = cpu::forward(v[0], v[1], p.k_sources, p.d);
                vec![out, weights]
            }
            Pass::Backward => {
                let (ds, de) = cpu::backward(v[0], v[1], v[2], p.k_sources, p.d);
                vec![ds, de]
            }
        })
    }
    fn launch(
        &self,
        p: &SourceProblem,
        device: &Device,
        v: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let (rows, k, d) = (p.rows, p.k_sources, p.d);
        Ok(match self {
            Pass::Stack => vec![cuda::stack(device, v, p.stacked_len(), rows, d)?],
            Pass::Unstack => vec![cuda::unstack(device, v[0], rows, k, p.slot, d)?],
            Pass::Forward => {
                let (out, weights) = cuda::forward(device, v[0], v[1], rows, k, d)?;
                vec![out, weights]
            }
            Pass::Backward => {
                let (ds, de) = cuda::backward(device, v[0], v[1], v[2], rows, k, d)?;
                vec![ds, de]
            }
        })
    }
}

/// Stacks K tensors of one shape `[.., d]` into `[.., K, d]` (source k at index k of the new
/// second-to-last axis).
pub fn stack_sources_forward(sources: &[&Tensor]) -> Result<Tensor> {
    let Some(first) = sources.first() else {
        return Err(Error::argument(OP, "no sources to stack"));
    };
    if sources.len() > MAX_SOURCES {
        return Err(Error::argument(
            OP,
            format!(
                "{} sources exceed the kernel's {MAX_SOURCES}",
                sources.len()
            ),
        ));
    }
    let shape = first.shape();
    let Some(&d) = shape.last() else {
        return Err(Error::shape(OP, "sources must have at least one axis"));
    };
    for s in sources {
        first.same_device(OP, s)?;
        if s.shape() != shape {
            return Err(Error::shape(
                OP,
                format!("sources differ in shape: {:?} and {:?}", shape, s.shape()),
            ));
        }
    }
    let rows = first.len().checked_div(d).unwrap_or(0);
    let mut out_shape = shape.to_vec();
    out_shape.insert(shape.len() - 1, sources.len());
    let problem = SourceProblem {
        rows,
        k_sources: sources.len(),
        d,
        slot: 0,
        output_shapes: vec![out_shape],
    };
    check_kernel_len(OP, problem.stacked_len())?;
    run_one(&Pass::Stack, &problem, sources, &[])
}

/// `(rows R, K, d)` of a stacked `[.., K, d]` tensor.
fn stacked_dims(stacked: &Tensor) -> Result<(usize, usize, usize)> {
    let shape = stacked.shape();
    if shape.len() < 2 {
        return Err(Error::shape(
            OP,
            format!("stacked sources must be [.., K, d], got {shape:?}"),
        ));
    }
    let (k_sources, d) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if k_sources == 0 || k_sources > MAX_SOURCES || d == 0 {
        return Err(Error::shape(
            OP,
            format!("stacked sources {shape:?}: need 1 ≤ K ≤ {MAX_SOURCES} and d ≥ 1"),
        ));
    }
    check_kernel_len(OP, stacked.len())?;
    Ok((stacked.len() / (k_sources * d), k_sources, d))
}

/// Source `slot` of a stacked `[.., K, d]` tensor, shape `[.., d]` (the backward of stacking).
pub fn unstack_source(stacked: &Tensor, slot: usize) -> Result<Tensor> {
    let (rows, k_sources, d) = stacked_dims(stacked)?;
    if slot >= k_sources {
        return Err(Error::argument(OP, format!("source {slot} of {k_sources}")));
    }
    let shape = stacked.shape();
    let mut out_shape = shape[..shape.len() - 2].to_vec();
    out_shape.push(d);
    let problem = SourceProblem {
        rows,
        k_sources,
        d,
        slot,
        output_shapes: vec![out_shape],
    };
    run_one(&Pass::Unstack, &problem, &[stacked], &[])
}

/// Tape face of stacking: each source gets its slice of the upstream gradient.
pub fn stack_sources(tape: &Tape, sources: &[&Var]) -> Result<Var> {
    let values: Vec<&Tensor> = sources.iter().map(|s| s.value()).collect();
    let stacked = stack_sources_forward(&values)?;
    let slots = sources.len();
    Ok(record_one(tape, sources, stacked, move |dy| {
        (0..slots)
            .map(|slot| Ok(Some(unstack_source(dy, slot)?)))
            .collect()
    }))
}

/// `(R, K, d)` after checking `energies` against stacked `sources`: energies are `[.., K]` or
/// `[.., K, 1]` (the linear op's output) with the sources' leading axes.
fn pool_dims(sources: &Tensor, energies: &Tensor) -> Result<(usize, usize, usize)> {
    let (rows, k_sources, d) = stacked_dims(sources)?;
    sources.same_device(OP, energies)?;
    let lead = &sources.shape()[..sources.shape().len() - 1];
    let e = energies.shape();
    if e != lead && !(e.len() == lead.len() + 1 && e[..lead.len()] == *lead && e[lead.len()] == 1) {
        return Err(Error::shape(
            OP,
            format!(
                "energies must be {lead:?} or {lead:?} + [1] for sources {:?}, got {e:?}",
                sources.shape()
            ),
        ));
    }
    Ok((rows, k_sources, d))
}

/// The pooling's output and what its backward needs.
#[derive(Debug, Clone)]
pub struct SourceAttentionOutput {
    /// Σ_k α_k x_k, shape `[.., d]`.
    pub out: Tensor,
    /// α = softmax_k(e), shape `[.., K]`.
    pub weights: Tensor,
}

/// α = softmax over K of `energies`, and Σ_k α_k `sources[.., k, :]`.
pub fn source_attention_forward(
    sources: &Tensor,
    energies: &Tensor,
) -> Result<SourceAttentionOutput> {
    let (rows, k_sources, d) = pool_dims(sources, energies)?;
    let shape = sources.shape();
    let lead = &shape[..shape.len() - 2];
    let out_shape: Vec<usize> = lead.iter().copied().chain([d]).collect();
    let weight_shape: Vec<usize> = lead.iter().copied().chain([k_sources]).collect();
    let problem = SourceProblem {
        rows,
        k_sources,
        d,
        slot: 0,
        output_shapes: vec![out_shape, weight_shape],
    };
    let [out, weights]: [Tensor; 2] = run(&Pass::Forward, &problem, &[sources, energies], &[])?
        .try_into()
        .map_err(|_| Error::shape(OP, "the pooling makes its output and α"))?;
    Ok(SourceAttentionOutput { out, weights })
}

/// `(dsources [.., K, d], denergies [.., K])` from the saved α and the upstream `dout [.., d]`.
pub fn source_attention_backward(
    sources: &Tensor,
    weights: &Tensor,
    dout: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (rows, k_sources, d) = pool_dims(sources, weights)?;
    sources.same_device(OP, dout)?;
    let shape = sources.shape();
    let lead = &shape[..shape.len() - 2];
    if dout.shape().split_last() != Some((&d, lead)) {
        return Err(Error::shape(
            OP,
            format!(
                "dout must be {lead:?} + [{d}] for sources {shape:?}, got {:?}",
                dout.shape()
            ),
        ));
    }
    let problem = SourceProblem {
        rows,
        k_sources,
        d,
        slot: 0,
        output_shapes: vec![shape.to_vec(), weights.shape().to_vec()],
    };
    let [dsources, denergies]: [Tensor; 2] =
        run(&Pass::Backward, &problem, &[sources, weights, dout], &[])?
            .try_into()
            .map_err(|_| Error::shape(OP, "the pooling's backward makes two gradients"))?;
    Ok((dsources, denergies))
}

/// Tape face of the pooling: `sources` `[.., K, d]` (from [`stack_sources`]), `energies` `[.., K]`
/// or `[.., K, 1]`; returns Σ_k softmax_k(e)_k x_k, `[.., d]`. Saves α.
pub fn source_attention(tape: &Tape, sources: &Var, energies: &Var) -> Result<Var> {
    let SourceAttentionOutput { out, weights } =
        source_attention_forward(sources.value(), energies.value())?;
    let sources_value = sources.value().clone();
    let energies_shape = energies.value().shape().to_vec();
    Ok(record_one(tape, &[sources, energies], out, move |dout| {
        let (dsources, denergies) = source_attention_backward(&sources_value, &weights, dout)?;
        Ok(vec![
            Some(dsources),
            Some(denergies.reshape(&energies_shape)?),
        ])
    }))
}
