//! One clear line and the right exit code for every bad input: data files, model files, flags, missing features, no network.

use super::*;

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
