//! `mnist-cnn train`: Keras's `mnist_cnn.py` from the command line: the data, the run's
//! settings, the training loop ([`crate::fit`]), and the saved model.

use std::io::Write;
use std::path::PathBuf;

use crate::checkpoint::{self, Checkpoint};
use crate::data::{DataSource, Part, Split};
use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::fit::{EpochFiles, Fit, Run, restore};
use crate::model::Provenance;
use crate::network::SIDE;
use crate::progress::Verbosity;
use crate::settings::{Given, Limits};
use crate::{fsutil, history, interrupt};

/// What `train` is asked to do.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run's settings as given; when resuming, those left out come from the checkpoint.
    pub given: Given,
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
    opts.backend.trains()?;
    opts.backend.available()?;
    let ckpt = match &opts.resume {
        Some(path) => Some((path.as_path(), Checkpoint::load(path)?)),
        None => None,
    };
    let (settings, limits) = opts
        .given
        .resolve(ckpt.as_ref().map(|(p, c)| c.resumed(p)))?;
    let (train, test) = load_data(&opts.data, limits)?;
    let mut run = match ckpt {
        Some((path, ckpt)) => restore(path, ckpt, (&train, &test), opts.backend)?,
        None => Run::new(opts.backend, settings.seed)?,
    };
    write_header(out, opts, (&train, &test))?;

    interrupt::install();
    let fit = Fit {
        train: &train,
        test: &test,
        settings: &settings,
        verbosity: opts.verbosity,
        interactive: opts.interactive,
        files: &files,
        stop: interrupt::flag(),
    };
    fit.run(&mut run, out)?;

    let params = run.trainer.state()?.params;
    // The last validation is exactly Keras's closing `model.evaluate` on the test set.
    let last = run.history.last().expect("at least one epoch").val;
    let provenance = Provenance {
        epochs: run.history.len(),
        seed: settings.seed,
        batch: settings.batch,
        test_images: test.len(),
        test_loss: last.loss,
        test_accuracy: last.accuracy,
    };
    let bytes = crate::model::file_bytes(&params, Some(&provenance))?;
    fsutil::write_atomic(&out_path, &bytes)?;
    writeln!(out, "Model saved to {}", out_path.display()).map_err(Error::stdout)?;
    let history_path = history::path_for(&out_path);
    writeln!(out, "History saved to {}", history_path.display()).map_err(Error::stdout)?;
    if let Some(plot) = &files.plot {
        writeln!(out, "Curves drawn in {}", plot.display()).map_err(Error::stdout)?;
    }
    writeln!(out, "{}", last.report()).map_err(Error::stdout)?;
    Ok(())
}

/// The training and test sets, as limited; an error when either is empty.
fn load_data(data: &DataSource, limits: Limits) -> Result<(Split, Split)> {
    let train = data.load(Part::Train, limits.train)?;
    let test = data.load(Part::Test, limits.test)?;
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
    opts: &TrainOptions,
    (train, test): (&Split, &Split),
) -> Result<()> {
    let (n, m) = (train.len(), test.len());
    writeln!(out, "x_train shape: ({n}, {SIDE}, {SIDE}, 1)").map_err(Error::stdout)?;
    writeln!(out, "{n} train samples\n{m} test samples").map_err(Error::stdout)?;
    if opts.summary {
        writeln!(out, "{}", crate::model::summary()).map_err(Error::stdout)?;
    }
    if opts.verbosity != Verbosity::Silent {
        writeln!(out, "Train on {n} samples, validate on {m} samples").map_err(Error::stdout)?;
    }
    Ok(())
}
