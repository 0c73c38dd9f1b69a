//! Launches of `kernels/attention.cu`, shared by the CUDA and emulated devices. Every launch
//! takes the op's one problem descriptor ([`AttentionProblem`], `mod.rs`) and the nine input
//! buffers in kernel order; every kernel's arguments open with those inputs and L_b and close with
//! the problem's scalars ([`leading`], [`trailing`]).
use crate::device::{Buffer, Device, KernelArg, LaunchConfig};
use crate::kernel_version::{self, KernelVersion};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

use super::{AttentionProblem, Geometry, OUT_FUSED, OUT_POSITION};

const FORWARD: KernelRef = KernelRef::new("attention", "attention_forward");
/// Tensor-core forward (`attention.cu` "Versions"): same arguments, outputs and saved state.
const FORWARD_V2: KernelRef = KernelRef::new("attention", "attention_forward_v2");
const BACKWARD_QUERIES: KernelRef = KernelRef::new("attention", "attention_backward_queries");
const BACKWARD_KEYS: KernelRef = KernelRef::new("attention", "attention_backward_keys");
/// One-pass backward (`attention.cu` "Versions"): one block owns dQ, dK and dV of its (sequence,
/// head); forms D = rowsum(P ⊙ dP) itself, so it does not read the outputs.
const BACKWARD_V2: KernelRef = KernelRef::new("attention", "attention_backward_v2");
const SUM_OVER_BATCH: KernelRef = KernelRef::new("attention", "attention_sum_over_batch");
/// The step-counter entry points (issue 20): the same bodies, the seed derived on the device
/// from (counter, stream, site) in place of the seed argument.
const FORWARD_STEPPED: KernelRef = KernelRef::new("attention", "attention_forward_stepped");
const FORWARD_V2_STEPPED: KernelRef = KernelRef::new("attention", "attention_forward_v2_stepped");
const BACKWARD_QUERIES_STEPPED: KernelRef =
    KernelRef::new("attention", "attention_backward_queries_stepped");
const BACKWARD_KEYS_STEPPED: KernelRef =
    KernelRef::new("attention", "attention_backward_keys_stepped");
const BACKWARD_V2_STEPPED: KernelRef = KernelRef::new("attention", "attention_backward_v2_stepped");
/// Must match ATTENTION_WARPS in the kernel.
const WARPS: u32 = 4;

/// The nine inputs in kernel order (Q1, K1, Q2, K2, Q3, K3, V1, V2, V3); `None` where absent.
pub(super) type InputBuffers<'a> = [Option<&'a Buffer<f32>>; 9];

/// Input `t`, or Q1 (never read) where it is absent.
fn input<'a>(inputs: &InputBuffers<'a>, t: usize) -> &'a Buffer<f32> {
    inputs[t].or(inputs[0]).expect("Q1 is always present")
}

/// The arguments every attention kernel opens with: the nine inputs and L_b.
fn leading<'a>(inputs: &InputBuffers<'a>, lengths: &'a Buffer<i32>) -> Vec<KernelArg<'a>> {
    (0..9)
        .map(|t| KernelArg::from(input(inputs, t)))
        .chain([KernelArg::from(lengths)])
        .collect()
}

/// The arguments every attention kernel closes with: B, n, h, d_h, the number of score pairs,
/// the outputs and shared masks, the dropout p and its seed: by value, or (step counter, stream,
/// site) for the step-counter entry points.
fn trailing<'a>(p: &AttentionProblem, counter: Option<&'a Buffer<u64>>) -> Vec<KernelArg<'a>> {
    let g = &p.geometry;
    let mut args = kernel_args![
        g.batch as i32,
        g.seq_len as i32,
        g.heads as i32,
        g.head_dim as i32,
        p.pairs() as i32,
        p.outputs_mask,
        p.shared_mask,
        p.dropout
    ]
    .into_iter()
    .collect::<Vec<_>>();
    match (p.step, counter) {
        (Some(site), Some(counter)) => {
            args.extend(kernel_args![counter, site.stream, site.site]);
        }
        _ => args.push(KernelArg::from(p.seed)),
    }
    args
}

