//! Loss and accuracy of a model on a labelled set; the `eval` command.

use burn::tensor::Device;

use crate::cli::{self, EvalArgs};
use crate::data::batch::Batch;
use crate::data::idx::COLS;
use crate::data::{Part, Split};
use crate::error::{Error, Result};
use crate::kernels::inference::CpuNet;
use crate::model::{Model, NUM_CLASSES};
use crate::picture::{Canvas, text_width};

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
    score(model, split, device).0
}

/// [`evaluate`], plus the predicted digit of every sample.
pub fn score(model: &Model, split: &Split, device: &Device) -> (Evaluation, Vec<u8>) {
    // On the CPU our own kernels run this pass several times faster than burn's generic ops;
    // elsewhere (a GPU) burn's forward pass is the fast one.
    let cpu = crate::backend::runs_our_kernels(device).then(|| CpuNet::from_model(model));
    let mut loss_sum = 0f64;
    let mut predictions = Vec::with_capacity(split.len());
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(EVAL_BATCH) {
        let logits = match &cpu {
            Some(net) => net.logits(&Batch::pixels(split, chunk)),
            None => {
                let batch = Batch::gather(split, chunk, device);
                let logits = model.forward(batch.images).into_data().convert::<f32>();
                logits.try_to_vec::<f32>().expect("f32 logits")
            }
        };
        for (row, &i) in logits.chunks(NUM_CLASSES).zip(chunk) {
            loss_sum += row_cross_entropy(row, split.labels[i]);
            predictions.push(argmax(row));
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

/// `-log softmax(row)[label]`, computed in f64 around the row's maximum.
fn row_cross_entropy(row: &[f32], label: u8) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let log_sum: f64 = row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln();
    max + log_sum - row[label as usize] as f64
}

/// The first index of the largest value.
fn argmax(row: &[f32]) -> u8 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u8
}

/// `counts[true][predicted]`.
pub fn confusion(labels: &[u8], predictions: &[u8]) -> [[usize; NUM_CLASSES]; NUM_CLASSES] {
    let mut counts = [[0; NUM_CLASSES]; NUM_CLASSES];
    for (&t, &p) in labels.iter().zip(predictions) {
        counts[t as usize][p as usize] += 1;
    }
    counts
}

/// The confusion matrix and per-class precision and recall, as a text table.
pub fn report(counts: &[[usize; NUM_CLASSES]; NUM_CLASSES]) -> String {
    let mut out = String::from("Confusion matrix (rows: true digit, columns: predicted)\n     ");
    for p in 0..NUM_CLASSES {
        out.push_str(&format!("{p:>6}"));
    }
    out.push('\n');
    for (t, row) in counts.iter().enumerate() {
        out.push_str(&format!("{t:>5}"));
        for n in row {
            out.push_str(&format!("{n:>6}"));
        }
        out.push('\n');
    }
    out.push_str("\ndigit  precision  recall  support\n");
    for d in 0..NUM_CLASSES {
        let support: usize = counts[d].iter().sum();
        let predicted: usize = counts.iter().map(|row| row[d]).sum();
        let ratio = |n: usize, of: usize| {
            if of == 0 {
                "     n/a".to_string()
            } else {
                format!("{:>8.4}", n as f64 / of as f64)
            }
        };
        out.push_str(&format!(
            "{d:>5}   {}{}  {support:>7}\n",
            ratio(counts[d][d], predicted),
            ratio(counts[d][d], support)
        ));
    }
    out
}

/// Misclassified digits per row of the error sheet.
const SHEET_COLUMNS: usize = 16;
/// More would make a sheet nobody can look through; an untrained model errs 9,000 times.
const SHEET_MAX: usize = 1000;
/// Each digit is drawn at twice its size, with its `true→predicted` label below.
const DIGIT_SCALE: u32 = 2;
const CELL_WIDTH: u32 = 64;
const CELL_HEIGHT: u32 = 86;
const SHEET_HEADER: u32 = 40;

/// A grid of the misclassified digits of `split`, each labelled `true→predicted`.
pub fn error_sheet(split: &Split, predictions: &[u8]) -> Canvas {
    let wrong: Vec<usize> = (0..split.len())
        .filter(|&i| predictions[i] != split.labels[i])
        .collect();
    let shown = &wrong[..wrong.len().min(SHEET_MAX)];
    let rows = shown.len().div_ceil(SHEET_COLUMNS) as u32;
    let width = SHEET_COLUMNS as u32 * CELL_WIDTH;
    let mut sheet = Canvas::new(width, SHEET_HEADER + rows * CELL_HEIGHT, GREY);
    let mut title = format!(
        "{} of {} misclassified (true→predicted)",
        wrong.len(),
        split.len()
    );
    if shown.len() < wrong.len() {
        title.push_str(&format!(", first {}", shown.len()));
    }
    sheet.text(12, 12, &title, 2, LIGHT);
    let digit = COLS as u32 * DIGIT_SCALE;
    for (n, &i) in shown.iter().enumerate() {
        let x = (n % SHEET_COLUMNS) as u32 * CELL_WIDTH;
        let y = SHEET_HEADER + (n / SHEET_COLUMNS) as u32 * CELL_HEIGHT;
        let left = (x + (CELL_WIDTH - digit) / 2) as i64;
        sheet.grey(left, i64::from(y + 4), split.image(i), COLS, DIGIT_SCALE);
        let label = format!("{}→{}", split.labels[i], predictions[i]);
        let label_x = x + (CELL_WIDTH - text_width(&label, 2)) / 2;
        sheet.text(label_x as i64, i64::from(y + digit + 8), &label, 2, LIGHT);
    }
    sheet
}

const GREY: image::Rgb<u8> = image::Rgb([48, 48, 48]);
const LIGHT: image::Rgb<u8> = image::Rgb([235, 235, 235]);

/// `mnist-cnn eval MODEL`.
pub fn run(args: &EvalArgs) -> Result<()> {
    if let Some(path) = &args.errors {
        crate::fsutil::check_writable_target(path)?;
    }
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
    let (result, predictions) = score(&model, &test, &device);
    println!("{}", result.report());
    if args.report {
        print!("\n{}", report(&confusion(&test.labels, &predictions)));
    }
    if let Some(path) = &args.errors {
        error_sheet(&test, &predictions).save_png(path)?;
        println!("Misclassified digits drawn in {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_and_argmax_by_hand() {
        // softmax([0, ln 3]) = [1/4, 3/4].
        let row = [0.0, 3f32.ln()];
        assert!((row_cross_entropy(&row, 0) - 4f64.ln()).abs() < 1e-7);
        assert!((row_cross_entropy(&row, 1) - (4.0f64 / 3.0).ln()).abs() < 1e-7);
        // Large logits do not overflow.
        assert!((row_cross_entropy(&[1000.0, 1000.0], 1) - 2f64.ln()).abs() < 1e-9);
        assert_eq!(argmax(&[0.1, 0.7, 0.7, -1.0]), 1);
    }

    #[test]
    fn confusion_and_report_by_hand() {
        let labels = [0, 0, 1, 1, 1, 2];
        let predicted = [0, 1, 1, 1, 2, 2];
        let counts = confusion(&labels, &predicted);
        assert_eq!(counts[0][..3], [1, 1, 0]);
        assert_eq!(counts[1][..3], [0, 2, 1]);
        assert_eq!(counts[2][..3], [0, 0, 1]);
        let text = report(&counts);
        let per_class = text.split("digit  precision").nth(1).unwrap();
        let line = |d: &str| {
            per_class
                .lines()
                .find(|l| l.starts_with(d))
                .unwrap()
                .to_string()
        };
        // Digit 1: 2 of 3 predicted "1" are right, 2 of 3 true "1" found.
        assert_eq!(line("    1   "), "    1     0.6667  0.6667        3");
        assert_eq!(line("    2   "), "    2     0.5000  1.0000        1");
        assert_eq!(line("    3   "), "    3        n/a     n/a        0");
        assert!(text.contains("    0     1     1     0     0"));
    }

    #[test]
    fn the_error_sheet_shows_each_wrong_digit_once() {
        // Three images of constant grey levels 10, 20, 30; the first and last are wrong.
        let split = Split {
            images: [10u8, 20, 30]
                .iter()
                .flat_map(|&v| std::iter::repeat_n(v, 784))
                .collect(),
            labels: vec![7, 1, 4],
        };
        let sheet = error_sheet(&split, &[2, 1, 9]).image;
        assert_eq!(sheet.width(), SHEET_COLUMNS as u32 * CELL_WIDTH);
        assert_eq!(sheet.height(), SHEET_HEADER + CELL_HEIGHT);
        let at = |cell: u32| sheet.get_pixel(cell * CELL_WIDTH + 32, SHEET_HEADER + 30).0[0];
        assert_eq!([at(0), at(1), at(2)], [10, 30, GREY.0[0]]);
        // The label sits below each digit, lit in the label colour.
        let label_lit = |cell: u32| {
            (0..CELL_WIDTH).any(|dx| {
                (SHEET_HEADER + 64..SHEET_HEADER + CELL_HEIGHT)
                    .any(|y| sheet.get_pixel(cell * CELL_WIDTH + dx, y) == &LIGHT)
            })
        };
        assert!(label_lit(0) && label_lit(1) && !label_lit(2));

        let none_wrong = error_sheet(&split, &[7, 1, 4]).image;
        assert_eq!(none_wrong.height(), SHEET_HEADER);
    }
}
