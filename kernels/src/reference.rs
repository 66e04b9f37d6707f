//! The network in plain loops: read this first.
//!
//! Each layer is a forward and a backward function over flat `f32` slices in burn's layouts
//! (images and maps NCHW, `[n, channels, height, width]`; convolution weights
//! `[out, in, 3, 3]`; dense weights `[inputs, outputs]`), scalar loops in the network's own
//! order, sums in `f64`. [`forward`] and [`step`] call them in order and backwards. Nothing
//! here is fast; it is what the fast kernels of this crate are tested against, layer by
//! layer and as a whole step.
//!
//! Dropout takes its masks as data (0 for a dropped unit, `1 / (1 - rate)` for a kept one), so
//! this file does not depend on how they are drawn
//! ([`Dropout::masks`](crate::dropout::Dropout::masks)).

use crate::network::{
    CONV1_FILTERS, CONV1_SIDE, CONV2_FILTERS, CONV2_SIDE, HIDDEN, KERNEL, NUM_CLASSES, POOL,
    Params, SIDE,
};

/// The shape of a convolution's input: `[images, channels, side, side]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maps {
    pub images: usize,
    pub channels: usize,
    pub side: usize,
}

impl Maps {
    pub fn len(&self) -> usize {
        self.images * self.channels * self.side * self.side
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where (image, channel, y, x) lives.
    fn at(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        ((n * self.channels + c) * self.side + y) * self.side + x
    }
}

/// A 3x3 "valid" convolution: `x` `[n, c_in, s, s]`, `weight` `[c_out, c_in, 3, 3]`, `bias`
/// `[c_out]` → `[n, c_out, s - 2, s - 2]`.
pub fn conv_forward(x: &[f32], shape: Maps, weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let (c_out, out) = (bias.len(), out_maps(shape, bias.len()));
    assert_eq!(x.len(), shape.len());
    assert_eq!(weight.len(), c_out * shape.channels * KERNEL * KERNEL);
    let mut y = vec![0.0; out.len()];
    for n in 0..shape.images {
        for o in 0..c_out {
            for oy in 0..out.side {
                for ox in 0..out.side {
                    let mut sum = f64::from(bias[o]);
                    for c in 0..shape.channels {
                        for ky in 0..KERNEL {
                            for kx in 0..KERNEL {
                                let w =
                                    weight[((o * shape.channels + c) * KERNEL + ky) * KERNEL + kx];
                                let v = x[shape.at(n, c, oy + ky, ox + kx)];
                                sum += f64::from(w) * f64::from(v);
                            }
                        }
                    }
                    y[out.at(n, o, oy, ox)] = sum as f32;
                }
            }
        }
    }
    y
}

/// The gradients of a convolution from its output's gradient `dy` `[n, c_out, s - 2, s - 2]`:
/// with respect to its input (when `input_grad`), its weight and its bias.
pub struct ConvGrads {
    pub dx: Option<Vec<f32>>,
    pub dweight: Vec<f32>,
    pub dbias: Vec<f32>,
}

/// The backward pass of [`conv_forward`].
pub fn conv_backward(
    x: &[f32],
    shape: Maps,
    weight: &[f32],
    dy: &[f32],
    input_grad: bool,
) -> ConvGrads {
    let c_out = weight.len() / (shape.channels * KERNEL * KERNEL);
    let out = out_maps(shape, c_out);
    assert_eq!(dy.len(), out.len());
    let mut dx = vec![0f64; if input_grad { x.len() } else { 0 }];
    let mut dweight = vec![0f64; weight.len()];
    let mut dbias = vec![0f64; c_out];
    for n in 0..shape.images {
        for o in 0..c_out {
            for oy in 0..out.side {
                for ox in 0..out.side {
                    let g = f64::from(dy[out.at(n, o, oy, ox)]);
                    dbias[o] += g;
                    for c in 0..shape.channels {
                        for ky in 0..KERNEL {
                            for kx in 0..KERNEL {
                                let wi = ((o * shape.channels + c) * KERNEL + ky) * KERNEL + kx;
                                let xi = shape.at(n, c, oy + ky, ox + kx);
                                dweight[wi] += g * f64::from(x[xi]);
                                if input_grad {
                                    dx[xi] += g * f64::from(weight[wi]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    ConvGrads {
        dx: input_grad.then(|| narrow(&dx)),
        dweight: narrow(&dweight),
        dbias: narrow(&dbias),
    }
}

/// `max(x, 0)`.
pub fn relu_forward(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

/// The gradient through ReLU, from its output `y`: it passes where the unit was positive.
pub fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    y.iter()
        .zip(dy)
        .map(|(&y, &d)| if y > 0.0 { d } else { 0.0 })
        .collect()
}

/// 2x2 max-pooling, stride 2: `x` `[n, c, s, s]` → `[n, c, s/2, s/2]`, and for each output the
/// index in `x` of its window's maximum (the first of equals, in the order (0,0), (0,1),
/// (1,0), (1,1)).
pub fn maxpool_forward(x: &[f32], shape: Maps) -> (Vec<f32>, Vec<usize>) {
    let out = Maps {
        side: shape.side / POOL,
        ..shape
    };
    let (mut y, mut from) = (vec![0.0; out.len()], vec![0; out.len()]);
    for n in 0..shape.images {
        for c in 0..shape.channels {
            for oy in 0..out.side {
                for ox in 0..out.side {
                    let mut best = shape.at(n, c, POOL * oy, POOL * ox);
                    for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                        let i = shape.at(n, c, POOL * oy + dy, POOL * ox + dx);
                        if x[i] > x[best] {
                            best = i;
                        }
                    }
                    y[out.at(n, c, oy, ox)] = x[best];
                    from[out.at(n, c, oy, ox)] = best;
                }
            }
        }
    }
    (y, from)
}

/// The gradient through max-pooling: each output's gradient goes to the input it came from.
pub fn maxpool_backward(dy: &[f32], from: &[usize], input_len: usize) -> Vec<f32> {
    let mut dx = vec![0.0; input_len];
    for (&g, &i) in dy.iter().zip(from) {
        dx[i] += g;
    }
    dx
}

/// Dropout with a given mask: 0 drops a unit, `1 / (1 - rate)` keeps it, scaled.
pub fn dropout_forward(x: &[f32], mask: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), mask.len());
    x.iter().zip(mask).map(|(x, m)| x * m).collect()
}

/// The gradient through dropout: the same mask.
pub fn dropout_backward(dy: &[f32], mask: &[f32]) -> Vec<f32> {
    dropout_forward(dy, mask)
}

/// A dense layer: `x` `[n, inputs]`, `weight` `[inputs, outputs]`, `bias` `[outputs]` →
/// `[n, outputs]`.
pub fn dense_forward(x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let (outputs, inputs) = (bias.len(), weight.len() / bias.len());
    let n = x.len() / inputs;
    let mut y = vec![0.0; n * outputs];
    for r in 0..n {
        for o in 0..outputs {
            let mut sum = f64::from(bias[o]);
            for i in 0..inputs {
                sum += f64::from(x[r * inputs + i]) * f64::from(weight[i * outputs + o]);
            }
            y[r * outputs + o] = sum as f32;
        }
    }
    y
}

/// The gradients of a dense layer of `outputs` units, from its output's gradient `dy`
/// `[n, outputs]`: `(dx, dweight, dbias)`.
pub fn dense_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    outputs: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, inputs) = (dy.len() / outputs, weight.len() / outputs);
    assert_eq!(x.len(), n * inputs);
    let (mut dx, mut dw, mut db) = (
        vec![0f64; n * inputs],
        vec![0f64; inputs * outputs],
        vec![0f64; outputs],
    );
    for r in 0..n {
        for o in 0..outputs {
            let g = f64::from(dy[r * outputs + o]);
            db[o] += g;
            for i in 0..inputs {
                dw[i * outputs + o] += f64::from(x[r * inputs + i]) * g;
                dx[r * inputs + i] += f64::from(weight[i * outputs + o]) * g;
            }
        }
    }
    (narrow(&dx), narrow(&dw), narrow(&db))
}

/// The mean softmax cross-entropy of `labels` over rows of `logits` `[n, 10]`, and its
/// gradient with respect to the logits: `(softmax - one_hot) / n`.
pub fn softmax_cross_entropy(logits: &[f32], labels: &[u8]) -> (f64, Vec<f32>) {
    let n = labels.len();
    let mut loss = 0.0;
    let mut dlogits = vec![0.0; logits.len()];
    for (r, &label) in labels.iter().enumerate() {
        let row = &logits[r * NUM_CLASSES..][..NUM_CLASSES];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = row.iter().map(|&v| f64::from(v - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        loss -= (exps[usize::from(label)] / sum).ln();
        for (k, e) in exps.iter().enumerate() {
            let target = if k == usize::from(label) { 1.0 } else { 0.0 };
            dlogits[r * NUM_CLASSES + k] = ((e / sum - target) / n as f64) as f32;
        }
    }
    (loss / n as f64, dlogits)
}

/// Adadelta as Keras 2 has it, for one parameter `p` with gradient `g` and its two running
/// averages `a` (squared gradients) and `d` (squared updates), in `f64`.
pub fn adadelta(p: &mut f64, g: f64, (a, d): (&mut f64, &mut f64), lr: f64, rho: f64, eps: f64) {
    *a = rho * *a + (1.0 - rho) * g * g;
    let u = g * (*d + eps).sqrt() / (*a + eps).sqrt();
    *p -= lr * u;
    *d = rho * *d + (1.0 - rho) * u * u;
}

/// Dropout's two masks for a batch: `[n, 9216]` after the pooling, `[n, 128]` after the first
/// dense layer.
#[derive(Debug, Clone, Copy)]
pub struct Masks<'a> {
    pub pooled: &'a [f32],
    pub hidden: &'a [f32],
}

/// Every activation of one forward pass, NCHW, kept for [`backward`].
pub struct Activations {
    /// conv1 + ReLU: `[n, 32, 26, 26]`.
    pub a1: Vec<f32>,
    /// conv2 + ReLU: `[n, 64, 24, 24]`.
    pub a2: Vec<f32>,
    /// The max-pool's source index in `a2` for each pooled value.
    pub from: Vec<usize>,
    /// Pooled: `[n, 9216]`, flattened (channel, y, x).
    pub pooled: Vec<f32>,
    /// The pooled features after dropout: dense1's input.
    pub features: Vec<f32>,
    /// dense1 + ReLU: `[n, 128]`.
    pub dense1: Vec<f32>,
    /// dense1's outputs after dropout: dense2's input.
    pub hidden: Vec<f32>,
    /// dense2: `[n, 10]`.
    pub logits: Vec<f32>,
}

/// The forward pass of `pixels` (`[n, 1, 28, 28]`, scaled to [0, 1]), with dropout's masks
/// when training.
pub fn forward(p: &Params, pixels: &[f32], masks: Option<Masks<'_>>) -> Activations {
    let n = pixels.len() / (SIDE * SIDE);
    let input = maps(n, 1, SIDE);
    let a1 = relu_forward(&conv_forward(pixels, input, &p.conv1.weight, &p.conv1.bias));
    let conv1 = maps(n, CONV1_FILTERS, CONV1_SIDE);
    let a2 = relu_forward(&conv_forward(&a1, conv1, &p.conv2.weight, &p.conv2.bias));
    let (pooled, from) = maxpool_forward(&a2, maps(n, CONV2_FILTERS, CONV2_SIDE));
    let features = match &masks {
        Some(m) => dropout_forward(&pooled, m.pooled),
        None => pooled.clone(),
    };
    let dense1 = relu_forward(&dense_forward(&features, &p.dense1.weight, &p.dense1.bias));
    let hidden = match &masks {
        Some(m) => dropout_forward(&dense1, m.hidden),
        None => dense1.clone(),
    };
    let logits = dense_forward(&hidden, &p.dense2.weight, &p.dense2.bias);
    Activations {
        a1,
        a2,
        from,
        pooled,
        features,
        dense1,
        hidden,
        logits,
    }
}

/// The gradient of every parameter from the logits' gradient, walking [`forward`] backwards.
pub fn backward(
    p: &Params,
    pixels: &[f32],
    act: &Activations,
    masks: Option<Masks<'_>>,
    dlogits: &[f32],
) -> Params {
    let n = pixels.len() / (SIDE * SIDE);
    let (dhidden, dw4, db4) = dense_backward(&act.hidden, &p.dense2.weight, dlogits, NUM_CLASSES);
    let dhidden = match &masks {
        Some(m) => dropout_backward(&dhidden, m.hidden),
        None => dhidden,
    };
    let dhidden = relu_backward(&act.dense1, &dhidden);
    let (dfeatures, dw3, db3) = dense_backward(&act.features, &p.dense1.weight, &dhidden, HIDDEN);
    let dpooled = match &masks {
        Some(m) => dropout_backward(&dfeatures, m.pooled),
        None => dfeatures,
    };
    let da2 = maxpool_backward(&dpooled, &act.from, act.a2.len());
    let dz2 = relu_backward(&act.a2, &da2);
    let conv2 = conv_backward(
        &act.a1,
        maps(n, CONV1_FILTERS, CONV1_SIDE),
        &p.conv2.weight,
        &dz2,
        true,
    );
    let da1 = conv2.dx.expect("asked for");
    let dz1 = relu_backward(&act.a1, &da1);
    // The images need no gradient.
    let conv1 = conv_backward(pixels, maps(n, 1, SIDE), &p.conv1.weight, &dz1, false);
    Params::from_layers(
        [
            (conv1.dweight, conv1.dbias),
            (conv2.dweight, conv2.dbias),
            (dw3, db3),
            (dw4, db4),
        ]
        .map(|(weight, bias)| crate::network::Layer { weight, bias }),
    )
}

/// One training step's forward and backward pass: the batch's mean loss, how many rows it
/// classified right, and the gradient of every parameter.
pub fn step(
    p: &Params,
    pixels: &[f32],
    labels: &[u8],
    masks: Option<Masks<'_>>,
) -> (f64, usize, Params) {
    let act = forward(p, pixels, masks);
    let (loss, dlogits) = softmax_cross_entropy(&act.logits, labels);
    let correct = crate::metrics::count_correct(&act.logits, labels);
    let grads = backward(p, pixels, &act, masks, &dlogits);
    (loss, correct, grads)
}

fn maps(images: usize, channels: usize, side: usize) -> Maps {
    Maps {
        images,
        channels,
        side,
    }
}

/// A 3x3 valid convolution's output shape.
fn out_maps(input: Maps, channels: usize) -> Maps {
    Maps {
        images: input.images,
        channels,
        side: input.side - KERNEL + 1,
    }
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Helpers for the tests that hold the fast kernels to these layers (and, with the `testing`
/// feature, for the app crate's tests that hold them to burn).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::Maps;

    /// `len` values uniform in `lo..hi`, from `seed`.
    pub fn random(len: usize, (lo, hi): (f32, f32), seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(lo..hi)).collect()
    }

    /// NCHW maps as the kernels keep them: channels-last, `[n, side, side, channels]`.
    pub fn channels_last(x: &[f32], shape: Maps) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for n in 0..shape.images {
            for c in 0..shape.channels {
                for y in 0..shape.side {
                    for x_ in 0..shape.side {
                        let to = ((n * shape.side + y) * shape.side + x_) * shape.channels + c;
                        out[to] = x[shape.at(n, c, y, x_)];
                    }
                }
            }
        }
        out
    }

    /// Every value of `got` within `tolerance` × the largest magnitude of `want`; a NaN (a
    /// poisoned buffer read before it was written) always fails.
    pub fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{what}: the reference is all zero");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tolerance * scale,
                "{what}[{i}]: {g} vs the reference's {w} (scale {scale})"
            );
        }
    }

    /// Adadelta's rule in f64 over whole vectors, one value at a time through
    /// [`super::adadelta`]: what both the slice update and burn's optimizer are held to.
    pub struct Adadelta64 {
        pub p: Vec<f64>,
        pub a: Vec<f64>,
        pub d: Vec<f64>,
    }

    impl Adadelta64 {
        /// Starting from `p`, both accumulators at zero.
        pub fn new(p: &[f32]) -> Adadelta64 {
            Adadelta64 {
                p: p.iter().map(|&x| f64::from(x)).collect(),
                a: vec![0.0; p.len()],
                d: vec![0.0; p.len()],
            }
        }

        pub fn step(&mut self, g: &[f32], lr: f64, rho: f64, eps: f64) {
            let slots = self.p.iter_mut().zip(&mut self.a).zip(&mut self.d);
            for (((p, a), d), &g) in slots.zip(g) {
                super::adadelta(p, f64::from(g), (a, d), lr, rho, eps);
            }
        }
    }

    /// Every value of `actual` within 1e-6 of `expected`'s, relatively.
    pub fn assert_close_f64(actual: &[f64], expected: &[f64], what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: lengths");
        for (i, (x, y)) in actual.iter().zip(expected).enumerate() {
            let scale = y.abs().max(1e-30);
            assert!(
                (x - y).abs() / scale <= 1e-6,
                "{what}[{i}]: {x} vs reference {y}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::random;
    use super::*;

    /// `r · y`: a random linear function of a layer's output `y`, whose gradient with respect
    /// to `y` is `r`.
    fn dot(y: &[f32], r: &[f32]) -> f64 {
        y.iter()
            .zip(r)
            .map(|(y, r)| f64::from(*y) * f64::from(*r))
            .sum()
    }

    /// Asserts that `want` is the slope of `loss` along coordinate `i` of `x` (a central
    /// difference).
    fn assert_slope(loss: impl Fn(&[f32]) -> f64, x: &[f32], i: usize, want: f32, what: &str) {
        let h = 1e-2f32;
        let (mut up, mut down) = (x.to_vec(), x.to_vec());
        up[i] += h;
        down[i] -= h;
        let slope = (loss(&up) - loss(&down)) / f64::from(2.0 * h);
        let close = (slope - f64::from(want)).abs() < 1e-3;
        assert!(
            close,
            "{what}[{i}]: {slope} by difference, {want} by the backward pass"
        );
    }

    /// Each layer's backward pass is the derivative of its forward pass: the gradient of a
    /// random linear function of the output agrees with a finite difference.
    #[test]
    fn backward_passes_are_the_forward_passes_derivatives() {
        let shape = maps(2, 3, 6);
        let x = random(shape.len(), (-1.0, 1.0), 1);
        let w = random(4 * 3 * 9, (-0.5, 0.5), 2);
        let b = random(4, (-0.5, 0.5), 3);
        let r = random(2 * 4 * 4 * 4, (-1.0, 1.0), 4);
        let g = conv_backward(&x, shape, &w, &r, true);
        let dx = g.dx.as_ref().unwrap();
        for i in [5, 70] {
            let loss = |x: &[f32]| dot(&conv_forward(x, shape, &w, &b), &r);
            assert_slope(loss, &x, i, dx[i], "conv dx");
        }
        for i in [0, 100] {
            let loss = |w: &[f32]| dot(&conv_forward(&x, shape, w, &b), &r);
            assert_slope(loss, &w, i, g.dweight[i], "conv dweight");
        }
        // The bias's gradient is the sum of its output channel's gradients.
        let r = &r;
        let channel1: f32 = (0..2)
            .flat_map(|n| (0..16).map(move |k| r[(n * 4 + 1) * 16 + k]))
            .sum();
        assert!((g.dbias[1] - channel1).abs() < 1e-5);

        // The dense layer likewise, and max-pooling routes to the maximum.
        let (xd, wd, bd) = (
            random(15, (-1.0, 1.0), 5),
            random(10, (-1.0, 1.0), 6),
            [0.1, -0.2],
        );
        let rd = random(3 * 2, (-1.0, 1.0), 7);
        let (dx, dw, _) = dense_backward(&xd, &wd, &rd, 2);
        assert_slope(
            |x| dot(&dense_forward(x, &wd, &bd), &rd),
            &xd,
            7,
            dx[7],
            "dense dx",
        );
        assert_slope(
            |w| dot(&dense_forward(&xd, w, &bd), &rd),
            &wd,
            3,
            dw[3],
            "dense dweight",
        );
        let (y, from) = maxpool_forward(&[1.0, 3.0, 2.0, 3.0], maps(1, 1, 2));
        assert_eq!((y, from.clone()), (vec![3.0], vec![1]));
        assert_eq!(maxpool_backward(&[0.5], &from, 4), vec![0.0, 0.5, 0.0, 0.0]);
    }

    #[test]
    fn softmax_cross_entropy_of_equal_logits_is_ln_10() {
        let (loss, d) = softmax_cross_entropy(&[0.0; 20], &[3, 7]);
        assert!((loss - 10f64.ln()).abs() < 1e-12);
        // (0.1 - 1) / 2 at the label, 0.1 / 2 elsewhere.
        assert!((d[3] + 0.45).abs() < 1e-7 && (d[4] - 0.05).abs() < 1e-7);
    }
}
