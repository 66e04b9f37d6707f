//! burn's container format (burnpack: model files and checkpoints) checked before burn's reader
//! sees it, so that no file costs more than its own size whatever it declares.
//!
//! A burnpack is a 10-byte header (magic `NRUB`, version, metadata length), CBOR metadata
//! (tensor descriptors, string metadata, typed scalars), padding to 256 bytes, then the
//! tensors' bytes. burn's reader checks byte lengths against shapes, but deserialises whatever
//! the CBOR declares (a map of ten million keys is ten million allocations, and a repeated
//! key silently replaces the first) and accepts any dtype and overlapping ranges. [`check`]
//! walks the CBOR without allocating and holds the file to exactly what this program wrote:
//! the expected tensors, each f32 of the network's shape, inside the file and disjoint; at most
//! [`MAX_ENTRIES`] metadata strings and scalars, no key twice, no string over the layout's
//! limit. Only then does burn's reader parse it.

use crate::escape::escaped;

/// What a file of one kind holds, for [`check`].
pub struct Layout<'a> {
    /// What the file is called in messages ("model file", "checkpoint").
    pub kind: &'static str,
    /// Every tensor's name and shape: exactly these, each f32.
    pub tensors: &'a [(String, Vec<usize>)],
    /// The CBOR metadata's length at most.
    pub max_metadata: usize,
    /// A metadata string's length at most (a checkpoint's history is its long one).
    pub max_string: usize,
}

/// `NRUB`: burn's magic number 0x4255524E, little-endian.
const MAGIC: &[u8; 4] = b"NRUB";
const HEADER: usize = 10;
/// Where the tensors' bytes start: the metadata's end rounded up to this.
const ALIGNMENT: usize = 256;
/// Metadata strings and scalars, each at most (this program writes six and eight).
pub const MAX_ENTRIES: usize = 64;
/// A tensor's name or a metadata key, in bytes at most.
const MAX_NAME: usize = 256;
/// A declared shape's dimensions at most.
const MAX_DIMS: usize = 8;

/// One tensor as the metadata declares it.
struct Declared<'a> {
    name: &'a str,
    dtype: &'a str,
    shape: Vec<u64>,
    /// Byte range within the data section.
    range: (u64, u64),
}

/// Why `bytes` is not a burnpack of `layout`, in one line that names the tensor or field, with
/// anything read from the file escaped; `Ok` when burn's reader may take it.
pub fn check(bytes: &[u8], layout: &Layout<'_>) -> Result<(), String> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err("no burnpack header".into());
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != 1 {
        return Err(format!("burnpack version {version}; this program reads 1"));
    }
    let declared = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    if declared > layout.max_metadata {
        return Err(format!(
            "its metadata declares {declared} bytes; a {} has at most {}",
            layout.kind, layout.max_metadata
        ));
    }
    let Some(metadata) = bytes.get(HEADER..HEADER + declared) else {
        return Err(format!(
            "its metadata declares {declared} bytes, past the end of the file"
        ));
    };
    let mut cbor = Cbor {
        bytes: metadata,
        pos: 0,
    };
    let tensors = cbor.top_level(layout)?;
    if cbor.pos != metadata.len() {
        return Err("bytes after the end of its metadata".into());
    }
    let data_start = (HEADER + declared).div_ceil(ALIGNMENT) * ALIGNMENT;
    let data_len = bytes.len().saturating_sub(data_start) as u64;
    check_tensors(&tensors, layout, data_len)
}

