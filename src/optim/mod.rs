//! Optimizers burn does not ship.

mod adadelta;

pub use adadelta::{Accumulators, Adadelta, AdadeltaState};
