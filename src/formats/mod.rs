//! The model outside mnist-cnn: its file formats and the layouts other tools expect.
//!
//! A model file is read here whatever wrote it: our own burnpack ([`crate::model`]) or a
//! safetensors file in PyTorch's layouts ([`safetensors`]), told apart by their first bytes.
//! [`export`] writes the other direction: safetensors, or an ONNX graph ([`onnx`]).

pub mod burnpack;
pub mod onnx;
mod onnx_proto;
pub mod safetensors;

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::{self, ModelFile};
use crate::network::{LAYERS, Params, TENSOR_NAMES};

/// What `export` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An ONNX graph of standard operators, for ONNX Runtime, OpenVINO, tract, ….
    Onnx,
    /// The eight tensors in PyTorch's layouts, for `load_state_dict`.
    Safetensors,
}

impl Format {
    /// The format a file name asks for by its extension.
    pub fn from_extension(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "onnx" => Some(Format::Onnx),
            "safetensors" => Some(Format::Safetensors),
            _ => None,
        }
    }
}

/// Reads a model file: mnist-cnn's own, or a safetensors file of PyTorch-layout weights.
pub fn load(path: &Path) -> Result<ModelFile> {
    from_bytes(
        model::read_bytes(path, model::MAX_MODEL_BYTES, "a model file")?,
        path,
    )
}

/// [`load`] of a file's bytes; `path` is for messages only. Weights that are not finite
/// numbers are refused, naming the first such tensor.
pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<ModelFile> {
    let fail = |reason| Error::Model {
        path: path.to_path_buf(),
        reason,
    };
    let model = if safetensors::looks_like(&bytes) {
        ModelFile {
            params: safetensors::read(&bytes).map_err(fail)?,
            provenance: None,
        }
    } else {
        model::from_file_bytes(bytes, path)?
    };
    if let Some((name, count)) = model.params.non_finite() {
        return Err(fail(format!(
            "tensor `{name}` holds {count} NaN or infinite values; weights must be finite numbers"
        )));
    }
    Ok(model)
}

/// The parameters of a model file, whatever its format ([`load`]).
pub fn read_params(path: &Path) -> Result<Params> {
    Ok(load(path)?.params)
}

/// The bytes of `model` in `format`.
pub fn export(model: &ModelFile, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Onnx => Ok(onnx::to_bytes(model)),
        Format::Safetensors => safetensors::to_bytes(&model.params),
    }
}

/// One tensor as PyTorch holds it: its name, shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The eight tensors in PyTorch's layouts ([`torch_layout`]); burn flattens the pooled
/// `[64, 12, 12]` maps in PyTorch's order (channel, y, x), so `dense1`'s columns need no
/// reordering.
pub fn torch_tensors(params: &Params) -> Vec<TorchTensor> {
    params
        .named()
        .into_iter()
        .map(|(name, shape, values)| TorchTensor {
            name,
            values: match shape[..] {
                [inputs, outputs] => transpose(values, inputs, outputs),
                _ => values.to_vec(),
            },
            shape: torch_layout(&shape),
        })
        .collect()
}

/// PyTorch's shape for a tensor of burn's shape `shape`: convolutions and biases as burn has
/// them (`[out, in, kh, kw]`, `[out]`), dense weights transposed from burn's
/// `[inputs, outputs]` to `nn.Linear`'s `[out, in]`.
pub fn torch_layout(shape: &[usize]) -> Vec<usize> {
    match shape {
        [inputs, outputs] => vec![*outputs, *inputs],
        _ => shape.to_vec(),
    }
}

/// The shape PyTorch gives tensor `name`, if it is one of the eight.
pub fn torch_shape(name: &str) -> Option<Vec<usize>> {
    let i = TENSOR_NAMES.iter().position(|n| *n == name)?;
    let layer = &LAYERS[i / 2];
    Some(match i % 2 {
        0 => torch_layout(layer.weight),
        _ => vec![layer.bias_len()],
    })
}

/// The parameters from tensors in PyTorch's layouts, `tensor` giving each by name; the
/// inverse of [`torch_tensors`].
pub fn from_torch(mut tensor: impl FnMut(&str) -> Option<Vec<f32>>) -> Option<Params> {
    Params::from_named(|name, shape| {
        let values = tensor(name)?;
        match shape {
            [inputs, outputs] if values.len() == inputs * outputs => {
                Some(transpose(&values, *outputs, *inputs))
            }
            _ => Some(values),
        }
    })
}

/// A row-major `[rows, cols]` matrix as `[cols, rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_layouts_transpose_the_dense_weights_only() {
        let params = Params::glorot(2).with_random_biases(3);
        let torch = torch_tensors(&params);
        let names: Vec<&str> = torch.iter().map(|t| t.name).collect();
        assert_eq!(names, TENSOR_NAMES);
        for t in &torch {
            assert_eq!(Some(t.shape.clone()), torch_shape(t.name), "{}", t.name);
        }
        assert_eq!(torch[2].shape, [64, 32, 3, 3]);
        assert_eq!(torch[2].values, params.conv2.weight);
        // dense1: burn [9216, 128] → PyTorch [128, 9216]; element (out o, in i) moves.
        assert_eq!(torch[4].shape, [128, 9216]);
        let (o, i) = (5, 4000);
        assert_eq!(
            torch[4].values[o * 9216 + i],
            params.dense1.weight[i * 128 + o]
        );
        assert_eq!(torch[7].values, params.dense2.bias);
        let back = from_torch(|name| {
            let t = torch.iter().find(|t| t.name == name)?;
            Some(t.values.clone())
        });
        assert_eq!(back, Some(params));
        assert_eq!(torch_shape("conv1.running_mean"), None);
    }

    #[test]
    fn the_format_comes_from_the_extension() {
        assert_eq!(
            Format::from_extension(Path::new("m.onnx")),
            Some(Format::Onnx)
        );
        assert_eq!(
            Format::from_extension(Path::new("dir/m.SafeTensors")),
            Some(Format::Safetensors)
        );
        assert_eq!(Format::from_extension(Path::new("m.bin")), None);
        assert_eq!(Format::from_extension(Path::new("onnx")), None);
    }
}
