//! The relabel stage of the pipeline: every series of a request through `relabel_configs`,
//! changed labels and drops recorded in the request's `Decisions`.

use super::memo::Known;
use super::{process, Relabeled, RuleSet, Scratch};
use crate::series::{Decisions, DropCounts, Reason, Verdict};
use crate::wire::Parsed;

/// What the stage did to one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelabelCounts {
    pub dropped_series: u64,
    /// Samples and histogram samples of the dropped series.
    pub dropped_samples: u64,
    /// Series whose labels changed (re-encoded; the others keep their raw bytes).
    pub rewritten_series: u64,
}

impl RelabelCounts {
    pub fn dropped(&self) -> DropCounts {
        DropCounts {
            dropped_series: self.dropped_series,
            dropped_samples: self.dropped_samples,
        }
    }
}

/// Relabel every series of `req` (parsed from `buf`), the first stage to write `decisions`.
pub fn stage(
    rules: &RuleSet,
    req: &Parsed,
    buf: &[u8],
    decisions: &mut Decisions,
    scratch: &mut Scratch,
) -> RelabelCounts {
    let mut c = RelabelCounts::default();
    if rules.is_empty() {
        return c;
    }
    // One table for the whole request: no lock per series (see `memo`).
    let mut memo = rules.memo.table();
    for i in 0..req.len() {
        let view = req.series(buf, i);
        // Series repeat every scrape: a known outcome skips the rules (see `memo`).
        let key = rules.memo.series_key(&view, &mut scratch.key);
        let outcome = match memo.get(key) {
            Some(Known::Unchanged) => Relabeled::Unchanged,
            Some(Known::Dropped) => Relabeled::Dropped,
            None => {
                let o = process(rules, view.labels(), scratch);
                match o {
                    Relabeled::Unchanged => rules.memo.insert(&mut memo, key, Known::Unchanged),
                    Relabeled::Dropped => rules.memo.insert(&mut memo, key, Known::Dropped),
                    // Never remembered: the rewritten labels are needed every time.
                    Relabeled::Changed(_) => {}
                }
                o
            }
        };
        match outcome {
            Relabeled::Unchanged => {}
            Relabeled::Changed(labels) => {
                decisions.rewrite(i, labels);
                c.rewritten_series += 1;
            }
            Relabeled::Dropped => {
                decisions.decide(i, Verdict::Drop(Reason::Relabel));
                c.dropped_series += 1;
                c.dropped_samples += (view.sample_count() + view.histogram_count()) as u64;
            }
        }
    }
    c
}
