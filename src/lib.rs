//! # asif-kernels
//!
//! Hand-written CUDA kernels for ASIF, the Aligned Side Information Fusion model for sequential
//! recommendation (Wang et al., WWW'24), with a CPU reference for every op, an emulated device
//! that runs the same kernels on the host for CI, and a small autograd tape.
//!
//! Layers (docs/architecture.md): [`kernels`] (what `build.rs` embedded), [`device`] (CPU
//! reference, CUDA, emulated), [`Tensor`], [`ops`] (one module per op, each with a plain kernel
//! API and a tape API), [`autograd`] (the tape and the finite-difference checker), [`data`] and
//! [`metrics`] (RecBole data and full-ranking evaluation), [`model`] (ASIF and its baselines on
//! the tape), [`train`] (the trainer) and [`checkpoint`] (safetensors files). [`Precision`] names
//! the arithmetic of the ops that will use tensor cores; [`kernel_version`] which version of a
//! rewritten kernel family an op launches.
//!
//! ## Linked from another trainer
//!
//! [`prelude`] brings the devices, tensors and the plain API of the three fused ASIF ops into
//! scope. A trainer that owns its cudarc context, stream and memory builds a device on its stream
//! ([`Device::from_cuda_stream`]) and lends its buffers to tensors without a copy
//! ([`Tensor::from_cuda_slice`], [`Tensor::into_cuda_slice`]); the cudarc this crate uses is
//! re-exported as [`cudarc`] so both sides name the same `CudaSlice`. Each op's CPU reference is
//! public as `ops::<op>::reference` (the older names, `forward_reference` and so on, stay). The
//! whole story, with `examples/external_trainer.rs`, is in `docs/interop.md`.
//!
//! ## Threads
//!
//! [`Device`], [`Tensor`] (and [`IndexTensor`]), [`device::Buffer`], [`device::Counters`],
//! [`Error`], [`autograd::Var`], [`autograd::Gradients`], [`ops::adam::Adam`] and every public
//! struct of the ops (inputs, configs, outputs, saved state, gradients: they hold tensors and
//! plain values) are `Send + Sync`: a device and its tensors may move to another thread and be
//! shared between threads (clones of a CUDA device queue on the one stream, in the order the
//! threads call). [`autograd::Tape`] is neither `Send` nor `Sync`: it records backward closures
//! that are not `Send` and keeps them in a `RefCell`, so one tape belongs to one thread (build a
//! tape per thread). `tests/interop.rs` asserts this at compile time for the types named here and
//! the saved-state, output and gradient structs of the fused ops.
pub mod accumulate;
pub mod autograd;
#[cfg(feature = "candle")]
pub mod candle;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod files;
pub(crate) mod gemm;
pub mod kernel_version;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod parallel;
pub mod precision;
pub mod rng;
pub mod tensor;
pub mod train;

/// The cudarc this crate is built on (0.19), so a caller names the same `CudaContext`,
/// `CudaStream` and `CudaSlice` as [`Device::from_cuda_stream`] and [`Tensor::from_cuda_slice`].
pub use cudarc;
pub use device::Device;
pub use error::{Error, Result};
pub use precision::Precision;
pub use tensor::{IndexTensor, Tensor};

/// What a trainer that links this crate needs in scope: `use asif_kernels::prelude::*;`.
///
/// The devices and tensors, the error type, the tape, the device counters, and the plain kernel
/// API of the three fused ASIF ops (attention, HIE, the RSA contrastive loss) with their
/// argument types, plus Adam. Every other op is at `ops::<op>`.
pub mod prelude {
    pub use crate::autograd::{Gradients, Tape, Var};
    pub use crate::device::{Buffer, CounterSnapshot, Counters};
    pub use crate::ops::adam::{Adam, AdamConfig};
    pub use crate::ops::attention::{
        attention_backward, attention_forward, AttentionConfig, AttentionGradients,
        AttentionInputs, AttentionOutputs, AttentionSaved, OutputGradients, ScorePair,
    };
    pub use crate::ops::contrastive::{
        contrastive_loss_forward_backward, ContrastiveOptions, ContrastiveOutput,
        ContrastiveReduction,
    };
    pub use crate::ops::hie::{
        hie_backward, hie_forward, HieBackward, HieGradients, HieOptions, HieSaved,
    };
    pub use crate::{Device, Error, IndexTensor, Precision, Result, Tensor};
}

/// The README's code examples, compiled and run as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
