//! A minimal trainer that links asif-kernels as a kernel crate (docs/interop.md).
//!
//! The trainer owns its memory and, on a GPU, its own cudarc context and stream. Each step it
//! lends its buffers to tensors without a copy, calls the three fused ASIF ops and their
//! backwards through the plain API, lets Adam update the parameters in place, and takes its
//! buffers back. Nothing crosses between host and device in that loop; the device counters
//! (`Device::counters`) prove it and the example fails if a byte does.
//!
//! The model is small on purpose: per sequence b, item rows X_b and attribute rows A_b (`[n, d]`,
//! learned directly), the fused dual-score attention with one score pair O = softmax(X Aᵀ/√d_h) X
//! (eqs. 1 to 5 with C_XA only), HIE h_A* = HIE(O, A; W_r) (eqs. 10 to 12, full-QR backward), and
//! the RSA contrastive loss L_co(O, h_A*; s) (eqs. 6 to 9) as the objective.
//!
//! Before training it checks the first step (outputs, loss and every gradient) against the CPU
//! reference of each op (the same calls on `Device::cpu()`).
//!
//! `cargo run --example external_trainer` runs on GPU 0 when there is a usable one and on the
//! host emulator (the real `.cu` kernels compiled for the host) otherwise. `tests/interop.rs` runs
//! the same `run` on the emulator in CI and on the GPU in the GPU tier.
use std::sync::Arc;

use asif_kernels::cudarc::driver::{CudaContext, CudaStream};
use asif_kernels::device::EmulatorLaunchFn;
use asif_kernels::prelude::*;

/// Where the trainer keeps its memory: its own CUDA stream (buffers are `CudaSlice`s it allocated
/// there), or the host emulator (buffers are host vectors, the emulator's device memory).
#[derive(Clone)]
pub enum TrainerMemory {
    Cuda(Arc<CudaStream>),
    Emulated(EmulatorLaunchFn),
}

impl TrainerMemory {
    /// The device asif-kernels works on: the trainer's stream, or the emulator.
    pub fn device(&self) -> Result<Device> {
        match self {
            TrainerMemory::Cuda(stream) => Device::from_cuda_stream(stream.clone()),
            TrainerMemory::Emulated(launch) => Ok(Device::emulated(*launch)),
        }
    }

    /// The trainer's own allocation and initial copy (setup, before the loop), through its own
    /// stream: asif-kernels sees none of it.
    fn buffer<T: asif_kernels::device::Scalar>(&self, host: &[T]) -> Result<Buffer<T>> {
        match self {
            TrainerMemory::Cuda(stream) => Ok(Buffer::Cuda(stream.clone_htod(host)?)),
            TrainerMemory::Emulated(_) => Ok(Buffer::Host(host.to_vec())),
        }
    }
}

/// Sizes of the example model.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub batch: usize,
    pub seq_len: usize,
    pub dim: usize,
    pub heads: usize,
    pub rank: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            batch: 2,
            seq_len: 8,
            dim: 16,
            heads: 2,
            rank: 4,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub device: String,
    /// Largest |kernel − reference| / (1 + |reference|) over the first step's outputs, loss and
    /// gradients.
    pub max_reference_error: f32,
    pub first_loss: f32,
    pub last_loss: f32,
    /// What the device did during the training loop (after − before).
    pub loop_counts: CounterSnapshot,
}

/// The trainer's parameters, in its own memory: X `[B, n, d]`, A `[B, n, d]`, W_r `[n, r]`, s `[1]`.
struct Parameters {
    buffers: Vec<Buffer<f32>>,
    lengths: Buffer<i32>,
}

