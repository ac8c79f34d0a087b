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

/// How many series ahead of its lookup a series' memo slot is asked for.
const AHEAD: usize = 16;

/// The memo's answer for one series, found before the labels are validated.
#[derive(Debug, Clone, Copy)]
pub(super) struct Looked {
    key: u64,
    known: Option<Known>,
    /// Known, keyed on wire bytes that are all ASCII: see [`vouched`].
    vouched: bool,
}

/// Look every series of `req` up in the memo, before validation, for [`vouched`] and then
/// [`stage`]. Nothing to do without rules.
pub fn lookup(rules: &RuleSet, req: &Parsed, buf: &[u8], scratch: &mut Scratch) {
    scratch.looked.clear();
    scratch.table = None;
    if rules.is_empty() {
        return;
    }
    // One table for the whole request: no lock per series (see `memo`).
    let table = rules.memo.table();
    // Every key first, then each slot asked for `AHEAD` series before it is read, so that
    // the lookups' cache misses overlap (as the guard's fresh table does). Past a hundred
    // thousand series the table outgrows the caches, and with each lookup right after its
    // hash, waiting for its own line alone, `lookup` was 41 % of a relabeled request.
    for i in 0..req.len() {
        let view = req.series(buf, i);
        let (key, wire) = rules.memo.series_key_and_bytes(&view, &mut scratch.key);
        scratch.looked.push(Looked {
            key,
            known: None,
            vouched: wire.is_some_and(crate::wire::is_ascii),
        });
    }
    for l in scratch.looked.iter().take(AHEAD) {
        table.prefetch(l.key);
    }
    for i in 0..scratch.looked.len() {
        if let Some(ahead) = scratch.looked.get(i + AHEAD) {
            table.prefetch(ahead.key);
        }
        let l = &mut scratch.looked[i];
        l.known = table.get(l.key);
        l.vouched &= l.known.is_some();
    }
    scratch.table = Some(table);
}

/// Whether series `i`'s labels need no validation (only `SeriesView::validate_samples`)
/// because the memo vouches for them: it remembers only series that passed validation
/// (`stage` runs on validated requests), and the key hashed the wire bytes that determine
/// the labels (`SeriesView::label_fields`, or the canonical labels), so a hit means these
/// labels were seen and found valid before.
///
/// That rests on the 64-bit seeded key not colliding (about `n / 2⁶⁴` per series with `n`
/// series remembered; the seed is random per rule set, so no one can aim for it). A collision
/// must never let invalid UTF-8 through, so that part does not rest on the hash: the hashed
/// bytes must also be all ASCII, checked here a word at a time. Every label name and value
/// lies whole inside those bytes, so all-ASCII bytes mean ASCII, hence UTF-8, labels, whichever
/// series they belong to. What a collision could let through is a series without `__name__`
/// or with an empty or repeated label name, forwarded as the sender sent it; the guard's
/// admission trusts the same kind of ids.
pub fn vouched(scratch: &Scratch, i: usize) -> bool {
    scratch.looked.get(i).is_some_and(|l| l.vouched)
}

/// Relabel every series of `req` (parsed from `buf`), the first stage to write `decisions`.
/// The series must have passed validation: the memo remembers what `process` saw as valid.
pub fn stage(
    rules: &RuleSet,
    req: &Parsed,
    buf: &[u8],
    decisions: &mut Decisions,
    scratch: &mut Scratch,
) -> RelabelCounts {
    lookup(rules, req, buf, scratch);
    stage_looked_up(rules, req, buf, decisions, scratch)
}

/// [`stage`] after [`lookup`] (which the pipeline runs before validation).
pub fn stage_looked_up(
    rules: &RuleSet,
    req: &Parsed,
    buf: &[u8],
    decisions: &mut Decisions,
    scratch: &mut Scratch,
) -> RelabelCounts {
    let mut c = RelabelCounts::default();
    let Some(mut memo) = scratch.table.take() else {
        return c;
    };
    let looked = std::mem::take(&mut scratch.looked);
    for (i, l) in looked.iter().enumerate().take(req.len()) {
        let view = req.series(buf, i);
        // Series repeat every scrape: a known outcome skips the rules (see `memo`).
        let outcome = match l.known {
            Some(Known::Unchanged) => Relabeled::Unchanged,
            Some(Known::Dropped) => Relabeled::Dropped,
            None => {
                let key = l.key;
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
    scratch.looked = looked;
    scratch.looked.clear();
    c
}
