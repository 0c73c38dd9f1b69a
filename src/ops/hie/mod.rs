//! HIE, Homogeneous Information Extraction (spec §3.3, eqs. 10 to 12; ambiguities A4, A6, A7,
//! A12): per sequence, a thin Householder QR of M_b = H_Xᵀ W_r with a rank guard, then the
//! sign-masked projection h_A* = (φ(C_X ⊙ C_A) ⊙ C_A) Qᵀ with C_X = H_X Q, C_A = H_A Q.
//! Kernel: `kernels/hie.cu`; description: `docs/hie.md`.
//!
//! Plain kernel API: [`hie_forward`] returns h_A* and what the backward needs (Q, R, the mask φ),
//! so the backward never repeats the QR; [`hie_backward`] returns the gradients in the chosen
//! [`HieBackward`] mode. Tape API: [`hie`].
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::{
    backward as backward_reference, forward as forward_reference, gram_schmidt_qr, householder_qr,
    project as project_reference, valid_rows, Backward as BackwardReference,
    Forward as ForwardReference,
};

/// Sizes of one call (the op's problem sizes, read by the reference and the launches): `batch`
/// sequences of `n` rows of width `d`, rank `r`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub n: usize,
    pub d: usize,
    pub r: usize,
}

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::{check_indices, check_kernel_len, record_one, run, DeviceOp};
use crate::{Error, IndexTensor, Precision, Result, Tensor};

const OP: &str = "hie";

/// The kernel family of HIE's kernels (`kernel_version`): `ASIF_KERNEL_HIE=v1|v2|v3`, or
/// `kernel_version::with_version(KERNEL_FAMILY, ..)`. v2 (fp32 FMA) and v3 (v2's QR with the
/// products on 3xTF32 tensor-core tiles) take d ≤ [`V2_MAX_HIDDEN`]; larger d launches v1
/// whichever is selected.
pub const KERNEL_FAMILY: &str = "hie";
pub use cuda::V2_MAX_HIDDEN;

/// Most bases the kernel supports (lane k of a warp owns column k).
pub const MAX_RANK: usize = 32;

/// Rank guard: column k of Q is dropped when its residual norm is at most this times the largest
/// residual norm of the columns before it and itself (and always once L_b columns are kept).
///
/// The spec says 1e-6; that is below the rounding noise of an fp32 QR of a rank-deficient M
/// (measured 2e-5 to 5e-4 relative at d = 64 to 256, `docs/hie.md`), so with 1e-6 filler columns
/// would pass the guard in fp32, which is what the guard exists to stop. 1e-4 drops them in the
/// common cases; the structural bound rank ≤ L_b decides the short-sequence case exactly.
pub const RANK_TOLERANCE: f32 = 1e-4;

/// Dynamic shared memory the kernels may use for the d×r matrix (the rest of 48 KiB is the
/// kernels' static shared memory).
const MAX_MATRIX_BYTES: usize = 36 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HieOptions {
    /// A6: `false` (default) treats rows t ≥ L_b of H_X and H_A as zero and writes zero output
    /// rows there; `true` uses all n rows whatever the lengths (a naive PyTorch port).
    pub keep_padding: bool,
    /// Rank guard threshold, relative to the largest residual norm so far ([`RANK_TOLERANCE`]).
    pub rank_tolerance: f32,
    /// Arithmetic of the QR and projection products (`crate::precision`). Kernel v1 computes in
    /// fp32 only: [`Precision::Tf32`] and [`Precision::Bf16`] are
    /// [`Error::PrecisionNotImplemented`].
    pub precision: Precision,
}

impl Default for HieOptions {
    fn default() -> Self {
        HieOptions {
            keep_padding: false,
            rank_tolerance: RANK_TOLERANCE,
            precision: Precision::Fp32,
        }
    }
}

