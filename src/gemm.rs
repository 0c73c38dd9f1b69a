//! Row-major single-precision GEMM on every device: `C = alpha · op(A) · op(B) + beta · C`.
//! A crate-level primitive below the ops: `ops::linear` and `ops::cross_entropy` both call it, so
//! neither op imports the other (issue 17).
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

/// Rows and columns of one output tile of the host GEMM, and the depth of one slice of k when
/// k is split. Fixed sizes: the tiling, and so every element's order of summation, depends on
/// (m, n, k) only, never on the thread count (`crate::parallel`). 256 rows, not 64: matrixmultiply
/// packs op(B)'s panel once per call, so a taller tile packs B a quarter as often; at the training
/// shapes (m = B·n = 12 800 rows, k = 64) packing was 40 % of the GEMM time with 64-row tiles.
const TILE_ROWS: usize = 256;
const TILE_COLUMNS: usize = 256;
const K_SLICE: usize = 2048;
/// Below this many multiply-adds a product runs as one call (threads would cost more).
const SERIAL_BELOW: usize = 1 << 18;
/// k is split only when the output has fewer tiles than this.
const FEW_TILES: usize = 4;

/// The host GEMM: `C = alpha · op(A) · op(B) + beta · C` by `matrixmultiply`, in parallel over
/// fixed output tiles, and for a small output with a long k (a weight gradient `xᵀ dy` over
/// every row of the batch) over fixed slices of k whose partial products are added in slice
/// order. Bit-identical for every thread count.
fn host_gemm(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    if g.k == 0 {
        for v in c.iter_mut() {
            *v *= g.beta;
        }
        return;
    }
    let row_tiles = g.m.div_ceil(TILE_ROWS);
    let column_tiles = g.n.div_ceil(TILE_COLUMNS);
    let tiles = row_tiles * column_tiles;
    if g.m * g.n * g.k < SERIAL_BELOW {
        // SAFETY: the whole C of the dense slices whose lengths `gemm` checked.
        unsafe {
            sgemm_block(
                g,
                a,
                b,
                c.as_mut_ptr(),
                (0, g.m),
                (0, g.n),
                (0, g.k),
                g.beta,
            )
        };
        return;
    }
    if tiles < FEW_TILES && g.k > 2 * K_SLICE {
        let slices = g.k.div_ceil(K_SLICE);
        let partials = crate::parallel::map_units(slices, |s| {
            let k0 = s * K_SLICE;
            let k1 = (k0 + K_SLICE).min(g.k);
            let mut partial = vec![0.0f32; g.m * g.n];
            let unit = Gemm { alpha: 1.0, ..g };
            // SAFETY: a fresh m × n buffer; the k range is inside the checked operands.
            unsafe {
                sgemm_block(
                    unit,
                    a,
                    b,
                    partial.as_mut_ptr(),
                    (0, g.m),
                    (0, g.n),
                    (k0, k1),
                    0.0,
                )
            };
            partial
        });
        let (first, rest) = partials.split_first().expect("k > 0 gives a slice");
        crate::parallel::for_each_block(c, TILE_ROWS * g.n, |block, out| {
            let offset = block * TILE_ROWS * g.n;
            for (e, value) in out.iter_mut().enumerate() {
                let mut sum = first[offset + e];
                for partial in rest {
                    sum += partial[offset + e];
                }
                let product = g.alpha * sum;
                *value = if g.beta == 0.0 {
                    product
                } else {
                    product + g.beta * *value
                };
            }
        });
        return;
    }
    let out = crate::parallel::SharedMut(c.as_mut_ptr());
    crate::parallel::map_units(tiles, |t| {
        let (i0, j0) = (
            (t / column_tiles) * TILE_ROWS,
            (t % column_tiles) * TILE_COLUMNS,
        );
        let rows = (i0, (i0 + TILE_ROWS).min(g.m));
        let columns = (j0, (j0 + TILE_COLUMNS).min(g.n));
        // SAFETY: tiles are disjoint parts of C (dense, m × n, checked by `gemm`), each written
        // by one unit only.
        unsafe { sgemm_block(g, a, b, out.get(), rows, columns, (0, g.k), g.beta) };
    });
}

/// `C[rows, columns] = alpha · op(A)[rows, ks] · op(B)[ks, columns] + beta · C[rows, columns]`.
///
/// # Safety
/// `a`, `b` are the dense operands of `g`, `c` points at a dense m × n C, the ranges lie inside
/// them, and no other thread touches `C[rows, columns]` meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_block(
    g: Gemm,
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    rows: (usize, usize),
    columns: (usize, usize),
    ks: (usize, usize),
    beta: f32,
) {
    // Row and column strides of op(A) (m × k) and op(B) (k × n) in their row-major storage.
    let (rsa, csa) = if g.transpose_a { (1, g.m) } else { (g.k, 1) };
    let (rsb, csb) = if g.transpose_b { (1, g.k) } else { (g.n, 1) };
    let (m, n, k) = (rows.1 - rows.0, columns.1 - columns.0, ks.1 - ks.0);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: per the contract, every offset stays inside the operands and the C tile.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            g.alpha,
            a.as_ptr().add(rows.0 * rsa + ks.0 * csa),
            rsa as isize,
            csa as isize,
            b.as_ptr().add(ks.0 * rsb + columns.0 * csb),
            rsb as isize,
            csb as isize,
            beta,
            c.add(rows.0 * g.n + columns.0),
            g.n as isize,
            1,
        );
    }
}
