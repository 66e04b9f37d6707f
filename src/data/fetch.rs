//! Fetching the MNIST files from mirrors into the local cache, atomically and verified.
//!
//! Bytes stream into a temporary file beside the target; the file is decoded and its
//! decompressed SHA-256 checked before it is renamed into place, so the cache only ever holds
//! files that passed. Failures move on to the next attempt or mirror and name each reason.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::idx::{self, Decoded};
use super::mnist::MnistFile;
use crate::error::{Error, Result};
use crate::fsutil;

/// The public mirrors, tried in order. LeCun's own site comes last: it often refuses robots.
pub const DEFAULT_MIRRORS: &[&str] = &[
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];

/// How to reach the mirrors.
#[derive(Debug, Clone)]
pub struct Fetcher {
    pub mirrors: Vec<String>,
    /// Connect and per-read timeout.
    pub timeout: Duration,
    /// Extra attempts per mirror after a transient failure (network error, 5xx, short body).
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher {
            mirrors: DEFAULT_MIRRORS.iter().map(|m| m.to_string()).collect(),
            timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(500),
            progress: true,
        }
    }
}

/// Why one attempt failed, and whether trying the same mirror again could help.
struct Failure {
    reason: String,
    transient: bool,
}

impl Failure {
    fn transient(reason: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            transient: true,
        }
    }
    fn permanent(reason: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            transient: false,
        }
    }
}

impl Fetcher {
    /// Downloads `file` into `dir` as `<name>.gz` and returns its decoded content. Only a copy
    /// whose decompressed SHA-256 is the canonical one is kept.
    pub fn fetch(&self, file: &MnistFile, dir: &Path) -> Result<Decoded> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("cannot create data directory", dir, e))?;
        let target = dir.join(file.gz_name());
        let client = self.client()?;
        let mut tried = Vec::new();
        for mirror in &self.mirrors {
            let url = format!("{}/{}", mirror.trim_end_matches('/'), file.gz_name());
            let mut attempts = 0;
            loop {
                attempts += 1;
                match self.attempt(&client, &url, file, dir, &target) {
                    Ok(decoded) => return Ok(decoded),
                    // Only what can heal is tried again: a DNS failure, a refused connection
                    // or a 404 will answer the same in a second.
                    Err(failure) if failure.transient && attempts <= self.retries => {
                        std::thread::sleep(self.backoff * 2u32.saturating_pow(attempts - 1));
                    }
                    Err(failure) => {
                        let mut reason = format!("{url}: {}", failure.reason);
                        if attempts > 1 {
                            reason.push_str(&format!(" ({attempts} attempts)"));
                        }
                        tried.push(reason);
                        break;
                    }
                }
            }
        }
        Err(Error::Download {
            file: file.gz_name(),
            dir: dir.to_path_buf(),
            tried,
        })
    }

    fn client(&self) -> Result<reqwest::blocking::Client> {
        reqwest::blocking::Client::builder()
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .user_agent(concat!("mnist-cnn/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Network {
                what: "cannot start the HTTP client",
                reason: e.to_string(),
            })
    }

    fn attempt(
        &self,
        client: &reqwest::blocking::Client,
        url: &str,
        file: &MnistFile,
        dir: &Path,
        target: &Path,
    ) -> std::result::Result<Decoded, Failure> {
        let (mut body, length) = open(client, url)?;
        let mut part = fsutil::new_temp(dir, &format!(".{}.", file.gz_name()), ".part")
            .map_err(|e| Failure::permanent(e.to_string()))?;

        let bar = self.bar(length, &file.gz_name());
        let copied = copy(&mut body, part.as_file_mut(), &bar);
        bar.finish_and_clear();
        let copied = copied?;
        if let Some(expected) = length
            && copied != expected
        {
            return Err(Failure::transient(format!(
                "body cut short: {copied} of {expected} bytes"
            )));
        }

        let handle = part.as_file_mut();
        handle
            .seek(SeekFrom::Start(0))
            .map_err(|e| Failure::permanent(e.to_string()))?;
        let decoded = idx::decode(file.kind, &*handle)
            .map_err(|fault| Failure::permanent(format!("not a valid IDX file: {fault}")))?;
        if decoded.sha256 != file.sha256 {
            return Err(Failure::permanent(format!(
                "checksum mismatch: SHA-256 {} instead of {}",
                decoded.sha256, file.sha256
            )));
        }
        handle.sync_all().map_err(|e| {
            Failure::permanent(format!("cannot write {}: {e}", part.path().display()))
        })?;
        part.persist(target).map_err(|e| {
            Failure::permanent(format!("cannot rename into {}: {e}", target.display()))
        })?;
        Ok(decoded)
    }

    fn bar(&self, length: Option<u64>, name: &str) -> ProgressBar {
        let target = if self.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(length, target);
        let style = ProgressStyle::with_template(
            "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("static template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(format!("Downloading {name}"));
        bar
    }
}

/// Opens `url` for reading: `file://` paths from disk, anything else over HTTP(S).
fn open(
    client: &reqwest::blocking::Client,
    url: &str,
) -> std::result::Result<(Box<dyn Read>, Option<u64>), Failure> {
    if let Some(path) = url.strip_prefix("file://") {
        let path = PathBuf::from(path);
        let file = File::open(&path).map_err(|e| Failure::permanent(e.to_string()))?;
        let length = file.metadata().ok().map(|m| m.len());
        return Ok((Box::new(file), length));
    }
    let response = client.get(url).send().map_err(|e| classify(&e))?;
    let status = response.status();
    if !status.is_success() {
        // 5xx and 429 may pass; 404 and the like will not.
        let transient = status.is_server_error() || status.as_u16() == 429;
        return Err(Failure {
            reason: format!("HTTP {status}"),
            transient,
        });
    }
    let length = response.content_length();
    Ok((Box::new(response), length))
}

/// Copies `from` into `to`, advancing `bar`; returns the byte count.
fn copy(
    from: &mut dyn Read,
    to: &mut File,
    bar: &ProgressBar,
) -> std::result::Result<u64, Failure> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Failure::transient(format!(
                    "read failed after {total} bytes: {e}"
                )));
            }
        };
        to.write_all(&buf[..n])
            .map_err(|e| Failure::permanent(format!("cannot write the temporary file: {e}")))?;
        total += n as u64;
        bar.inc(n as u64);
    }
}

/// A failed request in a few words, and whether trying again could help. reqwest's own
/// message hides the cause ("error sending request"); the cause decides.
fn classify(err: &reqwest::Error) -> Failure {
    let mut chain = err.to_string();
    let mut kinds = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            kinds.push(io.kind());
        }
        source = cause.source();
    }
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if err.is_timeout() || chain.contains("timed out") {
        Failure::transient("timed out")
    } else if chain.contains("dns error") || chain.contains("failed to lookup address") {
        Failure::permanent("no network (DNS lookup failed)")
    } else if kinds.contains(&ConnectionRefused) || chain.contains("onnection refused") {
        Failure::permanent("connection refused")
    } else if kinds
        .iter()
        .any(|k| [ConnectionReset, ConnectionAborted].contains(k))
    {
        Failure::transient("connection reset")
    } else {
        Failure::transient(chain)
    }
}
