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
use super::choice::{self, Path, Question};
use super::dropout::{Dropout, Layer};
use super::parts::Laps;
use super::winograd::bf16::Unit;
use super::{
    Buffer, C1, FEATURES, GROUP, S1, amx, bias_relu, conv1, dense, relayout, reuse, spare, sparse,
    winograd,
};
use crate::network::{HIDDEN, PIXELS, Params};

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
    /// On the unit [`choice`] picks for this processor; `None` where it lacks AVX512_BF16.
    pub fn new(params: &Params) -> Option<Bf16Weights> {
        let unit = match choice::path(Question::Bf16)? {
            Path::Amx => Unit::Amx,
            _ => Unit::Avx512,
        };
        Bf16Weights::on(params, unit)
    }

    /// On `unit`; `None` where this processor lacks it.
    pub(super) fn on(params: &Params, unit: Unit) -> Option<Bf16Weights> {
        let u2 = winograd::Filters::bf16_on(&params.conv2.weight, unit)?;
        let amx = unit == Unit::Amx;
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

    /// conv1 + ReLU of `images` into channels-last maps `a1_nhwc` [(image, y, x) × 32], as the pass
    /// computes them: how the backward pass gets back the maps the pass did not keep.
    pub(super) fn conv1_maps(&self, images: &[f32], a1_nhwc: &mut [f32]) {
        conv1(images, &self.w1, &self.params.conv1.bias, a1_nhwc);
    }

    /// Logits, [n × 10], of `pixels` (scaled to [0, 1], 784 per image), without dropout.
    /// The reference: `reference::forward`.
    pub fn logits(&self, pixels: &[f32]) -> Vec<f32> {
        let pass = self.run(pixels, Dropout::Off, false);
        spare(pass.features);
        pass.logits
    }

    /// The forward pass with `dropout`; `trace` keeps what the backward pass needs. The
    /// reference: `reference::forward` with the same masks.
    pub(super) fn run(&self, pixels: &[f32], dropout: Dropout, trace: bool) -> Pass {
        // Settled before the pass's buffers exist: the first time, its timing trial's own
        // buffers then add nothing to the process's peak memory.
        let walk = walks(dropout);
        let mut laps = Laps::start();
        let (features, trace) = self.convolutions(pixels, dropout, trace);
        laps.lap("forward: convolutions, pooling, dropout");
        let (hidden, logits) = self.dense_layers(&features, dropout, walk);
        laps.lap("forward: dense layers");
        Pass {
            features,
            hidden,
            logits,
            trace,
        }
    }

    /// Convolutions, pooling and the first dropout: the pooled features [n × 9216], in
    /// burn's order, and with `trace` which of each 2x2 window won. Parallel over groups of
    /// [`GROUP`] images.
    fn convolutions(
        &self,
        pixels: &[f32],
        dropout: Dropout,
        trace: bool,
    ) -> (Buffer, Option<Trace>) {
        let (n, p) = (pixels.len() / PIXELS, self.params);
        // Every value of this is written below.
        let mut pooled = reuse(n * FEATURES);
        let mut winner = trace.then(|| vec![0u8; n * FEATURES]);
        let winners: Vec<Option<&mut [u8]>> = match winner.as_mut() {
            Some(w) => w.chunks_mut(GROUP * FEATURES).map(Some).collect(),
            None => (0..n.div_ceil(GROUP)).map(|_| None).collect(),
        };
        let conv1 = (self.w1.as_slice(), p.conv1.bias.as_slice());
        let conv2 = (self.u2.as_ref(), p.conv2.bias.as_slice());
        pixels
            .par_chunks(GROUP * PIXELS)
            .zip(pooled.par_chunks_mut(GROUP * FEATURES))
            .zip(winners)
            .enumerate()
            .for_each(|(group, ((images, out), winner))| {
                features(images, conv1, conv2, out, winner);
                dropout.apply(Layer::Pooled, group * GROUP * FEATURES, out);
            });
        (pooled, winner.map(|winner| Trace { winner }))
    }

    /// Dense + ReLU, dropout, dense: the hidden layer [n × 128] after its dropout, and the
    /// logits [n × 10]; `walk`: the first layer's product walks the nonzero features.
    fn dense_layers(&self, features: &[f32], dropout: Dropout, walk: bool) -> (Vec<f32>, Vec<f32>) {
        let n = features.len() / FEATURES;
        let (d1, d2) = (&self.params.dense1, &self.params.dense2);
        let mut hidden = match self.dense1 {
            Some(w) => amx::dense(features, w, &d1.bias, true),
            // ReLU, the max-pool and dropout leave most features at zero (about half of them
            // without dropout), and a walk over the others gives the GEMM's bytes in less
            // time where that pays.
            None if walk => {
                let mut out = vec![0.0f32; n * HIDDEN];
                sparse::forward(features, &d1.weight, &mut out);
                bias_relu(&mut out, &d1.bias, true);
                out
            }
            None => dense(
                features,
                &d1.weight,
                &d1.bias,
                true,
                rayon::current_num_threads(),
            ),
        };
        dropout.apply(Layer::Hidden, 0, &mut hidden);
        let logits = dense(&hidden, &d2.weight, &d2.bias, false, 1);
        (hidden, logits)
    }
}

