//! Fused dual-score attention of ASIF (spec §3.2 steps 1 to 4, eqs. 1 to 5) and of the models
//! that share its code path (spec §4). Kernel: `kernels/attention.cu`; description:
//! `docs/attention.md`.
//!
//! Per sequence b and head, with 1/√d_h scaling and the causal + padding mask from L_b (key j is
//! valid for query i iff j ≤ i and j < L_b):
//! - Π_X = softmax(Σ_k Q_k K_kᵀ/√d_h) over 1, 2 or 3 score pairs (SASRec: 1; ASIF: C_XA and C_P;
//!   w/o FA: C_A, C_P and C_X), O_X = Π_X V1 (`id` output);
//! - optionally Π_A = softmax(Q1 K1ᵀ/√d_h), O_A = Π_A V2 (`fused` output, when `fused_values`);
//! - optionally Π_P = softmax(Q2 K2ᵀ/√d_h), O_P = Π_P V3 (`position` output, when
//!   `position_values`; needs the second pair).
//!
//! Attention dropout (one mask for all three softmaxes) comes from the counter-based hash of
//! (seed, sequence, head, row, column), so the backward regenerates it. Padded query rows are
//! zeros and get no gradient. Inputs are `[B, n, d]` (the linear layer's `[B·n, d]` rows, heads
//! side by side), or `[n, d]` given once for the batch (batch stride 0: position inputs); a
//! shared input's gradient is summed over the batch. Limits: n ≤ 64, d_h ≤ 64.
//!
//! Plain kernel API: [`attention_forward`] returns the outputs and what the backward needs;
//! [`attention_backward`] returns the gradients. Tape API: [`attention`].
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::{
    backward as backward_reference, forward as forward_reference, Forward as ReferenceForward,
    Gradients as ReferenceGradients, Matrix as ReferenceMatrix, Problem as ReferenceProblem,
};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device, StepCounter};
use crate::ops::dropout::MaskSeed;
use crate::ops::{check_kernel_len, record, run, DeviceOp};
use crate::rng;
use crate::{Error, IndexTensor, Precision, Result, Tensor};

const OP: &str = "attention";

/// The kernel family [`crate::kernel_version`] selects for this op: v1 (fp32 CUDA cores, the
/// default) or v2 (tensor cores: `attention_forward_v2` and the one-pass `attention_backward_v2`);
/// `ASIF_KERNEL_ATTENTION=v1|v2`, or `kernel_version::with_version(KERNEL_FAMILY, ..)`.
pub const KERNEL_FAMILY: &str = "attention";

/// Largest sequence length n the kernel takes (a row's keys are at most two chunks of 32).
pub const MAX_SEQ_LEN: usize = 64;
/// Largest head width d_h the kernel takes (a lane holds two channels of a row).
pub const MAX_HEAD_DIM: usize = 64;

/// One score pair: queries and keys, each `[B, n, d]` or `[n, d]` (shared by the batch).
#[derive(Debug, Clone)]
pub struct ScorePair {
    pub query: Tensor,
    pub key: Tensor,
}

/// The op's inputs. `score_pairs[0]` is (Q1, K1): C_XA in ASIF (C_A in w/o FA, the only pair in
/// SASRec); `score_pairs[1]` is (Q2, K2): the position scores C_P; `score_pairs[2]` is w/o FA's
/// ID pair C_X. Values: V1 (`id_values`, required), V2 (`fused_values`: gives O_A) and V3
/// (`position_values`: gives O_P, needs `score_pairs[1]`).
#[derive(Debug, Clone)]
pub struct AttentionInputs {
    pub score_pairs: Vec<ScorePair>,
    pub id_values: Tensor,
    pub fused_values: Option<Tensor>,
    pub position_values: Option<Tensor>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionConfig {
    pub heads: usize,
    /// Attention-probability dropout p in [0, 1); 0 turns it off (evaluation).
    pub dropout: f32,
    /// Seed of the dropout hash; use a fresh one per step and layer.
    pub seed: u64,
    /// Arithmetic of the score and value products (`crate::precision`). Fp32 on every device
    /// (kernel v2 by 3xTF32 on tensor cores); [`Precision::Tf32`] and [`Precision::Bf16`] only
    /// with kernel v2 on a kernel device (its forward; the backward computes in fp32), else
    /// [`Error::PrecisionNotImplemented`].
    pub precision: Precision,
}

/// O_X (`id`), O_A (`fused`), O_P (`position`), each `[B, n, d]`.
#[derive(Debug, Clone)]
pub struct AttentionOutputs {
    pub id: Tensor,
    pub fused: Option<Tensor>,
    pub position: Option<Tensor>,
}

/// What the backward needs from the forward: the outputs (for D_i = dO_i · O_i) and the
/// log-sum-exp of every softmax row, `[3, B, h, n]` (softmax X, A, P; zero for padded rows and
/// absent softmaxes). No n×n matrix is kept.
#[derive(Debug, Clone)]
pub struct AttentionSaved {
    pub outputs: AttentionOutputs,
    pub log_sum_exp: Tensor,
}

/// Upstream gradients of the outputs; `None` means zero.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputGradients<'a> {
    pub id: Option<&'a Tensor>,
    pub fused: Option<&'a Tensor>,
    pub position: Option<&'a Tensor>,
}