/// Which gradients the backward computes (A7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HieBackward {
    /// Q is a constant (stop-gradient): only dH_A = ((dh Q) ⊙ φ) Qᵀ. The default.
    #[default]
    QConstant,
    /// Also the thin-QR backward through M_b = H_Xᵀ W_r = QR to H_X and W_r. Exact at full rank
    /// and wherever the dropped set does not change under a small perturbation; dropped columns
    /// get zero gradient.
    FullQr,
}

/// What the backward needs from the forward.
#[derive(Debug, Clone)]
pub struct HieSaved {
    /// Q `[B, d, r]`, dropped columns zero.
    pub q: Tensor,
    /// R `[B, r, r]` (row j, column k), rows and columns of dropped columns zero; R_kk ≠ 0 marks a
    /// kept column.
    pub r: Tensor,
    /// φ = 1[C_X ⊙ C_A > 0] `[B, n, r]` as 1.0 / 0.0.
    pub mask: Tensor,
}

#[derive(Debug, Clone)]
pub struct HieGradients {
    pub dh_a: Tensor,
    /// `Some` in [`HieBackward::FullQr`] only.
    pub dh_x: Option<Tensor>,
    /// `Some` in [`HieBackward::FullQr`] only: Σ over the batch, shape `[n, r]`.
    pub dw_r: Option<Tensor>,
}

/// Checks shapes and devices; returns the sizes.
fn dims(h_x: &Tensor, h_a: &Tensor, w_r: &Tensor, lengths: &IndexTensor) -> Result<Dims> {
    h_x.same_device(OP, h_a)?;
    h_x.same_device(OP, w_r)?;
    h_x.same_device(OP, lengths)?;
    let &[batch, n, d] = h_x.shape() else {
        return Err(Error::shape(
            OP,
            format!("H_X must be [B, n, d], got {:?}", h_x.shape()),
        ));
    };
    if h_a.shape() != h_x.shape() {
        return Err(Error::shape(
            OP,
            format!("H_A {:?} must match H_X {:?}", h_a.shape(), h_x.shape()),
        ));
    }
    let &[w_rows, r] = w_r.shape() else {
        return Err(Error::shape(
            OP,
            format!("W_r must be [n, r], got {:?}", w_r.shape()),
        ));
    };
    if w_rows != n {
        return Err(Error::shape(
            OP,
            format!("W_r has {w_rows} rows, H_X has n = {n}"),
        ));
    }
    if r == 0 || r > MAX_RANK || r > d {
        return Err(Error::shape(
            OP,
            format!("r = {r} must satisfy 1 ≤ r ≤ min(d = {d}, {MAX_RANK})"),
        ));
    }
    if cuda::shared_bytes(d, r) > MAX_MATRIX_BYTES {
        return Err(Error::shape(
            OP,
            format!(
                "d = {d}, r = {r}: the d×r matrix needs {} bytes of shared memory (at most {MAX_MATRIX_BYTES})",
                cuda::shared_bytes(d, r)
            ),
        ));
    }
    // Values in [0, n] (host devices; on the GPU they are not read back and the kernels clamp).
    check_indices(OP, h_x.device(), lengths, 0, n as i64 + 1)?;
    if lengths.shape() != [batch] {
        return Err(Error::shape(
            OP,
            format!("lengths must be [{batch}], got {:?}", lengths.shape()),
        ));
    }
    check_kernel_len(OP, h_x.len())?;
    Ok(Dims { batch, n, d, r })
}

fn check_options(options: &HieOptions) -> Result<()> {
    options.precision.require_fp32(OP)?;
    let tolerance = options.rank_tolerance;
    // NaN and ±∞ are outside the range too.
    if !(0.0..1.0).contains(&tolerance) {
        return Err(Error::argument(
            OP,
            format!("rank_tolerance must be in [0, 1), got {tolerance}"),
        ));
    }
    Ok(())
}

