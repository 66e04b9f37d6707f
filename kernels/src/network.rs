//! The network of Keras's `mnist_cnn.py`, defined once: its sizes, its dropout rates, its
//! initialisation, and its parameters by name.
//!
//! Everything else reads from here: the app's burn `Model` (`engine::modules`, the `flex` feature) builds its layers
//! from these sizes, the CPU kernels size their buffers with them, and [`Params`] is the one
//! named parameter set that the kernels, Adadelta, the checkpoint and the conversion to and
//! from burn's `Model` all share.

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Side of an input image (MNIST's 28 x 28), its pixels, and the classes (digits).
pub const SIDE: usize = 28;
pub const PIXELS: usize = SIDE * SIDE;
pub const NUM_CLASSES: usize = 10;

/// Both convolutions are 3x3, "valid" (no padding), stride 1.
pub const KERNEL: usize = 3;
/// Taps of one 3x3 kernel.
pub const TAPS: usize = KERNEL * KERNEL;
pub const CONV1_FILTERS: usize = 32;
pub const CONV2_FILTERS: usize = 64;
/// conv1's output side (28 - 2), conv2's (26 - 2), and the 2x2 max-pool's (24 / 2).
pub const CONV1_SIDE: usize = SIDE - KERNEL + 1;
pub const CONV2_SIDE: usize = CONV1_SIDE - KERNEL + 1;
pub const POOL: usize = 2;
pub const POOLED_SIDE: usize = CONV2_SIDE / POOL;
/// Inputs of the first dense layer: the pooled maps flattened (channel, y, x), as burn's
/// `flatten` orders them.
pub const FEATURES: usize = POOLED_SIDE * POOLED_SIDE * CONV2_FILTERS;
pub const HIDDEN: usize = 128;
/// Keras's dropout rates after the pooling and after the first dense layer.
pub const DROPOUT_POOLED: f64 = 0.35;
pub const DROPOUT_HIDDEN: f64 = 0.5;

/// One layer's shape: its weight in burn's layout (convolutions [out, in, 3, 3], dense layers
/// [inputs, outputs]) and Glorot's fans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    pub name: &'static str,
    pub weight: &'static [usize],
    pub fan_in: usize,
    pub fan_out: usize,
}

impl LayerShape {
    pub const fn weight_len(&self) -> usize {
        let mut len = 1;
        let mut d = 0;
        while d < self.weight.len() {
            len *= self.weight[d];
            d += 1;
        }
        len
    }

    /// One bias per output unit (per filter for a convolution).
    pub const fn bias_len(&self) -> usize {
        match self.weight {
            [outputs, _, _, _] => *outputs,
            [_, outputs] => *outputs,
            _ => panic!("layers are 2-D or 4-D"),
        }
    }
}

/// The four layers with parameters, in the order of the network (and of [`Params::layers`]).
pub const LAYERS: [LayerShape; 4] = [
    LayerShape {
        name: "conv1",
        weight: &[CONV1_FILTERS, 1, KERNEL, KERNEL],
        fan_in: TAPS,
        fan_out: CONV1_FILTERS * TAPS,
    },
    LayerShape {
        name: "conv2",
        weight: &[CONV2_FILTERS, CONV1_FILTERS, KERNEL, KERNEL],
        fan_in: CONV1_FILTERS * TAPS,
        fan_out: CONV2_FILTERS * TAPS,
    },
    LayerShape {
        name: "dense1",
        weight: &[FEATURES, HIDDEN],
        fan_in: FEATURES,
        fan_out: HIDDEN,
    },
    LayerShape {
        name: "dense2",
        weight: &[HIDDEN, NUM_CLASSES],
        fan_in: HIDDEN,
        fan_out: NUM_CLASSES,
    },
];

/// The names of the eight parameter tensors, each layer's weight then its bias; burn's module
/// record uses the same paths.
pub const TENSOR_NAMES: [&str; 8] = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "dense1.weight",
    "dense1.bias",
    "dense2.weight",
    "dense2.bias",
];

/// The eight tensors' names and burn's shapes, in the order of [`TENSOR_NAMES`].
pub fn tensor_shapes() -> [(&'static str, Vec<usize>); 8] {
    let mut names = TENSOR_NAMES.into_iter();
    [0, 0, 1, 1, 2, 2, 3, 3].map(|l| {
        let name = names.next().expect("eight names");
        let shape = if name.ends_with(".weight") {
            LAYERS[l].weight.to_vec()
        } else {
            vec![LAYERS[l].bias_len()]
        };
        (name, shape)
    })
}

/// Parameters in all: what Keras's `model.summary()` reports for this network.
pub const PARAMETERS: usize = {
    let mut total = 0;
    let mut i = 0;
    while i < LAYERS.len() {
        total += LAYERS[i].weight_len() + LAYERS[i].bias_len();
        i += 1;
    }
    total
};

/// One layer's values, in the layout of its [`LayerShape`].
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// One value per parameter of the network, by layer. The parameters themselves, and anything
/// kept per parameter: gradients, Adadelta's accumulators.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub conv1: Layer,
    pub conv2: Layer,
    pub dense1: Layer,
    pub dense2: Layer,
}

impl Params {
    /// A fresh network as Keras initialises it: Glorot-uniform weights drawn from `seed`, layer
    /// by layer, and zero biases. The same seed gives the same values on every machine.
    pub fn glorot(seed: u64) -> Params {
        let mut rng = StdRng::seed_from_u64(seed);
        Params::from_layers(LAYERS.map(|shape| {
            let limit = (6.0 / (shape.fan_in + shape.fan_out) as f64).sqrt() as f32;
            Layer {
                weight: (0..shape.weight_len())
                    .map(|_| rng.random_range(-limit..limit))
                    .collect(),
                bias: vec![0.0; shape.bias_len()],
            }
        }))
    }

