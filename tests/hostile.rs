//! Files and requests from a stranger, one test a class of attack (the corpus is crafted by
//! `common::crafted`): each ends in one escaped line and exit 1 (2 for flags), costs memory
//! bounded by the file's real size whatever it declares (the child's own VmHWM), and never
//! waits on what is not a regular file.

#![cfg(target_os = "linux")]

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::crafted::{self, Pack};
use common::{Measured, cmd, run_measured, subset_dir};
use mnist_cnn::model::{self, Provenance};
use mnist_cnn::network::Params;
use mnist_cnn::settings::Settings;

/// What refusing any file may cost at most: the binary itself and the largest file the
/// program reads whole, a checkpoint (parameters and Adadelta's two accumulators, 14 MiB),
/// read and then decoded, with room to spare. A file that declared its way past its own size
/// would show here in hundreds of megabytes.
const REFUSAL_PEAK_MIB: f64 = 64.0;

fn binary() -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("mnist-cnn"));
    cmd.env_remove("MNIST_DATA_DIR");
    cmd
}

/// Asserts a refusal: `code`, one line on stderr that contains `needle`, no control character
/// but its line break, and a peak within [`REFUSAL_PEAK_MIB`].
fn refused(run: &Measured, code: i32, needle: &str) {
    let what = format!("{run:?}");
    assert_eq!(run.code, code, "{what}");
    assert_eq!(run.stderr.lines().count(), 1, "{what}");
    assert!(run.stderr.starts_with("error: "), "{what}");
    assert!(run.stderr.contains(needle), "lacks {needle:?}: {what}");
    let body = run.stderr.trim_end_matches('\n');
    assert!(!body.chars().any(char::is_control), "{what}");
    assert!(run.peak_mib < REFUSAL_PEAK_MIB, "{what}");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Every command that reads a MODEL, with what else it needs: a picture for `predict`, an
/// output for `export`.
fn model_commands(model: &Path, picture: &Path, out: &Path) -> Vec<Vec<OsString>> {
    let model = model.as_os_str();
    vec![
        vec!["eval".into(), model.into()],
        vec!["predict".into(), model.into(), picture.into()],
        vec!["export".into(), model.into(), out.into()],
        vec!["serve".into(), model.into(), "--port".into(), "0".into()],
    ]
}

/// `eval MODEL` on ten test images of the committed subset.
fn eval(model: &Path) -> Measured {
    run_measured(
        binary()
            .arg("eval")
            .arg(model)
            .args(["--limit-test", "10", "--data-dir"])
            .arg(subset_dir()),
    )
}

#[test]
fn a_checkpoint_is_held_to_the_rules_of_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let resume = |ckpt: &Path| {
        run_measured(
            binary()
                .args(["train", "--verbose", "0", "--resume"])
                .arg(ckpt)
                .arg("--data-dir")
                .arg(subset_dir())
                .args(["--limit-train", "6", "--limit-test", "4"]),
        )
    };
    // What passes resumes and finishes: the rules refuse only the impossible.
    let good = write(
        dir.path(),
        "good.bin.ckpt",
        &crafted::checkpoint(crafted::SMALL_RUN).to_bytes().unwrap(),
    );
    let run = resume(&good);
    assert_eq!(run.code, 0, "{run:?}");
    let cases: [(&str, Settings, &str); 4] = [
        (
            "batch",
            Settings {
                batch: 0,
                ..crafted::SMALL_RUN
            },
            "its `batch` must be a whole number from 1 to 4096, not 0",
        ),
        (
            "lr",
            Settings {
                lr: -1e30,
                ..crafted::SMALL_RUN
            },
            "its `lr` must be a positive number, not -1000000000000000000000000000000",
        ),
        (
            "epochs",
            Settings {
                epochs: u32::MAX as usize,
                ..crafted::SMALL_RUN
            },
            "its `epochs` must be a whole number from 1 to 10000, not 4294967295",
        ),
        (
            "big-batch",
            Settings {
                batch: 1 << 20,
                ..crafted::SMALL_RUN
            },
            "its `batch` must be a whole number from 1 to 4096",
        ),
    ];
    for (name, settings, reason) in cases {
        let path = write(
            dir.path(),
            &format!("{name}.ckpt"),
            &crafted::checkpoint(settings).to_bytes().unwrap(),
        );
        let run = resume(&path);
        refused(&run, 1, reason);
        assert!(run.stderr.contains(&format!("{name}.ckpt")), "{run:?}");
    }
    // Counters and state: past its own target, a history that does not fit, accumulators
    // that no run makes.
    let mut past = crafted::checkpoint(crafted::SMALL_RUN);
    past.epochs_done = 3;
    past.history.extend(past.history.clone());
    past.history.extend(past.history[..1].to_vec());
    let mut lost = crafted::checkpoint(crafted::SMALL_RUN);
    lost.history.clear();
    let mut negative = crafted::checkpoint(crafted::SMALL_RUN);
    negative.state.accumulators.grad.dense1.weight[7] = -1.0;
    let mut nan = crafted::checkpoint(crafted::SMALL_RUN);
    nan.state.params.conv2.bias[1] = f32::NAN;
    for (name, ckpt, reason) in [
        (
            "past",
            past,
            "its `epochs_done` (3) is past its `epochs` (2)",
        ),
        ("lost", lost, "its history does not match its epochs"),
        (
            "negative",
            negative,
            "its accumulator `accum_grad.dense1.weight` holds 1 values that are negative",
        ),
        ("nan", nan, "its parameter `conv2.bias` holds 1 NaN"),
    ] {
        let path = write(
            dir.path(),
            &format!("{name}.ckpt"),
            &ckpt.to_bytes().unwrap(),
        );
        refused(&resume(&path), 1, reason);
    }
}

