//! Typed errors for data files and evaluation: each file error names the file, the line
//! (1-based, counting the header as line 1) and what was expected there.
use std::path::PathBuf;

/// Longest excerpt of an offending cell quoted in an error message.
const MAX_QUOTE: usize = 60;

/// Everything that can go wrong while reading atomic files, building samples or evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened, read or written.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The header line is not a list of `name:type` cells.
    #[error("{}:{line}: malformed header: {message}", path.display())]
    Header {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// A field the configuration asks for is not in the header (or has the wrong type).
    #[error("{}:{line}: field `{field}`: expected {expected}; the header has: {available}", path.display())]
    MissingField {
        path: PathBuf,
        line: usize,
        field: String,
        expected: String,
        available: String,
    },

    /// A row has a different number of cells than the header.
    #[error("{}:{line}: expected {expected} tab-separated cells (as in the header), found {found}", path.display())]
    CellCount {
        path: PathBuf,
        line: usize,
        expected: usize,
        found: usize,
    },

    /// A cell could not be parsed as its declared type.
    #[error("{}:{line}: field `{field}`: expected {expected}, found `{value}`", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        field: String,
        expected: &'static str,
        value: String,
    },

    /// Any other problem with one line (invalid UTF-8, empty id, duplicate item row).
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// Nothing (or not enough) is left after reading or filtering.
    #[error("{}: dataset is empty after {stage}: {detail}", path.display())]
    Empty {
        path: PathBuf,
        stage: &'static str,
        detail: String,
    },

    /// A caller passed an argument that cannot work (batch size 0, score row too short, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl DataError {
    /// The 1-based line the error points at, when it points at one.
    pub fn line(&self) -> Option<usize> {
        match self {
            DataError::Header { line, .. }
            | DataError::MissingField { line, .. }
            | DataError::CellCount { line, .. }
            | DataError::Parse { line, .. }
            | DataError::Malformed { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The file the error is about, when it is about one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            DataError::Io { path, .. }
            | DataError::Header { path, .. }
            | DataError::MissingField { path, .. }
            | DataError::CellCount { path, .. }
            | DataError::Parse { path, .. }
            | DataError::Malformed { path, .. }
            | DataError::Empty { path, .. } => Some(path),
            DataError::InvalidArgument(_) => None,
        }
    }
}

/// A cell quoted in an error message, cut short (at a char boundary) when long.
pub(crate) fn quote(value: &str) -> String {
    if value.len() <= MAX_QUOTE {
        return value.to_string();
    }
    let mut end = MAX_QUOTE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &value[..end])
}
