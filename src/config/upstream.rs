//! One upstream (`upstream:`, or an entry of `upstreams:`) checked into the forwarder's
//! `UpstreamConfig`; the URL and version parsers are shared with the command-line flags.
//! Its HTTP client settings follow Prometheus's `remote_write` (prometheus/common
//! `config/http_config.go`): same keys, same defaults, same exclusions; the files they name
//! are read here, so `cardguard check` reports a missing or unreadable one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue, Uri};
use serde_saphyr::Spanned;

use super::errors::Errors;
use super::raw::{RawAuthorization, RawBasicAuth, RawTlsConfig, RawUpstream};
use crate::forward::{
    Authorization, BasicAuth, ClientSettings, ProxySettings, Secret, SecretSource, TlsSettings,
    TlsVersion, UpstreamClient, UpstreamConfig,
};
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
                Ok(mut v) => {
                    // Often a token: kept out of debug prints (and HTTP/2 header tables).
                    v.set_sensitive(true);
                    headers.push((h, v))
                }
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
    let settings = client_settings(raw, path, errs);
    if settings.basic_auth.is_some() || settings.authorization.is_some() {
        if let Some((_, v)) = raw
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(AUTHORIZATION.as_str()))
        {
            errs.push(
                &format!("{path}.headers.Authorization"),
                v,
                "conflicts with basic_auth/authorization: set the credentials in one place",
            );
        }
    }
    let url = url?;
    let client = if settings.is_default() {
        None
    } else {
        match UpstreamClient::open(&name, settings) {
            Ok(c) => Some(Arc::new(c)),
            Err(m) => {
                let at = raw
                    .tls_config
                    .as_ref()
                    .filter(|_| m.starts_with("tls_config"))
                    .map(|t| t.referenced.line());
                let at = at.unwrap_or_else(|| raw.url.referenced.line());
                errs.push_line(path, at, m);
                return None;
            }
        }
    };
    Some(UpstreamConfig {
        name,
        url,
        version,
        timeout,
        headers,
        tenant_header,
        client,
    })
}

/// `basic_auth`, `authorization`, `tls_config`, `proxy_url` and `sigv4`, checked as Prometheus
/// checks them. Nothing is read from disk here.
fn client_settings(raw: &RawUpstream, path: &str, errs: &mut Errors) -> ClientSettings {
    if let Some(s) = &raw.sigv4 {
        errs.push(
            &format!("{path}.sigv4"),
            s,
            "sigv4 is not supported yet (no well-kept Rust signer short of the AWS SDK); \
             sign in a proxy such as aws-sigv4-proxy and point the upstream at it",
        );
    }
    let basic_auth = raw
        .basic_auth
        .as_ref()
        .and_then(|b| basic_auth(&b.value, &format!("{path}.basic_auth"), errs));
    let authorization = raw
        .authorization
        .as_ref()
        .and_then(|a| authorization(&a.value, &format!("{path}.authorization"), errs));
    if let (Some(_), Some(a)) = (&raw.basic_auth, &raw.authorization) {
        errs.push(
            &format!("{path}.authorization"),
            a,
            "at most one of basic_auth & authorization must be configured",
        );
    }
    let tls = raw
        .tls_config
        .as_ref()
        .map(|t| tls_config(&t.value, &format!("{path}.tls_config"), errs))
        .unwrap_or_default();
    let proxy = raw
        .proxy_url
        .as_ref()
        .and_then(|p| match proxy_url(p.value.expose()) {
            Ok(p) => Some(p),
            Err(m) => {
                errs.push(&format!("{path}.proxy_url"), p, m);
                None
            }
        });
    ClientSettings {
        basic_auth,
        authorization,
        tls,
        proxy,
    }
}

/// A secret inline or in a file; both set is an error, as in Prometheus.
fn secret_source(
    inline: Option<&Spanned<Secret>>,
    file: Option<&Spanned<String>>,
    names: (&str, &str),
    path: &str,
    errs: &mut Errors,
) -> Option<SecretSource> {
    match (inline, file) {
        (Some(_), Some(f)) => {
            errs.push(
                &format!("{path}.{}", names.1),
                f,
                format!(
                    "at most one of {} & {} must be configured",
                    names.0, names.1
                ),
            );
            None
        }
        (Some(s), None) => Some(SecretSource::Inline(s.value.clone())),
        (None, Some(f)) if f.value.is_empty() => {
            errs.push(&format!("{path}.{}", names.1), f, "must not be empty");
            None
        }
        (None, Some(f)) => Some(SecretSource::File(PathBuf::from(&f.value))),
        (None, None) => None,
    }
}

