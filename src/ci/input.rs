//! Where `cardguard ci` reads from: exposition files, `-` for stdin, an `http://` URL scraped
//! once, and a running cardguard's `/api/v1/cardinality` (`--live`). Every read is capped.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::exposition::{self, Exposition, Format};
use super::CiError;

/// Largest exposition read from a file, stdin or a scrape (Prometheus's default
/// `body_size_limit` is unlimited; 64 MiB is far beyond any one target's `/metrics`).
pub const MAX_EXPOSITION_BYTES: usize = 64 << 20;
/// Largest `/api/v1/cardinality` answer read.
const MAX_API_BYTES: usize = 16 << 20;
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// What Prometheus asks a target for.
const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1";

/// One exposition, read and parsed.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path, `-` or the URL, as given.
    pub name: String,
    pub exposition: Exposition,
}

/// Read and parse `name`: a file path, `-` (stdin) or an `http://` URL.
pub async fn read(name: &str) -> Result<Source, CiError> {
    let (text, format) = if name == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(MAX_EXPOSITION_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| CiError::Read {
                source_name: name.into(),
                reason: e.to_string(),
            })?;
        (text_of(name, buf)?, None)
    } else if name.starts_with("http://") || name.starts_with("https://") {
        let (content_type, body) =
            get(name, ACCEPT, MAX_EXPOSITION_BYTES)
                .await
                .map_err(|reason| CiError::Read {
                    source_name: name.into(),
                    reason,
                })?;
        let format = content_type
            .contains("application/openmetrics-text")
            .then_some(Format::OpenMetrics);
        (text_of(name, body.to_vec())?, format)
    } else {
        let file = std::fs::File::open(name).map_err(|e| CiError::Read {
            source_name: name.into(),
            reason: e.to_string(),
        })?;
        let mut buf = Vec::new();
        file.take(MAX_EXPOSITION_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| CiError::Read {
                source_name: name.into(),
                reason: e.to_string(),
            })?;
        (text_of(name, buf)?, None)
    };
    let parsed = match format {
        Some(f) => exposition::parse_as(&text, f),
        None => exposition::parse(&text),
    };
    let exposition = parsed.map_err(|error| CiError::Parse {
        source_name: name.into(),
        error,
    })?;
    Ok(Source {
        name: name.into(),
        exposition,
    })
}

fn text_of(name: &str, buf: Vec<u8>) -> Result<String, CiError> {
    if buf.len() > MAX_EXPOSITION_BYTES {
        return Err(CiError::Read {
            source_name: name.into(),
            reason: format!("larger than {} MiB", MAX_EXPOSITION_BYTES >> 20),
        });
    }
    String::from_utf8(buf).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count();
        CiError::Parse {
            source_name: name.into(),
            error: exposition::ParseError {
                line,
                message: "invalid UTF-8".into(),
            },
        }
    })
}

/// One owner's current use, as a running cardguard reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveService {
    pub service: String,
    pub tenant: Option<String>,
    pub active: u64,
}

/// What `--live URL` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub url: String,
    pub services: Vec<LiveService>,
}

impl Live {
    /// The active series of `owner` (the row without a tenant first); `None` when it is not
    /// reported (no series yet, or summed into `other` past `max_reported_services`).
    pub fn active(&self, owner: &str) -> Option<u64> {
        let rows = || self.services.iter().filter(|s| s.service == owner);
        rows()
            .find(|s| s.tenant.is_none())
            .or_else(|| rows().next())
            .map(|s| s.active)
    }
}

/// `GET {url}/api/v1/cardinality` of a running cardguard (`url` may name that path itself).
pub async fn live(url: &str) -> Result<Live, CiError> {
    let base = url.trim_end_matches('/');
    let api = if base.ends_with("/api/v1/cardinality") {
        base.to_string()
    } else {
        format!("{base}/api/v1/cardinality")
    };
    let fail = |reason: String| CiError::Live {
        url: api.clone(),
        reason,
    };
    let (_, body) = get(&api, "application/json", MAX_API_BYTES)
        .await
        .map_err(fail)?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))?;
    let rows = v
        .get("services")
        .and_then(|s| s.as_array())
        .ok_or_else(|| {
            fail("no \"services\" list (is this cardguard with the guard on?)".into())
        })?;
    let services = rows
        .iter()
        .map(|r| {
            Some(LiveService {
                service: r.get("service")?.as_str()?.to_string(),
                tenant: r.get("tenant").and_then(|t| t.as_str()).map(str::to_string),
                active: r.get("active")?.as_u64()?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| fail("a service row without service or active".into()))?;
    Ok(Live { url: api, services })
}

/// One GET over plain HTTP: the Content-Type and at most `max` bytes of a 2xx body.
async fn get(url: &str, accept: &str, max: usize) -> Result<(String, Bytes), String> {
    if url.starts_with("https://") {
        return Err("https is not supported: scrape over http, or save the exposition to a file and pass the file".into());
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, accept)
        .header(http::header::USER_AGENT, "cardguard-ci")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        })?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = Limited::new(resp.into_body(), max)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e} (limit {max} bytes)"))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(format!("answered {status}: {}", text.trim()));
        }
        Ok((content_type, body))
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", HTTP_TIMEOUT.as_secs()))?
}
