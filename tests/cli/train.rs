//! `train`: the log, the files it writes, reproducibility, `--backend flex`, and what stops it cleanly.

use super::*;

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
