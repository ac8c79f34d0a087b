//! `--web.config.file`: Prometheus's web configuration file (the exporter toolkit's format,
//! <https://prometheus.io/docs/prometheus/latest/configuration/https/>), parsed strictly and
//! validated into `WebConfig` once per version of the file. Every problem is reported, each
//! with its key; passwords and hashes never appear in an error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

/// One problem in a web config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("{0}")]
    Yaml(String),
    #[error("tls_server_config.{0} is required when tls_server_config is set")]
    Missing(&'static str),
    #[error(
        "tls_server_config.client_ca_file is set but client_auth_type is NoClientCert \
         (set client_auth_type to VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
    )]
    CaWithoutClientAuth,
    #[error(
        "tls_server_config.client_auth_type {0:?} verifies certificates: it needs client_ca_file"
    )]
    ClientAuthWithoutCa(ClientAuth),
    #[error("tls_server_config.min_version {min} is above max_version {max}")]
    VersionsReversed { min: TlsVersion, max: TlsVersion },
    #[error(
        "tls_server_config.cipher_suites: {0:?} is not a TLS 1.2 cipher suite cardguard offers"
    )]
    UnknownCipherSuite(String),
    #[error("basic_auth_users: {0:?} cannot be a basic auth user name (empty, or with ':')")]
    BadUser(String),
    #[error("basic_auth_users.{0}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)")]
    BadHash(String),
    #[error("http_server_config.headers: {0:?} cannot be set (Prometheus allows Content-Security-Policy, X-Frame-Options, X-Content-Type-Options, X-XSS-Protection and Strict-Transport-Security)")]
    HeaderNotAllowed(String),
    #[error("http_server_config.headers.{0}: not a valid header value")]
    BadHeaderValue(String),
    #[error("tenant_from_user needs basic_auth_users (the user is the tenant)")]
    TenantWithoutUsers,
    #[error(
        "basic_auth_users: {0:?} cannot be a tenant (tenant_from_user): not a valid header value"
    )]
    UserNotATenant(String),
    #[error("tls_server_config: {0}")]
    Tls(String),
    /// A certificate, key or CA file that does not load (reported when the TLS settings are
    /// built, which reads the files).
    #[error("tls_server_config.{key} {path}: {message}")]
    File {
        key: &'static str,
        path: String,
        message: String,
    },
}

/// Every problem in one version of a web config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct WebConfigErrors {
    pub file: String,
    pub errors: Vec<WebConfigError>,
}

impl fmt::Display for WebConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {e}", self.file)?;
        }
        Ok(())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: RawHttp,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    /// cardguard's own key (the exporter toolkit does not know it).
    #[serde(default)]
    tenant_from_user: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: ClientAuth,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: TlsVersion,
    #[serde(default = "tls13")]
    max_version: TlsVersion,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default = "yes")]
    prefer_server_cipher_suites: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "yes")]
    http2: bool,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            http2: true,
            headers: BTreeMap::new(),
        }
    }
}

fn yes() -> bool {
    true
}

fn tls13() -> TlsVersion {
    TlsVersion::TLS13
}

/// `client_auth_type`, with Go's `tls.ClientAuthType` names as the exporter toolkit spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    /// Asked for, not required, not verified.
    RequestClientCert,
    /// Required, not verified.
    RequireAnyClientCert,
    /// Verified against `client_ca_file` when sent.
    VerifyClientCertIfGiven,
    /// Required and verified against `client_ca_file`.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// `min_version` / `max_version`. TLS 1.0 and 1.1 are not offered (rustls has neither).
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
pub enum TlsVersion {
    #[default]
    TLS12,
    TLS13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A validated web config. Paths are resolved against the web config file's directory, as
/// the exporter toolkit does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebConfig {
    pub tls: Option<TlsServerSettings>,
    /// Offer HTTP/2 by ALPN (HTTP/2 without TLS is detected from the preface either way).
    pub http2: bool,
    /// Added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// User name → bcrypt hash. Empty: no authentication.
    pub users: BTreeMap<String, String>,
    pub tenant_from_user: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsServerSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 suites by IANA name, in preference order; empty: rustls's defaults. (TLS 1.3's
    /// suites are not configurable, as in Go.)
    pub cipher_suites: Vec<String>,
    pub prefer_server_cipher_suites: bool,
}

