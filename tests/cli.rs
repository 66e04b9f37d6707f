//! The binary as a user runs it: training and evaluating on the committed subset, the log,
//! reproducibility, and one clear error with the right exit code for every bad input.

mod common;

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

#[test]
fn trains_one_epoch_on_the_subset_with_keras_s_log_then_eval_agrees() {
    let (dir, stdout) = one_epoch();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..6],
        [
            "x_train shape: (3000, 28, 28, 1)",
            "3000 train samples",
            "1000 test samples",
            "Train on 3000 samples, validate on 1000 samples",
            "Epoch 1/1",
            lines[5],
        ]
    );
    // Not a terminal: one plain line for the epoch, no carriage returns.
    let epoch = regex_lite(lines[5]);
    assert!(epoch, "epoch line: {:?}", lines[5]);
    assert!(!stdout.contains('\r') && !stdout.contains('\u{8}'));

    let (loss, accuracy) = test_lines(stdout);
    // Chance is 0.10 and loss ln(10) = 2.30; one epoch of 24 steps gets well past both.
    assert!(accuracy >= 0.6, "accuracy {accuracy}");
    assert!(loss < 1.2, "loss {loss}");
    // The epoch line's val_acc is the same number, rounded.
    assert!(
        lines[5].ends_with(&format!("val_acc: {accuracy:.4}")),
        "{}",
        lines[5]
    );

    let eval_stdout = eval_on_subset(&dir.join("model.bin"), &[]);
    assert_eq!(test_lines(&eval_stdout), (loss, accuracy));
    assert!(eval_stdout.starts_with("1000 test samples\n"));
}

