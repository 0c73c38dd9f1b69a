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
    Geometry, Gradients as ReferenceGradients, Matrix as ReferenceMatrix,
    Problem as ReferenceProblem,
};

use crate::autograd::{Tape, Var, VarId};
use crate::device::{Buffer, Device};
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

/// Checked sizes plus, per input in kernel order (Q1, K1, Q2, K2, Q3, K3, V1, V2, V3), the tensor
/// and whether it is shared by the batch.
struct Checked<'a> {
    geometry: Geometry,
    inputs: [Option<&'a Tensor>; 9],
    shared_mask: i32,
    outputs_mask: i32,
}

const INPUT_NAMES: [&str; 9] = ["Q1", "K1", "Q2", "K2", "Q3", "K3", "V1", "V2", "V3"];

fn check<'a>(
    inputs: &'a AttentionInputs,
    lengths: &IndexTensor,
    config: &AttentionConfig,
) -> Result<Checked<'a>> {
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
    if batch * seq_len * width > i32::MAX as usize || batch * config.heads > i32::MAX as usize {
        return Err(Error::shape(
            OP,
            format!("{batch}×{seq_len}×{width} exceeds the kernel's 32-bit indexing"),
        ));
    }
    let mut all: [Option<&Tensor>; 9] = [None; 9];
    for (k, pair) in inputs.score_pairs.iter().enumerate() {
        all[2 * k] = Some(&pair.query);
        all[2 * k + 1] = Some(&pair.key);
    }
    all[6] = Some(id);
    all[7] = inputs.fused_values.as_ref();
    all[8] = inputs.position_values.as_ref();
    let mut shared_mask = 0;
    for (t, tensor) in all.iter().enumerate() {
        let Some(tensor) = tensor else { continue };
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
        outputs_mask |= cuda::OUT_FUSED;
    }
    if inputs.position_values.is_some() {
        outputs_mask |= cuda::OUT_POSITION;
    }
    Ok(Checked {
        geometry: Geometry {
            batch,
            seq_len,
            heads: config.heads,
            head_dim,
        },
        inputs: all,
        shared_mask,
        outputs_mask,
    })
}

fn reference_problem<'a>(
    checked: &Checked<'a>,
    lengths: &'a IndexTensor,
    config: &AttentionConfig,
) -> cpu::Problem<'a, f32> {
    let matrix = |t: usize| {
        checked.inputs[t].map(|tensor| cpu::Matrix {
            values: tensor.host(),
            shared: checked.shared_mask & (1 << t) != 0,
        })
    };
    let pairs = (0..3)
        .filter_map(|k| Some((matrix(2 * k)?, matrix(2 * k + 1)?)))
        .collect();
    cpu::Problem {
        geometry: checked.geometry,
        lengths: lengths.host(),
        pairs,
        values: [matrix(6), matrix(7), matrix(8)],
        dropout: config.dropout,
        seed: config.seed,
    }
}

fn kernel_inputs<'a>(
    checked: &Checked<'a>,
    lengths: &'a IndexTensor,
    config: &AttentionConfig,
) -> cuda::Inputs<'a> {
    cuda::Inputs {
        buffers: checked.inputs.map(|t| t.map(Tensor::buffer)),
        lengths: lengths.buffer(),
        pairs: checked.inputs.iter().step_by(2).take(3).flatten().count(),
        outputs_mask: checked.outputs_mask,
        shared_mask: checked.shared_mask,
        dropout: config.dropout,
        seed: config.seed,
        products: match config.precision {
            Precision::Fp32 => 0,
            Precision::Tf32 => 1,
            Precision::Bf16 => 2,
        },
    }
}

