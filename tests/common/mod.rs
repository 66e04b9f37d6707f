//! Helpers shared by the integration tests: the committed subset and a loopback HTTP server.

#![allow(dead_code)]

pub mod crafted;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The binary, unaffected by a `MNIST_DATA_DIR` in the environment the tests run in.
pub fn cmd() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("mnist-cnn").unwrap();
    cmd.env_remove("MNIST_DATA_DIR");
    cmd
}

/// A JSON array of numbers as `f64`s.
pub fn f64s(array: &serde_json::Value) -> Vec<f64> {
    array
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// The small real MNIST subset made by `scripts/make-subset.py`.
pub fn subset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-subset")
}

/// The subset's SHA-256 for one file name, from its SHA256SUMS.
pub fn subset_sha256(name: &str) -> &'static str {
    let sums = std::fs::read_to_string(subset_dir().join("SHA256SUMS")).unwrap();
    let line = sums
        .lines()
        .find(|l| l.ends_with(&format!("  {name}")))
        .unwrap_or_else(|| panic!("{name} missing from SHA256SUMS"));
    Box::leak(line[..64].to_string().into_boxed_str())
}

/// `Test loss: …` and `Test accuracy: …` from a command's output.
pub fn test_lines(stdout: &str) -> (f64, f64) {
    let value = |key: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no `{key}` in:\n{stdout}"))
            .trim()
            .parse()
            .unwrap()
    };
    (value("Test loss:"), value("Test accuracy:"))
}

/// Copies the subset into `dir`.
pub fn copy_subset(dir: &Path) {
    for entry in std::fs::read_dir(subset_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
}

/// What the test server does with one request.
#[derive(Clone)]
pub enum Reply {
    Status(u16),
    Body(Vec<u8>),
    /// Declares the full length but sends only the first `usize` bytes, then closes.
    CutShort(Vec<u8>, usize),
    /// Accepts and never answers (until the server stops).
    Stall,
}

/// A loopback HTTP/1.1 server that answers each request with the next reply queued for its
/// path, and logs the paths asked for. It serves a bounded number of connections and stops
/// when dropped.
pub struct Server {
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<Mutex<bool>>,
}

impl Server {
    /// `routes`: (path prefix, replies in order; the last one repeats).
    pub fn start(routes: Vec<(&str, Vec<Reply>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(Mutex::new(false));
        let mut routes: Vec<(String, Vec<Reply>)> = routes
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect();
        let (log2, stop2) = (log.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut stalled = Vec::new();
            // Bounded: at most 200 connections or 60 s, whichever comes first.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut served = 0;
            while served < 200 && std::time::Instant::now() < deadline && !*stop2.lock().unwrap() {
                let (stream, _) = match listener.accept() {
                    Ok(s) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                served += 1;
                stream.set_nonblocking(false).unwrap();
                let path = read_request_path(&stream);
                log2.lock().unwrap().push(path.clone());
                let reply = routes
                    .iter_mut()
                    .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                    .map(|(_, replies)| {
                        if replies.len() > 1 {
                            replies.remove(0)
                        } else {
                            replies[0].clone()
                        }
                    })
                    .unwrap_or(Reply::Status(404));
                if let Some(s) = answer(stream, reply) {
                    stalled.push(s);
                }
            }
        });
        Server {
            base,
            log,
            handle: Some(handle),
            stop,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        *self.stop.lock().unwrap() = true;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn read_request_path(mut stream: &TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 8192 {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).unwrap_or("").to_string()
}

/// Writes the reply; a stalled stream is handed back so it stays open.
fn answer(mut stream: TcpStream, reply: Reply) -> Option<TcpStream> {
    let head = |status: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let _ = match reply {
        Reply::Status(code) => stream.write_all(head(&format!("{code} Test"), 0).as_bytes()),
        Reply::Body(body) => stream
            .write_all(head("200 OK", body.len()).as_bytes())
            .and_then(|()| stream.write_all(&body)),
        Reply::CutShort(body, sent) => stream
            .write_all(head("200 OK", body.len()).as_bytes())
            .and_then(|()| stream.write_all(&body[..sent])),
        Reply::Stall => return Some(stream),
    };
    None
}

/// A model trained on the committed subset (3 epochs, about 90% on MNIST's test set), made
/// once per test binary.
pub fn trained_model() -> PathBuf {
    static MODEL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap().keep();
            let model = dir.join("model.bin");
            let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("mnist-cnn"))
                .args(["train", "--epochs", "3", "--verbose", "0", "--data-dir"])
                .arg(subset_dir())
                .arg("--out")
                .arg(&model)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            model
        })
        .clone()
}

/// `mnist-cnn serve MODEL --port 0` running; stopped (with Ctrl-C) when dropped.
pub struct Served {
    pub url: String,
    child: std::process::Child,
}

impl Served {
    pub fn start(model: &Path) -> Served {
        Served::start_with(model, &[])
    }

    /// [`Served::start`] with more options.
    pub fn start_with(model: &Path, options: &[&str]) -> Served {
        use std::io::BufRead;
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("mnist-cnn"))
            .arg("serve")
            .arg(model)
            .args(["--port", "0"])
            .args(options)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Served { url, child }
    }

    /// The server's peak resident memory so far, its own VmHWM (Linux).
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }

    /// Ctrl-C, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Test image `k` of the subset as a PGM picture, and its label.
pub fn digit_pgm(k: usize) -> (Vec<u8>, u8) {
    use std::io::Read;
    let read = |name: &str| {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(subset_dir().join(name)).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    let images = read("t10k-images-idx3-ubyte.gz");
    let labels = read("t10k-labels-idx1-ubyte.gz");
    let mut pgm = b"P5 28 28 255\n".to_vec();
    pgm.extend_from_slice(&images[16 + k * 784..16 + (k + 1) * 784]);
    (pgm, labels[8 + k])
}

/// Sends `request` and reads its answer as JSON, whatever the status.
pub fn send_json(request: reqwest::blocking::RequestBuilder) -> serde_json::Value {
    request.send().unwrap().text().unwrap().parse().unwrap()
}

/// A PNG chunk: length, kind, data and CRC.
pub fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.sum().to_be_bytes());
}