#[test]
fn training_writes_the_history_csv_and_the_curves() {
    let (dir, stdout) = one_epoch();
    let (loss, accuracy) = test_lines(stdout);
    // The history beside the model holds the epoch's numbers in full.
    let csv = std::fs::read_to_string(dir.join("model.history.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "epoch,loss,acc,val_loss,val_acc,seconds");
    let fields: Vec<f64> = rows[1].split(',').map(|f| f.parse().unwrap()).collect();
    assert_eq!(
        (rows.len(), fields[0], fields[3], fields[4]),
        (2, 1.0, loss, accuracy)
    );
    let saved = format!(
        "History saved to {}",
        dir.join("model.history.csv").display()
    );
    assert!(stdout.lines().any(|l| l == saved), "{stdout}");
    let curves = image::open(dir.join("curves.png")).unwrap();
    assert_eq!((curves.width(), curves.height()), (960, 400));
}

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

/// burn's engine (`--backend flex`, the path a GPU run takes) from the command line: the Keras
/// log, and a model that our kernels evaluate to the accuracy it printed. (The `flex` feature:
/// `cargo test --features flex`.)
#[cfg(feature = "flex")]
#[test]
fn flex_backend_trains_and_its_model_evaluates_the_same_on_our_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.bin");
    let out = cmd()
        .args([
            "train",
            "--backend",
            "flex",
            "--epochs",
            "2",
            "--batch",
            "64",
        ])
        .args(["--limit-train", "1024", "--limit-test", "300", "--data-dir"])
        .arg(subset_dir())
        .arg("--out")
        .arg(&model)
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[3], "Train on 1024 samples, validate on 300 samples");
    assert_eq!((lines[4], lines[6]), ("Epoch 1/2", "Epoch 2/2"));
    assert!(regex_lite(lines[5]) && regex_lite(lines[7]), "{stdout}");
    let (loss, accuracy) = test_lines(&stdout);
    assert!(accuracy >= 0.6 && loss < 1.2, "{loss} {accuracy}");
    assert!(dir.path().join("model.bin.ckpt").exists());
    for backend in ["cpu", "flex"] {
        let eval = eval_on_subset(&model, &["--backend", backend, "--limit-test", "300"]);
        let (eval_loss, eval_accuracy) = test_lines(&eval);
        assert_eq!(eval_accuracy, accuracy, "{backend}");
        assert!(
            (eval_loss - loss).abs() <= 1e-5 * loss,
            "{backend}: {eval_loss} vs {loss}"
        );
    }
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

/// `3000/3000 [==============================] - 12s - loss: 1.2345 - acc: 0.5678 - val_loss: 0.7000 - val_acc: 0.7500`
/// (any N/N, all done).
fn regex_lite(line: &str) -> bool {
    let Some((count, rest)) = line.split_once(" [==============================] - ") else {
        return false;
    };
    if count
        .split_once('/')
        .is_none_or(|(a, b)| a != b || a.parse::<u64>().is_err())
    {
        return false;
    }
    let Some((secs, rest)) = rest.split_once("s - ") else {
        return false;
    };
    let names = ["loss", "acc", "val_loss", "val_acc"];
    let parts: Vec<&str> = rest.split(" - ").collect();
    secs.parse::<u64>().is_ok()
        && parts.len() == 4
        && parts.iter().zip(names).all(|(part, name)| {
            part.strip_prefix(name)
                .and_then(|v| v.strip_prefix(": "))
                .is_some_and(|v| v.len() == 6 && v.parse::<f64>().is_ok())
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

#[test]
fn same_seed_gives_the_same_file_and_another_seed_another() {
    let dir = tempfile::tempdir().unwrap();
    let a = train_small(dir.path(), "7", "a.bin");
    let b = train_small(dir.path(), "7", "b.bin");
    let c = train_small(dir.path(), "8", "c.bin");
    assert!(a == b, "same seed, different model files");
    assert!(a != c, "different seeds, same model file");
}

#[test]
fn verbose_two_prints_one_summary_line_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let out = cmd()
        .args([
            "train",
            "--epochs",
            "2",
            "--limit-train",
            "200",
            "--limit-test",
            "50",
        ])
        .args(["--verbose", "2", "--data-dir"])
        .arg(subset_dir())
        .arg("--out")
        .arg(dir.path().join("m.bin"))
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let epoch_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" - val_acc: "))
        .collect();
    assert_eq!(epoch_lines.len(), 2, "{stdout}");
    assert!(
        epoch_lines
            .iter()
            .all(|l| l.contains("s - loss: ") && !l.contains('['))
    );
    assert!(stdout.contains("Epoch 2/2\n"));
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

/// A disk that fills up during training: exit 1, one line that names the file the user knows
/// (`model.bin.ckpt`) once, the old model intact, no temporary left behind. The full disk is a
/// 1 MiB tmpfs, which needs root: elsewhere the test says it was skipped.
#[test]
fn a_full_disk_ends_training_in_one_line_and_keeps_the_old_model() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        let note = "SKIPPED a_full_disk_ends_training_in_one_line_and_keeps_the_old_model: \
                    cannot mount a small tmpfs (needs root)\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(dir.path());
    let model = dir.path().join("model.bin");
    std::fs::write(&model, b"the old model").unwrap();
    let checkpoint = dir.path().join("model.bin.ckpt").display().to_string();
    let mut train = cmd();
    train
        .args([
            "train",
            "--epochs",
            "1",
            "--limit-train",
            "64",
            "--limit-test",
            "32",
        ])
        .args(["--verbose", "0", "--data-dir"])
        .arg(subset_dir())
        .arg("--out")
        .arg(&model);
    let out = train.assert().code(1).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // The subset's files are not canonical MNIST: their notes aside, one line.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("note: "))
        .collect();
    let want = format!("error: cannot write {checkpoint}: No space left on device (os error 28)");
    assert_eq!(errors, [want.as_str()], "{stderr}");
    assert_eq!(std::fs::read(&model).unwrap(), b"the old model");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["model.bin"], "{left:?}");
}

