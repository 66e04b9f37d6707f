//! One training step on the CPU: the forward pass with dropout, softmax cross-entropy, and
//! the gradient of every parameter, in burn's parameter layouts.
//!
//! [`step`] reads in the network's order: `Net::run` forward, `cross_entropy`,
//! `dense_backward` (both dense layers and the hidden dropout), then the convolutions'
//! backward pass per group of images (`conv_backward.rs`: max-pool, dropout, ReLU and
//! conv2, walking only the pooled cells that pass a gradient, then ReLU and conv1).
//! Each is tested against its layers in [`crate::reference`], and the whole step against
//! [`crate::reference::step`].
//!
//! Deterministic: groups are fixed by the batch, each group's partial gradients are summed in
//! group order, and dropout masks are a function of (seed, layer, position) only, so the same
//! seed gives the same model whatever the thread count's timing.

use super::ConvLayout::{Burn, Gemm, Rows};
use super::conv_backward::{conv_backward, split_partial};
use super::dropout::{Dropout, Layer};
use super::forward::{Net, Pass};
use super::parts::Laps;
use super::{Buffer, C1, C2, FEATURES, Stored, matmul_stored, relayout, reuse, spare, sparse};
use crate::metrics;
use crate::network::{HIDDEN, Layer as Weights, NUM_CLASSES, PIXELS, Params};

/// What one step yields: the batch's mean loss, how many it classified right (before the
/// update, as Keras counts), and the gradient of the mean loss.
pub struct Step {
    pub loss: f64,
    pub correct: usize,
    pub grads: Params,
}

/// The forward and backward pass of the mean softmax cross-entropy of `labels` over `pixels`
/// (scaled to [0, 1], 784 per image), at parameters `w`, with `dropout`. The reference:
/// `reference::step`.
pub fn step(w: &Params, pixels: &[f32], labels: &[u8], dropout: Dropout) -> Step {
    let mut grads = Params::zeros();
    let (loss, correct) = step_into(w, pixels, labels, dropout, &mut grads);
    Step {
        loss,
        correct,
        grads,
    }
}

/// [`step`] into `grads`, returning the loss and how many were right. The first dense layer's
/// weight gradient (4.7 MB) is written over in place: a new one each step was cleared first
/// (~0.25 ms), and freeing it each step was all that kept the allocator from handing the
/// step's other buffers back to the system and faulting them in again.
pub fn step_into(
    w: &Params,
    pixels: &[f32],
    labels: &[u8],
    dropout: Dropout,
    grads: &mut Params,
) -> (f64, usize) {
    assert_eq!(pixels.len(), labels.len() * PIXELS);
    // Parts of the step for `parts` (the forward and conv backward passes lap their own).
    let mut laps = Laps::start();
    let net = Net::new(w);
    laps.lap("conv2's filter transform");
    let pass = net.run(pixels, dropout, true);
    laps = Laps::start();
    let (loss, correct, dlogits) = cross_entropy(&pass.logits, labels);
    let dense = dense_backward(w, &pass, &dlogits, dropout, &mut grads.dense1.weight);
    laps.lap("loss, dense layers' backward pass");
    let trace = pass.trace.as_ref().expect("a traced pass");
    let mut conv = conv_backward(&net, pixels, (&pass, trace), &dense.dfeatures, dropout);
    laps = Laps::start();
    spare(dense.dfeatures);
    spare(pass.features);
    let (w1, b1, w2, b2) = split_partial(&mut conv);
    grads.conv1 = Weights {
        weight: relayout(w1, 1, C1, Gemm, Burn),
        bias: b1.to_vec(),
    };
    grads.conv2 = Weights {
        weight: relayout(w2, C1, C2, Rows, Burn),
        bias: b2.to_vec(),
    };
    grads.dense1.bias = dense.dense1_bias;
    grads.dense2 = dense.dense2;
    laps.lap("gradients to burn's layouts");
    (loss, correct)
}

/// The batch's mean softmax cross-entropy, how many rows' largest logit is the label, and the
/// mean loss's gradient with respect to the logits. The reference:
/// `reference::softmax_cross_entropy` (which this computes through `metrics`' softmax, as
/// evaluation reports the loss).
fn cross_entropy(logits: &[f32], labels: &[u8]) -> (f64, usize, Vec<f32>) {
    let n = labels.len();
    let mut loss = 0f64;
    let mut dlogits = vec![0.0f32; n * NUM_CLASSES];
    let mut probs = [0f64; NUM_CLASSES];
    for ((row, d), &label) in logits
        .chunks(NUM_CLASSES)
        .zip(dlogits.chunks_mut(NUM_CLASSES))
        .zip(labels)
    {
        loss += metrics::cross_entropy(row, label);
        metrics::softmax(row, &mut probs);
        for (i, (d, p)) in d.iter_mut().zip(probs).enumerate() {
            let target = if i == usize::from(label) { 1.0 } else { 0.0 };
            *d = ((p - target) / n as f64) as f32;
        }
    }
    let correct = metrics::count_correct(logits, labels);
    (loss / n as f64, correct, dlogits)
}

