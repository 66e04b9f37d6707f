//! `mnist-cnn serve`: a page to draw digits on, and the JSON API behind it, from the binary.
//!
//! axum on tokio. The accept loop only parses requests; each body is read with a time limit
//! and a size limit, and each prediction runs on tokio's blocking pool behind a semaphore as
//! wide as the machine, so a slow client or a burst of requests never stalls the others.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::engine::{self, Backend, Forward};
use crate::error::{Error, Result};
use crate::metrics;
use crate::network::{NUM_CLASSES, PARAMETERS, PIXELS};

/// Uploads above this are refused (a phone photo is 2-4 MB).
pub const MAX_BODY: usize = 5 << 20;
/// A client must deliver its whole upload within this.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const PAGE: &str = include_str!("index.html");

/// What `serve` is asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub model: PathBuf,
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    pub backend: Backend,
}

struct App {
    net: Box<dyn Forward>,
    model: String,
    backend: Backend,
    /// Predictions in flight at once.
    slots: Semaphore,
}

/// `mnist-cnn serve MODEL`: prints the URL to `out`, serves until Ctrl-C, then returns.
pub fn run(opts: &ServeOptions, out: &mut dyn Write) -> Result<()> {
    opts.backend.device()?;
    let net = engine::forward(opts.backend, crate::model::read_params(&opts.model)?)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let app = Arc::new(App {
        net,
        model: opts.model.display().to_string(),
        backend: opts.backend,
        slots: Semaphore::new(workers),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Backend(format!("cannot start the server's runtime: {e}")))?;
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
            app.model
        )
        .and_then(|()| out.flush())
        .map_err(Error::stdout)?;
        axum::serve(listener, router(app))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| Error::Backend(format!("the server failed: {e}")))
    })
}

fn router(app: Arc<App>) -> Router {
    let only = |route: MethodRouter<Arc<App>>| route.fallback(wrong_method);
    Router::new()
        .route("/", only(get(page)))
        .route("/api/model", only(get(model_info)))
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

async fn predict(State(app): State<Arc<App>>, body: Body) -> Response {
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let Ok(_slot) = app.slots.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    let work = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || classify(app.net.as_ref(), &bytes))
    };
    match work.await {
        Ok(Ok(answer)) => (StatusCode::OK, axum::Json(answer)).into_response(),
        Ok(Err((status, reason))) => error(status, &reason),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The whole upload, within the time and size limits.
async fn read_body(body: Body) -> std::result::Result<Bytes, Response> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
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

/// The digit an image shows, as `predict` reads pictures: the answer, or a 4xx and why.
fn classify(net: &dyn Forward, bytes: &[u8]) -> std::result::Result<Value, (StatusCode, String)> {
    let picture = image::load_from_memory(bytes).map_err(|e| {
        let reason = format!("not a PNG, JPEG or PGM image ({e})");
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, reason)
    })?;
    let input = crate::predict::prepare(&picture.to_luma8())
        .map_err(|reason| (StatusCode::UNPROCESSABLE_ENTITY, reason))?;
    debug_assert_eq!(input.len(), PIXELS);
    let pixels: Vec<f32> = crate::data::batch::scale(&input).collect();
    let logits = net.logits(&pixels);
    let mut probs = [0f64; NUM_CLASSES];
    metrics::softmax(&logits, &mut probs);
    Ok(json!({
        "digit": metrics::argmax(&logits),
        "probabilities": probs.iter().map(|&p| p as f32).collect::<Vec<f32>>(),
        "input28": input,
    }))
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page: try / or /api/predict")
}

async fn wrong_method() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "wrong method: GET / and /api/model, POST /api/predict",
    )
}

fn error(status: StatusCode, reason: &str) -> Response {
    let body = json!({ "error": reason }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
