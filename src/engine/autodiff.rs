//! burn's engine: the [`Model`]'s modules, burn's autodiff and its `ModuleOptimizer` driving
//! our [`Adadelta`], on burn's flex CPU backend or a GPU. The path every GPU run takes.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_pack::{self, Reader, Writer};

use super::modules::{Model, cross_entropy};
use super::{Backend, Forward, StepOutcome, Trainer};
use crate::checkpoint::TrainerState;
use crate::data::batch::images_tensor;
use crate::error::{Error, Result};
use crate::metrics;
use crate::model::{f32_tensor, f32s};
use crate::network::{NUM_CLASSES, Params};
use crate::optim::{Accumulators, Adadelta};

/// Training through burn's autodiff.
pub struct BurnTrainer {
    backend: Backend,
    /// The autodiff device the model lives on.
    device: Device,
    model: Model,
    optim: ModuleOptimizer,
}

impl BurnTrainer {
    pub fn new(backend: Backend, state: TrainerState) -> Result<BurnTrainer> {
        let device = backend.device()?.autodiff();
        let model = Model::from_params(&state.params, &device);
        let optim = optimizer_with(&state.accumulators, &model)?;
        Ok(BurnTrainer {
            backend,
            device,
            model,
            optim,
        })
    }
}

impl Forward for BurnTrainer {
    fn logits(&self, pixels: &[f32]) -> Vec<f32> {
        let model = self.model.valid();
        host_logits(&model, pixels, &self.device.clone().without_autodiff())
    }
}

impl Trainer for BurnTrainer {
    fn step(&mut self, pixels: &[f32], labels: &[u8], dropout_seed: u64, lr: f64) -> StepOutcome {
        // burn draws dropout from the device's generator: seeded per step, as our kernels are,
        // so that a resumed run draws what an uninterrupted one would.
        self.device.seed(dropout_seed);
        let logits = self
            .model
            .forward(images_tensor(pixels.to_vec(), &self.device));
        let rows = to_vec(logits.clone().detach().into_data());
        let correct = metrics::count_correct(&rows, labels);
        let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
        let labels = Tensor::<1, Int>::from_data(
            TensorData::new(labels, [rows.len() / NUM_CLASSES]),
            &self.device,
        );
        let loss = cross_entropy(logits, labels).mean();
        let value = f64::from(loss.clone().into_scalar::<f32>());
        if value.is_finite() {
            let grads = GradientsParams::from_grads(loss.backward(), &self.model);
            self.model = self.optim.step(lr, self.model.clone(), grads);
        }
        StepOutcome {
            loss: value,
            correct,
        }
    }

    fn state(&self) -> Result<TrainerState> {
        Ok(TrainerState {
            params: self.model.params(),
            accumulators: accumulators_of(&self.optim, &self.model)?,
        })
    }

    fn backend(&self) -> Backend {
        self.backend
    }
}

/// Trained parameters, evaluated through burn's modules on a plain device.
pub struct BurnForward {
    device: Device,
    model: Model,
}

impl BurnForward {
    pub fn new(backend: Backend, params: &Params) -> Result<BurnForward> {
        let device = backend.device()?;
        let model = Model::from_params(params, &device);
        Ok(BurnForward { device, model })
    }
}

impl Forward for BurnForward {
    fn logits(&self, pixels: &[f32]) -> Vec<f32> {
        host_logits(&self.model, pixels, &self.device)
    }
}

fn host_logits(model: &Model, pixels: &[f32], device: &Device) -> Vec<f32> {
    to_vec(
        model
            .forward(images_tensor(pixels.to_vec(), device))
            .into_data(),
    )
}

fn to_vec(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 logits")
}

// burn's `ModuleOptimizer` keeps its state per parameter id and shows it only as a burnpack
// record, whose tensors are named "{param id}.{field}" (our `RecordState` fields). The two
// functions below translate between that record and the named `Accumulators`.

/// The Adadelta state `optim` holds for `model`'s parameters (zero where it has none yet).
fn accumulators_of(optim: &ModuleOptimizer, model: &Model) -> Result<Accumulators> {
    let fail = |e: String| Error::OptimizerState(format!("cannot read it: {e}"));
    let bytes = optim.into_bytes().map_err(|e| fail(e.to_string()))?;
    let reader = Reader::from_bytes(bytes).map_err(|e| fail(e.to_string()))?;
    let ids = model.param_ids();
    let read = |field: &str| -> Result<Params> {
        let mut failure = None;
        let params = Params::from_named(|name, shape| {
            let (id, _) = ids.iter().find(|(_, n)| *n == name)?;
            let len = shape.iter().product();
            match reader.tensor_data(&format!("{}.{field}", id.val())) {
                Ok(bytes) => f32s(&bytes, len),
                // No state yet for this parameter: Adadelta starts from zero.
                Err(burn_pack::Error::TensorNotFound(_)) => Some(vec![0.0; len]),
                Err(e) => {
                    failure = Some(e.to_string());
                    None
                }
            }
        });
        params.ok_or_else(|| fail(failure.unwrap_or_else(|| "a tensor of the wrong size".into())))
    };
    Ok(Accumulators {
        grad: read(Adadelta::ACCUM_GRAD)?,
        update: read(Adadelta::ACCUM_UPDATE)?,
    })
}

/// A `ModuleOptimizer` over our Adadelta holding `accumulators` for `model`'s parameters.
fn optimizer_with(accumulators: &Accumulators, model: &Model) -> Result<ModuleOptimizer> {
    let ids = model.param_ids();
    let mut tensors = Vec::new();
    for (field, params) in [
        (Adadelta::ACCUM_GRAD, &accumulators.grad),
        (Adadelta::ACCUM_UPDATE, &accumulators.update),
    ] {
        for ((id, _), (_, shape, values)) in ids.iter().zip(params.named()) {
            let name = format!("{}.{field}", id.val());
            tensors.push(f32_tensor(name, shape, Some(id.val()), values));
        }
    }
    let fail = |e: String| Error::OptimizerState(format!("cannot set it: {e}"));
    let bytes = Writer::new(tensors)
        .into_bytes()
        .map_err(|e| fail(e.to_string()))?;
    Adadelta::default()
        .init()
        .from_bytes(bytes)
        .map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The optimizer state survives the trip into burn's `ModuleOptimizer` and back, and it is
    /// the state that burn's steps then use.
    #[test]
    fn accumulators_round_trip_through_burns_optimizer() {
        let mut state = TrainerState::fresh(5);
        for (i, v) in state.accumulators.grad.values_mut().into_iter().enumerate() {
            v.iter_mut()
                .enumerate()
                .for_each(|(j, x)| *x = (i * 7 + j % 13) as f32 * 1e-3);
        }
        for v in state.accumulators.update.values_mut() {
            v.iter_mut().for_each(|x| *x = 2e-4);
        }
        let trainer = BurnTrainer::new(Backend::Flex, state.clone()).unwrap();
        assert_eq!(trainer.state().unwrap(), state);
        // A fresh optimizer has no state yet: it reads as zeros.
        let fresh = TrainerState::fresh(5);
        let device = Device::flex().autodiff();
        let model = Model::from_params(&fresh.params, &device);
        let empty = Adadelta::default().init();
        assert_eq!(
            accumulators_of(&empty, &model).unwrap(),
            Accumulators::zeros()
        );
    }
}
