//! `--help`, `summary`, shell completions and the man page.

use super::*;

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
