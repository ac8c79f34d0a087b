//! An upstream's own HTTP client, opened from its `ClientSettings`: the `Authorization` header
//! (basic auth or a typed credential, inline or from a file) and, when it has TLS or proxy
//! settings, its own connection pool. Files are re-read when they change (`watched`).
//!
//! Connections are made by hyper-util's pooled client over hyper-rustls; a proxy is reached
//! with hyper-util's HTTP CONNECT `Tunnel`, for http and https upstreams alike.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::Full;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::config::{ClientSettings, SecretSource};
use super::tls;
use super::watched::Watched;

/// The TCP side of every upstream connection.
pub fn http_connector() -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_keepalive(Some(Duration::from_secs(60)));
    c.set_connect_timeout(Some(Duration::from_secs(5)));
    // hyper-rustls decides the scheme.
    c.enforce_http(false);
    c
}

/// A pooled client over `connector`.
pub fn pooled<C: Connect + Clone + Send + Sync + 'static>(connector: C) -> Client<C, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

pub type Shared = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The shared client of upstreams without settings of their own: http, or https checked
/// against the system's roots.
pub fn shared() -> Shared {
    pooled(https(tls::default_config(), None).wrap_connector(http_connector()))
}

fn https(
    config: ClientConfig,
    server_name: Option<&ServerName<'static>>,
) -> HttpsConnectorBuilder<hyper_rustls::builderstates::WantsProtocols2> {
    let mut b = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    if let Some(name) = server_name {
        b = b.with_server_name_resolver(FixedServerNameResolver::new(name.clone()));
    }
    // HTTP/1.1 only, as Prometheus's remote_write does by default (`enable_http2: false`).
    b.enable_http1()
}

/// A connection pool with an upstream's own TLS configuration, directly or through a proxy.
enum Transport {
    Direct(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
    Tunnel(Client<HttpsConnector<Tunnel<HttpConnector>>, Full<Bytes>>),
}

impl Transport {
    fn open(settings: &ClientSettings) -> Result<Transport, String> {
        let config = tls::client_config(&settings.tls)?;
        let name = match &settings.tls.server_name {
            None => None,
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| format!("tls_config.server_name {n:?}: {e}"))?,
            ),
        };
        let b = https(config, name.as_ref());
        Ok(match &settings.proxy {
            None => Transport::Direct(pooled(b.wrap_connector(http_connector()))),
            Some(p) => {
                let mut tunnel = Tunnel::new(p.url.clone(), http_connector());
                if let Some((user, password)) = &p.auth {
                    tunnel = tunnel.with_auth(basic(user, password.expose())?);
                }
                Transport::Tunnel(pooled(b.wrap_connector(tunnel)))
            }
        })
    }

    fn request(&self, req: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            Transport::Direct(c) => c.request(req),
            Transport::Tunnel(c) => c.request(req),
        }
    }
}

/// The `Authorization` value and the secret in it (for redaction).
struct Credential {
    header: HeaderValue,
    secret: String,
}

/// An upstream's settings, opened.
pub struct UpstreamClient {
    settings: ClientSettings,
    auth: Option<Watched<Credential>>,
    /// `None` when only credentials are set: the shared client carries the requests.
    transport: Option<Watched<Transport>>,
}

impl UpstreamClient {
    /// Read the files and set up TLS. `upstream` names the upstream in the rebuild log lines.
    /// Errors name the key and file, never a secret.
    pub fn open(upstream: &str, settings: ClientSettings) -> Result<UpstreamClient, String> {
        let auth = credential_source(&settings)
            .map(|(paths, build)| {
                Watched::new(format!("upstream {upstream}: credentials"), paths, build)
            })
            .transpose()?;
        let needs_own_pool = settings.tls != Default::default() || settings.proxy.is_some();
        let transport = if needs_own_pool {
            let tls = &settings.tls;
            let paths = [&tls.ca_file, &tls.cert_file, &tls.key_file]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            let s = settings.clone();
            Some(Watched::new(
                format!("upstream {upstream}: tls_config"),
                paths,
                move || Transport::open(&s),
            )?)
        } else {
            None
        };
        Ok(UpstreamClient {
            settings,
            auth,
            transport,
        })
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Set the `Authorization` header (over a configured one: validation refuses both).
    pub fn authorize(&self, h: &mut HeaderMap) {
        if let Some(a) = &self.auth {
            h.insert(AUTHORIZATION, a.get().header.clone());
        }
    }

    /// Send through this upstream's own pool, or the shared one when it has none.
    pub fn request(&self, req: Request<Full<Bytes>>, shared: &Shared) -> ResponseFuture {
        match &self.transport {
            Some(t) => t.get().request(req),
            None => shared.request(req),
        }
    }

    /// The secrets an upstream's error body may echo: the password or token in force, and the
    /// encoded header value. Error path only.
    pub fn secrets(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(a) = &self.auth {
            let c = a.get();
            out.push(c.secret.as_bytes().to_vec());
            out.extend(
                c.header
                    .as_bytes()
                    .split(u8::is_ascii_whitespace)
                    .map(<[u8]>::to_vec),
            );
        }
        if let Some((_, p)) = self.settings.proxy.as_ref().and_then(|p| p.auth.as_ref()) {
            out.push(p.expose().as_bytes().to_vec());
        }
        out
    }
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.fmt(f)
    }
}

/// Two clients are the same when opened from the same settings (config comparison).
impl PartialEq for UpstreamClient {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

type BuildCredential = Box<dyn Fn() -> Result<Credential, String> + Send + Sync>;

/// The files and builder of the `Authorization` value, if the settings have credentials.
fn credential_source(s: &ClientSettings) -> Option<(Vec<PathBuf>, BuildCredential)> {
    if let Some(b) = &s.basic_auth {
        let user = b.username.clone();
        let source = b.password.clone();
        let paths = file_of(source.as_ref());
        return Some((
            paths.into_iter().collect(),
            Box::new(move || {
                let password = read_secret(source.as_ref(), "basic_auth.password_file")?;
                Ok(Credential {
                    header: basic(&user, &password)?,
                    secret: password,
                })
            }),
        ));
    }
    let a = s.authorization.as_ref()?;
    let kind = a.kind.clone();
    let source = a.credentials.clone();
    let paths = file_of(source.as_ref());
    Some((
        paths.into_iter().collect(),
        Box::new(move || {
            let token = read_secret(source.as_ref(), "authorization.credentials_file")?;
            let mut header = HeaderValue::try_from(format!("{kind} {token}")).map_err(|_| {
                "authorization: the credentials are not usable in an HTTP header".to_string()
            })?;
            header.set_sensitive(true);
            Ok(Credential {
                header,
                secret: token,
            })
        }),
    ))
}

fn file_of(source: Option<&SecretSource>) -> Option<PathBuf> {
    match source {
        Some(SecretSource::File(p)) => Some(p.clone()),
        _ => None,
    }
}

/// A secret's value; a file's content without surrounding whitespace, as Prometheus reads it.
fn read_secret(source: Option<&SecretSource>, key: &str) -> Result<String, String> {
    match source {
        None => Ok(String::new()),
        Some(SecretSource::Inline(s)) => Ok(s.expose().to_string()),
        Some(SecretSource::File(p)) => std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("{key} {}: {e}", p.display())),
    }
}

fn basic(user: &str, password: &str) -> Result<HeaderValue, String> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut v = HeaderValue::try_from(format!("Basic {encoded}"))
        .map_err(|_| "basic_auth: not usable in an HTTP header".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}
