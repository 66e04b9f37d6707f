//! The network as burn modules: what burn's engine trains and runs (on `flex` or a GPU), its
//! conversion to and from the named [`Params`], the Keras-style summary, and the model file.

use std::path::Path;

use burn::module::{Module, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_pack::{Bytes, DType, Reader, Writer};

use crate::error::{Error, Result};
use crate::escape::escaped;
use crate::formats::burnpack::{self, Layout};
use crate::fsutil;
use crate::network::{
    CONV1_FILTERS, CONV2_FILTERS, DROPOUT_HIDDEN, DROPOUT_POOLED, FEATURES, HIDDEN, KERNEL, Layer,
    NUM_CLASSES, POOL, Params, SIDE, TENSOR_NAMES, tensor_shapes,
};

/// A model file's size at most: its 4.8 MB of weights and a few hundred bytes of metadata
/// (a safetensors file of the same weights too).
pub const MAX_MODEL_BYTES: u64 = 8 << 20;
/// A model file's metadata (the run's six figures) in bytes at most.
const MAX_MODEL_METADATA: usize = 64 << 10;

/// Conv 32 → Conv 64 → MaxPool → Dropout 0.35 → Dense 128 → Dropout 0.5 → Dense 10, with the
/// sizes of [`crate::network`].
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
    /// A fresh network, Keras's initialisation drawn from `seed` ([`Params::glorot`]).
    pub fn new(device: &Device, seed: u64) -> Model {
        Model::from_params(&Params::glorot(seed), device)
    }

    /// The network holding `params`, on `device` (trainable there if it is an autodiff device).
    pub fn from_params(params: &Params, device: &Device) -> Model {
        // Fixed ids (burn draws random ones) in the order of TENSOR_NAMES keep same-seed model
        // files byte-identical. The layers start as zeros, replaced at once: no random draw.
        let named = params.named();
        let conv = |[c_in, c_out]: [usize; 2], i: usize| {
            let mut conv = Conv2dConfig::new([c_in, c_out], [KERNEL, KERNEL])
                .with_initializer(Initializer::Zeros)
                .init(device);
            conv.weight = param(&named, i, device);
            conv.bias = Some(param(&named, i + 1, device));
            conv
        };
        let linear = |[inputs, outputs]: [usize; 2], i: usize| {
            let mut linear = LinearConfig::new(inputs, outputs)
                .with_initializer(Initializer::Zeros)
                .init(device);
            linear.weight = param(&named, i, device);
            linear.bias = Some(param(&named, i + 1, device));
            linear
        };
        Model {
            conv1: conv([1, CONV1_FILTERS], 0),
            conv2: conv([CONV1_FILTERS, CONV2_FILTERS], 2),
            pool: MaxPool2dConfig::new([POOL, POOL]).init(),
            dropout1: DropoutConfig::new(DROPOUT_POOLED).init(),
            dense1: linear([FEATURES, HIDDEN], 4),
            dropout2: DropoutConfig::new(DROPOUT_HIDDEN).init(),
            dense2: linear([HIDDEN, NUM_CLASSES], 6),
        }
    }

    /// The parameters' values, read back from the device.
    pub fn params(&self) -> Params {
        fn values<const D: usize>(t: &Param<Tensor<D>>) -> Vec<f32> {
            t.val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 parameters")
        }
        let layer = |weight: &Param<Tensor<4>>, bias: &Option<Param<Tensor<1>>>| Layer {
            weight: values(weight),
            bias: bias.as_ref().map(values).unwrap_or_default(),
        };
        let dense = |weight: &Param<Tensor<2>>, bias: &Option<Param<Tensor<1>>>| Layer {
            weight: values(weight),
            bias: bias.as_ref().map(values).unwrap_or_default(),
        };
        Params {
            conv1: layer(&self.conv1.weight, &self.conv1.bias),
            conv2: layer(&self.conv2.weight, &self.conv2.bias),
            dense1: dense(&self.dense1.weight, &self.dense1.bias),
            dense2: dense(&self.dense2.weight, &self.dense2.bias),
        }
    }

    /// burn's id of each parameter, in the order of [`TENSOR_NAMES`].
    pub fn param_ids(&self) -> [(ParamId, &'static str); 8] {
        let ids = [
            self.conv1.weight.id,
            self.conv1.bias.as_ref().expect("bias").id,
            self.conv2.weight.id,
            self.conv2.bias.as_ref().expect("bias").id,
            self.dense1.weight.id,
            self.dense1.bias.as_ref().expect("bias").id,
            self.dense2.weight.id,
            self.dense2.bias.as_ref().expect("bias").id,
        ];
        let mut names = TENSOR_NAMES.into_iter();
        ids.map(|id| (id, names.next().expect("eight names")))
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
        let probe = Tensor::<4>::zeros([1, 1, SIDE, SIDE], &device.without_autodiff());
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
}

/// What a model file says of the run that made it. Files from other tools (a PyTorch
/// safetensors) and from builds before it was recorded have none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Provenance {
    pub epochs: usize,
    pub seed: u64,
    pub batch: usize,
    /// The final evaluation (`Test loss` / `Test accuracy`), on this many test images.
    pub test_images: usize,
    pub test_loss: f64,
    pub test_accuracy: f64,
}

impl Provenance {
    const KEYS: [&str; 6] = [
        "epochs",
        "seed",
        "batch",
        "test_images",
        "test_loss",
        "test_accuracy",
    ];

    /// The figures as (key, value) text, numbers in their shortest exact form.
    pub fn entries(&self) -> [(&'static str, String); 6] {
        let values = [
            self.epochs.to_string(),
            self.seed.to_string(),
            self.batch.to_string(),
            self.test_images.to_string(),
            self.test_loss.to_string(),
            self.test_accuracy.to_string(),
        ];
        let mut keys = Self::KEYS.into_iter();
        values.map(|v| (keys.next().expect("a key per value"), v))
    }

    fn from_entries(get: impl Fn(&str) -> Option<String>) -> Option<Provenance> {
        Some(Provenance {
            epochs: get("epochs")?.parse().ok()?,
            seed: get("seed")?.parse().ok()?,
            batch: get("batch")?.parse().ok()?,
            test_images: get("test_images")?.parse().ok()?,
            test_loss: get("test_loss")?.parse().ok()?,
            test_accuracy: get("test_accuracy")?.parse().ok()?,
        })
    }
}

/// A model file's contents.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    pub params: Params,
    pub provenance: Option<Provenance>,
}

/// The model file holding `params`: a burnpack of the eight tensors as burn's own module
/// record writes them (names, ids 1..=8, f32), so burn loads it as a `Model` record, plus the
/// run's figures as metadata.
pub fn file_bytes(params: &Params, provenance: Option<&Provenance>) -> Result<Vec<u8>> {
    let tensors = params
        .named()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape, values))| {
            f32_tensor(name.to_string(), shape, Some(i as u64 + 1), values)
        })
        .collect();
    let mut writer = Writer::new(tensors);
    for (key, value) in provenance.iter().flat_map(|p| p.entries()) {
        writer = writer.with_metadata(key, &value);
    }
    let bytes = writer.into_bytes().map_err(|e| Error::Serialise {
        what: "model",
        reason: e.to_string(),
    })?;
    Ok(bytes.to_vec())
}

