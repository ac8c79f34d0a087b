//! Where accepted data goes: one upstream's validated settings, as `config` builds them from
//! `upstream:` or an entry of `upstreams:`, and its HTTP client settings in the shape of
//! Prometheus's `remote_write` (`basic_auth`, `authorization`, `tls_config`, `proxy_url`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

use super::client::UpstreamClient;
use crate::wire::Version;

/// One upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// A short name used in logs and metric labels.
    pub name: String,
    pub url: Uri,
    pub version: Version,
    pub timeout: Duration,
    /// Sent with every request (Authorization, a fixed X-Scope-OrgID, ...).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Copied from the incoming request to the upstream one when present and not fixed by
    /// `headers`.
    pub tenant_header: Option<HeaderName>,
    /// Credentials, TLS and proxy settings, opened (files read, TLS configured); `None` for an
    /// upstream with none of them, which the forwarder's shared client serves (over https
    /// with the system's roots).
    pub client: Option<Arc<UpstreamClient>>,
}

/// A password, token or proxy password: never printed, whichever way it is formatted.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value itself, for the request header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// A secret written in the config, or a file holding it (re-read when it changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(Secret),
    File(PathBuf),
}

/// An upstream's HTTP client settings, as validated: data only (`client::UpstreamClient`
/// opens them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub tls: TlsSettings,
    pub proxy: Option<ProxySettings>,
}

impl ClientSettings {
    /// Nothing set: the forwarder's shared client will do.
    pub fn is_default(&self) -> bool {
        *self == ClientSettings::default()
    }
}

/// `basic_auth`: `Authorization: Basic base64(username:password)`; a missing password is empty,
/// as in Prometheus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<SecretSource>,
}

/// `authorization`: `Authorization: <type> <credentials>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// `Bearer` unless set.
    pub kind: String,
    pub credentials: Option<SecretSource>,
}

/// `tls_config`. The files are re-read when they change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Trust only this CA bundle instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (with `key_file`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate is checked against (and sent as SNI) instead of the
    /// URL's host.
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub min_version: TlsVersion,
}

/// The lowest TLS version offered. rustls speaks only 1.2 and 1.3.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

/// `proxy_url`: an `http://` proxy; requests go through an HTTP CONNECT tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// The proxy's address, without its userinfo.
    pub url: Uri,
    /// `Proxy-Authorization: Basic ...` from the URL's userinfo.
    pub auth: Option<(String, Secret)>,
}
