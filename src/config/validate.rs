//! Raw config → validated `Config`, collecting every problem with its path and line.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use serde_saphyr::Spanned;

use super::guard::GuardConfig;
use super::raw::{RawConfig, RawLimits, RawUpstream};
use super::{Config, ConfigError, ConfigErrors, UpstreamConfig};
use crate::wire::Version;

/// A size in bytes: a plain integer, or a number with a unit (`512KiB`, `32MiB`, `1GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let err = || format!("not a valid size: {s:?} (expected e.g. 1048576, 512KiB, 32MiB)");
        let n: u64 = s[..digits].parse().map_err(|_| err())?;
        let mult: u64 = match s[digits..].trim() {
            "" | "B" => 1,
            "KB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(err()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(err)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(u64),
            Str(String),
        }
        match Either::deserialize(d)? {
            Either::Int(n) => Ok(ByteSize(n)),
            Either::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

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

/// Collects errors while validating.
#[derive(Default)]
pub(super) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(super) fn push<T>(&mut self, path: &str, at: &Spanned<T>, message: impl Into<String>) {
        let line = at.referenced.line();
        self.0.push(ConfigError {
            path: path.to_string(),
            line: (line > 0).then_some(line),
            message: message.into(),
        });
    }
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut errs = Errors::default();
    let mut c = Config::default();

    if let Some(addr) = &raw.server.listen_address {
        match addr.value.parse::<SocketAddr>() {
            Ok(a) => c.server.listen_address = a,
            Err(_) => errs.push(
                "server.listen_address",
                addr,
                format!(
                    "{:?} is not HOST:PORT with a numeric address (e.g. 127.0.0.1:9201)",
                    addr.value
                ),
            ),
        }
    }
    if let Some(n) = &raw.server.max_inflight_requests {
        if n.value == 0 {
            errs.push("server.max_inflight_requests", n, "must be at least 1");
        }
        c.server.max_inflight_requests = n.value;
    }
    if let Some(d) = raw.server.shutdown_grace_period {
        c.server.shutdown_grace = d.0;
    }

    validate_limits(&raw.limits, &mut c, &mut errs);

    if let Some(up) = &raw.upstream {
        c.upstream = validate_upstream(&up.value, "upstream", &mut errs);
    }
    c.relabel = super::relabel::validate(&raw.relabel_configs, "relabel_configs", &mut errs);
    match (&raw.upstream, &raw.upstreams) {
        (Some(up), Some(_)) => errs.push(
            "upstreams",
            up,
            "`upstream` and `upstreams` cannot both be set; list the single upstream under `upstreams`",
        ),
        (_, Some(ups)) => {
            let r = super::route::validate(ups, &raw.routes, raw.tenant_header.as_ref(), &mut errs);
            c.routing = Some(std::sync::Arc::new(r));
        }
        (_, None) => {
            if let Some(r) = raw.routes.first() {
                errs.push("routes", r, "routes need `upstreams:` to route to");
            }
            if let Some(t) = &raw.tenant_header {
                errs.push(
                    "tenant_header",
                    t,
                    "only used with `upstreams:`; a single `upstream:` has its own tenant_header",
                );
            }
        }
    }
    if let Some(g) = &raw.guard {
        c.guard = Some(super::guard::validate(g, &mut errs));
    }
    if let Some(s) = &raw.schema {
        c.schema = Some(super::schema::validate(s, &mut errs));
    }
    c.rules = super::rules::validate(raw.rules.as_ref(), &raw.rule_files, &mut errs);

    if errs.0.is_empty() {
        Ok(c)
    } else {
        errs.0.sort_by_key(|e| e.line.unwrap_or(0));
        Err(ConfigErrors {
            file: None,
            errors: errs.0,
        })
    }
}

