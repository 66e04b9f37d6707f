//! One training step on the CPU: the forward pass with dropout, softmax cross-entropy, and
//! the gradient of every parameter, in burn's parameter layouts.
//!
//! burn's autodiff on `flex` spends most of a step outside its GEMM (element-wise loops,
//! fresh allocations, a transposed convolution for conv2's input gradient). Here each
//! convolution's forward, weight gradient and input gradient is one GEMM per group of images,
//! ReLU and max-pool backward are a scatter through the recorded winners, and conv1 gets no
//! input gradient (the images need none).
//!
//! Deterministic: groups are fixed by the batch, each group's partial gradients are summed in
//! group order, and dropout masks are a function of (seed, position) only, so the same seed
//! gives the same model whatever the thread count's timing.

use rayon::prelude::*;

use super::{
    C1, C2, FEATURES, GROUP, HIDDEN, K2, S1, S2, SP, Stored, conv_from_gemm, conv_to_gemm, dense,
    features, im2col1, im2col2, matmul_stored,
};
use crate::data::idx::PIXELS;
use crate::model::{NUM_CLASSES, RawWeights};

/// Keras's dropout rates after the pooling and after the first dense layer.
const DROP1: f32 = 0.35;
const DROP2: f32 = 0.5;

/// Inverted-dropout multipliers for one batch (0, or 1/(1-rate) for kept units, as Keras
/// scales them): after the pooling, [n × 9216] in burn's flatten order, and after the
/// first dense layer, [n × 128].
#[derive(Clone)]
pub struct Masks {
    pub keep1: Vec<f32>,
    pub keep2: Vec<f32>,
}

impl Masks {
    /// Masks for `images` drawn from `seed`; each unit's fate depends only on the seed and its
    /// position.
    pub fn draw(images: usize, seed: u64) -> Masks {
        let len1 = images * FEATURES;
        Masks {
            keep1: draw(len1, DROP1, seed, 0),
            keep2: draw(images * HIDDEN, DROP2, seed, len1),
        }
    }

    /// Keep every unit, unscaled: dropout off.
    pub fn keep_all(images: usize) -> Masks {
        Masks {
            keep1: vec![1.0; images * FEATURES],
            keep2: vec![1.0; images * HIDDEN],
        }
    }
}

