//! The config file as written: strict serde types, no interpretation beyond types.
//! Values whose meaning is checked later carry their location (`Spanned`) so that the
//! validation phase can name the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, ConfigErrors};
use crate::duration::PromDuration;
use crate::forward::Secret;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub limits: RawLimits,
    pub upstream: Option<Spanned<RawUpstream>>,
    pub guard: Option<super::guard::RawGuard>,
    pub schema: Option<super::schema::RawSchema>,
    #[serde(default)]
    pub rule_files: Vec<Spanned<String>>,
    pub rules: Option<super::rules::RawRules>,
    // Relabeling and routing (config/relabel.rs, config/route.rs).
    #[serde(default)]
    pub relabel_configs: Vec<Spanned<super::relabel::RawRelabel>>,
    pub upstreams: Option<Spanned<Vec<Spanned<RawUpstream>>>>,
    #[serde(default)]
    pub routes: Vec<Spanned<super::route::RawRoute>>,
    pub tenant_header: Option<Spanned<String>>,
    pub storage: Option<super::storage::RawStorage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen_address: Option<Spanned<String>>,
    pub max_inflight_requests: Option<Spanned<usize>>,
    pub shutdown_grace_period: Option<PromDuration>,
    pub shutdown_drain_delay: Option<PromDuration>,
    // Slow senders and connection floods (config/server.rs).
    pub max_connections: Option<Spanned<usize>>,
    pub header_read_timeout: Option<Spanned<PromDuration>>,
    pub max_body_bytes_reading: Option<Spanned<ByteSize>>,
    pub body_reading_wait: Option<Spanned<PromDuration>>,
    pub body_read_timeout: Option<Spanned<PromDuration>>,
    pub body_min_rate: Option<Spanned<ByteSize>>,
    pub body_rate_grace_period: Option<Spanned<PromDuration>>,
    pub http2_max_concurrent_streams: Option<Spanned<u32>>,
    pub http2_keep_alive_interval: Option<Spanned<PromDuration>>,
    pub http2_keep_alive_timeout: Option<Spanned<PromDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_size: Option<Spanned<ByteSize>>,
    pub max_decoded_size: Option<Spanned<ByteSize>>,
    pub max_series_per_request: Option<Spanned<usize>>,
    pub max_labels_per_series: Option<Spanned<usize>>,
    pub max_label_name_length: Option<Spanned<usize>>,
    pub max_label_value_length: Option<Spanned<usize>>,
    pub max_symbols_per_request: Option<Spanned<usize>>,
    pub max_output_size: Option<Spanned<ByteSize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Option<Spanned<String>>,
    pub url: Spanned<String>,
    pub remote_write_version: Option<Spanned<String>>,
    pub remote_timeout: Option<Spanned<PromDuration>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    pub tenant_header: Option<Spanned<String>>,
    // Prometheus's remote_write HTTP client settings (config/upstream.rs).
    pub basic_auth: Option<Spanned<RawBasicAuth>>,
    pub authorization: Option<Spanned<RawAuthorization>>,
    pub tls_config: Option<Spanned<RawTlsConfig>>,
    pub proxy_url: Option<Spanned<Secret>>,
    /// Refused at validation with a message: read only to say so.
    pub sigv4: Option<Spanned<serde::de::IgnoredAny>>,
}

/// Parse YAML into the raw types. Serde stops at the first problem, so this reports one error;
/// the semantic checks that follow report all of theirs together.
pub fn parse(yaml: &str) -> Result<RawConfig, ConfigErrors> {
    if yaml.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_saphyr::from_str::<Option<RawConfig>>(yaml)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            let line = e.location().map(|l| l.line()).filter(|&l| l > 0);
            ConfigErrors::single(ConfigError {
                path: String::new(),
                line,
                message: first_line(&e.to_string()),
            })
        })
}

/// serde-saphyr renders a source snippet after the message; one line is what a log wants.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

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

/// `basic_auth:` of an upstream, as in Prometheus.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    #[serde(default)]
    pub username: String,
    pub password: Option<Spanned<Secret>>,
    pub password_file: Option<Spanned<String>>,
}

/// `authorization:` of an upstream, as in Prometheus.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorization {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub credentials: Option<Spanned<Secret>>,
    pub credentials_file: Option<Spanned<String>>,
}

/// `tls_config:` of an upstream, as in Prometheus.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsConfig {
    pub ca_file: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    pub min_version: Option<Spanned<String>>,
}
