//! The per-series vocabulary every stage shares, owned by none of them: what a stage decided
//! for a series (`Verdict`, `Reason`), labels a stage rewrote (`OwnedLabels`, `Labels`), and
//! `Decisions`, the one record per request that relabel, schema, the guard and the rules' tap
//! write into and that the writer, the route splitter and the tap read from.
//!
//! Depends on the wire reader only, so a stage that runs early (relabel) never imports one that
//! runs later (the guard) to name a decision.

use crate::wire::{LabelsIter, Parsed};

/// Labels owned by cardguard after a rewrite (relabeling, redaction).
pub type OwnedLabels = Vec<(Vec<u8>, Vec<u8>)>;

/// A series' labels: as they came off the wire, or rewritten.
#[derive(Clone)]
pub enum Labels<'a, W> {
    Wire(W),
    Owned(std::slice::Iter<'a, (Vec<u8>, Vec<u8>)>),
}

impl<'a, W> Iterator for Labels<'a, W>
where
    W: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    type Item = (&'a [u8], &'a [u8]);
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Labels::Wire(w) => w.next(),
            Labels::Owned(o) => o.next().map(|(n, v)| (n.as_slice(), v.as_slice())),
        }
    }
}

/// The schema rules, in the order they are checked. The index is stable: it names the rule in
/// metrics (`reason="schema_<name>"`). Defined here rather than in `crate::schema` because a
/// schema drop's `Reason` names its rule; `crate::schema` re-exports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaRule {
    RequiredLabels,
    ForbiddenLabelNames,
    MetricName,
    MaxLabels,
    LabelNameLength,
    LabelValueLength,
}

impl SchemaRule {
    pub const ALL: [SchemaRule; 6] = [
        SchemaRule::RequiredLabels,
        SchemaRule::ForbiddenLabelNames,
        SchemaRule::MetricName,
        SchemaRule::MaxLabels,
        SchemaRule::LabelNameLength,
        SchemaRule::LabelValueLength,
    ];

    /// The config key of the rule (also its name in `actions:` and in metrics).
    pub fn key(self) -> &'static str {
        match self {
            SchemaRule::RequiredLabels => "required_labels",
            SchemaRule::ForbiddenLabelNames => "forbidden_label_names",
            SchemaRule::MetricName => "metric_name_regex",
            SchemaRule::MaxLabels => "max_labels_per_series",
            SchemaRule::LabelNameLength => "max_label_name_length",
            SchemaRule::LabelValueLength => "max_label_value_length",
        }
    }
}

/// Why a series was dropped (or merged into an overflow aggregate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The owner's `max_series`.
    Budget,
    /// A per-metric limit.
    MetricBudget,
    /// A label's distinct-value limit.
    LabelLimit,
    /// The global cap across owners.
    GlobalCap,
    /// A schema rule with action `drop`.
    Schema(SchemaRule),
    /// Dropped by `relabel_configs` (a `keep`/`drop`-style rule) before the guard.
    Relabel,
}

/// Number of distinct reasons (the size of the per-reason counter arrays).
pub const REASONS: usize = 5 + SchemaRule::ALL.len();

impl Reason {
    pub const ALL: [Reason; REASONS] = [
        Reason::Budget,
        Reason::MetricBudget,
        Reason::LabelLimit,
        Reason::GlobalCap,
        Reason::Schema(SchemaRule::RequiredLabels),
        Reason::Schema(SchemaRule::ForbiddenLabelNames),
        Reason::Schema(SchemaRule::MetricName),
        Reason::Schema(SchemaRule::MaxLabels),
        Reason::Schema(SchemaRule::LabelNameLength),
        Reason::Schema(SchemaRule::LabelValueLength),
        Reason::Relabel,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Budget => "budget",
            Reason::MetricBudget => "metric_budget",
            Reason::LabelLimit => "label_limit",
            Reason::GlobalCap => "global_cap",
            Reason::Schema(SchemaRule::RequiredLabels) => "schema_required_labels",
            Reason::Schema(SchemaRule::ForbiddenLabelNames) => "schema_forbidden_label_names",
            Reason::Schema(SchemaRule::MetricName) => "schema_metric_name",
            Reason::Schema(SchemaRule::MaxLabels) => "schema_max_labels",
            Reason::Schema(SchemaRule::LabelNameLength) => "schema_label_name_length",
            Reason::Schema(SchemaRule::LabelValueLength) => "schema_label_value_length",
            Reason::Relabel => "relabel",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Reason::Budget => 0,
            Reason::MetricBudget => 1,
            Reason::LabelLimit => 2,
            Reason::GlobalCap => 3,
            Reason::Schema(r) => 4 + r as usize,
            Reason::Relabel => 4 + SchemaRule::ALL.len(),
        }
    }
}

/// What the stages decided for one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop(Reason),
    /// Over budget with action `relabel`: merged into an overflow aggregate instead.
    Overflow(Reason),
}

/// Series and samples a stage took out of a request by policy. Each stage that drops reports
/// its own; the pipeline adds them up, so no stage's count can stand in for another's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DropCounts {
    pub dropped_series: u64,
    /// Samples and histogram samples of the dropped series.
    pub dropped_samples: u64,
}

