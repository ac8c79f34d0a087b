//! The schema stage of the pipeline: every series still kept is redacted, then checked against
//! the schema on its labels as redacted; redactions and drops go into the request's
//! `Decisions`, a `reject` rule refuses the whole request.

use super::{check, redact, SchemaAction, SchemaConfig, SchemaRule};
use crate::series::{Decisions, DropCounts, Reason, Verdict};
use crate::wire::Parsed;

/// What the stage did to one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemaCounts {
    /// Series dropped, by the rule they broke (indexed like `SchemaRule::ALL`).
    pub dropped_by_rule: [u64; SchemaRule::ALL.len()],
    pub dropped_series: u64,
    /// Samples and histogram samples of the dropped series.
    pub dropped_samples: u64,
    /// Series whose labels were redacted.
    pub redacted_series: u64,
}

impl SchemaCounts {
    pub fn dropped(&self) -> DropCounts {
        DropCounts {
            dropped_series: self.dropped_series,
            dropped_samples: self.dropped_samples,
        }
    }
}

/// A series broke a rule whose action is `reject`: the request is refused (400).
#[derive(Debug, thiserror::Error)]
#[error("series {series}: schema: {reason}")]
pub struct Rejected {
    /// Index of the series in the request.
    pub series: usize,
    /// One line: the rule and what broke it.
    pub reason: String,
}

/// Redact and check every series of `req` (parsed from `buf`) that no earlier stage dropped.
pub fn stage(
    cfg: &SchemaConfig,
    req: &Parsed,
    buf: &[u8],
    decisions: &mut Decisions,
) -> Result<SchemaCounts, Rejected> {
    let mut c = SchemaCounts::default();
    for i in 0..req.len() {
        if !decisions.kept(i) {
            continue; // dropped by relabeling
        }
        // Redaction first: no later stage may see a redacted value. Then the schema, on the
        // labels as redacted.
        if let Some(owned) = redact(cfg, decisions.labels(req, buf, i)) {
            decisions.rewrite(i, owned);
            c.redacted_series += 1;
        }
        if let Some((rule, action, reason)) = check(cfg, decisions.labels(req, buf, i)) {
            if action == SchemaAction::Reject {
                return Err(Rejected { series: i, reason });
            }
            decisions.decide(i, Verdict::Drop(Reason::Schema(rule)));
            let view = req.series(buf, i);
            c.dropped_by_rule[rule as usize] += 1;
            c.dropped_series += 1;
            c.dropped_samples += (view.sample_count() + view.histogram_count()) as u64;
        }
    }
    Ok(c)
}
