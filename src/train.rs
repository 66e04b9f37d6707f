//! The training loop and the `train` command.
//!
//! One step flows: [`Fit::epoch`] shuffles and cuts batches → [`batch::pixels`] scales them →
//! [`Trainer::step`] runs forward, loss, backward and Adadelta on the chosen engine →
//! [`RunningMeans`] keeps the epoch's means, which the [`Progbar`] renders → after the last
//! batch, validation through the same engine's [`Forward`], then the checkpoint, the history
//! CSV and the curves ([`Fit::end_epoch`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

use crate::checkpoint::{self, Checkpoint};
use crate::data::batch;
use crate::data::{DataSource, Part, Split};
use crate::engine::{self, Backend, Forward, Trainer, TrainerState};
use crate::error::{Error, Result};
use crate::eval::evaluate;
use crate::history::{self, EpochRecord};
use crate::metrics::RunningMeans;
use crate::model::Model;
use crate::network::SIDE;
use crate::progress::{EpochPrinter, Progbar, Verbosity};
use crate::{fsutil, interrupt};

/// What `train` is asked to do.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run's numbers as given; when resuming, those left out come from the checkpoint.
    pub given: RunParams,
    pub verbosity: Verbosity,
    /// Redraw the bar in place (stdout is a terminal).
    pub interactive: bool,
    /// Where the model goes; `None`: `model.bin`, or beside the checkpoint when resuming.
    pub out: Option<PathBuf>,
    /// Continue from this checkpoint.
    pub resume: Option<PathBuf>,
    /// Draw the curves into this PNG after every epoch.
    pub plot: Option<PathBuf>,
    /// Print the layer table first.
    pub summary: bool,
    pub backend: Backend,
    pub data: DataSource,
}

/// What defines a run, each as given on the command line (`None`: not given).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunParams {
    pub epochs: Option<usize>,
    pub batch: Option<usize>,
    pub lr: Option<f64>,
    pub seed: Option<u64>,
    /// Only the first N training / test images.
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
}

/// Keras's `mnist_cnn.py`: 12 epochs of batches of 128, Adadelta's lr 1.0.
pub const DEFAULT_EPOCHS: usize = 12;
pub const DEFAULT_BATCH: usize = 128;
pub const DEFAULT_LR: f64 = 1.0;
pub const DEFAULT_SEED: u64 = 1337;

/// How to train, besides the data.
#[derive(Debug, Clone)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    pub verbosity: Verbosity,
    /// Redraw the bar in place (stdout is a terminal).
    pub interactive: bool,
}

/// Files brought up to date after every epoch, each written atomically.
#[derive(Debug, Clone, Default)]
pub struct EpochFiles {
    /// Everything needed to resume.
    pub checkpoint: Option<PathBuf>,
    /// Per-epoch means as CSV.
    pub history: Option<PathBuf>,
    /// Loss and accuracy curves as PNG.
    pub plot: Option<PathBuf>,
}

/// An independent stream per (seed, epoch, purpose), so that any epoch can be replayed alone.
fn stream_seed(seed: u64, epoch: usize, purpose: u64) -> u64 {
    // SplitMix64's finaliser: nearby inputs give unrelated outputs.
    crate::kernels::forward::splitmix64(
        seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ purpose << 56,
    )
}

/// A run in progress: the engine training it and the epochs behind it.
pub struct Run {
    pub trainer: Box<dyn Trainer>,
    pub history: Vec<EpochRecord>,
}

impl Run {
    /// A fresh run from `seed` on `backend`.
    pub fn new(backend: Backend, seed: u64) -> Result<Run> {
        Ok(Run {
            trainer: engine::trainer(backend, TrainerState::fresh(seed))?,
            history: Vec::new(),
        })
    }

    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }
}

/// Training from a run's state up to `config.epochs`, validating on `test` after each epoch.
pub struct Fit<'a> {
    pub train: &'a Split,
    pub test: &'a Split,
    pub config: &'a FitConfig,
    pub files: &'a EpochFiles,
    /// Polled after every batch.
    pub stop: &'a AtomicBool,
}