#[test]
fn flags_obey_the_same_rules() {
    for (args, reason) in [
        (
            &["--batch", "0"][..],
            "--batch must be a whole number from 1 to 4096, not 0",
        ),
        (
            &["--batch", "5000"],
            "--batch must be a whole number from 1 to 4096, not 5000",
        ),
        (
            &["--epochs", "0"],
            "--epochs must be a whole number from 1 to 10000, not 0",
        ),
        (
            &["--epochs", "4294967295"],
            "--epochs must be a whole number",
        ),
        (&["--lr=-1e30"], "--lr must be a positive number"),
        (&["--limit-train", "0"], "--limit-train must be at least 1"),
    ] {
        let run = run_measured(
            binary()
                .arg("train")
                .args(args)
                .arg("--data-dir")
                .arg(subset_dir()),
        );
        refused(&run, 2, reason);
    }
}

#[test]
fn what_a_file_declares_costs_no_more_than_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let params = Params::glorot(1);
    // safetensors: a 7 MB header whose one shape array has 1.75 million dimensions.
    let dims = vec!["4"; 1_750_000].join(",");
    let header = format!(
        "{{\"conv1.weight\":{{\"dtype\":\"F32\",\"shape\":[{dims}],\"data_offsets\":[0,4]}}}}"
    );
    let shape = write(
        dir.path(),
        "shape.safetensors",
        &crafted::safetensors(&header, &[0; 4]),
    );
    // safetensors: __metadata__ with 500,000 keys in 6 MB.
    let keys: Vec<String> = (0..500_000).map(|i| format!("\"{i}\":\"\"")).collect();
    let header = format!("{{\"__metadata__\":{{{}}}}}", keys.join(","));
    let keys = write(
        dir.path(),
        "keys.safetensors",
        &crafted::safetensors(&header, &[]),
    );
    // Our own format: a metadata map of 300,000 entries (2.4 MB of CBOR), and one of 100
    // entries, small enough for the size limit but past the entry limit.
    let mut pack = Pack::model(&params);
    pack.metadata = (0..300_000)
        .map(|i| (i.to_string(), String::new()))
        .collect();
    let map = write(dir.path(), "map.bin", &pack.bytes());
    pack.metadata.truncate(100);
    let entries = write(dir.path(), "entries.bin", &pack.bytes());
    // A 300 MB sparse file, and an endless one.
    let sparse = dir.path().join("sparse.bin");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    for (path, reason) in [
        (
            shape.as_path(),
            "its header declares more than the 65536 bytes",
        ),
        (&keys, "its header declares more than the 65536 bytes"),
        (&map, "its metadata declares"),
        (
            &entries,
            "100 entries in its metadata strings; at most 64 are read",
        ),
        (&sparse, "larger than the 8 MiB a model file can be"),
        (Path::new("/dev/zero"), "not a regular file"),
    ] {
        refused(&eval(path), 1, reason);
    }
}

#[test]
fn what_is_not_a_regular_file_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.bin");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let out = dir.path().join("m.onnx");
    let picture = write(dir.path(), "digit.pgm", &common::digit_pgm(0).0);
    let mut every = model_commands(&fifo, &picture, &out);
    every.push(vec!["train".into(), "--resume".into(), fifo.clone().into()]);
    for args in every {
        // A command that waited on the pipe would be killed here and fail the test.
        let output = cmd()
            .args(&args)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
    }
    assert!(!out.exists());
}

