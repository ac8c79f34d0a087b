//! Ingest: the HTTP server. HTTP/1.1 and h2c on one port, dispatch by path (`dispatch`; upstream
//! routing is `crate::route`), the operational endpoints (`/metrics`, `/-/healthy`, `/-/ready`,
//! `/-/reload`) and graceful shutdown. The write path itself is in `write`.

pub mod metrics;
mod state;
mod tenant;
pub mod write;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use state::{
    downsample_janitor, guard_ticker, overflow_flusher, rule_evaluator, rule_sender, ConfigSource,
    State,
};
use write::text_response;

/// Hand one HTTP request to the handler of its path.
pub async fn dispatch(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let resp = match path {
        "/api/v1/write" | "/api/v1/push" => write::handle(&state, req).await,
        "/metrics" => only_get(&req, || {
            let (ctype, body) = state.telemetry.encode();
            let mut r = text_response(StatusCode::OK, body);
            if let Ok(v) = HeaderValue::from_str(&ctype) {
                r.headers_mut().insert(CONTENT_TYPE, v);
            }
            r
        }),
        "/-/healthy" => only_get(&req, || {
            text_response(StatusCode::OK, "cardguard is Healthy.\n")
        }),
        "/-/ready" => only_get(&req, || {
            if state.is_ready() {
                text_response(StatusCode::OK, "cardguard is Ready.\n")
            } else {
                text_response(StatusCode::SERVICE_UNAVAILABLE, "cardguard is not ready.\n")
            }
        }),
        "/-/reload" => {
            if req.method() == Method::POST || req.method() == Method::PUT {
                match state.reload().await {
                    Ok(()) => text_response(StatusCode::OK, "configuration reloaded\n"),
                    Err(e) => text_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("failed to reload config: {e}\n"),
                    ),
                }
            } else {
                method_not_allowed("POST, PUT")
            }
        }
        "/api/v1/cardinality" => only_get(&req, || cardinality(&state)),
        "/" => only_get(&req, || text_response(StatusCode::OK, INDEX)),
        _ => text_response(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    Ok(resp)
}

const INDEX: &str = concat!(
    "cardguard ",
    env!("CARGO_PKG_VERSION"),
    ": a cardinality-guarding remote-write proxy\n\n",
    "POST /api/v1/write   remote write 1.0 and 2.0 (alias /api/v1/push)\n",
    "GET  /metrics        cardguard's own metrics\n",
    "GET  /api/v1/cardinality  per service: budget, active, demand, drops, top offenders\n",
    "GET  /-/healthy      liveness\n",
    "GET  /-/ready        readiness\n",
    "POST /-/reload       reload the configuration\n",
);

/// `GET /api/v1/cardinality`: the guard's report as JSON.
fn cardinality(state: &State) -> Response<Full<Bytes>> {
    let config = state.config();
    let (status, body) = match &config.guard {
        Some(g) => match serde_json::to_vec_pretty(&state.guard.report(g)) {
            Ok(b) => (StatusCode::OK, b),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{{\"error\":\"{e}\"}}").into_bytes(),
            ),
        },
        None => (
            StatusCode::NOT_FOUND,
            br#"{"error":"the guard is off: configure guard: or pass --max-series-per-service"}"#
                .to_vec(),
        ),
    };
    let mut r = text_response(status, body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn only_get(
    req: &Request<Incoming>,
    f: impl FnOnce() -> Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        f()
    } else {
        method_not_allowed("GET, HEAD")
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// Slow senders get this long to deliver request headers (slowloris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accept connections until `shutdown` resolves, then stop accepting and give in-flight
/// requests up to the configured grace period to finish.
pub async fn serve(state: Arc<State>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    state.set_ready(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let svc = service_fn(move |req| dispatch(state.clone(), req));
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    state.set_ready(false);
    drop(listener);
    let grace = state.config().server.shutdown_grace;
    tracing::info!("shutting down; waiting up to {grace:?} for in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after {grace:?}; closing anyway");
    }
}

#[cfg(test)]
mod tests;
