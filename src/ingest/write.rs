//! `POST /api/v1/write`: content negotiation and size caps before any decoding, then the
//! pipeline, then the forwarder; every outcome mapped to a status in `IngestError::response`.

use std::time::Instant;

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::body::{self, BodyError};
use super::state::State;
use crate::forward::{FailureClass, ForwardError, CONFIG_ERROR_RETRY_AFTER};
use crate::pipeline::{self, PipelineError};
use crate::wire::{ItemCounts, Version, WireError};

impl From<BodyError> for IngestError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => IngestError::BodyTooLarge { limit },
            e => IngestError::Body(e),
        }
    }
}

/// Everything that can end a write request without a 2xx.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("method {0} not allowed; remote write uses POST")]
    MethodNotAllowed(Method),
    #[error("unsupported Content-Encoding {0:?}; remote write uses snappy")]
    UnsupportedEncoding(String),
    #[error("unsupported Content-Type {0:?}; expected application/x-protobuf (proto=prometheus.WriteRequest or io.prometheus.write.v2.Request)")]
    UnsupportedContentType(String),
    #[error("request body larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The body did not arrive whole, in time or fast enough, or found no room to arrive.
    #[error(transparent)]
    Body(BodyError),
    /// What the sender sent cannot be forwarded: malformed, or refused by the schema.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("too many requests in flight ({0}); retry later")]
    Overloaded(usize),
    #[error("no upstream configured")]
    NoUpstream,
    #[error("internal error while processing the request (logged); retry")]
    Internal,
    #[error(transparent)]
    Upstream(#[from] ForwardError),
    #[error(transparent)]
    Tenant(#[from] crate::guard::TenantRefused),
}

impl IngestError {
    /// The one place where failures become HTTP statuses (docs/protocol.md §3 and §6).
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::UnsupportedEncoding(_) | IngestError::UnsupportedContentType(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            IngestError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Pipeline(_) => StatusCode::BAD_REQUEST,
            IngestError::Body(e) => match e {
                BodyError::Read(_) | BodyError::TooLarge { .. } => StatusCode::BAD_REQUEST,
                BodyError::Timeout(_) | BodyError::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
                BodyError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            IngestError::Overloaded(_) | IngestError::NoUpstream => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            // An upstream's refusal of the data (400, 409, 422) and its 429 go back as they
            // are; for everything else, a 5xx or an upstream refusing cardguard's own request
            // (credentials, URL, size: FailureClass::Config) alike, the remedy is to retry.
            IngestError::Upstream(e @ ForwardError::Status { status, .. })
                if matches!(
                    e.class(),
                    FailureClass::Refused | FailureClass::TooManyRequests
                ) =>
            {
                *status
            }
            IngestError::Upstream(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Tenant(crate::guard::TenantRefused::NotUtf8 { .. }) => {
                StatusCode::BAD_REQUEST
            }
            IngestError::Tenant(_) => StatusCode::FORBIDDEN,
        }
    }

    /// A bounded label for `cardguard_write_requests_rejected_total`.
    fn reason(&self) -> &'static str {
        match self {
            IngestError::MethodNotAllowed(_) => "method",
            IngestError::UnsupportedEncoding(_) => "content_encoding",
            IngestError::UnsupportedContentType(_) => "content_type",
            IngestError::BodyTooLarge { .. } => "body_too_large",
            IngestError::Body(BodyError::Busy(_)) => "body_reading_full",
            IngestError::Body(_) => "body_read",
            IngestError::Pipeline(PipelineError::Wire(w)) => match w {
                WireError::SnappyFramed
                | WireError::SnappyPreamble
                | WireError::SnappyTooLarge { .. }
                | WireError::SnappyCorrupt(_) => "snappy",
                WireError::Protobuf { .. } => "protobuf",
                WireError::InvalidHistogram { .. } => "invalid_histogram",
                _ => "invalid_series",
            },
            IngestError::Pipeline(PipelineError::Schema(_)) => "schema",
            IngestError::Pipeline(PipelineError::Output(_)) => "output_too_large",
            IngestError::Overloaded(_) => "overloaded",
            IngestError::NoUpstream => "no_upstream",
            IngestError::Internal => "internal",
            IngestError::Upstream(_) => "upstream",
            IngestError::Tenant(_) => "tenant",
        }
    }

    fn response(&self, version: Option<Version>) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = match self {
            IngestError::Upstream(e) if e.class() == FailureClass::Config => {
                Bytes::from(format!("{}\n", e.config_error_message()))
            }
            // A 4xx about the data goes back as the upstream wrote it.
            IngestError::Upstream(ForwardError::Status { body, status, .. })
                if status.is_client_error() && !body.is_empty() =>
            {
                body.clone()
            }
            e => Bytes::from(format!("{e}\n")),
        };
        let mut resp = text_response(status, body);
        let h = resp.headers_mut();
        match self {
            IngestError::MethodNotAllowed(_) => {
                h.insert(ALLOW, HeaderValue::from_static("POST"));
            }
            IngestError::Upstream(e) if e.class() == FailureClass::Config => {
                h.insert(RETRY_AFTER, CONFIG_ERROR_RETRY_AFTER);
            }
            IngestError::Body(BodyError::Busy(_)) => {
                h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            IngestError::Upstream(ForwardError::Status {
                retry_after: Some(ra),
                ..
            }) => {
                h.insert(RETRY_AFTER, ra.clone());
            }
            _ => {}
        }
        if version == Some(Version::V2) {
            // "≤ what was sent" on a failure: nothing is known written (docs/protocol.md §2).
            written_headers(h, &ItemCounts::default());
        }
        resp
    }
}

pub(super) fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn written_headers(h: &mut HeaderMap, c: &ItemCounts) {
    h.insert(
        "x-prometheus-remote-write-samples-written",
        c.samples.into(),
    );
    h.insert(
        "x-prometheus-remote-write-histograms-written",
        c.histograms.into(),
    );
    h.insert(
        "x-prometheus-remote-write-exemplars-written",
        c.exemplars.into(),
    );
}

/// Handle one write request end to end.
pub async fn handle(state: &State, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
    let t = &state.metrics.ingest;
    let version = negotiate(req.method(), req.headers()).ok();
    let resp = match write(state, req).await {
        Ok(resp) => resp,
        Err(e) => {
            t.rejected_requests.with_label_values(&[e.reason()]).inc();
            match &e {
                IngestError::Internal => tracing::error!("write request failed: {e}"),
                // The forwarder logs these once per upstream when they start and stop.
                IngestError::Upstream(u) if u.class() == FailureClass::Config => {
                    tracing::debug!("write request not acknowledged: {e}")
                }
                IngestError::Upstream(_) | IngestError::Overloaded(_) => {
                    tracing::warn!("write request not acknowledged: {e}")
                }
                _ => tracing::debug!("write request refused: {e}"),
            }
            e.response(version)
        }
    };
    t.write_requests
        .with_label_values(&[resp.status().as_str()])
        .inc();
    resp
}

async fn write(
    state: &State,
    req: http::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, IngestError> {
    let version_in = negotiate(req.method(), req.headers())?;
    let config = state.config();
    let limit = config.limits.max_body_bytes;
    if let Some(len) = content_length(req.headers()) {
        if len > limit as u64 {
            return Err(IngestError::BodyTooLarge { limit });
        }
    }
    // The tenant is read once (and checked against `guard.tenants`), matched by routes and
    // passed upstream.
    let routing = config.routing.clone().ok_or(IngestError::NoUpstream)?;
    let super::tenant::Tenant {
        guard: guard_tenant,
        route: route_tenant,
    } = super::tenant::read(&config, &routing, req.headers())?;
    let route_tenant_str = route_tenant
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let m = &state.metrics;
    // Read outside the processing permits: a slow body holds only the room its bytes take
    // (`body`), so slow senders cannot starve the complete bodies of permits.
    let pace = body::Pace::new(&config.server, limit);
    let body = body::read(req.into_body(), pace, &state.reading, &m.server)
        .await
        .map_err(IngestError::from)?;
    m.ingest.received_bytes.inc_by(body.len() as u64);
    let _permit = state
        .inflight
        .clone()
        .try_acquire_owned()
        .map_err(|_| IngestError::Overloaded(config.server.max_inflight_requests))?;
    m.ingest.requests_in_flight.inc();
    let _gauge = scopeguard(|| m.ingest.requests_in_flight.dec());

    let rule_plan = state.rules.plan();
    let ctx = pipeline::Context {
        routing: crate::route::Plan {
            routing: &routing,
            tenant: route_tenant_str.as_deref(),
            downsampler: &state.downsampler,
        },
        version_in,
        limits: &config.limits.wire,
        guard: config.guard.as_ref().map(|g| (&*state.guard, g)),
        schema: config.schema.as_ref(),
        relabel: &config.relabel,
        tenant: guard_tenant.as_deref(),
        now_ms: super::state::unix_now_ms(),
        rules: state
            .rules
            .tap(&rule_plan, &config.rules)
            .map(|t| t.for_tenant(guard_tenant.as_deref())),
        lazy_labels: true,
        guessed_runs: true,
    };
    let started = Instant::now();
    // A bug in a stage must cost one request a 500, never a worker thread's scratch or the
    // connection; Prometheus retries a 500.
    let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pipeline::prepare(&body, &ctx)
    }))
    .map_err(|_| IngestError::Internal)??;
    m.ingest
        .decode_seconds
        .observe(started.elapsed().as_secs_f64());
    m.add_prepared(&prepared, &state.rules.metrics);

    send_routed(state, &routing, prepared.routed, route_tenant).await?;

    let mut resp = text_response(StatusCode::NO_CONTENT, Bytes::new());
    resp.headers_mut().remove(CONTENT_TYPE);
    if version_in == Version::V2 {
        // Everything accepted counts as written, including what policy filtered out: a v2
        // sender treats a shortfall as a failed write (docs/protocol.md §2, "Written headers").
        written_headers(resp.headers_mut(), &prepared.received);
    }
    Ok(resp)
}

