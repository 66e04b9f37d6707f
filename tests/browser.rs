//! `mnist-cnn serve` in a real browser: headless Chromium driven through chromedriver's
//! WebDriver API (plain HTTP and JSON). Draw a digit with pointer events, read the answer off
//! the page; upload a photo through the file picker. set MNIST_SCREENSHOT=PATH to keep a
//! screenshot of the page.
//!
//! Without chromedriver and Chromium (Debian's `chromium` and `chromium-driver`, or the
//! programs named by `CHROMEDRIVER` and `CHROMIUM`) each test says on stderr that it was
//! skipped and passes, so that `cargo test` passes on a machine with only the Rust toolchain.
//! `.ci/run` installs both and sets `REQUIRE_BROWSER_TESTS=1`, which turns a skip into a
//! failure.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Served, digit_pgm, f64s, send_json, trained_model};
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless Chromium session in it.
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::blocking::Client,
}

/// The chromedriver and Chromium to drive, or why the browser tests cannot run here.
fn browser_programs() -> Result<(String, String), String> {
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let chrome = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    match (runs(&driver), runs(&chrome)) {
        (true, true) => Ok((driver, chrome)),
        (false, _) => Err(format!("{driver} does not run")),
        (_, false) => Err(format!("{chrome} does not run")),
    }
}

/// The programs for `test`, or `None` after saying on stderr that it is skipped (a failure
/// where `REQUIRE_BROWSER_TESTS=1`).
fn programs_or_skip(test: &str) -> Option<(String, String)> {
    match browser_programs() {
        Ok(programs) => Some(programs),
        Err(why) if std::env::var_os("REQUIRE_BROWSER_TESTS").is_some() => {
            panic!("{why}, and REQUIRE_BROWSER_TESTS is set")
        }
        Err(why) => {
            // Straight to stderr: the test harness hides what passing tests print.
            let note = format!(
                "SKIPPED browser test {test}: {why}; install Debian's chromium and \
                 chromium-driver (or set CHROMEDRIVER and CHROMIUM), then `cargo test --test browser`\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
            None
        }
    }
}

impl Browser {
    fn start((binary, chrome): (String, String)) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}): install Debian's chromium and chromium-driver")
            });
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{root}/status")).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // As root in a container, without a GPU, and without reaching for the network.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=900,760",
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chrome, "args": args },
        }}});
        let session: Value = send_json(
            http.post(format!("{root}/session"))
                .header("content-type", "application/json")
                .body(caps.to_string()),
        );
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"));
        let base = format!("{root}/session/{id}");
        Browser { driver, base, http }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer = send_json(request);
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {path}: {answer}");
        }
        answer["value"].clone()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None)
    }

    fn element(&self, css: &str) -> String {
        let found = self.post("/element", json!({ "using": "css selector", "value": css }));
        found[ELEMENT].as_str().unwrap().to_string()
    }

    fn script(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
    }

    /// The page's answer, once it shows one (the digit is "?" until then).
    fn wait_for_digit(&self) -> String {
        let digit = self.element("#digit");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.get(&format!("/element/{digit}/text"));
            let text = text.as_str().unwrap().to_string();
            if text.len() == 1 && text.chars().all(|c| c.is_ascii_digit()) {
                return text;
            }
            assert!(Instant::now() < deadline, "no answer on the page: {text:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, path: &Path) {
        let png = self.get("/screenshot");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.base).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The model's answer for `body`, straight from the API.
fn api_digit(url: &str, body: Vec<u8>) -> String {
    let answer = send_json(
        reqwest::blocking::Client::new()
            .post(format!("{url}/api/predict"))
            .body(body),
    );
    answer["digit"].to_string()
}

#[test]
fn a_digit_drawn_with_the_pointer_is_read_on_the_page() {
    let Some(programs) = programs_or_skip("a_digit_drawn_with_the_pointer_is_read_on_the_page")
    else {
        return;
    };
    let served = Served::start(&trained_model());
    let browser = Browser::start(programs);
    browser.post("/url", json!({ "url": format!("{}/", served.url) }));
    let pad = browser.element("#pad");
    // A "7": the top bar left to right, then the diagonal down to the bottom left, as a pen
    // would draw it (offsets from the pad's centre, in CSS pixels of a 300-pixel pad).
    let mut actions = vec![
        json!({ "type": "pointerMove", "origin": { ELEMENT: pad }, "x": -70, "y": -90 }),
        json!({ "type": "pointerDown", "button": 0 }),
    ];
    let path = (0..=10)
        .map(|i| (-70 + 14 * i, -90))
        .chain((1..=12).map(|i| (70 - 9 * i, -90 + 15 * i)));
    for (x, y) in path {
        actions.push(json!({ "type": "pointerMove", "duration": 15, "origin": { ELEMENT: pad }, "x": x, "y": y }));
    }
    actions.push(json!({ "type": "pointerUp", "button": 0 }));
    browser.post(
        "/actions",
        json!({ "actions": [{
            "type": "pointer", "id": "pen", "parameters": { "pointerType": "mouse" },
            "actions": actions,
        }]}),
    );
    let shown = browser.wait_for_digit();
    // The page shows what the API says of the very picture on the pad.
    let data_url = browser.script("return document.getElementById('pad').toDataURL('image/png')");
    let png = base64::engine::general_purpose::STANDARD
        .decode(
            data_url
                .as_str()
                .unwrap()
                .trim_start_matches("data:image/png;base64,"),
        )
        .unwrap();
    assert_eq!(shown, api_digit(&served.url, png));
    assert_eq!(shown, "7", "the drawn 7 was read as {shown}");
    // Ten bars, the largest for the digit shown, and the 28x28 the model saw drawn.
    let bars = browser.script(
        "return [...document.querySelectorAll('.bar .p')].map(e => parseFloat(e.textContent))",
    );
    let bars = f64s(&bars);
    assert_eq!(bars.len(), 10);
    assert!((bars.iter().sum::<f64>() - 100.0).abs() < 1.0, "{bars:?}");
    let best = (0..10)
        .max_by(|&a, &b| bars[a].total_cmp(&bars[b]))
        .unwrap();
    assert_eq!(best.to_string(), shown);
    let lit = browser.script(
        "const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;\
         let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++; return n;",
    );
    assert!(lit.as_u64().unwrap() > 20, "{lit}");
    if let Ok(path) = std::env::var("MNIST_SCREENSHOT") {
        browser.screenshot(Path::new(&path));
    }
    // Clear empties the answer.
    let clear = browser.element("#clear");
    browser.post(&format!("/element/{clear}/click"), json!({}));
    let digit = browser.element("#digit");
    assert_eq!(browser.get(&format!("/element/{digit}/text")), "?");
}

#[test]
fn a_picture_picked_in_the_file_dialog_is_read() {
    let Some(programs) = programs_or_skip("a_picture_picked_in_the_file_dialog_is_read") else {
        return;
    };
    let served = Served::start(&trained_model());
    let dir = tempfile::tempdir().unwrap();
    let (pgm, _) = digit_pgm(3);
    let file = dir.path().join("digit.pgm");
    std::fs::write(&file, &pgm).unwrap();
    let browser = Browser::start(programs);
    browser.post("/url", json!({ "url": format!("{}/", served.url) }));
    let input = browser.element("#file");
    browser.post(
        &format!("/element/{input}/value"),
        json!({ "text": file.display().to_string() }),
    );
    assert_eq!(browser.wait_for_digit(), api_digit(&served.url, pgm));
}
