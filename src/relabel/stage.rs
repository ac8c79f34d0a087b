//! The relabel stage of the pipeline: every series of a request through `relabel_configs`,
//! changed labels and drops recorded in the request's `Decisions`.

use super::memo::Known;
use super::{process, Outcome, RuleSet, Scratch};
use crate::series::{Decisions, Dropped, Reason, Verdict};
use crate::wire::Parsed;

/// What the stage did to one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCounts {
    pub dropped_series: u64,
    /// Samples and histogram samples of the dropped series.
    pub dropped_samples: u64,
    /// Series whose labels changed (re-encoded; the others keep their raw bytes).
    pub rewritten_series: u64,
}

impl StageCounts {
    pub fn dropped(&self) -> Dropped {
        Dropped {
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
) -> StageCounts {
    let mut c = StageCounts::default();
    if rules.is_empty() {
        return c;
    }
    for i in 0..req.len() {
        let view = req.series(buf, i);
        // Series repeat every scrape: a known outcome skips the rules (see `memo`).
        let key = rules.memo.series_key(&view, &mut scratch.key);
        let outcome = match rules.memo.get(key) {
            Some(Known::Unchanged) => Outcome::Unchanged,
            Some(Known::Dropped) => Outcome::Dropped,
            None => {
                let o = process(rules, view.labels(), scratch);
                match o {
                    Outcome::Unchanged => rules.memo.insert(key, Known::Unchanged),
                    Outcome::Dropped => rules.memo.insert(key, Known::Dropped),
                    // Never remembered: the rewritten labels are needed every time.
                    Outcome::Changed(_) => {}
                }
                o
            }
        };
        match outcome {
            Outcome::Unchanged => {}
            Outcome::Changed(labels) => {
                decisions.rewrite(i, labels);
                c.rewritten_series += 1;
            }
            Outcome::Dropped => {
                decisions.decide(i, Verdict::Drop(Reason::Relabel));
                c.dropped_series += 1;
                c.dropped_samples += (view.sample_count() + view.histogram_count()) as u64;
            }
        }
    }
    c
}