/// One step's forward outputs, loss and gradients (dX, dA, dW_r, ds).
pub struct Step {
    pub values: Vec<(&'static str, Tensor)>,
    pub gradients: Vec<Tensor>,
}

/// Forward and backward of the example model on `params` (on `device`).
pub fn step(sizes: Sizes, params: &[Tensor], lengths: &IndexTensor) -> Result<Step> {
    let [x, a, w_r, s] = params else {
        return Err(trainer_error("four parameters"));
    };
    let inputs = AttentionInputs {
        score_pairs: vec![ScorePair {
            query: x.clone(),
            key: a.clone(),
        }],
        id_values: x.clone(),
        fused_values: None,
        position_values: None,
    };
    let config = AttentionConfig {
        heads: sizes.heads,
        dropout: 0.0,
        seed: 0,
        precision: Precision::Fp32,
    };
    let (outputs, saved) = attention_forward(&inputs, lengths, &config)?;
    let o = outputs.id;
    let hie_options = HieOptions::default();
    let (h_star, hie_saved) = hie_forward(&o, a, w_r, lengths, hie_options)?;
    let loss = contrastive_loss_forward_backward(
        &o,
        &h_star,
        lengths,
        s,
        None,
        ContrastiveReduction::MeanPerSequence,
        1.0,
    )?;
    let hie_grads = hie_backward(
        &o,
        a,
        w_r,
        lengths,
        &hie_saved,
        &loss.da,
        hie_options,
        HieBackward::FullQr,
    )?;
    let (Some(dh_x), Some(dw_r)) = (hie_grads.dh_x, hie_grads.dw_r) else {
        return Err(trainer_error("full-QR HIE gradients"));
    };
    let mut d_o = loss.dx;
    asif_kernels::ops::add::add_assign(&mut d_o, &dh_x)?;
    let attention_grads = attention_backward(
        &inputs,
        lengths,
        &config,
        &saved,
        &OutputGradients {
            id: Some(&d_o),
            ..Default::default()
        },
    )?;
    let mut dx = attention_grads.id_values;
    asif_kernels::ops::add::add_assign(&mut dx, &attention_grads.score_pairs[0].query)?;
    let mut da = hie_grads.dh_a;
    asif_kernels::ops::add::add_assign(&mut da, &attention_grads.score_pairs[0].key)?;
    Ok(Step {
        values: vec![("O", o), ("h_A*", h_star), ("L_co", loss.loss)],
        gradients: vec![dx, da, dw_r, loss.ds],
    })
}

fn trainer_error(message: impl Into<String>) -> Error {
    Error::Argument {
        op: "external_trainer",
        message: message.into(),
    }
}

/// Deterministic initial values (a small LCG: the example needs no random-number crate).
pub fn initial_values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Largest |got − want| / (1 + |want|).
fn max_error(got: &[f32], want: &[f32]) -> Result<f32> {
    if got.len() != want.len() {
        return Err(trainer_error(format!(
            "{} values against {}",
            got.len(),
            want.len()
        )));
    }
    Ok(got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            let e = (g - w).abs() / (1.0 + w.abs());
            if e.is_nan() {
                f32::INFINITY
            } else {
                e
            }
        })
        .fold(0.0, f32::max))
}

/// Tensors over the trainer's buffers (no copy), in the order X, A, W_r, s.
fn lend(device: &Device, sizes: Sizes, buffers: Vec<Buffer<f32>>) -> Result<Vec<Tensor>> {
    let Sizes {
        batch: b,
        seq_len: n,
        dim: d,
        rank: r,
        ..
    } = sizes;
    let shapes: [&[usize]; 4] = [&[b, n, d], &[b, n, d], &[n, r], &[1]];
    buffers
        .into_iter()
        .zip(shapes)
        .map(|(buffer, shape)| Tensor::from_device_buffer(device, shape, buffer))
        .collect()
}

