//! Launches of `kernels/attention.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernel_version::{self, KernelVersion};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

use super::cpu::Geometry;

const FORWARD: KernelRef = KernelRef::new("attention", "attention_forward");
/// Tensor-core forward (`attention.cu` "Versions"): same arguments, outputs and saved state.
const FORWARD_V2: KernelRef = KernelRef::new("attention", "attention_forward_v2");
const BACKWARD_QUERIES: KernelRef = KernelRef::new("attention", "attention_backward_queries");
const BACKWARD_KEYS: KernelRef = KernelRef::new("attention", "attention_backward_keys");
/// One-pass backward (`attention.cu` "Versions"): one block owns dQ, dK and dV of its (sequence,
/// head); forms D = rowsum(P ⊙ dP) itself, so it does not read the outputs.
const BACKWARD_V2: KernelRef = KernelRef::new("attention", "attention_backward_v2");
const SUM_OVER_BATCH: KernelRef = KernelRef::new("attention", "attention_sum_over_batch");
/// Must match ATTENTION_WARPS in the kernel.
const WARPS: u32 = 4;

/// Bits of the kernel's `outputs_mask`.
pub(super) const OUT_FUSED: i32 = 2;
pub(super) const OUT_POSITION: i32 = 4;

/// The nine inputs in kernel order (Q1, K1, Q2, K2, Q3, K3, V1, V2, V3); absent ones are `None`
/// and replaced by Q1 (never read). `shared_mask` bit t: input t has batch stride 0.
pub(super) struct Inputs<'a> {
    pub buffers: [Option<&'a Buffer<f32>>; 9],
    pub lengths: &'a Buffer<i32>,
    pub pairs: usize,
    pub outputs_mask: i32,
    pub shared_mask: i32,
    pub dropout: f32,
    pub seed: u64,
    /// How kernel v2's forward forms its products: 0 by 3xTF32 (`Precision::Fp32`), 1 in plain
    /// TF32 (`Precision::Tf32`), 2 in bf16 (`Precision::Bf16`); the kernel's `ATTENTION_V2_*`.
    pub products: i32,
}

impl<'a> Inputs<'a> {
    fn get(&self, t: usize) -> &'a Buffer<f32> {
        self.buffers[t]
            .or(self.buffers[0])
            .expect("Q1 is always present")
    }
}

fn block_per_head(g: &Geometry) -> LaunchConfig {
    LaunchConfig::linear((g.batch * g.heads) as u32, WARPS * 32)
}

fn scalars(g: &Geometry) -> (i32, i32, i32, i32) {
    (
        g.batch as i32,
        g.seq_len as i32,
        g.heads as i32,
        g.head_dim as i32,
    )
}

pub(super) struct Forward {
    pub outputs: [Option<Buffer<f32>>; 3],
    pub log_sum_exp: Buffer<f32>,
}

pub(super) fn forward(device: &Device, g: &Geometry, inputs: &Inputs<'_>) -> Result<Forward> {
    let len = g.batch * g.seq_len * g.width();
    // One block per (sequence, head) writes its head's columns of all n rows of every wanted
    // output (zeros past L_b) and all three statistics of every row; an unwanted output is a
    // 1-element dummy the kernel never touches.
    let mut out_x = device.uninitialized::<f32>(len)?;
    let want = |bit: i32| inputs.outputs_mask & bit != 0;
    let mut out_a = device.uninitialized::<f32>(if want(OUT_FUSED) { len } else { 1 })?;
    let mut out_p = device.uninitialized::<f32>(if want(OUT_POSITION) { len } else { 1 })?;
    let mut lse = device.uninitialized::<f32>(3 * g.batch * g.heads * g.seq_len)?;
    let (batch, n, heads, head_dim) = scalars(g);
    // Both versions save the same log-sum-exp, so either backward follows either forward. v2 takes
    // one more argument than v1 (its precision), last.
    let mut args = kernel_args![
        inputs.get(0),
        inputs.get(1),
        inputs.get(2),
        inputs.get(3),
        inputs.get(4),
        inputs.get(5),
        inputs.get(6),
        inputs.get(7),
        inputs.get(8),
        inputs.lengths,
        &mut out_x,
        &mut out_a,
        &mut out_p,
        &mut lse,
        batch,
        n,
        heads,
        head_dim,
        inputs.pairs as i32,
        inputs.outputs_mask,
        inputs.shared_mask,
        inputs.dropout,
        inputs.seed,
        inputs.products
    ];
    let v1_arguments = args.len() - 1;
    match kernel_version::selected(super::KERNEL_FAMILY)? {
        KernelVersion::V1 => {
            device.launch(FORWARD, block_per_head(g), &mut args[..v1_arguments])?
        }
        KernelVersion::V2 => device.launch(FORWARD_V2, block_per_head(g), &mut args)?,
    }
    Ok(Forward {
        outputs: [
            Some(out_x),
            want(OUT_FUSED).then_some(out_a),
            want(OUT_POSITION).then_some(out_p),
        ],
        log_sum_exp: lse,
    })
}

