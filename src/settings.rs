//! A training run's settings: their one owner. [`Settings::DEFAULT`] is what `--help` shows
//! and what a new run uses; [`Given`] is what the command line said; [`Given::resolve`] decides
//! the run's settings, from a checkpoint's when resuming ([`Resumed`]). The checkpoint stores
//! [`Settings`] as they are, and the training loop reads them.

use std::path::Path;

use crate::error::{Error, Result};

/// What defines a run besides its data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per gradient step.
    pub batch: usize,
    /// Adadelta's learning rate.
    pub lr: f64,
    /// Seed of the initial weights, the shuffles and dropout ([`crate::rng`]).
    pub seed: u64,
}

/// Epochs a run may target at most: hours of training on the full set, and a bound on what a
/// checkpoint from elsewhere can ask for.
pub const MAX_EPOCHS: usize = 10_000;
/// Images a step may hold at most: memory grows with the batch (about 110 KiB an image on the
/// `cpu` engine: a run on MNIST peaks at 148 MiB with batches of 128 and 574 MiB with 4,096),
/// so this bounds what a flag or a checkpoint can make a step cost.
pub const MAX_BATCH: usize = 4096;

/// A setting that breaks the rules of [`check`]: which one, and the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The setting's name, as the flag says it without `--` and as a checkpoint stores it.
    pub field: &'static str,
    pub rule: String,
}

/// The rules every run's settings and data limits obey, whether given as flags or read from a
/// checkpoint: the one place they are decided.
pub fn check(settings: &Settings, limits: &Limits) -> std::result::Result<(), Invalid> {
    let count = |field, value: usize, max: usize| {
        if (1..=max).contains(&value) {
            Ok(())
        } else {
            Err(Invalid {
                field,
                rule: format!("must be a whole number from 1 to {max}, not {value}"),
            })
        }
    };
    count("epochs", settings.epochs, MAX_EPOCHS)?;
    count("batch", settings.batch, MAX_BATCH)?;
    if !(settings.lr.is_finite() && settings.lr > 0.0) {
        return Err(Invalid {
            field: "lr",
            rule: format!("must be a positive number, not {}", settings.lr),
        });
    }
    for (field, limit) in [("limit-train", limits.train), ("limit-test", limits.test)] {
        if limit == Some(0) {
            return Err(Invalid {
                field,
                rule: "must be at least 1".into(),
            });
        }
    }
    Ok(())
}

impl Settings {
    /// Keras's `mnist_cnn.py`: 12 epochs of batches of 128, Adadelta's lr 1.0; seed 1337.
    pub const DEFAULT: Settings = Settings {
        epochs: 12,
        batch: 128,
        lr: 1.0,
        seed: 1337,
    };
}

/// A run's settings as given on the command line (`None`: not given), and the data limits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Given {
    pub epochs: Option<usize>,
    pub batch: Option<usize>,
    pub lr: Option<f64>,
    pub seed: Option<u64>,
    /// Only the first N training / test images.
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
}

/// What a run being resumed was made with, as its checkpoint (read from `path`) holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resumed<'a> {
    pub path: &'a Path,
    pub settings: Settings,
    pub epochs_done: usize,
    /// Its training and test set sizes.
    pub train_len: usize,
    pub test_len: usize,
}

/// How many training and test images a run uses (`None`: all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub train: Option<usize>,
    pub test: Option<usize>,
}

impl Given {
    /// The run's settings: as given, else from the run being resumed, else the defaults; and
    /// the data limits. Given settings that break [`check`]'s rules or contradict the resumed
    /// run are usage errors, except `--epochs` above its target, which extends the run.
    pub fn resolve(&self, resumed: Option<Resumed<'_>>) -> Result<(Settings, Limits)> {
        let (settings, limits) = self.resolve_unchecked(resumed)?;
        // A checkpoint's own settings passed these rules when it was read: what breaks them
        // now was given.
        check(&settings, &limits)
            .map_err(|bad| Error::Usage(format!("--{} {}", bad.field, bad.rule)))?;
        Ok((settings, limits))
    }

