//! The training loop and the `train` command.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

use crate::cli::{self, TrainArgs};
use crate::data::batch::Batch;
use crate::data::idx::{COLS, ROWS};
use crate::data::{Part, Split};
use crate::error::{Error, Result};
use crate::eval::{Evaluation, evaluate};
use crate::fsutil;
use crate::model::{Model, count_correct, cross_entropy};
use crate::optim::Adadelta;
use crate::progress::{EpochPrinter, Progbar, Verbosity};

/// What `fit` needs besides the data.
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

/// One epoch's means, as Keras's `History` holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub acc: f64,
    pub val: Evaluation,
    pub elapsed: Duration,
}

/// An independent stream per (seed, epoch, purpose), so that any epoch can be replayed alone.
fn stream_seed(seed: u64, epoch: usize, purpose: u64) -> u64 {
    // SplitMix64's finaliser: nearby inputs give unrelated outputs.
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ purpose << 56;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Trains `model` on `train`, validating on `test` after each epoch and writing Keras's log to
/// `out`. `device` is the plain device; training runs on its autodiff twin.
pub fn fit(
    mut model: Model,
    train: &Split,
    test: &Split,
    config: &FitConfig,
    device: &Device,
    out: &mut impl Write,
) -> Result<(Model, Vec<EpochRecord>)> {
    let train_device = device.clone().autodiff();
    let mut optim = Adadelta::default().init();
    let mut history = Vec::with_capacity(config.epochs);
    let log_err = |e: std::io::Error| Error::io("cannot write the log to", "stdout", e);

    for epoch in 1..=config.epochs {
        if config.verbosity != Verbosity::Silent {
            writeln!(out, "Epoch {epoch}/{}", config.epochs).map_err(log_err)?;
        }
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(stream_seed(
            config.seed,
            epoch,
            1,
        )));
        train_device.seed(stream_seed(config.seed, epoch, 2)); // dropout masks

        let mut bar = Progbar::new(train.len());
        let mut printer = EpochPrinter::new(&mut *out, config.verbosity, config.interactive);
        let mut last = Vec::new();
        for (step, chunk) in order.chunks(config.batch).enumerate() {
            let batch = Batch::gather(train, chunk, &train_device);
            let logits = model.forward(batch.images);
            let correct = count_correct(logits.clone().detach(), batch.labels.clone());
            let loss = cross_entropy(logits, batch.labels).mean();
            let loss_value = loss.clone().into_scalar::<f32>();
            if !loss_value.is_finite() {
                return Err(Error::Diverged {
                    epoch,
                    step: step + 1,
                    value: loss_value,
                });
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.lr, model, grads);

            let acc = correct.into_scalar::<i64>() as f64 / chunk.len() as f64;
            let values = [("loss", f64::from(loss_value)), ("acc", acc)];
            let seen = bar.seen() + chunk.len();
            if seen < train.len() {
                bar.update(seen, &values);
                printer.batch(&bar).map_err(log_err)?;
            } else {
                // As Keras: the last batch is reported together with the validation.
                last = values.to_vec();
            }
        }

        let val = evaluate(&model.valid(), test, device);
        last.extend([("val_loss", val.loss), ("val_acc", val.accuracy)]);
        bar.update(train.len(), &last);
        printer.finish(&bar).map_err(log_err)?;
        history.push(EpochRecord {
            epoch,
            loss: bar.mean("loss").unwrap_or(f64::NAN),
            acc: bar.mean("acc").unwrap_or(f64::NAN),
            val,
            elapsed: printer.elapsed(),
        });
    }
    Ok((model, history))
}

/// `mnist-cnn train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    cli::check_train(args)?;
    // Fail before the download and the hours of training, not after.
    fsutil::check_writable_target(&args.out)?;
    let device = crate::backend::device(args.compute.backend)?;
    let source = args.data.source();
    let train = source.load(Part::Train, cli::limit(args.limit_train))?;
    let test = source.load(Part::Test, cli::limit(args.limit_test))?;
    if train.is_empty() || test.is_empty() {
        return Err(Error::Usage(format!(
            "nothing to train on: {} training and {} test images",
            train.len(),
            test.len()
        )));
    }

    let stdout = std::io::stdout();
    let interactive = stdout.is_terminal();
    let mut out = stdout.lock();
    let log_err = |e: std::io::Error| Error::io("cannot write the log to", "stdout", e);
    writeln!(out, "x_train shape: ({}, {ROWS}, {COLS}, 1)", train.len()).map_err(log_err)?;
    writeln!(out, "{} train samples", train.len()).map_err(log_err)?;
    writeln!(out, "{} test samples", test.len()).map_err(log_err)?;

    let model = Model::new(&device.clone().autodiff(), args.seed);
    if args.summary {
        writeln!(out, "{}", model.summary()).map_err(log_err)?;
    }
    let verbosity = Verbosity::from_level(args.verbose);
    if verbosity != Verbosity::Silent {
        writeln!(
            out,
            "Train on {} samples, validate on {} samples",
            train.len(),
            test.len()
        )
        .map_err(log_err)?;
    }
    let config = FitConfig {
        epochs: args.epochs as usize,
        batch: args.batch as usize,
        lr: args.lr,
        seed: args.seed,
        verbosity,
        interactive,
    };
    let (model, history) = fit(model, &train, &test, &config, &device, &mut out)?;

    fsutil::write_atomic(&args.out, &model.valid().to_bytes()?)?;
    let last = history.last().expect("at least one epoch").val;
    writeln!(out, "Model saved to {}", args.out.display()).map_err(log_err)?;
    // The last validation is exactly Keras's closing `model.evaluate` on the test set.
    writeln!(out, "{}", last.report()).map_err(log_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_seed_epoch_and_purpose() {
        let a = stream_seed(1, 1, 1);
        assert_eq!(a, stream_seed(1, 1, 1));
        assert_ne!(a, stream_seed(2, 1, 1));
        assert_ne!(a, stream_seed(1, 2, 1));
        assert_ne!(a, stream_seed(1, 1, 2));
    }
}
