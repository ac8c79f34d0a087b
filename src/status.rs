//! The status page at `/`: what a person opening cardguard in a browser needs to see on day
//! one, server-rendered from the same state `/metrics` and `/api/v1/cardinality` read.
//!
//! - `view` gathers it (the guard's report, upstreams, rule groups, the config) into plain data;
//! - `history` keeps a small bounded ring of counter snapshots, fed by the guard ticker and by
//!   each render, and turns counters into rates and explosions;
//! - `html` renders it as one self-contained document.
//!
//! `curl /` (which accepts `*/*`) keeps getting the plain endpoint list; a client that prefers
//! `text/html`, as browsers do, gets the page (`wants_html`). The runbook is served at
//! `/runbook` so that its link works on an air-gapped network.

pub mod history;
pub mod html;
pub mod view;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;

pub use history::History;

use crate::ingest::State;

/// `docs/runbook.md`, compiled in.
const RUNBOOK: &str = include_str!("../docs/runbook.md");

/// Whether the client prefers HTML: a `text/html` (or XHTML) range with a quality at least
/// that of `text/plain`. `*/*` alone (curl, Prometheus-style tooling) is not a preference.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let mut html: Option<f32> = None;
    let mut plain: Option<f32> = None;
    for value in headers.get_all(ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "text/html" | "application/xhtml+xml" => &mut html,
                "text/plain" => &mut plain,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |s| s.max(q)));
        }
    }
    match (html, plain) {
        (Some(h), p) => h > 0.0 && h >= p.unwrap_or(0.0),
        (None, _) => false,
    }
}

/// `GET /` for a browser.
pub fn page(state: &State) -> Response<Full<Bytes>> {
    let view = view::gather(state, now_ms());
    respond(html::render(&view), "text/html; charset=utf-8")
}

/// `GET /runbook`.
pub fn runbook() -> Response<Full<Bytes>> {
    respond(RUNBOOK.to_string(), "text/plain; charset=utf-8")
}

/// Sample the counters between renders, so that rates and the new-series baseline exist when
/// someone opens the page. Called by the guard ticker.
pub fn observe(state: &State) {
    let now = now_ms();
    state.status.observe(view::observation(state, now));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn respond(body: String, ctype: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests;