/// Gradients of the query and key of one pair, each shaped like its input.
#[derive(Debug, Clone)]
pub struct PairGradients {
    pub query: Tensor,
    pub key: Tensor,
}

/// Gradients of every input, each shaped like its input (`[n, d]` summed over the batch for a
/// shared input).
#[derive(Debug, Clone)]
pub struct AttentionGradients {
    pub score_pairs: Vec<PairGradients>,
    pub id_values: Tensor,
    pub fused_values: Option<Tensor>,
    pub position_values: Option<Tensor>,
}

/// Sizes: `batch` sequences of `seq_len` slots, `heads` heads of `head_dim` channels
/// (d = heads · head_dim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub seq_len: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Geometry {
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Elements of one `[B, n, d]` input or output: B·n·d.
    pub fn elements(&self) -> usize {
        self.batch * self.seq_len * self.width()
    }
    /// The dropout counter of entry (query `i`, key `j`) of sequence `b`, head `head`.
    pub fn dropout_counter(&self, b: usize, head: usize, i: usize, j: usize) -> u64 {
        (((b * self.heads + head) * self.seq_len + i) * self.seq_len + j) as u64
    }
}

/// Bits of the outputs mask (the kernel's `outputs_mask`): O_X is bit 0, always set.
const OUT_FUSED: i32 = 2;
const OUT_POSITION: i32 = 4;

/// The op's one problem descriptor, built by [`check`] and read by the reference (through
/// [`reference_problem`]) and by the launches (`cuda.rs`). Inputs are numbered in kernel order
/// (Q1, K1, Q2, K2, Q3, K3, V1, V2, V3); bit t of a mask is input t.
#[derive(Debug, Clone, Copy)]
struct AttentionProblem {
    geometry: Geometry,
    /// Inputs given.
    present_mask: i32,
    /// Inputs shared by the batch (`[n, d]`, batch stride 0).
    shared_mask: i32,
    /// Outputs computed: O_X (1), O_A ([`OUT_FUSED`]), O_P ([`OUT_POSITION`]).
    outputs_mask: i32,
    /// The backward's upstream gradients given, same bits as `outputs_mask` (0 in the forward).
    grads_mask: i32,
    dropout: f32,
    /// The seed by value (unused when `step` is set).
    seed: u64,
    /// The seed from a device step counter: the site in the model's dropout stream (the counter
    /// itself travels with the op value, [`Forward`] and [`Backward`]).
    step: Option<StepSite>,
    /// How kernel v2's forward forms its products: 0 by 3xTF32 (`Precision::Fp32`), 1 in plain
    /// TF32 (`Precision::Tf32`), 2 in bf16 (`Precision::Bf16`); the kernel's `ATTENTION_V2_*`.
    products: i32,
}

/// Where a step-counter seed sits: `rng::step_seed(stream, counter, site)`.
#[derive(Debug, Clone, Copy)]
struct StepSite {
    stream: u64,
    site: u64,
}

