//! Downloading into the cache: file:// mirrors, fall-through on bad mirrors, retries, timeouts,
//! and nothing bad ever left in the cache. All offline: a loopback server stands in for the web.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Reply, Server, subset_dir, subset_sha256};
use mnist_cnn::Error;
use mnist_cnn::data::Fetcher;
use mnist_cnn::data::idx::Kind;
use mnist_cnn::data::mnist::MnistFile;

/// The subset's label file, whose checksum stands in for the canonical one.
fn labels_file() -> MnistFile {
    MnistFile {
        name: "train-labels-idx1-ubyte",
        kind: Kind::Labels,
        sha256: subset_sha256("train-labels-idx1-ubyte"),
    }
}

fn good_gz() -> Vec<u8> {
    std::fs::read(subset_dir().join("train-labels-idx1-ubyte.gz")).unwrap()
}

fn fetcher(mirrors: Vec<String>) -> Fetcher {
    Fetcher {
        mirrors,
        timeout: Duration::from_secs(1),
        retries: 2,
        backoff: Duration::from_millis(10),
        progress: false,
    }
}

/// Names in `dir`, sorted: the cache must hold exactly what passed, and no temporaries.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn file_mirror_fills_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mirror = format!("file://{}/", subset_dir().display());
    let decoded = fetcher(vec![mirror]).fetch(&labels_file(), &cache).unwrap();
    assert_eq!(decoded.count, 3000);
    assert_eq!(listing(&cache), ["train-labels-idx1-ubyte.gz"]);
    assert_eq!(
        std::fs::read(cache.join("train-labels-idx1-ubyte.gz")).unwrap(),
        good_gz()
    );
}