/// A PNG's signature and header for `width` x `height` 8-bit grey pixels, no interlace.
pub fn png_grey_header(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    png
}

/// A valid PNG header that declares `width` x `height` grey pixels, followed by a few rows of
/// zeros: what an attacker sends to make a decoder allocate width × height bytes.
pub fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    use std::io::Write;
    let chunk = png_chunk;
    let mut png = png_grey_header(width, height);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&vec![0u8; 4 * (width as usize + 1)]).unwrap();
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

/// Test digit `k` of the subset as a phone photo would show it: dark ink on a light page,
/// 4000x3000, as a JPEG of 12 megapixels.
pub fn phone_photo(k: usize) -> Vec<u8> {
    let (pgm, _) = digit_pgm(k);
    let digit = &pgm[pgm.len() - 784..];
    let (w, h) = (4000u32, 3000u32);
    let page = image::GrayImage::from_fn(w, h, |x, y| {
        // The digit 70x its size, a little off centre; light falling off to the right.
        let (u, v) = (x as i64 - 1300, y as i64 - 400);
        let ink = if (0..1960).contains(&u) && (0..1960).contains(&v) {
            digit[(v / 70) as usize * 28 + (u / 70) as usize]
        } else {
            0
        };
        let paper = 235.0 - 40.0 * x as f32 / w as f32;
        image::Luma([(paper - f32::from(ink) * 0.8).max(0.0) as u8])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&page)
        .unwrap();
    jpeg
}

/// What a finished process did: its exit code, what it wrote, and its peak resident memory.
#[derive(Debug)]
pub struct Measured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The kernel's own high-water mark of the process's resident memory (its VmHWM).
    pub peak_mib: f64,
}

/// Runs `cmd` to its end with no standard input, through `examples/peak_rss.rs` (which
/// `cargo test` builds): started from this test process, a child would inherit its high-water
/// mark at `exec` and report at least the harness's own memory. The peak is the child's VmHWM
/// as the kernel hands it to `wait4`: no sampling, no timing.
#[cfg(target_os = "linux")]
pub fn run_measured(cmd: &std::process::Command) -> Measured {
    let helper = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/peak_rss");
    assert!(
        helper.exists(),
        "{} is missing: `cargo test` builds it (or `cargo build --example peak_rss`)",
        helper.display()
    );
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut measured = std::process::Command::new(helper);
    measured
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => measured.env(key, value),
            None => measured.env_remove(key),
        };
    }
    let output = measured
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let kib: f64 = std::fs::read_to_string(report.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Measured {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
        peak_mib: kib / 1024.0,
    }
}