impl Fit<'_> {
    /// Trains `run` to the last epoch, writing Keras's log to `out`.
    pub fn run(&self, run: &mut Run, out: &mut dyn Write) -> Result<()> {
        for epoch in run.epochs_done() + 1..=self.config.epochs {
            if self.config.verbosity != Verbosity::Silent {
                writeln!(out, "Epoch {epoch}/{}", self.config.epochs).map_err(Error::stdout)?;
            }
            let mut printer =
                EpochPrinter::new(&mut *out, self.config.verbosity, self.config.interactive);
            let (bar, means) = self.epoch(run, epoch, &mut printer)?;
            self.end_epoch(run, epoch, (bar, means), &mut printer)?;
        }
        Ok(())
    }

    /// The epoch's training steps; returns the bar and the means so far.
    fn epoch(
        &self,
        run: &mut Run,
        epoch: usize,
        printer: &mut EpochPrinter<impl Write>,
    ) -> Result<(Progbar, RunningMeans)> {
        let (seed, train) = (self.config.seed, self.train);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(stream_seed(seed, epoch, 1)));
        let dropout_seed = stream_seed(seed, epoch, 2);
        let mut bar = Progbar::new(train.len());
        let mut means = RunningMeans::default();
        for (step, chunk) in order.chunks(self.config.batch).enumerate() {
            if self.stop.load(Ordering::SeqCst) {
                printer.abandon().map_err(Error::stdout)?;
                return Err(self.interrupted(epoch, run.epochs_done()));
            }
            let labels: Vec<u8> = chunk.iter().map(|&i| train.labels[i]).collect();
            // Each step its own mask stream, so a step's dropout does not depend on thread timing.
            let step_seed = stream_seed(dropout_seed, step + 1, 3);
            let pixels = batch::pixels(train, chunk);
            let outcome = run
                .trainer
                .step(&pixels, &labels, step_seed, self.config.lr);
            if !outcome.loss.is_finite() {
                return Err(Error::Diverged {
                    epoch,
                    step: step + 1,
                    value: outcome.loss,
                });
            }
            means.add(chunk.len(), outcome.loss, outcome.correct);
            // As Keras: the last batch is reported together with the validation.
            if means.samples() < train.len() {
                bar.update(
                    means.samples(),
                    &[("loss", means.loss()), ("acc", means.accuracy())],
                );
                printer.batch(&bar).map_err(Error::stdout)?;
            }
        }
        Ok((bar, means))
    }

    /// Validation, the epoch's line, its record, and the files.
    fn end_epoch(
        &self,
        run: &mut Run,
        epoch: usize,
        (mut bar, means): (Progbar, RunningMeans),
        printer: &mut EpochPrinter<impl Write>,
    ) -> Result<()> {
        let val = evaluate(run.trainer.as_ref() as &dyn Forward, self.test);
        bar.update(
            self.train.len(),
            &[
                ("loss", means.loss()),
                ("acc", means.accuracy()),
                ("val_loss", val.loss),
                ("val_acc", val.accuracy),
            ],
        );
        printer.finish(&bar).map_err(Error::stdout)?;
        run.history.push(EpochRecord {
            epoch,
            loss: means.loss(),
            acc: means.accuracy(),
            val,
            elapsed: printer.elapsed(),
        });
        if let Some(path) = &self.files.checkpoint {
            let checkpoint = Checkpoint {
                epochs: self.config.epochs as u32,
                epochs_done: run.epochs_done() as u32,
                seed: self.config.seed,
                batch: self.config.batch as u32,
                lr: self.config.lr,
                train_len: self.train.len() as u64,
                test_len: self.test.len() as u64,
                state: run.trainer.state()?,
                history: history::to_csv(&run.history),
            };
            fsutil::write_atomic(path, &checkpoint.to_bytes()?)?;
        }
        if let Some(path) = &self.files.history {
            fsutil::write_atomic(path, history::to_csv(&run.history).as_bytes())?;
        }
        if let Some(path) = &self.files.plot {
            history::plot(&run.history).save_png(path)?;
        }
        Ok(())
    }

    fn interrupted(&self, epoch: usize, done: usize) -> Error {
        let head = format!("interrupted in epoch {epoch} of {}", self.config.epochs);
        Error::Interrupted(match &self.files.checkpoint {
            Some(path) if done > 0 => format!(
                "{head}; {} holds epoch {done}: continue with `mnist-cnn train --resume {}`",
                path.display(),
                path.display()
            ),
            _ => format!("{head}, before the first checkpoint; nothing was saved"),
        })
    }
}

