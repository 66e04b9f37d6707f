//! [`Adadelta`]'s rule as burn's optimizer, over whole tensors: what burn's engine
//! (`--backend flex`, `wgpu`) trains with. Built with the `flex` feature, and in the tests.

use burn::optim::{LearningRate, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor};

use super::Adadelta;

impl Adadelta {
    /// A whole-module optimizer driven by this rule, for training through burn's autodiff.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }
}

/// The two running averages kept for one parameter.
#[derive(Clone)]
pub struct AdadeltaState<const D: usize> {
    /// Running average of squared gradients (`a`).
    pub accum_grad: Tensor<D>,
    /// Running average of squared updates (`d`).
    pub accum_update: Tensor<D>,
}

impl Optimizer for Adadelta {
    type State<const D: usize> = AdadeltaState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let rho = self.rho;
        let grad_sq = grad.clone().square().mul_scalar(1.0 - rho);
        let (accum_grad, accum_update) = match state {
            Some(s) => (s.accum_grad.mul_scalar(rho).add(grad_sq), s.accum_update),
            // Both start at zero, so the first step needs no zeros materialised.
            None => (grad_sq, grad.zeros_like()),
        };
        let update = grad
            .mul(accum_update.clone().add_scalar(self.epsilon).sqrt())
            .div(accum_grad.clone().add_scalar(self.epsilon).sqrt());
        let accum_update = accum_update
            .mul_scalar(rho)
            .add(update.clone().square().mul_scalar(1.0 - rho));
        let tensor = tensor.sub(update.mul_scalar(lr));
        (
            tensor,
            Some(AdadeltaState {
                accum_grad,
                accum_update,
            }),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdadeltaState {
            accum_grad: state.accum_grad.to_device(device),
            accum_update: state.accum_update.to_device(device),
        }
    }
}

// Written out rather than derived: burn's derive names paths inside burn-optim itself.
impl<const D: usize> RecordState for AdadeltaState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, Adadelta::ACCUM_GRAD, self.accum_grad.to_data());
        out.push_tensor(prefix, Adadelta::ACCUM_UPDATE, self.accum_update.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let accum_grad = Tensor::from_data(src.take_tensor(prefix, Adadelta::ACCUM_GRAD)?, device);
        let accum_update =
            Tensor::from_data(src.take_tensor(prefix, Adadelta::ACCUM_UPDATE)?, device);
        Some(AdadeltaState {
            accum_grad,
            accum_update,
        })
    }
}