/// Reads a model file written by [`file_bytes`] (or by burn from a [`Model`]); `path` is for
/// messages only. The file is held to exactly that layout ([`burnpack::check`]) before burn's
/// reader parses it.
pub fn from_file_bytes(bytes: Vec<u8>, path: &Path) -> Result<ModelFile> {
    let fail = |reason: String| Error::Model {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    let tensors = tensor_layout("");
    let layout = Layout {
        kind: "model file",
        tensors: &tensors,
        max_metadata: MAX_MODEL_METADATA,
        max_string: MAX_NAME_OR_FIGURE,
    };
    burnpack::check(&bytes, &layout).map_err(|reason| {
        fail(format!(
            "neither an mnist-cnn model file nor a safetensors file ({reason})"
        ))
    })?;
    let reader = Reader::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| fail(format!("not a burnpack file ({})", escaped(&e.to_string()))))?;
    let params = Params::from_named(|name, shape| {
        f32s(&reader.tensor_data(name).ok()?, shape.iter().product())
    })
    .ok_or_else(|| fail("the file does not hold this network's eight tensors".into()))?;
    let metadata = reader.metadata();
    let provenance = Provenance::from_entries(|key| metadata.get(key).cloned());
    Ok(ModelFile { params, provenance })
}

/// A model file's metadata strings are short numbers.
const MAX_NAME_OR_FIGURE: usize = 64;

/// The eight tensors' names (after `prefix`) and shapes, as a file of them must declare them.
pub(crate) fn tensor_layout(prefix: &str) -> Vec<(String, Vec<usize>)> {
    tensor_shapes()
        .into_iter()
        .map(|(name, shape)| (format!("{prefix}{name}"), shape))
        .collect()
}

