//! The arithmetic precision of an op's matrix products, as a named choice (issue 15;
//! `docs/tensor-cores.md`).
//!
//! Every op that will use tensor cores (attention, HIE, the contrastive loss) takes a
//! [`Precision`]. [`Precision::Fp32`] is the default and keeps today's parity with the f64
//! reference; [`Precision::Tf32`] and [`Precision::Bf16`] are opt-in and trade accuracy for
//! tensor-core speed, each with its own tolerance tier ([`Precision::relative_tolerance`]). The v1
//! kernels compute in fp32 on CUDA cores only, so they reject the other two with
//! [`Error::PrecisionNotImplemented`](crate::Error::PrecisionNotImplemented).
use crate::{Error, Result};

/// How an op's matrix products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// fp32 results: CUDA-core fp32, or 3xTF32 on tensor cores (hi·hi + hi·lo + lo·hi, the
    /// dropped lo·lo term is about 2^-22 relative). Parity with the f64 reference within 1e-5.
    #[default]
    Fp32,
    /// One TF32 tensor-core product: inputs rounded to 10 mantissa bits (unit roundoff 2^-11,
    /// about 4.9e-4), fp32 accumulation. Opt-in.
    Tf32,
    /// bf16 inputs (8 mantissa bits, unit roundoff 2^-8, about 3.9e-3), fp32 accumulation.
    /// Opt-in.
    Bf16,
}

impl Precision {
    /// Every precision, default first.
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Tf32, Precision::Bf16];

    /// The tolerance tier: the largest relative error ‖out − ref‖/‖ref‖ against the f64
    /// reference that an op's parity test accepts in this precision. Fp32 is the crate's tier
    /// (`docs/testing.md`); Tf32 and Bf16 allow about four units of their input rounding, which
    /// a product of random inputs stays well inside (`tests/mma.rs` measures it on one tile).
    pub fn relative_tolerance(self) -> f64 {
        match self {
            Precision::Fp32 => 1e-5,
            Precision::Tf32 => 2e-3,
            Precision::Bf16 => 2e-2,
        }
    }

    /// `"fp32"`, `"tf32"` or `"bf16"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Ok for [`Precision::Fp32`], the only precision the v1 kernels (and their CPU references)
    /// compute in; [`Error::PrecisionNotImplemented`] for the others.
    pub(crate) fn require_fp32(self, op: &'static str) -> Result<()> {
        match self {
            Precision::Fp32 => Ok(()),
            precision => Err(Error::PrecisionNotImplemented { op, precision }),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
