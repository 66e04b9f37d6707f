//! Notes: one-line remarks that are not errors (a data file that is not canonical MNIST,
//! options taken from a checkpoint), all written here, to stderr, so stdout stays the log.

/// Writes `note: {message}` on its own line.
pub fn note(message: impl std::fmt::Display) {
    eprintln!("note: {message}");
}