/// The bytes of a model or checkpoint file, at most `max` of them ([`fsutil::read_regular`]).
pub fn read_bytes(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    fsutil::read_regular(path, max, what).map_err(|e| Error::Model {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A burnpack tensor of little-endian f32 values.
pub(crate) fn f32_tensor(
    name: String,
    shape: Vec<usize>,
    param_id: Option<u64>,
    values: &[f32],
) -> burn_pack::Tensor {
    let bytes = le_bytes(values);
    burn_pack::Tensor::new(
        name,
        DType::F32,
        shape,
        param_id,
        Bytes::from_bytes_vec(bytes),
    )
}

/// f32 values as little-endian bytes: how burnpack, safetensors and ONNX all store them.
pub(crate) fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian f32 values, exactly `len` of them.
pub(crate) fn f32s(bytes: &[u8], len: usize) -> Option<Vec<f32>> {
    (bytes.len() == 4 * len).then(|| {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
}

/// Categorical cross-entropy of each sample (burn's engine trains on this; rows of host
/// logits are scored by [`crate::metrics::cross_entropy`]): `-log softmax(logits)[label]`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    log_softmax(logits, 1)
        .gather(1, labels.unsqueeze_dim(1))
        .squeeze_dim::<1>(1)
        .neg()
}

/// Tensor `i` of `named` ([`Params::named`]) as a parameter with the fixed id `i + 1`.
fn param<const D: usize>(
    named: &[(&str, Vec<usize>, &[f32]); 8],
    i: usize,
    device: &Device,
) -> Param<Tensor<D>> {
    let (_, shape, values) = &named[i];
    let data = TensorData::new(values.to_vec(), shape.clone());
    let tensor = Tensor::from_data(data, device);
    let id = ParamId::from(i as u64 + 1);
    let tensor = if tensor.device().is_autodiff() {
        tensor.require_grad()
    } else {
        tensor
    };
    Param::initialized(id, tensor)
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
        assert_eq!(model.num_params(), crate::network::PARAMETERS);
        assert_eq!(group_thousands(crate::network::PARAMETERS), "1,199,882");
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
    fn params_round_trip_through_burns_modules() {
        let params = Params::glorot(7).with_random_biases(2);
        let model = Model::from_params(&params, &Device::default());
        assert_eq!(model.params(), params);
        let ids: Vec<u64> = model.param_ids().iter().map(|(id, _)| id.val()).collect();
        assert_eq!(ids, (1..=8).collect::<Vec<u64>>());
        // On the autodiff device too, where the parameters are trainable.
        let trainable = Model::from_params(&params, &Device::default().autodiff());
        assert!(trainable.dense1.weight.val().is_require_grad());
        assert_eq!(trainable.params(), params);
    }

    fn provenance() -> Provenance {
        Provenance {
            epochs: 12,
            seed: 1337,
            batch: 128,
            test_images: 10_000,
            test_loss: 0.02566789763210819,
            test_accuracy: 0.9913,
        }
    }

    #[test]
    fn same_params_same_bytes_and_the_run_survives_the_round_trip() {
        let params = Params::glorot(3).with_random_biases(1);
        let a = file_bytes(&params, Some(&provenance())).unwrap();
        assert_eq!(a, file_bytes(&params, Some(&provenance())).unwrap());
        assert_ne!(
            a,
            file_bytes(&Params::glorot(4), Some(&provenance())).unwrap()
        );
        let read = from_file_bytes(a, Path::new("m.bin")).unwrap();
        assert_eq!(read.params, params);
        assert_eq!(read.provenance, Some(provenance()));
        let bare = file_bytes(&params, None).unwrap();
        assert_eq!(
            from_file_bytes(bare, Path::new("m.bin"))
                .unwrap()
                .provenance,
            None
        );
    }

    #[test]
    fn the_file_is_burns_own_module_record() {
        use burn::store::ModuleRecord;
        let device = Device::default();
        let params = Params::glorot(5).with_random_biases(6);
        // What burn writes for the module (and what earlier builds saved) reads back...
        let burns = Model::from_params(&params, &device)
            .into_record()
            .into_bytes()
            .unwrap()
            .to_vec();
        let read = from_file_bytes(burns.clone(), Path::new("m.bin")).unwrap();
        assert_eq!(read.params, params);
        // ...and without a run, the file is byte for byte burn's; with one, burn still loads it.
        assert_eq!(file_bytes(&params, None).unwrap(), burns);
        let ours = file_bytes(&params, Some(&provenance())).unwrap();
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(ours)).unwrap();
        let loaded = Model::from_params(&Params::zeros(), &device)
            .try_load_record(record)
            .unwrap();
        assert_eq!(loaded.params(), params);
    }

    #[test]
    fn cross_entropy_by_hand() {
        let device = Device::default();
        let logits = Tensor::<2>::from_data(
            TensorData::from([
                [2.0f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0; 10],
            ]),
            &device,
        );
        let labels = Tensor::<1, Int>::from_data(TensorData::from([0i64, 3]), &device);
        let loss: Vec<f32> = cross_entropy(logits, labels)
            .into_data()
            .try_to_vec()
            .unwrap();
        let first = -(2f32.exp() / (2f32.exp() + 9.0)).ln();
        assert!((loss[0] - first).abs() < 1e-6, "{loss:?}");
        assert!((loss[1] - 10f32.ln()).abs() < 1e-6, "{loss:?}");
    }

    #[test]
    fn bad_model_bytes_are_errors() {
        let path = Path::new("m.bin");
        let good = file_bytes(&Params::glorot(5), None).unwrap();
        for bad in [
            Vec::new(),
            b"hello, world".to_vec(),
            good[..good.len() / 2].to_vec(),
            good[..20].to_vec(),
        ] {
            let err = from_file_bytes(bad, path).unwrap_err();
            assert!(matches!(err, Error::Model { .. }), "{err}");
        }
    }
}
