//! The tests that hold our kernels, and the reference they are tested against, to burn's own
//! ops and autodiff: they need burn, which the kernels crate does not build, so they live
//! here, in every `cargo test` of the app.

use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::data::batch::images_tensor;
use crate::engine::modules::Model;
use crate::kernels::dropout::Dropout;
use crate::kernels::forward::Net;
use crate::network::{
    CONV1_FILTERS as C1, CONV2_FILTERS as C2, FEATURES, HIDDEN, Layer as Weights, NUM_CLASSES,
    PIXELS, Params,
};
use crate::reference::{self, Masks, testing::assert_close};

fn tensor<const D: usize>(values: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device).require_grad()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The same step in burn's own ops and autodiff: (mean loss, gradients in burn layouts).
fn burn_step(w: &Params, pixels: &[f32], labels: &[u8], dropout: Dropout) -> (f64, Params) {
    let device = Device::flex().autodiff();
    let n = labels.len();
    let w1 = tensor(&w.conv1.weight, [C1, 1, 3, 3], &device);
    let b1 = tensor(&w.conv1.bias, [C1], &device);
    let w2 = tensor(&w.conv2.weight, [C2, C1, 3, 3], &device);
    let b2 = tensor(&w.conv2.bias, [C2], &device);
    let w3 = tensor(&w.dense1.weight, [FEATURES, HIDDEN], &device);
    let b3 = tensor(&w.dense1.bias, [HIDDEN], &device);
    let w4 = tensor(&w.dense2.weight, [HIDDEN, NUM_CLASSES], &device);
    let b4 = tensor(&w.dense2.bias, [NUM_CLASSES], &device);
    let (keep1, keep2) = dropout.masks(n);
    let keep1 = Tensor::<2>::from_data(TensorData::new(keep1, [n, FEATURES]), &device);
    let keep2 = Tensor::<2>::from_data(TensorData::new(keep2, [n, HIDDEN]), &device);

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
        Params::from_layers(
            [
                (g4(&w1), g1(&b1)),
                (g4(&w2), g1(&b2)),
                (g2(&w3), g1(&b3)),
                (g2(&w4), g1(&b4)),
            ]
            .map(|(weight, bias)| Weights { weight, bias }),
        ),
    )
}

/// The reference itself is right: its step is burn's autodiff's, with dropout.
#[test]
fn the_reference_step_is_burns_autodiff() {
    // 5 images: two full groups of the kernels and a partial one.
    let n = 5;
    let mut rng = StdRng::seed_from_u64(3);
    let pixels: Vec<f32> = (0..n * PIXELS).map(|_| rng.random::<f32>()).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
    let w = Params::glorot(7).with_random_biases(11);
    let dropout = Dropout::Seeded(5);
    let (pooled, hidden) = dropout.masks(n);
    let masks = Masks {
        pooled: &pooled,
        hidden: &hidden,
    };
    let (loss, _, got) = reference::step(&w, &pixels, &labels, Some(masks));
    let (want_loss, want) = burn_step(&w, &pixels, &labels, dropout);
    assert!(
        (loss - want_loss).abs() <= 1e-5 * want_loss,
        "{loss} vs {want_loss}"
    );
    for ((name, _, g), (_, _, w)) in got.named().into_iter().zip(want.named()) {
        assert_close(g, w, 2e-4, name);
    }
}

/// The kernels' forward pass is burn's (and the reference's: the kernels crate's
/// `logits_match_the_reference_forward_pass`).
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
}
