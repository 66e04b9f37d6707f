//! The network of Keras's `mnist_cnn.py`, its initialisation, summary, and file format.

use std::path::Path;

use burn::module::{Module, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::store::ModuleRecord;
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::error::{Error, Result};

pub const NUM_CLASSES: usize = 10;
/// Keras's dropout rates after the pooling and after the first dense layer; the CPU kernels
/// draw their own masks at these rates.
pub const DROPOUT_POOLED: f64 = 0.35;
pub const DROPOUT_HIDDEN: f64 = 0.5;
/// Model files (4.8 MB) and checkpoints (about three times that) are read only below this.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// What Keras's `model.summary()` reports for this network.
pub const EXPECTED_PARAMS: usize = 1_199_882;

/// Conv 32 → Conv 64 → MaxPool → Dropout 0.35 → Dense 128 → Dropout 0.5 → Dense 10.
///
/// `forward` returns logits; the softmax lives in the loss, as log-softmax (the same
/// mathematics without the overflow).
#[derive(Module, Debug)]
pub struct Model {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    dropout1: Dropout,
    dense1: Linear,
    dropout2: Dropout,
    dense2: Linear,
}

/// The layers as Keras names them, in order, for the summary table.
const LAYERS: [(&str, &str); 8] = [
    ("conv2d_1", "Conv2D"),
    ("conv2d_2", "Conv2D"),
    ("max_pooling2d_1", "MaxPooling2D"),
    ("dropout_1", "Dropout"),
    ("flatten_1", "Flatten"),
    ("dense_1", "Dense"),
    ("dropout_2", "Dropout"),
    ("dense_2", "Dense"),
];

impl Model {
    /// A fresh network: Glorot-uniform weights and zero biases, as Keras initialises them,
    /// drawn from `seed` so that the same seed gives the same network on any backend.
    pub fn new(device: &Device, seed: u64) -> Model {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ids = 0u64;
        let mut next_id = move || {
            // Fixed ids (burn draws random ones) keep same-seed model files byte-identical.
            ids += 1;
            ParamId::from(ids)
        };
        let zero_init = Initializer::Zeros;

        let mut conv1 = Conv2dConfig::new([1, 32], [3, 3])
            .with_initializer(zero_init.clone())
            .init(device);
        let mut conv2 = Conv2dConfig::new([32, 64], [3, 3])
            .with_initializer(zero_init.clone())
            .init(device);
        let mut dense1 = LinearConfig::new(9216, 128)
            .with_initializer(zero_init.clone())
            .init(device);
        let mut dense2 = LinearConfig::new(128, NUM_CLASSES)
            .with_initializer(zero_init)
            .init(device);

        conv1.weight = glorot(&mut rng, [32, 1, 3, 3], 9, 32 * 9, next_id(), device);
        conv1.bias = Some(zeros(32, next_id(), device));
        conv2.weight = glorot(&mut rng, [64, 32, 3, 3], 32 * 9, 64 * 9, next_id(), device);
        conv2.bias = Some(zeros(64, next_id(), device));
        // burn's Linear keeps its weight as [inputs, outputs].
        dense1.weight = glorot(&mut rng, [9216, 128], 9216, 128, next_id(), device);
        dense1.bias = Some(zeros(128, next_id(), device));
        dense2.weight = glorot(
            &mut rng,
            [128, NUM_CLASSES],
            128,
            NUM_CLASSES,
            next_id(),
            device,
        );
        dense2.bias = Some(zeros(NUM_CLASSES, next_id(), device));

        Model {
            conv1,
            conv2,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            dropout1: DropoutConfig::new(DROPOUT_POOLED).init(),
            dense1,
            dropout2: DropoutConfig::new(DROPOUT_HIDDEN).init(),
            dense2,
        }
    }

    /// Weights and biases in burn's layouts (convolutions [out, in, 3, 3], dense layers
    /// [inputs, outputs]), for the hand-written CPU kernels.
    pub fn raw_weights(&self) -> RawWeights {
        fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
            t.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 parameters")
        }
        let bias =
            |b: &Option<Param<Tensor<1>>>| b.as_ref().map(|b| values(b.val())).unwrap_or_default();
        RawWeights {
            conv1: (values(self.conv1.weight.val()), bias(&self.conv1.bias)),
            conv2: (values(self.conv2.weight.val()), bias(&self.conv2.bias)),
            dense1: (values(self.dense1.weight.val()), bias(&self.dense1.bias)),
            dense2: (values(self.dense2.weight.val()), bias(&self.dense2.bias)),
        }
    }

    /// The network holding `raw` (in the layouts of [`Model::raw_weights`]), on `device`.
    pub fn from_raw(raw: &RawWeights, device: &Device) -> Model {
        fn set<const D: usize>(slot: &mut Param<Tensor<D>>, values: &[f32], device: &Device) {
            let data = TensorData::new(values.to_vec(), slot.val().shape());
            *slot = param(Tensor::from_data(data, device), slot.id);
        }
        fn layer<const D: usize>(
            (weight, bias): (&mut Param<Tensor<D>>, &mut Option<Param<Tensor<1>>>),
            (w, b): &(Vec<f32>, Vec<f32>),
            device: &Device,
        ) {
            set(weight, w, device);
            if let Some(bias) = bias {
                set(bias, b, device);
            }
        }
        let mut m = Model::new(device, 0);
        layer((&mut m.conv1.weight, &mut m.conv1.bias), &raw.conv1, device);
        layer((&mut m.conv2.weight, &mut m.conv2.bias), &raw.conv2, device);
        layer(
            (&mut m.dense1.weight, &mut m.dense1.bias),
            &raw.dense1,
            device,
        );
        layer(
            (&mut m.dense2.weight, &mut m.dense2.bias),
            &raw.dense2,
            device,
        );
        m
    }

    /// The same network with random biases (fresh ones are zero), so that tests of other
    /// implementations exercise the bias layouts too.
    #[cfg(test)]
    pub fn with_random_biases(mut self, seed: u64, device: &Device) -> Model {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut random = |len: usize| {
            let values: Vec<f32> = (0..len).map(|_| rng.random_range(-0.5..0.5)).collect();
            Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(values, [len]),
                device,
            )))
        };
        self.conv1.bias = random(32);
        self.conv2.bias = random(64);
        self.dense1.bias = random(128);
        self.dense2.bias = random(NUM_CLASSES);
        self
    }

    /// Logits `[n, 10]` for images `[n, 1, 28, 28]` scaled to [0, 1]. Dropout is active only
    /// on an autodiff device in training mode.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_observed(images, &mut |_, _| {})
    }

    /// `forward`, reporting each layer's output shape to `observe` (for the summary).
    fn forward_observed(
        &self,
        images: Tensor<4>,
        observe: &mut dyn FnMut(usize, &[usize]),
    ) -> Tensor<2> {
        let x = relu(self.conv1.forward(images));
        observe(0, &x.dims());
        let x = relu(self.conv2.forward(x));
        observe(1, &x.dims());
        let x = self.pool.forward(x);
        observe(2, &x.dims());
        let x = self.dropout1.forward(x);
        observe(3, &x.dims());
        let x: Tensor<2> = x.flatten(1, 3);
        observe(4, &x.dims());
        let x = relu(self.dense1.forward(x));
        observe(5, &x.dims());
        let x = self.dropout2.forward(x);
        observe(6, &x.dims());
        let x = self.dense2.forward(x);
        observe(7, &x.dims());
        x
    }

    fn layer_params(&self) -> [usize; 8] {
        [
            self.conv1.num_params(),
            self.conv2.num_params(),
            0,
            0,
            0,
            self.dense1.num_params(),
            0,
            self.dense2.num_params(),
        ]
    }

    /// A table in the layout of Keras's `model.summary()`. Shapes are channels-first, as
    /// this network computes them, and are measured by running one blank image through it.
    pub fn summary(&self) -> String {
        let device = self.conv1.weight.val().device();
        let mut shapes = vec![String::new(); LAYERS.len()];
        let probe = Tensor::<4>::zeros([1, 1, 28, 28], &device.without_autodiff());
        self.clone()
            .valid()
            .forward_observed(probe, &mut |i, dims| {
                let rest: Vec<String> = dims[1..].iter().map(|d| d.to_string()).collect();
                shapes[i] = format!("(None, {})", rest.join(", "));
            });

        const WIDTH: usize = 65;
        let row = |cells: [&str; 3]| {
            let mut line = String::new();
            for (i, (cell, end)) in cells.iter().zip([29, 55, 65]).enumerate() {
                if i > 0 {
                    // Keras keeps one space between columns, cutting the cell before it.
                    line.pop();
                    line.push(' ');
                }
                line.push_str(cell);
                line.truncate(end);
                while line.len() < end {
                    line.push(' ');
                }
            }
            line
        };
        let params = self.layer_params();
        let mut out = Vec::new();
        out.push("_".repeat(WIDTH));
        out.push(row(["Layer (type)", "Output Shape", "Param #"]));
        out.push("=".repeat(WIDTH));
        for (i, (name, kind)) in LAYERS.iter().enumerate() {
            let label = format!("{name} ({kind})");
            out.push(row([&label, &shapes[i], &params[i].to_string()]));
            let rule = if i + 1 == LAYERS.len() { "=" } else { "_" };
            out.push(rule.repeat(WIDTH));
        }
        let total = group_thousands(self.num_params());
        out.push(format!("Total params: {total}"));
        out.push(format!("Trainable params: {total}"));
        out.push("Non-trainable params: 0".into());
        out.push("_".repeat(WIDTH));
        out.join("\n")
    }

    /// The model file: burn's burnpack record of the parameters.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes = self
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| Error::Backend(format!("cannot serialise the model: {e}")))?;
        Ok(bytes.to_vec())
    }

    /// Reads a model file written by [`Model::to_bytes`]; `path` is for messages only.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path, device: &Device) -> Result<Model> {
        let fail = |reason: String| Error::Model {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.is_empty() {
            return Err(fail("the file is empty".into()));
        }
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| fail(format!("not a mnist-cnn model file ({e})")))?;
        Model::new(device, 0)
            .try_load_record(record)
            .map_err(|e| fail(format!("the file does not hold this network ({e})")))
    }

    /// Loads a model file from disk.
    pub fn load(path: &Path, device: &Device) -> Result<Model> {
        let bytes =
            crate::fsutil::read_at_most(path, MAX_FILE_BYTES).map_err(|reason| Error::Model {
                path: path.to_path_buf(),
                reason,
            })?;
        Model::from_bytes(bytes, path, device)
    }
}