/// What the dense layers' backward pass yields besides the first layer's weight gradient.
struct DenseGrads {
    /// The first layer's bias gradient, and the second layer's gradients in burn's layouts.
    dense1_bias: Vec<f32>,
    dense2: Weights,
    /// The gradient with respect to the pooled features after dropout, [n × 9216].
    dfeatures: Buffer,
}

/// The dense layers' backward pass, from the logits' gradient. The reference:
/// `reference::{dense_backward, relu_backward, dropout_backward}`.
fn dense_backward(
    w: &Params,
    forward: &Pass,
    dlogits: &[f32],
    dropout: Dropout,
    dw3: &mut [f32],
) -> DenseGrads {
    let (dense2, dh) = dense2_backward(w, forward, dlogits, dropout);
    let dfeatures = dense1_backward(w, forward, &dh, dw3);
    DenseGrads {
        dense1_bias: column_sums(&dh, HIDDEN),
        dense2,
        dfeatures,
    }
}

/// The second dense layer's gradients, and the gradient `dh` [n × 128] it passes back through
/// dropout and ReLU to the hidden layer's sums.
fn dense2_backward(
    w: &Params,
    forward: &Pass,
    dlogits: &[f32],
    dropout: Dropout,
) -> (Weights, Vec<f32>) {
    let n = dlogits.len() / NUM_CLASSES;
    let mut dw4 = vec![0.0f32; HIDDEN * NUM_CLASSES];
    let dims = (HIDDEN, n, NUM_CLASSES);
    let hidden = transposed(&forward.hidden);
    matmul_stored(&mut dw4, hidden, as_is(dlogits), dims, false, 1);
    let db4 = column_sums(dlogits, NUM_CLASSES);
    let mut dh = vec![0.0f32; n * HIDDEN];
    let dims = (n, NUM_CLASSES, HIDDEN);
    let weights = transposed(&w.dense2.weight);
    matmul_stored(&mut dh, as_is(dlogits), weights, dims, false, 1);
    // Through dropout and ReLU: a unit that is zero after both passed no gradient.
    let scale = dropout.scale(Layer::Hidden);
    for (d, &h) in dh.iter_mut().zip(&forward.hidden) {
        *d = if h > 0.0 { *d * scale } else { 0.0 };
    }
    let dense2 = Weights {
        weight: dw4,
        bias: db4,
    };
    (dense2, dh)
}