impl AttentionProblem {
    fn present(&self, t: usize) -> bool {
        self.present_mask & (1 << t) != 0
    }
    fn shared(&self, t: usize) -> bool {
        self.shared_mask & (1 << t) != 0
    }
    /// Score pairs given (a pair's query is present iff the pair is).
    fn pairs(&self) -> usize {
        (0..3).filter(|k| self.present(2 * k)).count()
    }
    /// `[B, n, d]`: every output and every output gradient.
    fn output_shape(&self) -> Vec<usize> {
        let g = &self.geometry;
        vec![g.batch, g.seq_len, g.width()]
    }
    /// The shape of input `t` and of its gradient.
    fn input_shape(&self, t: usize) -> Vec<usize> {
        let g = &self.geometry;
        if self.shared(t) {
            vec![g.seq_len, g.width()]
        } else {
            self.output_shape()
        }
    }
    /// `[3, B, h, n]`: the saved log-sum-exp.
    fn stats_shape(&self) -> Vec<usize> {
        let g = &self.geometry;
        vec![3, g.batch, g.heads, g.seq_len]
    }
    /// The present inputs, in kernel order, spread back over the nine slots; the rest of `values`.
    fn unpack<'v, T: Copy>(&self, values: &'v [T]) -> Result<([Option<T>; 9], &'v [T])> {
        let mut slots = [None; 9];
        let mut next = 0;
        for (t, slot) in slots.iter_mut().enumerate() {
            if self.present(t) {
                *slot = Some(*values.get(next).ok_or_else(|| {
                    Error::argument(OP, format!("input {} is missing", INPUT_NAMES[t]))
                })?);
                next += 1;
            }
        }
        Ok((slots, &values[next..]))
    }
    /// The backward's inputs spread back: Q1..V3, the outputs, their upstream gradients, the
    /// log-sum-exp.
    #[allow(clippy::type_complexity)]
    fn unpack_backward<T: Copy>(
        &self,
        values: &[T],
    ) -> Result<([Option<T>; 9], [Option<T>; 3], [Option<T>; 3], T)> {
        let (inputs, rest) = self.unpack(values)?;
        let (outputs, rest) = AttentionProblem::per_output(self.outputs_mask, rest);
        let (grads, rest) = AttentionProblem::per_output(self.grads_mask, rest);
        let log_sum_exp = *rest
            .first()
            .ok_or_else(|| Error::argument(OP, "no log-sum-exp"))?;
        Ok((inputs, outputs, grads, log_sum_exp))
    }
    /// One entry of `rest` per bit set in `mask` (over the three outputs), in order.
    fn per_output<T: Copy>(mask: i32, rest: &[T]) -> ([Option<T>; 3], &[T]) {
        let mut slots = [None; 3];
        let mut next = 0;
        for (s, slot) in slots.iter_mut().enumerate() {
            if mask & (1 << s) != 0 {
                *slot = rest.get(next).copied();
                next += 1;
            }
        }
        (slots, &rest[next.min(rest.len())..])
    }
}

const INPUT_NAMES: [&str; 9] = ["Q1", "K1", "Q2", "K2", "Q3", "K3", "V1", "V2", "V3"];

