//! MNIST: fetching from mirrors ([`fetch`]), IDX decoding ([`idx`]), the four files, the
//! data directory and its sets ([`mnist`]), and batches ([`batch`]).

pub mod batch;
pub mod fetch;
pub mod idx;
pub mod mnist;

pub use fetch::{DEFAULT_MIRRORS, Fetcher};
pub use mnist::{DataSource, FILES, FileStatus, Part, Split};
