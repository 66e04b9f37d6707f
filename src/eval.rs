//! Loss and accuracy of a model on a labelled set; the `eval` command.

use burn::tensor::Device;

use crate::cli::{self, EvalArgs};
use crate::data::batch::Batch;
use crate::data::{Part, Split};
use crate::error::{Error, Result};
use crate::model::{Model, count_correct, cross_entropy};

/// Images per forward pass when evaluating. Fixed, so that `train`'s last validation and
/// `eval` of the saved model compute the very same sums.
pub const EVAL_BATCH: usize = 500;

/// Mean cross-entropy and accuracy over a set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}

impl Evaluation {
    /// The two closing lines of Keras's `mnist_cnn.py`.
    pub fn report(&self) -> String {
        format!("Test loss: {}\nTest accuracy: {}", self.loss, self.accuracy)
    }
}

/// Evaluates `model` (without dropout: pass a plain-device or `valid()` model) on `split`.
pub fn evaluate(model: &Model, split: &Split, device: &Device) -> Evaluation {
    let mut loss_sum = 0f64;
    let mut correct = 0i64;
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(EVAL_BATCH) {
        let batch = Batch::gather(split, chunk, device);
        let logits = model.forward(batch.images);
        let losses = cross_entropy(logits.clone(), batch.labels.clone());
        let losses: Vec<f32> = losses.into_data().try_to_vec().expect("f32 losses");
        loss_sum += losses.iter().map(|&l| f64::from(l)).sum::<f64>();
        correct += count_correct(logits, batch.labels).into_scalar::<i64>();
    }
    let count = split.len().max(1);
    Evaluation {
        loss: loss_sum / count as f64,
        accuracy: correct as f64 / count as f64,
    }
}

/// `mnist-cnn eval MODEL`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let device = crate::backend::device(args.compute.backend)?;
    // Read the model before the data: a bad path should not cost a download.
    let model = Model::load(&args.model, &device)?;
    let test = args
        .data
        .source()
        .load(Part::Test, cli::limit(args.limit_test))?;
    if test.is_empty() {
        return Err(Error::Usage("the test set is empty".into()));
    }
    println!("{} test samples", test.len());
    let result = evaluate(&model, &test, &device);
    println!("{}", result.report());
    Ok(())
}
