//! `export`: safetensors and ONNX, round trips, and refusals that write nothing.

use super::*;

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
