//! Forward: sends prepared request bodies to the upstream and classifies what came back.
//!
//! One pooled hyper client serves every request; connections are kept alive and reused, and
//! no lock is taken per request. The caller acknowledges its sender only after `send` returned
//! `Ok`: the upstream holds the data by then. Every failure is typed so that ingest can turn it
//! into the status that makes Prometheus retry (or give up, for an error about the data).
//!
//! An upstream 4xx is classified by whose fault it is: the data's (400, 409, 422: passed back,
//! no retry can help) or cardguard's own configuration (401 expired token, 404 wrong URL, 413
//! body too large, ...: the sender gets 503 and keeps the data while an operator fixes it). A
//! 413 first has the body split in halves by series, sent in order (`halve`).

mod client;
mod config;
mod halve;
pub mod metrics;
pub mod queue;
mod tls;
pub(crate) mod watched;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::wire::Version;
pub use client::UpstreamClient;
pub use config::{
    Authorization, BasicAuth, ClientSettings, ProxySettings, Secret, SecretSource, TlsSettings,
    TlsVersion, UpstreamConfig,
};
use metrics::ForwardMetrics;

/// How much of an upstream error body is kept to pass back to the sender.
const MAX_ERROR_BODY: usize = 4096;

/// How much of the upstream's answer the 503 for a configuration error quotes.
const MAX_QUOTED_BODY: usize = 512;

/// `Retry-After` of the 503 for a configuration error: someone has to fix the config first, so
/// there is no point in Prometheus retrying at its fastest; short enough that data flows again
/// soon after the fix (Prometheus honours it on 5xx in place of its own backoff).
pub const CONFIG_ERROR_RETRY_AFTER: HeaderValue = HeaderValue::from_static("10");

const USER_AGENT_VALUE: &str = concat!("cardguard/", env!("CARGO_PKG_VERSION"));

/// Why an upstream request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("upstream {upstream}: no response within {timeout:?}")]
    Timeout { upstream: String, timeout: Duration },
    #[error("upstream {upstream}: cannot connect: {reason}")]
    Connect { upstream: String, reason: String },
    #[error("upstream {upstream}: request failed: {reason}")]
    Transport { upstream: String, reason: String },
    /// The upstream answered with a non-2xx status.
    #[error("upstream {upstream}: answered {status}")]
    Status {
        upstream: String,
        status: StatusCode,
        retry_after: Option<HeaderValue>,
        body: Bytes,
    },
}

/// What kind of failure an upstream request met: decides whether a retry can help and which
/// status the sender gets, and is the bounded `class` label on cardguard's own metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// No answer within the upstream's timeout.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// The request failed on the way (reset, protocol error, a bug in our own body).
    Transport,
    /// 429: the upstream is busy; a later retry can succeed.
    TooManyRequests,
    /// 5xx: the upstream failed; a retry can succeed.
    ServerError,
    /// A 4xx about cardguard's request rather than its data: credentials (401, 403, 407), the
    /// URL or method (404, 405, 410), the tenant, the body's size (413, once splitting did not
    /// help) or type (415, a v2 body to a v1-only upstream). The same data succeeds once an
    /// operator fixes the upstream's settings, so the sender must keep it and retry.
    Config,
    /// 400, 409 or 422: the upstream refused the data itself (malformed, out of order,
    /// duplicate, over a limit on samples); no retry will help.
    Refused,
}

impl FailureClass {
    /// The class of a non-2xx answer. Only errors about the data are final: Prometheus drops a
    /// batch answered 4xx, so anything else that may be our own doing must make it retry. 409
    /// is Thanos Receive's answer to conflicting (out-of-order, duplicate) samples.
    pub fn of_status(status: StatusCode) -> FailureClass {
        match status.as_u16() {
            429 => FailureClass::TooManyRequests,
            400 | 409 | 422 => FailureClass::Refused,
            // The upstream gave up waiting for our body: a timeout, not a setting.
            408 => FailureClass::Timeout,
            s if (400..500).contains(&s) => FailureClass::Config,
            // 5xx, and whatever a broken upstream answers outside 4xx/5xx: a retry can help.
            _ => FailureClass::ServerError,
        }
    }