/// h_A* for H_X, H_A `[B, n, d]`, W_r `[n, r]` and lengths L_b `[B]` (values in [0, n], an error
/// otherwise on host devices; the GPU kernels clamp them; ignored when `options.keep_padding`).
pub fn hie_forward(
    h_x: &Tensor,
    h_a: &Tensor,
    w_r: &Tensor,
    lengths: &IndexTensor,
    options: HieOptions,
) -> Result<(Tensor, HieSaved)> {
    let dims = dims(h_x, h_a, w_r, lengths)?;
    check_options(&options)?;
    let problem = HieProblem {
        dims,
        options,
        full: false,
    };
    let mut outputs = run(&Forward, &problem, &[h_x, h_a, w_r], &[lengths])?.into_iter();
    match (
        outputs.next(),
        outputs.next(),
        outputs.next(),
        outputs.next(),
    ) {
        (Some(output), Some(q), Some(r), Some(mask)) => Ok((output, HieSaved { q, r, mask })),
        _ => Err(Error::shape(OP, "the forward must return four outputs")),
    }
}

/// The problem descriptor of both passes: the sizes, the options and, for the backward, whether
/// it runs the full QR backward ([`HieBackward::FullQr`]).
#[derive(Debug, Clone, Copy)]
struct HieProblem {
    dims: Dims,
    options: HieOptions,
    full: bool,
}

/// The forward under the op contract: inputs H_X, H_A, W_r; L_b. Outputs h_A* `[B, n, d]`, Q
/// `[B, d, r]`, R `[B, r, r]`, φ `[B, n, r]`.
struct Forward;
/// The backward under the op contract: inputs H_X, H_A, W_r, Q, R, φ, dy; L_b. Outputs dH_A
/// `[B, n, d]` and, for the full QR backward, dH_X `[B, n, d]` and dW_r `[n, r]`.
struct Backward;

impl DeviceOp for Forward {
    type Problem = HieProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &HieProblem) -> Vec<Vec<usize>> {
        let Dims { batch, n, d, r } = p.dims;
        vec![
            vec![batch, n, d],
            vec![batch, d, r],
            vec![batch, r, r],
            vec![batch, n, r],
        ]
    }
    fn reference(
        &self,
        p: &HieProblem,
        values: &[&[f32]],
        lengths: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let out = cpu::forward_threaded(
            values[0],
            values[1],
            values[2],
            lengths[0],
            p.dims,
            p.options.keep_padding,
            p.options.rank_tolerance,
        );
        Ok(vec![out.output, out.q, out.r, out.mask])
    }
    fn launch(
        &self,
        p: &HieProblem,
        device: &Device,
        values: &[&Buffer<f32>],
        lengths: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let out = cuda::forward(
            device,
            values[0],
            values[1],
            values[2],
            lengths[0],
            p.dims,
            p.options.keep_padding,
            p.options.rank_tolerance,
        )?;
        Ok(vec![out.output, out.q, out.r, out.mask])
    }
}

impl DeviceOp for Backward {
    type Problem = HieProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &HieProblem) -> Vec<Vec<usize>> {
        let Dims { batch, n, d, r } = p.dims;
        let mut shapes = vec![vec![batch, n, d]];
        if p.full {
            shapes.extend([vec![batch, n, d], vec![n, r]]);
        }
        shapes
    }
    fn reference(
        &self,
        p: &HieProblem,
        values: &[&[f32]],
        lengths: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let forward = cpu::Forward {
            output: Vec::new(),
            q: values[3].to_vec(),
            r: values[4].to_vec(),
            mask: values[5].to_vec(),
        };
        let out = cpu::backward_threaded(
            values[0],
            values[1],
            values[2],
            lengths[0],
            &forward,
            values[6],
            p.dims,
            p.options.keep_padding,
            p.full,
        );
        Ok(if p.full {
            vec![out.dh_a, out.dh_x, out.dw_r]
        } else {
            vec![out.dh_a]
        })
    }
    fn launch(
        &self,
        p: &HieProblem,
        device: &Device,
        values: &[&Buffer<f32>],
        lengths: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        if p.full {
            let out = cuda::backward_full(
                device,
                cuda::FullInputs {
                    h_x: values[0],
                    h_a: values[1],
                    w_r: values[2],
                    q: values[3],
                    r: values[4],
                    mask: values[5],
                    dy: values[6],
                    lengths: lengths[0],
                },
                p.dims,
                p.options.keep_padding,
            )?;
            Ok(vec![out.dh_a, out.dh_x, out.dw_r])
        } else {
            let dh_a = cuda::backward_q_constant(
                device,
                values[3],
                values[5],
                values[6],
                lengths[0],
                p.dims,
                p.options.keep_padding,
            )?;
            Ok(vec![dh_a])
        }
    }
}