/// The checks: the problem descriptor and, per input in kernel order, the tensor.
fn check<'a>(
    inputs: &'a AttentionInputs,
    lengths: &IndexTensor,
    config: &AttentionConfig,
) -> Result<(AttentionProblem, [Option<&'a Tensor>; 9])> {
    // Fp32 everywhere; Tf32 and Bf16 only on kernel v2's forward on a kernel device (the
    // backward computes in fp32, by 3xTF32, whatever the config says).
    if config.precision != Precision::Fp32 {
        let v2_kernel = matches!(
            inputs.id_values.device(),
            Device::Cuda(_) | Device::Emulated(_)
        ) && crate::kernel_version::selected(KERNEL_FAMILY)?
            == crate::kernel_version::KernelVersion::V2;
        if !v2_kernel {
            return Err(Error::PrecisionNotImplemented {
                op: OP,
                precision: config.precision,
            });
        }
    }
    let pairs = inputs.score_pairs.len();
    if !(1..=3).contains(&pairs) {
        return Err(Error::argument(
            OP,
            format!("1 to 3 score pairs (SASRec 1, ASIF 2, w/o FA 3), got {pairs}"),
        ));
    }
    if inputs.position_values.is_some() && pairs < 2 {
        return Err(Error::argument(
            OP,
            "the position output Π_P V3 needs the position score pair (score_pairs[1])",
        ));
    }
    if !(config.dropout >= 0.0 && config.dropout < 1.0) {
        return Err(Error::argument(
            OP,
            format!("dropout must be in [0, 1), got {}", config.dropout),
        ));
    }
    if lengths.shape().len() != 1 {
        return Err(Error::shape(
            OP,
            format!("lengths must be [B], got {:?}", lengths.shape()),
        ));
    }
    let batch = lengths.len();
    let id = &inputs.id_values;
    let (seq_len, width) = match id.shape() {
        &[b, n, d] if b == batch => (n, d),
        other => {
            return Err(Error::shape(
                OP,
                format!("V1 must be [B = {batch}, n, d], got {other:?}"),
            ))
        }
    };
    if config.heads == 0 || width % config.heads != 0 {
        return Err(Error::argument(
            OP,
            format!("d = {width} is not a multiple of heads = {}", config.heads),
        ));
    }
    let head_dim = width / config.heads;
    if seq_len == 0 || seq_len > MAX_SEQ_LEN {
        return Err(Error::shape(
            OP,
            format!("sequence length n = {seq_len} outside 1..={MAX_SEQ_LEN} (the kernel's limit)"),
        ));
    }
    if head_dim == 0 || head_dim > MAX_HEAD_DIM {
        return Err(Error::shape(
            OP,
            format!("head width d_h = {head_dim} outside 1..={MAX_HEAD_DIM} (the kernel's limit)"),
        ));
    }
    let geometry = Geometry {
        batch,
        seq_len,
        heads: config.heads,
        head_dim,
    };
    // The grid's B·h blocks fit whenever the elements do: h ≤ d (d_h ≥ 1) and n ≥ 1.
    check_kernel_len(OP, geometry.elements())?;
    let mut all: [Option<&Tensor>; 9] = [None; 9];
    for (k, pair) in inputs.score_pairs.iter().enumerate() {
        all[2 * k] = Some(&pair.query);
        all[2 * k + 1] = Some(&pair.key);
    }
    all[6] = Some(id);
    all[7] = inputs.fused_values.as_ref();
    all[8] = inputs.position_values.as_ref();
    let (mut present_mask, mut shared_mask) = (0, 0);
    for (t, tensor) in all.iter().enumerate() {
        let Some(tensor) = tensor else { continue };
        present_mask |= 1 << t;
        id.same_device(OP, tensor)?;
        match tensor.shape() {
            &[b, n, d] if b == batch && n == seq_len && d == width => {}
            &[n, d] if n == seq_len && d == width => shared_mask |= 1 << t,
            other => {
                return Err(Error::shape(
                    OP,
                    format!(
                        "{} must be [{batch}, {seq_len}, {width}] or [{seq_len}, {width}] (shared by the batch), got {other:?}",
                        INPUT_NAMES[t]
                    ),
                ))
            }
        }
    }
    if lengths.device() != id.device() {
        return Err(Error::DeviceMismatch {
            op: OP,
            expected: id.device().name(),
            found: lengths.device().name(),
        });
    }
    let mut outputs_mask = 1;
    if inputs.fused_values.is_some() {
        outputs_mask |= OUT_FUSED;
    }
    if inputs.position_values.is_some() {
        outputs_mask |= OUT_POSITION;
    }
    let problem = AttentionProblem {
        geometry,
        present_mask,
        shared_mask,
        outputs_mask,
        grads_mask: 0,
        dropout: config.dropout,
        seed: config.seed,
        step: None,
        products: match config.precision {
            Precision::Fp32 => 0,
            Precision::Tf32 => 1,
            Precision::Bf16 => 2,
        },
    };
    Ok((problem, all))
}

/// The reference's view of the problem: the descriptor with the host inputs (in kernel order)
/// and L_b.
fn reference_problem<'a>(
    p: &AttentionProblem,
    inputs: &[Option<&'a [f32]>; 9],
    lengths: &'a [i32],
) -> cpu::Problem<'a, f32> {
    let matrix = |t: usize| {
        inputs[t].map(|values| cpu::Matrix {
            values,
            shared: p.shared(t),
        })
    };
    let pairs = (0..3)
        .filter_map(|k| Some((matrix(2 * k)?, matrix(2 * k + 1)?)))
        .collect();
    cpu::Problem {
        geometry: p.geometry,
        lengths,
        pairs,
        values: [matrix(6), matrix(7), matrix(8)],
        dropout: p.dropout,
        seed: p.seed,
    }
}

/// The forward under the op contract. Inputs: the present ones of Q1..V3 in kernel order; L_b.
/// Outputs: O_X, O_A and O_P where computed, then the log-sum-exp.
struct Forward {
    counter: Option<StepCounter>,
}

