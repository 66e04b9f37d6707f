//! Adadelta (Zeiler 2012) exactly as Keras 2 implements it.
//!
//! Per parameter, with gradient `g`, accumulators `a` (squared gradients) and `d` (squared
//! updates), both starting at zero:
//!
//! ```text
//! a = rho*a + (1-rho)*g²
//! u = g * sqrt(d + eps) / sqrt(a + eps)
//! p = p - lr*u
//! d = rho*d + (1-rho)*u²
//! ```

use rayon::prelude::*;

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

    /// The rule over plain slices, one fused pass in parallel chunks: how the CPU trainer
    /// updates a parameter from its gradient and its two accumulators.
    pub fn update(
        &self,
        lr: f32,
        params: &mut [f32],
        grads: &[f32],
        accum_grad: &mut [f32],
        accum_update: &mut [f32],
    ) {
        assert!(grads.len() == params.len() && accum_grad.len() == params.len());
        assert_eq!(accum_update.len(), params.len());
        let (rho, eps) = (self.rho, self.epsilon);
        const CHUNK: usize = 1 << 14;
        // One chunk on this thread: through the pool, each of the six small tensors cost a
        // wake-up of the other thread (~0.08 ms a step in all).
        if params.len() <= CHUNK {
            return update_chunk([lr, rho, eps], params, grads, accum_grad, accum_update);
        }
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(accum_grad.par_chunks_mut(CHUNK))
            .zip(accum_update.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), a), d)| update_chunk([lr, rho, eps], p, g, a, d));
    }
}

crate::kernels::simd_fn! {
    /// [`Adadelta::update`] over one chunk (`rates`: lr, rho, epsilon), in the best
    /// instruction set the processor has: with AVX2 about twice as fast as plain x86-64's
    /// SSE2 (square roots and divisions eight lanes at a time), and the same bytes (each
    /// operation is IEEE's, and none is fused).
    fn update_chunk(
        rates: [f32; 3],
        params: &mut [f32],
        grads: &[f32],
        accum_grad: &mut [f32],
        accum_update: &mut [f32],
    ) {
        let [lr, rho, eps] = rates;
        let slots = params.iter_mut().zip(grads).zip(accum_grad).zip(accum_update);
        for (((p, &g), a), d) in slots {
            *a = rho * *a + (1.0 - rho) * g * g;
            let u = g * (*d + eps).sqrt() / (*a + eps).sqrt();
            *p -= lr * u;
            *d = rho * *d + (1.0 - rho) * u * u;
        }
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

    /// The rule in f64, one parameter at a time: [`crate::reference::adadelta`].
    struct Reference {
        p: Vec<f64>,
        a: Vec<f64>,
        d: Vec<f64>,
    }

    impl Reference {
        fn step(&mut self, g: &[f64], lr: f64, rho: f64, eps: f64) {
            let slots = self.p.iter_mut().zip(&mut self.a).zip(&mut self.d);
            for (((p, a), d), &g) in slots.zip(g) {
                crate::reference::adadelta(p, g, (a, d), lr, rho, eps);
            }
        }
    }

    fn to_f64(t: &Tensor<1>) -> Vec<f64> {
        let v: Vec<f32> = t.to_data().try_to_vec().unwrap();
        v.into_iter().map(f64::from).collect()
    }

    fn assert_close(actual: &[f64], expected: &[f64], what: &str) {
        for (i, (x, y)) in actual.iter().zip(expected).enumerate() {
            let scale = y.abs().max(1e-30);
            assert!(
                (x - y).abs() / scale <= 1e-6,
                "{what}[{i}]: {x} vs reference {y}"
            );
        }
    }

    #[test]
    fn matches_an_f64_reference_over_many_steps() {
        let device = Device::default();
        let opt = Adadelta::default();
        // Away from zero: near it, f32 cancellation in `p - u` is not the rule's error.
        let init = [0.5f32, -1.25, 2.0, 0.8, -0.3];
        let mut p = Tensor::<1>::from_data(TensorData::from(init), &device);
        let mut state = None;
        let mut reference = Reference {
            p: init.iter().map(|&x| f64::from(x)).collect(),
            a: vec![0.0; 5],
            d: vec![0.0; 5],
        };
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
            let g64: Vec<f64> = g.iter().map(|&x| f64::from(x)).collect();
            reference.step(&g64, lr, 0.95, f64::from(1e-7f32));

            let s = state.as_ref().unwrap();
            assert_close(&to_f64(&p), &reference.p, "param");
            assert_close(&to_f64(&s.accum_grad), &reference.a, "accum_grad");
            assert_close(&to_f64(&s.accum_update), &reference.d, "accum_update");
        }
    }

    #[test]
    fn the_slice_update_matches_the_f64_reference_too() {
        let opt = Adadelta::default();
        // More values than one parallel chunk, so the chunking is exercised.
        let n = 40_000;
        let mut p: Vec<f32> = (0..n).map(|i| 0.5 + (i as f32 * 0.013).sin()).collect();
        let (mut a, mut d) = (vec![0.0f32; n], vec![0.0f32; n]);
        let mut reference = Reference {
            p: p.iter().map(|&x| f64::from(x)).collect(),
            a: vec![0.0; n],
            d: vec![0.0; n],
        };
        for step in 0..25 {
            let g: Vec<f32> = (0..n)
                .map(|i| ((step * 7 + i * 3) as f32).sin() * 10f32.powi(i as i32 % 5 - 2))
                .collect();
            let lr = if step < 12 { 1.0 } else { 0.5 };
            opt.update(lr, &mut p, &g, &mut a, &mut d);
            let g64: Vec<f64> = g.iter().map(|&x| f64::from(x)).collect();
            reference.step(&g64, f64::from(lr), 0.95, f64::from(1e-7f32));
        }
        let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        // Only where f32 cancellation in `p - u` is not the question (see above).
        let far: Vec<usize> = (0..n).filter(|&i| reference.p[i].abs() > 0.1).collect();
        let pick = |v: &[f64]| far.iter().map(|&i| v[i]).collect::<Vec<_>>();
        assert_close(&pick(&widen(&p)), &pick(&reference.p), "param");
        assert_close(&widen(&a), &reference.a, "accum_grad");
        assert_close(&widen(&d), &reference.d, "accum_update");
    }

    /// Every instruction set's version of the update gives the same bytes.
    #[test]
    fn every_instruction_set_updates_alike() {
        let opt = Adadelta::default();
        let n = 40_000;
        let start: Vec<f32> = (0..n).map(|i| 0.5 + (i as f32 * 0.013).sin()).collect();
        let runs = crate::kernels::on_every_instruction_set(|| {
            let mut p = start.clone();
            let (mut a, mut d) = (vec![0.0f32; n], vec![0.0f32; n]);
            for step in 0..5 {
                let g: Vec<f32> = (0..n)
                    .map(|i| ((step * 7 + i * 3) as f32).sin() * 10f32.powi(i as i32 % 5 - 2))
                    .collect();
                opt.update(1.0, &mut p, &g, &mut a, &mut d);
            }
            [p, a, d].map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>())
        });
        let ((_, first), rest) = runs.split_first().unwrap();
        let start: Vec<u32> = start.iter().map(|x| x.to_bits()).collect();
        assert!(first[0] != start, "the parameters moved");
        for (arch, other) in rest {
            assert!(first == other, "{arch}: the update differs from scalar's");
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
