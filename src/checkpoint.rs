//! A trainer's state, and the per-epoch checkpoint that holds it on disk: everything needed to
//! continue training exactly where it stopped.
//!
//! Shuffling and dropout are seeded per (seed, epoch, step), so the parameters, Adadelta's
//! accumulators, the finished epoch count and the hyper-parameters are the whole state: a run
//! resumed from epoch k reaches the same bytes as one that never stopped. The history so far
//! rides along, so the resumed run's CSV and curves cover every epoch.
//!
//! The file is a burnpack (the format burn writes models in): 24 named f32 tensors —
//! `params.conv1.weight` …, `adadelta.accum_grad.conv1.weight` …,
//! `adadelta.accum_update.conv1.weight` … (names from [`crate::network::TENSOR_NAMES`]) — the
//! run's numbers as typed scalars, and the history CSV as metadata. Either engine reads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn_pack::{Bytes, Reader, Scalar, Writer};

use crate::error::{Error, Result};
use crate::escape::escaped;
use crate::formats::burnpack::{self, Layout};
use crate::history::{self, EpochRecord};
use crate::model::{f32_tensor, f32s, tensor_layout};
use crate::network::Params;
use crate::optim::{Accumulators, Adadelta};
use crate::settings::{self, Limits, Resumed, Settings};

/// What the `format` metadata of a checkpoint says.
const FORMAT: &str = "mnist-cnn checkpoint";
const VERSION: u64 = 4;
/// The magic of the hand-made layout used up to version 3.
const OLD_MAGIC: &[u8; 8] = b"MNISTCKP";
/// A checkpoint's size at most: three sets of the model's 4.8 MB (parameters and Adadelta's
/// two accumulators) and the history.
pub const MAX_BYTES: u64 = 24 << 20;
/// Its CBOR metadata, and the history CSV within it, in bytes at most: a line of about 80
/// bytes for each of [`settings::MAX_EPOCHS`] epochs.
const MAX_METADATA: usize = 4 << 20;
const MAX_HISTORY: usize = 2 << 20;

/// Everything a trainer holds, on either engine: the parameters and Adadelta's accumulators.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerState {
    pub params: Params,
    pub accumulators: Accumulators,
}

impl TrainerState {
    /// A fresh run: Keras's initialisation from `seed`, accumulators at zero.
    pub fn fresh(seed: u64) -> TrainerState {
        TrainerState {
            params: Params::glorot(seed),
            accumulators: Accumulators::zeros(),
        }
    }

