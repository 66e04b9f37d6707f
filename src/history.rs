//! What training measured per epoch (Keras's `History`): kept in the checkpoint and written
//! as CSV next to the model; [`crate::charts::curves`] draws it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::evaluate::Evaluation;

/// One epoch's means.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub acc: f64,
    pub val: Evaluation,
    pub elapsed: Duration,
}

const HEADER: &str = "epoch,loss,acc,val_loss,val_acc,seconds";

/// Where the history of a model saved to `out` goes: `model.bin` → `model.history.csv`.
pub fn path_for(out: &Path) -> PathBuf {
    out.with_extension("history.csv")
}

/// The history as CSV. Numbers are written in full (shortest round-trip form), so
/// [`from_csv`] restores them exactly.
pub fn to_csv(records: &[EpochRecord]) -> String {
    let mut csv = format!("{HEADER}\n");
    for r in records {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            r.epoch,
            r.loss,
            r.acc,
            r.val.loss,
            r.val.accuracy,
            r.elapsed.as_secs_f64()
        ));
    }
    csv
}

/// Whether `records` can be the history of a run `epochs_done` epochs in: one record an epoch,
/// numbered from 1, every figure a finite number (the curves scale their axes by them).
pub fn is_run_of(records: &[EpochRecord], epochs_done: usize) -> bool {
    records.len() == epochs_done
        && records.iter().enumerate().all(|(i, r)| {
            r.epoch == i + 1
                && [r.loss, r.acc, r.val.loss, r.val.accuracy]
                    .iter()
                    .all(|v| v.is_finite())
        })
}

/// Reads what [`to_csv`] wrote; `None` for anything else.
pub fn from_csv(csv: &str) -> Option<Vec<EpochRecord>> {
    let mut lines = csv.lines();
    if lines.next() != Some(HEADER) {
        return None;
    }
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let [epoch, loss, acc, val_loss, val_acc, seconds] = fields[..] else {
                return None;
            };
            let num = |s: &str| s.parse::<f64>().ok();
            Some(EpochRecord {
                epoch: epoch.parse().ok()?,
                loss: num(loss)?,
                acc: num(acc)?,
                val: Evaluation {
                    loss: num(val_loss)?,
                    accuracy: num(val_acc)?,
                },
                elapsed: Duration::try_from_secs_f64(num(seconds)?).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn record(epoch: usize, loss: f64, acc: f64, val_loss: f64, val_acc: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            loss,
            acc,
            val: Evaluation {
                loss: val_loss,
                accuracy: val_acc,
            },
            elapsed: Duration::from_millis(1500 * epoch as u64),
        }
    }

    /// Three epochs' records, for the tests of the CSV and of the curves.
    pub(crate) fn three() -> Vec<EpochRecord> {
        vec![
            record(1, 0.2691, 0.9168, 0.0609, 0.9803),
            record(2, 0.0929, 0.9721, 0.0408, 0.9864),
            record(3, 0.0695, 0.979, 1.0 / 3.0, 0.9883),
        ]
    }

    #[test]
    fn a_runs_history_is_numbered_and_finite() {
        let mut records = three();
        assert!(is_run_of(&records, 3));
        assert!(!is_run_of(&records, 2));
        records[1].val.loss = f64::NAN;
        assert!(!is_run_of(&records, 3));
        let mut records = three();
        records.swap(0, 1);
        assert!(!is_run_of(&records, 3));
        assert!(is_run_of(&[], 0));
    }

    #[test]
    fn csv_round_trips_exactly() {
        let records = three();
        let csv = to_csv(&records);
        assert!(csv.starts_with("epoch,loss,acc,val_loss,val_acc,seconds\n1,0.2691,0.9168,"));
        assert!(csv.ends_with(",4.5\n"));
        assert_eq!(from_csv(&csv).unwrap(), records);
        assert_eq!(from_csv(&format!("{HEADER}\n")).unwrap(), vec![]);
        for bad in [
            "",
            "epoch\n",
            &format!("{HEADER}\n1,2,3\n"),
            &format!("{HEADER}\nx,1,1,1,1,1\n"),
        ] {
            assert!(from_csv(bad).is_none(), "{bad:?}");
        }
        assert_eq!(
            path_for(Path::new("runs/model.bin")),
            Path::new("runs/model.history.csv")
        );
    }
}
