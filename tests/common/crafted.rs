//! Hostile files as an attacker would craft them, built from their parts here (no binary blobs
//! are committed): burnpack model files with hand-written CBOR metadata, safetensors files with
//! hand-written JSON headers, checkpoints that declare impossible runs, a PNG whose ICC
//! profile inflates a thousandfold.

#![allow(dead_code)]

use std::io::Write;

use mnist_cnn::checkpoint::{Checkpoint, TrainerState};
use mnist_cnn::network::Params;
use mnist_cnn::settings::Settings;

/// One tensor as a burnpack's metadata declares it.
#[derive(Clone)]
pub struct Declared {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Byte range within the data section.
    pub range: (u64, u64),
}

/// A burnpack model file in parts: what it declares, and the bytes behind it.
#[derive(Clone)]
pub struct Pack {
    pub tensors: Vec<Declared>,
    pub metadata: Vec<(String, String)>,
    pub data: Vec<u8>,
}

impl Pack {
    /// The eight tensors of `params`, as mnist-cnn writes them: f32, burn's shapes, each
    /// range starting on 256 bytes.
    pub fn model(params: &Params) -> Pack {
        let mut data = Vec::new();
        let tensors = params
            .named()
            .into_iter()
            .map(|(name, shape, values)| {
                data.resize(data.len().next_multiple_of(256), 0);
                let start = data.len() as u64;
                data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
                Declared {
                    name: name.to_string(),
                    dtype: "F32".into(),
                    shape: shape.iter().map(|&d| d as u64).collect(),
                    range: (start, data.len() as u64),
                }
            })
            .collect();
        Pack {
            tensors,
            metadata: vec![("seed".into(), "1".into())],
            data,
        }
    }

    pub fn tensor(&mut self, name: &str) -> &mut Declared {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap()
    }

    /// The file: the 10-byte header, the CBOR metadata, padding to 256 bytes, the data.
    pub fn bytes(&self) -> Vec<u8> {
        let mut meta = Vec::new();
        head(&mut meta, MAP, 1 + u64::from(!self.metadata.is_empty()));
        text(&mut meta, "tensors");
        head(&mut meta, MAP, self.tensors.len() as u64);
        for t in &self.tensors {
            text(&mut meta, &t.name);
            head(&mut meta, MAP, 3);
            text(&mut meta, "dtype");
            text(&mut meta, &t.dtype);
            text(&mut meta, "shape");
            head(&mut meta, ARRAY, t.shape.len() as u64);
            for &d in &t.shape {
                head(&mut meta, UINT, d);
            }
            text(&mut meta, "data_offsets");
            head(&mut meta, ARRAY, 2);
            head(&mut meta, UINT, t.range.0);
            head(&mut meta, UINT, t.range.1);
        }
        if !self.metadata.is_empty() {
            text(&mut meta, "metadata");
            head(&mut meta, MAP, self.metadata.len() as u64);
            for (key, value) in &self.metadata {
                text(&mut meta, key);
                text(&mut meta, value);
            }
        }
        let mut out = b"NRUB".to_vec();
        out.extend(1u16.to_le_bytes());
        out.extend((meta.len() as u32).to_le_bytes());
        out.extend(meta);
        out.resize(out.len().next_multiple_of(256), 0);
        out.extend(&self.data);
        out
    }
}

const UINT: u8 = 0;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

/// A CBOR item's head: major type and argument, in the shortest form.
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let major = major << 5;
    match n {
        0..=23 => out.push(major | n as u8),
        24..=0xff => out.extend([major | 24, n as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend(n.to_be_bytes());
        }
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, TEXT, s.len() as u64);
    out.extend(s.as_bytes());
}

/// A safetensors file: an 8-byte header length, the JSON header as given, then `data`.
pub fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// The JSON header of the eight tensors in PyTorch's layouts, f32, one after another; `name`
/// renames each, so a name can be repeated or poisoned. Also the data's length.
pub fn safetensors_header(name: impl Fn(&str) -> String) -> (String, usize) {
    let mut offset = 0;
    let entries: Vec<String> = mnist_cnn::network::TENSOR_NAMES
        .iter()
        .map(|n| {
            let shape = mnist_cnn::formats::torch_shape(n).unwrap();
            let len = 4 * shape.iter().product::<usize>();
            let entry = format!(
                "{}:{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[{offset},{}]}}",
                serde_json::to_string(&name(n)).unwrap(),
                offset + len
            );
            offset += len;
            entry
        })
        .collect();
    (format!("{{{}}}", entries.join(",")), offset)
}

/// A checkpoint one epoch into a run of `settings`, on 6 training and 4 test images.
pub fn checkpoint(settings: Settings) -> Checkpoint {
    Checkpoint {
        settings,
        epochs_done: 1,
        train_len: 6,
        test_len: 4,
        state: TrainerState::fresh(1),
        history: mnist_cnn::history::from_csv(
            "epoch,loss,acc,val_loss,val_acc,seconds\n1,0.5,0.8,0.4,0.9,12.5",
        )
        .unwrap(),
    }
}

/// Settings a checkpoint may hold: 2 epochs of batches of 3.
pub const SMALL_RUN: Settings = Settings {
    epochs: 2,
    batch: 3,
    lr: 1.0,
    seed: 1,
};

/// A 28x28 grey PNG of a drawn stroke with an iCCP chunk whose profile inflates to `inflated`
/// bytes of zeros: a megabyte on the wire for each gigabyte a decoder would allocate.
pub fn png_with_icc_bomb(inflated: usize) -> Vec<u8> {
    use super::png_chunk as chunk;
    let mut png = super::png_grey_header(28, 28);
    // iCCP: a profile name, a NUL, compression method 0, then the zlib stream.
    let mut iccp = b"bomb\0\0".to_vec();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    let mut left = inflated;
    while left > 0 {
        let n = left.min(zeros.len());
        z.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    iccp.extend(z.finish().unwrap());
    chunk(&mut png, b"iCCP", &iccp);
    // A vertical stroke of white on black: a "1".
    let mut rows = Vec::new();
    for _ in 0..28 {
        rows.push(0);
        rows.extend((0..28).map(|x| if (12..16).contains(&x) { 255 } else { 0 }));
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&rows).unwrap();
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}
