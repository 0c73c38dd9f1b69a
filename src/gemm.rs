//! Row-major single-precision GEMM on every device: `C = alpha · op(A) · op(B) + beta · C`.
//! A crate-level primitive below the ops: `ops::linear` and `ops::cross_entropy` both call it, so
//! neither op imports the other (issue 17).
//!
//! - `Cuda`: cuBLAS `sgemm` through the usual operand swap (a row-major matrix is the transpose
//!   of a column-major one, so row-major `C = op(A) op(B)` is column-major `Cᵀ = op(B)ᵀ op(A)ᵀ`).
//!   TF32 tensor-core math is off unless [`set_allow_tf32`] turned it on.
//! - `Cpu` and `Emulated` (whose device memory is host memory): the host GEMM below, in parallel
//!   over fixed tiles of C, each tile by the AVX-512 kernel of `gemm/avx512.rs` where the CPU has
//!   AVX-512F, else by the `matrixmultiply` crate.
use std::sync::atomic::{AtomicBool, Ordering};

// The AVX-512 intrinsics are stable since Rust 1.89, the crate's `rust-version`.
#[cfg(target_arch = "x86_64")]
mod avx512;

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

/// The operands' lengths against the shape.
fn check(g: Gemm, a: usize, b: usize, c: usize) -> Result<()> {
    if a != g.m * g.k || b != g.k * g.n || c != g.m * g.n {
        return Err(Error::shape(
            "gemm",
            format!("{g:?} with buffers of {a}, {b} and {c} elements"),
        ));
    }
    Ok(())
}

/// [`gemm`] and then `C[i, j] += bias[j]` (a linear layer's bias), on the `Cpu` device only: the
/// bias is added to each block of C as the block is written, the same bits as adding it after
/// the product (`(alpha · sum + beta · C) + bias`) without another pass over C.
pub(crate) fn host_gemm_with_bias(
    device: &Device,
    g: Gemm,
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    c: &mut [f32],
) -> Result<()> {
    if !matches!(device, Device::Cpu) {
        return Err(Error::argument(
            "gemm",
            format!(
                "the fused bias runs on the CPU device only, not on {}",
                device.name()
            ),
        ));
    }
    check(g, a.len(), b.len(), c.len())?;
    if bias.len() != g.n {
        return Err(Error::shape(
            "gemm",
            format!("{g:?} with a bias of {} elements (n = {})", bias.len(), g.n),
        ));
    }
    if g.m > 0 && g.n > 0 {
        host_gemm(g, a, b, c, Some(bias));
    }
    Ok(())
}

pub(crate) fn gemm(
    device: &Device,
    g: Gemm,
    a: &Buffer<f32>,
    b: &Buffer<f32>,
    c: &mut Buffer<f32>,
) -> Result<()> {
    check(g, a.len(), b.len(), c.len())?;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    // One cuBLAS call on CUDA; the emulated device counts its host GEMM as the same call.
    device.count_blas_call();
    match device {
        Device::Cpu | Device::Emulated(_) => {
            if let Device::Emulated(emulator) = device {
                emulator.record(|| crate::device::LaunchRecord {
                    kernel: "cublas_sgemm",
                    grid: [0; 3],
                    block: [0; 3],
                    shared_bytes: 0,
                    arguments: vec![
                        g.transpose_a as u64,
                        g.transpose_b as u64,
                        g.m as u64,
                        g.n as u64,
                        g.k as u64,
                        g.alpha.to_bits() as u64,
                        g.beta.to_bits() as u64,
                        a.address(),
                        b.address(),
                        c.address(),
                    ],
                });
            }
            host_gemm(g, a.host_slice(), b.host_slice(), c.host_slice_mut(), None);
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
/// (m, n, k) only, never on the thread count (`crate::parallel`). The AVX-512 kernel's results do
/// not depend on the tiles at all (each element is one chain over k); `matrixmultiply` packs
/// op(B)'s panel once per call, so a tall tile packs B less often (at the training shapes, m =
/// B·n = 12 800 rows and k = 64, packing was 40 % of its time with 64-row tiles). 192 rows are
/// 32 of the kernel's 6-row blocks; 256 columns are 4 of its 64-column panels.
const TILE_ROWS: usize = 192;
const TILE_COLUMNS: usize = 256;
/// 1024 rows of a weight gradient's `x` and `dy` (256 KiB each at d = 64) stay in the L2 cache
/// while the slice's product runs, and 12 800 rows give 13 slices to share among the threads.
const K_SLICE: usize = 1024;
/// Below this many multiply-adds a product runs as one call (threads would cost more).
const SERIAL_BELOW: usize = 1 << 18;
/// k is split only when the output has fewer tiles than this.
const FEW_TILES: usize = 4;

/// Which code multiplies a block: the AVX-512 kernel where the CPU has it, else matrixmultiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Avx512,
    MatrixMultiply,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            return Kernel::Avx512;
        }
        Kernel::MatrixMultiply
    }
}

