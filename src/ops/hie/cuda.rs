//! Launches of `kernels/hie.cu`, shared by the CUDA and emulated devices (kernel_version family
//! "hie": v1 keeps M in shared memory, v2 a row of M per thread in registers, v3 v2's QR with
//! the products on 3xTF32 tensor-core tiles; the file's header says why).
use super::{Dims, KERNEL_FAMILY};
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernel_version::{self, KernelVersion};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const FORWARD: KernelRef = KernelRef::new("hie", "hie_forward");
const BACKWARD_Q_CONSTANT: KernelRef = KernelRef::new("hie", "hie_backward_q_constant");
const BACKWARD_FULL: KernelRef = KernelRef::new("hie", "hie_backward_full");
const SUM_BATCH: KernelRef = KernelRef::new("hie", "hie_sum_batch");
/// v2 entry points by register width R = 16, 32 (the template parameter of `kernels/hie.cu`).
/// The forwards stage H_X in dynamic shared memory beside Q (51.2 KB at n 50, d 256): opted in.
const FORWARD_V2: [KernelRef; 2] = [
    KernelRef::new("hie", "hie_forward_v2_r16").with_large_shared(),
    KernelRef::new("hie", "hie_forward_v2_r32").with_large_shared(),
];
/// Shared memory the v2 forward leaves for its static arrays (7.2 KB at R = 32) when it decides
/// whether H_X fits beside Q.
const V2_FORWARD_STATIC_RESERVE: usize = 8 * 1024;
const BACKWARD_Q_CONSTANT_V2: [KernelRef; 2] = [
    KernelRef::new("hie", "hie_backward_q_constant_v2_r16"),
    KernelRef::new("hie", "hie_backward_q_constant_v2_r32"),
];
const BACKWARD_FULL_V2: [KernelRef; 2] = [
    KernelRef::new("hie", "hie_backward_full_v2_r16"),
    KernelRef::new("hie", "hie_backward_full_v2_r32"),
];
/// v3 entry points by register width R = 16, 32; the forwards stage H_X as v2's do (opted in).
const FORWARD_V3: [KernelRef; 2] = [
    KernelRef::new("hie", "hie_forward_v3_r16").with_large_shared(),
    KernelRef::new("hie", "hie_forward_v3_r32").with_large_shared(),
];
/// Shared memory the v3 forward leaves for its static arrays (7.3 KB at R = 32, ptxas: the QR's
/// reductions and 32 rows of φ⊙C_A) when it decides whether H_X fits beside Q.
const V3_FORWARD_STATIC_RESERVE: usize = 12 * 1024;
const BACKWARD_Q_CONSTANT_V3: [KernelRef; 2] = [
    KernelRef::new("hie", "hie_backward_q_constant_v3_r16"),
    KernelRef::new("hie", "hie_backward_q_constant_v3_r32"),
];
const BACKWARD_FULL_V3: [KernelRef; 2] = [
    KernelRef::new("hie", "hie_backward_full_v3_r16"),
    KernelRef::new("hie", "hie_backward_full_v3_r32"),
];
/// v3's row stride of Q (and M, Q̄, M̄) in shared memory: R + 4 floats (`HIE_V3_PAD`).
const V3_PAD: usize = 4;

/// Largest d the v2 and v3 kernels take (thread i owns row i of M: one block of at most 256
/// threads). Larger d launches v1 whatever the selection.
pub const V2_MAX_HIDDEN: usize = 256;

/// The kernels a launch uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Version {
    V1,
    /// v2 with register width R = 16 (index 0: r ≤ 16) or 32 (index 1: 16 < r ≤ 32).
    V2 {
        index: usize,
    },
    /// v3, the same register widths as v2.
    V3 {
        index: usize,
    },
}

impl Version {
    fn selected(dims: Dims) -> Result<Version> {
        Ok(match kernel_version::selected(KERNEL_FAMILY)? {
            KernelVersion::V2 if dims.d <= V2_MAX_HIDDEN => Version::V2 {
                index: usize::from(dims.r > 16),
            },
            KernelVersion::V3 if dims.d <= V2_MAX_HIDDEN => Version::V3 {
                index: usize::from(dims.r > 16),
            },
            _ => Version::V1,
        })
    }

