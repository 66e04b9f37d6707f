//! The network's one forward pass on the CPU, with dropout (training) or without (validation,
//! `eval`, `predict`): channels-last convolutions, parallel over groups of images.
//!
//! conv1 is a direct loop, conv2 is Winograd's F(4x4, 3x3) fused with the max-pool, bias and
//! ReLU (`winograd.rs`), the dense layers are GEMMs over the batch or, for the first where it
//! pays, a walk over its nonzero features (`sparse.rs`; in the bf16 evaluation on a processor
//! with AMX, the first on its tiles: `amx.rs`), and the large buffers are reused
//! from pass to pass. The same pass in plain loops, layer by layer:
//! [`crate::reference::forward`].

use std::borrow::Cow;

use rayon::prelude::*;

use super::ConvLayout::{Burn, Gemm};
use super::parts::Laps;
use super::{
    Buffer, C1, FEATURES, GROUP, amx, array_mut, bias_relu, conv1, dense, features, relayout,
    reuse, spare, sparse, winograd,
};
use crate::network::{DROPOUT_HIDDEN, DROPOUT_POOLED, HIDDEN, PIXELS, Params};
use crate::rng::splitmix64;

/// The two layers dropout acts on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layer {
    /// The 9216 pooled features of each image, in burn's flatten order.
    Pooled,
    /// The 128 outputs of the first dense layer.
    Hidden,
}

impl Layer {
    pub(super) fn rate(self) -> f32 {
        match self {
            Layer::Pooled => DROPOUT_POOLED as f32,
            Layer::Hidden => DROPOUT_HIDDEN as f32,
        }
    }

    /// Where the layer's units start in the hash's position space: far apart, so the two
    /// layers never share a draw whatever the batch size.
    fn first_position(self) -> u64 {
        match self {
            Layer::Pooled => 0,
            Layer::Hidden => 1 << 48,
        }
    }
}

/// Dropout for one step. Each unit's fate depends only on the seed, the layer and the unit's
/// position in the batch, so masks are drawn where they are applied, by whichever thread
/// holds the values, and the same seed drops the same units however the work is split.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dropout {
    /// Keep every unit, unscaled.
    Off,
    /// Drop at Keras's rates, from this seed; the kept units are scaled by 1/(1 - rate).
    Seeded(u64),
}

impl Dropout {
    /// What a kept unit of `layer` is multiplied by.
    pub fn scale(self, layer: Layer) -> f32 {
        match self {
            Dropout::Off => 1.0,
            Dropout::Seeded(_) => 1.0 / (1.0 - layer.rate()),
        }
    }

    /// Multiplies `values`, the units of `layer` from position `first` of the batch on, by
    /// their masks: 0 or [`Dropout::scale`]. `first` and the length are multiples of 4.
    pub fn apply(self, layer: Layer, first: usize, values: &mut [f32]) {
        if let Dropout::Seeded(seed) = self {
            assert!(first.is_multiple_of(4) && values.len().is_multiple_of(4));
            let position = layer.first_position() + (first / 4) as u64;
            apply_dropout(seed, position, layer.rate(), values);
        }
    }

    /// The masks themselves, for `images` images: [images × 9216] and [images × 128].
    pub fn masks(self, images: usize) -> (Vec<f32>, Vec<f32>) {
        let mut pooled = vec![1.0; images * FEATURES];
        let mut hidden = vec![1.0; images * HIDDEN];
        self.apply(Layer::Pooled, 0, &mut pooled);
        self.apply(Layer::Hidden, 0, &mut hidden);
        (pooled, hidden)
    }
}

/// Units per pass of [`apply_dropout`]: the hashes of 16 quads fill two 512-bit vectors, and
/// their 16-bit fields then map onto the units lane for lane. Four quads a pass, each unit's
/// bits shifted out of its quad's hash (which the compiler did with gathers), a batch's
/// pooled units took ~1 ms of one thread with AVX-512; this way ~0.14 (~0.24 with AVX2).
const DROPOUT_BLOCK: usize = 64;