#[test]
fn corrupt_data_files_are_one_line_errors() {
    let name = "train-images-idx3-ubyte.gz";
    let good = std::fs::read(subset_dir().join(name)).unwrap();
    let plain = {
        use std::io::Read;
        let mut v = Vec::new();
        flate2_read(&good).read_to_end(&mut v).unwrap();
        v
    };
    let mut wrong_magic = plain.clone();
    wrong_magic[3] = 1;
    let mut trailing = plain.clone();
    trailing.extend_from_slice(&[0; 5]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "file is empty"),
        ("truncated gzip", good[..good.len() / 3].to_vec(), "gzip"),
        ("wrong magic", wrong_magic, "bad magic number 2049"),
        (
            "payload cut",
            plain[..plain.len() - 100].to_vec(),
            "payload is truncated",
        ),
        (
            "trailing bytes",
            trailing,
            "longer than the header declares",
        ),
        ("text", b"this is not MNIST\n".to_vec(), "bad magic number"),
    ];
    for (what, bytes, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_subset(dir.path());
        std::fs::write(dir.path().join(name), &bytes).unwrap();
        let mut c = cmd();
        c.args(["train", "--epochs", "1", "--data-dir"])
            .arg(dir.path())
            .arg("--out")
            .arg(dir.path().join("m.bin"));
        eprintln!("case: {what}");
        fails_with_one_line(&mut c, 1, needle);
        assert!(!dir.path().join("m.bin").exists());
    }
}

fn flate2_read(bytes: &[u8]) -> impl std::io::Read + '_ {
    flate2::read::GzDecoder::new(bytes)
}

#[test]
fn bad_label_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_subset(dir.path());
    let mut labels = vec![0, 0, 8, 1, 0, 0, 11, 184]; // magic 2049, 3000 labels
    labels.extend(std::iter::repeat_n(3u8, 2999));
    labels.push(12);
    std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), &labels).unwrap();
    let out = cmd()
        .args(["eval", "--data-dir"])
        .arg(dir.path())
        .arg("nonexistent.bin")
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonexistent.bin"));
    let out = cmd()
        .args(["train", "--data-dir"])
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("m.bin"))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: ")
            && last.contains("train-labels-idx1-ubyte:")
            && last.contains("label 12 at index 2999"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error:").count(), 1);
}

#[test]
fn bad_model_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.bin");
    // A real model to damage.
    cmd()
        .args([
            "train",
            "--epochs",
            "1",
            "--limit-train",
            "64",
            "--limit-test",
            "10",
        ])
        .args(["--verbose", "0", "--data-dir"])
        .arg(subset_dir())
        .arg("--out")
        .arg(&model)
        .assert()
        .success();
    let good = std::fs::read(&model).unwrap();
    let data_file = std::fs::read(subset_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let mut flipped = good.clone();
    flipped[0] ^= 0xff;
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("missing", None),
        ("empty", Some(Vec::new())),
        ("truncated", Some(good[..good.len() / 2].to_vec())),
        ("header only", Some(good[..16].to_vec())),
        ("foreign", Some(b"{\"not\": \"a model\"}".to_vec())),
        ("a data file", Some(data_file)),
        ("bad magic", Some(flipped)),
    ];
    for (what, bytes) in cases {
        let path = dir.path().join(format!("{what}.bin"));
        if let Some(bytes) = bytes {
            std::fs::write(&path, bytes).unwrap();
        }
        eprintln!("case: {what}");
        let mut c = cmd();
        c.arg("eval").arg(&path).arg("--data-dir").arg(subset_dir());
        fails_with_one_line(&mut c, 1, "cannot load model");
    }
    // An endless device is refused before it is opened, not read into memory until it runs out.
    let mut c = cmd();
    c.args(["eval", "/dev/zero", "--data-dir"])
        .arg(subset_dir());
    fails_with_one_line(&mut c, 1, "not a regular file");
}

#[test]
fn usage_errors_exit_with_two() {
    for args in [
        vec!["train", "--epochs", "0"],
        vec!["train", "--batch", "abc"],
        vec!["train", "--verbose", "3"],
        vec!["train", "--no-such-flag"],
        vec!["eval"],
        vec!["frobnicate"],
    ] {
        cmd()
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("error"));
    }
    fails_with_one_line(
        cmd()
            .args(["train", "--lr=-1", "--data-dir"])
            .arg(subset_dir()),
        2,
        "--lr must be a positive number",
    );
}