/// The step-counter entry point when the problem's seed comes from the counter, else `by_value`.
fn entry(p: &AttentionProblem, by_value: KernelRef, stepped: KernelRef) -> KernelRef {
    if p.step.is_some() {
        stepped
    } else {
        by_value
    }
}

/// `leading`, then the kernel's own `middle` arguments, then `trailing`.
fn arguments<'a>(
    p: &AttentionProblem,
    inputs: &InputBuffers<'a>,
    lengths: &'a Buffer<i32>,
    counter: Option<&'a Buffer<u64>>,
    middle: impl IntoIterator<Item = KernelArg<'a>>,
) -> Vec<KernelArg<'a>> {
    let mut args = leading(inputs, lengths);
    args.extend(middle);
    args.extend(trailing(p, counter));
    args
}

fn block_per_head(g: &Geometry) -> LaunchConfig {
    LaunchConfig::linear((g.batch * g.heads) as u32, WARPS * 32)
}

pub(super) struct Forward {
    pub outputs: [Option<Buffer<f32>>; 3],
    pub log_sum_exp: Buffer<f32>,
}

pub(super) fn forward(
    device: &Device,
    p: &AttentionProblem,
    inputs: &InputBuffers<'_>,
    lengths: &Buffer<i32>,
    counter: Option<&Buffer<u64>>,
) -> Result<Forward> {
    let g = &p.geometry;
    let len = g.batch * g.seq_len * g.width();
    // One block per (sequence, head) writes its head's columns of all n rows of every wanted
    // output (zeros past L_b) and all three statistics of every row; an unwanted output is a
    // 1-element dummy the kernel never touches.
    let mut out_x = device.uninitialized::<f32>(len)?;
    let want = |bit: i32| p.outputs_mask & bit != 0;
    let mut out_a = device.uninitialized::<f32>(if want(OUT_FUSED) { len } else { 1 })?;
    let mut out_p = device.uninitialized::<f32>(if want(OUT_POSITION) { len } else { 1 })?;
    let mut lse = device.uninitialized::<f32>(3 * g.batch * g.heads * g.seq_len)?;
    // Both versions save the same log-sum-exp, so either backward follows either forward. v2 takes
    // one more argument than v1 (its precision), last.
    let mut args = arguments(
        p,
        inputs,
        lengths,
        counter,
        kernel_args![&mut out_x, &mut out_a, &mut out_p, &mut lse],
    );
    match kernel_version::selected(super::KERNEL_FAMILY)? {
        KernelVersion::V1 => device.launch(
            entry(p, FORWARD, FORWARD_STEPPED),
            block_per_head(g),
            &mut args,
        )?,
        // v3: HIE only (`kernel_version::selected` refuses it here).
        KernelVersion::V2 | KernelVersion::V3 => {
            args.push(KernelArg::from(p.products));
            device.launch(
                entry(p, FORWARD_V2, FORWARD_V2_STEPPED),
                block_per_head(g),
                &mut args,
            )?
        }
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

/// What the backward reads besides the inputs: O_X, O_A, O_P, their upstream gradients and the
/// log-sum-exp statistics. Absent outputs are `None`; so are the gradients of outputs that
/// received none (the launch reads zeros for them).
pub(super) struct Upstream<'a> {
    pub outputs: [Option<&'a Buffer<f32>>; 3],
    pub grads: [Option<&'a Buffer<f32>>; 3],
    pub log_sum_exp: &'a Buffer<f32>,
}

/// Gradients of the nine inputs in kernel order, each `[n, d]` for a shared input, else
/// `[B, n, d]`; `None` for absent inputs.
pub(super) fn backward(
    device: &Device,
    p: &AttentionProblem,
    inputs: &InputBuffers<'_>,
    lengths: &Buffer<i32>,
    upstream: &Upstream<'_>,
    counter: Option<&Buffer<u64>>,
) -> Result<[Option<Buffer<f32>>; 9]> {
    let g = &p.geometry;
    let per_sequence = g.batch * g.seq_len * g.width();
    // An output without an upstream gradient contributes zero: the kernels read a buffer of zeros
    // for it.
    let zeros: Vec<Option<Buffer<f32>>> = (0..3)
        .map(|s| {
            let wanted = p.outputs_mask & (1 << s) != 0 && upstream.grads[s].is_none();
            wanted
                .then(|| device.zeros::<f32>(per_sequence))
                .transpose()
        })
        .collect::<Result<_>>()?;
    let upstream_grads: [Option<&Buffer<f32>>; 3] =
        std::array::from_fn(|s| upstream.grads[s].or(zeros[s].as_ref()));
    // Every present input gets a per-sequence gradient buffer, which the row pass (dQ) or the
    // column pass (dK, dV) writes in full (its head's columns of all n rows, zeros past L_b);
    // absent ones a 1-element dummy the kernels never touch.
    let mut grads: Vec<Buffer<f32>> = (0..9)
        .map(|t| device.uninitialized::<f32>(if p.present(t) { per_sequence } else { 1 }))
        .collect::<Result<_>>()?;
    let out_x = upstream.outputs[0].expect("O_X is always present");
    let grad_x = upstream_grads[0].expect("dO_X is always present");
    let output = |s: usize| upstream.outputs[s].unwrap_or(out_x);
    let grad = |s: usize| upstream_grads[s].unwrap_or(grad_x);
    if kernel_version::selected(super::KERNEL_FAMILY)? == KernelVersion::V2 {
        let [dq1, dk1, dq2, dk2, dq3, dk3, dv1, dv2, dv3] = &mut grads[..] else {
            unreachable!("nine gradient buffers")
        };
        let middle = kernel_args![
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
            dv3
        ];
        let mut args = arguments(p, inputs, lengths, counter, middle);
        let kernel = entry(p, BACKWARD_V2, BACKWARD_V2_STEPPED);
        device.launch(kernel, block_per_head(g), &mut args)?;
        return sum_shared_over_batch(device, p, grads);
    }
    // D_s,i = dO_s,i · O_s,i from the row pass, read by the column pass; both touch the rows
    // i < L_b only.
    let mut row_dot = device.uninitialized::<f32>(3 * g.batch * g.heads * g.seq_len)?;
    let [dq1, dk1, dq2, dk2, dq3, dk3, dv1, dv2, dv3] = &mut grads[..] else {
        unreachable!("nine gradient buffers")
    };
    let middle = kernel_args![
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
        dq3
    ];
    let mut args = arguments(p, inputs, lengths, counter, middle);
    let kernel = entry(p, BACKWARD_QUERIES, BACKWARD_QUERIES_STEPPED);
    device.launch(kernel, block_per_head(g), &mut args)?;
    let middle = kernel_args![
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
        dv3
    ];
    let mut args = arguments(p, inputs, lengths, counter, middle);
    let kernel = entry(p, BACKWARD_KEYS, BACKWARD_KEYS_STEPPED);
    device.launch(kernel, block_per_head(g), &mut args)?;
    sum_shared_over_batch(device, p, grads)
}

/// The gradients in kernel order: per-sequence buffers as they are, those of inputs shared by
/// the batch summed over it in a fixed order (`attention_sum_over_batch`); `None` where absent.
fn sum_shared_over_batch(
    device: &Device,
    p: &AttentionProblem,
    grads: Vec<Buffer<f32>>,
) -> Result<[Option<Buffer<f32>>; 9]> {
    let g = &p.geometry;
    let batch = g.batch as i32;
    let shared_len = g.seq_len * g.width();
    let mut result: [Option<Buffer<f32>>; 9] = Default::default();
    for (t, partial) in grads.into_iter().enumerate() {
        if !p.present(t) {
            continue;
        }
        result[t] = Some(if p.shared(t) {
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
