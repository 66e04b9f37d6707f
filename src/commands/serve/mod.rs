//! `mnist-cnn serve`: a page to draw digits on, and the JSON API behind it, from the binary.
//!
//! axum on tokio. The accept loop only parses requests; a declared `Content-Length` over the
//! limit is answered 413 before the body is read, and each body is read with a time limit and
//! a size limit. All work on a picture runs on tokio's blocking pool in lanes: its header is
//! read (within [`digits`]' allocation limit for ancillary chunks) in the small lane, a
//! semaphore as wide as the machine, and its declared size checked before any pixel is decoded
//! (over [`digits::MAX_PIXELS`]: 413); large pictures (photos) then move to a narrower lane
//! with a bounded queue (full: 503 with `Retry-After`), so that expensive decoding never holds
//! every core. A request's whole time is bounded too. Clients learn the model's file name,
//! never the server's paths.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::digits::{self, Unreadable};
use crate::engine::{self, Backend, Forward};
use crate::error::{Error, Result};
use crate::formats::{self, Format};
use crate::network::PARAMETERS;

/// Pictures that declare more pixels than this (a megapixel) go to the large lane.
const LARGE_PIXELS: u64 = 1 << 20;
/// Large pictures admitted at once, waiting or in preparation; past this, 503.
const LARGE_QUEUE: usize = 4;
/// A request's whole time, upload included; past it, 503 (the work it started still ends).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Uploads above this are refused (a phone photo is 2-4 MB).
pub const MAX_BODY: usize = 5 << 20;
const PAGE: &str = include_str!("index.html");

/// What `serve` is asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub model: PathBuf,
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// A client must deliver its whole upload within this, or is answered 408.
    pub upload_timeout: Duration,
    pub backend: Backend,
}

struct App {
    net: Box<dyn Forward>,
    model: String,
    /// The served model as `export` writes it to ONNX, for `GET /api/model.onnx`.
    onnx: Bytes,
    backend: Backend,
    /// Small pictures prepared and read at once: one per core.
    small: Arc<Semaphore>,
    /// Large pictures prepared at once: half the cores (one of two), so small ones always
    /// find one free.
    large: Arc<Semaphore>,
    /// Large pictures admitted, waiting or in preparation.
    large_queue: Arc<Semaphore>,
    upload_timeout: Duration,
}

/// `mnist-cnn serve MODEL`: prints the URL to `out`, serves until Ctrl-C, then returns.
pub fn run(opts: &ServeOptions, out: &mut dyn Write) -> Result<()> {
    opts.backend.available()?;
    let model = formats::load(&opts.model)?;
    let onnx = Bytes::from(formats::export(&model, Format::Onnx)?);
    let net = engine::forward(opts.backend, model.params)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let app = Arc::new(App {
        net,
        model: file_name(&opts.model),
        onnx,
        backend: opts.backend,
        small: Arc::new(Semaphore::new(workers)),
        large: Arc::new(Semaphore::new((workers / 2).max(1))),
        large_queue: Arc::new(Semaphore::new(LARGE_QUEUE)),
        upload_timeout: opts.upload_timeout,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Network {
            what: "cannot start the server's runtime",
            reason: e.to_string(),
        })?;
    runtime.block_on(async {
        let address = format!("{}:{}", opts.host, opts.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| Error::Usage(format!("cannot listen on {address}: {e}")))?;
        let local: SocketAddr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the address of", &address, e))?;
        writeln!(
            out,
            "Serving {} on http://{local}/ (Ctrl-C stops)",
            crate::escape::escaped(&app.model)
        )
        .and_then(|()| out.flush())
        .map_err(Error::stdout)?;
        axum::serve(listener, router(app))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| Error::Network {
                what: "the server failed",
                reason: e.to_string(),
            })
    })
}

/// The model's name as clients see it: the file's name, without the directories above it.
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

fn router(app: Arc<App>) -> Router {
    let only = |route: MethodRouter<Arc<App>>| route.fallback(wrong_method);
    Router::new()
        .route("/", only(get(page)))
        .route("/api/model", only(get(model_info)))
        .route("/api/model.onnx", only(get(model_onnx)))
        .route("/api/predict", only(post(predict)))
        .fallback(not_found)
        .with_state(app)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn model_info(State(app): State<Arc<App>>) -> Response {
    let info = json!({
        "file": app.model,
        "parameters": PARAMETERS,
        "backend": app.backend.name(),
    });
    (StatusCode::OK, axum::Json(info)).into_response()
}

async fn model_onnx(State(app): State<Arc<App>>) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream"),
        (
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"mnist-cnn.onnx\"",
        ),
    ];
    (StatusCode::OK, headers, app.onnx.clone()).into_response()
}