/// Send every part of a routed request; `Ok` only when every upstream acknowledged. The
/// downsampling decisions are committed then, so a retry after a failure decides the same.
async fn send_routed(
    state: &State,
    routing: &std::sync::Arc<crate::route::Routing>,
    routed: crate::route::Routed,
    tenant: Option<HeaderValue>,
) -> Result<(), IngestError> {
    let t = &state.metrics.forward;
    t.route_relabel_dropped_series
        .inc_by(routed.route_relabel_dropped);
    let count_dropped = |upstream: usize, dropped: &crate::wire::TranslationDrops| {
        let name = &routing.upstreams[upstream].name;
        for (what, n) in dropped.by_kind() {
            if n > 0 {
                t.translation_dropped
                    .with_label_values(&[name.as_str(), what])
                    .inc_by(n);
            }
        }
    };
    let results =
        crate::route::send::send_all(&state.forwarder, routing, &routed.parts, tenant).await;
    let mut failures = Vec::new();
    for (part, result) in routed.parts.iter().zip(results) {
        match result {
            Ok(()) => {
                count_dropped(part.upstream, &part.translation_dropped);
                t.forwarded_bytes.inc_by(part.body.len() as u64);
                t.forwarded.add(&part.forwarded);
                if part.passthrough {
                    t.passthrough_requests.inc();
                }
            }
            Err(e) => {
                let upstream = &routing.upstreams[part.upstream].name;
                if e.class() == FailureClass::Config {
                    tracing::debug!(%upstream, "part of a write request not acknowledged: {e}");
                } else {
                    tracing::warn!(%upstream, "part of a write request not acknowledged: {e}");
                }
                failures.push(e);
            }
        }
    }
    let answer = crate::route::send::answer(failures);
    // Commit unless the sender will retry: after a final 4xx it will not, and what the other
    // upstreams took stays there.
    if answer.as_ref().is_none_or(|e| !e.class().is_retryable()) {
        state
            .downsampler
            .commit(&routed.pending, super::state::unix_now_ms());
        t.downsample_series.set(state.downsampler.len() as i64);
    }
    if let Some(e) = answer {
        return Err(IngestError::Upstream(e));
    }
    for (upstream, dropped) in &routed.untranslatable {
        count_dropped(*upstream, dropped);
    }
    for (r, n) in &routed.downsampled {
        if let Some(route) = routing.routes.get(*r) {
            t.downsampled_samples
                .with_label_values(&[&route.name])
                .inc_by(*n);
        }
    }
    Ok(())
}