    /// Blocks of the per-sequence kernels: v1's matrix column-major with stride leading(d); v2's
    /// Q (or M̄) row-major with stride R + 1, v3's with stride R + 4.
    fn launch(self, dims: Dims) -> LaunchConfig {
        let mut config = sequence_blocks(dims);
        match self {
            Version::V1 => {}
            Version::V2 { index } => {
                let width = 16 << index;
                config.shared_bytes = (dims.d * (width + 1) * 4) as u32;
            }
            Version::V3 { index } => {
                let width = 16 << index;
                config.shared_bytes = (dims.d * (width + V3_PAD) * 4) as u32;
            }
        }
        config
    }
}

/// The v2 forward's launch and whether it stages H_X (`stage_x`): Q (d × (R + 1) floats) and,
/// when they fit in `opt_in_limit` bytes with the static arrays, the n × d rows of H_X.
fn forward_v2_launch(dims: Dims, index: usize, opt_in_limit: usize) -> (LaunchConfig, bool) {
    let mut config = Version::V2 { index }.launch(dims);
    let staged = config.shared_bytes as usize + dims.n * dims.d * 4;
    let stage_x = staged + V2_FORWARD_STATIC_RESERVE <= opt_in_limit;
    if stage_x {
        config.shared_bytes = staged as u32;
    }
    (config, stage_x)
}

/// The v3 forward's launch and `stage_x`: Q (d × (R + 4) floats) and, when they fit in
/// `opt_in_limit` bytes with the static arrays, the n rows of H_X with the row stride
/// `hie_v3_x_stride(d)` = d rounded up to 32, plus 4.
fn forward_v3_launch(dims: Dims, index: usize, opt_in_limit: usize) -> (LaunchConfig, bool) {
    let mut config = Version::V3 { index }.launch(dims);
    let x_stride = dims.d.div_ceil(32) * 32 + 4;
    let staged = config.shared_bytes as usize + dims.n * x_stride * 4;
    let stage_x = staged + V3_FORWARD_STATIC_RESERVE <= opt_in_limit;
    if stage_x {
        config.shared_bytes = staged as u32;
    }
    (config, stage_x)
}

/// Stride of one column of the shared d×r matrix (`hie_leading` in the kernel): d rounded up to odd.
pub(super) fn leading(d: usize) -> usize {
    d | 1
}

/// Dynamic shared memory of every HIE kernel: r columns of `leading(d)` floats.
pub(super) fn shared_bytes(d: usize, r: usize) -> usize {
    r * leading(d) * 4
}

/// One block per sequence, about one thread per row of M: a multiple of 32, at most 256 (the
/// kernel's HIE_MAX_WARPS).
fn sequence_blocks(dims: Dims) -> LaunchConfig {
    let threads = dims.d.div_ceil(32).clamp(1, 8) as u32 * 32;
    LaunchConfig {
        grid: [dims.batch as u32, 1, 1],
        block: [threads, 1, 1],
        shared_bytes: shared_bytes(dims.d, dims.r) as u32,
    }
}

fn ints(dims: Dims) -> (i32, i32, i32, i32) {
    (
        dims.batch as i32,
        dims.n as i32,
        dims.d as i32,
        dims.r as i32,
    )
}