/// Without the `flex` feature the binary has our kernels only: burn's engine is one line
/// naming the feature, for every command that computes.
#[cfg(not(feature = "flex"))]
#[test]
fn flex_without_the_feature_says_how_to_get_it() {
    for command in [
        &["train"][..],
        &["eval", "model.bin"],
        &["predict", "model.bin", "x.png"],
    ] {
        fails_with_one_line(
            cmd().args(command).args(["--backend", "flex"]),
            2,
            "this build lacks burn's CPU engine; rebuild with `cargo install mnist-cnn --features flex`",
        );
    }
}

#[cfg(not(feature = "wgpu"))]
#[test]
fn wgpu_without_the_feature_says_how_to_get_it() {
    fails_with_one_line(
        cmd().args(["eval", "model.bin", "--backend", "wgpu"]),
        2,
        "--features wgpu",
    );
}

#[test]
fn an_unwritable_out_path_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cmd();
    c.args(["train", "--data-dir"])
        .arg(subset_dir())
        .arg("--out")
        .arg(dir.path());
    fails_with_one_line(&mut c, 1, "it is a directory");
    let mut c = cmd();
    c.args(["train", "--data-dir"])
        .arg(subset_dir())
        .arg("--out")
        .arg(dir.path().join("no/such/dir/m.bin"));
    fails_with_one_line(&mut c, 1, "no such directory");
    // The pictures too are checked before any work.
    let mut c = cmd();
    c.args(["train", "--data-dir"])
        .arg(subset_dir())
        .arg("--out")
        .arg(dir.path().join("m.bin"))
        .arg("--plot")
        .arg(dir.path());
    fails_with_one_line(&mut c, 1, "it is a directory");
    let mut c = cmd();
    c.args(["eval", "missing-model.bin", "--errors"])
        .arg(dir.path().join("no/such/dir/errors.png"));
    fails_with_one_line(&mut c, 1, "no such directory");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn downloads_from_a_file_mirror_and_refuses_non_canonical_bytes() {
    // The subset is not canonical MNIST, so a mirror serving it must be refused, and nothing
    // may be left in the cache.
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut c = cmd();
    c.args(["train", "--data-dir"])
        .arg(&cache)
        .arg("--mirror")
        .arg(format!("file://{}/", subset_dir().display()))
        .arg("--out")
        .arg(dir.path().join("m.bin"));
    let out = c.assert().code(1).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // The download error: the file, the mirror's reason, what to do (see the offline test).
    assert!(stderr.starts_with("error: could not download "), "{stderr}");
    assert!(stderr.contains(": checksum mismatch: SHA-256 "), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn help_explains_and_summary_counts() {
    cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit status: 0 success"));
    cmd().args(["train", "--help"]).assert().success().stdout(
        predicate::str::contains("--data-dir <DIR>")
            .and(predicate::str::contains("MNIST_DATA_DIR")),
    );
    cmd()
        .arg("summary")
        .assert()
        .success()
        .stdout(predicate::str::contains("Total params: 1,199,882"));
}

/// A PGM page with MNIST test digit `k` drawn 5x as dark ink, off centre.
fn digit_page(k: usize) -> Vec<u8> {
    use std::io::Read;
    let gz = std::fs::read(subset_dir().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let mut raw = Vec::new();
    flate2_read(&gz).read_to_end(&mut raw).unwrap();
    let digit = &raw[16 + k * 784..16 + (k + 1) * 784];
    let (w, h) = (220usize, 180usize);
    let mut page = vec![228u8; w * h];
    for y in 0..140 {
        for x in 0..140 {
            let v = digit[(y / 5) * 28 + x / 5];
            let p = &mut page[(20 + y) * w + 60 + x];
            *p = p.saturating_sub(v);
        }
    }
    let mut pgm = format!("P5 {w} {h} 255\n").into_bytes();
    pgm.extend(page);
    pgm
}

#[test]
fn predict_reads_pictures_and_idx_and_reports_bad_files_without_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let model = one_epoch().0.join("model.bin");
    let good = dir.path().join("seven.pgm");
    std::fs::write(&good, digit_page(0)).unwrap();
    let blank = dir.path().join("blank.pgm");
    let mut page = b"P5 60 40 255\n".to_vec();
    page.extend([240u8; 2400]);
    std::fs::write(&blank, page).unwrap();
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png at all").unwrap();
    let idx = subset_dir().join("t10k-images-idx3-ubyte.gz");
    let shown = dir.path().join("shown");

    let out = cmd()
        .arg("predict")
        .arg(&model)
        .args([&good, &blank, &junk, &idx])
        .args(["--index", "0", "--json", "--show"])
        .arg(&shown)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in &rows[..2] {
        let p = row["probability"].as_f64().unwrap();
        let q = row["runner_up_probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p) && q <= p && row["digit"] != row["runner_up"]);
    }
    // The drawn page and the IDX original are the same test digit: the same answer.
    assert_eq!(rows[0]["digit"], rows[1]["digit"]);
    assert!(
        rows[2]["error"]
            .as_str()
            .unwrap()
            .contains("no digit found")
    );
    assert!(rows[3]["error"].as_str().unwrap().contains("cannot decode"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("blank.pgm: no digit found"), "{stderr}");
    assert!(
        stderr.ends_with("error: 2 of 4 inputs could not be read\n"),
        "{stderr}"
    );

    // What the model saw: two 28x28 pictures.
    let mut seen: Vec<_> = std::fs::read_dir(&shown)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 2);
    for path in seen {
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (28, 28));
    }
}

#[test]
fn predict_prints_a_line_per_picture_and_an_idx_file_needs_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let model = one_epoch().0.join("model.bin");
    let good = dir.path().join("seven.pgm");
    std::fs::write(&good, digit_page(0)).unwrap();
    let out = cmd()
        .arg("predict")
        .arg(&model)
        .arg(&good)
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!("{}: ", good.display())) && text.contains("runner-up"));
    let idx = subset_dir().join("t10k-images-idx3-ubyte.gz");
    fails_with_one_line(cmd().arg("predict").arg(&model).arg(&idx), 1, "--index");
}

