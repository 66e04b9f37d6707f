//! Reader for the IDX format MNIST is published in, gzipped or plain.
//!
//! The header is validated before anything is allocated from it, and the payload must be
//! exactly the size the header declares. The SHA-256 of the decompressed bytes is computed on
//! the way, so the caller can tell canonical MNIST from another IDX set without a second pass.

use std::io::{BufRead, BufReader, Read};

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use crate::error::IdxFault;

/// MNIST's image sides, pixels and classes: the network's input and output sizes.
pub use crate::network::{NUM_CLASSES, PIXELS, SIDE as COLS, SIDE as ROWS};
pub const IMAGE_MAGIC: u32 = 2051;
pub const LABEL_MAGIC: u32 = 2049;

/// Far above any MNIST-format set (EMNIST is ~800k); stops absurd headers early.
const MAX_ITEMS: u64 = 10_000_000;
/// Reserve at most this much up front; the rest grows only as real bytes arrive.
const MAX_PREALLOC: u64 = 1 << 20;

/// Which of the two IDX layouts a file must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Images,
    Labels,
}

impl Kind {
    fn magic(self) -> u32 {
        match self {
            Kind::Images => IMAGE_MAGIC,
            Kind::Labels => LABEL_MAGIC,
        }
    }

    fn header_len(self) -> usize {
        match self {
            Kind::Images => 16,
            Kind::Labels => 8,
        }
    }

    fn item_len(self) -> u64 {
        match self {
            Kind::Images => PIXELS as u64,
            Kind::Labels => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Images => "image",
            Kind::Labels => "label",
        }
    }
}

/// A decoded IDX file: `count` items, `data` holds `count * 784` pixels or `count` labels.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub kind: Kind,
    pub count: usize,
    pub data: Vec<u8>,
    /// SHA-256 (lower-case hex) of the decompressed file, header included.
    pub sha256: String,
}

/// Decodes an IDX file of the given kind from `reader`, gunzipping it if it starts with the
/// gzip magic bytes.
pub fn decode(kind: Kind, reader: impl Read) -> Result<Decoded, IdxFault> {
    let mut buffered = BufReader::new(reader);
    let head = buffered
        .fill_buf()
        .map_err(|e| IdxFault::Read(e.to_string()))?;
    if head.is_empty() {
        return Err(IdxFault::Empty);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        decode_plain(kind, GzDecoder::new(buffered), true)
    } else {
        decode_plain(kind, buffered, false)
    }
}

fn decode_plain(kind: Kind, mut reader: impl Read, gzipped: bool) -> Result<Decoded, IdxFault> {
    let read_fault = |e: std::io::Error| {
        if gzipped {
            IdxFault::Gzip(e.to_string())
        } else {
            IdxFault::Read(e.to_string())
        }
    };

    let mut header = vec![0u8; kind.header_len()];
    let got = read_up_to(&mut reader, &mut header).map_err(read_fault)?;
    if got == 0 {
        return Err(IdxFault::Empty);
    }
    let word = |i: usize| u32::from_be_bytes(header[4 * i..4 * i + 4].try_into().unwrap());
    // The magic first: a label file given as images is "wrong kind", not "short header".
    if got >= 4 && word(0) != kind.magic() {
        return Err(IdxFault::Magic {
            found: word(0),
            expected: kind.magic(),
            kind: kind.name(),
        });
    }
    if got < header.len() {
        return Err(IdxFault::ShortHeader(got, header.len()));
    }
    let count = u64::from(word(1));
    if kind == Kind::Images && (word(2) as usize != ROWS || word(3) as usize != COLS) {
        return Err(IdxFault::ImageSize {
            rows: word(2),
            cols: word(3),
        });
    }
    if count > MAX_ITEMS {
        return Err(IdxFault::TooLarge(count));
    }
    let expected = count * kind.item_len();

    // One byte past the declared size tells "too long" from "exact" without reading it all.
    let mut data = Vec::with_capacity(expected.min(MAX_PREALLOC) as usize);
    reader
        .by_ref()
        .take(expected + 1)
        .read_to_end(&mut data)
        .map_err(read_fault)?;
    let found = data.len() as u64;
    if found < expected {
        return Err(IdxFault::Truncated { found, expected });
    }
    if found > expected {
        return Err(IdxFault::TrailingBytes { expected });
    }
    if kind == Kind::Labels
        && let Some(index) = data.iter().position(|&l| l as usize >= NUM_CLASSES)
    {
        return Err(IdxFault::Label {
            index,
            label: data[index],
        });
    }

    let mut hasher = Sha256::new();
    hasher.update(&header);
    hasher.update(&data);
    Ok(Decoded {
        kind,
        count: count as usize,
        data,
        sha256: hex(&hasher.finalize()),
    })
}