/// O_X, O_A, O_P (present where their values were given) and the saved statistics.
pub fn attention_forward(
    inputs: &AttentionInputs,
    lengths: &IndexTensor,
    config: &AttentionConfig,
) -> Result<(AttentionOutputs, AttentionSaved)> {
    let checked = check(inputs, lengths, config)?;
    let g = checked.geometry;
    let device = inputs.id_values.device();
    let out_shape = [g.batch, g.seq_len, g.width()];
    let stats_shape = [3, g.batch, g.heads, g.seq_len];
    let (outputs, lse) = match device {
        Device::Cpu => {
            let out = cpu::forward_threaded(&reference_problem(&checked, lengths, config));
            (
                out.outputs.map(|o| o.map(Buffer::Host)),
                Buffer::Host(out.log_sum_exp),
            )
        }
        Device::Cuda(_) | Device::Emulated(_) => {
            let out = cuda::forward(device, &g, &kernel_inputs(&checked, lengths, config))?;
            (out.outputs, out.log_sum_exp)
        }
    };
    let [id, fused, position] =
        outputs.map(|o| o.map(|buffer| Tensor::from_buffer(device, &out_shape, buffer)));
    let outputs = AttentionOutputs {
        id: id.expect("O_X is always computed"),
        fused,
        position,
    };
    let saved = AttentionSaved {
        outputs: outputs.clone(),
        log_sum_exp: Tensor::from_buffer(device, &stats_shape, lse),
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
    let checked = check(inputs, lengths, config)?;
    let g = checked.geometry;
    let device = inputs.id_values.device();
    let out_shape = [g.batch, g.seq_len, g.width()];
    let saved_outputs = [
        Some(&saved.outputs.id),
        saved.outputs.fused.as_ref(),
        saved.outputs.position.as_ref(),
    ];
    let grads = [output_grads.id, output_grads.fused, output_grads.position];
    for (s, name) in ["O_X", "O_A", "O_P"].iter().enumerate() {
        let present = checked.outputs_mask & (1 << s) != 0;
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
    }
    if saved.log_sum_exp.shape() != [3, g.batch, g.heads, g.seq_len] {
        return Err(Error::shape(
            OP,
            format!(
                "saved log-sum-exp must be [3, {}, {}, {}]",
                g.batch, g.heads, g.seq_len
            ),
        ));
    }
    let buffers: [Option<Buffer<f32>>; 9] = match device {
        Device::Cpu => {
            let problem = reference_problem(&checked, lengths, config);
            let forward = cpu::Forward {
                outputs: saved_outputs.map(|o| o.map(|t| t.host().to_vec())),
                log_sum_exp: saved.log_sum_exp.host().to_vec(),
            };
            let out =
                cpu::backward_threaded(&problem, &forward, grads.map(|t| t.map(Tensor::host)));
            let mut buffers: [Option<Buffer<f32>>; 9] = Default::default();
            for (k, (dq, dk)) in out.pairs.into_iter().enumerate() {
                buffers[2 * k] = Some(Buffer::Host(dq));
                buffers[2 * k + 1] = Some(Buffer::Host(dk));
            }
            for (s, dv) in out.values.into_iter().enumerate() {
                buffers[6 + s] = dv.map(Buffer::Host);
            }
            buffers
        }
        Device::Cuda(_) | Device::Emulated(_) => {
            // An output without an upstream gradient contributes zero.
            let zeros: Vec<Option<Tensor>> = (0..3)
                .map(|s| {
                    let wanted = checked.outputs_mask & (1 << s) != 0 && grads[s].is_none();
                    wanted
                        .then(|| Tensor::zeros(device, &out_shape))
                        .transpose()
                })
                .collect::<Result<_>>()?;
            let grad_buffers: [Option<&Buffer<f32>>; 3] =
                std::array::from_fn(|s| grads[s].or(zeros[s].as_ref()).map(Tensor::buffer));
            let upstream = cuda::Upstream {
                outputs: saved_outputs.map(|o| o.map(Tensor::buffer)),
                grads: grad_buffers,
                log_sum_exp: saved.log_sum_exp.buffer(),
            };
            cuda::backward(
                device,
                &g,
                &kernel_inputs(&checked, lengths, config),
                &upstream,
            )?
        }
    };
    let mut tensors: Vec<Option<Tensor>> = buffers
        .into_iter()
        .enumerate()
        .map(|(t, buffer)| {
            buffer.map(|b| {
                let shape = checked.inputs[t].expect("present input").shape();
                Tensor::from_buffer(device, shape, b)
            })
        })
        .collect();
    let mut take = |t: usize| tensors[t].take();
    let mut score_pairs = Vec::new();
    for k in 0..inputs.score_pairs.len() {
        score_pairs.push(PairGradients {
            query: take(2 * k).expect("query gradient"),
            key: take(2 * k + 1).expect("key gradient"),
        });
    }
    Ok(AttentionGradients {
        score_pairs,
        id_values: take(6).expect("V1 gradient"),
        fused_values: take(7),
        position_values: take(8),
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
    let (outputs, saved) = attention_forward(&inputs, lengths, config)?;
    let pair_ids: Vec<(VarId, VarId)> = score_pairs.iter().map(|(q, k)| (q.id(), k.id())).collect();
    let value_ids = [
        Some(id_values.id()),
        fused_values.map(Var::id),
        position_values.map(Var::id),
    ];
    let mut values = vec![outputs.id.clone()];
    values.extend(outputs.fused.clone());
    values.extend(outputs.position.clone());
    let (has_fused, has_position) = (outputs.fused.is_some(), outputs.position.is_some());
    let (lengths, config) = (lengths.clone(), *config);
    let vars = tape.record_many(values, move |grads: &[Option<Tensor>]| {
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
        let g = attention_backward(&inputs, &lengths, &config, &saved, &output_grads)?;
        let mut result = Vec::new();
        for ((q, k), pair) in pair_ids.iter().zip(g.score_pairs) {
            result.push((*q, pair.query));
            result.push((*k, pair.key));
        }
        let value_grads = [Some(g.id_values), g.fused_values, g.position_values];
        for (id, grad) in value_ids.iter().zip(value_grads) {
            if let (Some(id), Some(grad)) = (id, grad) {
                result.push((*id, grad));
            }
        }
        Ok(result)
    });
    let mut vars = vars.into_iter();
    let id = vars.next().expect("O_X var");
    Ok(AttentionVars {
        id,
        fused: if has_fused { vars.next() } else { None },
        position: if has_position { vars.next() } else { None },
    })
}
