//! Optimizers burn does not ship.

mod adadelta;
#[cfg(any(test, feature = "flex"))]
mod burn_adadelta;

pub use adadelta::{Accumulators, Adadelta};
#[cfg(any(test, feature = "flex"))]
pub use burn_adadelta::AdadeltaState;