/// Like `read_exact`, but reports how much was read instead of failing on a short read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes images or labels as a plain IDX file; the inverse of [`decode`].
pub fn encode(kind: Kind, data: &[u8]) -> Vec<u8> {
    let count = data.len() as u64 / kind.item_len();
    let mut out = Vec::with_capacity(kind.header_len() + data.len());
    out.extend_from_slice(&kind.magic().to_be_bytes());
    out.extend_from_slice(&(count as u32).to_be_bytes());
    if kind == Kind::Images {
        out.extend_from_slice(&(ROWS as u32).to_be_bytes());
        out.extend_from_slice(&(COLS as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn images(n: usize) -> Vec<u8> {
        encode(
            Kind::Images,
            &(0..n * PIXELS).map(|i| i as u8).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn round_trips_plain_and_gzipped() {
        let file = images(3);
        for bytes in [file.clone(), gzip(&file)] {
            let d = decode(Kind::Images, &bytes[..]).unwrap();
            assert_eq!(d.count, 3);
            assert_eq!(d.data, file[16..]);
            assert_eq!(d.sha256.len(), 64);
        }
        let labels = encode(Kind::Labels, &[0, 9, 4]);
        let d = decode(Kind::Labels, &gzip(&labels)[..]).unwrap();
        assert_eq!((d.count, d.data), (3, vec![0, 9, 4]));
    }

    #[test]
    fn digest_is_of_the_decompressed_bytes() {
        // `sha256sum` of the 8 bytes 00 00 08 01 00 00 00 00 (a label file with no labels).
        let known = "d49cd2c2d09f5f0c8ca44512f4e25d3228558f0c6b7b333cff567d2959802796";
        let empty = encode(Kind::Labels, &[]);
        assert_eq!(decode(Kind::Labels, &empty[..]).unwrap().sha256, known);
        assert_eq!(
            decode(Kind::Labels, &gzip(&empty)[..]).unwrap().sha256,
            known
        );
    }

    #[test]
    fn empty_file() {
        assert_eq!(decode(Kind::Images, &[][..]).unwrap_err(), IdxFault::Empty);
        assert_eq!(
            decode(Kind::Images, &gzip(&[])[..]).unwrap_err(),
            IdxFault::Empty
        );
    }

    #[test]
    fn short_header() {
        let file = images(1);
        assert_eq!(
            decode(Kind::Images, &file[..10]).unwrap_err(),
            IdxFault::ShortHeader(10, 16)
        );
    }

    #[test]
    fn wrong_magic_names_both_numbers() {
        let labels = encode(Kind::Labels, &[1, 2]);
        let err = decode(Kind::Images, &labels[..]).unwrap_err();
        assert!(matches!(
            err,
            IdxFault::Magic {
                found: 2049,
                expected: 2051,
                ..
            }
        ));
    }

    #[test]
    fn wrong_image_size() {
        let mut file = images(1);
        file[8..12].copy_from_slice(&32u32.to_be_bytes());
        assert_eq!(
            decode(Kind::Images, &file[..]).unwrap_err(),
            IdxFault::ImageSize { rows: 32, cols: 28 }
        );
    }

    #[test]
    fn truncated_payload() {
        let file = images(2);
        let cut = &file[..file.len() - 1];
        assert_eq!(
            decode(Kind::Images, cut).unwrap_err(),
            IdxFault::Truncated {
                found: 2 * PIXELS as u64 - 1,
                expected: 2 * PIXELS as u64
            }
        );
    }

    #[test]
    fn trailing_bytes() {
        let mut file = encode(Kind::Labels, &[1, 2, 3]);
        file.push(0);
        assert_eq!(
            decode(Kind::Labels, &file[..]).unwrap_err(),
            IdxFault::TrailingBytes { expected: 3 }
        );
    }

    #[test]
    fn label_out_of_range() {
        let file = encode(Kind::Labels, &[1, 10, 3]);
        assert_eq!(
            decode(Kind::Labels, &file[..]).unwrap_err(),
            IdxFault::Label {
                index: 1,
                label: 10
            }
        );
    }

    #[test]
    fn huge_header_fails_without_allocating_it() {
        // Claims 4 billion images with a 16-byte body: refused, and it cannot have reserved
        // 3 TB on the way (the test would abort if it had).
        let mut file = images(0);
        file[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode(Kind::Images, &file[..]).unwrap_err(),
            IdxFault::TooLarge(u32::MAX as u64)
        );
        let mut file = encode(Kind::Labels, &[]);
        file[4..8].copy_from_slice(&5_000_000u32.to_be_bytes());
        assert!(matches!(
            decode(Kind::Labels, &file[..]).unwrap_err(),
            IdxFault::Truncated { found: 0, .. }
        ));
    }

    #[test]
    fn corrupt_gzip() {
        let mut gz = gzip(&images(2));
        let mid = gz.len() / 2;
        gz[mid] ^= 0xff;
        gz.truncate(gz.len() - 4);
        assert!(matches!(
            decode(Kind::Images, &gz[..]).unwrap_err(),
            IdxFault::Gzip(_) | IdxFault::Truncated { .. }
        ));
    }
}