#[test]
fn names_from_a_file_reach_the_terminal_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let poison = "conv1.bias\u{1b}[2J\u{1b}]0;owned\u{7}";
    let mut pack = Pack::model(&Params::glorot(1));
    pack.tensor("conv1.bias").name = poison.into();
    let ours = write(dir.path(), "names.bin", &pack.bytes());
    let (header, len) = crafted::safetensors_header(|n| {
        if n == "conv1.bias" {
            poison.to_string()
        } else {
            n.to_string()
        }
    });
    let theirs = write(
        dir.path(),
        "names.safetensors",
        &crafted::safetensors(&header, &vec![0; len]),
    );
    for path in [ours, theirs] {
        let run = eval(&path);
        refused(&run, 1, "conv1.bias\\u{1b}[2J\\u{1b}]0;owned\\u{7}");
    }
}

/// A crafted file's name, what is changed in it, and what the refusal says.
type Variant = (&'static str, fn(&mut Pack), &'static str);

#[test]
fn our_format_is_held_to_the_networks_layout() {
    let dir = tempfile::tempdir().unwrap();
    let pack = Pack::model(&Params::glorot(1));
    // The crafted file as it is loads: the refusals below are for what was changed.
    let good = write(dir.path(), "good.bin", &pack.bytes());
    let run = eval(&good);
    assert_eq!(run.code, 0, "{run:?}");
    let dense1 = pack.tensors[4].range;
    let variants: [Variant; 6] = [
        (
            "transposed",
            |p| p.tensor("dense1.weight").shape = vec![128, 9216],
            "tensor `dense1.weight` has shape [128, 9216]; expected [9216, 128]",
        ),
        (
            "i32",
            |p| p.tensor("dense1.weight").dtype = "I32".into(),
            "tensor `dense1.weight` is I32; expected F32",
        ),
        (
            "f64",
            |p| p.tensor("conv2.bias").dtype = "F64".into(),
            "tensor `conv2.bias` is F64; expected F32",
        ),
        (
            "overlap",
            |p| {
                let start = p.tensor("dense1.weight").range.0;
                p.tensor("dense2.weight").range = (start, start + 4 * 1280);
            },
            "declare overlapping bytes",
        ),
        (
            "twice",
            |p| p.tensor("conv1.bias").name = "conv1.weight".into(),
            "names `conv1.weight` twice",
        ),
        (
            "outside",
            |p| {
                let t = p.tensor("dense2.bias");
                t.range = (t.range.0 + (1 << 20), t.range.1 + (1 << 20));
            },
            "tensor `dense2.bias` declares bytes",
        ),
    ];
    for (name, change, reason) in variants {
        let mut crafted = pack.clone();
        change(&mut crafted);
        let path = write(dir.path(), &format!("{name}.bin"), &crafted.bytes());
        refused(&eval(&path), 1, reason);
    }
    assert_eq!(dense1, pack.tensors[4].range);
}

#[test]
fn weights_must_be_finite_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut params = Params::glorot(1);
    params.dense1.weight[5] = f32::NAN;
    params.dense1.weight[9] = f32::INFINITY;
    let provenance = Provenance {
        epochs: 1,
        seed: 1,
        batch: 128,
        test_images: 10,
        test_loss: 0.5,
        test_accuracy: 0.5,
    };
    let ours = write(
        dir.path(),
        "nan.bin",
        &model::file_bytes(&params, Some(&provenance)).unwrap(),
    );
    let theirs = write(
        dir.path(),
        "nan.safetensors",
        &mnist_cnn::formats::safetensors::to_bytes(&params).unwrap(),
    );
    let picture = write(dir.path(), "digit.pgm", &common::digit_pgm(0).0);
    let out = dir.path().join("out.onnx");
    for model in [&ours, &theirs] {
        for args in model_commands(model, &picture, &out) {
            let run = run_measured(binary().args(&args));
            refused(
                &run,
                1,
                "tensor `dense1.weight` holds 2 NaN or infinite values",
            );
        }
    }
    assert!(!out.exists());
}

#[test]
fn a_safetensors_name_given_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (header, len) = crafted::safetensors_header(|n| n.to_string());
    // The first tensor's entry again at the end: the crate alone would keep the last one.
    let first = &header[1..header.find("},").unwrap() + 1];
    let twice = format!("{},{first}}}", &header[..header.len() - 1]);
    let path = write(
        dir.path(),
        "twice.safetensors",
        &crafted::safetensors(&twice, &vec![0; len]),
    );
    refused(&eval(&path), 1, "`conv1.weight` is named twice");
    let once = write(
        dir.path(),
        "once.safetensors",
        &crafted::safetensors(&header, &vec![0; len]),
    );
    assert_eq!(eval(&once).code, 0);
}
