//! The model file (a burnpack of the eight tensors and what its run measured, read and written
//! without any engine) and the Keras-style summary of the network. The network as burn
//! modules is [`crate::engine`]'s `modules` (the `flex` feature).

use std::path::Path;

use burn_pack::{Bytes, DType, Reader, Writer};

use crate::error::{Error, Result};
use crate::escape::escaped;
use crate::formats::burnpack::{self, Layout};
use crate::fsutil;
use crate::network::{
    CONV1_FILTERS, CONV1_SIDE, CONV2_FILTERS, CONV2_SIDE, FEATURES, HIDDEN,
    LAYERS as NETWORK_LAYERS, NUM_CLASSES, PARAMETERS, POOLED_SIDE, Params, tensor_shapes,
};

/// A model file's size at most: its 4.8 MB of weights and a few hundred bytes of metadata
/// (a safetensors file of the same weights too).
pub const MAX_MODEL_BYTES: u64 = 8 << 20;
/// A model file's metadata (the run's six figures) in bytes at most.
const MAX_MODEL_METADATA: usize = 64 << 10;

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

/// Each layer's output shape without the batch dimension, channels-first as this network
/// computes them (burn's modules give the same: `engine::modules`' tests).
pub fn output_shapes() -> [Vec<usize>; 8] {
    let conv1 = vec![CONV1_FILTERS, CONV1_SIDE, CONV1_SIDE];
    let conv2 = vec![CONV2_FILTERS, CONV2_SIDE, CONV2_SIDE];
    let pooled = vec![CONV2_FILTERS, POOLED_SIDE, POOLED_SIDE];
    [
        conv1,
        conv2,
        pooled.clone(),
        pooled,
        vec![FEATURES],
        vec![HIDDEN],
        vec![HIDDEN],
        vec![NUM_CLASSES],
    ]
}

/// A table in the layout of Keras's `model.summary()`, from the network's sizes alone (no
/// engine is needed to print it).
pub fn summary() -> String {
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
    let weights = |l: usize| NETWORK_LAYERS[l].weight_len() + NETWORK_LAYERS[l].bias_len();
    let params = [weights(0), weights(1), 0, 0, 0, weights(2), 0, weights(3)];
    let mut out = Vec::new();
    out.push("_".repeat(WIDTH));
    out.push(row(["Layer (type)", "Output Shape", "Param #"]));
    out.push("=".repeat(WIDTH));
    for (i, ((name, kind), shape)) in LAYERS.iter().zip(output_shapes()).enumerate() {
        let label = format!("{name} ({kind})");
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = format!("(None, {})", dims.join(", "));
        out.push(row([&label, &shape, &params[i].to_string()]));
        let rule = if i + 1 == LAYERS.len() { "=" } else { "_" };
        out.push(rule.repeat(WIDTH));
    }
    let total = group_thousands(PARAMETERS);
    out.push(format!("Total params: {total}"));
    out.push(format!("Trainable params: {total}"));
    out.push("Non-trainable params: 0".into());
    out.push("_".repeat(WIDTH));
    out.join("\n")
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

/// Reads a model file written by [`file_bytes`] (or by burn from the network's module record); `path` is for
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
pub(crate) mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped_as_keras_does() {
        assert_eq!(group_thousands(PARAMETERS), "1,199,882");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
    }

    /// The seed-1337 run's figures, for the tests of model files.
    pub(crate) fn provenance() -> Provenance {
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
    fn summary_lists_layers_shapes_and_counts() {
        let summary = summary();
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
