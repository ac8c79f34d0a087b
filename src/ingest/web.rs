//! The listener's web configuration (`--web.config.file`, Prometheus's format): TLS, basic
//! auth on every endpoint, response headers, and whether the tenant is the authenticated user.
//! `Web` holds the version in force and reads the file again, with the certificates and keys
//! it names, when one of them changes (looked at once a second at most, and on every reload);
//! a broken version keeps the previous one in force, logged and counted. Also
//! `--web.enable-lifecycle`, which `/-/reload` asks.

pub mod auth;
pub mod config;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::HeaderValue;
use prometheus::{IntCounter, IntCounterVec, Registry};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

pub use auth::AuthFailure;
pub use config::{WebConfig, WebConfigError, WebConfigErrors};

use crate::forward::watched::Watched;
use crate::telemetry::{counter, counter_vec};

/// The web flags, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct WebSource {
    /// `--web.config.file`.
    pub config_file: Option<PathBuf>,
    /// `--web.enable-lifecycle`: `POST /-/reload` works (SIGHUP always does).
    pub enable_lifecycle: bool,
}

/// One version of the web config with what was built from it.
pub struct Loaded {
    pub config: WebConfig,
    /// `None`: plain HTTP.
    pub tls: Option<TlsAcceptor>,
    pub users: auth::Users,
}

impl Loaded {
    /// Read the file and every file it names. The files read come back too, to watch.
    pub fn load(path: &Path) -> Result<(Loaded, Vec<PathBuf>), WebConfigErrors> {
        let config = WebConfig::load(path)?;
        let mut files = vec![path.to_path_buf()];
        let tls = match &config.tls {
            None => None,
            Some(t) => {
                files.extend(t.files());
                let c = tls::server_config(t, config.http2).map_err(|e| WebConfigErrors {
                    file: path.display().to_string(),
                    errors: vec![e],
                })?;
                Some(TlsAcceptor::from(Arc::new(c)))
            }
        };
        let users = auth::Users::new(config.users.clone());
        Ok((Loaded { config, tls, users }, files))
    }
}

#[derive(Clone)]
pub struct WebMetrics {
    /// Requests answered 401, by reason (`missing`, `wrong`).
    pub auth_failures: IntCounterVec,
    /// TLS handshakes that failed (a plain-HTTP sender, an untrusted client certificate...).
    pub tls_handshake_failures: IntCounter,
    pub reload_failures: IntCounter,
}

impl WebMetrics {
    pub fn register(r: &Registry) -> Self {
        WebMetrics {
            auth_failures: counter_vec(
                r,
                "cardguard_http_auth_failures_total",
                "Requests answered 401 by basic_auth_users, by reason: missing (no or \
                 undecodable credentials) or wrong (unknown user or wrong password).",
                &["reason"],
            ),
            tls_handshake_failures: counter(
                r,
                "cardguard_tls_handshake_failures_total",
                "Client connections whose TLS handshake failed (timeouts are \
                 cardguard_server_connection_timeouts_total{phase=\"tls\"}).",
            ),
            reload_failures: counter(
                r,
                "cardguard_web_config_reload_failures_total",
                "Changed versions of --web.config.file (or of the files it names) that did not \
                 load; the previous version stays in force.",
            ),
        }
    }
}

/// The web config in force (if any) and the lifecycle flag.
pub struct Web {
    watched: Option<Watched<Loaded>>,
    pub enable_lifecycle: bool,
    pub metrics: WebMetrics,
    /// One bcrypt at a time (see `auth`).
    bcrypt: Arc<Semaphore>,
}

impl Web {
    /// Load the web config named by `source`: an error here means cardguard must not start.
    pub fn new(source: &WebSource, registry: &Registry) -> Result<Web, WebConfigErrors> {
        let metrics = WebMetrics::register(registry);
        let watched = match &source.config_file {
            None => None,
            Some(path) => {
                // Once for the typed errors, then within the watcher.
                Loaded::load(path)?;
                let p = path.clone();
                let failures = metrics.reload_failures.clone();
                let w = Watched::with_files(format!("web config {}", path.display()), move || {
                    Loaded::load(&p).map_err(|e| e.to_string())
                })
                .map_err(|e| WebConfigErrors {
                    file: path.display().to_string(),
                    errors: vec![WebConfigError::Read(e)],
                })?
                .on_failure(move || failures.inc());
                Some(w)
            }
        };
        Ok(Web {
            watched,
            enable_lifecycle: source.enable_lifecycle,
            metrics,
            bcrypt: Arc::new(Semaphore::new(1)),
        })
    }

    /// The version in force, read again first if its files changed.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.watched.as_ref().map(Watched::get)
    }

    /// Look at the files now (on SIGHUP and `/-/reload`).
    pub fn check_now(&self) -> Result<(), String> {
        match &self.watched {
            Some(w) => w.check_now(),
            None => Ok(()),
        }
    }

    /// Authenticate a request under `web` (which has users): the user, or why not.
    pub async fn authenticate(
        &self,
        web: &Arc<Loaded>,
        header: Option<&HeaderValue>,
    ) -> Result<String, AuthFailure> {
        let outcome = match auth::parse(header) {
            None => Err(AuthFailure::Missing),
            Some(c) => match web.users.check(c) {
                Ok(user) => Ok(user),
                Err(pending) => {
                    let Ok(_permit) = self.bcrypt.clone().acquire_owned().await else {
                        return Err(AuthFailure::Wrong);
                    };
                    match tokio::task::spawn_blocking(move || pending.verify()).await {
                        Ok(Ok(v)) => Ok(web.users.remember(v)),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(AuthFailure::Wrong),
                    }
                }
            },
        };
        if let Err(e) = outcome {
            self.metrics
                .auth_failures
                .with_label_values(&[e.reason()])
                .inc();
        }
        outcome
    }
}

#[cfg(test)]
pub(crate) mod tests;
