//! What is measured on rows of logits, written once: the loss, the softmax, the predicted
//! digit and the runners-up; and the running means of an epoch, kept as counts and sums that
//! the progress bar only renders.

use crate::network::NUM_CLASSES;

/// Categorical cross-entropy of one row of logits: `-log softmax(row)[label]`, computed in
/// f64 around the row's maximum so that large logits do not overflow.
pub fn cross_entropy(row: &[f32], label: u8) -> f64 {
    let max = f64::from(max(row));
    let log_sum: f64 = row
        .iter()
        .map(|&v| (f64::from(v) - max).exp())
        .sum::<f64>()
        .ln();
    max + log_sum - f64::from(row[usize::from(label)])
}

/// The softmax of one row of logits into `probs`, in f64. The differences to the maximum
/// are taken in f32, as the training step's gradient has always taken them.
pub fn softmax(row: &[f32], probs: &mut [f64]) {
    let max = max(row);
    let mut sum = 0f64;
    for (p, &v) in probs.iter_mut().zip(row) {
        *p = f64::from(v - max).exp();
        sum += *p;
    }
    probs.iter_mut().for_each(|p| *p /= sum);
}

fn max(row: &[f32]) -> f32 {
    row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// The first index of the largest value: the predicted class.
pub fn argmax(row: &[f32]) -> usize {
    top_k(row, 1)[0]
}

/// How many rows of `logits` (each `NUM_CLASSES` wide) have their largest value at the label.
pub fn count_correct(logits: &[f32], labels: &[u8]) -> usize {
    logits
        .chunks(NUM_CLASSES)
        .zip(labels)
        .filter(|(row, label)| argmax(row) == usize::from(**label))
        .count()
}

/// The indices of the `k` largest values, largest first; ties go to the lower index.
pub fn top_k<T: PartialOrd + Copy>(row: &[T], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = Vec::with_capacity(k + 1);
    for i in 0..row.len() {
        // Insert after every equal or larger value, so the first of equals stays first.
        let at = order.partition_point(|&j| row[j] >= row[i]);
        if at < k {
            order.insert(at, i);
            order.truncate(k);
        }
    }
    order
}

/// Running, sample-weighted means of one epoch's training batches, as Keras reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunningMeans {
    samples: usize,
    /// Sum over batches of the batch's mean loss times its size.
    loss_sum: f64,
    correct: usize,
}

impl RunningMeans {
    /// Adds a batch of `samples` with mean loss `loss`, `correct` of them classified right.
    pub fn add(&mut self, samples: usize, loss: f64, correct: usize) {
        self.samples += samples;
        self.loss_sum += loss * samples as f64;
        self.correct += correct;
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn loss(&self) -> f64 {
        self.loss_sum / self.samples.max(1) as f64
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.samples.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_and_softmax_by_hand() {
        // softmax([0, ln 3]) = [1/4, 3/4].
        let row = [0.0, 3f32.ln()];
        assert!((cross_entropy(&row, 0) - 4f64.ln()).abs() < 1e-7);
        assert!((cross_entropy(&row, 1) - (4.0f64 / 3.0).ln()).abs() < 1e-7);
        let mut probs = [0.0; 2];
        softmax(&row, &mut probs);
        assert!((probs[0] - 0.25).abs() < 1e-7 && (probs[1] - 0.75).abs() < 1e-7);
        // Large logits overflow neither.
        assert!((cross_entropy(&[1000.0, 1000.0], 1) - 2f64.ln()).abs() < 1e-9);
        softmax(&[1000.0, 1000.0], &mut probs);
        assert_eq!(probs, [0.5, 0.5]);
        // -log p of the label, the same quantity both ways.
        let row = [0.3f32, -1.2, 2.5, 0.0];
        let mut probs = [0.0; 4];
        softmax(&row, &mut probs);
        assert!((cross_entropy(&row, 2) + probs[2].ln()).abs() < 1e-6);
    }

    #[test]
    fn argmax_and_top_k_take_the_first_of_ties() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, -1.0]), 1);
        assert_eq!(argmax(&[0.0; 10]), 0);
        assert_eq!(top_k(&[0.1, 0.7, 0.2, 0.7, 0.5], 3), vec![1, 3, 4]);
        assert_eq!(top_k(&[3, 1, 2], 5), vec![0, 2, 1]);
        assert_eq!(top_k(&[1.0f64, 2.0], 0), Vec::<usize>::new());
    }

    #[test]
    fn count_correct_compares_each_rows_argmax_with_its_label() {
        let mut logits = vec![0.0f32; 3 * NUM_CLASSES];
        logits[2] = 1.0; // row 0 says 2
        logits[NUM_CLASSES + 7] = 1.0; // row 1 says 7
        // Row 2 is all ties: class 0.
        assert_eq!(count_correct(&logits, &[2, 7, 0]), 3);
        assert_eq!(count_correct(&logits, &[2, 3, 4]), 1);
    }

    #[test]
    fn running_means_are_weighted_by_samples() {
        let mut means = RunningMeans::default();
        means.add(128, 1.0, 64);
        means.add(128, 2.0, 96);
        means.add(44, 4.0, 44); // a short last batch
        assert_eq!(means.samples(), 300);
        let expected = (128.0 * 1.0 + 128.0 * 2.0 + 44.0 * 4.0) / 300.0;
        assert!((means.loss() - expected).abs() < 1e-12);
        assert_eq!(means.accuracy(), 204.0 / 300.0);
        assert_eq!(RunningMeans::default().loss(), 0.0);
    }
}
