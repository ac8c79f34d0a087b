//! Prometheus `relabel_config`, applied to series at ingest (and per route).
//!
//! Semantics follow Prometheus's `model/relabel` exactly: defaults (separator `;`, regex
//! `(.*)` anchored as `^(?:…)$`, replacement `$1`, action `replace`), every action, the same
//! validation errors, `$1`/`${1}`/`$name` expansion as Go's `Regexp.Expand`, and the
//! `labels.Builder` model underneath (a label set to the empty value is deleted; `labelmap`,
//! `labeldrop` and `labelkeep` iterate a snapshot: untouched labels first, then the ones set by
//! earlier rules, in the order they were set).
//!
//! `rule` compiles a config entry; `apply` runs a rule list over borrowed `(&[u8], &[u8])`
//! label pairs and allocates only for series that change.
//! `memo` remembers, per rule set, the series the rules leave unchanged or drop, so repeated
//! traffic (the same series every scrape) skips the rules; `stage` consults it.

mod apply;
mod memo;
pub mod metrics;
mod prefilter;
mod rule;
mod stage;
mod template;
#[cfg(test)]
mod tests;

pub use apply::{process, Relabeled, Scratch};
pub use memo::MAX_ENTRIES as MEMO_MAX_ENTRIES;
pub use rule::{is_valid_label_name, Action, Rule, RuleSet, RuleSpec};
pub use stage::{lookup, stage, stage_looked_up, vouched, RelabelCounts};
