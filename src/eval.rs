//! Loss and accuracy of a model on a labelled set; the `eval` command.

use std::io::Write;
use std::path::PathBuf;

use crate::data::batch;
use crate::data::{DataSource, Part, Split};
use crate::engine::{self, Backend, Forward};
use crate::error::{Error, Result};
use crate::metrics;
use crate::network::{NUM_CLASSES, SIDE};
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
    let ratio = |r: Option<f64>| r.map_or("     n/a".to_string(), |r| format!("{r:>8.4}"));
    for c in per_class(counts) {
        out.push_str(&format!(
            "{:>5}   {}{}  {:>7}\n",
            c.digit,
            ratio(c.precision),
            ratio(c.recall),
            c.support
        ));
    }
    out
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

/// The evaluation as one JSON object; with `counts`, the confusion matrix and per-class figures.
pub fn to_json(
    result: &Evaluation,
    count: usize,
    counts: Option<&[[usize; NUM_CLASSES]; NUM_CLASSES]>,
) -> serde_json::Value {
    let mut json = serde_json::json!({
        "count": count,
        "loss": result.loss,
        "accuracy": result.accuracy,
    });
    if let Some(counts) = counts {
        json["confusion"] = serde_json::json!(counts);
        json["per_class"] = per_class(counts)
            .iter()
            .map(|c| {
                serde_json::json!({
                    "digit": c.digit,
                    "precision": c.precision,
                    "recall": c.recall,
                    "support": c.support,
                })
            })
            .collect();
    }
    json
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
    let digit = SIDE as u32 * DIGIT_SCALE;
    for (n, &i) in shown.iter().enumerate() {
        let x = (n % SHEET_COLUMNS) as u32 * CELL_WIDTH;
        let y = SHEET_HEADER + (n / SHEET_COLUMNS) as u32 * CELL_HEIGHT;
        let left = (x + (CELL_WIDTH - digit) / 2) as i64;
        sheet.grey(left, i64::from(y + 4), split.image(i), SIDE, DIGIT_SCALE);
        let label = format!("{}→{}", split.labels[i], predictions[i]);
        let label_x = x + (CELL_WIDTH - text_width(&label, 2)) / 2;
        sheet.text(label_x as i64, i64::from(y + digit + 8), &label, 2, LIGHT);
    }
    sheet
}

const GREY: image::Rgb<u8> = image::Rgb([48, 48, 48]);
const LIGHT: image::Rgb<u8> = image::Rgb([235, 235, 235]);

/// What `eval` is asked to do.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The model file.
    pub model: PathBuf,
    /// Only the first N test images.
    pub limit_test: Option<usize>,
    /// Add the confusion matrix and per-class figures.
    pub report: bool,
    /// Draw the misclassified digits into this PNG.
    pub errors: Option<PathBuf>,
    /// One JSON object instead of text.
    pub json: bool,
    pub backend: Backend,
    pub data: DataSource,
}

/// `mnist-cnn eval MODEL`: the report goes to `out`.
pub fn run(opts: &EvalOptions, out: &mut dyn Write) -> Result<()> {
    if let Some(path) = &opts.errors {
        crate::fsutil::check_writable_target(path)?;
    }
    // The backend, then the model, before the data: neither should cost a download.
    opts.backend.device()?;
    let params = crate::model::read_params(&opts.model)?;
    let net = engine::forward(opts.backend, params)?;
    let test = opts.data.load(Part::Test, opts.limit_test)?;
    if test.is_empty() {
        return Err(Error::Usage("the test set is empty".into()));
    }
    let (result, predictions) = score(net.as_ref(), &test);
    let counts = opts.report.then(|| confusion(&test.labels, &predictions));
    if opts.json {
        let json = to_json(&result, test.len(), counts.as_ref());
        writeln!(out, "{json}").map_err(Error::stdout)?;
    } else {
        writeln!(out, "{} test samples", test.len()).map_err(Error::stdout)?;
        writeln!(out, "{}", result.report()).map_err(Error::stdout)?;
        if let Some(counts) = &counts {
            write!(out, "\n{}", report(counts)).map_err(Error::stdout)?;
        }
    }
    if let Some(path) = &opts.errors {
        error_sheet(&test, &predictions).save_png(path)?;
        if !opts.json {
            writeln!(out, "Misclassified digits drawn in {}", path.display())
                .map_err(Error::stdout)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // The same figures as JSON, a ratio over nothing as null.
        let json = to_json(
            &Evaluation {
                loss: 0.5,
                accuracy: 4.0 / 6.0,
            },
            6,
            Some(&counts),
        );
        assert_eq!(json["count"], 6);
        assert_eq!(
            json["confusion"][1],
            serde_json::json!([0, 2, 1, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(json["per_class"][2]["precision"], 0.5);
        assert_eq!(json["per_class"][3]["recall"], serde_json::Value::Null);
        assert_eq!(json["per_class"][1]["support"], 3);
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