/// Categorical cross-entropy of each sample: `-log softmax(logits)[label]`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    log_softmax(logits, 1)
        .gather(1, labels.unsqueeze_dim(1))
        .squeeze_dim::<1>(1)
        .neg()
}

/// How many rows of `logits` have their largest value at the label.
pub fn count_correct(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1, Int> {
    logits
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(labels)
        .int()
        .sum()
}

fn glorot<const D: usize>(
    rng: &mut StdRng,
    shape: [usize; D],
    fan_in: usize,
    fan_out: usize,
    id: ParamId,
    device: &Device,
) -> Param<Tensor<D>> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    let count = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| rng.random_range(-limit..limit))
        .collect();
    param(
        Tensor::from_data(TensorData::new(values, shape), device),
        id,
    )
}

fn zeros(len: usize, id: ParamId, device: &Device) -> Param<Tensor<1>> {
    param(Tensor::zeros([len], device), id)
}

fn param<const D: usize>(tensor: Tensor<D>, id: ParamId) -> Param<Tensor<D>> {
    let tensor = if tensor.device().is_autodiff() {
        tensor.require_grad()
    } else {
        tensor
    };
    Param::initialized(id, tensor)
}

/// Each layer's (weight, bias) values; see [`Model::raw_weights`]. Also the shape of
/// anything kept per parameter, such as gradients and optimizer accumulators.
#[derive(Debug, Clone, PartialEq)]
pub struct RawWeights {
    pub conv1: (Vec<f32>, Vec<f32>),
    pub conv2: (Vec<f32>, Vec<f32>),
    pub dense1: (Vec<f32>, Vec<f32>),
    pub dense2: (Vec<f32>, Vec<f32>),
}