/// The run's numbers: as given, else from the checkpoint being resumed (`ckpt`, read from
/// its path), else the defaults; and the two data limits. Given numbers that contradict the
/// checkpoint are usage errors, except `--epochs` above its target, which extends the run.
pub fn resolve(
    opts: &TrainOptions,
    ckpt: Option<(&Path, &Checkpoint)>,
) -> Result<(FitConfig, Option<usize>, Option<usize>)> {
    let given = &opts.given;
    let mut config = FitConfig {
        epochs: given.epochs.unwrap_or(DEFAULT_EPOCHS),
        batch: given.batch.unwrap_or(DEFAULT_BATCH),
        lr: given.lr.unwrap_or(DEFAULT_LR),
        seed: given.seed.unwrap_or(DEFAULT_SEED),
        verbosity: opts.verbosity,
        interactive: opts.interactive,
    };
    let Some((path, ckpt)) = ckpt else {
        return Ok((config, given.limit_train, given.limit_test));
    };
    let contradiction = |flag: &str, value: String, theirs: String| {
        Error::Usage(format!(
            "{flag} {value} contradicts {}, which was made with {flag} {theirs}; leave it out to continue that run",
            path.display()
        ))
    };
    let held = [
        (
            "--batch",
            given.batch.map(|b| b as f64),
            f64::from(ckpt.batch),
        ),
        ("--lr", given.lr, ckpt.lr),
        ("--seed", given.seed.map(|s| s as f64), ckpt.seed as f64),
    ];
    for (flag, value, theirs) in held {
        if let Some(value) = value.filter(|v| *v != theirs) {
            return Err(contradiction(flag, value.to_string(), theirs.to_string()));
        }
    }
    let target = ckpt.epochs as usize;
    config.epochs = match given.epochs {
        Some(epochs) if epochs < target => {
            return Err(contradiction(
                "--epochs",
                epochs.to_string(),
                target.to_string(),
            ));
        }
        Some(epochs) => epochs,
        None => target,
    };
    if ckpt.epochs_done as usize >= config.epochs {
        return Err(Error::Usage(format!(
            "{} already holds all {} epochs; pass --epochs above that to train further",
            path.display(),
            ckpt.epochs_done
        )));
    }
    (config.batch, config.lr, config.seed) = (ckpt.batch as usize, ckpt.lr, ckpt.seed);
    // The checkpoint's set sizes are its limits; given ones are checked against the data.
    let limit = |given: Option<usize>, len: u64| given.or(usize::try_from(len).ok());
    let limits = (
        limit(given.limit_train, ckpt.train_len),
        limit(given.limit_test, ckpt.test_len),
    );
    Ok((config, limits.0, limits.1))
}

/// The run held by the checkpoint `ckpt` (read from `path`), restored onto `backend`, once
/// the data is checked to be what it was made with.
pub fn restore(
    path: &Path,
    ckpt: Checkpoint,
    (train, test): (&Split, &Split),
    backend: Backend,
) -> Result<Run> {
    if (ckpt.train_len, ckpt.test_len) != (train.len() as u64, test.len() as u64) {
        return Err(Error::Usage(format!(
            "{} was made with {} training and {} test images, not {} and {}; pass the same --limit-train/--limit-test",
            path.display(),
            ckpt.train_len,
            ckpt.test_len,
            train.len(),
            test.len()
        )));
    }
    let history = history::from_csv(&ckpt.history)
        .ok()
        .filter(|h| h.len() == ckpt.epochs_done as usize)
        .ok_or_else(|| Error::Model {
            path: path.to_path_buf(),
            reason: "not a usable checkpoint: its history does not match its epochs".into(),
        })?;
    Ok(Run {
        trainer: engine::trainer(backend, ckpt.state)?,
        history,
    })
}