/// Method, Content-Encoding and Content-Type, all checked before the body is touched.
pub fn negotiate(method: &Method, h: &HeaderMap) -> Result<Version, IngestError> {
    if method != Method::POST {
        return Err(IngestError::MethodNotAllowed(method.clone()));
    }
    if let Some(enc) = h.get(CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("").trim();
        if !enc.is_empty() && !enc.eq_ignore_ascii_case("snappy") {
            return Err(IngestError::UnsupportedEncoding(enc.to_string()));
        }
    }
    match h.get(CONTENT_TYPE) {
        // Prometheus's receiver reads a missing Content-Type as v1.
        None => Ok(Version::V1),
        Some(v) => parse_content_type(v.to_str().unwrap_or("\u{fffd}")),
    }
}

/// Lenient on ingest (spaces, case, quotes), as docs/protocol.md §2 advises.
fn parse_content_type(ct: &str) -> Result<Version, IngestError> {
    let refuse = || IngestError::UnsupportedContentType(ct.to_string());
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(refuse());
    }
    let mut version = Version::V1;
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (k, v) = param.split_once('=').ok_or_else(refuse)?;
        if !k.trim().eq_ignore_ascii_case("proto") {
            continue;
        }
        version = match v.trim().trim_matches('"') {
            "prometheus.WriteRequest" => Version::V1,
            "io.prometheus.write.v2.Request" => Version::V2,
            _ => return Err(refuse()),
        };
    }
    Ok(version)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Runs `f` when dropped: keeps the in-flight gauge right on every exit path.