/// The host GEMM: `C = alpha · op(A) · op(B) + beta · C (+ bias)` in parallel over fixed output
/// tiles, and for a small output with a long k (a weight gradient `xᵀ dy` over every row of the
/// batch) over fixed slices of k whose partial products are added in slice order. Bit-identical
/// for every thread count.
fn host_gemm(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32], bias: Option<&[f32]>) {
    host_gemm_on(Kernel::detect(), g, a, b, c, bias)
}

fn host_gemm_on(
    kernel: Kernel,
    g: Gemm,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    bias: Option<&[f32]>,
) {
    if g.k == 0 {
        for row in c.chunks_mut(g.n) {
            for (j, v) in row.iter_mut().enumerate() {
                *v *= g.beta;
                if let Some(bias) = bias {
                    *v += bias[j];
                }
            }
        }
        return;
    }
    // The AVX-512 kernel reads op(B) row-major: a transposed B (a weight in `dy Wᵀ`, the item
    // table in `u E_Xᵀ`) is transposed once here, k · n copies against m · n · k multiply-adds.
    let transposed;
    let (g, b) = if kernel == Kernel::Avx512 && g.transpose_b {
        transposed = transpose(b, g.n, g.k);
        (
            Gemm {
                transpose_b: false,
                ..g
            },
            transposed.as_slice(),
        )
    } else {
        (g, b)
    };
    let row_tiles = g.m.div_ceil(TILE_ROWS);
    let column_tiles = g.n.div_ceil(TILE_COLUMNS);
    let tiles = row_tiles * column_tiles;
    if g.m * g.n * g.k < SERIAL_BELOW {
        // SAFETY: the whole C of the dense slices whose lengths `gemm` checked.
        unsafe {
            block(
                kernel,
                g,
                a,
                b,
                c.as_mut_ptr(),
                (0, g.m),
                (0, g.n),
                (0, g.k),
                g.beta,
                bias,
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
                block(
                    kernel,
                    unit,
                    a,
                    b,
                    partial.as_mut_ptr(),
                    (0, g.m),
                    (0, g.n),
                    (k0, k1),
                    0.0,
                    None,
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
                if let Some(bias) = bias {
                    *value += bias[(offset + e) % g.n];
                }
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
        unsafe {
            block(
                kernel,
                g,
                a,
                b,
                out.get(),
                rows,
                columns,
                (0, g.k),
                g.beta,
                bias,
            )
        };
    });
}

/// The row-major transpose of a `rows × cols` row-major matrix, in 16 × 16 blocks.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 16;
    let mut t = vec![0.0f32; m.len()];
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    t[c * rows + r] = m[r * cols + c];
                }
            }
        }
    }
    t
}