/// A picture that declares 400 megapixels is refused from its header, in one line naming its
/// size and the limit, while the other pictures still print; a 12-megapixel phone photo reads.
#[test]
fn predict_refuses_a_picture_declaring_too_many_pixels_and_reads_a_phone_photo() {
    let dir = tempfile::tempdir().unwrap();
    let model = one_epoch().0.join("model.bin");
    let hostile = dir.path().join("hostile.png");
    std::fs::write(&hostile, common::png_declaring(20_000, 20_000)).unwrap();
    let photo = dir.path().join("photo.jpg");
    std::fs::write(&photo, common::phone_photo(0)).unwrap();
    let (_, label) = common::digit_pgm(0);

    let start = std::time::Instant::now();
    fails_with_one_line(
        cmd().arg("predict").arg(&model).arg(&hostile),
        1,
        "hostile.png: the picture is 20000x20000 (400.0 megapixels), over the limit of 50 megapixels",
    );
    // Refused from the header: decoding 400 million pixels would take seconds and 400 MB.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    let out = cmd()
        .arg("predict")
        .arg(&model)
        .args([&hostile, &photo])
        .arg("--json")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["file"], photo.display().to_string());
    assert_eq!(rows[0]["digit"], label, "{rows}");
    assert!(
        rows[1]["error"]
            .as_str()
            .unwrap()
            .contains("over the limit of 50 megapixels")
    );
}

/// A first run on a machine without network: a short message that says how to go on, fast.
#[test]
fn offline_first_run_says_how_to_go_on_in_a_few_lines() {
    let dir = tempfile::tempdir().unwrap();
    // Bound, then closed: a mirror that refuses; and a name that never resolves.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mirrors = [
        "http://mnist.invalid/".to_string(),
        format!("http://127.0.0.1:{port}/mnist/"),
    ];
    let start = std::time::Instant::now();
    let out = cmd()
        .current_dir(dir.path())
        .arg("train")
        .args(mirrors.iter().flat_map(|m| ["--mirror", m.as_str()]))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let elapsed = start.elapsed();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() <= 6, "{} lines:\n{stderr}", lines.len());
    assert!(
        lines[0].starts_with("error: could not download "),
        "{stderr}"
    );
    for mirror in &mirrors {
        assert_eq!(
            stderr.matches(mirror.as_str()).count(),
            1,
            "{mirror}: {stderr}"
        );
    }
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(stderr.contains("--data-dir") && stderr.contains("--mirror file:///"));
    assert!(stderr.contains("MNIST_DATA_DIR") && stderr.contains("mnist-cnn download"));
    // Under 2 s on an idle machine; the bound is generous for a loaded one.
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
    assert!(!dir.path().join("model.bin").exists());
}

