//! MNIST: downloading, caching, IDX decoding, and batching into tensors.

pub mod batch;
pub mod download;
pub mod idx;
pub mod mnist;

pub use download::{DEFAULT_MIRRORS, Fetcher};
pub use mnist::{DataSource, FILES, FileStatus, Part, Split};
