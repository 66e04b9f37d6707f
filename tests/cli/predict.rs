//! `predict`: pictures and IDX files, bad files reported without stopping, hostile sizes refused.

use super::*;

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
