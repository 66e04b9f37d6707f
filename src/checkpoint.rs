//! The per-epoch checkpoint: everything needed to continue training exactly where it stopped.
//!
//! Shuffling and dropout are seeded per (seed, epoch), so the model, the optimizer state, the
//! finished epoch count and the hyper-parameters are the whole state: a run resumed from epoch
//! k reaches the same bytes as one that never stopped. The history so far rides along, so the
//! resumed run's CSV and curves cover every epoch.
//!
//! Layout (little-endian): magic `MNISTCKP`, version u32, epochs done u32, seed u64, batch u32,
//! lr f64, train and test sizes u64, then the model file, the optimizer state (a u32 kind, then
//! its parts) and the history CSV, each part preceded by its length as u64.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"MNISTCKP";
const VERSION: u32 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub epochs_done: u32,
    pub seed: u64,
    pub batch: u32,
    pub lr: f64,
    pub train_len: u64,
    pub test_len: u64,
    /// A model file, as [`crate::model::Model::to_bytes`] writes it.
    pub model: Vec<u8>,
    pub optimizer: OptimizerState,
    /// The finished epochs, as [`crate::history::to_csv`] writes them.
    pub history: String,
}

/// Adadelta's state, in the form of the engine that trained (see `crate::train::Engine`).
#[derive(Debug, Clone, PartialEq)]
pub enum OptimizerState {
    /// The CPU engine's two accumulators, each shaped as the network and stored as a model file.
    Accumulators { grad: Vec<u8>, update: Vec<u8> },
    /// burn's optimizer record (training through burn's autodiff).
    Burn(Vec<u8>),
}

const ACCUMULATORS: u32 = 1;
const BURN: u32 = 2;

/// Where the checkpoint of a run saving to `out` lives.
pub fn path_for(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".ckpt");
    out.with_file_name(name)
}

impl Checkpoint {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 3 * self.model.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.epochs_done.to_le_bytes());
        out.extend_from_slice(&self.seed.to_le_bytes());
        out.extend_from_slice(&self.batch.to_le_bytes());
        out.extend_from_slice(&self.lr.to_le_bytes());
        out.extend_from_slice(&self.train_len.to_le_bytes());
        out.extend_from_slice(&self.test_len.to_le_bytes());
        let blob = |out: &mut Vec<u8>, blob: &[u8]| {
            out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
            out.extend_from_slice(blob);
        };
        blob(&mut out, &self.model);
        match &self.optimizer {
            OptimizerState::Accumulators { grad, update } => {
                out.extend_from_slice(&ACCUMULATORS.to_le_bytes());
                blob(&mut out, grad);
                blob(&mut out, update);
            }
            OptimizerState::Burn(record) => {
                out.extend_from_slice(&BURN.to_le_bytes());
                blob(&mut out, record);
            }
        }
        blob(&mut out, self.history.as_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let fail = |reason: &str| Error::Model {
            path: path.to_path_buf(),
            reason: format!("not a usable checkpoint: {reason}"),
        };
        let mut r = Cursor { bytes, at: 0 };
        if r.take(8).ok_or_else(|| fail("too short"))? != MAGIC {
            return Err(fail("wrong magic bytes"));
        }
        let version = r.u32().ok_or_else(|| fail("truncated header"))?;
        if version != VERSION {
            return Err(fail(&format!(
                "version {version}, this program reads {VERSION}"
            )));
        }
        let header = (|| {
            Some((
                r.u32()?,
                r.u64()?,
                r.u32()?,
                f64::from_bits(r.u64()?),
                r.u64()?,
                r.u64()?,
            ))
        })();
        let (epochs_done, seed, batch, lr, train_len, test_len) =
            header.ok_or_else(|| fail("truncated header"))?;
        let model = r.blob().ok_or_else(|| fail("model truncated"))?;
        let optimizer = (|| {
            Some(match r.u32()? {
                ACCUMULATORS => Some(OptimizerState::Accumulators {
                    grad: r.blob()?.to_vec(),
                    update: r.blob()?.to_vec(),
                }),
                BURN => Some(OptimizerState::Burn(r.blob()?.to_vec())),
                _ => None,
            })
        })()
        .ok_or_else(|| fail("optimizer state truncated"))?
        .ok_or_else(|| fail("unknown optimizer state"))?;
        let history = r.blob().ok_or_else(|| fail("history truncated"))?;
        let history = String::from_utf8(history.to_vec()).map_err(|_| fail("history not text"))?;
        if r.at != bytes.len() {
            return Err(fail("trailing bytes"));
        }
        Ok(Checkpoint {
            epochs_done,
            seed,
            batch,
            lr,
            train_len,
            test_len,
            model: model.to_vec(),
            optimizer,
            history,
        })
    }

    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes =
            crate::fsutil::read_at_most(path, crate::model::MAX_FILE_BYTES).map_err(|reason| {
                Error::Model {
                    path: path.to_path_buf(),
                    reason,
                }
            })?;
        Checkpoint::from_bytes(&bytes, path)
    }
}

/// Bounds-checked reads: a length field is trusted only as far as the bytes really go.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn blob(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u64()?).ok()?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            epochs_done: 3,
            seed: 42,
            batch: 128,
            lr: 1.0,
            train_len: 60000,
            test_len: 10000,
            model: vec![1, 2, 3],
            optimizer: OptimizerState::Accumulators {
                grad: vec![9; 10],
                update: vec![7; 4],
            },
            history: "epoch,loss\n".into(),
        }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        assert_eq!(
            Checkpoint::from_bytes(&c.to_bytes(), Path::new("x")).unwrap(),
            c
        );
    }

    #[test]
    fn both_kinds_of_optimizer_state_round_trip() {
        let mut c = sample();
        c.optimizer = OptimizerState::Burn(vec![5; 6]);
        let back = Checkpoint::from_bytes(&c.to_bytes(), Path::new("x")).unwrap();
        assert_eq!(back, c);
        let mut bytes = c.to_bytes();
        let kind_at = 8 + 4 + 4 + 8 + 4 + 8 + 8 + 8 + 8 + c.model.len();
        bytes[kind_at] = 9;
        let err = Checkpoint::from_bytes(&bytes, Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("unknown optimizer state"), "{err}");
    }

    #[test]
    fn every_truncation_and_a_huge_length_are_errors() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            assert!(Checkpoint::from_bytes(&bytes[..cut], Path::new("x")).is_err());
        }
        let mut huge = bytes.clone();
        let model_len_at = 8 + 4 + 4 + 8 + 4 + 8 + 8 + 8;
        huge[model_len_at..model_len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Checkpoint::from_bytes(&huge, Path::new("x")).is_err());
    }

    #[test]
    fn path_sits_next_to_the_model() {
        assert_eq!(
            path_for(Path::new("out/model.bin")),
            Path::new("out/model.bin.ckpt")
        );
    }
}