/// The declared tensors against the layout: the same names, f32, the expected shapes, byte
/// ranges of the right length inside the data section and disjoint.
fn check_tensors(
    tensors: &[Declared<'_>],
    layout: &Layout<'_>,
    data_len: u64,
) -> Result<(), String> {
    if let Some(extra) = tensors
        .iter()
        .find(|t| !layout.tensors.iter().any(|(name, _)| name == t.name))
    {
        return Err(format!(
            "it holds a tensor `{}` that this network does not",
            escaped(extra.name)
        ));
    }
    let mut ranges = Vec::with_capacity(tensors.len());
    for (name, shape) in layout.tensors {
        let Some(t) = tensors.iter().find(|t| t.name == name) else {
            return Err(format!("it has no tensor `{name}` (shape {shape:?})"));
        };
        if t.dtype != "F32" {
            return Err(format!(
                "tensor `{name}` is {}; expected F32",
                escaped(t.dtype)
            ));
        }
        if !t.shape.iter().copied().eq(shape.iter().map(|&d| d as u64)) {
            return Err(format!(
                "tensor `{name}` has shape {:?}; expected {shape:?}",
                t.shape
            ));
        }
        let (start, end) = t.range;
        let len = 4 * shape.iter().product::<usize>() as u64;
        if end.checked_sub(start) != Some(len) || end > data_len {
            return Err(format!(
                "tensor `{name}` declares bytes {start}..{end}; it needs {len} bytes inside the \
                 file's {data_len} bytes of data"
            ));
        }
        ranges.push((start, end, name));
    }
    ranges.sort();
    if let Some(pair) = ranges.windows(2).find(|w| w[0].1 > w[1].0) {
        return Err(format!(
            "tensors `{}` and `{}` declare overlapping bytes",
            pair[0].2, pair[1].2
        ));
    }
    Ok(())
}

/// A reader of the CBOR subset burn writes: definite lengths, text keys. Every length is
/// checked against what is left of the metadata before it is used, and nothing is allocated
/// but the list of declared tensors (as many as the layout names).
struct Cbor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// CBOR's major types.
const UINT: u8 = 0;
const NINT: u8 = 1;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const SIMPLE: u8 = 7;

impl<'a> Cbor<'a> {
    /// The next item's major type and argument (a value, a length, or a float's bits).
    fn head(&mut self) -> Result<(u8, u64), String> {
        let first = self.take(1)?[0];
        let (major, info) = (first >> 5, first & 31);
        let arg = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let width = 1 << (info - 24);
                self.take(width)?
                    .iter()
                    .fold(0u64, |v, &b| (v << 8) | u64::from(b))
            }
            31 => return Err("its metadata uses indefinite lengths".into()),
            _ => return Err("its metadata is not valid CBOR".into()),
        };
        Ok((major, arg))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or("its metadata is cut short")?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn expect(&mut self, major: u8, what: &str) -> Result<u64, String> {
        match self.head()? {
            (m, arg) if m == major => Ok(arg),
            _ => Err(format!(
                "its metadata has something else where {what} should be"
            )),
        }
    }

    fn text(&mut self, max: usize, what: &str) -> Result<&'a str, String> {
        let len = self.expect(TEXT, what)?;
        if len > max as u64 {
            return Err(format!("{what} of {len} bytes; at most {max} are read"));
        }
        std::str::from_utf8(self.take(len as usize)?).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn uint(&mut self, what: &str) -> Result<u64, String> {
        self.expect(UINT, what)
    }

    /// A map's or array's length, at most `max`.
    fn len(&mut self, major: u8, max: usize, what: &str) -> Result<usize, String> {
        let len = self.expect(major, what)?;
        if len > max as u64 {
            return Err(format!("{len} entries in {what}; at most {max} are read"));
        }
        Ok(len as usize)
    }

    /// A map's keys, each once: `entry` reads the value of each.
    fn map(
        &mut self,
        max: usize,
        what: &str,
        mut entry: impl FnMut(&mut Self, &'a str) -> Result<(), String>,
    ) -> Result<(), String> {
        let len = self.len(MAP, max, what)?;
        let mut keys: Vec<&str> = Vec::with_capacity(len);
        for _ in 0..len {
            let key = self.text(MAX_NAME, "a key")?;
            if keys.contains(&key) {
                return Err(format!("{what} names `{}` twice", escaped(key)));
            }
            keys.push(key);
            entry(self, key)?;
        }
        Ok(())
    }

    /// The whole metadata: `tensors`, `metadata`, `scalars`.
    fn top_level(&mut self, layout: &Layout<'_>) -> Result<Vec<Declared<'a>>, String> {
        let mut tensors = Vec::new();
        self.map(3, "its metadata", |cbor, key| match key {
            "tensors" => {
                let max = layout.tensors.len();
                cbor.map(max, "its tensor list", |cbor, name| {
                    tensors.push(cbor.descriptor(name)?);
                    Ok(())
                })
            }
            "metadata" => cbor.map(MAX_ENTRIES, "its metadata strings", |cbor, _| {
                cbor.text(layout.max_string, "a metadata string").map(drop)
            }),
            "scalars" => cbor.map(MAX_ENTRIES, "its scalars", |cbor, _| cbor.scalar()),
            other => Err(format!(
                "its metadata has an unknown part `{}`",
                escaped(other)
            )),
        })?;
        Ok(tensors)
    }

    fn descriptor(&mut self, name: &'a str) -> Result<Declared<'a>, String> {
        let what = format!("tensor `{}`", escaped(name));
        let (mut dtype, mut shape, mut range) = (None, None, None);
        self.map(4, &what, |cbor, key| {
            match key {
                "dtype" => match cbor.head()? {
                    (TEXT, len) if len <= MAX_NAME as u64 => {
                        let text = cbor.take(len as usize)?;
                        dtype = Some(std::str::from_utf8(text).unwrap_or("not UTF-8"));
                    }
                    // A quantised dtype is a map: certainly not F32.
                    _ => return Err(format!("{what} is not F32")),
                },
                "shape" => {
                    let dims = cbor.len(ARRAY, MAX_DIMS, &format!("{what}'s shape"))?;
                    shape = Some(
                        (0..dims)
                            .map(|_| cbor.uint("a dimension"))
                            .collect::<Result<_, _>>()?,
                    );
                }
                "data_offsets" => {
                    if cbor.len(ARRAY, 2, "a byte range")? != 2 {
                        return Err(format!("{what}'s byte range is not two numbers"));
                    }
                    range = Some((cbor.uint("an offset")?, cbor.uint("an offset")?));
                }
                "param_id" => match cbor.head()? {
                    (UINT, _) | (SIMPLE, 22) => {}
                    _ => return Err(format!("{what}'s parameter id is not a number")),
                },
                other => return Err(format!("{what} has an unknown field `{}`", escaped(other))),
            }
            Ok(())
        })?;
        match (dtype, shape, range) {
            (Some(dtype), Some(shape), Some(range)) => Ok(Declared {
                name,
                dtype,
                shape,
                range,
            }),
            _ => Err(format!("{what} lacks its dtype, shape or byte range")),
        }
    }

    /// A typed scalar as serde writes burn's `Scalar`: `{"UInt": 5}`, `{"Float": 1.0}`, ….
    fn scalar(&mut self) -> Result<(), String> {
        self.map(1, "a scalar", |cbor, variant| {
            // burn's reader types the value; here only its kind and its size are bounded.
            let ok = matches!(
                (variant, cbor.head()?),
                ("Int", (UINT | NINT, _))
                    | ("UInt", (UINT, _))
                    | ("Float", (SIMPLE, _))
                    | ("Bool", (SIMPLE, 20 | 21))
            );
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "a scalar of kind `{}` holds something else",
                    escaped(variant)
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::file_bytes;
    use crate::network::Params;

    fn model_layout() -> Vec<(String, Vec<usize>)> {
        crate::model::tensor_layout("")
    }

    fn layout(tensors: &[(String, Vec<usize>)]) -> Layout<'_> {
        Layout {
            kind: "model file",
            tensors,
            max_metadata: 1 << 16,
            max_string: 1 << 10,
        }
    }

    #[test]
    fn what_this_program_writes_passes() {
        let tensors = model_layout();
        let bytes = file_bytes(&Params::glorot(1), None).unwrap();
        assert_eq!(check(&bytes, &layout(&tensors)), Ok(()));
        let mut fewer = tensors.clone();
        fewer.pop();
        let err = check(&bytes, &layout(&fewer)).unwrap_err();
        assert!(
            err.contains("8 entries in its tensor list; at most 7"),
            "{err}"
        );
        let mut other = tensors.clone();
        other[0].1 = vec![32, 1, 3, 4];
        let err = check(&bytes, &layout(&other)).unwrap_err();
        assert_eq!(
            err,
            "tensor `conv1.weight` has shape [32, 1, 3, 3]; expected [32, 1, 3, 4]"
        );
    }

    #[test]
    fn the_cbor_walk_refuses_what_it_cannot_bound() {
        let mut cbor = Cbor {
            bytes: &[0x9f],
            pos: 0,
        };
        assert!(cbor.head().unwrap_err().contains("indefinite"));
        // A map that declares four billion entries in five bytes.
        let mut cbor = Cbor {
            bytes: &[0xba, 0xff, 0xff, 0xff, 0xff],
            pos: 0,
        };
        let err = cbor.len(MAP, MAX_ENTRIES, "its scalars").unwrap_err();
        assert_eq!(
            err,
            "4294967295 entries in its scalars; at most 64 are read"
        );
        // A text longer than what is left.
        let mut cbor = Cbor {
            bytes: &[0x7a, 0, 0, 0x10, 0, b'a'],
            pos: 0,
        };
        assert!(
            cbor.text(1 << 20, "a key")
                .unwrap_err()
                .contains("cut short")
        );
    }
}
