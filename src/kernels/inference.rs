//! The network's forward pass without dropout (evaluation, validation), as im2col + GEMM in
//! channels-last layout, parallel over groups of images.
//!
//! burn's flex backend runs this pass at about 1,200 images/s on two cores, mostly outside
//! its GEMM; here the convolutions are one GEMM each per group of images, bias and ReLU are
//! fused into the copy that follows, and nothing is allocated per layer per image.

use rayon::prelude::*;

use super::ConvLayout::{Burn, Gemm};
use super::{C1, C2, FEATURES, GROUP, S1, dense, features, relayout};
use crate::data::idx::PIXELS;
use crate::model::Model;

/// The trained weights, laid out for the kernels.
pub struct CpuNet {
    /// [9 × 32]: row (ky, kx), column output channel.
    w1: Vec<f32>,
    b1: Vec<f32>,
    /// [288 × 64]: row (ky, kx, input channel), column output channel.
    w2: Vec<f32>,
    b2: Vec<f32>,
    /// [9216 × 128], burn's own layout.
    w3: Vec<f32>,
    b3: Vec<f32>,
    /// [128 × 10].
    w4: Vec<f32>,
    b4: Vec<f32>,
}

impl CpuNet {
    pub fn from_model(model: &Model) -> CpuNet {
        let raw = model.raw_weights();
        CpuNet {
            w1: relayout(&raw.conv1.0, 1, C1, Burn, Gemm),
            b1: raw.conv1.1,
            w2: relayout(&raw.conv2.0, C1, C2, Burn, Gemm),
            b2: raw.conv2.1,
            w3: raw.dense1.0,
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
    /// (9216 features per image).
    fn features(&self, images: &[f32], out: &mut [f32]) {
        let mut a1 = vec![0.0f32; images.len() / PIXELS * S1 * S1 * C1];
        let conv1 = (self.w1.as_slice(), self.b1.as_slice());
        let conv2 = (self.w2.as_slice(), self.b2.as_slice());
        features(images, conv1, conv2, &mut a1, out, None);
    }
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