/// The first dense layer's two big products from `dh`: its weight gradient into `dw3`, and
/// the features' gradient, returned. They skip the zeros ReLU and dropout left where that
/// pays, else run as GEMMs: the same bytes either way.
fn dense1_backward(w: &Params, forward: &Pass, dh: &[f32], dw3: &mut [f32]) -> Buffer {
    let n = dh.len() / HIDDEN;
    // Written in full by its product.
    let mut dfeatures = reuse(n * FEATURES);
    if sparse::pays() {
        sparse::weight_gradient(&forward.features, dh, dw3);
        sparse::input_gradient(dh, &w.dense1.weight, &mut dfeatures);
    } else {
        // Independent and of equal size: one per thread, rather than each split across both.
        rayon::join(
            || {
                let dims = (FEATURES, n, HIDDEN);
                let features = transposed(&forward.features);
                matmul_stored(dw3, features, as_is(dh), dims, false, 1);
            },
            || {
                let dims = (n, HIDDEN, FEATURES);
                let weights = transposed(&w.dense1.weight);
                matmul_stored(&mut dfeatures, as_is(dh), weights, dims, false, 1);
            },
        );
    }
    dfeatures
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
pub(crate) mod testing {
    use super::*;
    use crate::S1;
    use crate::reference;
    use crate::reference::testing::random;

    /// A batch for the tests against the reference: 5 images (two full groups and a partial
    /// one), parameters with non-zero biases, dropout's masks.
    pub(crate) struct Case {
        pub(crate) w: Params,
        pub(crate) pixels: Vec<f32>,
        pub(crate) labels: Vec<u8>,
        pub(crate) dropout: Dropout,
        pub(crate) masks: (Vec<f32>, Vec<f32>),
    }

    impl Case {
        pub(crate) fn new(dropout: Dropout) -> Case {
            let n = 5;
            let pixels = random(n * PIXELS, (0.0, 1.0), 3);
            Case {
                w: Params::glorot(7).with_random_biases(11),
                labels: (0..n).map(|i| (i * 7 % 10) as u8).collect(),
                masks: dropout.masks(n),
                pixels,
                dropout,
            }
        }

        pub(crate) fn n(&self) -> usize {
            self.labels.len()
        }

        pub(crate) fn masks(&self) -> Option<reference::Masks<'_>> {
            Some(reference::Masks {
                pooled: &self.masks.0,
                hidden: &self.masks.1,
            })
        }

        pub(crate) fn conv1_maps(&self) -> reference::Maps {
            reference::Maps {
                images: self.n(),
                channels: C1,
                side: S1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Case;
    use super::*;
    use crate::reference;
    use crate::reference::testing::{assert_close, random};

    #[test]
    fn cross_entropy_matches_its_reference_layer() {
        let logits = random(6 * NUM_CLASSES, (-4.0, 4.0), 8);
        let labels = [0, 3, 9, 9, 1, 5];
        let (loss, correct, dlogits) = cross_entropy(&logits, &labels);
        let (want_loss, want) = reference::softmax_cross_entropy(&logits, &labels);
        assert!(
            (loss - want_loss).abs() <= 1e-9 * want_loss,
            "{loss} vs {want_loss}"
        );
        assert_close(&dlogits, &want, 1e-6, "dlogits");
        assert_eq!(correct, metrics::count_correct(&logits, &labels));
    }

    /// The dense layers' backward pass, on the reference's own forward values.
    #[test]
    fn dense_backward_matches_its_reference_layers() {
        let case = Case::new(Dropout::Seeded(5));
        let act = reference::forward(&case.w, &case.pixels, case.masks());
        let (_, dlogits) = reference::softmax_cross_entropy(&act.logits, &case.labels);
        let mut features = reuse(act.features.len());
        features.copy_from_slice(&act.features);
        let pass = Pass {
            features,
            hidden: act.hidden.clone(),
            logits: act.logits.clone(),
            trace: None,
        };
        let mut got_dw3 = vec![f32::NAN; FEATURES * HIDDEN];
        let got = dense_backward(&case.w, &pass, &dlogits, case.dropout, &mut got_dw3);
        let (dh, dw4, db4) =
            reference::dense_backward(&act.hidden, &case.w.dense2.weight, &dlogits, NUM_CLASSES);
        let dh = reference::dropout_backward(&dh, &case.masks.1);
        let dh = reference::relu_backward(&act.dense1, &dh);
        let (dfeatures, dw3, db3) =
            reference::dense_backward(&act.features, &case.w.dense1.weight, &dh, HIDDEN);
        assert_close(&got.dense2.weight, &dw4, 1e-5, "dense2 weight");
        assert_close(&got.dense2.bias, &db4, 1e-5, "dense2 bias");
        assert_close(&got_dw3, &dw3, 1e-5, "dense1 weight");
        assert_close(&got.dense1_bias, &db3, 1e-5, "dense1 bias");
        assert_close(&got.dfeatures, &dfeatures, 1e-5, "features' gradient");
    }

    /// The whole fast step against the reference step, with dropout and without.
    #[test]
    fn the_step_matches_the_reference_step() {
        for dropout in [Dropout::Seeded(5), Dropout::Off] {
            let case = Case::new(dropout);
            let masks = if dropout == Dropout::Off {
                None
            } else {
                case.masks()
            };
            let (loss, correct, want) = reference::step(&case.w, &case.pixels, &case.labels, masks);
            let got = step(&case.w, &case.pixels, &case.labels, dropout);
            assert!(
                (got.loss - loss).abs() <= 1e-6 * loss,
                "loss {} vs {loss}",
                got.loss
            );
            assert_eq!(got.correct, correct);
            for ((name, _, g), (_, _, w)) in got.grads.named().into_iter().zip(want.named()) {
                assert_close(g, w, 2e-5, name);
            }
        }
    }

    #[test]
    fn the_step_is_deterministic() {
        let w = Params::glorot(1);
        let pixels: Vec<f32> = (0..20 * PIXELS).map(|i| (i % 251) as f32 / 251.0).collect();
        let labels: Vec<u8> = (0..20).map(|i| (i % 10) as u8).collect();
        let a = step(&w, &pixels, &labels, Dropout::Seeded(9));
        let b = step(&w, &pixels, &labels, Dropout::Seeded(9));
        assert_eq!(a.loss.to_bits(), b.loss.to_bits());
        assert_eq!(a.grads.conv2.weight, b.grads.conv2.weight);
        assert_eq!(a.grads.dense1.weight, b.grads.dense1.weight);
    }

    /// The scalar, AVX2 and AVX-512 versions of our loops (those this processor can run) give
    /// the same bytes: the same operations in the same order, fused multiply-adds in each.
    #[test]
    fn every_instruction_set_computes_the_same_step() {
        let w = Params::glorot(2).with_random_biases(4);
        let pixels: Vec<f32> = (0..7 * PIXELS).map(|i| (i % 253) as f32 / 253.0).collect();
        let labels: Vec<u8> = (0..7).map(|i| (i * 3 % 10) as u8).collect();
        let steps = super::super::on_every_instruction_set(|| {
            step(&w, &pixels, &labels, Dropout::Seeded(3))
        });
        let ((_, first), rest) = steps.split_first().unwrap();
        for (arch, other) in rest {
            assert_eq!(first.loss.to_bits(), other.loss.to_bits(), "{arch}");
            assert!(
                first.grads == other.grads,
                "{arch}: gradients differ from scalar"
            );
        }
    }
}
