//! The GPU path (`--backend wgpu`) run for real: on a GPU where there is one, else on Mesa's
//! software Vulkan (lavapipe), which is slow but runs every kernel a GPU would. Built only with
//! `--features wgpu`; `scripts/gpu-smoke.sh` builds and runs it (see docs/gpu.md).
//!
//! Small shapes on purpose: on lavapipe the first use of each kernel costs a compilation and an
//! autotune whose benchmark runs grow with the batch.

#![cfg(feature = "wgpu")]

mod common;

use std::path::Path;
use std::time::Instant;

use assert_cmd::Command;
use common::{subset_dir, test_lines};

fn cmd() -> Command {
    let mut cmd = common::cmd();
    // With it unset, Mesa's drivers print an error line of their own; the binary must not let
    // them (see `run`).
    cmd.env_remove("XDG_RUNTIME_DIR");
    cmd
}

/// Runs `args`, which must succeed with nothing on stderr but our notes; its stdout, echoed
/// with the wall time so that the smoke run's log shows what each stage did and cost.
fn run(args: &[&str], extra: &[&Path]) -> String {
    let started = Instant::now();
    let out = cmd()
        .args(args)
        .args(extra)
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // Only our notes (the subset is not canonical MNIST): no driver or loader noise.
    assert!(stderr.lines().all(|l| l.starts_with("note: ")), "{stderr}");
    eprintln!(
        "$ mnist-cnn {} ({:.1} s)\n{stdout}",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    stdout
}

/// 16 steps of 8 images, validation on 64: on lavapipe a first run costs 75-105 s (autotune,
/// whose choices are cached for the later runs, and kernel compilation), a later one 10-30 s.
const DATA: [&str; 8] = [
    "--limit-train",
    "128",
    "--limit-test",
    "64",
    "--batch",
    "8",
    "--verbose",
    "2",
];

fn eval(model: &Path, backend: &str) -> (f64, f64) {
    let data = subset_dir();
    test_lines(&run(
        &["eval", "--backend", backend, "--limit-test", "64"],
        &[model, Path::new("--data-dir"), &data],
    ))
}

/// `predict --json` over pictures of the subset's first test digits: each one's digit and
/// probability.
fn predict(model: &Path, backend: &str, dir: &Path) -> Vec<(u64, f64)> {
    let pictures: Vec<_> = (0..6)
        .map(|k| {
            let path = dir.join(format!("digit{k}.pgm"));
            std::fs::write(&path, common::digit_pgm(k).0).unwrap();
            path
        })
        .collect();
    let mut extra = vec![model];
    extra.extend(pictures.iter().map(|p| p.as_path()));
    let out = run(&["predict", "--backend", backend, "--json"], &extra);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["digit"].as_u64().unwrap(),
                r["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Train, checkpoint, resume, evaluate and predict on the GPU; every figure against our CPU
/// kernels, and the checkpoints crossing between the two engines both ways.
#[test]
fn trains_resumes_evaluates_and_predicts_on_the_gpu_as_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let data = subset_dir();
    let gpu = dir.path().join("gpu.bin");
    let out = run(
        &[&["train", "--backend", "wgpu", "--epochs", "1"][..], &DATA].concat(),
        &[Path::new("--data-dir"), &data, Path::new("--out"), &gpu],
    );
    let (loss1, accuracy1) = test_lines(&out);
    // An untrained network scores ln 10 = 2.30 and a tenth right.
    assert!(loss1 < 2.2 && accuracy1 > 0.2, "{out}");

    // The checkpoint resumes on the GPU (one more epoch) and on the CPU.
    let ckpt = dir.path().join("gpu.bin.ckpt");
    let out = run(
        &["train", "--backend", "wgpu", "--epochs", "2", "--resume"],
        &[&ckpt, Path::new("--data-dir"), &data],
    );
    let (loss2, accuracy2) = test_lines(&out);
    assert!(loss2 < loss1 && accuracy2 >= accuracy1, "{loss1} → {out}");
    let on_cpu = dir.path().join("on-cpu.bin");
    let out = run(
        &["train", "--backend", "cpu", "--epochs", "3", "--resume"],
        &[
            &ckpt,
            Path::new("--data-dir"),
            &data,
            Path::new("--out"),
            &on_cpu,
        ],
    );
    assert!(test_lines(&out).1 >= accuracy2 - 0.05, "{out}");

    // The GPU-trained model: the same figures on both engines.
    let (gpu_loss, gpu_accuracy) = eval(&gpu, "wgpu");
    let (cpu_loss, cpu_accuracy) = eval(&gpu, "cpu");
    assert_eq!(gpu_accuracy, cpu_accuracy);
    assert!(
        (gpu_loss - cpu_loss).abs() <= 1e-6 * cpu_loss,
        "{gpu_loss} vs {cpu_loss}"
    );
    let (on_gpu, on_cpu) = (
        predict(&gpu, "wgpu", dir.path()),
        predict(&gpu, "cpu", dir.path()),
    );
    for ((gpu_digit, gpu_p), (cpu_digit, cpu_p)) in on_gpu.iter().zip(&on_cpu) {
        assert_eq!(gpu_digit, cpu_digit);
        assert!((gpu_p - cpu_p).abs() <= 1e-5, "{on_gpu:?} vs {on_cpu:?}");
    }

    // A CPU checkpoint resumes on the GPU.
    let cpu = dir.path().join("cpu.bin");
    run(
        &[&["train", "--backend", "cpu", "--epochs", "1"][..], &DATA].concat(),
        &[Path::new("--data-dir"), &data, Path::new("--out"), &cpu],
    );
    let out = run(
        &["train", "--backend", "wgpu", "--epochs", "2", "--resume"],
        &[
            &dir.path().join("cpu.bin.ckpt"),
            Path::new("--data-dir"),
            &data,
        ],
    );
    assert!(test_lines(&out).1 > 0.5, "{out}");
}

/// Without a usable driver: one line saying what is missing, exit 1, nothing written.
#[test]
fn no_adapter_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = cmd()
        .args(["train", "--backend", "wgpu", "--data-dir"])
        .arg(subset_dir())
        .arg("--out")
        .arg(dir.path().join("model.bin"))
        // The Vulkan loader then finds no driver, nor glvnd an EGL one (wgpu's fallback).
        .env("VK_ICD_FILENAMES", dir.path().join("none.json"))
        .env("VK_DRIVER_FILES", dir.path().join("none.json"))
        .env("__EGL_VENDOR_LIBRARY_DIRS", dir.path())
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: --backend wgpu: no GPU adapter"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