    /// Why this state cannot be trained on: parameters that are not finite numbers, or
    /// accumulators (running means of squares) that are negative or not finite.
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some((name, count)) = self.params.non_finite() {
            return Err(format!(
                "its parameter `{name}` holds {count} NaN or infinite values"
            ));
        }
        let acc = &self.accumulators;
        for (kind, params) in [
            (Adadelta::ACCUM_GRAD, &acc.grad),
            (Adadelta::ACCUM_UPDATE, &acc.update),
        ] {
            if let Some((name, bad)) = params.first_with(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(format!(
                    "its accumulator `{kind}.{name}` holds {bad} values that are negative or not finite"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The run's settings; `epochs` is the target.
    pub settings: Settings,
    /// The epochs finished.
    pub epochs_done: usize,
    /// The training and test set sizes the run was made with.
    pub train_len: usize,
    pub test_len: usize,
    /// The parameters and Adadelta's accumulators after `epochs_done` epochs.
    pub state: TrainerState,
    /// The finished epochs, one record each.
    pub history: Vec<EpochRecord>,
}

/// Where the checkpoint of a run saving to `out` lives.
pub fn path_for(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".ckpt");
    out.with_file_name(name)
}

/// The three named groups of tensors in a checkpoint.
const PARAMS: &str = "params";

impl Checkpoint {
    /// The groups' name prefixes: the parameters, then Adadelta's two accumulators.
    fn group_names() -> [String; 3] {
        [
            PARAMS.to_string(),
            format!("adadelta.{}", Adadelta::ACCUM_GRAD),
            format!("adadelta.{}", Adadelta::ACCUM_UPDATE),
        ]
    }

    fn groups(&self) -> [(String, &Params); 3] {
        let acc = &self.state.accumulators;
        let [params, grad, update] = Checkpoint::group_names();
        [
            (params, &self.state.params),
            (grad, &acc.grad),
            (update, &acc.update),
        ]
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors = Vec::new();
        for (group, params) in self.groups() {
            for (name, shape, values) in params.named() {
                tensors.push(f32_tensor(format!("{group}.{name}"), shape, None, values));
            }
        }
        // The file's scalar types: counts as u32, set sizes as u64.
        let count = |n: usize| u32::try_from(n).map(Scalar::from);
        let size = |n: usize| Scalar::from(n as u64);
        let s = &self.settings;
        let too_large = |_| Error::Serialise {
            what: "checkpoint",
            reason: "an epoch count or batch size too large to store".into(),
        };
        let scalars: [(&str, Scalar); 8] = [
            ("version", VERSION.into()),
            ("epochs", count(s.epochs).map_err(too_large)?),
            ("epochs_done", count(self.epochs_done).map_err(too_large)?),
            ("seed", s.seed.into()),
            ("batch", count(s.batch).map_err(too_large)?),
            ("lr", s.lr.into()),
            ("train_len", size(self.train_len)),
            ("test_len", size(self.test_len)),
        ];
        let mut writer = Writer::new(tensors)
            .with_metadata("format", FORMAT)
            .with_metadata("history", &history::to_csv(&self.history));
        for (key, value) in scalars {
            writer = writer.with_scalar(key, value);
        }
        let bytes = writer.into_bytes().map_err(|e| Error::Serialise {
            what: "checkpoint",
            reason: e.to_string(),
        })?;
        Ok(bytes.to_vec())
    }

    /// The checkpoint in `bytes` (read from `path`, for messages), held to the layout this
    /// program writes and to the rules of a run's settings: a file from elsewhere that passes
    /// resumes like one of ours, and one that does not is one line naming the field.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Checkpoint> {
        let fail = |reason: &str| Error::Model {
            path: path.to_path_buf(),
            reason: format!("not a usable checkpoint: {reason}"),
        };
        if bytes.starts_with(OLD_MAGIC) {
            return Err(fail(
                "written by an older mnist-cnn (format 3); start the run anew",
            ));
        }
        let tensors: Vec<(String, Vec<usize>)> = Checkpoint::group_names()
            .iter()
            .flat_map(|group| tensor_layout(&format!("{group}.")))
            .collect();
        let layout = Layout {
            kind: "checkpoint",
            tensors: &tensors,
            max_metadata: MAX_METADATA,
            max_string: MAX_HISTORY,
        };
        if let Err(reason) = burnpack::check(&bytes, &layout) {
            // A model file given as a checkpoint deserves a plainer word than its tensors.
            let model = tensor_layout("");
            let as_model = Layout {
                tensors: &model,
                ..layout
            };
            if burnpack::check(&bytes, &as_model).is_ok() {
                return Err(fail("not an mnist-cnn checkpoint but a model file"));
            }
            return Err(fail(&reason));
        }
        let reader = Reader::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| {
            fail(&format!(
                "not a burnpack file ({})",
                escaped(&e.to_string())
            ))
        })?;
        if reader.metadata().get("format").map(String::as_str) != Some(FORMAT) {
            return Err(fail("not an mnist-cnn checkpoint"));
        }
        let scalars = reader.scalars();
        let version: u64 = scalar(scalars, "version").ok_or_else(|| fail("no version"))?;
        if version != VERSION {
            return Err(fail(&format!(
                "version {version}, this program reads {VERSION}"
            )));
        }
        let count = |key| scalar::<u32>(scalars, key).and_then(|n| usize::try_from(n).ok());
        let size = |key| scalar::<u64>(scalars, key).and_then(|n| usize::try_from(n).ok());
        let header = (|| {
            let settings = Settings {
                epochs: count("epochs")?,
                batch: count("batch")?,
                lr: f64::try_from(*scalars.get("lr")?).ok()?,
                seed: scalar(scalars, "seed")?,
            };
            Some((
                settings,
                count("epochs_done")?,
                size("train_len")?,
                size("test_len")?,
            ))
        })();
        let (settings, epochs_done, train_len, test_len) =
            header.ok_or_else(|| fail("its settings are missing or out of range"))?;
        // The same rules as the command line's: its set sizes are the run's data limits.
        let limits = Limits {
            train: Some(train_len),
            test: Some(test_len),
        };
        settings::check(&settings, &limits)
            .map_err(|bad| fail(&format!("its `{}` {}", bad.field, bad.rule)))?;
        if epochs_done > settings.epochs {
            return Err(fail(&format!(
                "its `epochs_done` ({epochs_done}) is past its `epochs` ({})",
                settings.epochs
            )));
        }
        // Metadata first: a refusal it decides costs no decoding of the tensors.
        let history = reader
            .metadata()
            .get("history")
            .and_then(|csv| history::from_csv(csv))
            .filter(|h| history::is_run_of(h, epochs_done))
            .ok_or_else(|| fail("its history does not match its epochs"))?;
        let group = |group: &str| {
            Params::from_named(|name, shape| {
                let bytes = reader.tensor_data(&format!("{group}.{name}")).ok()?;
                f32s(&bytes, shape.iter().product())
            })
            .ok_or_else(|| fail(&format!("its {group} tensors are missing or misshapen")))
        };
        let [params, grad, update] = Checkpoint::group_names().map(|name| group(&name));
        let state = TrainerState {
            params: params?,
            accumulators: Accumulators {
                grad: grad?,
                update: update?,
            },
        };
        state.check().map_err(|reason| fail(&reason))?;
        Ok(Checkpoint {
            settings,
            epochs_done,
            train_len,
            test_len,
            state,
            history,
        })
    }

    /// What the run it holds was made with, for [`crate::settings::Given::resolve`].
    pub fn resumed<'a>(&self, path: &'a Path) -> Resumed<'a> {
        Resumed {
            path,
            settings: self.settings,
            epochs_done: self.epochs_done,
            train_len: self.train_len,
            test_len: self.test_len,
        }
    }

    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = crate::model::read_bytes(path, MAX_BYTES, "a checkpoint")?;
        Checkpoint::from_bytes(bytes, path)
    }
}

