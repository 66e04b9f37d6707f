//! `mnist-cnn eval MODEL`: loss and accuracy on the test set, as text or JSON, with the
//! confusion matrix and the sheet of misread digits when asked.

use std::io::Write;
use std::path::PathBuf;

use crate::charts::errors::error_sheet;
use crate::data::{DataSource, Part};
use crate::engine::{self, Backend};
use crate::error::{Error, Result};
use crate::evaluate::{Evaluation, confusion, per_class, score};
use crate::network::NUM_CLASSES;

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
    opts.backend.available()?;
    let params = crate::formats::read_params(&opts.model)?;
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
}