/// `mnist-cnn download --check --data-dir DIR`, which must exit with `code`: (stdout, stderr).
fn download_check(dir: &Path, code: i32) -> (String, String) {
    let out = cmd()
        .args(["download", "--check", "--data-dir"])
        .arg(dir)
        .assert()
        .code(code)
        .get_output()
        .clone();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (text(out.stdout), text(out.stderr))
}

#[test]
fn download_check_reports_each_file_without_network() {
    // The committed subset: valid IDX files, not MNIST's own.
    let out = cmd()
        .args([
            "download",
            "--check",
            "--mirror",
            "http://mnist.invalid/",
            "--data-dir",
        ])
        .arg(subset_dir())
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(
        stdout.contains(
            "train-images-idx3-ubyte.gz: a valid IDX file but not MNIST's own, 3000 images"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "t10k-labels-idx1-ubyte.gz: a valid IDX file but not MNIST's own, 1000 labels"
        )
    );

    // A corrupted copy: one file cut short, one missing.
    let dir = tempfile::tempdir().unwrap();
    copy_subset(dir.path());
    let images = dir.path().join("t10k-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte.gz")).unwrap();
    let (stdout, stderr) = download_check(dir.path(), 1);
    assert!(
        stdout.contains("train-labels-idx1-ubyte.gz: missing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("t10k-images-idx3-ubyte.gz: corrupt: "),
        "{stdout}"
    );
    assert!(
        stdout.contains("train-images-idx3-ubyte.gz: a valid IDX file"),
        "{stdout}"
    );
    assert!(stderr.starts_with("error: 2 of 4 files in "), "{stderr}");

    // An empty directory: four missing files, and nothing fetched.
    let empty = tempfile::tempdir().unwrap();
    let (stdout, _) = download_check(empty.path(), 1);
    assert_eq!(stdout.matches(": missing\n").count(), 4, "{stdout}");
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

#[test]
fn download_fills_a_directory_from_a_mirror_and_then_has_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    let mirror = format!("file://{}/", subset_dir().display());
    // The subset is not canonical MNIST, so a verified download refuses it: nothing cached.
    let out = cmd()
        .args(["download", "--mirror", &mirror, "--data-dir"])
        .arg(&data)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    // Files already there are reported, not fetched again.
    copy_subset(&data);
    let out = cmd()
        .args([
            "download",
            "--mirror",
            "http://mnist.invalid/",
            "--data-dir",
        ])
        .arg(&data)
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("a valid IDX file").count(), 4, "{stdout}");
    assert!(!stdout.contains("(downloaded)"));
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

#[test]
fn completions_and_the_man_page_come_from_the_same_definitions() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = cmd().args(["completions", shell]).assert().success();
        let script = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        assert!(script.contains("mnist-cnn"), "{shell}");
        assert!(
            script.contains("data-dir") && script.contains("download"),
            "{shell}"
        );
    }
    let out = cmd().arg("man").assert().success();
    let page = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH mnist-cnn"),
        "{page}"
    );
    assert!(page.contains("download") && page.contains("completions"));
    cmd().args(["completions", "tcsh"]).assert().code(2);
}

/// `mnist-cnn export MODEL OUT`, run.
fn export(model: &Path, out: &Path) -> assert_cmd::assert::Assert {
    cmd().arg("export").arg(model).arg(out).assert()
}

/// A safetensors file of one f32 tensor `conv1.weight` shaped like a colour model's first layer.
fn misshapen_safetensors() -> Vec<u8> {
    let header = br#"{"conv1.weight":{"dtype":"F32","shape":[32,3,3,3],"data_offsets":[0,3456]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend(std::iter::repeat_n(0u8, 3456));
    bytes
}

