//! safetensors files (Hugging Face's format, what PyTorch users save weights in) of the
//! eight tensors in PyTorch's layouts: what `export` writes and what every command reads as
//! a model.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{TorchTensor, from_torch, torch_shape, torch_tensors};
use crate::error::{Error, Result};
use crate::escape::escaped;
use crate::model::{f32s, le_bytes};
use crate::network::{Params, TENSOR_NAMES};

/// Whether `bytes` start as a safetensors file does: an 8-byte header length, then a JSON
/// object. (A burnpack starts with its own magic.)
pub fn looks_like(bytes: &[u8]) -> bool {
    bytes.len() > 8 && bytes[8] == b'{'
}

/// The safetensors file of `params`, with the metadata `torch`'s `save_file` writes. One
/// metadata key only: the crate writes its metadata map in hash order, so more would vary.
pub fn to_bytes(params: &Params) -> Result<Vec<u8>> {
    let tensors = torch_tensors(params);
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| le_bytes(&t.values)).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b): (&TorchTensor, _)| {
            TensorView::new(Dtype::F32, t.shape.clone(), b).map(|view| (t.name, view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(fail)?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(fail)
}

fn fail(e: safetensors::SafeTensorError) -> Error {
    Error::Serialise {
        what: "safetensors file",
        reason: e.to_string(),
    }
}

/// A safetensors header (JSON: each tensor's dtype, shape and byte range, and the optional
/// `__metadata__`) in bytes at most: the eight tensors' take about 800.
const MAX_HEADER: u64 = 64 << 10;
/// Top-level entries a header may have: the eight tensors, `__metadata__`, and room for a few
/// extra tensors to be named in the refusal.
const MAX_ENTRIES: usize = 64;

/// The parameters held by a safetensors file of the eight tensors in PyTorch's layouts, or
/// why it holds something else, naming the tensor and the shape expected.
pub fn read(bytes: &[u8]) -> std::result::Result<Params, String> {
    check_header(bytes)?;
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a safetensors file ({})", escaped(&e.to_string())))?;
    let mut names = file.names();
    names.sort();
    if let Some(extra) = names.iter().find(|n| !TENSOR_NAMES.contains(n)) {
        return Err(format!(
            "the safetensors file has a tensor `{}` that this network does not ({})",
            escaped(extra),
            TENSOR_NAMES.join(", ")
        ));
    }
    let tensor = |name: &str| -> std::result::Result<Vec<f32>, String> {
        let expected = torch_shape(name).expect("one of the eight names");
        let view = file.tensor(name).map_err(|_| {
            format!("the safetensors file has no tensor `{name}` (shape {expected:?})")
        })?;
        if view.shape() != expected {
            return Err(format!(
                "tensor `{name}` has shape {:?}; expected {expected:?}",
                view.shape()
            ));
        }
        if view.dtype() != Dtype::F32 {
            return Err(format!(
                "tensor `{name}` is {:?}; expected F32 (in PyTorch: `.float()` before saving)",
                view.dtype()
            ));
        }
        Ok(f32s(view.data(), expected.iter().product()).expect("the shape checked above"))
    };
    // Every name checked in order, so the first problem is the one reported.
    let mut values = TENSOR_NAMES
        .iter()
        .map(|name| tensor(name))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(from_torch(|name| {
        let i = TENSOR_NAMES.iter().position(|n| *n == name)?;
        Some(std::mem::take(&mut values[i]))
    })
    .expect("every tensor checked above"))
}

/// What the safetensors crate does not bound, checked before it parses: the header's declared
/// length (the crate allows 100 MB of JSON, which serde turns into gigabytes of shape arrays
/// or metadata keys), the number of entries, and a name given twice (the crate keeps the last).
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let declared = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("eight bytes")));
    let Some(declared) = declared.filter(|&n| n <= MAX_HEADER) else {
        return Err(format!(
            "not a safetensors file (its header declares more than the {MAX_HEADER} bytes \
             eight tensors need)"
        ));
    };
    let Some(json) = bytes.get(8..8 + declared as usize) else {
        return Err("not a safetensors file (its header is cut short)".into());
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    serde::Deserializer::deserialize_map(&mut de, UniqueKeys)
        .map_err(|e| format!("not a safetensors file ({})", escaped(&e.to_string())))
}

/// Walks a JSON object's keys without keeping values, refusing a repeated key or more than
/// [`MAX_ENTRIES`] of them.
struct UniqueKeys;

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object of tensors")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::{Error, IgnoredAny};
        let mut keys: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(A::Error::custom(format!(
                    "`{}` is named twice",
                    escaped(&key)
                )));
            }
            if keys.len() == MAX_ENTRIES {
                return Err(A::Error::custom(format!(
                    "more than {MAX_ENTRIES} entries in its header"
                )));
            }
            keys.push(key);
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file of `tensors` (name, shape, dtype), values all 0.5.
    fn file_of(tensors: &[(&str, Vec<usize>, Dtype)]) -> Vec<u8> {
        let data: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, shape, dtype)| {
                let n: usize = shape.iter().product();
                match dtype {
                    Dtype::F32 => le_bytes(&vec![0.5; n]),
                    _ => vec![0; n * dtype.bitsize() / 8],
                }
            })
            .collect();
        let views: Vec<_> = tensors
            .iter()
            .zip(&data)
            .map(|((name, shape, dtype), d)| {
                (*name, TensorView::new(*dtype, shape.clone(), d).unwrap())
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn the_eight() -> Vec<(&'static str, Vec<usize>, Dtype)> {
        TENSOR_NAMES
            .iter()
            .map(|n| (*n, torch_shape(n).unwrap(), Dtype::F32))
            .collect()
    }

    #[test]
    fn export_import_export_is_the_same_bytes() {
        let params = Params::glorot(11).with_random_biases(12);
        let bytes = to_bytes(&params).unwrap();
        assert!(looks_like(&bytes));
        let read_back = read(&bytes).unwrap();
        assert_eq!(read_back, params);
        assert_eq!(to_bytes(&read_back).unwrap(), bytes);
        let file = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("dense1.weight").unwrap().shape(), [128, 9216]);
    }

    #[test]
    fn missing_extra_misshapen_and_half_tensors_are_named() {
        assert!(read(&file_of(&the_eight())).is_ok());
        let mut missing = the_eight();
        missing.remove(3);
        assert_eq!(
            read(&file_of(&missing)).unwrap_err(),
            "the safetensors file has no tensor `conv2.bias` (shape [64])"
        );
        let mut extra = the_eight();
        extra.push(("bn.running_mean", vec![64], Dtype::F32));
        assert!(
            read(&file_of(&extra))
                .unwrap_err()
                .starts_with("the safetensors file has a tensor `bn.running_mean` that this network does not (conv1.weight, ")
        );
        let mut misshapen = the_eight();
        misshapen[4].1 = vec![9216, 128];
        assert_eq!(
            read(&file_of(&misshapen)).unwrap_err(),
            "tensor `dense1.weight` has shape [9216, 128]; expected [128, 9216]"
        );
        let mut half = the_eight();
        half[0].2 = Dtype::F16;
        assert!(
            read(&file_of(&half))
                .unwrap_err()
                .starts_with("tensor `conv1.weight` is F16; expected F32")
        );
        let bytes = to_bytes(&Params::glorot(1)).unwrap();
        for bad in [&bytes[..bytes.len() - 1], &bytes[..100], b"{}".as_slice()] {
            assert!(read(bad).unwrap_err().starts_with("not a safetensors file"));
        }
    }
}
