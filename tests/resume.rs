//! Interruption and resumption: Ctrl-C mid-epoch keeps the last checkpoint, and `--resume`
//! reaches the very bytes an uninterrupted run does. Also: divergence stops with a clear error.

mod common;

use std::path::Path;
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::subset_dir;

const DATA: [&str; 8] = [
    "--limit-train",
    "1000",
    "--limit-test",
    "200",
    "--batch",
    "64",
    "--seed",
    "11",
];

fn train_args(out: &Path, backend: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--epochs",
        "3",
        "--verbose",
        "0",
        "--backend",
        backend,
    ]
    .iter()
    .chain(DATA.iter())
    .map(|s| s.to_string())
    .collect();
    args.extend(["--data-dir".into(), subset_dir().display().to_string()]);
    args.extend(["--out".into(), out.display().to_string()]);
    args
}

#[test]
fn sigint_then_resume_matches_an_uninterrupted_run_on_our_kernels() {
    sigint_then_resume_matches_an_uninterrupted_run("cpu");
}

#[cfg(feature = "flex")]
#[test]
fn sigint_then_resume_matches_an_uninterrupted_run_on_burns_engine() {
    sigint_then_resume_matches_an_uninterrupted_run("flex");
}

fn sigint_then_resume_matches_an_uninterrupted_run(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight.bin");
    Command::cargo_bin("mnist-cnn")
        .unwrap()
        .args(train_args(&straight, backend))
        .assert()
        .success();

    let model = dir.path().join("model.bin");
    let ckpt = dir.path().join("model.bin.ckpt");
    let bin = assert_cmd::cargo::cargo_bin("mnist-cnn");
    let child = StdCommand::new(bin)
        .args(train_args(&model, backend))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The checkpoint appears by rename, so once it exists it is whole: epoch 2 is running.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ckpt.exists() {
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    // The message starts on its own line and is the last thing said.
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("interrupted in epoch 2 of 3;"),
        "{stderr}"
    );
    assert!(
        !model.exists(),
        "an interrupted run must not write the model"
    );
    assert!(ckpt.exists());

    // `--resume` alone finishes the run: the epochs, the limits, seed and batch size come from
    // the checkpoint, the model goes beside it (the data directory comes from the environment
    // here, and the engine is the default unless the run chose another).
    let mut resume = Command::cargo_bin("mnist-cnn").unwrap();
    resume.env("MNIST_DATA_DIR", subset_dir());
    resume.arg("train").arg("--resume").arg(&ckpt);
    if backend != "cpu" {
        resume.args(["--backend", backend]);
    }
    let out = resume.assert().success().get_output().clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Epoch 3/3") && !stdout.contains("Epoch 1/3"),
        "{stdout}"
    );
    assert!(
        std::fs::read(&model).unwrap() == std::fs::read(&straight).unwrap(),
        "resumed model differs from the uninterrupted one"
    );
    // The history covers all three epochs, those before the interruption included, with the
    // same numbers as the uninterrupted run (all but the seconds).
    let without_seconds = |path: std::path::PathBuf| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    let resumed = without_seconds(dir.path().join("model.history.csv"));
    assert_eq!(resumed.len(), 4, "{resumed:?}");
    assert_eq!(
        resumed,
        without_seconds(dir.path().join("straight.history.csv"))
    );
}

#[test]
fn a_checkpoint_for_other_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.bin");
    let mut args = train_args(&model, "cpu");
    args[2] = "1".into(); // one epoch
    Command::cargo_bin("mnist-cnn")
        .unwrap()
        .args(&args)
        .assert()
        .success();
    let out = Command::cargo_bin("mnist-cnn")
        .unwrap()
        .args(["train", "--epochs", "2", "--limit-train", "500", "--resume"])
        .arg(dir.path().join("m.bin.ckpt"))
        .arg("--data-dir")
        .arg(subset_dir())
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--limit-train"));
}

#[test]
fn divergence_is_an_error_naming_epoch_and_step_and_keeps_the_old_model() {
    divergence_is_an_error("cpu");
    #[cfg(feature = "flex")]
    divergence_is_an_error("flex");
}

fn divergence_is_an_error(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.bin");
    std::fs::write(&model, b"previous model").unwrap();
    let out = Command::cargo_bin("mnist-cnn")
        .unwrap()
        .args([
            "train",
            "--epochs",
            "2",
            "--limit-train",
            "512",
            "--limit-test",
            "50",
        ])
        // Beyond f32's range: the first update makes the weights infinite, the next loss NaN.
        .args(["--lr=1e300", "--backend", backend, "--data-dir"])
        .arg(subset_dir())
        .arg("--out")
        .arg(&model)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("training diverged: loss is") && stderr.contains("at epoch 1, step "),
        "{backend}: {stderr}"
    );
    assert_eq!(std::fs::read(&model).unwrap(), b"previous model");
}