/// The backward under the op contract. Inputs: the present ones of Q1..V3 in kernel order, the
/// computed outputs, the given upstream gradients (`grads_mask`), the log-sum-exp; L_b.
/// Outputs: the gradient of every present input, in kernel order.
struct Backward {
    counter: Option<StepCounter>,
}

/// The problem with its seed from `seed`: by value, or a step counter's site (the counter goes
/// to the op value).
fn seeded(
    mut problem: AttentionProblem,
    seed: &MaskSeed,
) -> (AttentionProblem, Option<StepCounter>) {
    match seed {
        MaskSeed::Value(value) => {
            problem.seed = *value;
            problem.step = None;
            (problem, None)
        }
        MaskSeed::Stepped(step) => {
            problem.step = Some(StepSite {
                stream: step.stream,
                site: step.site,
            });
            (problem, Some(step.counter.clone()))
        }
    }
}

/// The seed by value for the CPU reference: the step counter's seed read back.
fn reference_seed(p: &AttentionProblem, counter: &Option<StepCounter>) -> Result<u64> {
    match (p.step, counter) {
        (Some(site), Some(counter)) => Ok(rng::step_seed(site.stream, counter.get()?, site.site)),
        _ => Ok(p.seed),
    }
}

impl DeviceOp for Forward {
    type Problem = AttentionProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &AttentionProblem) -> Vec<Vec<usize>> {
        let outputs = (0..3).filter(|s| p.outputs_mask & (1 << s) != 0);
        let mut shapes: Vec<Vec<usize>> = outputs.map(|_| p.output_shape()).collect();
        shapes.push(p.stats_shape());
        shapes
    }
    fn reference(
        &self,
        p: &AttentionProblem,
        values: &[&[f32]],
        indices: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let (inputs, _) = p.unpack(values)?;
        let p = &AttentionProblem {
            seed: reference_seed(p, &self.counter)?,
            ..*p
        };
        let out = cpu::forward_threaded(&reference_problem(p, &inputs, indices[0]));
        let mut result: Vec<Vec<f32>> = out.outputs.into_iter().flatten().collect();
        result.push(out.log_sum_exp);
        Ok(result)
    }
    fn launch(
        &self,
        p: &AttentionProblem,
        device: &Device,
        values: &[&Buffer<f32>],
        indices: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let (inputs, _) = p.unpack(values)?;
        let counter = self.counter.as_ref().map(StepCounter::lock);
        let out = cuda::forward(device, p, &inputs, indices[0], counter.as_deref())?;
        let mut result: Vec<Buffer<f32>> = out.outputs.into_iter().flatten().collect();
        result.push(out.log_sum_exp);
        Ok(result)
    }
}

impl DeviceOp for Backward {
    type Problem = AttentionProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &AttentionProblem) -> Vec<Vec<usize>> {
        (0..9)
            .filter(|&t| p.present(t))
            .map(|t| p.input_shape(t))
            .collect()
    }
    fn reference(
        &self,
        p: &AttentionProblem,
        values: &[&[f32]],
        indices: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let (inputs, outputs, grads, log_sum_exp) = p.unpack_backward(values)?;
        let forward = cpu::Forward {
            outputs: outputs.map(|o| o.map(<[f32]>::to_vec)),
            log_sum_exp: log_sum_exp.to_vec(),
        };
        let p = &AttentionProblem {
            seed: reference_seed(p, &self.counter)?,
            ..*p
        };
        let problem = reference_problem(p, &inputs, indices[0]);
        let out = cpu::backward_threaded(&problem, &forward, grads);
        let mut result = Vec::new();
        for (dq, dk) in out.pairs {
            result.push(dq);
            result.push(dk);
        }
        result.extend(out.values.into_iter().flatten());
        Ok(result)
    }
    fn launch(
        &self,
        p: &AttentionProblem,
        device: &Device,
        values: &[&Buffer<f32>],
        indices: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let (inputs, outputs, grads, log_sum_exp) = p.unpack_backward(values)?;
        let upstream = cuda::Upstream {
            outputs,
            grads,
            log_sum_exp,
        };
        let counter = self.counter.as_ref().map(StepCounter::lock);
        let out = cuda::backward(
            device,
            p,
            &inputs,
            indices[0],
            &upstream,
            counter.as_deref(),
        )?;
        Ok(out.into_iter().flatten().collect())
    }
}

