//! `mnist-cnn serve` over HTTP, without a browser: answers, every bad input's 4xx (after which
//! it still serves), a stalled upload that does not stall others, and concurrent clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Served, digit_pgm, f64s, phone_photo, png_declaring, send_json, trained_model};
use serde_json::Value;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn post(url: &str, body: Vec<u8>) -> (u16, Value) {
    let response = client()
        .post(format!("{url}/api/predict"))
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().unwrap().parse().unwrap())
}

/// One request written by hand on a raw connection: `head` (without the blank line), then
/// `body`, then the write side closed; the status code of what comes back.
fn raw(url: &str, head: &str, body: &[u8]) -> u16 {
    let address = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(format!("{head}\r\nHost: {address}\r\n\r\n").as_bytes())
        .unwrap();
    // The server may answer (and close) before it has read everything: ignore write errors.
    for chunk in body.chunks(64 * 1024) {
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

#[test]
fn predicts_describes_and_refuses_bad_input_then_keeps_serving() {
    let model = trained_model();
    let served = Served::start(&model);
    let url = served.url.clone();

    let info: Value = send_json(client().get(format!("{url}/api/model")));
    assert_eq!(info["parameters"], 1_199_882);
    assert_eq!(info["backend"], "cpu");
    // The file name only: the server's directories are not the clients' business.
    assert_eq!(info["file"], model.file_name().unwrap().to_str().unwrap());
    // The served model as ONNX: the very bytes `export` writes.
    let onnx = client()
        .get(format!("{url}/api/model.onnx"))
        .send()
        .unwrap();
    assert_eq!(onnx.status(), 200);
    let served_onnx = onnx.bytes().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("m.onnx");
    common::cmd()
        .arg("export")
        .arg(&model)
        .arg(&exported)
        .assert()
        .success();
    assert_eq!(served_onnx, std::fs::read(&exported).unwrap());
    let page = client().get(format!("{url}/")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("<canvas id=\"pad\""));

    let (pgm, label) = digit_pgm(0);
    let good = |what: &str| {
        let (status, answer) = post(&url, pgm.clone());
        assert_eq!(status, 200, "after {what}: {answer}");
        assert_eq!(answer["digit"], label, "after {what}: {answer}");
        let probs = f64s(&answer["probabilities"]);
        assert_eq!(probs.len(), 10);
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
        assert_eq!(answer["input28"].as_array().unwrap().len(), 784);
    };
    good("nothing");

    let blank = [b"P5 28 28 255\n".to_vec(), vec![0; 784]].concat();
    for (body, status, says, what) in [
        (Vec::new(), 400, "no image", "an empty body"),
        (b"hello, world".to_vec(), 415, "not a PNG", "a non-image"),
        (blank, 422, "no digit found", "a blank image"),
        (pgm[..40].to_vec(), 415, "not a PNG", "a cut image"),
    ] {
        let (got, answer) = post(&url, body);
        assert_eq!(got, status, "{what}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{what}: {answer}"
        );
        good(what);
    }
    for (method, path, status) in [
        ("GET", "/api/predict", 405),
        ("PUT", "/", 405),
        ("GET", "/nowhere", 404),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client()
            .request(method.clone(), format!("{url}{path}"))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let answer: Value = response.text().unwrap().parse().unwrap();
        assert!(answer["error"].is_string());
        good(path);
    }
    // Over the limit (5 MB), and an upload that stops short of its declared length.
    let huge = vec![0u8; 6 << 20];
    let head = format!(
        "POST /api/predict HTTP/1.1\r\nContent-Length: {}",
        huge.len()
    );
    assert_eq!(raw(&url, &head, &huge), 413);
    good("an oversized body");
    let head = "POST /api/predict HTTP/1.1\r\nContent-Length: 5000";
    assert_eq!(raw(&url, head, &pgm[..100]), 400);
    good("a truncated upload");

    // Ctrl-C stops it cleanly.
    assert_eq!(served.stop().code(), Some(0));
}

#[test]
fn a_stalled_upload_does_not_stall_others_and_is_refused_in_time() {
    let served = Served::start_with(&trained_model(), &["--upload-timeout", "2"]);
    let url = served.url.clone();
    // A client that declares a body and sends only part of it, then waits.
    let address = url.trim_start_matches("http://").to_string();
    let mut stalled = TcpStream::connect(&address).unwrap();
    stalled
        .write_all(
            format!(
                "POST /api/predict HTTP/1.1\r\nHost: {address}\r\nContent-Length: 1000\r\n\r\nP5"
            )
            .as_bytes(),
        )
        .unwrap();
    let start = Instant::now();
    let (pgm, _) = digit_pgm(1);
    assert_eq!(post(&url, pgm).0, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // The stalled upload itself is refused once its time (2 s here) is up.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("took too long"), "{answer:?}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
}

#[test]
fn eight_clients_at_once_are_all_answered_right() {
    let served = Served::start(&trained_model());
    let url = served.url.clone();
    // 200 requests from 8 clients at once, each a different digit, all answered right.
    let digits: Vec<(Vec<u8>, u8)> = (0..25).map(digit_pgm).collect();
    let expected: Vec<u64> = digits
        .iter()
        .map(|(pgm, _)| post(&url, pgm.clone()).1["digit"].as_u64().unwrap())
        .collect();
    let answered = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let mut right = 0;
                    for ((pgm, _), want) in digits.iter().zip(&expected) {
                        let (status, answer) = post(&url, pgm.clone());
                        right += usize::from(status == 200 && answer["digit"] == *want);
                    }
                    right
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(answered, 200);
    // And the model reads most of them right: it is the same forward pass as eval.
    let right = digits
        .iter()
        .zip(&expected)
        .filter(|((_, label), got)| u64::from(*label) == **got)
        .count();
    assert!(right >= 20, "{right} of 25");
}

/// A picture that declares too many pixels gets 413 from its header alone, a phone photo still
/// reads, and large pictures beyond the lane's queue are told to come back (503, Retry-After)
/// while small ones are answered.
#[test]
fn hostile_pictures_are_refused_and_large_ones_queue_in_their_own_lane() {
    let served = Served::start(&trained_model());
    let url = served.url.clone();
    let (status, answer) = post(&url, png_declaring(20_000, 20_000));
    assert_eq!(status, 413, "{answer}");
    let says = answer["error"].as_str().unwrap();
    assert!(
        says.contains("20000x20000") && says.contains("limit of 50 megapixels"),
        "{says}"
    );

    let photo = phone_photo(3);
    let (_, label) = digit_pgm(3);
    let (status, answer) = post(&url, photo.clone());
    assert_eq!(
        (status, answer["digit"].as_u64()),
        (200, Some(u64::from(label))),
        "{answer}"
    );

    // Eight photos at once: the large lane takes four, the rest are told to retry.
    let answers: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let response = client()
                        .post(format!("{url}/api/predict"))
                        .body(photo.clone())
                        .send()
                        .unwrap();
                    let retry = response.headers().get("retry-after");
                    let retry = retry.map(|v| v.to_str().unwrap().to_string());
                    (response.status().as_u16(), retry)
                })
            })
            .collect();
        // A small digit meanwhile is answered.
        let (pgm, _) = digit_pgm(1);
        assert_eq!(post(&url, pgm).0, 200);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok + busy.len(), 8, "{answers:?}");
    assert!(ok >= 4 && !busy.is_empty(), "{answers:?}");
    assert!(
        busy.iter().all(|(_, retry)| retry.as_deref() == Some("1")),
        "{answers:?}"
    );
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_body() {
    let served = Served::start(&trained_model());
    // A terabyte declared, three bytes sent: 413 from the header, not a wait for the rest.
    let head = "POST /api/predict HTTP/1.1\r\nContent-Length: 1000000000000";
    assert_eq!(raw(&served.url, head, b"abc"), 413);
    let (pgm, label) = digit_pgm(2);
    let (status, answer) = post(&served.url, pgm);
    assert_eq!(
        (status, answer["digit"].as_u64()),
        (200, Some(u64::from(label)))
    );
}

/// A 28x28 PNG whose ICC profile inflates to 256 MB, from six clients at once: each is read
/// (the profile dropped past the decoder's limit), a drawn digit is answered meanwhile, and the
/// server's own peak stays in the tens of megabytes, not six times the profile.
#[cfg(target_os = "linux")]
#[test]
fn six_clients_posting_an_icc_bomb_cost_megabytes() {
    let served = Served::start(&trained_model());
    let url = served.url.clone();
    let bomb = common::crafted::png_with_icc_bomb(256 << 20);
    assert!(bomb.len() < 400 << 10, "{} bytes", bomb.len());
    let statuses: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| post(&url, bomb.clone())))
            .collect();
        let (pgm, label) = digit_pgm(4);
        let (status, answer) = post(&url, pgm);
        assert_eq!(
            (status, answer["digit"].as_u64()),
            (200, Some(u64::from(label)))
        );
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (status, answer) in &statuses {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(
            answer["digit"], 1,
            "the bomb's picture is a stroke: {answer}"
        );
    }
    let peak = served.peak_rss_mib();
    assert!(peak < 200.0, "the server's peak: {peak:.0} MiB");
}