fn scopeguard<F: FnMut()>(f: F) -> impl Drop {
    struct Guard<F: FnMut()>(F);
    impl<F: FnMut()> Drop for Guard<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    Guard(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn negotiates_versions_leniently() {
        let ok =
            |ct: &'static str| negotiate(&Method::POST, &headers(&[("content-type", ct)])).unwrap();
        assert_eq!(ok("application/x-protobuf"), Version::V1);
        assert_eq!(
            ok("application/x-protobuf;proto=prometheus.WriteRequest"),
            Version::V1
        );
        assert_eq!(
            ok("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
            Version::V2
        );
        assert_eq!(
            ok("Application/X-Protobuf; proto=io.prometheus.write.v2.Request"),
            Version::V2
        );
        assert_eq!(
            ok("application/x-protobuf; proto=\"io.prometheus.write.v2.Request\""),
            Version::V2
        );
        assert_eq!(
            negotiate(&Method::POST, &HeaderMap::new()).unwrap(),
            Version::V1
        );
    }

    #[test]
    fn refuses_before_decoding() {
        let status = |m: Method, h: &[(&'static str, &'static str)]| {
            negotiate(&m, &headers(h)).unwrap_err().status()
        };
        assert_eq!(status(Method::GET, &[]), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            status(Method::POST, &[("content-type", "application/json")]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            status(
                Method::POST,
                &[("content-type", "application/x-protobuf;proto=foo.Bar")]
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            status(Method::POST, &[("content-encoding", "gzip")]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            status(Method::POST, &[("content-encoding", "deflate")]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert!(negotiate(&Method::POST, &headers(&[("content-encoding", "Snappy")])).is_ok());
    }

    #[test]
    fn an_amplifying_request_is_the_senders_fault() {
        let e = IngestError::Pipeline(PipelineError::Output(crate::wire::OutputTooLarge {
            size: 2_986_685_154,
            limit: 32 << 20,
        }));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.reason(), "output_too_large");
        assert_eq!(
            e.to_string(),
            "translated request would be at least 2986685154 bytes, over the limit of 33554432 bytes (limits.max_output_size)"
        );
    }

    #[test]
    fn upstream_statuses_make_prometheus_retry_or_give_up() {
        let up = |code: u16| {
            IngestError::Upstream(ForwardError::Status {
                upstream: "u".into(),
                status: StatusCode::from_u16(code).unwrap(),
                retry_after: None,
                body: Bytes::new(),
            })
            .status()
            .as_u16()
        };
        assert_eq!(up(500), 503);
        assert_eq!(up(502), 503);
        assert_eq!(up(429), 429);
        // About the data: passed back, the sender drops it.
        assert_eq!(up(400), 400);
        assert_eq!(up(409), 409);
        assert_eq!(up(422), 422);
        // About cardguard's configuration: the sender keeps the data and retries.
        for code in [401, 403, 404, 405, 407, 413, 415] {
            assert_eq!(up(code), 503, "{code}");
        }
        let timeout = IngestError::Upstream(ForwardError::Timeout {
            upstream: "u".into(),
            timeout: std::time::Duration::from_secs(1),
        });
        assert_eq!(timeout.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
