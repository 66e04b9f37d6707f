//! The commands, one file each: what a user runs. Each takes its options (from [`crate::cli`])
//! and writes its output; the library below them does the work.

pub mod download;
pub mod eval;
pub mod export;
pub mod predict;
pub mod serve;
pub mod train;
