//! The network's forward pass without dropout (evaluation, validation), as im2col + GEMM in
//! channels-last layout, parallel over groups of images.
//!
//! burn's flex backend runs this pass at about 1,200 images/s on two cores, mostly outside
//! its GEMM; here the convolutions are one GEMM each per group of images, bias and ReLU are
//! fused into the copy that follows, and nothing is allocated per layer per image.

use rayon::prelude::*;

use super::matmul;
use crate::data::idx::{COLS, PIXELS, ROWS};
use crate::model::Model;

const C1: usize = 32;
const C2: usize = 64;
/// conv1 output side (28 - 2) and conv2 output side (26 - 2), pooled side (24 / 2).
const S1: usize = ROWS - 2;
const S2: usize = S1 - 2;
const SP: usize = S2 / 2;
const FEATURES: usize = SP * SP * C2;
const HIDDEN: usize = 128;
/// Images per parallel task: big enough for an efficient GEMM (M = 8 × 576 rows), small
/// enough that the im2col buffer (5.3 MB) stays near the caches.
const GROUP: usize = 8;

/// The trained weights, laid out for the kernels.
pub struct CpuNet {
    /// [9 × 32]: row (ky, kx), column output channel.
    w1: Vec<f32>,
    b1: Vec<f32>,
    /// [288 × 64]: row (ky, kx, input channel), column output channel.
    w2: Vec<f32>,
    b2: Vec<f32>,
    /// [9216 × 128], rows in our channels-last feature order (y, x, c).
    w3: Vec<f32>,
    b3: Vec<f32>,
    /// [128 × 10].
    w4: Vec<f32>,
    b4: Vec<f32>,
}

impl CpuNet {
    pub fn from_model(model: &Model) -> CpuNet {
        let raw = model.raw_weights();
        // burn's convolution weights are [out, in, ky, kx]; ours [(ky, kx, in), out].
        let conv = |w: &[f32], c_in: usize, c_out: usize| {
            let mut out = vec![0.0; 9 * c_in * c_out];
            for o in 0..c_out {
                for c in 0..c_in {
                    for k in 0..9 {
                        out[(k * c_in + c) * c_out + o] = w[(o * c_in + c) * 9 + k];
                    }
                }
            }
            out
        };
        // burn flattens channels-first (c, y, x); our features are (y, x, c).
        let mut w3 = vec![0.0; FEATURES * HIDDEN];
        for c in 0..C2 {
            for p in 0..SP * SP {
                let from = (c * SP * SP + p) * HIDDEN;
                let to = (p * C2 + c) * HIDDEN;
                w3[to..to + HIDDEN].copy_from_slice(&raw.dense1.0[from..from + HIDDEN]);
            }
        }
        CpuNet {
            w1: conv(&raw.conv1.0, 1, C1),
            b1: raw.conv1.1,
            w2: conv(&raw.conv2.0, C1, C2),
            b2: raw.conv2.1,
            w3,
            b3: raw.dense1.1,
            w4: raw.dense2.0,
            b4: raw.dense2.1,
        }
    }

    /// Logits, [n × 10], of `pixels` (already scaled to [0, 1], 784 per image).
    pub fn logits(&self, pixels: &[f32]) -> Vec<f32> {
        let n = pixels.len() / PIXELS;
        let mut features = vec![0.0f32; n * FEATURES];
        features
            .par_chunks_mut(GROUP * FEATURES)
            .zip(pixels.par_chunks(GROUP * PIXELS))
            .for_each(|(out, images)| self.features(images, out));

        let hidden = dense(
            &features,
            &self.w3,
            &self.b3,
            true,
            rayon::current_num_threads(),
        );
        dense(&hidden, &self.w4, &self.b4, false, 1)
    }