/// O_X, O_A, O_P (present where their values were given) and the saved statistics.
pub fn attention_forward(
    inputs: &AttentionInputs,
    lengths: &IndexTensor,
    config: &AttentionConfig,
) -> Result<(AttentionOutputs, AttentionSaved)> {
    attention_forward_seeded(inputs, lengths, config, &MaskSeed::Value(config.seed))
}

/// [`attention_forward`] with the dropout seed from `seed` (by value, or from a device step
/// counter: issue 20) in place of `config.seed`.
pub fn attention_forward_seeded(
    inputs: &AttentionInputs,
    lengths: &IndexTensor,
    config: &AttentionConfig,
    seed: &MaskSeed,
) -> Result<(AttentionOutputs, AttentionSaved)> {
    let (problem, all) = check(inputs, lengths, config)?;
    let (problem, counter) = seeded(problem, seed);
    let values: Vec<&Tensor> = all.into_iter().flatten().collect();
    let mut results = run(&Forward { counter }, &problem, &values, &[lengths])?.into_iter();
    let mut next = || {
        results
            .next()
            .ok_or_else(|| Error::argument(OP, "the forward made too few outputs"))
    };
    let id = next()?;
    let fused = (problem.outputs_mask & OUT_FUSED != 0)
        .then(&mut next)
        .transpose()?;
    let position = (problem.outputs_mask & OUT_POSITION != 0)
        .then(&mut next)
        .transpose()?;
    let log_sum_exp = next()?;
    let outputs = AttentionOutputs {
        id,
        fused,
        position,
    };
    let saved = AttentionSaved {
        outputs: outputs.clone(),
        log_sum_exp,
    };
    Ok((outputs, saved))
}

/// Gradients of every input given the upstream gradients of the outputs (`None`: zero).
pub fn attention_backward(
    inputs: &AttentionInputs,
    lengths: &IndexTensor,
    config: &AttentionConfig,
    saved: &AttentionSaved,
    output_grads: &OutputGradients<'_>,
) -> Result<AttentionGradients> {
    let seed = MaskSeed::Value(config.seed);
    attention_backward_seeded(inputs, lengths, config, &seed, saved, output_grads)
}

/// [`attention_backward`] with the dropout seed from `seed` in place of `config.seed`.
pub fn attention_backward_seeded(
    inputs: &AttentionInputs,
    lengths: &IndexTensor,
    config: &AttentionConfig,
    seed: &MaskSeed,
    saved: &AttentionSaved,
    output_grads: &OutputGradients<'_>,
) -> Result<AttentionGradients> {
    let (problem, all) = check(inputs, lengths, config)?;
    let (mut problem, counter) = seeded(problem, seed);
    let g = problem.geometry;
    let out_shape = problem.output_shape();
    let saved_outputs = [
        Some(&saved.outputs.id),
        saved.outputs.fused.as_ref(),
        saved.outputs.position.as_ref(),
    ];
    let grads = [output_grads.id, output_grads.fused, output_grads.position];
    for (s, name) in ["O_X", "O_A", "O_P"].iter().enumerate() {
        let present = problem.outputs_mask & (1 << s) != 0;
        if saved_outputs[s].is_some() != present {
            return Err(Error::argument(
                OP,
                format!("the saved state does not match the inputs ({name})"),
            ));
        }
        for tensor in [saved_outputs[s], grads[s]].into_iter().flatten() {
            inputs.id_values.same_device(OP, tensor)?;
            if tensor.shape() != out_shape {
                return Err(Error::shape(
                    OP,
                    format!(
                        "{name} and its gradient must be {out_shape:?}, got {:?}",
                        tensor.shape()
                    ),
                ));
            }
        }
        if grads[s].is_some() && !present {
            return Err(Error::argument(
                OP,
                format!("a gradient for the absent output {name}"),
            ));
        }
        if grads[s].is_some() {
            problem.grads_mask |= 1 << s;
        }
    }
    if saved.log_sum_exp.shape() != problem.stats_shape() {
        return Err(Error::shape(
            OP,
            format!(
                "saved log-sum-exp must be [3, {}, {}, {}]",
                g.batch, g.heads, g.seq_len
            ),
        ));
    }
    let mut values: Vec<&Tensor> = all.into_iter().flatten().collect();
    values.extend(saved_outputs.into_iter().flatten());
    values.extend(grads.into_iter().flatten());
    values.push(&saved.log_sum_exp);
    let results = run(&Backward { counter }, &problem, &values, &[lengths])?;
    let mut tensors: [Option<Tensor>; 9] = Default::default();
    let mut results = results.into_iter();
    for (t, slot) in tensors.iter_mut().enumerate() {
        if problem.present(t) {
            *slot = results.next();
        }
    }
    let missing = || Error::argument(OP, "the backward made too few gradients");
    let mut score_pairs = Vec::new();
    for k in 0..inputs.score_pairs.len() {
        score_pairs.push(PairGradients {
            query: tensors[2 * k].take().ok_or_else(missing)?,
            key: tensors[2 * k + 1].take().ok_or_else(missing)?,
        });
    }
    Ok(AttentionGradients {
        score_pairs,
        id_values: tensors[6].take().ok_or_else(missing)?,
        fused_values: tensors[7].take(),
        position_values: tensors[8].take(),
    })
}