#[test]
fn corrupt_first_mirror_falls_through_to_the_second() {
    let good = good_gz();
    // Right-sized, wrong bytes.
    let bad: Vec<u8> = good.iter().map(|b| b.wrapping_add(1)).collect();
    let server = Server::start(vec![
        ("/bad/", vec![Reply::Body(bad)]),
        ("/good/", vec![Reply::Body(good.clone())]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mirrors = vec![
        format!("{}/bad/", server.base),
        format!("{}/good", server.base),
    ];
    let decoded = fetcher(mirrors).fetch(&labels_file(), dir.path()).unwrap();
    assert_eq!(decoded.count, 3000);
    assert_eq!(
        server.requests(),
        [
            "/bad/train-labels-idx1-ubyte.gz",
            "/good/train-labels-idx1-ubyte.gz"
        ]
    );
    assert_eq!(listing(dir.path()), ["train-labels-idx1-ubyte.gz"]);
}

#[test]
fn a_valid_file_with_the_wrong_checksum_is_not_cached() {
    // A real gzip of a real IDX file, but not the one asked for (test labels, not train).
    let other = std::fs::read(subset_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let server = Server::start(vec![("/", vec![Reply::Body(other)])]);
    let dir = tempfile::tempdir().unwrap();
    let err = fetcher(vec![server.base.clone()])
        .fetch(&labels_file(), dir.path())
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Download { .. }));
    assert!(text.contains("checksum mismatch"), "{text}");
    // A checksum mismatch is not retried: the mirror will not change its mind.
    assert_eq!(server.requests().len(), 1);
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[test]
fn transient_faults_are_retried_and_permanent_ones_skip_the_mirror() {
    let good = good_gz();
    let server = Server::start(vec![
        ("/gone/", vec![Reply::Status(404)]),
        (
            "/flaky/",
            vec![
                Reply::Status(500),
                Reply::CutShort(good.clone(), good.len() / 2),
                Reply::Body(good.clone()),
            ],
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mirrors = vec![
        format!("{}/gone/", server.base),
        format!("{}/flaky/", server.base),
    ];
    fetcher(mirrors).fetch(&labels_file(), dir.path()).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(requests[0].starts_with("/gone/"));
    assert!(requests[1..].iter().all(|r| r.starts_with("/flaky/")));
    assert_eq!(listing(dir.path()), ["train-labels-idx1-ubyte.gz"]);
}

#[test]
fn a_stalled_mirror_times_out_and_the_next_is_tried() {
    let server = Server::start(vec![
        ("/stall/", vec![Reply::Stall]),
        ("/good/", vec![Reply::Body(good_gz())]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut f = fetcher(vec![
        format!("{}/stall/", server.base),
        format!("{}/good/", server.base),
    ]);
    f.retries = 0;
    let start = std::time::Instant::now();
    f.fetch(&labels_file(), dir.path()).unwrap();
    // The 1 s timeout fired once; far less than the 60 s the server would hold the line.
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(listing(dir.path()), ["train-labels-idx1-ubyte.gz"]);
}

#[test]
fn a_404_is_asked_once_a_503_until_the_retries_run_out() {
    let server = Server::start(vec![
        ("/gone/", vec![Reply::Status(404)]),
        ("/busy/", vec![Reply::Status(503)]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mirrors = vec![
        format!("{}/gone/", server.base),
        format!("{}/busy/", server.base),
    ];
    let err = fetcher(mirrors)
        .fetch(&labels_file(), dir.path())
        .unwrap_err();
    let requests = server.requests();
    let to = |prefix: &str| requests.iter().filter(|r| r.starts_with(prefix)).count();
    // retries: 2, so the transient 503 is asked three times; the 404 once.
    assert_eq!((to("/gone/"), to("/busy/")), (1, 3), "{requests:?}");
    let text = err.to_string();
    assert!(
        text.contains(
            "/busy/train-labels-idx1-ubyte.gz: HTTP 503 Service Unavailable (3 attempts)"
        ),
        "{text}"
    );
    assert!(
        text.contains("/gone/train-labels-idx1-ubyte.gz: HTTP 404 Not Found\n"),
        "{text}"
    );
}

#[test]
fn a_refused_connection_is_not_retried() {
    // Bound, then closed: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut f = fetcher(vec![format!("http://127.0.0.1:{port}/")]);
    f.backoff = Duration::from_secs(5);
    let start = std::time::Instant::now();
    let err = f.fetch(&labels_file(), dir.path()).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "retried: {:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains(": connection refused\n"), "{err}");
}

#[test]
fn when_every_mirror_fails_the_error_names_each_once_and_says_what_to_do() {
    let server = Server::start(vec![("/", vec![Reply::Status(404)])]);
    let dir = tempfile::tempdir().unwrap();
    let mirrors = vec![
        format!("{}/a/", server.base),
        "file:///nonexistent/mnist/".to_string(),
    ];
    let err = fetcher(mirrors)
        .fetch(&labels_file(), dir.path())
        .unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("could not download train-labels-idx1-ubyte.gz into "),
        "{text}"
    );
    assert!(
        lines[1].ends_with("/a/train-labels-idx1-ubyte.gz: HTTP 404 Not Found"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("  file:///nonexistent/mnist/train-labels-idx1-ubyte.gz: "),
        "{text}"
    );
    assert!(
        text.contains("--data-dir") && text.contains("--mirror file:///"),
        "{text}"
    );
    assert_eq!(lines.len(), 5, "{text}");
    assert!(matches!(err, Error::Download { .. }));
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn leftovers_of_a_killed_download_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    // What a download killed mid-way leaves: a hidden, never-renamed temporary.
    let leftover = dir.path().join(".train-labels-idx1-ubyte.gz.Xy12ab.part");
    std::fs::write(&leftover, b"half a file").unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&leftover)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let mirror = format!("file://{}/", subset_dir().display());
    fetcher(vec![mirror])
        .fetch(&labels_file(), dir.path())
        .unwrap();
    assert_eq!(listing(dir.path()), ["train-labels-idx1-ubyte.gz"]);
}
