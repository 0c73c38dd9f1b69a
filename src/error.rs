//! The crate's error type: every failure is a value that says what was wrong and where.
use crate::data::DataError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Tensor shapes or lengths that an op cannot take.
    #[error("{op}: bad shape: {message}")]
    Shape { op: &'static str, message: String },

    /// An argument outside what an op accepts (a negative epsilon, a block of 2048 threads...).
    #[error("{op}: bad argument: {message}")]
    Argument { op: &'static str, message: String },

    /// Tensors that live on different devices were given to one op.
    #[error("{op}: device mismatch: expected {expected}, found {found}")]
    DeviceMismatch {
        op: &'static str,
        expected: String,
        found: String,
    },

    /// The CUDA driver or a CUDA library is absent, or there is no such GPU.
    #[error("CUDA unavailable: {0}")]
    CudaUnavailable(String),

    /// The CUDA driver reported an error.
    #[error("CUDA driver error: {0}")]
    Cuda(#[from] cudarc::driver::DriverError),

    /// cuBLAS reported an error.
    #[error("cuBLAS error: {0:?}")]
    Cublas(#[from] cudarc::cublas::result::CublasError),

    /// Run-time NVRTC compilation failed (only when the build embedded sources, not PTX).
    #[error("NVRTC: {0}")]
    Nvrtc(String),

    /// A kernel name that no embedded family provides.
    #[error("no kernel `{name}` in kernel family `{family}`")]
    KernelNotFound {
        family: &'static str,
        name: &'static str,
    },

    /// The host emulator rejected or failed a launch.
    #[error("emulator: {0}")]
    Emulator(String),

    /// A finite-difference gradient check found a mismatch.
    #[error("gradient check: {0}")]
    GradientCheck(String),

    /// Reading or evaluating data.
    #[error(transparent)]
    Data(#[from] DataError),

    /// A model or training configuration that cannot run (heads not dividing d, n over the
    /// kernels' limit, a model kind without the attributes it needs...).
    #[error("configuration: {0}")]
    Config(String),

    /// A [`Precision`](crate::Precision) that the op's kernel does not compute in (the v1
    /// kernels compute in fp32 only).
    #[error("{op}: precision {precision} is not implemented by kernel v1 (only fp32 is)")]
    PrecisionNotImplemented {
        op: &'static str,
        precision: crate::Precision,
    },

    /// A switch value the spec names but this crate does not implement yet.
    #[error("not implemented yet: {0}")]
    NotImplemented(String),

    /// Reading or writing a file (checkpoints, results).
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    /// A checkpoint that cannot be read back or does not fit the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        path: std::path::PathBuf,
        message: String,
    },
}

impl Error {
    pub(crate) fn shape(op: &'static str, message: impl Into<String>) -> Self {
        Error::Shape {
            op,
            message: message.into(),
        }
    }
    pub(crate) fn argument(op: &'static str, message: impl Into<String>) -> Self {
        Error::Argument {
            op,
            message: message.into(),
        }
    }
}
