//! Adadelta (Zeiler 2012) exactly as Keras 2 implements it: its hyper-parameters and the
//! network's accumulators. The rule itself, over slices, is
//! [`crate::kernels::adadelta`]; `burn_adadelta.rs` makes this burn's optimizer.

use crate::network::Params;

/// Adadelta's state for the whole network: per parameter, the running averages of squared
/// gradients (`a`) and of squared updates (`d`).
#[derive(Debug, Clone, PartialEq)]
pub struct Accumulators {
    pub grad: Params,
    pub update: Params,
}

impl Accumulators {
    /// Where a run starts: both at zero.
    pub fn zeros() -> Accumulators {
        Accumulators {
            grad: Params::zeros(),
            update: Params::zeros(),
        }
    }
}

/// Adadelta's hyper-parameters; the defaults are Keras 2's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adadelta {
    pub rho: f32,
    pub epsilon: f32,
}

impl Default for Adadelta {
    fn default() -> Self {
        Adadelta {
            rho: 0.95,
            epsilon: 1e-7,
        }
    }
}

impl Adadelta {
    /// The names of the two accumulators in burn's optimizer record and in checkpoints.
    pub const ACCUM_GRAD: &str = "accum_grad";
    pub const ACCUM_UPDATE: &str = "accum_update";

    /// One step of every parameter of the network from its gradient: how the CPU trainer
    /// updates.
    pub fn update_params(
        &self,
        lr: f32,
        params: &mut Params,
        grads: &Params,
        accumulators: &mut Accumulators,
    ) {
        let slots = params
            .values_mut()
            .into_iter()
            .zip(grads.named())
            .zip(accumulators.grad.values_mut())
            .zip(accumulators.update.values_mut());
        for (((p, (_, _, g)), a), d) in slots {
            self.update(lr, p, g, a, d);
        }
    }

    /// The rule over plain slices ([`crate::kernels::adadelta::update`]): how the CPU
    /// trainer updates a parameter from its gradient and its two accumulators.
    pub fn update(
        &self,
        lr: f32,
        params: &mut [f32],
        grads: &[f32],
        accum_grad: &mut [f32],
        accum_update: &mut [f32],
    ) {
        let rates = [lr, self.rho, self.epsilon];
        crate::kernels::adadelta::update(rates, params, grads, accum_grad, accum_update);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::optim::Optimizer;
    use burn::tensor::TensorData;
    use burn::tensor::{Device, Tensor};

    use crate::reference::testing::{Adadelta64, assert_close_f64};

    fn to_f64(t: &Tensor<1>) -> Vec<f64> {
        let v: Vec<f32> = t.to_data().try_to_vec().unwrap();
        v.into_iter().map(f64::from).collect()
    }

    #[test]
    fn matches_an_f64_reference_over_many_steps() {
        let device = Device::default();
        let opt = Adadelta::default();
        // Away from zero: near it, f32 cancellation in `p - u` is not the rule's error.
        let init = [0.5f32, -1.25, 2.0, 0.8, -0.3];
        let mut p = Tensor::<1>::from_data(TensorData::from(init), &device);
        let mut state = None;
        let mut reference = Adadelta64::new(&init);
        for step in 0..25 {
            // Gradients that change sign and scale, including a tiny one.
            let g: Vec<f32> = (0..5)
                .map(|i| ((step * 7 + i * 3) as f32).sin() * 10f32.powi(i - 2))
                .collect();
            let lr = if step < 12 { 1.0 } else { 0.5 };
            let grad = Tensor::<1>::from_data(TensorData::new(g.clone(), [5]), &device);
            let (next, next_state) = opt.step(lr, p, grad, state);
            p = next;
            state = next_state;
            reference.step(&g, lr, 0.95, f64::from(1e-7f32));

            let s = state.as_ref().unwrap();
            assert_close_f64(&to_f64(&p), &reference.p, "param");
            assert_close_f64(&to_f64(&s.accum_grad), &reference.a, "accum_grad");
            assert_close_f64(&to_f64(&s.accum_update), &reference.d, "accum_update");
        }
    }

    fn linear_loss(model: &Linear, device: &Device) -> Tensor<1> {
        let x = Tensor::<2>::from_data(
            TensorData::from([[1.0f32, -2.0, 0.5], [0.25, 0.75, -1.0]]),
            device,
        );
        model.forward(x).powf_scalar(2.0).sum()
    }

    #[test]
    fn drives_a_module_and_resumes_from_bytes() {
        let device = Device::default().autodiff();
        let mut model = LinearConfig::new(3, 2).init(&device);
        let mut optim = Adadelta::default().init();
        let before = linear_loss(&model, &device).into_scalar::<f32>();
        for _ in 0..3 {
            let grads =
                GradientsParams::from_grads(linear_loss(&model, &device).backward(), &model);
            model = optim.step(1.0, model, grads);
        }
        let after = linear_loss(&model, &device).into_scalar::<f32>();
        assert!(after < before, "loss {before} -> {after}");

        // A restored optimizer makes the same next step as the original.
        let bytes = optim.into_bytes().unwrap();
        let mut restored = Adadelta::default().init().from_bytes(bytes).unwrap();
        let grads = || GradientsParams::from_grads(linear_loss(&model, &device).backward(), &model);
        let a = optim.step(1.0, model.clone(), grads());
        let b = restored.step(1.0, model.clone(), grads());
        let fresh = Adadelta::default().init().step(1.0, model.clone(), grads());
        let w = |m: &Linear| m.weight.val().to_data().try_to_vec::<f32>().unwrap();
        assert_eq!(w(&a), w(&b));
        assert_ne!(
            w(&a),
            w(&fresh),
            "state must matter, or this test proves nothing"
        );
        assert_eq!(a.num_params(), 8);
    }
}