pub(super) struct Forward {
    pub output: Buffer<f32>,
    pub q: Buffer<f32>,
    pub r: Buffer<f32>,
    pub mask: Buffer<f32>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    device: &Device,
    h_x: &Buffer<f32>,
    h_a: &Buffer<f32>,
    w_r: &Buffer<f32>,
    lengths: &Buffer<i32>,
    dims: Dims,
    keep_padding: bool,
    rank_tolerance: f32,
) -> Result<Forward> {
    let Dims { batch, n, d, r } = dims;
    // `hie_forward` writes every element of its four outputs (one block per sequence: all n rows
    // of the output and φ, zeros past L_b; all of Q and R, zeros for dropped columns). With no
    // sequence or no position no kernel runs: zeros (Q and R of an empty M).
    let empty = batch == 0 || n == 0;
    let alloc = |len: usize| {
        if empty {
            device.zeros::<f32>(len)
        } else {
            device.uninitialized::<f32>(len)
        }
    };
    let mut output = alloc(batch * n * d)?;
    let mut q = alloc(batch * d * r)?;
    let mut r_mat = alloc(batch * r * r)?;
    let mut mask = alloc(batch * n * r)?;
    if !empty {
        let (b, n, d, r) = ints(dims);
        let version = Version::selected(dims)?;
        let (kernel, config, stage_x) = match version {
            Version::V1 => (FORWARD, version.launch(dims), None),
            Version::V2 { index } => {
                let limit = device.max_opt_in_shared_bytes() as usize;
                let (config, stage_x) = forward_v2_launch(dims, index, limit);
                (FORWARD_V2[index], config, Some(i32::from(stage_x)))
            }
            Version::V3 { index } => {
                let limit = device.max_opt_in_shared_bytes() as usize;
                let (config, stage_x) = forward_v3_launch(dims, index, limit);
                (FORWARD_V3[index], config, Some(i32::from(stage_x)))
            }
        };
        let mut args = kernel_args![
            h_x,
            h_a,
            w_r,
            lengths,
            &mut output,
            &mut q,
            &mut r_mat,
            &mut mask,
            b,
            n,
            d,
            r,
            keep_padding as i32,
            rank_tolerance,
            stage_x.unwrap_or(0)
        ];
        // v1 takes no `stage_x`.
        let arg_count = args.len() - usize::from(stage_x.is_none());
        device.launch(kernel, config, &mut args[..arg_count])?;
    }
    Ok(Forward {
        output,
        q,
        r: r_mat,
        mask,
    })
}

pub(super) fn backward_q_constant(
    device: &Device,
    q: &Buffer<f32>,
    mask: &Buffer<f32>,
    dy: &Buffer<f32>,
    lengths: &Buffer<i32>,
    dims: Dims,
    keep_padding: bool,
) -> Result<Buffer<f32>> {
    // `hie_backward_q_constant` writes all n rows of every sequence (zeros past L_b).
    let mut dh_a = device.uninitialized::<f32>(dims.batch * dims.n * dims.d)?;
    if dims.batch > 0 && dims.n > 0 {
        let (b, n, d, r) = ints(dims);
        let version = Version::selected(dims)?;
        let kernel = match version {
            Version::V1 => BACKWARD_Q_CONSTANT,
            Version::V2 { index } => BACKWARD_Q_CONSTANT_V2[index],
            Version::V3 { index } => BACKWARD_Q_CONSTANT_V3[index],
        };
        device.launch(
            kernel,
            version.launch(dims),
            &mut kernel_args![
                q,
                mask,
                dy,
                lengths,
                &mut dh_a,
                b,
                n,
                d,
                r,
                keep_padding as i32
            ],
        )?;
    }
    Ok(dh_a)
}

pub(super) struct Full {
    pub dh_a: Buffer<f32>,
    pub dh_x: Buffer<f32>,
    pub dw_r: Buffer<f32>,
}

pub(super) struct FullInputs<'a> {
    pub h_x: &'a Buffer<f32>,
    pub h_a: &'a Buffer<f32>,
    pub w_r: &'a Buffer<f32>,
    pub q: &'a Buffer<f32>,
    pub r: &'a Buffer<f32>,
    pub mask: &'a Buffer<f32>,
    pub dy: &'a Buffer<f32>,
    pub lengths: &'a Buffer<i32>,
}

