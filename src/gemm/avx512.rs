//! The host GEMM's AVX-512 kernel (x86-64 CPUs with AVX-512F; `super::host_gemm` checks at run
//! time and uses `matrixmultiply` elsewhere).
//!
//! Written for the training shapes of the CPU path, where `matrixmultiply` spent about as long
//! packing its operands as multiplying (issue 23's profile): a tall op(A) (m = B·n rows) times a
//! small op(B) (k = 64 or 256, n = 64 or 256), the weight gradients `xᵀ dy` (op(A) transposed,
//! long k), and the prediction layer (n = |V|). Nothing is packed: op(B) is read in place as
//! row-major (the caller transposes a transposed B once per call), and the six op(A) values of a
//! step are broadcast straight from A, which suits both layouts (six rows of a row-major A, or
//! six consecutive values of one row of a transposed A).
//!
//! The register block is 6 rows × 64 columns of C (24 zmm accumulators, 4 loads of op(B) and 6
//! broadcasts per 24 fused multiply-adds). **Order of summation**: every element of C is one
//! chain of fused multiply-adds over k in order, from zero, then `alpha · sum (+ beta · C)`
//! (`+ bias`): it depends on the element's values only, not on the block, the tile or the
//! thread that computes it.
use std::arch::x86_64::*;

/// Rows of C per register block.
pub(super) const ROWS: usize = 6;
/// Columns of C per register block (four zmm of 16 floats).
pub(super) const COLUMNS: usize = 64;

/// Whether this CPU runs the kernel.
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// One block of a product: `C[i, j] = alpha · Σ_p A(i, p) · B[p, j] + beta · C[i, j] + bias[j]`
/// for `i < m`, `j < n`, `p < k`, where `A(i, p)` is at `a + i · row_stride + p · step`, `B` is
/// row-major with row stride `ldb` (columns contiguous), `C` row-major with row stride `ldc`;
/// `beta = 0` never reads C.
pub(super) struct Block {
    pub a: *const f32,
    pub row_stride: usize,
    pub step: usize,
    pub b: *const f32,
    pub ldb: usize,
    pub c: *mut f32,
    pub ldc: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    /// `n` values added to every row of C last (a linear layer's bias), or null.
    pub bias: *const f32,
}

/// Runs a [`Block`]: column panels of [`COLUMNS`], in each panel the rows [`ROWS`] at a time.
///
/// # Safety
/// The CPU has AVX-512F ([`available`]); every `A(i, p)`, `B[p, j]`, `C[i, j]` and `bias[j]`
/// named above is inside its allocation, and no other thread touches those elements of C.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run(block: &Block) {
    let mut j = 0;
    while j < block.n {
        let width = (block.n - j).min(COLUMNS);
        let masks = masks(width);
        let mut i = 0;
        while i < block.m {
            let rows = (block.m - i).min(ROWS);
            let at = Position {
                a: block.a.wrapping_add(i * block.row_stride),
                b: block.b.wrapping_add(j),
                c: block.c.wrapping_add(i * block.ldc + j),
                bias: if block.bias.is_null() {
                    block.bias
                } else {
                    block.bias.wrapping_add(j)
                },
            };
            // SAFETY: the block's elements at rows i.., columns j.. (the caller's contract); the
            // masks cover the `width` columns that exist.
            unsafe {
                match rows {
                    6 => kernel::<6>(block, at, masks),
                    5 => kernel::<5>(block, at, masks),
                    4 => kernel::<4>(block, at, masks),
                    3 => kernel::<3>(block, at, masks),
                    2 => kernel::<2>(block, at, masks),
                    _ => kernel::<1>(block, at, masks),
                }
            }
            i += rows;
        }
        j += COLUMNS;
    }
}

/// Where one register block starts: A at its first row, B and C and the bias at its first column.
#[derive(Clone, Copy)]
struct Position {
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    bias: *const f32,
}

/// The lanes of the four zmm of a panel that hold one of its `width` columns.
fn masks(width: usize) -> [__mmask16; 4] {
    std::array::from_fn(|q| {
        let lanes = width.saturating_sub(16 * q).min(16);
        ((1u32 << lanes) - 1) as __mmask16
    })
}

/// `R` rows × the masked 64 columns of C at `at`.
///
/// # Safety
/// As [`run`], for the rows and masked columns of this register block.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>(block: &Block, at: Position, masks: [__mmask16; 4]) {
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    let mut a = at.a;
    let mut b = at.b;
    for _ in 0..block.k {
        // SAFETY: row p of op(B) at columns j.. (masked lanes are not read) and A(i + r, p).
        unsafe {
            let columns: [__m512; 4] =
                std::array::from_fn(|q| _mm512_maskz_loadu_ps(masks[q], b.wrapping_add(16 * q)));
            for (r, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.wrapping_add(r * block.row_stride));
                for (sum, &column) in row.iter_mut().zip(&columns) {
                    *sum = _mm512_fmadd_ps(x, column, *sum);
                }
            }
        }
        a = a.wrapping_add(block.step);
        b = b.wrapping_add(block.ldb);
    }
    let alpha = _mm512_set1_ps(block.alpha);
    let beta = _mm512_set1_ps(block.beta);
    for (r, row) in acc.iter().enumerate() {
        let c = at.c.wrapping_add(r * block.ldc);
        for (q, &sum) in row.iter().enumerate() {
            let (mask, c) = (masks[q], c.wrapping_add(16 * q));
            // SAFETY: the masked lanes of C's row (and of the bias) that exist.
            unsafe {
                let mut y = _mm512_mul_ps(alpha, sum);
                if block.beta != 0.0 {
                    y = _mm512_add_ps(y, _mm512_mul_ps(beta, _mm512_maskz_loadu_ps(mask, c)));
                }
                if !at.bias.is_null() {
                    y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, at.bias.wrapping_add(16 * q)));
                }
                _mm512_mask_storeu_ps(c, mask, y);
            }
        }
    }
}