/// Whether the first dense layer's product walks the nonzero features: in training by
/// [`sparse::pays`]'s rule, in evaluation as timing decided ([`choice`]).
fn walks(dropout: Dropout) -> bool {
    match dropout {
        Dropout::Seeded(_) => sparse::pays(),
        Dropout::Off => choice::path(Question::Dense1) == Some(Path::Walk),
    }
}

/// The convolutional half of the forward pass for a group of images, shared by evaluation
/// and training: conv1 + ReLU into channels-last maps [(image, y, x) × 32], kept only while
/// conv2 reads them, then conv2, max-pool, bias and ReLU into `pooled` (see
/// [`winograd::conv2_pool`], which also explains `winner`). `w1` is in the GEMM layout, `u2`
/// conv2's transformed filters.
fn features(
    images: &[f32],
    (w1, b1): (&[f32], &[f32]),
    (u2, b2): (&winograd::Filters, &[f32]),
    pooled: &mut [f32],
    mut winner: Option<&mut [u8]>,
) {
    let maps = images.len() / PIXELS * S1 * S1 * C1;
    let mut space = reuse(maps + winograd::SCRATCH);
    let (a1_nhwc, scratch) = space.split_at_mut(maps);
    conv1(images, w1, b1, a1_nhwc);
    for (i, (a1_nhwc, pooled)) in a1_nhwc
        .chunks(S1 * S1 * C1)
        .zip(pooled.chunks_mut(FEATURES))
        .enumerate()
    {
        let winner = winner
            .as_deref_mut()
            .map(|w| &mut w[i * FEATURES..][..FEATURES]);
        winograd::conv2_pool(a1_nhwc, u2, b2, scratch, pooled, winner);
    }
    spare(space);
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::reference::{self, Masks, testing::assert_close};

    /// The pass against the reference's, without dropout, with it (on the reference's masks),
    /// and keeping its trace. (Against burn's own forward pass: the app crate's
    /// `logits_match_burns_forward_pass`.)
    #[test]
    fn logits_match_the_reference_forward_pass() {
        // Biases are zero in a fresh model; give them values so their layouts are tested too.
        let params = Params::glorot(7).with_random_biases(11);
        let mut rng = StdRng::seed_from_u64(3);
        // 19 images: full groups and a partial one.
        let pixels: Vec<f32> = (0..19 * PIXELS).map(|_| rng.random::<f32>()).collect();
        let got = Net::new(&params).logits(&pixels);
        let want = reference::forward(&params, &pixels, None).logits;
        assert_close(&got, &want, 1e-5, "logits");
        let (pooled, hidden) = Dropout::Seeded(4).masks(19);
        let masks = Masks {
            pooled: &pooled,
            hidden: &hidden,
        };
        let want = reference::forward(&params, &pixels, Some(masks)).logits;
        let dropped = Net::new(&params)
            .run(&pixels, Dropout::Seeded(4), false)
            .logits;
        assert_close(&dropped, &want, 1e-5, "logits with dropout");
        // The pass that keeps its trace computes the same logits.
        let traced = Net::new(&params).run(&pixels, Dropout::Off, true);
        assert_eq!(traced.logits, got);
        assert_eq!(traced.trace.unwrap().winner.len(), 19 * FEATURES);
    }
}
