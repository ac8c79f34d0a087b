//! Configuration: YAML (and command-line overrides) in, one validated, immutable `Config` out.
//!
//! Two phases, as in Prometheus and vector: `raw` mirrors the file with strict serde types
//! (unknown fields are errors), then `validate` turns it into compiled values and reports every
//! problem at once (`errors`), each with its YAML path and line. A running server holds the
//! result behind an `ArcSwap` and replaces it whole on reload.
//!
//! One direction only: each section file (`guard`, `route`, `rules`, ...) checks its raw part
//! and builds the validated type its stage owns (`guard::GuardConfig`, `route::Routing`,
//! `rules::RulesConfig`, `forward::UpstreamConfig`); `validate` assembles them into `Config`.
//! No stage imports this module.

mod errors;
pub mod guard;
mod overrides;
mod raw;
pub mod relabel;
pub mod route;
pub mod rules;
pub mod schema;
mod server;
pub mod storage;
mod upstream;
mod validate;

use std::path::Path;
use std::sync::Arc;

use crate::wire::Limits;

pub use errors::{ConfigError, ConfigErrors};
pub use overrides::Overrides;
pub use raw::ByteSize;
// The stages own their validated types; these paths are kept for callers outside the stages.
pub use crate::forward::UpstreamConfig;
pub use crate::guard::{Action, Budget, GuardConfig};
pub use crate::ingest::ServerConfig;

/// The validated configuration. Everything in it has been checked; nothing is parsed later.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: RequestLimits,
    /// The cardinality guard; `None` forwards everything (a pure pass-through).
    pub guard: Option<GuardConfig>,
    /// Label schema and redaction at admission; `None` checks only the wire-level caps.
    pub schema: Option<crate::schema::SchemaConfig>,
    /// Recording rules (`rule_files:` and `rules:`); no groups means no rules.
    pub rules: crate::rules::RulesConfig,
    /// `relabel_configs:` applied to every series at ingest, before the schema and the guard.
    pub relabel: crate::relabel::RuleSet,
    /// Where accepted series go: `upstreams:` and `routes:`, or a single `upstream:` as a
    /// one-route routing. `None` only before flags were applied; `serve` refuses to start
    /// without one.
    pub routing: Option<Arc<crate::route::Routing>>,
    /// `storage:`: where state survives restarts, and how often it is saved.
    pub storage: crate::storage::StorageConfig,
}

/// Caps on incoming write requests.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLimits {
    /// Largest compressed body (413 beyond it).
    pub max_body_bytes: usize,
    /// Caps applied while decoding (400 beyond them).
    pub wire: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            limits: RequestLimits {
                max_body_bytes: 32 << 20,
                wire: Limits::default(),
            },
            guard: None,
            schema: None,
            rules: crate::rules::RulesConfig::default(),
            relabel: crate::relabel::RuleSet::default(),
            routing: None,
            storage: crate::storage::StorageConfig::default(),
        }
    }
}

impl Config {
    /// Parse and validate a YAML document. `Err` lists every problem found.
    pub fn from_yaml(yaml: &str) -> Result<Config, ConfigErrors> {
        let raw = raw::parse(yaml)?;
        validate::validate(raw)
    }

    /// Read, parse and validate a file and the rule files it lists; errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let mut config = Self::read(path)?;
        rules::load_groups(&mut config.rules, base_dir(Some(path)), &[])?;
        Ok(config)
    }

    /// The config file alone, without its rule files.
    fn read(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::single(ConfigError {
                path: String::new(),
                line: None,
                message: format!("cannot read {}: {e}", path.display()),
            })
        })?;
        Self::from_yaml(&text).map_err(|e| e.in_file(path))
    }

    /// Load `path` (or start from defaults), then apply command-line overrides.
    pub fn load_with(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        let mut config = match path {
            Some(p) => Self::read(p)?,
            None => Config::default(),
        };
        overrides.apply(&mut config)?;
        rules::load_groups(&mut config.rules, base_dir(path), &overrides.rule_files)?;
        Ok(config)
    }
}

/// The rule tasks read the config in force through this, on every round.
impl crate::rules::InForce for Config {
    fn rules(&self) -> &crate::rules::RulesConfig {
        &self.rules
    }
    fn routing(&self) -> Option<&Arc<crate::route::Routing>> {
        self.routing.as_ref()
    }
}

/// Rule file globs are relative to the config file's directory, as in Prometheus.
fn base_dir(config_file: Option<&Path>) -> &Path {
    config_file
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod tests;
