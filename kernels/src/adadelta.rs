//! Adadelta's update (Zeiler 2012) exactly as Keras 2 implements it, over plain slices: how
//! the CPU trainer updates each parameter. The app's `optim::Adadelta` holds the
//! hyper-parameters and drives it (and is burn's optimizer on the burn engines).
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
//!
//! The reference: [`crate::reference::adadelta`], one value in f64.

use rayon::prelude::*;

use crate::simd_fn;

/// Values a parallel task updates.
const CHUNK: usize = 1 << 14;

/// The rule over plain slices (`rates`: lr, rho, epsilon), one fused pass in parallel chunks.
pub fn update(
    rates: [f32; 3],
    params: &mut [f32],
    grads: &[f32],
    accum_grad: &mut [f32],
    accum_update: &mut [f32],
) {
    assert!(grads.len() == params.len() && accum_grad.len() == params.len());
    assert_eq!(accum_update.len(), params.len());
    // One chunk on this thread: through the pool, each of the six small tensors cost a
    // wake-up of the other thread (~0.08 ms a step in all).
    if params.len() <= CHUNK {
        return update_chunk(rates, params, grads, accum_grad, accum_update);
    }
    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(accum_grad.par_chunks_mut(CHUNK))
        .zip(accum_update.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), a), d)| update_chunk(rates, p, g, a, d));
}

simd_fn! {
    /// [`update`] over one chunk, in the best instruction set the processor has: with AVX2
    /// about twice as fast as plain x86-64's SSE2 (square roots and divisions eight lanes at
    /// a time), and the same bytes (each operation is IEEE's, and none is fused).
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
    use crate::isa::on_every_instruction_set;
    use crate::reference::testing::{Adadelta64, assert_close_f64};

    /// Keras 2's defaults.
    const RHO: f32 = 0.95;
    const EPS: f32 = 1e-7;

    /// Gradients that change sign and scale with the step, including tiny ones.
    fn gradients(step: usize, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((step * 7 + i * 3) as f32).sin() * 10f32.powi(i as i32 % 5 - 2))
            .collect()
    }

    #[test]
    fn the_slice_update_matches_the_f64_reference() {
        // More values than one parallel chunk, so the chunking is exercised.
        let n = 40_000;
        let mut p: Vec<f32> = (0..n).map(|i| 0.5 + (i as f32 * 0.013).sin()).collect();
        let (mut a, mut d) = (vec![0.0f32; n], vec![0.0f32; n]);
        let mut reference = Adadelta64::new(&p);
        for step in 0..25 {
            let g = gradients(step, n);
            let lr = if step < 12 { 1.0 } else { 0.5 };
            update([lr, RHO, EPS], &mut p, &g, &mut a, &mut d);
            reference.step(&g, f64::from(lr), f64::from(RHO), f64::from(EPS));
        }
        let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        // Away from zero: near it, f32 cancellation in `p - u` is not the rule's error.
        let far: Vec<usize> = (0..n).filter(|&i| reference.p[i].abs() > 0.1).collect();
        let pick = |v: &[f64]| far.iter().map(|&i| v[i]).collect::<Vec<_>>();
        assert_close_f64(&pick(&widen(&p)), &pick(&reference.p), "param");
        assert_close_f64(&widen(&a), &reference.a, "accum_grad");
        assert_close_f64(&widen(&d), &reference.d, "accum_update");
    }

    /// Every instruction set's version of the update gives the same bytes.
    #[test]
    fn every_instruction_set_updates_alike() {
        let n = 40_000;
        let start: Vec<f32> = (0..n).map(|i| 0.5 + (i as f32 * 0.013).sin()).collect();
        let runs = on_every_instruction_set(|| {
            let mut p = start.clone();
            let (mut a, mut d) = (vec![0.0f32; n], vec![0.0f32; n]);
            for step in 0..5 {
                update([1.0, RHO, EPS], &mut p, &gradients(step, n), &mut a, &mut d);
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
}
