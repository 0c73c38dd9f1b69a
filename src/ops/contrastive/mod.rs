//! RSA's interaction-level contrastive loss (paper eqs. 6 to 9, spec §3.4 and A8 to A10), forward
//! and backward fused. Kernel: `kernels/contrastive.cu`; derivation: `docs/contrastive.md`.
//!
//! Per sequence b over its valid positions t, u < L_b: x̃ = x/max(‖x‖, ε), ã = a/max(‖a‖, ε),
//! S_tu = κ·x̃_t·ã_u with κ = min(exp(s), 100), ℓ_X(t) = −log softmax_u(S_t·)[t] and
//! ℓ_A(u) = −log softmax_t(S_·u)[u], reduced by [`ContrastiveReduction`].
//!
//! Plain kernel API: [`contrastive_loss_forward_backward`] returns the loss and its gradients for
//! a given upstream scalar gradient, from one kernel pass (the loss is a scalar, so the backward
//! needs nothing but that scalar). Tape API: [`contrastive_loss`] runs the same pass with upstream
//! 1 and its backward scales the saved gradients by the upstream gradient, on the device.
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::{forward_backward as forward_backward_reference, ContrastiveReference};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::{check_kernel_len, record_one, run, run_one, DeviceOp};
use crate::{Error, IndexTensor, Precision, Result, Tensor};

/// The kernel family of `kernels/contrastive.cu` in [`crate::kernel_version`]: v1 (CUDA-core
/// register tiles) or v2 (the three products on tensor cores, 3xTF32, fp32-level accuracy);
/// `ASIF_KERNEL_CONTRASTIVE=v1|v2`, or `kernel_version::with_version(KERNEL_FAMILY, ..)`.
pub const KERNEL_FAMILY: &str = "contrastive";

/// The largest logit scale κ (CLIP's clamp); above it the gradient to s is zero.
pub const LOGIT_SCALE_MAX: f32 = 100.0;
/// ε of the normalisation x/max(‖x‖, ε).
pub const NORM_EPS: f32 = 1e-8;
/// Longest sequence the kernel takes (one 64×64 tile of S per block).
pub const MAX_SEQUENCE_LENGTH: usize = 64;

/// The initial logit-scale parameter s = ln(1/0.07) (κ = 1/τ with τ = 0.07, spec A9).
pub fn initial_logit_scale() -> f32 {
    (1.0f32 / 0.07).ln()
}

/// How per-position losses become L_co. B (the divisor) counts every sequence of the batch,
/// including those with L_b = 0, which add nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContrastiveReduction {
    /// L_co = (1/B) Σ_b 1/(2 L_b) Σ_t (ℓ_X(t) + ℓ_A(t)): the mean over each sequence's valid
    /// positions (spec A8's default, `rsa_reduction=mean`).
    #[default]
    MeanPerSequence,
    /// L_co = (1/B) Σ_b 1/2 Σ_t (ℓ_X(t) + ℓ_A(t)): eq. 9 literally, no 1/L_b
    /// (`rsa_reduction=sum`).
    Sum,
}

/// How the loss is computed: the reduction and the arithmetic of the similarity products.
/// A bare [`ContrastiveReduction`] converts into it with the default precision, so
/// `contrastive_loss_forward_backward(.., ContrastiveReduction::Sum, ..)` reads as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContrastiveOptions {
    pub reduction: ContrastiveReduction,
    /// Arithmetic of S = κ·X̃Ãᵀ and its gradients (`crate::precision`). Both kernel versions
    /// compute at fp32 accuracy only (v1 on CUDA cores, v2 by 3xTF32): [`Precision::Tf32`] and [`Precision::Bf16`] are
    /// [`Error::PrecisionNotImplemented`].
    pub precision: Precision,
}

impl From<ContrastiveReduction> for ContrastiveOptions {
    fn from(reduction: ContrastiveReduction) -> Self {
        ContrastiveOptions {
            reduction,
            precision: Precision::default(),
        }
    }
}

/// The loss and the gradients of `upstream · loss`.
#[derive(Debug, Clone)]
pub struct ContrastiveOutput {
    /// L_co, shape [1] (not scaled by the upstream gradient).
    pub loss: Tensor,
    /// ∂/∂x, shape [B, n, d]; zero at positions t ≥ L_b.
    pub dx: Tensor,
    /// ∂/∂a, shape [B, n, d]; zero at positions t ≥ L_b.
    pub da: Tensor,
    /// ∂/∂s, shape [1]; exactly zero where exp(s) > 100 (the clamp).
    pub ds: Tensor,
}