    /// Whether sending the same data again can succeed.
    pub fn is_retryable(self) -> bool {
        !matches!(self, FailureClass::Refused)
    }

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::Connect => "connect",
            FailureClass::Transport => "other",
            FailureClass::TooManyRequests => "429",
            FailureClass::ServerError => "5xx",
            FailureClass::Config => "config",
            FailureClass::Refused => "4xx",
        }
    }
}

impl ForwardError {
    pub fn class(&self) -> FailureClass {
        match self {
            ForwardError::Timeout { .. } => FailureClass::Timeout,
            ForwardError::Connect { .. } => FailureClass::Connect,
            ForwardError::Transport { .. } => FailureClass::Transport,
            ForwardError::Status { status, .. } => FailureClass::of_status(*status),
        }
    }

    /// A 413: the body may go through in smaller pieces.
    fn is_too_large(&self) -> bool {
        matches!(self, ForwardError::Status { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE)
    }

    /// The sender's 503 body when the upstream refused cardguard's request for a reason of
    /// configuration: the upstream's name (from the config, never its URL) and status, what to
    /// check, and the start of its answer (already cleared of the configured credentials).
    pub fn config_error_message(&self) -> String {
        let ForwardError::Status {
            upstream,
            status,
            body,
            ..
        } = self
        else {
            return self.to_string();
        };
        let what = match status.as_u16() {
            401 | 403 | 407 => "its credentials or tenant (upstream headers)",
            404 | 405 | 410 | 421 => "its url",
            413 => "its request size limit (cardguard split the body down to single series)",
            415 => "its remote_write_version",
            _ => "its settings",
        };
        let quoted = String::from_utf8_lossy(&body[..body.len().min(MAX_QUOTED_BODY)]);
        let quoted = quoted.trim();
        let mut m = format!(
            "upstream {upstream} answered {status}: it refuses cardguard's request, not the data; \
             check {what} in cardguard's configuration. Answered 503 so that the data is sent again."
        );
        if !quoted.is_empty() {
            m.push_str(" The upstream said: ");
            m.push_str(quoted);
        }
        m
    }
}

/// A body ready to go upstream.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Snappy-compressed protobuf.
    pub body: Bytes,
    pub version: Version,
    /// The tenant header value from the incoming request, if any.
    pub tenant: Option<HeaderValue>,
}

/// The shared upstream client.
#[derive(Clone)]
pub struct Forwarder {
    /// Serves the upstreams without TLS or proxy settings of their own.
    client: client::Shared,
    metrics: ForwardMetrics,
    refusing: Arc<Refusing>,
}

/// Upstreams that currently refuse cardguard's requests for a reason of configuration, with
/// the status they answer: logged when that changes, not once per request. The lock is taken
/// only on such an error, or on a success while some upstream is listed.
#[derive(Default)]
struct Refusing {
    by_upstream: Mutex<HashMap<String, StatusCode>>,
    count: AtomicUsize,
}

impl Refusing {
    fn refused(&self, upstream: &str, status: StatusCode, e: &ForwardError) {
        let mut map = self.by_upstream.lock().unwrap_or_else(|e| e.into_inner());
        let before = map.insert(upstream.to_string(), status);
        if before.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        if before != Some(status) {
            tracing::error!(
                upstream,
                status = status.as_u16(),
                "{} (logged once until the upstream answers otherwise; counted in \
                 cardguard_upstream_config_errors_total)",
                e.config_error_message()
            );
        }
    }

    fn accepted(&self, upstream: &str) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.by_upstream.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = map.remove(upstream) {
            self.count.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(
                upstream,
                "upstream accepts cardguard's requests again (it answered {status} before)"
            );
        }
    }
}

