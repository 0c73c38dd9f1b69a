//! Typed errors for data files: each names the file, the line and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}:{line}: {message}")]
    Malformed { path: std::path::PathBuf, line: usize, message: String },
}