/// Gradients of HIE given the upstream gradient `dy` of h_A* (`[B, n, d]`). Gradient in padding
/// rows is ignored (those output rows are constant zero) unless `options.keep_padding`.
#[allow(clippy::too_many_arguments)]
pub fn hie_backward(
    h_x: &Tensor,
    h_a: &Tensor,
    w_r: &Tensor,
    lengths: &IndexTensor,
    saved: &HieSaved,
    dy: &Tensor,
    options: HieOptions,
    mode: HieBackward,
) -> Result<HieGradients> {
    let dims = dims(h_x, h_a, w_r, lengths)?;
    check_options(&options)?;
    let Dims { batch, n, d, r } = dims;
    h_x.same_device(OP, dy)?;
    for (what, tensor) in [("Q", &saved.q), ("R", &saved.r), ("mask", &saved.mask)] {
        h_x.same_device(OP, tensor)
            .map_err(|_| Error::argument(OP, format!("saved {what} lives on another device")))?;
    }
    if dy.shape() != h_x.shape() {
        return Err(Error::shape(
            OP,
            format!("dy {:?} must match H_X {:?}", dy.shape(), h_x.shape()),
        ));
    }
    if saved.q.shape() != [batch, d, r]
        || saved.r.shape() != [batch, r, r]
        || saved.mask.shape() != [batch, n, r]
    {
        return Err(Error::shape(
            OP,
            format!(
                "saved state must be Q [{batch}, {d}, {r}], R [{batch}, {r}, {r}], mask [{batch}, {n}, {r}]"
            ),
        ));
    }
    let problem = HieProblem {
        dims,
        options,
        full: mode == HieBackward::FullQr,
    };
    let mut outputs = run(
        &Backward,
        &problem,
        &[h_x, h_a, w_r, &saved.q, &saved.r, &saved.mask, dy],
        &[lengths],
    )?
    .into_iter();
    let dh_a = outputs
        .next()
        .ok_or_else(|| Error::shape(OP, "the backward must return dH_A"))?;
    Ok(HieGradients {
        dh_a,
        dh_x: outputs.next(),
        dw_r: outputs.next(),
    })
}

/// Tape face of HIE: h_A* with its backward recorded on `tape`. In [`HieBackward::QConstant`]
/// only `h_a` receives a gradient; in [`HieBackward::FullQr`] `h_x` and `w_r` do too.
pub fn hie(
    tape: &Tape,
    h_x: &Var,
    h_a: &Var,
    w_r: &Var,
    lengths: &IndexTensor,
    options: HieOptions,
    mode: HieBackward,
) -> Result<Var> {
    let (output, saved) = hie_forward(h_x.value(), h_a.value(), w_r.value(), lengths, options)?;
    let (x_value, a_value, w_value) = (
        h_x.value().clone(),
        h_a.value().clone(),
        w_r.value().clone(),
    );
    let lengths = lengths.clone();
    // h_A first: its gradient is the one every mode returns (the order the adds happen in when
    // one variable is passed twice).
    Ok(record_one(tape, &[h_a, h_x, w_r], output, move |dy| {
        let grads = hie_backward(
            &x_value, &a_value, &w_value, &lengths, &saved, dy, options, mode,
        )?;
        Ok(vec![Some(grads.dh_a), grads.dh_x, grads.dw_r])
    }))
}