/// Outputs of the tape face: O_X, and O_A / O_P where their values were given.
#[derive(Debug, Clone)]
pub struct AttentionVars {
    pub id: Var,
    pub fused: Option<Var>,
    pub position: Option<Var>,
}

/// Tape face: `score_pairs` are (query, key) variables as in [`AttentionInputs`]; a variable may
/// appear in several places (its gradients add up).
pub fn attention(
    tape: &Tape,
    score_pairs: &[(&Var, &Var)],
    id_values: &Var,
    fused_values: Option<&Var>,
    position_values: Option<&Var>,
    lengths: &IndexTensor,
    config: &AttentionConfig,
) -> Result<AttentionVars> {
    let seed = MaskSeed::Value(config.seed);
    attention_seeded(
        tape,
        score_pairs,
        id_values,
        fused_values,
        position_values,
        lengths,
        config,
        seed,
    )
}

/// [`attention`] with the dropout seed from `seed` (by value, or from a device step counter:
/// issue 20) in place of `config.seed`.
#[allow(clippy::too_many_arguments)]
pub fn attention_seeded(
    tape: &Tape,
    score_pairs: &[(&Var, &Var)],
    id_values: &Var,
    fused_values: Option<&Var>,
    position_values: Option<&Var>,
    lengths: &IndexTensor,
    config: &AttentionConfig,
    seed: MaskSeed,
) -> Result<AttentionVars> {
    let inputs = AttentionInputs {
        score_pairs: score_pairs
            .iter()
            .map(|(q, k)| ScorePair {
                query: q.value().clone(),
                key: k.value().clone(),
            })
            .collect(),
        id_values: id_values.value().clone(),
        fused_values: fused_values.map(|v| v.value().clone()),
        position_values: position_values.map(|v| v.value().clone()),
    };
    let (outputs, saved) = attention_forward_seeded(&inputs, lengths, config, &seed)?;
    let mut input_vars: Vec<&Var> = score_pairs.iter().flat_map(|&(q, k)| [q, k]).collect();
    input_vars.push(id_values);
    input_vars.extend(fused_values);
    input_vars.extend(position_values);
    let mut values = vec![outputs.id.clone()];
    values.extend(outputs.fused.clone());
    values.extend(outputs.position.clone());
    let (has_fused, has_position) = (outputs.fused.is_some(), outputs.position.is_some());
    let (lengths, config) = (lengths.clone(), *config);
    let vars = record(
        tape,
        &input_vars,
        values,
        move |grads: &[Option<Tensor>]| {
            let mut slots = grads.iter();
            let id = slots.next().and_then(Option::as_ref);
            let fused = if has_fused {
                slots.next().and_then(Option::as_ref)
            } else {
                None
            };
            let position = if has_position {
                slots.next().and_then(Option::as_ref)
            } else {
                None
            };
            let output_grads = OutputGradients {
                id,
                fused,
                position,
            };
            let g = attention_backward_seeded(
                &inputs,
                &lengths,
                &config,
                &seed,
                &saved,
                &output_grads,
            )?;
            let mut result = Vec::new();
            for pair in g.score_pairs {
                result.push(Some(pair.query));
                result.push(Some(pair.key));
            }
            result.push(Some(g.id_values));
            result.extend(g.fused_values.map(Some));
            result.extend(g.position_values.map(Some));
            Ok(result)
        },
    );
    let mut vars = vars.into_iter();
    let id = vars
        .next()
        .ok_or_else(|| Error::argument(OP, "the tape recorded no O_X"))?;
    Ok(AttentionVars {
        id,
        fused: if has_fused { vars.next() } else { None },
        position: if has_position { vars.next() } else { None },
    })
}