impl std::ops::AddAssign for DropCounts {
    fn add_assign(&mut self, other: DropCounts) {
        self.dropped_series += other.dropped_series;
        self.dropped_samples += other.dropped_samples;
    }
}

/// Every stage's decisions for the series of one request, by series index.
///
/// Most requests change nothing, so each table stays empty until a stage records something
/// other than the default (kept, labels as sent, not withheld): answering "all kept" then costs
/// no write per series. Reused from request to request (`reset`), so the tables keep their
/// capacity and a request allocates only for labels it rewrites.
#[derive(Debug, Default)]
pub struct Decisions {
    /// Series in the request.
    len: usize,
    /// Empty: every series kept.
    verdicts: Vec<Verdict>,
    /// Empty: no series rewritten.
    rewrites: Vec<Option<OwnedLabels>>,
    /// Empty: no series withheld.
    withheld: Vec<bool>,
}

impl Decisions {
    /// Start a request of `len` series: every series kept, as sent, not withheld.
    pub fn reset(&mut self, len: usize) {
        self.len = len;
        self.verdicts.clear();
        self.rewrites.clear();
        self.withheld.clear();
    }

    /// The decision for series `i` so far.
    #[inline]
    pub fn verdict(&self, i: usize) -> Verdict {
        self.verdicts.get(i).copied().unwrap_or(Verdict::Keep)
    }

    /// No stage dropped series `i` or merged it into an overflow aggregate.
    #[inline]
    pub fn kept(&self, i: usize) -> bool {
        self.verdict(i) == Verdict::Keep
    }

    /// Why series `i` was dropped or merged into an overflow aggregate, if it was.
    pub fn reason(&self, i: usize) -> Option<Reason> {
        match self.verdict(i) {
            Verdict::Keep => None,
            Verdict::Drop(r) | Verdict::Overflow(r) => Some(r),
        }
    }

    /// Series `i` is kept but held back for the recording rules (`forward_inputs: false`).
    #[inline]
    pub fn withheld(&self, i: usize) -> bool {
        self.withheld.get(i) == Some(&true)
    }

    /// Series `i` goes out: kept and not withheld.
    #[inline]
    pub fn forwarded(&self, i: usize) -> bool {
        self.kept(i) && !self.withheld(i)
    }

    /// The labels of series `i` when a stage rewrote them.
    #[inline]
    pub fn rewritten(&self, i: usize) -> Option<&OwnedLabels> {
        self.rewrites.get(i).and_then(Option::as_ref)
    }

    /// The labels of series `i` of `req` (parsed from `buf`) as the next stage must see them:
    /// rewritten, or as they came off the wire.
    #[inline]
    pub fn labels<'a>(
        &'a self,
        req: &'a Parsed,
        buf: &'a [u8],
        i: usize,
    ) -> Labels<'a, LabelsIter<'a>> {
        match self.rewritten(i) {
            Some(owned) => Labels::Owned(owned.iter()),
            None => Labels::Wire(req.series(buf, i).labels()),
        }
    }

    /// Nothing was dropped, merged, rewritten or withheld: the request can leave as it came.
    pub fn unchanged(&self) -> bool {
        self.verdicts.iter().all(|v| *v == Verdict::Keep)
            && self.rewrites.iter().all(Option::is_none)
            && !self.withheld.contains(&true)
    }

    /// Record the decision for series `i` (replacing any earlier one).
    #[inline]
    pub fn decide(&mut self, i: usize, verdict: Verdict) {
        if self.verdicts.is_empty() {
            if verdict == Verdict::Keep {
                return;
            }
            self.verdicts.resize(self.len, Verdict::Keep);
        }
        self.verdicts[i] = verdict;
    }

    /// Series `i` leaves this stage with `labels` instead of the ones it came with.
    pub fn rewrite(&mut self, i: usize, labels: OwnedLabels) {
        if self.rewrites.is_empty() {
            self.rewrites.resize(self.len, None);
        }
        self.rewrites[i] = Some(labels);
    }

    /// Hold series `i` back from forwarding.
    pub fn withhold(&mut self, i: usize) {
        if self.withheld.is_empty() {
            self.withheld.resize(self.len, false);
        }
        self.withheld[i] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tables_answer_all_kept_until_a_stage_writes() {
        let mut d = Decisions::default();
        d.reset(3);
        d.decide(1, Verdict::Keep);
        assert!(d.verdicts.is_empty(), "a Keep on an empty table stays free");
        assert!(d.unchanged());
        assert!((0..3).all(|i| d.forwarded(i) && d.reason(i).is_none()));

        d.decide(0, Verdict::Drop(Reason::Relabel));
        d.rewrite(1, vec![(b"a".to_vec(), b"1".to_vec())]);
        d.withhold(2);
        assert!(!d.unchanged());
        assert_eq!(d.reason(0), Some(Reason::Relabel));
        assert!(d.kept(1) && d.rewritten(1).is_some() && d.forwarded(1));
        assert!(d.kept(2) && d.withheld(2) && !d.forwarded(2));

        d.reset(2);
        assert!(d.unchanged() && d.rewritten(1).is_none() && !d.withheld(1));
    }
}
