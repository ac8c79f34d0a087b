//! The relabel stage of the pipeline: every series of a request through `relabel_configs`,
//! results into the pipeline's per-series `rewrites` (changed labels) and `decided` (drops).

use super::memo::Known;
use super::{process, Outcome, RuleSet, Scratch};
use crate::guard::schema::OwnedLabels;
use crate::guard::{Reason, Verdict};
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

/// Relabel every series of `req` (parsed from `buf`). `rewrites` and `decided` are sized to
/// the request only when a series changes or is dropped, as the later stages expect.
pub fn stage(
    rules: &RuleSet,
    req: &Parsed,
    buf: &[u8],
    rewrites: &mut Vec<Option<OwnedLabels>>,
    decided: &mut Vec<Verdict>,
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
                if rewrites.is_empty() {
                    rewrites.resize(req.len(), None);
                }
                rewrites[i] = Some(labels);
                c.rewritten_series += 1;
            }
            Outcome::Dropped => {
                if decided.is_empty() {
                    decided.resize(req.len(), Verdict::Keep);
                }
                decided[i] = Verdict::Drop(Reason::Relabel);
                c.dropped_series += 1;
                c.dropped_samples += (view.sample_count() + view.histogram_count()) as u64;
            }
        }
    }
    c
}
