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
pub mod accumulate;
pub mod autograd;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod files;
pub mod kernel_version;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod precision;
pub mod rng;
pub mod tensor;
pub mod train;

pub use device::Device;
pub use error::{Error, Result};
pub use precision::Precision;
pub use tensor::{IndexTensor, Tensor};

/// The README's code examples, compiled and run as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