#[test]
fn exported_safetensors_evaluate_to_the_last_digit_and_round_trip_to_the_same_bytes() {
    let model = one_epoch().0.join("model.bin");
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("weights.safetensors");
    export(&model, &weights)
        .success()
        .stdout(predicate::str::contains("safetensors in PyTorch's layouts"));
    // The imported model is the same model: eval's JSON (loss in full) is identical.
    assert_eq!(
        eval_on_subset(&weights, &["--json"]),
        eval_on_subset(&model, &["--json"])
    );
    // Import, export again: the same bytes.
    let again = dir.path().join("again.safetensors");
    export(&weights, &again).success();
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&weights).unwrap()
    );
    // predict reads the same digits with it.
    let digit = subset_dir().join("t10k-images-idx3-ubyte.gz");
    let predict = |m: &Path| {
        let out = cmd()
            .arg("predict")
            .arg(m)
            .arg(&digit)
            .args(["--index", "7", "--json"])
            .assert()
            .success()
            .get_output()
            .clone();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(predict(&weights), predict(&model));
}

#[test]
fn onnx_export_carries_the_graph_and_the_run_s_figures() {
    let model = one_epoch().0.join("model.bin");
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("mnist.ONNX");
    export(&model, &onnx)
        .success()
        .stdout(predicate::str::contains("an ONNX graph (opset 13)"));
    let bytes = std::fs::read(&onnx).unwrap();
    // The weights (4.8 MB of f32) and, as metadata, the one-epoch run's figures.
    assert!(bytes.len() > 4 * 1_199_882, "{} bytes", bytes.len());
    let text = String::from_utf8_lossy(&bytes);
    for needle in [
        "mnist-cnn",
        "Softmax",
        "probabilities",
        "epochs",
        "test_accuracy",
    ] {
        assert!(text.contains(needle), "no {needle:?} in the ONNX file");
    }
    // --format wins over the extension.
    let named_oddly = dir.path().join("model.weights");
    cmd()
        .arg("export")
        .arg(&model)
        .arg(&named_oddly)
        .args(["--format", "onnx"])
        .assert()
        .success();
    assert_eq!(std::fs::read(&named_oddly).unwrap(), bytes);
}

#[test]
fn export_and_eval_refuse_bad_inputs_in_one_line_writing_nothing() {
    let model = one_epoch().0.join("model.bin");
    let dir = tempfile::tempdir().unwrap();
    let one_line = |assert: assert_cmd::assert::Assert, code: i32, needle: &str| {
        let out = assert.failure().code(code).get_output().clone();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    };
    // A target directory that does not exist.
    let nowhere = dir.path().join("no-such-dir").join("m.onnx");
    one_line(export(&model, &nowhere), 1, "no-such-dir");
    // An extension that names no format.
    one_line(export(&model, &dir.path().join("m.pt")), 2, "--format");
    // The model itself as OUT.
    let copy = dir.path().join("copy.onnx");
    std::fs::copy(&model, &copy).unwrap();
    one_line(export(&copy, &copy), 2, "is the model itself");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&model).unwrap()
    );
    std::fs::remove_file(&copy).unwrap();
    // A corrupt and a misshapen safetensors as MODEL: the existing OUT is kept as it was.
    let out = dir.path().join("out.onnx");
    std::fs::write(&out, b"the previous export").unwrap();
    let corrupt = dir.path().join("corrupt.safetensors");
    let mut bytes = misshapen_safetensors();
    bytes.truncate(200);
    std::fs::write(&corrupt, &bytes).unwrap();
    one_line(export(&corrupt, &out), 1, "not a safetensors file");
    let misshapen = dir.path().join("colour.safetensors");
    std::fs::write(&misshapen, misshapen_safetensors()).unwrap();
    let expected = "tensor `conv1.weight` has shape [32, 3, 3, 3]; expected [32, 1, 3, 3]";
    one_line(export(&misshapen, &out), 1, expected);
    one_line(
        cmd()
            .arg("eval")
            .arg(&misshapen)
            .arg("--data-dir")
            .arg(subset_dir())
            .assert(),
        1,
        expected,
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous export");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["colour.safetensors", "corrupt.safetensors", "out.onnx"]
    );
}