    /// Every value zero: the starting point of gradients and accumulators.
    pub fn zeros() -> Params {
        Params::from_layers(LAYERS.map(|shape| Layer {
            weight: vec![0.0; shape.weight_len()],
            bias: vec![0.0; shape.bias_len()],
        }))
    }

    /// Builds the set from tensors given by name ([`TENSOR_NAMES`]) and shape; `None` when
    /// `tensor` has none for a name or one of the wrong length.
    pub fn from_named(
        mut tensor: impl FnMut(&str, &[usize]) -> Option<Vec<f32>>,
    ) -> Option<Params> {
        let mut layers = Vec::with_capacity(LAYERS.len());
        for (shape, names) in LAYERS.iter().zip(TENSOR_NAMES.chunks(2)) {
            let bias_shape = [shape.bias_len()];
            let weight = tensor(names[0], shape.weight).filter(|w| w.len() == shape.weight_len());
            let bias = tensor(names[1], &bias_shape).filter(|b| b.len() == shape.bias_len());
            layers.push(Layer {
                weight: weight?,
                bias: bias?,
            });
        }
        let layers: [Layer; 4] = layers.try_into().ok()?;
        Some(Params::from_layers(layers))
    }

    pub fn from_layers([conv1, conv2, dense1, dense2]: [Layer; 4]) -> Params {
        Params {
            conv1,
            conv2,
            dense1,
            dense2,
        }
    }

    /// The layers in the order of [`LAYERS`].
    pub fn layers(&self) -> [&Layer; 4] {
        [&self.conv1, &self.conv2, &self.dense1, &self.dense2]
    }

    /// The eight tensors as (name, shape, values), in the order of [`TENSOR_NAMES`].
    pub fn named(&self) -> [(&'static str, Vec<usize>, &[f32]); 8] {
        let layers = self.layers();
        let mut i = 0;
        tensor_shapes().map(|(name, shape)| {
            let layer = layers[i / 2];
            let values = if i % 2 == 0 {
                &layer.weight[..]
            } else {
                &layer.bias[..]
            };
            i += 1;
            (name, shape, values)
        })
    }

    /// The first tensor (in the order of [`TENSOR_NAMES`]) holding NaN or infinite values,
    /// and how many it holds.
    pub fn non_finite(&self) -> Option<(&'static str, usize)> {
        self.first_with(|v| !v.is_finite())
    }

    /// The first tensor (in the order of [`TENSOR_NAMES`]) holding values for which `bad`
    /// holds, and how many it holds.
    pub fn first_with(&self, bad: impl Fn(f32) -> bool) -> Option<(&'static str, usize)> {
        self.named().into_iter().find_map(|(name, _, values)| {
            let count = values.iter().filter(|&&v| bad(v)).count();
            (count > 0).then_some((name, count))
        })
    }

    /// The eight tensors' values, mutable, in the order of [`TENSOR_NAMES`].
    pub fn values_mut(&mut self) -> [&mut [f32]; 8] {
        let Params {
            conv1,
            conv2,
            dense1,
            dense2,
        } = self;
        [
            &mut conv1.weight,
            &mut conv1.bias,
            &mut conv2.weight,
            &mut conv2.bias,
            &mut dense1.weight,
            &mut dense1.bias,
            &mut dense2.weight,
            &mut dense2.bias,
        ]
    }

    /// The same weights with random biases (fresh ones are zero), so that tests of the
    /// kernels exercise the bias layouts too.
    #[cfg(any(test, feature = "testing"))]
    pub fn with_random_biases(mut self, seed: u64) -> Params {
        let mut rng = StdRng::seed_from_u64(seed);
        for (i, values) in self.values_mut().into_iter().enumerate() {
            if i % 2 == 1 {
                values
                    .iter_mut()
                    .for_each(|v| *v = rng.random_range(-0.5..0.5));
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_parameter_count_are_keras_s() {
        assert_eq!((CONV1_SIDE, CONV2_SIDE, POOLED_SIDE), (26, 24, 12));
        assert_eq!(FEATURES, 9216);
        assert_eq!(PARAMETERS, 1_199_882);
        let params = Params::glorot(1);
        let total: usize = params.named().iter().map(|(_, _, v)| v.len()).sum();
        assert_eq!(total, PARAMETERS);
        for (name, shape, values) in params.named() {
            assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        }
    }

    #[test]
    fn initialisation_is_glorot_uniform_with_zero_biases() {
        let params = Params::glorot(7);
        let w = &params.dense1.weight;
        let limit = (6.0f32 / (9216.0 + 128.0)).sqrt();
        assert!(w.iter().all(|v| v.abs() <= limit));
        // Uniform on [-l, l] has variance l²/3; 1.2M samples pin it to well under 1%.
        let var = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        assert!(
            (var / (limit * limit / 3.0) - 1.0).abs() < 0.01,
            "variance {var}"
        );
        assert!(params.conv2.bias.iter().all(|&v| v == 0.0));
        assert_eq!(params, Params::glorot(7));
        assert_ne!(params, Params::glorot(8));
    }

    #[test]
    fn named_tensors_round_trip_and_wrong_lengths_are_refused() {
        let params = Params::glorot(3).with_random_biases(4);
        let named = params.named();
        let lookup = |name: &str, _: &[usize]| {
            named
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, _, v)| v.to_vec())
        };
        assert_eq!(Params::from_named(lookup), Some(params.clone()));
        let short = |name: &str, shape: &[usize]| {
            let mut v = lookup(name, shape)?;
            if name == "dense2.bias" {
                v.pop();
            }
            Some(v)
        };
        assert_eq!(Params::from_named(short), None);
        assert_eq!(Params::from_named(|_, _| None), None);
    }
}