/// What the backward reads besides the inputs: O_X, O_A, O_P, their upstream gradients (zeros
/// where none) and the log-sum-exp statistics. Absent outputs are `None`.
pub(super) struct Upstream<'a> {
    pub outputs: [Option<&'a Buffer<f32>>; 3],
    pub grads: [Option<&'a Buffer<f32>>; 3],
    pub log_sum_exp: &'a Buffer<f32>,
}

/// Gradients of the nine inputs in kernel order, each `[n, d]` for a shared input, else
/// `[B, n, d]`; `None` for absent inputs.
pub(super) fn backward(
    device: &Device,
    g: &Geometry,
    inputs: &Inputs<'_>,
    upstream: &Upstream<'_>,
) -> Result<[Option<Buffer<f32>>; 9]> {
    let per_sequence = g.batch * g.seq_len * g.width();
    // Every present input gets a per-sequence gradient buffer, which the row pass (dQ) or the
    // column pass (dK, dV) writes in full (its head's columns of all n rows, zeros past L_b);
    // absent ones a 1-element dummy the kernels never touch.
    let mut grads: Vec<Buffer<f32>> = (0..9)
        .map(|t| {
            device.uninitialized::<f32>(if inputs.buffers[t].is_some() {
                per_sequence
            } else {
                1
            })
        })
        .collect::<Result<_>>()?;
    let out_x = upstream.outputs[0].expect("O_X is always present");
    let grad_x = upstream.grads[0].expect("dO_X is always present");
    let output = |s: usize| upstream.outputs[s].unwrap_or(out_x);
    let grad = |s: usize| upstream.grads[s].unwrap_or(grad_x);
    let (batch, n, heads, head_dim) = scalars(g);
    if kernel_version::selected(super::KERNEL_FAMILY)? == KernelVersion::V2 {
        let [dq1, dk1, dq2, dk2, dq3, dk3, dv1, dv2, dv3] = &mut grads[..] else {
            unreachable!("nine gradient buffers")
        };
        device.launch(
            BACKWARD_V2,
            block_per_head(g),
            &mut kernel_args![
                inputs.get(0),
                inputs.get(1),
                inputs.get(2),
                inputs.get(3),
                inputs.get(4),
                inputs.get(5),
                inputs.get(6),
                inputs.get(7),
                inputs.get(8),
                inputs.lengths,
                grad_x,
                grad(1),
                grad(2),
                upstream.log_sum_exp,
                dq1,
                dk1,
                dq2,
                dk2,
                dq3,
                dk3,
                dv1,
                dv2,
                dv3,
                batch,
                n,
                heads,
                head_dim,
                inputs.pairs as i32,
                inputs.outputs_mask,
                inputs.shared_mask,
                inputs.dropout,
                inputs.seed
            ],
        )?;
        return sum_shared_over_batch(device, g, inputs, grads);
    }
    // D_s,i = dO_s,i · O_s,i from the row pass, read by the column pass; both touch the rows
    // i < L_b only.
    let mut row_dot = device.uninitialized::<f32>(3 * g.batch * g.heads * g.seq_len)?;
    let [dq1, dk1, dq2, dk2, dq3, dk3, dv1, dv2, dv3] = &mut grads[..] else {
        unreachable!("nine gradient buffers")
    };
    device.launch(
        BACKWARD_QUERIES,
        block_per_head(g),
        &mut kernel_args![
            inputs.get(0),
            inputs.get(1),
            inputs.get(2),
            inputs.get(3),
            inputs.get(4),
            inputs.get(5),
            inputs.get(6),
            inputs.get(7),
            inputs.get(8),
            inputs.lengths,
            out_x,
            output(1),
            output(2),
            grad_x,
            grad(1),
            grad(2),
            upstream.log_sum_exp,
            &mut row_dot,
            dq1,
            dq2,
            dq3,
            batch,
            n,
            heads,
            head_dim,
            inputs.pairs as i32,
            inputs.outputs_mask,
            inputs.shared_mask,
            inputs.dropout,
            inputs.seed
        ],
    )?;
    device.launch(
        BACKWARD_KEYS,
        block_per_head(g),
        &mut kernel_args![
            inputs.get(0),
            inputs.get(1),
            inputs.get(2),
            inputs.get(3),
            inputs.get(4),
            inputs.get(5),
            inputs.get(6),
            inputs.get(7),
            inputs.get(8),
            inputs.lengths,
            grad_x,
            grad(1),
            grad(2),
            upstream.log_sum_exp,
            &row_dot,
            dk1,
            dk2,
            dk3,
            dv1,
            dv2,
            dv3,
            batch,
            n,
            heads,
            head_dim,
            inputs.pairs as i32,
            inputs.outputs_mask,
            inputs.shared_mask,
            inputs.dropout,
            inputs.seed
        ],
    )?;
    sum_shared_over_batch(device, g, inputs, grads)
}

/// The gradients in kernel order: per-sequence buffers as they are, those of inputs shared by
/// the batch summed over it in a fixed order (`attention_sum_over_batch`); `None` where absent.
fn sum_shared_over_batch(
    device: &Device,
    g: &Geometry,
    inputs: &Inputs<'_>,
    grads: Vec<Buffer<f32>>,
) -> Result<[Option<Buffer<f32>>; 9]> {
    let batch = g.batch as i32;
    let shared_len = g.seq_len * g.width();
    let mut result: [Option<Buffer<f32>>; 9] = Default::default();
    for (t, partial) in grads.into_iter().enumerate() {
        if inputs.buffers[t].is_none() {
            continue;
        }
        result[t] = Some(if inputs.shared_mask & (1 << t) != 0 {
            // Deterministic sum of the per-sequence partial gradients over the batch.
            // `attention_sum_over_batch` writes every element.
            let mut total = device.uninitialized::<f32>(shared_len)?;
            device.launch(
                SUM_OVER_BATCH,
                LaunchConfig::grid_stride(shared_len),
                &mut kernel_args![&partial, &mut total, batch, shared_len as i32],
            )?;
            total
        } else {
            partial
        });
    }
    Ok(result)
}