/// Each unit is dropped when 16 bits of a hash of (seed, position) fall below `rate` × 2¹⁶
/// (0.35 becomes 0.350006); one 64-bit hash decides four units.
fn draw(len: usize, rate: f32, seed: u64, offset: usize) -> Vec<f32> {
    debug_assert_eq!(offset % 4, 0);
    let scale = 1.0 / (1.0 - rate);
    let threshold = (f64::from(rate) * 65536.0).round() as u64;
    let mut out = vec![0.0f32; len];
    for (q, quad) in out.chunks_mut(4).enumerate() {
        let position = (offset / 4 + q) as u64;
        // SplitMix64 of (seed, position): independent, well-mixed bits.
        let mut z = seed.wrapping_add(position.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        for (i, v) in quad.iter_mut().enumerate() {
            let kept = (z >> (16 * i)) & 0xFFFF >= threshold;
            *v = scale * f32::from(u8::from(kept));
        }
    }
    out
}

/// What one step yields: the batch's mean loss, how many it classified right (before the
/// update, as Keras counts), and the gradient of the mean loss.
pub struct Step {
    pub loss: f64,
    pub correct: usize,
    pub grads: RawWeights,
}

/// The forward and backward pass of the mean softmax cross-entropy of `labels` over `pixels`
/// (scaled to [0, 1], 784 per image), at weights `w`, with the dropout masks that `masks`
/// makes. They are made on one thread while the convolutions run on the others: as a
/// parallel loop of its own, drawing them cost more in waking threads than in hashing.
pub fn step(
    w: &RawWeights,
    pixels: &[f32],
    labels: &[u8],
    masks: impl FnOnce() -> Masks + Send,
) -> Step {
    let n = labels.len();
    assert_eq!(pixels.len(), n * PIXELS);
    let threads = rayon::current_num_threads();
    let w1 = conv_to_gemm(&w.conv1.0, 1, C1);
    let w2 = conv_to_gemm(&w.conv2.0, C1, C2);

    // Convolutions, per group of images. Kept for the backward pass: conv1's activations and
    // which value of each pooling window won.
    let map1 = S1 * S1 * C1;
    let mut a1 = vec![0.0f32; n * map1];
    let mut pooled = vec![0.0f32; n * FEATURES];
    let mut winner = vec![0u8; n * FEATURES];
    let (masks, ()) = rayon::join(masks, || {
        pixels
            .par_chunks(GROUP * PIXELS)
            .zip(a1.par_chunks_mut(GROUP * map1))
            .zip(pooled.par_chunks_mut(GROUP * FEATURES))
            .zip(winner.par_chunks_mut(GROUP * FEATURES))
            .for_each(|(((images, a1), pooled), winner)| {
                let conv1 = (w1.as_slice(), w.conv1.1.as_slice());
                let conv2 = (w2.as_slice(), w.conv2.1.as_slice());
                features(images, conv1, conv2, a1, pooled, Some(winner));
            })
    });
    assert!(masks.keep1.len() >= n * FEATURES && masks.keep2.len() >= n * HIDDEN);

    // Dropout, dense + ReLU, dropout, dense.
    let features: Vec<f32> = pooled
        .iter()
        .zip(&masks.keep1)
        .map(|(v, k)| v * k)
        .collect();
    let hidden = dense(&features, &w.dense1.0, &w.dense1.1, true, threads);
    let dropped: Vec<f32> = hidden
        .iter()
        .zip(&masks.keep2)
        .map(|(v, k)| v * k)
        .collect();
    let logits = dense(&dropped, &w.dense2.0, &w.dense2.1, false, 1);

    // Softmax cross-entropy and its gradient with respect to the logits, of the batch mean.
    let mut loss = 0f64;
    let mut correct = 0;
    let mut dlogits = vec![0.0f32; n * NUM_CLASSES];
    for ((row, d), &label) in logits
        .chunks(NUM_CLASSES)
        .zip(dlogits.chunks_mut(NUM_CLASSES))
        .zip(labels)
    {
        let label = usize::from(label);
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
        loss += sum.ln() - f64::from(row[label] - max);
        let best = (0..NUM_CLASSES).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        correct += usize::from(best == label);
        for (i, (d, &v)) in d.iter_mut().zip(row).enumerate() {
            let p = f64::from(v - max).exp() / sum;
            let target = if i == label { 1.0 } else { 0.0 };
            *d = ((p - target) / n as f64) as f32;
        }
    }

    // Dense layers backward.
    let mut dw4 = vec![0.0f32; HIDDEN * NUM_CLASSES];
    matmul_stored(
        &mut dw4,
        transposed(&dropped),
        as_is(&dlogits),
        (HIDDEN, n, NUM_CLASSES),
        false,
        1,
    );
    let db4 = column_sums(&dlogits, NUM_CLASSES);
    let mut dh = vec![0.0f32; n * HIDDEN];
    matmul_stored(
        &mut dh,
        as_is(&dlogits),
        transposed(&w.dense2.0),
        (n, NUM_CLASSES, HIDDEN),
        false,
        1,
    );
    for ((d, &h), &k) in dh.iter_mut().zip(&hidden).zip(&masks.keep2) {
        *d = if h > 0.0 { *d * k } else { 0.0 };
    }
    // The two big products of the first dense layer's backward pass are independent and of
    // equal size: one per thread, rather than each split across both.
    let mut dw3 = vec![0.0f32; FEATURES * HIDDEN];
    let mut dpooled = vec![0.0f32; n * FEATURES];
    rayon::join(
        || {
            let dims = (FEATURES, n, HIDDEN);
            matmul_stored(&mut dw3, transposed(&features), as_is(&dh), dims, false, 1);
        },
        || {
            let dims = (n, HIDDEN, FEATURES);
            matmul_stored(
                &mut dpooled,
                as_is(&dh),
                transposed(&w.dense1.0),
                dims,
                false,
                1,
            );
        },
    );
    let db3 = column_sums(&dh, HIDDEN);
    // Through dropout and ReLU: a pooled value of zero passed no gradient.
    for ((d, &p), &k) in dpooled.iter_mut().zip(&pooled).zip(&masks.keep1) {
        *d = if p > 0.0 { *d * k } else { 0.0 };
    }

    // Convolutions backward, per group; partial sums kept apart and added in group order.
    let partials: Vec<ConvGrads> = pixels
        .par_chunks(GROUP * PIXELS)
        .zip(a1.par_chunks(GROUP * map1))
        .zip(dpooled.par_chunks(GROUP * FEATURES))
        .zip(winner.par_chunks(GROUP * FEATURES))
        .map(|(((images, a1), dpooled), winner)| conv_backward(images, a1, dpooled, winner, &w2))
        .collect();
    let mut total = ConvGrads::zero();
    for p in &partials {
        total.add(p);
    }

    Step {
        loss: loss / n as f64,
        correct,
        grads: RawWeights {
            conv1: (conv_from_gemm(&total.w1, 1, C1), total.b1),
            conv2: (conv_from_gemm(&total.w2, C1, C2), total.b2),
            dense1: (dw3, db3),
            dense2: (dw4, db4),
        },
    }
}

/// One group's share of the convolution gradients, weights in the GEMM layouts.
struct ConvGrads {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl ConvGrads {
    fn zero() -> ConvGrads {
        ConvGrads {
            w1: vec![0.0; 9 * C1],
            b1: vec![0.0; C1],
            w2: vec![0.0; K2 * C2],
            b2: vec![0.0; C2],
        }
    }

    fn add(&mut self, other: &ConvGrads) {
        for (a, b) in [
            (&mut self.w1, &other.w1),
            (&mut self.b1, &other.b1),
            (&mut self.w2, &other.w2),
            (&mut self.b2, &other.b2),
        ] {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        }
    }
}

/// conv2's and conv1's gradients for one group, from the gradient at the pooled features.
fn conv_backward(
    images: &[f32],
    a1: &[f32],
    dpooled: &[f32],
    winner: &[u8],
    w2: &[f32],
) -> ConvGrads {
    let g = images.len() / PIXELS;
    let (rows2, rows1) = (g * S2 * S2, g * S1 * S1);
    let mut grads = ConvGrads::zero();

    // Max-pool backward: each pooled gradient goes to the window's winner.
    let mut dz2 = vec![0.0f32; rows2 * C2];
    for (i, (dp, win)) in dpooled
        .chunks(FEATURES)
        .zip(winner.chunks(FEATURES))
        .enumerate()
    {
        let dz = &mut dz2[i * S2 * S2 * C2..][..S2 * S2 * C2];
        for c in 0..C2 {
            for py in 0..SP {
                for px in 0..SP {
                    let at = c * SP * SP + py * SP + px;
                    let (dy, dx) = (usize::from(win[at]) / 2, usize::from(win[at]) % 2);
                    dz[((2 * py + dy) * S2 + 2 * px + dx) * C2 + c] = dp[at];
                    grads.b2[c] += dp[at];
                }
            }
        }
    }

    // conv2: weight gradient cols2ᵀ · dz2, input gradient dz2 · w2ᵀ folded back (col2im).
    let mut cols = vec![0.0f32; rows2 * K2];
    im2col2(a1, &mut cols);
    matmul_stored(
        &mut grads.w2,
        transposed(&cols),
        as_is(&dz2),
        (K2, rows2, C2),
        false,
        1,
    );
    let dcols = &mut cols; // reused: cols2 is no longer needed
    matmul_stored(
        dcols,
        as_is(&dz2),
        transposed(w2),
        (rows2, C2, K2),
        false,
        1,
    );
    let mut dz1 = vec![0.0f32; rows1 * C1];
    for (dc, d1) in dcols.chunks(S2 * S2 * K2).zip(dz1.chunks_mut(S1 * S1 * C1)) {
        for y in 0..S2 {
            for x in 0..S2 {
                let row = &dc[(y * S2 + x) * K2..][..K2];
                for ky in 0..3 {
                    let dst = &mut d1[((y + ky) * S1 + x) * C1..][..3 * C1];
                    for (d, s) in dst.iter_mut().zip(&row[ky * 3 * C1..(ky + 1) * 3 * C1]) {
                        *d += s;
                    }
                }
            }
        }
    }
    // Through conv1's ReLU.
    for (d, &a) in dz1.iter_mut().zip(a1) {
        if a <= 0.0 {
            *d = 0.0;
        }
    }
    for row in dz1.chunks(C1) {
        grads.b1.iter_mut().zip(row).for_each(|(b, d)| *b += d);
    }
    let mut cols1 = vec![0.0f32; rows1 * 9];
    im2col1(images, &mut cols1);
    matmul_stored(
        &mut grads.w1,
        transposed(&cols1),
        as_is(&dz1),
        (9, rows1, C1),
        false,
        1,
    );
    grads
}

fn as_is(v: &[f32]) -> (&[f32], Stored) {
    (v, Stored::AsIs)
}

fn transposed(v: &[f32]) -> (&[f32], Stored) {
    (v, Stored::Transposed)
}

fn column_sums(rows: &[f32], width: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; width];
    for row in rows.chunks(width) {
        sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    sums
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::{log_softmax, relu};
    use burn::tensor::module::{conv2d, max_pool2d};
    use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
    use burn::tensor::{Device, Int, Tensor, TensorData};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::model::Model;

    fn tensor<const D: usize>(values: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), device).require_grad()
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    /// The same step in burn's own ops and autodiff: (mean loss, gradients in burn layouts).
    fn reference(
        w: &RawWeights,
        pixels: &[f32],
        labels: &[u8],
        masks: &Masks,
    ) -> (f64, RawWeights) {
        let device = Device::flex().autodiff();
        let n = labels.len();
        let w1 = tensor(&w.conv1.0, [C1, 1, 3, 3], &device);
        let b1 = tensor(&w.conv1.1, [C1], &device);
        let w2 = tensor(&w.conv2.0, [C2, C1, 3, 3], &device);
        let b2 = tensor(&w.conv2.1, [C2], &device);
        let w3 = tensor(&w.dense1.0, [FEATURES, HIDDEN], &device);
        let b3 = tensor(&w.dense1.1, [HIDDEN], &device);
        let w4 = tensor(&w.dense2.0, [HIDDEN, NUM_CLASSES], &device);
        let b4 = tensor(&w.dense2.1, [NUM_CLASSES], &device);
        let keep1 =
            Tensor::<2>::from_data(TensorData::new(masks.keep1.clone(), [n, FEATURES]), &device);
        let keep2 =
            Tensor::<2>::from_data(TensorData::new(masks.keep2.clone(), [n, HIDDEN]), &device);

        let x = Tensor::<4>::from_data(TensorData::new(pixels.to_vec(), [n, 1, 28, 28]), &device);
        let valid = || ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let x = relu(conv2d(x, w1.clone(), Some(b1.clone()), valid()));
        let x = relu(conv2d(x, w2.clone(), Some(b2.clone()), valid()));
        let x = max_pool2d(x, MaxPoolOptions::new([2, 2])).reshape([n, FEATURES]) * keep1;
        let x = relu(x.matmul(w3.clone()) + b3.clone().unsqueeze()) * keep2;
        let logits = x.matmul(w4.clone()) + b4.clone().unsqueeze();
        let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &device);
        let picked = log_softmax(logits, 1).gather(1, labels.unsqueeze_dim(1));
        let loss = picked.mean().neg();
        let loss_value = f64::from(loss.clone().into_scalar::<f32>());
        let grads = loss.backward();
        let g4 = |t: &Tensor<4>| values(t.grad(&grads).unwrap());
        let g2 = |t: &Tensor<2>| values(t.grad(&grads).unwrap());
        let g1 = |t: &Tensor<1>| values(t.grad(&grads).unwrap());
        (
            loss_value,
            RawWeights {
                conv1: (g4(&w1), g1(&b1)),
                conv2: (g4(&w2), g1(&b2)),
                dense1: (g2(&w3), g1(&b3)),
                dense2: (g2(&w4), g1(&b4)),
            },
        )
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{what}: the reference gradient is all zero");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 2e-4 * scale,
                "{what}[{i}]: {g} vs burn's {w} (scale {scale})"
            );
        }
    }

    #[test]
    fn gradients_match_burns_autodiff() {
        let device = Device::flex();
        let model = Model::new(&device, 7).with_random_biases(11, &device);
        let w = model.raw_weights();
        let mut rng = StdRng::seed_from_u64(3);
        // 19 images: two full groups and a partial one.
        let n = 19;
        let pixels: Vec<f32> = (0..n * PIXELS).map(|_| rng.random::<f32>()).collect();
        let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..10)).collect();
        for masks in [Masks::draw(n, 5), Masks::keep_all(n)] {
            let (loss, want) = reference(&w, &pixels, &labels, &masks);
            let got = step(&w, &pixels, &labels, || masks.clone());
            assert!(
                (got.loss - loss).abs() <= 1e-5 * loss,
                "loss {} vs {loss}",
                got.loss
            );
            assert_close(&got.grads.conv1.0, &want.conv1.0, "conv1 weight");
            assert_close(&got.grads.conv1.1, &want.conv1.1, "conv1 bias");
            assert_close(&got.grads.conv2.0, &want.conv2.0, "conv2 weight");
            assert_close(&got.grads.conv2.1, &want.conv2.1, "conv2 bias");
            assert_close(&got.grads.dense1.0, &want.dense1.0, "dense1 weight");
            assert_close(&got.grads.dense1.1, &want.dense1.1, "dense1 bias");
            assert_close(&got.grads.dense2.0, &want.dense2.0, "dense2 weight");
            assert_close(&got.grads.dense2.1, &want.dense2.1, "dense2 bias");
        }
    }

    #[test]
    fn the_step_is_deterministic() {
        let device = Device::flex();
        let w = Model::new(&device, 1).raw_weights();
        let pixels: Vec<f32> = (0..20 * PIXELS).map(|i| (i % 251) as f32 / 251.0).collect();
        let labels: Vec<u8> = (0..20).map(|i| (i % 10) as u8).collect();
        let a = step(&w, &pixels, &labels, || Masks::draw(20, 9));
        let b = step(&w, &pixels, &labels, || Masks::draw(20, 9));
        assert_eq!(a.loss.to_bits(), b.loss.to_bits());
        assert_eq!(a.grads.conv2.0, b.grads.conv2.0);
        assert_eq!(a.grads.dense1.0, b.grads.dense1.0);
    }

    #[test]
    fn masks_drop_at_keras_rates_and_scale_the_rest() {
        let a = Masks::draw(100, 42);
        for (mask, rate) in [(&a.keep1, DROP1), (&a.keep2, DROP2)] {
            let scale = 1.0 / (1.0 - rate);
            assert!(mask.iter().all(|&v| v == 0.0 || v == scale));
            let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f32 / mask.len() as f32;
            assert!(
                (dropped - rate).abs() < 0.01,
                "rate {rate}: dropped {dropped}"
            );
        }
        assert_eq!(a.keep1, Masks::draw(100, 42).keep1);
        assert_ne!(a.keep1, Masks::draw(100, 43).keep1);
        // Not one pattern repeated per image.
        assert_ne!(a.keep1[..FEATURES], a.keep1[FEATURES..2 * FEATURES]);
    }
}