simd_fn! {
    /// Each group of four units shares one 64-bit hash of (seed, position): SplitMix64, whose
    /// bits are independent and well mixed. A unit is dropped when its 16 bits fall below
    /// `rate` × 2¹⁶ (0.35 becomes 0.350006).
    fn apply_dropout(seed: u64, first_quad: u64, rate: f32, values: &mut [f32]) {
        let quads = (DROPOUT_BLOCK / 4) as u64;
        let last = first_quad + (values.len() / DROPOUT_BLOCK) as u64 * quads;
        let mut blocks = values.chunks_exact_mut(DROPOUT_BLOCK);
        for (b, block) in (&mut blocks).enumerate() {
            mask(seed, first_quad + quads * b as u64, rate, array_mut(block, 0));
        }
        // The last few quads through a whole block's pass: the hashes past them go unused.
        let rest = blocks.into_remainder();
        if !rest.is_empty() {
            let mut block = [0.0; DROPOUT_BLOCK];
            block[..rest.len()].copy_from_slice(rest);
            mask(seed, last, rate, &mut block);
            rest.copy_from_slice(&block[..rest.len()]);
        }
    }
}

/// Multiplies the block of units from quad `first` on by their masks: 0 where a unit's 16
/// bits (bits 16 (i % 4) on of quad i / 4's hash) fall below `rate` × 2¹⁶, else 1/(1 - rate).
#[inline(always)]
fn mask(seed: u64, first: u64, rate: f32, units: &mut [f32; DROPOUT_BLOCK]) {
    let scale = 1.0 / (1.0 - rate);
    let threshold = (f64::from(rate) * 65536.0).round() as u32;
    let mut z = [0u64; DROPOUT_BLOCK / 4];
    for (q, z) in z.iter_mut().enumerate() {
        let quad = first + q as u64;
        *z =
            splitmix64(seed.wrapping_add(quad.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    }
    // Unit i's 16 bits are the i-th 16-bit field of the hashes, low fields first.
    let bits: [u16; DROPOUT_BLOCK] = bytemuck::cast(z.map(u64::to_le));
    for (v, bits) in units.iter_mut().zip(bits) {
        *v *= if u32::from(u16::from_le(bits)) >= threshold {
            scale
        } else {
            0.0
        };
    }
}

/// The parameters, with the convolution weights laid out for the kernels.
pub struct Net<'a> {
    params: &'a Params,
    /// conv1's weight as [9 × 32]: row (ky, kx), column output channel.
    w1: Vec<f32>,
    /// conv2's weight in Winograd's transformed domain (see [`winograd::Filters`]).
    u2: Cow<'a, winograd::Filters>,
    /// The first dense layer's weight in bf16 for AMX, where the bf16 pass runs on it.
    dense1: Option<&'a amx::DenseWeights>,
}

/// What the bf16 evaluation multiplies by, made once per model: conv2's transformed filters
/// in bf16 and, on processors with AMX, the first dense layer's weight in bf16 too.
pub struct Bf16Weights {
    u2: winograd::Filters,
    dense1: Option<amx::DenseWeights>,
}

impl Bf16Weights {
    /// `None` where this processor lacks AVX512_BF16.
    pub fn new(params: &Params) -> Option<Bf16Weights> {
        let u2 = winograd::Filters::bf16(&params.conv2.weight)?;
        let amx =
            matches!(u2, winograd::Filters::Bf16 { unit, .. } if unit == winograd::bf16::Unit::Amx);
        let dense1 = amx.then(|| amx::DenseWeights::pack(&params.dense1.weight, FEATURES, HIDDEN));
        Some(Bf16Weights { u2, dense1 })
    }
}

/// One forward pass.
pub(super) struct Pass {
    /// The pooled features after dropout, [n × 9216] in burn's flatten order: zero where
    /// either ReLU or dropout stopped the gradient.
    pub features: Buffer,
    /// The first dense layer's outputs after ReLU and dropout, [n × 128].
    pub hidden: Vec<f32>,
    /// [n × 10].
    pub logits: Vec<f32>,
    /// What the backward pass needs besides, when asked for.
    pub trace: Option<Trace>,
}

/// What the backward pass needs of the convolutions besides the features. Not conv1's maps:
/// the backward pass computes them again, a group at a time, rather than read 86 KB an image
/// back from memory.
pub(super) struct Trace {
    /// Which of its window's four values each pooled feature came from.
    pub winner: Vec<u8>,
}

impl<'a> Net<'a> {
    pub fn new(params: &'a Params) -> Net<'a> {
        let u2 = Cow::Owned(winograd::Filters::f32(&params.conv2.weight));
        Net::with(params, u2, None)
    }

    /// [`Net::new`] with conv2's products in bfloat16 (f32 sums), and on AMX the first dense
    /// layer's too: `weights`, made from `params`. For evaluation only: faster, and not the
    /// f32 path's bytes.
    pub fn bf16(params: &'a Params, weights: &'a Bf16Weights) -> Net<'a> {
        Net::with(params, Cow::Borrowed(&weights.u2), weights.dense1.as_ref())
    }

    fn with(
        params: &'a Params,
        u2: Cow<'a, winograd::Filters>,
        dense1: Option<&'a amx::DenseWeights>,
    ) -> Net<'a> {
        let w1 = relayout(&params.conv1.weight, 1, C1, Burn, Gemm);
        Net {
            params,
            w1,
            u2,
            dense1,
        }
    }

    /// The parameters this pass runs with.
    pub(super) fn params(&self) -> &'a Params {
        self.params
    }

    /// conv1 + ReLU of `images` into channels-last maps `a1` [(image, y, x) × 32], as the pass
    /// computes them: how the backward pass gets back the maps the pass did not keep.
    pub(super) fn conv1_maps(&self, images: &[f32], a1: &mut [f32]) {
        conv1(images, &self.w1, &self.params.conv1.bias, a1);
    }

    /// Logits, [n × 10], of `pixels` (scaled to [0, 1], 784 per image), without dropout.
    pub fn logits(&self, pixels: &[f32]) -> Vec<f32> {
        let pass = self.run(pixels, Dropout::Off, false);
        spare(pass.features);
        pass.logits
    }

    /// The forward pass with `dropout`; `trace` keeps what the backward pass needs.
    pub(super) fn run(&self, pixels: &[f32], dropout: Dropout, trace: bool) -> Pass {
        let n = pixels.len() / PIXELS;
        let p = self.params;
        // Every value of this is written below.
        let mut pooled = reuse(n * FEATURES);
        // Convolutions and the first dropout, for the group-th group of images.
        let conv = |group: usize, images: &[f32], out: &mut [f32], winner| {
            let conv1 = (self.w1.as_slice(), p.conv1.bias.as_slice());
            let conv2 = (self.u2.as_ref(), p.conv2.bias.as_slice());
            features(images, conv1, conv2, out, winner);
            dropout.apply(Layer::Pooled, group * GROUP * FEATURES, out);
        };
        let mut laps = Laps::start();
        let images = pixels.par_chunks(GROUP * PIXELS);
        let outputs = pooled.par_chunks_mut(GROUP * FEATURES);
        let trace = if trace {
            let mut winner = vec![0u8; n * FEATURES];
            images
                .zip(outputs)
                .zip(winner.par_chunks_mut(GROUP * FEATURES))
                .enumerate()
                .for_each(|(group, ((images, out), winner))| {
                    conv(group, images, out, Some(winner))
                });
            Some(Trace { winner })
        } else {
            images
                .zip(outputs)
                .enumerate()
                .for_each(|(group, (images, out))| conv(group, images, out, None));
            None
        };
        laps.lap("forward: convolutions, pooling, dropout");
        // Dense + ReLU, dropout, dense.
        let threads = rayon::current_num_threads();
        let (d1, d2) = (&p.dense1, &p.dense2);
        let mut hidden = match self.dense1 {
            Some(w) => amx::dense(&pooled, w, &d1.bias, true),
            // ReLU, the max-pool and dropout leave most features at zero (about half of them
            // without dropout), and a walk over the others gives the GEMM's bytes in less
            // time where that pays.
            None if sparse::forward_pays(dropout != Dropout::Off) => {
                let mut out = vec![0.0f32; n * HIDDEN];
                sparse::forward(&pooled, &d1.weight, &mut out);
                bias_relu(&mut out, &d1.bias, true);
                out
            }
            None => dense(&pooled, &d1.weight, &d1.bias, true, threads),
        };
        dropout.apply(Layer::Hidden, 0, &mut hidden);
        let logits = dense(&hidden, &d2.weight, &d2.bias, false, 1);
        laps.lap("forward: dense layers");
        Pass {
            features: pooled,
            hidden,
            logits,
            trace,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::data::batch::images_tensor;
    use crate::engine::modules::Model;

    #[test]
    fn logits_match_burns_forward_pass() {
        let device = Device::flex();
        // Biases are zero in a fresh model; give them values so their layouts are tested too.
        let params = Params::glorot(7).with_random_biases(11);
        let model = Model::from_params(&params, &device);
        let mut rng = StdRng::seed_from_u64(3);
        // 19 images: full groups and a partial one.
        let pixels: Vec<f32> = (0..19 * PIXELS).map(|_| rng.random::<f32>()).collect();
        let want: Vec<f32> = model
            .forward(images_tensor(pixels.clone(), &device))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let got = Net::new(&params).logits(&pixels);
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * scale.max(1.0), "{g} vs {w}");
        }
        // The reference's forward pass agrees, and so does the pass with dropout on the
        // reference's masks.
        let want = crate::reference::forward(&params, &pixels, None).logits;
        crate::reference::testing::assert_close(&got, &want, 1e-5, "logits");
        let (pooled, hidden) = Dropout::Seeded(4).masks(19);
        let masks = crate::reference::Masks {
            pooled: &pooled,
            hidden: &hidden,
        };
        let want = crate::reference::forward(&params, &pixels, Some(masks)).logits;
        let dropped = Net::new(&params)
            .run(&pixels, Dropout::Seeded(4), false)
            .logits;
        crate::reference::testing::assert_close(&dropped, &want, 1e-5, "logits with dropout");
        // The pass that keeps its trace computes the same logits.
        let traced = Net::new(&params).run(&pixels, Dropout::Off, true);
        assert_eq!(traced.logits, got);
        assert_eq!(traced.trace.unwrap().winner.len(), 19 * FEATURES);
    }

    /// Each unit is kept or dropped by its own 16 bits of its quad's hash, wherever a slice
    /// starts and whatever its length, in every instruction set.
    #[test]
    fn each_unit_is_dropped_by_its_own_bits() {
        let (seed, layer) = (7, Layer::Hidden);
        let (rate, scale) = (layer.rate(), Dropout::Seeded(seed).scale(layer));
        let threshold = (f64::from(rate) * 65536.0).round() as u64;
        let kept = |unit: usize| {
            let quad = layer.first_position() + (unit / 4) as u64;
            let z = splitmix64(seed.wrapping_add((quad + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            (z >> (16 * (unit % 4))) & 0xFFFF >= threshold
        };
        // Whole passes of 64 units, a slice's last few units, both.
        for (first, len) in [(0, 64), (4, 36), (20, 8), (48, 100), (8, 192)] {
            let runs = crate::kernels::on_every_instruction_set(|| {
                let mut values = vec![1.0; len];
                Dropout::Seeded(seed).apply(layer, first, &mut values);
                values
            });
            for (set, values) in runs {
                for (i, &v) in values.iter().enumerate() {
                    let want = if kept(first + i) { scale } else { 0.0 };
                    assert_eq!(v, want, "unit {} of a slice from {first}, {set}", first + i);
                }
                assert!(values.contains(&0.0) || len < 16);
            }
        }
    }
}