/// `mnist-cnn train`: Keras's log goes to `out`.
pub fn run(opts: &TrainOptions, out: &mut dyn Write) -> Result<()> {
    let out_path = match (&opts.out, &opts.resume) {
        (Some(out), _) => out.clone(),
        // Resuming: the model goes where the interrupted run would have put it.
        (None, Some(ckpt)) => ckpt.with_extension(""),
        (None, None) => PathBuf::from("model.bin"),
    };
    let files = EpochFiles {
        checkpoint: Some(checkpoint::path_for(&out_path)),
        history: Some(history::path_for(&out_path)),
        plot: opts.plot.clone(),
    };
    // Fail before the download and the hours of training, not after.
    fsutil::check_writable_target(&out_path)?;
    if let Some(plot) = &files.plot {
        fsutil::check_writable_target(plot)?;
    }
    opts.backend.device()?;
    let ckpt = match &opts.resume {
        Some(path) => Some((path.as_path(), Checkpoint::load(path)?)),
        None => None,
    };
    let (config, limit_train, limit_test) = resolve(opts, ckpt.as_ref().map(|(p, c)| (*p, c)))?;
    let (train, test) = load_data(&opts.data, (limit_train, limit_test))?;
    let mut run = match ckpt {
        Some((path, ckpt)) => restore(path, ckpt, (&train, &test), opts.backend)?,
        None => Run::new(opts.backend, config.seed)?,
    };
    write_header(out, opts.summary, &config, (&train, &test))?;

    interrupt::install();
    let fit = Fit {
        train: &train,
        test: &test,
        config: &config,
        files: &files,
        stop: interrupt::flag(),
    };
    fit.run(&mut run, out)?;

    let params = run.trainer.state()?.params;
    fsutil::write_atomic(&out_path, &crate::model::file_bytes(&params)?)?;
    writeln!(out, "Model saved to {}", out_path.display()).map_err(Error::stdout)?;
    let history_path = history::path_for(&out_path);
    writeln!(out, "History saved to {}", history_path.display()).map_err(Error::stdout)?;
    if let Some(plot) = &files.plot {
        writeln!(out, "Curves drawn in {}", plot.display()).map_err(Error::stdout)?;
    }
    // The last validation is exactly Keras's closing `model.evaluate` on the test set.
    let last = run.history.last().expect("at least one epoch").val;
    writeln!(out, "{}", last.report()).map_err(Error::stdout)?;
    Ok(())
}

/// The training and test sets, as limited; an error when either is empty.
fn load_data(
    data: &DataSource,
    (train, test): (Option<usize>, Option<usize>),
) -> Result<(Split, Split)> {
    let train = data.load(Part::Train, train)?;
    let test = data.load(Part::Test, test)?;
    if train.is_empty() || test.is_empty() {
        return Err(Error::Usage(format!(
            "nothing to train on: {} training and {} test images",
            train.len(),
            test.len()
        )));
    }
    Ok((train, test))
}