fn validate_limits(raw: &RawLimits, c: &mut Config, errs: &mut Errors) {
    let positive = |errs: &mut Errors, path: &str, v: &Spanned<usize>| -> usize {
        if v.value == 0 {
            errs.push(path, v, "must be at least 1");
        }
        v.value
    };
    // 1 GiB: past that a single request would hold the process hostage.
    const MAX_BYTES: u64 = 1 << 30;
    let size = |errs: &mut Errors, path: &str, v: &Spanned<ByteSize>| -> usize {
        if v.value.0 == 0 || v.value.0 > MAX_BYTES {
            errs.push(path, v, "must be between 1 byte and 1GiB");
        }
        v.value.0.min(MAX_BYTES) as usize
    };
    let l = &mut c.limits;
    if let Some(v) = &raw.max_body_size {
        l.max_body_bytes = size(errs, "limits.max_body_size", v);
    }
    if let Some(v) = &raw.max_decoded_size {
        l.wire.max_decoded_bytes = size(errs, "limits.max_decoded_size", v);
    }
    if let Some(v) = &raw.max_series_per_request {
        l.wire.max_series = positive(errs, "limits.max_series_per_request", v);
    }
    if let Some(v) = &raw.max_labels_per_series {
        l.wire.max_labels_per_series = positive(errs, "limits.max_labels_per_series", v);
    }
    if let Some(v) = &raw.max_label_name_length {
        l.wire.max_label_name_bytes = positive(errs, "limits.max_label_name_length", v);
    }
    if let Some(v) = &raw.max_label_value_length {
        l.wire.max_label_value_bytes = positive(errs, "limits.max_label_value_length", v);
    }
    if let Some(v) = &raw.max_symbols_per_request {
        l.wire.max_symbols = positive(errs, "limits.max_symbols_per_request", v);
    }
}

pub(super) fn validate_upstream(
    raw: &RawUpstream,
    path: &str,
    errs: &mut Errors,
) -> Option<UpstreamConfig> {
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
    let tenant_header = match &raw.tenant_header {
        None => Some(HeaderName::from_static("x-scope-orgid")),
        Some(t) if t.value.is_empty() => None,
        Some(t) => match HeaderName::from_bytes(t.value.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                errs.push(
                    &format!("{path}.tenant_header"),
                    t,
                    format!("{:?} is not a valid header name", t.value),
                );
                None
            }
        },
    };
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

/// Command-line settings that override the file (flags win, as in Prometheus).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen_address: Option<SocketAddr>,
    pub upstream_url: Option<String>,
    pub upstream_version: Option<String>,
    pub upstream_timeout: Option<Duration>,
    /// `--max-series-per-service`: turns the guard on with one budget for every owner.
    pub max_series_per_service: Option<u64>,
    /// `--owner-label`: the label naming a series' owner.
    pub owner_label: Option<String>,
    /// `--rules FILE` (repeatable): rule files besides the config's `rule_files:`.
    pub rule_files: Vec<std::path::PathBuf>,
}

impl Overrides {
    pub(super) fn apply(&self, c: &mut Config) -> Result<(), ConfigErrors> {
        let flag_err = |flag: &str, message: String| {
            ConfigErrors::single(ConfigError {
                path: flag.to_string(),
                line: None,
                message,
            })
        };
        if let Some(a) = self.listen_address {
            c.server.listen_address = a;
        }
        if c.routing.is_some()
            && (self.upstream_url.is_some()
                || self.upstream_version.is_some()
                || self.upstream_timeout.is_some())
        {
            return Err(flag_err(
                "--upstream",
                "the config file lists `upstreams:`; set them there (the --upstream* flags only replace a single upstream)".into(),
            ));
        }
        if let Some(u) = &self.upstream_url {
            let url = parse_upstream_url(u).map_err(|m| flag_err("--upstream", m))?;
            match &mut c.upstream {
                Some(up) => up.url = url,
                None => {
                    c.upstream = Some(UpstreamConfig {
                        name: "default".into(),
                        url,
                        version: Version::V1,
                        timeout: Duration::from_secs(30),
                        headers: Vec::new(),
                        tenant_header: Some(HeaderName::from_static("x-scope-orgid")),
                    })
                }
            }
        }
        if let Some(n) = self.max_series_per_service {
            let owners = vec![self.owner_label.clone().unwrap_or_else(|| "service".into())];
            match &mut c.guard {
                Some(g) => {
                    let mut b = (*g.default_budget).clone();
                    b.max_series = n;
                    g.default_budget = std::sync::Arc::new(b);
                }
                None => c.guard = Some(GuardConfig::with_default_budget(n, owners)),
            }
        }
        if let (Some(label), Some(g)) = (&self.owner_label, &mut c.guard) {
            g.owner_labels = vec![label.clone()];
        }
        if let Some(up) = &mut c.upstream {
            if let Some(v) = &self.upstream_version {
                up.version = parse_version(v).map_err(|m| flag_err("--upstream-version", m))?;
            }
            if let Some(t) = self.upstream_timeout {
                up.timeout = t;
            }
        }
        Ok(())
    }
}