const OP: &str = "contrastive_loss";

/// (B, n, d) after checking every shape and device.
fn check(
    x: &Tensor,
    a: &Tensor,
    lengths: &IndexTensor,
    logit_scale: &Tensor,
    groups: Option<&IndexTensor>,
) -> Result<(usize, usize, usize)> {
    x.same_device(OP, a)?;
    x.same_device(OP, logit_scale)?;
    x.same_device(OP, lengths)?;
    let &[batch, n, d] = x.shape() else {
        return Err(Error::shape(
            OP,
            format!("x must have shape [B, n, d], got {:?}", x.shape()),
        ));
    };
    if a.shape() != x.shape() {
        return Err(Error::shape(
            OP,
            format!("a {:?} must match x {:?}", a.shape(), x.shape()),
        ));
    }
    if n == 0 || n > MAX_SEQUENCE_LENGTH {
        return Err(Error::shape(
            OP,
            format!("sequence length n = {n} must be in 1..={MAX_SEQUENCE_LENGTH}"),
        ));
    }
    if d == 0 {
        return Err(Error::shape(OP, "the embedding axis d is empty"));
    }
    check_kernel_len(OP, x.len())?;
    if lengths.shape() != [batch] {
        return Err(Error::shape(
            OP,
            format!(
                "lengths must have shape [{batch}], got {:?}",
                lengths.shape()
            ),
        ));
    }
    if logit_scale.shape() != [1] {
        return Err(Error::shape(
            OP,
            format!(
                "the logit-scale parameter s must have shape [1], got {:?}",
                logit_scale.shape()
            ),
        ));
    }
    if let Some(groups) = groups {
        x.same_device(OP, groups)?;
        if groups.shape() != [batch, n] {
            return Err(Error::shape(
                OP,
                format!(
                    "group ids must have shape [{batch}, {n}], got {:?}",
                    groups.shape()
                ),
            ));
        }
    }
    // Lengths are not read on the host (on a GPU that would cost a copy and a synchronisation per
    // call): the kernel and the reference both clamp L_b into 0..=n, so every device agrees, as
    // in attention.
    Ok((batch, n, d))
}

/// The contrastive loss of `x` (item-ID embeddings, [B, n, d]) and `a` (summed attribute
/// embeddings, [B, n, d]) over the first `lengths[b]` positions of each sequence, with
/// logit-scale parameter `logit_scale` (s, shape [1]; κ = min(exp s, 100)), and the gradients of
/// `upstream · L_co` with respect to x, a and s.
///
/// `options` is a [`ContrastiveOptions`] or just a [`ContrastiveReduction`] (fp32).
///
/// `groups` ([B, n], optional) is the dedup switch (`rsa_dedup`): position u ≠ t is removed from
/// row t's and column t's negatives when `groups[b][u] == groups[b][t]`. Pass item ids to stop
/// repeated items acting as negatives of each other, or attribute-set ids for same-attribute
/// items. `None` keeps the paper's Y = I (every other valid position is a negative).
pub fn contrastive_loss_forward_backward(
    x: &Tensor,
    a: &Tensor,
    lengths: &IndexTensor,
    logit_scale: &Tensor,
    groups: Option<&IndexTensor>,
    options: impl Into<ContrastiveOptions>,
    upstream: f32,
) -> Result<ContrastiveOutput> {
    let ContrastiveOptions {
        reduction,
        precision,
    } = options.into();
    precision.require_fp32(OP)?;
    let (batch, n, d) = check(x, a, lengths, logit_scale, groups)?;
    if !upstream.is_finite() {
        return Err(Error::argument(
            OP,
            format!("the upstream gradient must be finite, got {upstream}"),
        ));
    }
    let problem = ContrastiveProblem {
        batch,
        n,
        d,
        reduction,
        upstream,
        grouped: groups.is_some(),
    };
    let mut indices = vec![lengths];
    indices.extend(groups);
    let mut outputs = run(&ForwardBackward, &problem, &[x, a, logit_scale], &indices)?.into_iter();
    match (
        outputs.next(),
        outputs.next(),
        outputs.next(),
        outputs.next(),
    ) {
        (Some(loss), Some(dx), Some(da), Some(ds)) => Ok(ContrastiveOutput { loss, dx, da, ds }),
        _ => Err(Error::shape(OP, "the fused pass must return four outputs")),
    }
}