/// Trains `steps` steps of the example model in `memory` and checks the first against the CPU
/// reference.
pub fn run(memory: &TrainerMemory, sizes: Sizes, steps: usize) -> Result<Report> {
    let device = memory.device()?;
    let Sizes {
        batch: b,
        seq_len: n,
        dim: d,
        rank: r,
        ..
    } = sizes;
    let host_params = [
        initial_values(b * n * d, 1, 1.0),
        initial_values(b * n * d, 2, 1.0),
        initial_values(n * r, 3, 0.5),
        vec![asif_kernels::ops::contrastive::initial_logit_scale()],
    ];
    // One full and one padded sequence.
    let host_lengths: Vec<i32> = (0..b).map(|i| (n - (i % 2) * n / 3) as i32).collect();
    let mut params = Parameters {
        buffers: host_params
            .iter()
            .map(|h| memory.buffer(h))
            .collect::<Result<_>>()?,
        lengths: memory.buffer(&host_lengths)?,
    };

    // The first step against the CPU reference (this part reads back to the host on purpose).
    let cpu = Device::cpu();
    let cpu_params: Vec<Tensor> = lend(
        &cpu,
        sizes,
        host_params
            .iter()
            .map(|h| Buffer::Host(h.clone()))
            .collect(),
    )?;
    let cpu_lengths = Tensor::from_vec(&cpu, &[b], host_lengths.clone())?;
    let reference = step(sizes, &cpu_params, &cpu_lengths)?;
    let tensors = lend(&device, sizes, std::mem::take(&mut params.buffers))?;
    let lengths = IndexTensor::from_device_buffer(&device, &[b], params.lengths)?;
    let first = step(sizes, &tensors, &lengths)?;
    let mut max_reference_error = 0.0f32;
    for ((_, got), (_, want)) in first.values.iter().zip(&reference.values) {
        max_reference_error = max_reference_error.max(max_error(&got.to_vec()?, &want.to_vec()?)?);
    }
    for (got, want) in first.gradients.iter().zip(&reference.gradients) {
        max_reference_error = max_reference_error.max(max_error(&got.to_vec()?, &want.to_vec()?)?);
    }
    let first_loss = first.values[2].1.to_vec()?[0];
    drop(first);

    // The training loop: the trainer's buffers go in and come back; no host round trip.
    let mut adam = Adam::new(
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
        &tensors,
    )?;
    params.buffers = tensors
        .into_iter()
        .map(Tensor::into_buffer)
        .collect::<Result<_>>()?;
    let mut last_loss = None;
    let before = device.counters().snapshot();
    for _ in 0..steps {
        let mut tensors = lend(&device, sizes, std::mem::take(&mut params.buffers))?;
        let Step { values, gradients } = step(sizes, &tensors, &lengths)?;
        last_loss = values.into_iter().find(|(name, _)| *name == "L_co");
        adam.step(&mut tensors, &gradients)?;
        drop(gradients);
        params.buffers = tensors
            .into_iter()
            .map(Tensor::into_buffer)
            .collect::<Result<_>>()?;
    }
    let loop_counts = device.counters().snapshot().since(&before);
    device.synchronize()?;
    if loop_counts.bytes_host_to_device != 0 || loop_counts.bytes_device_to_host != 0 {
        return Err(trainer_error(format!(
            "the training loop crossed the host: {loop_counts:?}"
        )));
    }
    let last_loss = match last_loss {
        Some((_, loss)) => loss.to_vec()?[0],
        None => first_loss,
    };
    Ok(Report {
        device: device.name(),
        max_reference_error,
        first_loss,
        last_loss,
        loop_counts,
    })
}

/// The trainer's own CUDA context and a stream of its own (not the default stream), when GPU 0 is
/// usable.
pub fn own_cuda_stream() -> Option<Arc<CudaStream>> {
    // Device::cuda checks for the driver library first, so a machine without CUDA gets `None`,
    // never a panic from cudarc's loader.
    Device::cuda(0).ok()?;
    CudaContext::new(0).ok()?.new_stream().ok()
}

#[allow(dead_code)] // `tests/interop.rs` includes this file for `run`; `main` is the example's.
fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let memory = match own_cuda_stream() {
        Some(stream) => TrainerMemory::Cuda(stream),
        None => TrainerMemory::Emulated(asif_emulator::launch),
    };
    let report = run(&memory, Sizes::default(), 20)?;
    println!("device: {}", report.device);
    println!(
        "first step against the CPU reference: max relative error {:.2e}",
        report.max_reference_error
    );
    println!(
        "L_co: {:.5} -> {:.5} after 20 steps",
        report.first_loss, report.last_loss
    );
    let c = report.loop_counts;
    println!(
        "training loop: {} launches, {} cuBLAS calls, {} B host->device, {} B device->host, {} B device->device",
        c.launches, c.blas_calls, c.bytes_host_to_device, c.bytes_device_to_host, c.bytes_device_to_device
    );
    if report.max_reference_error > 1e-3 {
        return Err(format!(
            "the kernels disagree with the CPU reference by {:.2e}",
            report.max_reference_error
        )
        .into());
    }
    Ok(())
}
