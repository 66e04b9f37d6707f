//! The binary as a user runs it, one module a command: training and evaluating on the committed
//! subset, the log, reproducibility, and one clear error with the right exit code for every bad
//! input. One test binary (`--test cli`), so that the one-epoch model below is trained once.

#[path = "../common/mod.rs"]
mod common;
mod download;
mod errors;
mod eval;
mod export;
mod help;
mod predict;
mod train;

use std::path::Path;

use assert_cmd::Command;
use common::{cmd, copy_subset, subset_dir, test_lines, trained_model};
use predicates::prelude::*;

/// `mnist-cnn eval MODEL ARGS… --data-dir SUBSET`, which must succeed; its stdout.
fn eval_on_subset(model: &Path, args: &[&str]) -> String {
    let out = cmd()
        .arg("eval")
        .arg(model)
        .args(args)
        .arg("--data-dir")
        .arg(subset_dir())
        .assert()
        .success()
        .get_output()
        .clone();
    String::from_utf8(out.stdout).unwrap()
}

/// One epoch on the subset with `--plot`, run once for the tests below: its directory
/// (model.bin, model.history.csv, curves.png) and its stdout.
fn one_epoch() -> &'static (std::path::PathBuf, String) {
    static RUN: std::sync::OnceLock<(std::path::PathBuf, String)> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = cmd()
            .args(["train", "--epochs", "1", "--data-dir"])
            .arg(subset_dir())
            .arg("--out")
            .arg(dir.join("model.bin"))
            .arg("--plot")
            .arg(dir.join("curves.png"))
            .assert()
            .success()
            .get_output()
            .clone();
        (dir, String::from_utf8(out.stdout).unwrap())
    })
}

fn train_small(dir: &Path, seed: &str, name: &str) -> Vec<u8> {
    let out = dir.join(name);
    cmd()
        .args([
            "train",
            "--epochs",
            "2",
            "--limit-train",
            "300",
            "--limit-test",
            "100",
        ])
        .args([
            "--batch",
            "64",
            "--verbose",
            "0",
            "--seed",
            seed,
            "--data-dir",
        ])
        .arg(subset_dir())
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    std::fs::read(out).unwrap()
}

/// Runs a failing command and checks it printed exactly one line, an `error:` one.
fn fails_with_one_line(cmd: &mut Command, code: i32, needle: &str) {
    let out = cmd.assert().code(code).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].starts_with("error: "), "stderr: {stderr}");
    assert!(
        lines[0].contains(needle),
        "stderr lacks {needle:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

fn flate2_read(bytes: &[u8]) -> impl std::io::Read + '_ {
    flate2::read::GzDecoder::new(bytes)
}
