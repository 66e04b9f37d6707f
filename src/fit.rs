//! The training loop: epochs of shuffled batches through an engine's [`Trainer`], Keras's
//! log, validation, and the files kept after every epoch.
//!
//! One step flows: `Fit::epoch` shuffles and cuts batches → [`batch::pixels`] scales them →
//! [`Trainer::step`] runs forward, loss, backward and Adadelta on the chosen engine →
//! [`RunningMeans`] keeps the epoch's means, which the [`Progbar`] renders → after the last
//! batch, validation through the same engine's [`Forward`], then the checkpoint, the history
//! CSV and the curves (`Fit::end_epoch`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

use crate::checkpoint::{Checkpoint, TrainerState};
use crate::data::{Split, batch};
use crate::engine::{self, Backend, Forward, Trainer};
use crate::error::{Error, Result};
use crate::evaluate::evaluate;
use crate::fsutil;
use crate::history::{self, EpochRecord};
use crate::metrics::RunningMeans;
use crate::progress::{EpochPrinter, Progbar, Verbosity};
use crate::rng::{self, Purpose};
use crate::settings::Settings;

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

/// Training from a run's state up to `settings.epochs`, validating on `test` after each epoch.
pub struct Fit<'a> {
    pub train: &'a Split,
    pub test: &'a Split,
    pub settings: &'a Settings,
    pub verbosity: Verbosity,
    /// Redraw the bar in place (stdout is a terminal).
    pub interactive: bool,
    pub files: &'a EpochFiles,
    /// Polled after every batch.
    pub stop: &'a AtomicBool,
}

impl Fit<'_> {
    /// Trains `run` to the last epoch, writing Keras's log to `out`.
    pub fn run(&self, run: &mut Run, out: &mut dyn Write) -> Result<()> {
        for epoch in run.epochs_done() + 1..=self.settings.epochs {
            if self.verbosity != Verbosity::Silent {
                writeln!(out, "Epoch {epoch}/{}", self.settings.epochs).map_err(Error::stdout)?;
            }
            let mut printer = EpochPrinter::new(&mut *out, self.verbosity, self.interactive);
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
        let (seed, train) = (self.settings.seed, self.train);
        let mut order: Vec<usize> = (0..train.len()).collect();
        let shuffle = rng::stream(seed, epoch, Purpose::Shuffle);
        order.shuffle(&mut StdRng::seed_from_u64(shuffle));
        let dropout_seed = rng::stream(seed, epoch, Purpose::EpochDropout);
        let mut bar = Progbar::new(train.len());
        let mut means = RunningMeans::default();
        for (step, chunk) in order.chunks(self.settings.batch).enumerate() {
            if self.stop.load(Ordering::SeqCst) {
                printer.abandon().map_err(Error::stdout)?;
                return Err(self.interrupted(epoch, run.epochs_done()));
            }
            let labels: Vec<u8> = chunk.iter().map(|&i| train.labels[i]).collect();
            // Each step its own mask stream, so a step's dropout does not depend on thread timing.
            let step_seed = rng::stream(dropout_seed, step + 1, Purpose::StepDropout);
            let pixels = batch::pixels(train, chunk);
            let outcome = run
                .trainer
                .step(&pixels, &labels, step_seed, self.settings.lr);
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
                settings: *self.settings,
                epochs_done: run.epochs_done(),
                train_len: self.train.len(),
                test_len: self.test.len(),
                state: run.trainer.state()?,
                history: run.history.clone(),
            };
            fsutil::write_atomic(path, &checkpoint.to_bytes()?)?;
        }
        if let Some(path) = &self.files.history {
            fsutil::write_atomic(path, history::to_csv(&run.history).as_bytes())?;
        }
        if let Some(path) = &self.files.plot {
            crate::charts::curves::plot(&run.history).save_png(path)?;
        }
        Ok(())
    }

    fn interrupted(&self, epoch: usize, done: usize) -> Error {
        let head = format!("interrupted in epoch {epoch} of {}", self.settings.epochs);
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

/// The run held by the checkpoint `ckpt` (read from `path`), restored onto `backend`, once
/// the data is checked to be what it was made with.
pub fn restore(
    path: &Path,
    ckpt: Checkpoint,
    (train, test): (&Split, &Split),
    backend: Backend,
) -> Result<Run> {
    if (ckpt.train_len, ckpt.test_len) != (train.len(), test.len()) {
        return Err(Error::Usage(format!(
            "{} was made with {} training and {} test images, not {} and {}; pass the same --limit-train/--limit-test",
            path.display(),
            ckpt.train_len,
            ckpt.test_len,
            train.len(),
            test.len()
        )));
    }
    Ok(Run {
        trainer: engine::trainer(backend, ckpt.state)?,
        history: ckpt.history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataSource, Part};
    use crate::network::Params;

    fn subset(train: usize, test: usize) -> (Split, Split) {
        let source = DataSource::committed_subset();
        let load = |part, n| source.load(part, Some(n)).expect("the committed subset");
        (load(Part::Train, train), load(Part::Test, test))
    }

    /// Both engines learn, each one's checkpoint brings its run back as it was, and a
    /// checkpoint of one resumes on the other. burn's engine is what a GPU trains with; here
    /// it runs on the CPU through burn's autodiff on flex.
    #[test]
    fn both_engines_learn_and_resume_from_checkpoints() {
        let (train, test) = subset(1024, 200);
        let settings = Settings {
            epochs: 1,
            batch: 64,
            lr: 1.0,
            seed: 3,
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
                settings: &settings,
                verbosity: Verbosity::Silent,
                interactive: false,
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
                assert_eq!((ckpt.settings.epochs, ckpt.epochs_done), (1, 1));
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
}
