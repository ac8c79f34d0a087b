//! `relabel_configs:` (top level, and per route): Prometheus's `relabel_config` entries, as
//! written in a Prometheus config file, compiled into `relabel::Rule`s.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::validate::Errors;
use crate::relabel::{Rule, RuleSet, RuleSpec};

/// One `relabel_config` entry, keys exactly as Prometheus spells them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelabel {
    /// Labels whose values are joined with `separator` (default `;`).
    pub source_labels: Option<Vec<String>>,
    pub separator: Option<String>,
    /// Anchored at both ends; default `(.*)`.
    pub regex: Option<String>,
    /// `hashmod` only.
    pub modulus: Option<u64>,
    pub target_label: Option<String>,
    /// Default `$1`.
    pub replacement: Option<String>,
    /// Default `replace`.
    pub action: Option<String>,
}

/// Compile a rule list; each invalid entry is reported at `path[i]`.
pub(super) fn validate(raw: &[Spanned<RawRelabel>], path: &str, errs: &mut Errors) -> RuleSet {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let v = &r.value;
        let spec = RuleSpec {
            source_labels: v.source_labels.clone(),
            separator: v.separator.clone(),
            regex: v.regex.clone(),
            modulus: v.modulus,
            target_label: v.target_label.clone(),
            replacement: v.replacement.clone(),
            action: v.action.clone(),
        };
        match Rule::compile(&spec) {
            Ok(rule) => rules.push(rule),
            Err(m) => errs.push(&format!("{path}[{i}]"), r, m),
        }
    }
    RuleSet::new(rules)
}
