//! Ingest: the HTTP server. HTTP/1.1 and h2c on one port, or TLS with HTTP/2 by ALPN
//! (`server`: the accept loop, its bounds on connections and slow senders, graceful
//! shutdown), the web config's TLS and basic auth (`web`), dispatch by path (`dispatch`;
//! upstream routing is `crate::route`), the operational endpoints (`/metrics`, `/-/healthy`,
//! `/-/ready`, `/-/reload`). The write path itself is in `write`, reading its body in `body`.

pub mod body;
mod config;
pub mod metrics;
mod server;
mod state;
mod tenant;
pub mod web;
pub mod write;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

pub use config::ServerConfig;
pub use server::serve;
pub(crate) use state::flush_overflow;
pub use state::{
    downsample_janitor, guard_ticker, overflow_flusher, rule_evaluator, rule_sender,
    shared_maintainer, snapshotter, unix_now_ms, ConfigSource, State,
};
use write::text_response;

/// Authenticate one HTTP request (when the web config has users: every endpoint, as in
/// Prometheus) and hand it to the handler of its path.
pub async fn dispatch(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let web = state.web.current();
    let mut resp = match &web {
        Some(w) if !w.users.is_empty() => {
            match state
                .web
                .authenticate(w, req.headers().get(AUTHORIZATION))
                .await
            {
                Ok(user) => {
                    if w.config.tenant_from_user {
                        tenant::set_user(&state.config(), req.headers_mut(), &user);
                    }
                    route(state, req).await
                }
                Err(_) => unauthorized(&state, req.uri().path()),
            }
        }
        _ => route(state, req).await,
    };
    if let Some(w) = &web {
        for (name, value) in &w.config.headers {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(resp)
}

/// 401 as the exporter toolkit answers it. Counted among write requests too when it was one.
fn unauthorized(state: &State, path: &str) -> Response<Full<Bytes>> {
    if matches!(path, "/api/v1/write" | "/api/v1/push") {
        state
            .metrics
            .ingest
            .write_requests
            .with_label_values(&["401"])
            .inc();
    }
    let mut r = text_response(StatusCode::UNAUTHORIZED, "Unauthorized\n");
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    r
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match path {
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
            if req.method() != Method::POST && req.method() != Method::PUT {
                method_not_allowed("POST, PUT")
            } else if !state.web.enable_lifecycle {
                // As Prometheus answers without --web.enable-lifecycle.
                text_response(StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n")
            } else {
                match state.reload().await {
                    Ok(()) => text_response(StatusCode::OK, "configuration reloaded\n"),
                    Err(e) => text_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("failed to reload config: {e}\n"),
                    ),
                }
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
    }
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
    "POST /-/reload       reload the configuration (with --web.enable-lifecycle)\n",
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
