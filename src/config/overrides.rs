//! Command-line settings that override the config file (flags win, as in Prometheus).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::upstream::{parse_upstream_url, parse_version};
use super::{Config, ConfigError, ConfigErrors};
use crate::forward::UpstreamConfig;
use crate::guard::GuardConfig;
use crate::route::Routing;
use crate::wire::Version;

/// The flags that override the file.
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
    /// `--storage.path`: where state survives restarts.
    pub storage_path: Option<std::path::PathBuf>,
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
        if let Some(p) = &self.storage_path {
            c.storage.path = Some(p.clone());
        }
        if let Some(a) = self.listen_address {
            c.server.listen_address = a;
        }
        if c.routing.as_ref().is_some_and(|r| !r.single)
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
            match single_upstream(c) {
                Some(up) => up.url = url,
                None => {
                    c.routing = Some(Arc::new(Routing::single(UpstreamConfig {
                        name: "default".into(),
                        url,
                        version: Version::V1,
                        timeout: Duration::from_secs(30),
                        headers: Vec::new(),
                        tenant_header: Some(HeaderName::from_static("x-scope-orgid")),
                        client: None,
                    })))
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
        if let Some(up) = single_upstream(c) {
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

/// The upstream of a single `upstream:`, if the config has one (not `upstreams:`).
fn single_upstream(c: &mut Config) -> Option<&mut UpstreamConfig> {
    c.routing.as_mut().and_then(|r| {
        if !r.single {
            return None;
        }
        Arc::make_mut(r).single_upstream_mut()
    })
}
