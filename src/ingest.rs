//! Ingest: the HTTP server. HTTP/1.1 and h2c on one port (`server`: the accept loop, its
//! bounds on connections and slow senders, graceful shutdown), dispatch by path (`dispatch`;
//! upstream routing is `crate::route`), the operational endpoints (`/metrics`, `/-/healthy`,
//! `/-/ready`, `/-/reload`). The write path itself is in `write`, reading its body in `body`.

pub mod body;
mod config;
pub mod metrics;
mod server;
mod state;
mod tenant;
pub mod write;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

pub use config::ServerConfig;
pub use server::serve;
pub(crate) use state::flush_overflow;
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
        "/" => only_get(&req, || {
            if crate::status::wants_html(req.headers()) {
                crate::status::page(&state)
            } else {
                text_response(StatusCode::OK, INDEX)
            }
        }),
        "/runbook" => only_get(&req, crate::status::runbook),
        _ => text_response(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    Ok(resp)
}

const INDEX: &str = concat!(
    "cardguard ",
    env!("CARGO_PKG_VERSION"),
    ": a cardinality-guarding remote-write proxy\n\n",
    "POST /api/v1/write   remote write 1.0 and 2.0 (alias /api/v1/push)\n",
    "GET  /               this list; browsers (Accept: text/html) get the status page\n",
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

#[cfg(test)]
mod tests;
