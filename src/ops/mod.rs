//! One folder per op: `mod.rs` (public functions, checks, backward rule, tape face), `cpu.rs`
//! (the reference), `cuda.rs` (the kernel launch, shared by the CUDA and emulated devices).
pub mod add;
pub mod attention;
pub mod gelu;
pub mod layer_norm;