fn scalar<T: TryFrom<Scalar>>(scalars: &BTreeMap<String, Scalar>, key: &str) -> Option<T> {
    T::try_from(*scalars.get(key)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut state = TrainerState::fresh(3);
        state.accumulators.grad.dense2.bias[3] = 0.25;
        state.accumulators.update.conv1.weight[0] = 1.5;
        Checkpoint {
            settings: Settings {
                seed: 42,
                ..Settings::DEFAULT
            },
            epochs_done: 3,
            train_len: 60000,
            test_len: 10000,
            state,
            history: history::tests::three(),
        }
    }

    #[test]
    fn round_trips_with_named_tensors() {
        let c = sample();
        let bytes = c.to_bytes().unwrap();
        let reader = Reader::from_bytes(Bytes::from_bytes_vec(bytes.clone())).unwrap();
        let names = reader.tensor_names();
        assert_eq!(names.len(), 24);
        assert!(names.contains(&"params.conv1.weight"));
        assert!(names.contains(&"adadelta.accum_update.dense2.bias"));
        assert_eq!(Checkpoint::from_bytes(bytes, Path::new("x")).unwrap(), c);
    }

    #[test]
    fn truncations_garbage_and_old_files_are_errors() {
        let bytes = sample().to_bytes().unwrap();
        for cut in (0..bytes.len()).step_by(bytes.len() / 97) {
            let err = Checkpoint::from_bytes(bytes[..cut].to_vec(), Path::new("x")).unwrap_err();
            assert!(matches!(err, Error::Model { .. }), "{err}");
        }
        let err = Checkpoint::from_bytes(b"hello".to_vec(), Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("not a usable checkpoint"), "{err}");
        let mut old = OLD_MAGIC.to_vec();
        old.extend([3, 0, 0, 0]);
        let err = Checkpoint::from_bytes(old, Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("older mnist-cnn"), "{err}");
    }

    #[test]
    fn a_model_file_is_not_a_checkpoint() {
        let model = crate::model::file_bytes(&Params::glorot(1), None).unwrap();
        let err = Checkpoint::from_bytes(model, Path::new("m.bin"));
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("not an mnist-cnn checkpoint")
        );
    }

    #[test]
    fn path_sits_next_to_the_model() {
        assert_eq!(
            path_for(Path::new("out/model.bin")),
            Path::new("out/model.bin.ckpt")
        );
    }
}
