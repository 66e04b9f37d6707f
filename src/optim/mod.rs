//! Optimizers burn does not ship.

mod adadelta;

pub use adadelta::{Adadelta, AdadeltaState};