fn basic_auth(raw: &RawBasicAuth, path: &str, errs: &mut Errors) -> Option<BasicAuth> {
    let n = errs.len();
    let password = secret_source(
        raw.password.as_ref(),
        raw.password_file.as_ref(),
        ("password", "password_file"),
        path,
        errs,
    );
    (errs.len() == n).then(|| BasicAuth {
        username: raw.username.clone(),
        password,
    })
}

fn authorization(raw: &RawAuthorization, path: &str, errs: &mut Errors) -> Option<Authorization> {
    let n = errs.len();
    let kind = match &raw.kind {
        None => "Bearer".to_string(),
        Some(k) if k.value.eq_ignore_ascii_case("basic") => {
            errs.push(
                &format!("{path}.type"),
                k,
                "authorization type cannot be set to \"basic\", use \"basic_auth\" instead",
            );
            String::new()
        }
        Some(k) if k.value.is_empty() || !k.value.bytes().all(|b| b.is_ascii_graphic()) => {
            errs.push(&format!("{path}.type"), k, "must be one word, e.g. Bearer");
            String::new()
        }
        Some(k) => k.value.clone(),
    };
    let credentials = secret_source(
        raw.credentials.as_ref(),
        raw.credentials_file.as_ref(),
        ("credentials", "credentials_file"),
        path,
        errs,
    );
    (errs.len() == n).then_some(Authorization { kind, credentials })
}

fn tls_config(raw: &RawTlsConfig, path: &str, errs: &mut Errors) -> TlsSettings {
    let file = |f: &Option<Spanned<String>>| f.as_ref().map(|f| PathBuf::from(&f.value));
    match (&raw.cert_file, &raw.key_file) {
        (Some(c), None) => errs.push(
            &format!("{path}.key_file"),
            c,
            "key_file must be configured when a client certificate (cert_file) is",
        ),
        (None, Some(k)) => errs.push(
            &format!("{path}.cert_file"),
            k,
            "cert_file must be configured when a client key (key_file) is",
        ),
        _ => {}
    }
    let min_version = match &raw.min_version {
        None => TlsVersion::Tls12,
        Some(v) => match v.value.as_str() {
            "TLS12" => TlsVersion::Tls12,
            "TLS13" => TlsVersion::Tls13,
            "TLS10" | "TLS11" => {
                errs.push(
                    &format!("{path}.min_version"),
                    v,
                    "not supported: cardguard speaks TLS 1.2 and 1.3 only (TLS12 or TLS13)",
                );
                TlsVersion::Tls12
            }
            other => {
                errs.push(
                    &format!("{path}.min_version"),
                    v,
                    format!("unknown TLS version {other:?} (TLS12 or TLS13)"),
                );
                TlsVersion::Tls12
            }
        },
    };
    if let Some(n) = &raw.server_name {
        if rustls_pki_types::ServerName::try_from(n.value.as_str()).is_err() {
            errs.push(
                &format!("{path}.server_name"),
                n,
                format!("{:?} is not a DNS name or IP address", n.value),
            );
        }
    }
    TlsSettings {
        ca_file: file(&raw.ca_file),
        cert_file: file(&raw.cert_file),
        key_file: file(&raw.key_file),
        server_name: raw.server_name.as_ref().map(|n| n.value.clone()),
        insecure_skip_verify: raw.insecure_skip_verify,
        min_version,
    }
}

/// `proxy_url`: an `http://` proxy; a password in its userinfo becomes the
/// `Proxy-Authorization` of the tunnel. Errors never quote the URL (it may hold a password).
fn proxy_url(s: &str) -> Result<ProxySettings, String> {
    let uri: Uri = s.parse().map_err(|_| "not a valid URL".to_string())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => {
            return Err(
                "only http:// proxies are supported (requests to https upstreams \
                        are tunnelled through them with CONNECT)"
                    .into(),
            )
        }
        None => return Err("must start with http://".into()),
    }
    let authority = uri.authority().ok_or("has no host")?;
    let (userinfo, host) = match authority.as_str().rsplit_once('@') {
        Some((info, host)) => (Some(info), host),
        None => (None, authority.as_str()),
    };
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host".into());
    }
    let auth = userinfo.map(|info| {
        let (user, pass) = info.split_once(':').unwrap_or((info, ""));
        (user.to_string(), Secret::new(pass))
    });
    let url = format!("http://{host}")
        .parse()
        .map_err(|_| "not a valid URL".to_string())?;
    Ok(ProxySettings { url, auth })
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

/// An upstream must be an absolute `http://` or `https://` URL with a host.
pub fn parse_upstream_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{s:?} must start with http:// or https://")),
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

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
