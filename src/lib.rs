//! asif-kernels: hand-written CUDA kernels for ASIF (placeholder while the foundation lands).
pub mod error;
pub use error::{Error, Result};
