//! Data and evaluation (issue 7): RecBole atomic files, the paper's protocol, a built-in dataset.
//! Being written; see `docs/data.md` once it lands.
mod error;
pub use error::DataError;
