//! The CPU engine: our own kernels for the forward and backward passes, Adadelta over the
//! plain parameter vectors.

use super::{Backend, Forward, StepOutcome, Trainer};
use crate::checkpoint::TrainerState;
use crate::error::Result;
use crate::kernels::dropout::Dropout;
use crate::kernels::forward::{Bf16Weights, Net};
use crate::kernels::parts::Laps;
use crate::kernels::training;
use crate::network::Params;
use crate::optim::Adadelta;

/// Training through [`crate::kernels`].
pub struct CpuTrainer {
    state: TrainerState,
    /// Each step's gradients, written over the last step's (see `training::step_into`).
    grads: Params,
}

impl CpuTrainer {
    pub fn new(state: TrainerState) -> CpuTrainer {
        CpuTrainer {
            state,
            grads: Params::zeros(),
        }
    }
}

impl Forward for CpuTrainer {
    fn logits(&self, pixels: &[f32]) -> Vec<f32> {
        Net::new(&self.state.params).logits(pixels)
    }
}

impl Trainer for CpuTrainer {
    fn step(&mut self, pixels: &[f32], labels: &[u8], dropout_seed: u64, lr: f64) -> StepOutcome {
        let TrainerState {
            params,
            accumulators,
        } = &mut self.state;
        let (loss, correct) = training::step_into(
            params,
            pixels,
            labels,
            Dropout::Seeded(dropout_seed),
            &mut self.grads,
        );
        let mut laps = Laps::start();
        if loss.is_finite() {
            Adadelta::default().update_params(lr as f32, params, &self.grads, accumulators);
        }
        laps.lap("Adadelta");
        StepOutcome { loss, correct }
    }

    fn state(&self) -> Result<TrainerState> {
        Ok(self.state.clone())
    }

    fn backend(&self) -> Backend {
        Backend::Cpu
    }
}

/// Trained parameters, evaluated through our kernels.
pub struct CpuForward(pub Params);

impl Forward for CpuForward {
    fn logits(&self, pixels: &[f32]) -> Vec<f32> {
        Net::new(&self.0).logits(pixels)
    }
}

/// Trained parameters, evaluated through our kernels with conv2's products in bfloat16 (and
/// on AMX the first dense layer's too), the bf16 weights made once.
pub struct CpuBf16Forward(Params, Bf16Weights);

impl CpuBf16Forward {
    /// `None` where this processor lacks AVX512_BF16.
    pub fn new(params: Params) -> Option<CpuBf16Forward> {
        let weights = Bf16Weights::new(&params)?;
        Some(CpuBf16Forward(params, weights))
    }
}

impl Forward for CpuBf16Forward {
    fn logits(&self, pixels: &[f32]) -> Vec<f32> {
        Net::bf16(&self.0, &self.1).logits(pixels)
    }
}
