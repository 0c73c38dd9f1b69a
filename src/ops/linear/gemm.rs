//! Row-major single-precision GEMM on every device: `C = alpha · op(A) · op(B) + beta · C`.
//!
//! - `Cuda`: cuBLAS `sgemm` through the usual operand swap (a row-major matrix is the transpose
//!   of a column-major one, so row-major `C = op(A) op(B)` is column-major `Cᵀ = op(B)ᵀ op(A)ᵀ`).
//!   TF32 tensor-core math is off unless [`set_allow_tf32`] turned it on.
//! - `Cpu` and `Emulated` (whose device memory is host memory): the `matrixmultiply` crate.
use std::sync::atomic::{AtomicBool, Ordering};

use crate::device::{Buffer, Device};
use crate::{Error, Result};

static ALLOW_TF32: AtomicBool = AtomicBool::new(false);

/// Lets cuBLAS use TF32 tensor cores for the fp32 products of every later call (10-bit mantissa
/// inputs, fp32 accumulation; about 1e-3 relative error). Off by default. Host devices ignore it.
pub fn set_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, Ordering::Relaxed);
}

/// Whether cuBLAS may use TF32 (see [`set_allow_tf32`]).
pub fn allow_tf32() -> bool {
    ALLOW_TF32.load(Ordering::Relaxed)
}

/// Shape of one product: `op(A)` is `m × k`, `op(B)` is `k × n`, `C` is `m × n`, all row-major
/// and dense. `transpose_a` means `A` is stored `k × m`; `transpose_b` means `B` is stored `n × k`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gemm {
    pub transpose_a: bool,
    pub transpose_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
}

/// A fresh C for a product with β = 0, which cuBLAS and matrixmultiply write in full without
/// reading it: uninitialised, except for k = 0, where no product runs into C (zeros, the empty
/// sum).
pub(crate) fn gemm_output(device: &Device, g: Gemm) -> Result<Buffer<f32>> {
    if g.beta != 0.0 {
        return Err(Error::argument(
            "gemm",
            format!("{g:?}: a fresh C needs β = 0 (β C would read uninitialised memory)"),
        ));
    }
    if g.k == 0 {
        device.zeros::<f32>(g.m * g.n)
    } else {
        device.uninitialized::<f32>(g.m * g.n)
    }
}

pub(crate) fn gemm(
    device: &Device,
    g: Gemm,
    a: &Buffer<f32>,
    b: &Buffer<f32>,
    c: &mut Buffer<f32>,
) -> Result<()> {
    if a.len() != g.m * g.k || b.len() != g.k * g.n || c.len() != g.m * g.n {
        return Err(Error::shape(
            "gemm",
            format!(
                "{g:?} with buffers of {}, {} and {} elements",
                a.len(),
                b.len(),
                c.len()
            ),
        ));
    }
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    // One cuBLAS call on CUDA; the emulated device counts its host GEMM as the same call.
    device.count_blas_call();
    match device {
        Device::Cpu | Device::Emulated(_) => {
            host_gemm(g, a.host_slice(), b.host_slice(), c.host_slice_mut());
            Ok(())
        }
        Device::Cuda(backend) => {
            use cudarc::cublas::sys::{cublasMath_t, cublasOperation_t};
            use cudarc::cublas::{Gemm as _, GemmConfig};
            if g.m.max(g.n).max(g.k) > i32::MAX as usize {
                return Err(Error::shape(
                    "gemm",
                    format!("{g:?} exceeds cuBLAS' 32-bit sizes"),
                ));
            }
            let (Buffer::Cuda(a), Buffer::Cuda(b), Buffer::Cuda(c)) = (a, b, c) else {
                return Err(Error::DeviceMismatch {
                    op: "gemm",
                    expected: "cuda".into(),
                    found: "host".into(),
                });
            };
            let blas = backend.blas()?;
            let mode = if allow_tf32() {
                cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
            } else {
                cublasMath_t::CUBLAS_DEFAULT_MATH
            };
            // SAFETY: sets a mode on the live handle this backend owns.
            unsafe { cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), mode) }.result()?;
            let op = |t: bool| {
                if t {
                    cublasOperation_t::CUBLAS_OP_T
                } else {
                    cublasOperation_t::CUBLAS_OP_N
                }
            };
            // Leading dimensions of the row-major storage: the stored row length (at least 1, as
            // cuBLAS requires even when k = 0 and nothing is read).
            let lda = (if g.transpose_a { g.m } else { g.k }).max(1);
            let ldb = (if g.transpose_b { g.k } else { g.n }).max(1);
            let config = GemmConfig {
                transa: op(g.transpose_b),
                transb: op(g.transpose_a),
                m: g.n as i32,
                n: g.m as i32,
                k: g.k as i32,
                alpha: g.alpha,
                lda: ldb as i32,
                ldb: lda as i32,
                beta: g.beta,
                ldc: g.n as i32,
            };
            // SAFETY: the lengths of a, b and c were checked against m, n, k above, and the
            // leading dimensions are those of dense row-major storage.
            unsafe { blas.gemm(config, b, a, c) }?;
            Ok(())
        }
    }
}

fn host_gemm(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    // Row and column strides of op(A) (m × k) and op(B) (k × n) in their row-major storage.
    let (rsa, csa) = if g.transpose_a { (1, g.m) } else { (g.k, 1) };
    let (rsb, csb) = if g.transpose_b { (1, g.k) } else { (g.n, 1) };
    if g.k == 0 {
        for v in c.iter_mut() {
            *v *= g.beta;
        }
        return;
    }
    // SAFETY: every stride and size describes the dense slices whose lengths `gemm` checked.
    unsafe {
        matrixmultiply::sgemm(
            g.m,
            g.k,
            g.n,
            g.alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            g.beta,
            c.as_mut_ptr(),
            g.n as isize,
            1,
        );
    }
}
