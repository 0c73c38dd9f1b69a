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
use crate::ops::check_kernel_len;
use crate::{Error, Result, Tensor};

/// Most sources K the kernels take (one warp lane per source).
pub const MAX_SOURCES: usize = 32;

const OP: &str = "source_attention";

fn check_len(len: usize) -> Result<()> {
    check_kernel_len(OP, len).map(|_| ())
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
    check_len(first.len() * sources.len())?;
    let rows = first.len().checked_div(d).unwrap_or(0);
    let mut out_shape = shape.to_vec();
    out_shape.insert(shape.len() - 1, sources.len());
    let device = first.device();
    let buffer = match device {
        Device::Cpu => {
            let hosts: Vec<&[f32]> = sources.iter().map(|s| s.host()).collect();
            Buffer::Host(cpu::stack(&hosts, d))
        }
        Device::Cuda(_) | Device::Emulated(_) => {
            let buffers: Vec<&Buffer<f32>> = sources.iter().map(|s| s.buffer()).collect();
            cuda::stack(device, &buffers, rows, d)?
        }
    };
    Ok(Tensor::from_buffer(device, &out_shape, buffer))
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
    check_len(stacked.len())?;
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
    let device = stacked.device();
    let buffer = match device {
        Device::Cpu => Buffer::Host(cpu::unstack(stacked.host(), k_sources, slot, d)),
        Device::Cuda(_) | Device::Emulated(_) => {
            cuda::unstack(device, stacked.buffer(), rows, k_sources, slot, d)?
        }
    };
    Ok(Tensor::from_buffer(device, &out_shape, buffer))
}

/// Tape face of stacking: each source gets its slice of the upstream gradient.
pub fn stack_sources(tape: &Tape, sources: &[&Var]) -> Result<Var> {
    let values: Vec<&Tensor> = sources.iter().map(|s| s.value()).collect();
    let stacked = stack_sources_forward(&values)?;
    let ids: Vec<_> = sources.iter().map(|s| s.id()).collect();
    Ok(tape.record(stacked, move |dy| {
        ids.iter()
            .enumerate()
            .map(|(slot, &id)| Ok((id, unstack_source(dy, slot)?)))
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
    let device = sources.device();
    let (out, weights) = match device {
        Device::Cpu => {
            let (out, weights) = cpu::forward(sources.host(), energies.host(), k_sources, d);
            (Buffer::Host(out), Buffer::Host(weights))
        }
        Device::Cuda(_) | Device::Emulated(_) => cuda::forward(
            device,
            sources.buffer(),
            energies.buffer(),
            rows,
            k_sources,
            d,
        )?,
    };
    Ok(SourceAttentionOutput {
        out: Tensor::from_buffer(device, &out_shape, out),
        weights: Tensor::from_buffer(device, &weight_shape, weights),
    })
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
    let device = sources.device();
    let (dsources, denergies) = match device {
        Device::Cpu => {
            let (ds, de) = cpu::backward(sources.host(), weights.host(), dout.host(), k_sources, d);
            (Buffer::Host(ds), Buffer::Host(de))
        }
        Device::Cuda(_) | Device::Emulated(_) => cuda::backward(
            device,
            sources.buffer(),
            weights.buffer(),
            dout.buffer(),
            rows,
            k_sources,
            d,
        )?,
    };
    Ok((
        Tensor::from_buffer(device, shape, dsources),
        Tensor::from_buffer(device, weights.shape(), denergies),
    ))
}

/// Tape face of the pooling: `sources` `[.., K, d]` (from [`stack_sources`]), `energies` `[.., K]`
/// or `[.., K, 1]`; returns Σ_k softmax_k(e)_k x_k, `[.., d]`. Saves α.
pub fn source_attention(tape: &Tape, sources: &Var, energies: &Var) -> Result<Var> {
    let SourceAttentionOutput { out, weights } =
        source_attention_forward(sources.value(), energies.value())?;
    let (sources_value, sources_id) = (sources.value().clone(), sources.id());
    let (energies_shape, energies_id) = (energies.value().shape().to_vec(), energies.id());
    Ok(tape.record(out, move |dout| {
        let (dsources, denergies) = source_attention_backward(&sources_value, &weights, dout)?;
        Ok(vec![
            (sources_id, dsources),
            (energies_id, denergies.reshape(&energies_shape)?),
        ])
    }))
}