    fn resolve_unchecked(&self, resumed: Option<Resumed<'_>>) -> Result<(Settings, Limits)> {
        let default = Settings::DEFAULT;
        let Some(ckpt) = resumed else {
            let settings = Settings {
                epochs: self.epochs.unwrap_or(default.epochs),
                batch: self.batch.unwrap_or(default.batch),
                lr: self.lr.unwrap_or(default.lr),
                seed: self.seed.unwrap_or(default.seed),
            };
            let limits = Limits {
                train: self.limit_train,
                test: self.limit_test,
            };
            return Ok((settings, limits));
        };
        let (path, theirs) = (ckpt.path, ckpt.settings);
        let contradiction = |flag: &str, value: String, theirs: String| {
            Error::Usage(format!(
                "{flag} {value} contradicts {}, which was made with {flag} {theirs}; leave it out to continue that run",
                path.display()
            ))
        };
        if let Some(batch) = self.batch.filter(|b| *b != theirs.batch) {
            return Err(contradiction(
                "--batch",
                batch.to_string(),
                theirs.batch.to_string(),
            ));
        }
        if let Some(lr) = self.lr.filter(|lr| *lr != theirs.lr) {
            return Err(contradiction("--lr", lr.to_string(), theirs.lr.to_string()));
        }
        if let Some(seed) = self.seed.filter(|s| *s != theirs.seed) {
            return Err(contradiction(
                "--seed",
                seed.to_string(),
                theirs.seed.to_string(),
            ));
        }
        let epochs = match self.epochs {
            Some(epochs) if epochs < theirs.epochs => {
                let (given, target) = (epochs.to_string(), theirs.epochs.to_string());
                return Err(contradiction("--epochs", given, target));
            }
            Some(epochs) => epochs,
            None => theirs.epochs,
        };
        if ckpt.epochs_done >= epochs {
            return Err(Error::Usage(format!(
                "{} already holds all {} epochs; pass --epochs above that to train further",
                path.display(),
                ckpt.epochs_done
            )));
        }
        // The checkpoint's set sizes are its limits; given ones are checked against the data.
        let limits = Limits {
            train: self.limit_train.or(Some(ckpt.train_len)),
            test: self.limit_test.or(Some(ckpt.test_len)),
        };
        Ok((Settings { epochs, ..theirs }, limits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_of_rules_names_the_setting_that_breaks_them() {
        let fine = Limits::default();
        assert_eq!(check(&Settings::DEFAULT, &fine), Ok(()));
        let at_the_edges = Settings {
            epochs: MAX_EPOCHS,
            batch: MAX_BATCH,
            lr: f64::MIN_POSITIVE,
            seed: u64::MAX,
        };
        assert_eq!(check(&at_the_edges, &fine), Ok(()));
        let bad = |settings: Settings, limits: Limits| check(&settings, &limits).unwrap_err();
        let d = Settings::DEFAULT;
        assert_eq!(bad(Settings { batch: 0, ..d }, fine).field, "batch");
        assert_eq!(
            bad(
                Settings {
                    batch: MAX_BATCH + 1,
                    ..d
                },
                fine
            )
            .field,
            "batch"
        );
        assert_eq!(bad(Settings { epochs: 0, ..d }, fine).field, "epochs");
        assert_eq!(
            bad(
                Settings {
                    epochs: u32::MAX as usize,
                    ..d
                },
                fine
            )
            .field,
            "epochs"
        );
        for lr in [0.0, -1e30, f64::NAN, f64::INFINITY] {
            assert_eq!(bad(Settings { lr, ..d }, fine).field, "lr", "{lr}");
        }
        let none = Limits {
            train: Some(0),
            test: None,
        };
        assert_eq!(bad(d, none).rule, "must be at least 1");
        // Given flags are held to them as usage errors.
        let given = Given {
            batch: Some(0),
            ..Given::default()
        };
        let err = given.resolve(None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--batch must be a whole number from 1 to 4096, not 0"
        );
        assert!(matches!(err, Error::Usage(_)));
    }

    /// Resuming takes every setting left out from the checkpoint, refuses given ones that
    /// contradict it, and lets --epochs extend the run.
    #[test]
    fn resuming_takes_the_checkpoints_settings_and_refuses_contradictions() {
        let ckpt = Resumed {
            path: Path::new("m.bin.ckpt"),
            settings: Settings {
                epochs: 3,
                batch: 64,
                lr: 0.5,
                seed: 11,
            },
            epochs_done: 1,
            train_len: 1000,
            test_len: 200,
        };
        let at = Some(ckpt);
        let (settings, limits) = Given::default().resolve(at).unwrap();
        assert_eq!(settings, ckpt.settings);
        assert_eq!((limits.train, limits.test), (Some(1000), Some(200)));
        // Repeating the checkpoint's own settings is fine; more epochs extend the run.
        let same = Given {
            epochs: Some(5),
            batch: Some(64),
            lr: Some(0.5),
            seed: Some(11),
            limit_train: Some(1000),
            limit_test: None,
        };
        assert_eq!(same.resolve(at).unwrap().0.epochs, 5);
        let none = Given::default();
        for (flag, given) in [
            (
                "--batch 128",
                Given {
                    batch: Some(128),
                    ..none
                },
            ),
            (
                "--lr 1",
                Given {
                    lr: Some(1.0),
                    ..none
                },
            ),
            (
                "--seed 12",
                Given {
                    seed: Some(12),
                    ..none
                },
            ),
            (
                "--epochs 2",
                Given {
                    epochs: Some(2),
                    ..none
                },
            ),
        ] {
            let err = given.resolve(at).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{err}");
            let start = format!("{flag} contradicts");
            assert!(err.to_string().starts_with(&start), "{err}");
        }
        // A finished run needs --epochs above its own to go on.
        let done = Resumed {
            epochs_done: 3,
            ..ckpt
        };
        let err = none.resolve(Some(done)).unwrap_err();
        assert!(err.to_string().contains("pass --epochs above"), "{err}");
        // Without a checkpoint: the defaults, and the limits as given.
        let (settings, limits) = none.resolve(None).unwrap();
        assert_eq!((settings, limits), (Settings::DEFAULT, Limits::default()));
        assert_eq!(
            (settings.epochs, settings.batch, settings.seed),
            (12, 128, 1337)
        );
    }
}