pub(super) fn backward_full(
    device: &Device,
    inputs: FullInputs<'_>,
    dims: Dims,
    keep_padding: bool,
) -> Result<Full> {
    let Dims { batch, n, d, r } = dims;
    if batch == 0 || n == 0 {
        // Zeros: dW_r over no sequences is an empty sum, and no kernel runs.
        return Ok(Full {
            dh_a: device.uninitialized::<f32>(0)?,
            dh_x: device.uninitialized::<f32>(0)?,
            dw_r: device.zeros::<f32>(n * r)?,
        });
    }
    // `hie_backward_full` (every version) writes all of dH_A, dH_X and the dW_r partials (every
    // row, zeros past L_b); `hie_sum_batch` all of dW_r. v1's scratch M̄ it writes whole, c̄ and
    // φ⊙C_A for t < L_b and reads only there; v2 and v3 have no global scratch.
    let mut dh_a = device.uninitialized::<f32>(batch * n * d)?;
    let mut dh_x = device.uninitialized::<f32>(batch * n * d)?;
    let mut dw_r = device.uninitialized::<f32>(n * r)?;
    let mut dw_partial = device.uninitialized::<f32>(batch * n * r)?;
    let (b_i, n_i, d_i, r_i) = ints(dims);
    let FullInputs {
        h_x,
        h_a,
        w_r,
        q,
        r: r_mat,
        mask,
        dy,
        lengths,
    } = inputs;
    let version = Version::selected(dims)?;
    match version {
        Version::V1 => {
            let mut filtered = device.uninitialized::<f32>(batch * n * r)?;
            let mut c_bar = device.uninitialized::<f32>(batch * n * r)?;
            let mut m_bar = device.uninitialized::<f32>(batch * d * r)?;
            device.launch(
                BACKWARD_FULL,
                version.launch(dims),
                &mut kernel_args![
                    h_x,
                    h_a,
                    w_r,
                    q,
                    r_mat,
                    mask,
                    dy,
                    lengths,
                    &mut dh_a,
                    &mut dh_x,
                    &mut dw_partial,
                    &mut filtered,
                    &mut c_bar,
                    &mut m_bar,
                    b_i,
                    n_i,
                    d_i,
                    r_i,
                    keep_padding as i32
                ],
            )?;
        }
        Version::V2 { index } | Version::V3 { index } => {
            let kernel = match version {
                Version::V3 { .. } => BACKWARD_FULL_V3[index],
                _ => BACKWARD_FULL_V2[index],
            };
            device.launch(
                kernel,
                version.launch(dims),
                &mut kernel_args![
                    h_x,
                    h_a,
                    w_r,
                    q,
                    r_mat,
                    mask,
                    dy,
                    lengths,
                    &mut dh_a,
                    &mut dh_x,
                    &mut dw_partial,
                    b_i,
                    n_i,
                    d_i,
                    r_i,
                    keep_padding as i32
                ],
            )?;
        }
    }
    let len = n * r;
    device.launch(
        SUM_BATCH,
        LaunchConfig::grid_stride(len),
        &mut kernel_args![&dw_partial, &mut dw_r, b_i, len as i32],
    )?;
    Ok(Full { dh_a, dh_x, dw_r })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{MAX_DEFAULT_SHARED_BYTES, MAX_OPT_IN_SHARED_BYTES};

    #[test]
    fn the_v2_forward_stages_h_x_beside_q_where_it_fits() {
        let limit = MAX_OPT_IN_SHARED_BYTES as usize;
        // The paper's sizes: Q 256 · 17 floats, H_X 50 · 256: over the 48 KB default (opted in).
        let (config, stage_x) = forward_v2_launch(dims(2048, 50, 256, 16), 0, limit);
        assert!(stage_x);
        assert_eq!(config.shared_bytes, 17_408 + 51_200);
        assert!(config.shared_bytes > MAX_DEFAULT_SHARED_BYTES);
        // Too many rows to stage: H_X read from device memory, Q alone in shared memory.
        let (config, stage_x) = forward_v2_launch(dims(1, 220, 256, 32), 1, limit);
        assert!(!stage_x);
        assert_eq!(config.shared_bytes, 33_792);
        // A device with less opt-in shared memory stages less.
        assert!(!forward_v2_launch(dims(1, 50, 256, 16), 0, 48 * 1024).1);
    }

    #[test]
    fn the_v3_forward_stages_h_x_with_its_padded_stride() {
        let limit = MAX_OPT_IN_SHARED_BYTES as usize;
        // Q 256 · 20 floats, H_X 50 rows of 260: 20,480 + 52,000 bytes, opted in.
        let (config, stage_x) = forward_v3_launch(dims(2048, 50, 256, 16), 0, limit);
        assert!(stage_x);
        assert_eq!(config.shared_bytes, 20_480 + 52_000);
        // R = 32 and an odd d: Q 45 · 36 floats, H_X 7 rows of 68.
        let (config, stage_x) = forward_v3_launch(dims(3, 7, 45, 24), 1, limit);
        assert!(stage_x);
        assert_eq!(config.shared_bytes, (45 * 36 + 7 * 68) * 4);
        // Too many rows: Q alone, H_X from device memory.
        let (config, stage_x) = forward_v3_launch(dims(1, 220, 256, 32), 1, limit);
        assert!(!stage_x);
        assert_eq!(config.shared_bytes, 36_864);
    }

    fn dims(batch: usize, n: usize, d: usize, r: usize) -> Dims {
        Dims { batch, n, d, r }
    }
}
