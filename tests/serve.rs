//! `mnist-cnn serve` over HTTP, without a browser: answers, every bad input's 4xx (after which
//! it still serves), a stalled upload that does not stall others, and concurrent clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Served, digit_pgm, f64s, send_json, trained_model};
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
    assert_eq!(info["file"], model.display().to_string());
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
fn a_stalled_upload_does_not_stall_others_and_many_clients_are_answered() {
    let served = Served::start(&trained_model());
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
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

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
    // The stalled upload itself is refused once its time (10 s) is up.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("took too long"), "{answer:?}");
}
