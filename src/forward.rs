//! Forward: sends prepared request bodies to the upstream and classifies what came back.
//!
//! One pooled hyper client serves every request; connections are kept alive and reused, and
//! no lock is taken per request. The caller acknowledges its sender only after `send` returned
//! `Ok`: the upstream holds the data by then. Every failure is typed so that ingest can turn it
//! into the status that makes Prometheus retry (or give up, for a genuine client error).

mod config;
pub mod metrics;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::wire::Version;
pub use config::UpstreamConfig;
use metrics::ForwardMetrics;

/// How much of an upstream error body is kept to pass back to the sender.
const MAX_ERROR_BODY: usize = 4096;

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
    /// Any other non-2xx: the upstream refused the data for good; no retry will help.
    Refused,
}

impl FailureClass {
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
            ForwardError::Status { status, .. } if status.as_u16() == 429 => {
                FailureClass::TooManyRequests
            }
            ForwardError::Status { status, .. } if status.is_server_error() => {
                FailureClass::ServerError
            }
            ForwardError::Status { .. } => FailureClass::Refused,
        }
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
    client: Client<HttpConnector, Full<Bytes>>,
    metrics: ForwardMetrics,
}

impl Forwarder {
    pub fn new(metrics: ForwardMetrics) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Forwarder { client, metrics }
    }

    /// Send one request and wait for the upstream's answer (bounded by the upstream timeout).
    pub async fn send(&self, up: &UpstreamConfig, out: Outgoing) -> Result<(), ForwardError> {
        let started = Instant::now();
        let result = tokio::time::timeout(up.timeout, self.send_inner(up, out)).await;
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
        if let Err(e) = &result {
            self.metrics
                .upstream_errors
                .with_label_values(&[&up.name, e.class().as_str()])
                .inc();
        }
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

        let resp = self.client.request(req).await.map_err(|e| {
            let reason = error_chain(&e);
            if e.is_connect() {
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
                body,
            })
        }
    }
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
mod tests {
    use super::FailureClass::*;

    /// The `class` label values are part of the metrics' interface (dashboards, alerts).
    #[test]
    fn failure_class_labels_are_stable() {
        let labels: Vec<_> = [
            Timeout,
            Connect,
            Transport,
            TooManyRequests,
            ServerError,
            Refused,
        ]
        .iter()
        .map(|c| (c.as_str(), c.is_retryable()))
        .collect();
        assert_eq!(
            labels,
            [
                ("timeout", true),
                ("connect", true),
                ("other", true),
                ("429", true),
                ("5xx", true),
                ("4xx", false)
            ]
        );
    }
}
