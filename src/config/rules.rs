//! `rule_files:` and `rules:`: which Prometheus rule files to evaluate, and cardguard's own
//! settings for evaluating them.
//!
//! Rule files are named like Prometheus names them (globs, relative to the config file's
//! directory) and are loaded with the config, so a reload with a broken rule file keeps the
//! old config and rules, exactly as a broken config does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::validate::Errors;
use super::{ConfigError, ConfigErrors};
use crate::duration::PromDuration;
use crate::rules::file::{self, RuleGroup};

/// `rules:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    pub evaluation_interval: Option<Spanned<PromDuration>>,
    pub query_offset: Option<Spanned<PromDuration>>,
    pub max_buffered_series: Option<Spanned<usize>>,
    pub max_samples_per_series: Option<Spanned<usize>>,
    pub max_output_queue_samples: Option<Spanned<usize>>,
}

/// Recording rules: settings and the groups loaded from the rule files.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesConfig {
    /// For groups that set no `interval` (Prometheus's `global.evaluation_interval`).
    pub evaluation_interval: Duration,
    /// For groups that set no `query_offset`: how far behind the clock a group evaluates, so
    /// that samples still in flight through remote write (queueing, batching, retries) are
    /// in the buffers when their timestamp is evaluated.
    pub query_offset: Duration,
    /// Series the buffers may hold; new ones beyond it are not buffered (counted, logged).
    pub max_buffered_series: usize,
    /// Samples kept per buffered series at most (oldest go first, counted).
    pub max_samples_per_series: usize,
    /// Recorded samples waiting to go upstream; beyond it new results are dropped (counted).
    pub max_output_queue_samples: usize,
    /// `rule_files:` as written (globs, relative to the config file).
    pub rule_files: Vec<String>,
    /// The loaded groups, in file order then group order.
    pub groups: Arc<Vec<Arc<RuleGroup>>>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            evaluation_interval: Duration::from_secs(60),
            query_offset: Duration::from_secs(30),
            max_buffered_series: 1_000_000,
            max_samples_per_series: 4096,
            max_output_queue_samples: 1_000_000,
            rule_files: Vec::new(),
            groups: Arc::new(Vec::new()),
        }
    }
}

pub(super) fn validate(
    raw: Option<&RawRules>,
    files: &[Spanned<String>],
    errs: &mut Errors,
) -> RulesConfig {
    let mut c = RulesConfig::default();
    if let Some(r) = raw {
        if let Some(d) = &r.evaluation_interval {
            if d.value.0.is_zero() {
                errs.push("rules.evaluation_interval", d, "must be greater than 0");
            } else {
                c.evaluation_interval = d.value.0;
            }
        }
        if let Some(d) = &r.query_offset {
            c.query_offset = d.value.0;
        }
        let positive = |errs: &mut Errors, path: &str, v: &Spanned<usize>| {
            if v.value == 0 {
                errs.push(path, v, "must be at least 1");
            }
            v.value.max(1)
        };
        if let Some(v) = &r.max_buffered_series {
            c.max_buffered_series = positive(errs, "rules.max_buffered_series", v);
        }
        if let Some(v) = &r.max_samples_per_series {
            c.max_samples_per_series = positive(errs, "rules.max_samples_per_series", v);
        }
        if let Some(v) = &r.max_output_queue_samples {
            c.max_output_queue_samples = positive(errs, "rules.max_output_queue_samples", v);
        }
    }
    for (i, f) in files.iter().enumerate() {
        if f.value.trim().is_empty() {
            errs.push(&format!("rule_files[{i}]"), f, "must not be empty");
        } else if let Err(e) = glob::Pattern::new(&f.value) {
            errs.push(
                &format!("rule_files[{i}]"),
                f,
                format!("invalid pattern: {e}"),
            );
        }
    }
    c.rule_files = files.iter().map(|f| f.value.clone()).collect();
    c
}

/// Resolve `patterns` (relative to `base`) and `extra` files (as given, e.g. `--rules`), load
/// and check every rule file, and store the groups. Every problem of every file is reported.
pub fn load_groups(
    c: &mut RulesConfig,
    base: &Path,
    extra: &[PathBuf],
) -> Result<(), ConfigErrors> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut errors = Vec::new();
    for p in &c.rule_files {
        let full = if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            base.join(p)
        };
        // A pattern without wildcards names one file, which must exist; a glob may match none
        // (Prometheus does the same).
        let has_magic = p.contains(['*', '?', '[']);
        match glob::glob(&full.to_string_lossy()) {
            Ok(found) => {
                let mut found: Vec<PathBuf> = found.filter_map(Result::ok).collect();
                found.sort();
                if found.is_empty() && !has_magic {
                    errors.push(ConfigError {
                        path: "rule_files".into(),
                        line: None,
                        message: format!("{}: no such file", full.display()),
                    });
                }
                paths.extend(found);
            }
            Err(e) => errors.push(ConfigError {
                path: "rule_files".into(),
                line: None,
                message: format!("{p:?}: invalid pattern: {e}"),
            }),
        }
    }
    paths.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    paths.retain(|p| seen.insert(p.clone()));
    match file::load_files(&paths) {
        Ok(groups) => c.groups = Arc::new(groups.into_iter().map(Arc::new).collect()),
        Err(es) => errors.extend(es.into_iter().map(|e| {
            ConfigError {
                // The rule file's own location leads: `rules/x.yml:12:5: groups[0]...: message`.
                path: match (e.line, e.column) {
                    (Some(l), Some(col)) => format!("{}:{l}:{col}: {}", e.file, e.path),
                    (Some(l), None) => format!("{}:{l}: {}", e.file, e.path),
                    _ => format!("{}: {}", e.file, e.path),
                }
                .trim_end_matches([' ', ':'])
                .to_string(),
                line: None,
                message: e.message,
            }
        })),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors { file: None, errors })
    }
}

#[cfg(test)]
mod tests;