/// The lines Keras's `mnist_cnn.py` prints before training.
fn write_header(
    out: &mut dyn Write,
    summary: bool,
    config: &FitConfig,
    (train, test): (&Split, &Split),
) -> Result<()> {
    let (n, m) = (train.len(), test.len());
    writeln!(out, "x_train shape: ({n}, {SIDE}, {SIDE}, 1)").map_err(Error::stdout)?;
    writeln!(out, "{n} train samples\n{m} test samples").map_err(Error::stdout)?;
    if summary {
        let model = Model::new(&burn::tensor::Device::flex(), 0);
        writeln!(out, "{}", model.summary()).map_err(Error::stdout)?;
    }
    if config.verbosity != Verbosity::Silent {
        writeln!(out, "Train on {n} samples, validate on {m} samples").map_err(Error::stdout)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Fetcher;
    use crate::network::Params;
    use crate::progress::Verbosity;

    fn subset(train: usize, test: usize) -> (Split, Split) {
        let source = DataSource {
            dir: concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-subset").into(),
            fetcher: Fetcher {
                mirrors: Vec::new(),
                ..Fetcher::default()
            },
        };
        let load = |part, n| source.load(part, Some(n)).expect("the committed subset");
        (load(Part::Train, train), load(Part::Test, test))
    }

    /// Both engines learn, each one's checkpoint brings its run back as it was, and a
    /// checkpoint of one resumes on the other. burn's engine is what a GPU trains with; here
    /// it runs on the CPU through burn's autodiff on flex.
    #[test]
    fn both_engines_learn_and_resume_from_checkpoints() {
        let (train, test) = subset(1024, 200);
        let config = FitConfig {
            epochs: 1,
            batch: 64,
            lr: 1.0,
            seed: 3,
            verbosity: Verbosity::Silent,
            interactive: false,
        };
        let untrained = evaluate(&engine::cpu::CpuForward(Params::glorot(3)), &test);
        for backend in [Backend::Cpu, Backend::Flex] {
            let name = backend.name();
            let dir = tempfile::tempdir().unwrap();
            let files = EpochFiles {
                checkpoint: Some(dir.path().join("m.bin.ckpt")),
                ..EpochFiles::default()
            };
            let stop = AtomicBool::new(false);
            let fit = Fit {
                train: &train,
                test: &test,
                config: &config,
                files: &files,
                stop: &stop,
            };
            let mut run = Run::new(backend, 3).unwrap();
            assert_eq!(run.trainer.backend(), backend);
            fit.run(&mut run, &mut Vec::new()).unwrap();
            let val = run.history[0].val;
            assert!(
                val.loss < untrained.loss * 0.6 && val.accuracy > untrained.accuracy + 0.3,
                "{name}: {untrained:?} -> {val:?}"
            );
            // The validation figures are those of the engine's own forward pass on its state.
            let state = run.trainer.state().unwrap();
            let cpu_val = evaluate(&engine::cpu::CpuForward(state.params.clone()), &test);
            assert_eq!(cpu_val.accuracy, val.accuracy, "{name}");
            assert!((cpu_val.loss - val.loss).abs() < 1e-5 * val.loss, "{name}");

            let path = files.checkpoint.as_deref().unwrap();
            for other in [Backend::Cpu, Backend::Flex] {
                let ckpt = Checkpoint::load(path).unwrap();
                assert_eq!((ckpt.epochs, ckpt.epochs_done), (1, 1));
                let resumed = restore(path, ckpt, (&train, &test), other).unwrap();
                assert_eq!(resumed.trainer.backend(), other);
                assert_eq!(resumed.epochs_done(), 1);
                assert_eq!(
                    resumed.trainer.state().unwrap(),
                    state,
                    "{name} -> {other:?}"
                );
            }
        }
    }

    fn options(given: RunParams) -> TrainOptions {
        TrainOptions {
            given,
            verbosity: Verbosity::Silent,
            interactive: false,
            out: None,
            resume: None,
            plot: None,
            summary: false,
            backend: Backend::Cpu,
            data: DataSource {
                dir: "data".into(),
                fetcher: Fetcher::default(),
            },
        }
    }

    /// Resuming takes every number left out from the checkpoint, refuses given ones that
    /// contradict it, and lets --epochs extend the run.
    #[test]
    fn resuming_takes_the_checkpoints_numbers_and_refuses_contradictions() {
        let ckpt = Checkpoint {
            epochs: 3,
            epochs_done: 1,
            seed: 11,
            batch: 64,
            lr: 0.5,
            train_len: 1000,
            test_len: 200,
            state: TrainerState::fresh(11),
            history: String::new(),
        };
        let path = Path::new("m.bin.ckpt");
        let at = Some((path, &ckpt));
        let (config, train, test) = resolve(&options(RunParams::default()), at).unwrap();
        let got = (
            config.epochs,
            config.batch,
            config.lr,
            config.seed,
            train,
            test,
        );
        assert_eq!(got, (3, 64, 0.5, 11, Some(1000), Some(200)));
        // Repeating the checkpoint's own numbers is fine; more epochs extend the run.
        let same = RunParams {
            epochs: Some(5),
            batch: Some(64),
            lr: Some(0.5),
            seed: Some(11),
            limit_train: Some(1000),
            limit_test: None,
        };
        assert_eq!(resolve(&options(same), at).unwrap().0.epochs, 5);
        let none = RunParams::default();
        for (flag, given) in [
            (
                "--batch 128",
                RunParams {
                    batch: Some(128),
                    ..none
                },
            ),
            (
                "--lr 1",
                RunParams {
                    lr: Some(1.0),
                    ..none
                },
            ),
            (
                "--seed 12",
                RunParams {
                    seed: Some(12),
                    ..none
                },
            ),
            (
                "--epochs 2",
                RunParams {
                    epochs: Some(2),
                    ..none
                },
            ),
        ] {
            let err = resolve(&options(given), at).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{err}");
            assert!(
                err.to_string().starts_with(&format!("{flag} contradicts")),
                "{err}"
            );
        }
        // A finished run needs --epochs above its own to go on.
        let done = Checkpoint {
            epochs_done: 3,
            ..ckpt.clone()
        };
        let err = resolve(&options(none), Some((path, &done))).unwrap_err();
        assert!(err.to_string().contains("pass --epochs above"), "{err}");
        // Without a checkpoint: the defaults, and the limits as given.
        let (config, train, _) = resolve(&options(none), None).unwrap();
        assert_eq!(
            (config.epochs, config.batch, config.seed, train),
            (12, 128, 1337, None)
        );
    }

    #[test]
    fn streams_differ_by_seed_epoch_and_purpose() {
        let a = stream_seed(1, 1, 1);
        assert_eq!(a, stream_seed(1, 1, 1));
        assert_ne!(a, stream_seed(2, 1, 1));
        assert_ne!(a, stream_seed(1, 2, 1));
        assert_ne!(a, stream_seed(1, 1, 2));
    }
}