/// `C[rows, columns] = alpha · op(A)[rows, ks] · op(B)[ks, columns] + beta · C[rows, columns]`
/// (`+ bias[columns]`), by `kernel`.
///
/// # Safety
/// `a`, `b` are the dense operands of `g`, `c` points at a dense m × n C, the ranges lie inside
/// them, `bias` has n elements, and no other thread touches `C[rows, columns]` meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    kernel: Kernel,
    g: Gemm,
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    rows: (usize, usize),
    columns: (usize, usize),
    ks: (usize, usize),
    beta: f32,
    bias: Option<&[f32]>,
) {
    // Row and column strides of op(A) (m × k) and op(B) (k × n) in their row-major storage.
    let (rsa, csa) = if g.transpose_a { (1, g.m) } else { (g.k, 1) };
    let (rsb, csb) = if g.transpose_b { (1, g.k) } else { (g.n, 1) };
    let (m, n, k) = (rows.1 - rows.0, columns.1 - columns.0, ks.1 - ks.0);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let a_start = rows.0 * rsa + ks.0 * csa;
    let b_start = ks.0 * rsb + columns.0 * csb;
    let c_start = rows.0 * g.n + columns.0;
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512 {
        debug_assert_eq!(csb, 1, "the AVX-512 kernel reads op(B) row-major");
        // SAFETY: `Kernel::Avx512` is only detected on a CPU with AVX-512F; the block's elements
        // are inside the operands and C per this function's contract.
        unsafe {
            avx512::run(&avx512::Block {
                a: a.as_ptr().add(a_start),
                row_stride: rsa,
                step: csa,
                b: b.as_ptr().add(b_start),
                ldb: rsb,
                c: c.add(c_start),
                ldc: g.n,
                m,
                n,
                k,
                alpha: g.alpha,
                beta,
                bias: bias.map_or(std::ptr::null(), |bias| bias.as_ptr().add(columns.0)),
            })
        };
        return;
    }
    let _ = kernel;
    // SAFETY: per the contract, every offset stays inside the operands and the C tile.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            g.alpha,
            a.as_ptr().add(a_start),
            rsa as isize,
            csa as isize,
            b.as_ptr().add(b_start),
            rsb as isize,
            csb as isize,
            beta,
            c.add(c_start),
            g.n as isize,
            1,
        );
        if let Some(bias) = bias {
            for i in 0..m {
                let row = std::slice::from_raw_parts_mut(c.add(c_start + i * g.n), n);
                for (v, &b) in row.iter_mut().zip(&bias[columns.0..columns.1]) {
                    *v += b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-1, 1) from a hash of the index, so every element differs.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len as u64)
            .map(|i| (crate::rng::hash64(seed, i) >> 40) as f32 / 8_388_608.0 - 1.0)
            .collect()
    }

    /// `alpha · op(A) op(B) + beta · C + bias` in f64, from the row-major storage of `g`.
    fn reference(g: Gemm, a: &[f32], b: &[f32], c: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
        let mut out = vec![0.0f64; g.m * g.n];
        for i in 0..g.m {
            for j in 0..g.n {
                let mut sum = 0.0f64;
                for p in 0..g.k {
                    let x = if g.transpose_a {
                        a[p * g.m + i]
                    } else {
                        a[i * g.k + p]
                    };
                    let y = if g.transpose_b {
                        b[j * g.k + p]
                    } else {
                        b[p * g.n + j]
                    };
                    sum += x as f64 * y as f64;
                }
                let mut v = g.alpha as f64 * sum;
                if g.beta != 0.0 {
                    v += g.beta as f64 * c[i * g.n + j] as f64;
                }
                if let Some(bias) = bias {
                    v += bias[j] as f64;
                }
                out[i * g.n + j] = v;
            }
        }
        out
    }

    /// Both kernels at the shapes that exercise every edge of the AVX-512 kernel's blocks (rows
    /// not a multiple of 6, columns not a multiple of 16 or 64, one row or column), of the tiles
    /// (more than 192 rows, more than 256 columns) and of the k slices (k > 2048 with a small
    /// C), with each transpose, β = 0 and β ≠ 0 (C read), α ≠ 1, and the fused bias: within
    /// 1e-5 · (1 + Σ|terms|) of the f64 product.
    #[test]
    fn host_kernels_match_the_f64_product() {
        let mut kernels = vec![Kernel::MatrixMultiply];
        if Kernel::detect() == Kernel::Avx512 {
            kernels.push(Kernel::Avx512);
        } else {
            println!("SKIPPED the AVX-512 kernel's shapes: this CPU has no AVX-512F");
        }
        let shapes = [
            (1, 1, 1),
            (5, 17, 3),
            (7, 64, 64),
            (13, 65, 31),
            (200, 300, 64),
            (64, 64, 4500),
            (6, 33, 2200),
        ];
        for kernel in kernels {
            for (m, n, k) in shapes {
                for (transpose_a, transpose_b) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    for (alpha, beta, with_bias) in [(1.0, 0.0, false), (0.5, 0.75, true)] {
                        let g = Gemm {
                            transpose_a,
                            transpose_b,
                            m,
                            n,
                            k,
                            alpha,
                            beta,
                        };
                        let (a, b) = (values(m * k, 1), values(k * n, 2));
                        let c0 = values(m * n, 3);
                        let bias = values(n, 4);
                        let bias = with_bias.then_some(bias.as_slice());
                        let mut c = if beta == 0.0 {
                            vec![f32::NAN; m * n]
                        } else {
                            c0.clone()
                        };
                        host_gemm_on(kernel, g, &a, &b, &mut c, bias);
                        let expected = reference(g, &a, &b, &c0, bias);
                        let bound = 1e-5 * (1.0 + k as f64 + 2.0);
                        for (e, (&got, &want)) in c.iter().zip(&expected).enumerate() {
                            assert!(
                                (got as f64 - want).abs() <= bound,
                                "{kernel:?} {g:?} bias {with_bias}: C[{e}] = {got}, f64 {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
