//! Loss and accuracy of a model on a labelled set, and where it errs: what training's
//! validation and the `eval` command share.

use crate::data::Split;
use crate::data::batch;
use crate::engine::Forward;
use crate::metrics;
use crate::network::NUM_CLASSES;

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

/// Loss and accuracy of `net` (the forward pass without dropout) on `split`.
pub fn evaluate(net: &dyn Forward, split: &Split) -> Evaluation {
    score(net, split).0
}

/// [`evaluate`], plus the predicted digit of every sample.
pub fn score(net: &dyn Forward, split: &Split) -> (Evaluation, Vec<u8>) {
    let mut loss_sum = 0f64;
    let mut predictions = Vec::with_capacity(split.len());
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(EVAL_BATCH) {
        let logits = net.logits(&batch::pixels(split, chunk));
        for (row, &i) in logits.chunks(NUM_CLASSES).zip(chunk) {
            loss_sum += metrics::cross_entropy(row, split.labels[i]);
            predictions.push(metrics::argmax(row) as u8);
        }
    }
    let correct = predictions
        .iter()
        .zip(&split.labels)
        .filter(|(p, l)| p == l)
        .count();
    let count = split.len().max(1);
    let evaluation = Evaluation {
        loss: loss_sum / count as f64,
        accuracy: correct as f64 / count as f64,
    };
    (evaluation, predictions)
}

/// `counts[true][predicted]`.
pub fn confusion(labels: &[u8], predictions: &[u8]) -> [[usize; NUM_CLASSES]; NUM_CLASSES] {
    let mut counts = [[0; NUM_CLASSES]; NUM_CLASSES];
    for (&t, &p) in labels.iter().zip(predictions) {
        counts[t as usize][p as usize] += 1;
    }
    counts
}

/// One digit's figures in a confusion matrix; a ratio over nothing is `None`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassFigures {
    pub digit: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub support: usize,
}

/// Precision, recall and support of each digit.
pub fn per_class(counts: &[[usize; NUM_CLASSES]; NUM_CLASSES]) -> Vec<ClassFigures> {
    let ratio = |n: usize, of: usize| (of > 0).then(|| n as f64 / of as f64);
    (0..NUM_CLASSES)
        .map(|d| {
            let support: usize = counts[d].iter().sum();
            let predicted: usize = counts.iter().map(|row| row[d]).sum();
            ClassFigures {
                digit: d,
                precision: ratio(counts[d][d], predicted),
                recall: ratio(counts[d][d], support),
                support,
            }
        })
        .collect()
}
