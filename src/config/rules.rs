//! `rule_files:` and `rules:` as written, their validation into `rules::RulesConfig`, and the
//! loading of the rule files they name.
//!
//! Rule files are named like Prometheus names them (globs, relative to the config file's
//! directory) and are loaded with the config, so a reload with a broken rule file keeps the
//! old config and rules, exactly as a broken config does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::errors::Errors;
use super::{ConfigError, ConfigErrors};
use crate::duration::PromDuration;
use crate::rules::file;
use crate::rules::RulesConfig;

/// `rules:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    pub evaluation_interval: Option<Spanned<PromDuration>>,
    pub query_offset: Option<Spanned<PromDuration>>,
    pub max_buffered_series: Option<Spanned<usize>>,
    pub max_samples_per_series: Option<Spanned<usize>>,
    pub max_output_queue_samples: Option<Spanned<usize>>,
    pub max_buffered_label_bytes: Option<Spanned<super::raw::ByteSize>>,
    pub max_output_queue_bytes: Option<Spanned<super::raw::ByteSize>>,
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
        for (path, raw, field) in [
            (
                "rules.max_buffered_label_bytes",
                &r.max_buffered_label_bytes,
                &mut c.max_buffered_label_bytes,
            ),
            (
                "rules.max_output_queue_bytes",
                &r.max_output_queue_bytes,
                &mut c.max_output_queue_bytes,
            ),
        ] {
            if let Some(v) = raw {
                if v.value.0 < 1 << 20 {
                    errs.push(path, v, "must be at least 1MiB");
                }
                *field = usize::try_from(v.value.0.max(1 << 20)).unwrap_or(usize::MAX);
            }
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
