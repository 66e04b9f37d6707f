//! `eval`: the report, the error sheet, JSON, and the bf16 backend.

use super::*;

#[test]
fn eval_s_report_and_error_sheet_add_up() {
    let (dir, stdout) = one_epoch();
    let (_, accuracy) = test_lines(stdout);
    // --report: the matrix sums to the test set and its diagonal to the accuracy.
    let sheet = dir.join("errors.png");
    let model = dir.join("model.bin");
    let report = eval_on_subset(&model, &["--report", "--errors", sheet.to_str().unwrap()]);
    let matrix: Vec<Vec<usize>> = report
        .lines()
        .skip_while(|l| !l.starts_with("Confusion matrix"))
        .skip(2)
        .take(10)
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .collect();
    let total: usize = matrix.iter().flatten().sum();
    let right: usize = (0..10).map(|d| matrix[d][d]).sum();
    assert_eq!(total, 1000);
    assert_eq!(right as f64 / 1000.0, accuracy);
    // Per class: recall is the diagonal over the row, support the row's sum.
    let per_class: Vec<Vec<&str>> = report
        .lines()
        .skip_while(|l| !l.starts_with("digit  precision  recall  support"))
        .skip(1)
        .take(10)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(report.ends_with(&format!(
        "Misclassified digits drawn in {}\n",
        sheet.display()
    )));
    for (d, fields) in per_class.iter().enumerate() {
        let support: usize = matrix[d].iter().sum();
        assert_eq!(fields[0], d.to_string());
        assert_eq!(fields[3], support.to_string());
        let recall = matrix[d][d] as f64 / support as f64;
        assert_eq!(fields[2], format!("{recall:.4}"));
    }

    // The sheet has one 64x86 cell per error, 16 to a row, below a 40-pixel title.
    let sheet = image::open(&sheet).unwrap();
    let rows = (1000 - right).div_ceil(16) as u32;
    assert_eq!((sheet.width(), sheet.height()), (16 * 64, 40 + rows * 86));
}

/// `--backend cpu-bf16`: close to `cpu`'s figures but not its bytes where the processor has
/// AVX512_BF16, one clear line where it has not, and never a trainer.
#[test]
fn bf16_backend_evaluates_close_to_f32_and_does_not_train() {
    let mut train = cmd();
    train.args(["train", "--backend", "cpu-bf16", "--data-dir"]);
    fails_with_one_line(train.arg(subset_dir()), 2, "only evaluates");
    let model = trained_model();
    let (loss, accuracy) = test_lines(&eval_on_subset(&model, &[]));
    let out = cmd()
        .arg("eval")
        .arg(&model)
        .args(["--backend", "cpu-bf16", "--data-dir"])
        .arg(subset_dir())
        .output()
        .unwrap();
    if !out.status.success() {
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("no AVX512_BF16"), "{stderr}");
        eprintln!("skipped the bf16 figures: this processor has no AVX512_BF16");
        return;
    }
    let (bf16_loss, bf16_accuracy) = test_lines(&String::from_utf8(out.stdout).unwrap());
    assert!(
        (bf16_accuracy - accuracy).abs() <= 0.01,
        "{bf16_accuracy} vs {accuracy}"
    );
    assert!(
        (bf16_loss - loss).abs() <= 0.02 * loss,
        "{bf16_loss} vs {loss}"
    );
    assert_ne!(
        bf16_loss, loss,
        "the bf16 path gave f32's bytes: did it run?"
    );
}

#[test]
fn eval_json_carries_the_figures_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    train_small(dir.path(), "3", "m.bin");
    let model = dir.path().join("m.bin");
    let text = eval_on_subset(&model, &["--limit-test", "200"]);
    let (loss, accuracy) = test_lines(&text);
    let json = eval_on_subset(&model, &["--limit-test", "200", "--json", "--report"]);
    assert_eq!(json.lines().count(), 1, "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["count"], 200);
    assert_eq!(json["loss"].as_f64(), Some(loss));
    assert_eq!(json["accuracy"].as_f64(), Some(accuracy));
    let matrix = json["confusion"].as_array().unwrap();
    let total: u64 = matrix
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(total, 200);
    assert_eq!(json["per_class"].as_array().unwrap().len(), 10);
    let plain = eval_on_subset(&model, &["--limit-test", "200", "--json"]);
    let plain: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert!(plain.get("confusion").is_none());
}