impl TlsServerSettings {
    /// The files the TLS settings read, for re-reading them when they change.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.cert_file.clone(), self.key_file.clone()];
        f.extend(self.client_ca_file.clone());
        f
    }
}

/// The headers Prometheus lets `http_server_config.headers` set.
const ALLOWED_HEADERS: [&str; 5] = [
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "x-xss-protection",
    "strict-transport-security",
];

impl WebConfig {
    /// Parse and validate a web config's text; relative paths are taken from `dir`.
    pub fn from_yaml(yaml: &str, dir: &Path) -> Result<WebConfig, Vec<WebConfigError>> {
        // An empty file is a valid, empty config (as in the exporter toolkit).
        let raw: Raw = serde_saphyr::from_str::<Option<Raw>>(yaml)
            .map_err(|e| vec![WebConfigError::Yaml(e.to_string())])?
            .unwrap_or_default();
        let mut errs = Vec::new();
        let tls = raw.tls_server_config.and_then(|t| tls(t, dir, &mut errs));
        let mut headers = Vec::new();
        for (name, value) in &raw.http_server_config.headers {
            let lower = name.to_ascii_lowercase();
            if !ALLOWED_HEADERS.contains(&lower.as_str()) {
                errs.push(WebConfigError::HeaderNotAllowed(name.clone()));
                continue;
            }
            match HeaderValue::from_str(value) {
                Ok(v) => headers.push((HeaderName::from_static(header_static(&lower)), v)),
                Err(_) => errs.push(WebConfigError::BadHeaderValue(name.clone())),
            }
        }
        for (user, hash) in &raw.basic_auth_users {
            if user.is_empty() || user.contains(':') {
                errs.push(WebConfigError::BadUser(user.clone()));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                errs.push(WebConfigError::BadHash(user.clone()));
            }
        }
        if raw.tenant_from_user {
            if raw.basic_auth_users.is_empty() {
                errs.push(WebConfigError::TenantWithoutUsers);
            }
            for user in raw.basic_auth_users.keys() {
                if HeaderValue::from_str(user).is_err() {
                    errs.push(WebConfigError::UserNotATenant(user.clone()));
                }
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(WebConfig {
            tls,
            http2: raw.http_server_config.http2,
            headers,
            users: raw.basic_auth_users,
            tenant_from_user: raw.tenant_from_user,
        })
    }

    /// Read and validate a web config file (not yet the files it names: see `Loaded`).
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigErrors> {
        let in_file = |errors| WebConfigErrors {
            file: path.display().to_string(),
            errors,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| in_file(vec![WebConfigError::Read(e.to_string())]))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        WebConfig::from_yaml(&text, dir).map_err(in_file)
    }
}

fn header_static(lower: &str) -> &'static str {
    ALLOWED_HEADERS
        .iter()
        .find(|h| **h == lower)
        .copied()
        .unwrap_or("x-frame-options")
}

fn tls(t: RawTls, dir: &Path, errs: &mut Vec<WebConfigError>) -> Option<TlsServerSettings> {
    let before = errs.len();
    let cert_file = t.cert_file.map(|p| dir.join(p));
    let key_file = t.key_file.map(|p| dir.join(p));
    if cert_file.is_none() {
        errs.push(WebConfigError::Missing("cert_file"));
    }
    if key_file.is_none() {
        errs.push(WebConfigError::Missing("key_file"));
    }
    let client_ca_file = t.client_ca_file.map(|p| dir.join(p));
    match (t.client_auth_type, &client_ca_file) {
        (ClientAuth::NoClientCert, Some(_)) => errs.push(WebConfigError::CaWithoutClientAuth),
        (a, None) if a.verifies() => errs.push(WebConfigError::ClientAuthWithoutCa(a)),
        _ => {}
    }
    if t.min_version > t.max_version {
        errs.push(WebConfigError::VersionsReversed {
            min: t.min_version,
            max: t.max_version,
        });
    }
    for s in &t.cipher_suites {
        if super::tls::cipher_suite(s).is_none() {
            errs.push(WebConfigError::UnknownCipherSuite(s.clone()));
        }
    }
    if errs.len() > before {
        return None;
    }
    Some(TlsServerSettings {
        cert_file: cert_file?,
        key_file: key_file?,
        client_auth: t.client_auth_type,
        client_ca_file,
        min_version: t.min_version,
        max_version: t.max_version,
        cipher_suites: t.cipher_suites,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites,
    })
}
