//! One upstream (`upstream:`, or an entry of `upstreams:`) checked into the forwarder's
//! `UpstreamConfig`; the URL and version parsers are shared with the command-line flags.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use serde_saphyr::Spanned;

use super::errors::Errors;
use super::raw::RawUpstream;
use crate::forward::UpstreamConfig;
use crate::wire::Version;

/// Headers cardguard sets itself; a configured header may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "x-prometheus-remote-write-version",
    "host",
    "user-agent",
    "retry-attempt",
];

pub(super) fn validate(raw: &RawUpstream, path: &str, errs: &mut Errors) -> Option<UpstreamConfig> {
    let url = match parse_upstream_url(&raw.url.value) {
        Ok(u) => Some(u),
        Err(m) => {
            errs.push(&format!("{path}.url"), &raw.url, m);
            None
        }
    };
    let version = match &raw.remote_write_version {
        None => Version::V1,
        Some(v) => match parse_version(&v.value) {
            Ok(v) => v,
            Err(m) => {
                errs.push(&format!("{path}.remote_write_version"), v, m);
                Version::V1
            }
        },
    };
    let timeout = match &raw.remote_timeout {
        None => Duration::from_secs(30),
        Some(t) if t.value.0.is_zero() => {
            errs.push(
                &format!("{path}.remote_timeout"),
                t,
                "must be greater than 0",
            );
            Duration::from_secs(30)
        }
        Some(t) => t.value.0,
    };
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let path = format!("{path}.headers.{name}");
        match HeaderName::from_bytes(name.as_bytes()) {
            Err(_) => errs.push(&path, value, format!("{name:?} is not a valid header name")),
            Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) => errs.push(
                &path,
                value,
                format!("{name} is set by cardguard and cannot be overridden"),
            ),
            Ok(h) => match HeaderValue::from_str(&value.value) {
                Ok(v) => headers.push((h, v)),
                Err(_) => errs.push(&path, value, "not a valid header value"),
            },
        }
    }
    let tenant_header = tenant_header(
        raw.tenant_header.as_ref(),
        &format!("{path}.tenant_header"),
        errs,
    );
    let name = raw
        .name
        .as_ref()
        .map(|n| n.value.clone())
        .unwrap_or_else(|| "default".into());
    if let Some(n) = &raw.name {
        if !valid_name(&n.value) {
            errs.push(
                &format!("{path}.name"),
                n,
                "must match [a-zA-Z0-9_-]+ (it is used as a metric label)",
            );
        }
    }
    Some(UpstreamConfig {
        name,
        url: url?,
        version,
        timeout,
        headers,
        tenant_header,
    })
}

/// `tenant_header:` as written: absent means `X-Scope-OrgID` (what Mimir, Cortex and Loki
/// read), empty means no tenant header at all.
pub(super) fn tenant_header(
    raw: Option<&Spanned<String>>,
    path: &str,
    errs: &mut Errors,
) -> Option<HeaderName> {
    match raw {
        None => Some(HeaderName::from_static("x-scope-orgid")),
        Some(t) if t.value.is_empty() => None,
        Some(t) => match HeaderName::from_bytes(t.value.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                errs.push(path, t, format!("{:?} is not a valid header name", t.value));
                None
            }
        },
    }
}

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An upstream must be an absolute `http://` URL with a host; `https` needs TLS, which this
/// build does not carry, so it is refused up front rather than failing on the first write.
pub fn parse_upstream_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{s:?}: https upstreams are not supported yet; terminate TLS in a local sidecar and use http"
            ))
        }
        _ => return Err(format!("{s:?} must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    Ok(uri)
}

pub fn parse_version(s: &str) -> Result<Version, String> {
    match s {
        "1.0" | "1" | "v1" | "0.1.0" | "prometheus.WriteRequest" => Ok(Version::V1),
        "2.0" | "2" | "v2" | "2.0.0" | "io.prometheus.write.v2.Request" => Ok(Version::V2),
        _ => Err(format!("{s:?} is not a remote write version (1.0 or 2.0)")),
    }
}