impl Forwarder {
    pub fn new(metrics: ForwardMetrics) -> Self {
        Forwarder {
            client: client::shared(),
            metrics,
            refusing: Arc::default(),
        }
    }

    /// Send one body and wait for the upstream's answer (each request bounded by the upstream
    /// timeout). A 413 splits it (`send_halves`); the outcome is the whole body's.
    pub async fn send(&self, up: &UpstreamConfig, out: Outgoing) -> Result<(), ForwardError> {
        let result = match self.attempt(up, &out).await {
            Err(e) if e.is_too_large() => self.send_halves(up, &out, e).await,
            r => r,
        };
        match &result {
            Ok(()) => self.refusing.accepted(&up.name),
            Err(e) => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&[&up.name, e.class().as_str()])
                    .inc();
                if let (FailureClass::Config, ForwardError::Status { status, .. }) = (e.class(), e)
                {
                    self.metrics
                        .config_errors
                        .with_label_values(&[&up.name, status.as_str()])
                        .inc();
                    self.refusing.refused(&up.name, *status, e);
                }
            }
        }
        result
    }

    /// After a 413: the body in halves by series, in order, each half halved again on its own
    /// 413, down to one series. A piece at least as large as one already refused is split
    /// without being sent. The first other failure ends it: the sender then retries the
    /// whole request and the upstream gets the pieces it already took again, identical
    /// samples that Prometheus-compatible backends accept as duplicates.
    async fn send_halves(
        &self,
        up: &UpstreamConfig,
        out: &Outgoing,
        too_large: ForwardError,
    ) -> Result<(), ForwardError> {
        let Some(mut pieces) = halve::Pieces::new(&out.body, out.version) else {
            return Err(too_large);
        };
        // Every body sent from here is smaller than the smallest one refused so far.
        let mut refused_at = out.body.len();
        let mut last = too_large;
        // Ranges still to deliver, the next on top: a first half goes before its second half.
        let mut todo = Vec::new();
        let mut to_split = Some(0..pieces.series());
        loop {
            if let Some(range) = to_split.take() {
                let Some((first, second)) = halve::halves(range) else {
                    return Err(last);
                };
                self.metrics
                    .body_splits
                    .with_label_values(&[&up.name])
                    .inc();
                todo.push(second);
                todo.push(first);
            }
            let Some(range) = todo.pop() else {
                return Ok(());
            };
            let Some(body) = pieces.encode(range.clone()) else {
                return Err(last);
            };
            if body.len() >= refused_at {
                to_split = Some(range);
                continue;
            }
            let len = body.len();
            let piece = Outgoing {
                body,
                version: out.version,
                tenant: out.tenant.clone(),
            };
            match self.attempt(up, &piece).await {
                Ok(()) => {}
                Err(e) if e.is_too_large() => {
                    refused_at = len;
                    last = e;
                    to_split = Some(range);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One request, timed and counted by response code.
    async fn attempt(&self, up: &UpstreamConfig, out: &Outgoing) -> Result<(), ForwardError> {
        let started = Instant::now();
        let result = tokio::time::timeout(up.timeout, self.send_inner(up, out.clone())).await;
        self.metrics
            .upstream_seconds
            .with_label_values(&[&up.name])
            .observe(started.elapsed().as_secs_f64());
        let result = result.unwrap_or_else(|_| {
            Err(ForwardError::Timeout {
                upstream: up.name.clone(),
                timeout: up.timeout,
            })
        });
        let code = match &result {
            Ok(()) => "2xx",
            Err(ForwardError::Status { status, .. }) => status.as_str(),
            Err(e) => e.class().as_str(),
        };
        self.metrics
            .upstream_requests
            .with_label_values(&[&up.name, code])
            .inc();
        result
    }

    async fn send_inner(&self, up: &UpstreamConfig, out: Outgoing) -> Result<(), ForwardError> {
        let mut req = Request::post(up.url.clone())
            .body(Full::new(out.body))
            .map_err(|e| ForwardError::Transport {
                upstream: up.name.clone(),
                reason: e.to_string(),
            })?;
        let h = req.headers_mut();
        set_headers(h, up, out.version, out.tenant);
        let pending = match &up.client {
            Some(c) => {
                c.authorize(req.headers_mut());
                c.request(req, &self.client)
            }
            None => self.client.request(req),
        };

        let resp = pending.await.map_err(|e| {
            let reason = error_chain(&e);
            if e.is_connect() {
                let reason = with_tls_hint(reason);
                ForwardError::Connect {
                    upstream: up.name.clone(),
                    reason,
                }
            } else {
                ForwardError::Transport {
                    upstream: up.name.clone(),
                    reason,
                }
            }
        })?;
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).cloned();
        // Read (a bounded part of) the body so the connection goes back to the pool.
        let body = match Limited::new(resp.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::from_static(b"(upstream response body too large or unreadable)"),
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(ForwardError::Status {
                upstream: up.name.clone(),
                status,
                retry_after,
                body: redact(body, up),
            })
        }
    }
}

/// An upstream's error body goes to senders and logs: take out anything of the configured
/// credentials it may echo (each word of a configured header value, as in `Bearer <token>`,
/// the password of the URL's userinfo, and the password, token and proxy password of the
/// upstream's client settings as now in force). Error path only.
fn redact(body: Bytes, up: &UpstreamConfig) -> Bytes {
    let userinfo = up
        .url
        .authority()
        .and_then(|a| a.as_str().rsplit_once('@'))
        .map(|(info, _)| info);
    let from_client = up.client.as_ref().map(|c| c.secrets()).unwrap_or_default();
    let secrets: Vec<&[u8]> = up
        .headers
        .iter()
        .flat_map(|(_, v)| v.as_bytes().split(|b| b.is_ascii_whitespace()))
        .chain(
            userinfo
                .into_iter()
                .flat_map(|i| i.split(':'))
                .map(str::as_bytes),
        )
        .chain(from_client.iter().map(Vec::as_slice))
        // Short words ("Bearer", "Basic") are not secrets and would blank ordinary text.
        .filter(|w| w.len() >= 8)
        .collect();
    if !secrets
        .iter()
        .any(|w| body.windows(w.len()).any(|x| x == *w))
    {
        return body;
    }
    let mut out = body.to_vec();
    for w in secrets {
        let mut i = 0;
        while let Some(at) = out[i..].windows(w.len()).position(|x| x == w) {
            let at = i + at;
            out.splice(at..at + w.len(), b"<redacted>".iter().copied());
            i = at + b"<redacted>".len();
        }
    }
    Bytes::from(out)
}

fn set_headers(
    h: &mut HeaderMap,
    up: &UpstreamConfig,
    version: Version,
    tenant: Option<HeaderValue>,
) {
    h.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(version.content_type()),
    );
    h.insert(
        "x-prometheus-remote-write-version",
        HeaderValue::from_static(version.header_value()),
    );
    h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    if let (Some(name), Some(value)) = (&up.tenant_header, tenant) {
        h.insert(name.clone(), value);
    }
    // Configured headers win over the passed-through tenant: a fixed tenant is a policy.
    for (k, v) in &up.headers {
        h.insert(k.clone(), v.clone());
    }
}

/// A failed TLS handshake says what is wrong with the certificate ("invalid peer certificate:
/// UnknownIssuer"); say where to fix it, too.
fn with_tls_hint(reason: String) -> String {
    if reason.contains("certificate") || reason.contains("InvalidCertificate") {
        format!(
            "{reason} (TLS: the upstream's certificate was not accepted; check tls_config \
             ca_file and server_name of this upstream)"
        )
    } else {
        reason
    }
}

/// hyper's errors hide the useful part (e.g. "Connection refused") in their sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests;
