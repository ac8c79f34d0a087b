//! `relabel_configs:` (top level, and per route): Prometheus's `relabel_config` entries, as
//! written in a Prometheus config file, compiled into `relabel::Rule`s.

use serde_saphyr::Spanned;

use super::errors::Errors;
use crate::relabel::{Rule, RuleSet, RuleSpec};

/// One `relabel_config` entry: the rule as written is exactly what the file holds.
pub type RawRelabel = RuleSpec;

/// Compile a rule list; each invalid entry is reported at `path[i]`.
pub(super) fn validate(raw: &[Spanned<RawRelabel>], path: &str, errs: &mut Errors) -> RuleSet {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        match Rule::compile(&r.value) {
            Ok(rule) => rules.push(rule),
            Err(m) => errs.push(&format!("{path}[{i}]"), r, m),
        }
    }
    RuleSet::new(rules)
}
