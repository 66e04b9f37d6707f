//! `download`: from a `file://` mirror, `--check` without network, nothing to do twice.

use super::*;

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
