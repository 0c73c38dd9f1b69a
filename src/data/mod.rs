//! Data and evaluation input (spec §5): RecBole atomic files, the paper's protocol, batches, a
//! converter from the S³-Rec format and a built-in synthetic dataset. See `docs/data.md`.
//!
//! Files: `atomic.rs` (the atomic-file reader), `intern.rs` (token interning), `load.rs`
//! (loading in named stages), `dataset.rs` (the dataset type), `split.rs`, `batch.rs`,
//! `s3rec.rs`, `synthetic.rs`, `rng.rs`, `error.rs`.
//!
//! ```no_run
//! use asif_kernels::data::{Dataset, LoadConfig, Batcher, Order};
//! let cfg = LoadConfig::default().with_attributes(&["class"]);
//! let ds = Dataset::load_recbole("data/ml-100k", "ml-100k", &cfg)?;
//! let split = ds.leave_one_out();
//! let batcher = Batcher::new(&ds, &split.train, 2048, 50)?;
//! for batch in batcher.epoch(Order::Shuffled { seed: 42, epoch: 0 }) {
//!     // batch.items (B×n), batch.lengths, batch.targets; attribute tokens per item:
//!     let _classes = ds.attribute("class").and_then(|a| a.tokens());
//! }
//! # Ok::<(), asif_kernels::data::DataError>(())
//! ```
pub mod atomic;
pub mod batch;
pub mod dataset;
mod error;
mod intern;
pub mod load;
pub mod rng;
pub mod s3rec;
pub mod split;
pub mod synthetic;

pub use atomic::{AtomicReader, Field, FieldType, Header, Row};
pub use batch::{Batch, Batcher, Batches, Order};
pub use dataset::{
    Attribute, AttributeValues, Dataset, FloatTable, LoadStats, TokenTable, PAD_TOKEN,
};
pub use error::DataError;
pub use load::{load, DatasetFiles, LoadConfig, TimeOrder};
pub use s3rec::{S3Rec, S3RecFiles};
pub use split::{Sample, Split};
pub use synthetic::SyntheticConfig;