impl RawWeights {
    /// The eight parameter tensors, each layer's weight then its bias.
    pub fn tensors(&self) -> [&[f32]; 8] {
        let [a, b, c, d] = [&self.conv1, &self.conv2, &self.dense1, &self.dense2];
        [&a.0, &a.1, &b.0, &b.1, &c.0, &c.1, &d.0, &d.1]
    }

    /// [`RawWeights::tensors`], mutable.
    pub fn tensors_mut(&mut self) -> [&mut [f32]; 8] {
        let [a, b, c, d] = [
            &mut self.conv1,
            &mut self.conv2,
            &mut self.dense1,
            &mut self.dense2,
        ];
        [
            &mut a.0, &mut a.1, &mut b.0, &mut b.1, &mut c.0, &mut c.1, &mut d.0, &mut d.1,
        ]
    }

    /// The same shapes, all zero.
    pub fn zeros_like(&self) -> RawWeights {
        let zeros = |(w, b): &(Vec<f32>, Vec<f32>)| (vec![0.0; w.len()], vec![0.0; b.len()]);
        RawWeights {
            conv1: zeros(&self.conv1),
            conv2: zeros(&self.conv2),
            dense1: zeros(&self.dense1),
            dense2: zeros(&self.dense2),
        }
    }
}

/// 1199882 → "1,199,882", as Keras prints parameter totals.
pub fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_keras_parameter_count() {
        let model = Model::new(&Device::default(), 1);
        assert_eq!(model.num_params(), EXPECTED_PARAMS);
        assert_eq!(group_thousands(EXPECTED_PARAMS), "1,199,882");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
    }

    #[test]
    fn summary_lists_layers_shapes_and_counts() {
        let summary = Model::new(&Device::default(), 1).summary();
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(
            lines[1].trim_end(),
            "Layer (type)                 Output Shape              Param #"
        );
        assert_eq!(
            lines[3].trim_end(),
            "conv2d_1 (Conv2D)            (None, 32, 26, 26)        320"
        );
        // Keras cuts names to the column, hence "MaxPooling2".
        assert!(lines[7].starts_with("max_pooling2d_1 (MaxPooling2 (None, 64, 12, 12)"));
        assert!(summary.contains("flatten_1 (Flatten)          (None, 9216)              0"));
        assert!(summary.contains("dense_1 (Dense)              (None, 128)               1179776"));
        assert!(summary.contains("dense_2 (Dense)              (None, 10)                1290"));
        assert!(summary.contains("Total params: 1,199,882\nTrainable params: 1,199,882"));
    }

    #[test]
    fn initialisation_is_glorot_uniform_with_zero_biases() {
        let model = Model::new(&Device::default(), 7);
        let w: Vec<f32> = model.dense1.weight.val().into_data().try_to_vec().unwrap();
        let limit = (6.0f32 / (9216.0 + 128.0)).sqrt();
        assert!(w.iter().all(|v| v.abs() <= limit));
        // Uniform on [-l, l] has variance l²/3; 1.2M samples pin it to well under 1%.
        let var = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        assert!(
            (var / (limit * limit / 3.0) - 1.0).abs() < 0.01,
            "variance {var}"
        );
        let b: Vec<f32> = model
            .conv2
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(b.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let device = Device::default();
        let a = Model::new(&device, 3).to_bytes().unwrap();
        assert_eq!(a, Model::new(&device, 3).to_bytes().unwrap());
        assert_ne!(a, Model::new(&device, 4).to_bytes().unwrap());
    }

    #[test]
    fn file_round_trip_keeps_the_outputs() {
        let device = Device::default();
        let model = Model::new(&device, 5);
        let path = Path::new("memory");
        let loaded = Model::from_bytes(model.to_bytes().unwrap(), path, &device).unwrap();
        let input = Tensor::<4>::ones([2, 1, 28, 28], &device).mul_scalar(0.5);
        let a: Vec<f32> = model
            .forward(input.clone())
            .into_data()
            .try_to_vec()
            .unwrap();
        let b: Vec<f32> = loaded.forward(input).into_data().try_to_vec().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn cross_entropy_and_accuracy_by_hand() {
        let device = Device::default();
        let logits = Tensor::<2>::from_data(
            TensorData::from([
                [2.0f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0; 10],
            ]),
            &device,
        );
        let labels = Tensor::<1, Int>::from_data(TensorData::from([0i64, 3]), &device);
        let loss: Vec<f32> = cross_entropy(logits.clone(), labels.clone())
            .into_data()
            .try_to_vec()
            .unwrap();
        let first = -(2f32.exp() / (2f32.exp() + 9.0)).ln();
        assert!((loss[0] - first).abs() < 1e-6, "{loss:?}");
        assert!((loss[1] - 10f32.ln()).abs() < 1e-6, "{loss:?}");
        // Row 2 is all ties, and argmax takes the first: class 0, not 3.
        assert_eq!(count_correct(logits, labels).into_scalar::<i64>(), 1);
    }

    #[test]
    fn bad_model_bytes_are_errors() {
        let device = Device::default();
        let path = Path::new("m.bin");
        let good = Model::new(&device, 5).to_bytes().unwrap();
        for bad in [
            Vec::new(),
            b"hello, world".to_vec(),
            good[..good.len() / 2].to_vec(),
            good[..20].to_vec(),
        ] {
            let err = Model::from_bytes(bad, path, &device).unwrap_err();
            assert!(matches!(err, Error::Model { .. }), "{err}");
        }
    }
}