/// The problem descriptor of the fused pass: B sequences of n positions of d, the reduction, the
/// upstream scalar gradient, and whether group ids (the dedup switch) come after the lengths.
#[derive(Debug, Clone, Copy)]
struct ContrastiveProblem {
    batch: usize,
    n: usize,
    d: usize,
    reduction: ContrastiveReduction,
    upstream: f32,
    grouped: bool,
}

/// The fused forward and backward under the op contract: inputs x, a, s; L_b and, when grouped,
/// the group ids. Outputs L_co `[1]`, dx and da `[B, n, d]`, ds `[1]`.
struct ForwardBackward;

impl DeviceOp for ForwardBackward {
    type Problem = ContrastiveProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &ContrastiveProblem) -> Vec<Vec<usize>> {
        let shape = vec![p.batch, p.n, p.d];
        vec![vec![1], shape.clone(), shape, vec![1]]
    }
    fn reference(
        &self,
        p: &ContrastiveProblem,
        values: &[&[f32]],
        indices: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let out = cpu::forward_backward_threaded(
            values[0],
            values[1],
            indices[0],
            p.grouped.then(|| indices[1]),
            values[2][0],
            p.n,
            p.d,
            p.reduction,
            p.upstream,
        );
        Ok(vec![vec![out.loss], out.dx, out.da, vec![out.ds]])
    }
    fn launch(
        &self,
        p: &ContrastiveProblem,
        device: &Device,
        values: &[&Buffer<f32>],
        indices: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let out = cuda::forward_backward(
            device,
            cuda::Inputs {
                x: values[0],
                a: values[1],
                lengths: indices[0],
                groups: p.grouped.then(|| indices[1]),
                logit_scale: values[2],
            },
            p.batch,
            p.n,
            p.d,
            p.reduction,
            p.upstream,
        )?;
        Ok(vec![out.loss, out.dx, out.da, out.ds])
    }
}

/// `value · scale[0]` under the op contract: inputs value, scale `[1]`; output of value's shape.
struct Scale;

impl DeviceOp for Scale {
    type Problem = Vec<usize>;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, shape: &Vec<usize>) -> Vec<Vec<usize>> {
        vec![shape.clone()]
    }
    fn reference(&self, _: &Vec<usize>, values: &[&[f32]], _: &[&[i32]]) -> Result<Vec<Vec<f32>>> {
        let factor = values[1][0];
        Ok(vec![values[0].iter().map(|v| v * factor).collect()])
    }
    fn launch(
        &self,
        _: &Vec<usize>,
        device: &Device,
        values: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        Ok(vec![cuda::scale(
            device,
            values[0],
            values[1],
            values[0].len(),
        )?])
    }
}

/// `value · scale[0]` with `scale` a [1] tensor on the same device (no host round trip).
fn scale_by(value: &Tensor, scale: &Tensor) -> Result<Tensor> {
    value.same_device(OP, scale)?;
    if scale.shape() != [1] {
        return Err(Error::shape(
            OP,
            format!(
                "the upstream gradient of the loss must have shape [1], got {:?}",
                scale.shape()
            ),
        ));
    }
    run_one(&Scale, &value.shape().to_vec(), &[value, scale], &[])
}

/// Tape face: records L_co (shape [1]). The kernel runs once, here, with upstream 1; the backward
/// scales the saved dx, da and ds by the upstream gradient of the loss.
pub fn contrastive_loss(
    tape: &Tape,
    x: &Var,
    a: &Var,
    lengths: &IndexTensor,
    logit_scale: &Var,
    groups: Option<&IndexTensor>,
    options: impl Into<ContrastiveOptions>,
) -> Result<Var> {
    let out = contrastive_loss_forward_backward(
        x.value(),
        a.value(),
        lengths,
        logit_scale.value(),
        groups,
        options,
        1.0,
    )?;
    let ContrastiveOutput { loss, dx, da, ds } = out;
    Ok(record_one(tape, &[x, a, logit_scale], loss, move |dloss| {
        Ok(vec![
            Some(scale_by(&dx, dloss)?),
            Some(scale_by(&da, dloss)?),
            Some(scale_by(&ds, dloss)?),
        ])
    }))
}