async fn predict(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    if let Some(declared) = declared_length(&headers).filter(|&n| n > MAX_BODY as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the image declares {declared} bytes, over the limit of {MAX_BODY}"),
        );
    }
    let bytes = match read_body(body, app.upload_timeout).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let work = {
        let app = app.clone();
        async move {
            // The header alone, in the small lane: an oversized picture is refused before any
            // pixel is decoded, and what its ancillary chunks cost is bounded and counted.
            let slot = app.small.clone().acquire_owned().await.ok()?;
            let header = {
                let bytes = bytes.clone();
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    digits::declared_pixels(&bytes)
                })
            };
            let pixels = match header.await {
                Ok(Ok(pixels)) => pixels,
                Ok(Err(reason)) => return Some(Err(Refusal::Unreadable(reason))),
                Err(e) => return Some(Err(Refusal::Failed(e.to_string()))),
            };
            let (lane, admitted) = if pixels > LARGE_PIXELS {
                let Ok(admitted) = app.large_queue.clone().try_acquire_owned() else {
                    return Some(Err(Refusal::Busy("too many large pictures at once")));
                };
                (app.large.clone(), Some(admitted))
            } else {
                (app.small.clone(), None)
            };
            let slot = lane.acquire_owned().await.ok()?;
            // The permits go with the work: a request that times out still holds its lane
            // until its preparation ends.
            let held: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>) = (slot, admitted);
            let task = tokio::task::spawn_blocking(move || {
                let _held = held;
                classify(app.net.as_ref(), &bytes)
            });
            Some(match task.await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(reason)) => Err(Refusal::Unreadable(reason)),
                Err(e) => Err(Refusal::Failed(e.to_string())),
            })
        }
    };
    let left = REQUEST_TIMEOUT.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, work).await {
        Err(_) => busy("the request took too long"),
        Ok(None) => error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"),
        Ok(Some(Ok(answer))) => (StatusCode::OK, axum::Json(answer)).into_response(),
        Ok(Some(Err(Refusal::Unreadable(reason)))) => refuse(&reason),
        Ok(Some(Err(Refusal::Busy(reason)))) => busy(reason),
        Ok(Some(Err(Refusal::Failed(e)))) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// Why a picture was not read.
enum Refusal {
    Unreadable(Unreadable),
    /// Its lane is full: 503.
    Busy(&'static str),
    /// The work itself failed (a panic in the pool): 500.
    Failed(String),
}

/// The body's length as the request declares it, if it does.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The status a picture that gives no digit is answered with.
pub fn status_of(reason: &Unreadable) -> StatusCode {
    match reason {
        Unreadable::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Unreadable::Empty | Unreadable::Blank | Unreadable::Vanished => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Unreadable::Format(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Unreadable::NoIndex(_) | Unreadable::IndexPast { .. } | Unreadable::Io(_) => {
            StatusCode::BAD_REQUEST
        }
    }
}

fn refuse(reason: &Unreadable) -> Response {
    error(status_of(reason), &reason.to_string())
}

/// 503, to be tried again in a second.
fn busy(reason: &str) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, reason);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// The whole upload, within the time and size limits.
async fn read_body(body: Body, limit: Duration) -> std::result::Result<Bytes, Response> {
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY)).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the upload took too long",
        )),
        Ok(Err(e)) if is_too_large(&e) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the image is over the limit of {MAX_BODY} bytes"),
        )),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("the upload was cut short ({e})"),
        )),
        Ok(Ok(bytes)) if bytes.is_empty() => Err(error(
            StatusCode::BAD_REQUEST,
            "the request has no image in its body",
        )),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

fn is_too_large(e: &axum::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The digit a picture shows, as `predict` reads pictures, or why it shows none.
fn classify(net: &dyn Forward, bytes: &[u8]) -> std::result::Result<Value, Unreadable> {
    let input = digits::read(bytes)?;
    let guess = digits::classify(net, std::slice::from_ref(&input))[0];
    Ok(json!({
        "digit": guess.digit,
        "probabilities": guess.probabilities,
        "input28": input,
    }))
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page: try / or /api/predict")
}

async fn wrong_method() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "wrong method: GET /, /api/model and /api/model.onnx, POST /api/predict",
    )
}

fn error(status: StatusCode, reason: &str) -> Response {
    let body = json!({ "error": reason }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