    /// conv1 + ReLU, conv2 + ReLU, 2x2 max-pool for up to GROUP images, into `out`
    /// (9216 features per image, channels-last).
    fn features(&self, images: &[f32], out: &mut [f32]) {
        let g = images.len() / PIXELS;
        // conv1: a 3x3 window of the single input channel per output pixel.
        let mut cols = vec![0.0f32; g * S1 * S1 * 9];
        for (img, dst) in images.chunks(PIXELS).zip(cols.chunks_mut(S1 * S1 * 9)) {
            for y in 0..S1 {
                for x in 0..S1 {
                    let row = &mut dst[(y * S1 + x) * 9..][..9];
                    for ky in 0..3 {
                        let src = &img[(y + ky) * COLS + x..][..3];
                        row[ky * 3..ky * 3 + 3].copy_from_slice(src);
                    }
                }
            }
        }
        let mut a1 = vec![0.0f32; g * S1 * S1 * C1];
        matmul(&mut a1, &cols, &self.w1, (g * S1 * S1, 9, C1), false, 1);
        for px in a1.chunks_mut(C1) {
            for (v, b) in px.iter_mut().zip(&self.b1) {
                *v = (*v + b).max(0.0);
            }
        }

        // conv2: each output pixel reads three runs of 3 x 32 contiguous channels-last values.
        let k2 = 9 * C1;
        let mut cols = vec![0.0f32; g * S2 * S2 * k2];
        for (act, dst) in a1.chunks(S1 * S1 * C1).zip(cols.chunks_mut(S2 * S2 * k2)) {
            for y in 0..S2 {
                for x in 0..S2 {
                    let row = &mut dst[(y * S2 + x) * k2..][..k2];
                    for ky in 0..3 {
                        let src = &act[((y + ky) * S1 + x) * C1..][..3 * C1];
                        row[ky * 3 * C1..(ky + 1) * 3 * C1].copy_from_slice(src);
                    }
                }
            }
        }
        let mut a2 = vec![0.0f32; g * S2 * S2 * C2];
        matmul(&mut a2, &cols, &self.w2, (g * S2 * S2, k2, C2), false, 1);

        // Bias and ReLU commute with max, so they are applied once per pooled value.
        for (act, dst) in a2.chunks(S2 * S2 * C2).zip(out.chunks_mut(FEATURES)) {
            for py in 0..SP {
                for px in 0..SP {
                    let at = |y: usize, x: usize| &act[(y * S2 + x) * C2..][..C2];
                    let (y, x) = (2 * py, 2 * px);
                    let quad = [at(y, x), at(y, x + 1), at(y + 1, x), at(y + 1, x + 1)];
                    let cell = &mut dst[(py * SP + px) * C2..][..C2];
                    for (c, v) in cell.iter_mut().enumerate() {
                        let m = quad[0][c].max(quad[1][c]).max(quad[2][c]).max(quad[3][c]);
                        *v = (m + self.b2[c]).max(0.0);
                    }
                }
            }
        }
    }
}

/// A dense layer over rows of `input`: `input · weights + bias`, then ReLU if asked.
fn dense(input: &[f32], weights: &[f32], bias: &[f32], relu: bool, threads: usize) -> Vec<f32> {
    let (outputs, inputs) = (bias.len(), weights.len() / bias.len());
    let rows = input.len() / inputs;
    let mut out = vec![0.0f32; rows * outputs];
    matmul(
        &mut out,
        input,
        weights,
        (rows, inputs, outputs),
        false,
        threads,
    );
    for row in out.chunks_mut(outputs) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
            if relu {
                *v = v.max(0.0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::data::batch::images_tensor;

    #[test]
    fn logits_match_burns_forward_pass() {
        let device = Device::flex();
        let model = Model::new(&device, 7);
        // Biases are zero in a fresh model; give them values so their layouts are tested too.
        let model = model.with_random_biases(11, &device);
        let mut rng = StdRng::seed_from_u64(3);
        // 19 images: two full groups and a partial one.
        let pixels: Vec<f32> = (0..19 * PIXELS).map(|_| rng.random::<f32>()).collect();
        let want: Vec<f32> = model
            .forward(images_tensor(pixels.clone(), &device))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let got = CpuNet::from_model(&model).logits(&pixels);
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * scale.max(1.0), "{g} vs {w}");
        }
    }
}
