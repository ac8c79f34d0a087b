//! One owner's admission state: the exact tables of admitted series (one per metric name, so
//! per-metric budgets stay exact as series expire), the distinct values of limited labels, the
//! demand sketches, and counters. Always used under the owner's lock, once per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::image::{OwnerImage, RestoreError, RingImage};
use super::names::Names;
use super::ring::{SeenFilter, SketchRing};
use super::sketch::{DEMAND_PRECISION, OFFENDER_PRECISION};
use super::table::{key_of, SeriesTable};
use super::tables::Tables;
use super::window::Window;
use super::{Action, Budget};
use crate::series::{Reason, Verdict, REASONS};

/// Metric names and label names whose demand is sketched per owner; bounded so that an owner
/// exploding in *names* (rather than values) cannot grow the guard's own memory without limit.
/// Worst case per owner: 2 × 64 names × slices × 768 bytes (dense offender sketches) plus
/// slices × 12 KiB of demand sketch; a name with few distinct ids keeps them in an exact list
/// of at most 512 bytes instead (see `ring`).
const MAX_TRACKED_NAMES: usize = 64;
/// An owner tracks which names bring its demand (the top offenders) only with more than this
/// many admitted series, within this many of its budget, once it refused a series, or when
/// its budget's `relabel` action picks the label to aggregate from them: for an owner of a few series the top offenders say nothing the series do not, and
/// their rings and filter were most of what such an owner held (~800 of 1 500 bytes with ten
/// thousand owners of 1–10 series). Series sent again are sketched again on their first
/// sighting in each slice, so the names of an owner that grows past this are complete one
/// slice later.
pub const UNTRACKED_MAX: u64 = 16;
/// Names are tracked by at most this many leading bytes: a metric name that is a 16 KiB
/// label value costs 128 bytes here, and shows as its prefix among the top offenders.
pub const MAX_TRACKED_NAME_BYTES: usize = 128;

/// Per-request tallies of one owner, published to the owner's counters once per request
/// (`OwnerCounters::add`, which leaves it zeroed for the next owner: a request reuses one).
#[derive(Debug, Clone, Copy)]
pub struct OwnerDelta {
    pub samples: u64,
    pub created: u64,
    dropped_samples: [u64; REASONS],
    dropped_series: [u64; REASONS],
    warned_samples: [u64; REASONS],
    overflowed_samples: [u64; REASONS],
    /// Bit `i`: reason `i` has a tally. With many owners of a series or two, a request's
    /// owners nearly all have none, and publishing reads only the reasons set here instead
    /// of 44 tallies per owner.
    reasons: u16,
}

const _: () = assert!(REASONS <= 16, "OwnerDelta::reasons has a bit per reason");

impl Default for OwnerDelta {
    fn default() -> Self {
        OwnerDelta {
            samples: 0,
            created: 0,
            dropped_samples: [0; REASONS],
            dropped_series: [0; REASONS],
            warned_samples: [0; REASONS],
            overflowed_samples: [0; REASONS],
            reasons: 0,
        }
    }
}

impl OwnerDelta {
    /// A series an earlier stage dropped before admission (relabeling, a schema rule).
    pub fn dropped(&mut self, reason: Reason, samples: u64) {
        self.samples += samples;
        self.refused(reason, samples);
    }

    /// A series the guard dropped, or an earlier stage did (its samples counted by the caller).
    fn refused(&mut self, r: Reason, samples: u64) {
        self.dropped_samples[r.index()] += samples;
        self.dropped_series[r.index()] += 1;
        self.reasons |= 1 << r.index();
    }

    fn warned(&mut self, r: Reason, samples: u64) {
        self.warned_samples[r.index()] += samples;
        self.reasons |= 1 << r.index();
    }

    fn overflowed(&mut self, r: Reason, samples: u64) {
        self.overflowed_samples[r.index()] += samples;
        self.reasons |= 1 << r.index();
    }
}

/// Monotonic counters of one owner.
#[derive(Debug, Default)]
pub struct OwnerCounters {
    pub samples: AtomicU64,
    pub created: AtomicU64,
    /// Allocated at the owner's first refusal, warning or overflow: most owners never have
    /// one, and the 44 counters inline would be 352 bytes of every owner.
    by_reason: OnceLock<Box<ReasonCounters>>,
}

/// An owner's counters by reason (`OwnerCounters::by_reason`).
#[derive(Debug, Default)]
struct ReasonCounters {
    dropped_samples: [AtomicU64; REASONS],
    dropped_series: [AtomicU64; REASONS],
    /// Samples a `warn` budget would have dropped.
    warned_samples: [AtomicU64; REASONS],
    /// Samples a `relabel` budget merged into overflow aggregates.
    overflowed_samples: [AtomicU64; REASONS],
}

/// Counters by reason, as read.
pub type ByReason = [u64; REASONS];

impl OwnerCounters {
    /// Once per owner per request, under the owner's state lock (`_held`); `t` is left
    /// zeroed. Zero tallies are skipped: a steady-state request touches two counters per
    /// owner instead of forty-two cache lines.
    ///
    /// Every writer of the other counters holds the lock, so an add to them is a load and a
    /// store, not a locked read-modify-write (each a full barrier); readers (/metrics, the
    /// report) load without it and see each counter whole.
    pub fn add(&self, t: &mut OwnerDelta, _held: &std::sync::MutexGuard<'_, OwnerState>) {
        fn add(c: &AtomicU64, n: &mut u64) {
            if *n != 0 {
                c.store(c.load(Ordering::Relaxed) + *n, Ordering::Relaxed);
                *n = 0;
            }
        }
        // Samples are also added without the lock (`add_samples`).
        if t.samples != 0 {
            self.samples
                .fetch_add(std::mem::take(&mut t.samples), Ordering::Relaxed);
        }
        add(&self.created, &mut t.created);
        let mut reasons = std::mem::take(&mut t.reasons);
        if reasons == 0 {
            return;
        }
        let c = self.by_reason.get_or_init(Box::default);
        while reasons != 0 {
            let i = reasons.trailing_zeros() as usize;
            reasons &= reasons - 1;
            add(&c.dropped_samples[i], &mut t.dropped_samples[i]);
            add(&c.dropped_series[i], &mut t.dropped_series[i]);
            add(&c.warned_samples[i], &mut t.warned_samples[i]);
            add(&c.overflowed_samples[i], &mut t.overflowed_samples[i]);
        }
    }

    /// Samples admitted, without the owner's lock: the fresh table's, which the registry
    /// holds by owner index until the counters are read (`Registry::fold`) and which never
    /// needed the owner's state.
    pub fn add_samples(&self, n: u64) {
        self.samples.fetch_add(n, Ordering::Relaxed);
    }

    fn load(&self, f: impl Fn(&ReasonCounters) -> &[AtomicU64; REASONS]) -> ByReason {
        self.by_reason.get().map_or([0; REASONS], |c| {
            std::array::from_fn(|i| f(c)[i].load(Ordering::Relaxed))
        })
    }

    /// Samples dropped, by reason.
    pub fn dropped_samples(&self) -> ByReason {
        self.load(|c| &c.dropped_samples)
    }

    /// Series dropped, by reason.
    pub fn dropped_series(&self) -> ByReason {
        self.load(|c| &c.dropped_series)
    }

    /// Samples a `warn` budget would have dropped, by reason.
    pub fn warned_samples(&self) -> ByReason {
        self.load(|c| &c.warned_samples)
    }

    /// Samples a `relabel` budget merged into overflow aggregates, by reason.
    pub fn overflowed_samples(&self) -> ByReason {
        self.load(|c| &c.overflowed_samples)
    }
}

/// One series as the guard sees it.
pub struct SeriesKey<'a, L> {
    pub id: u64,
    pub metric: &'a [u8],
    /// `value_hash(metric)`: what the owner's tables hold the series under.
    pub metric_key: u64,
    pub labels: L,
    pub samples: u64,
}

impl<'a, L> SeriesKey<'a, L>
where
    L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    /// Series `id` with these labels, its metric found among them; `metric_key` is
    /// `value_hash` of that metric, found once per request with the id (`Guard::admit`).
    pub fn new(id: u64, labels: L, samples: u64, metric_key: u64) -> Self {
        let metric = metric_of(labels.clone());
        debug_assert_eq!(metric_key, value_hash(metric));
        SeriesKey {
            id,
            metric,
            metric_key,
            labels,
            samples,
        }
    }
}

/// The `__name__` value among `labels` (empty without one).
#[inline]
pub fn metric_of<'a>(mut labels: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> &'a [u8] {
    labels
        .find(|(n, _)| *n == b"__name__")
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// What an owner holds (`OwnerState::held`): series as (id key, metric hash, tag), limited
/// labels' values as (label name, value hash, tag).
pub type Held<'a> = (Vec<(u64, u64, u8)>, Vec<(&'a str, u64, u8)>);

/// What a replica sharing its budgets knows of a series before asking Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Admitted, already seen in this slice.
    Fresh,
    /// Admitted, first seen in this slice: Redis is told (not asked) so it keeps the slot.
    Refreshed,
    /// Refused by Redis earlier in this slice, for this reason.
    RefusedThisSlice(Reason),
    /// Not known here: Redis decides.
    New,
}

/// A guard reason as a tag of the refused filter (1..=4), and back.
fn refused_tag(r: Reason) -> u8 {
    match r {
        Reason::MetricBudget => 2,
        Reason::LabelLimit => 3,
        Reason::GlobalCap => 4,
        _ => 1,
    }
}

fn refused_reason(tag: u8) -> Reason {
    match tag {
        2 => Reason::MetricBudget,
        3 => Reason::LabelLimit,
        4 => Reason::GlobalCap,
        _ => Reason::Budget,
    }
}

/// The mutable admission state of one owner. In declaration order (`repr(C)`), what a
/// steady-state request reads first: the generation, the window's slice, the last request's
/// and the series, in the cache line after the owner's lock (see `Owner`); with many small
/// owners each is cold.
#[repr(C)]
pub struct OwnerState {
    /// Config generation the budget was resolved in; re-resolved after a reload.
    pub generation: u64,
    slice: u64,
    /// The last slice a request touched this owner; idle for a window, it is forgotten.
    last_seen: u64,
    /// Admitted series by a hash of their metric name: the names themselves may be long and
    /// new in every request, and per-metric limits need only tell them apart. Inline while
    /// the owner is small (see `tables`).
    metrics: Tables,
    active: u64,
    pub budget: Arc<Budget>,
    /// Distinct value hashes (tagged like series) per limited label name.
    label_values: Vec<(String, SeriesTable)>,
    /// Distinct series that came over the window, admitted or not; `None` while every one
    /// was admitted. The demand is then the admitted series themselves (`metrics`, which
    /// expire as a ring forgets), exactly: an owner that never refuses (most of them, and
    /// every owner of a few series) holds no second list of its ids, nor the per-slice
    /// sketches a large owner's ring grows into. Built from `metrics` at the first series
    /// that is not admitted right away (`demand_ring`).
    demand: Option<SketchRing>,
    /// `None` while the owner is small (see `UNTRACKED_MAX`).
    offenders: Option<Box<Offenders>>,
    /// Ids refused in the current slice, direct-mapped: a refused series that keeps coming
    /// back is inserted into the demand sketch once per slice, not once per sample.
    refused: SeenFilter,
    /// Slices of the window (the demand rings' length).
    slices: u8,
}

/// Which metric names and label names bring an owner's demand: the report's top offenders,
/// and the label a `relabel` budget with no `overflow_labels` aggregates away.
struct Offenders {
    metrics: Names,
    labels: Names,
    /// (label name, value) pairs already in this slice's label sketches, direct-mapped by a
    /// hash of both. A sketch does not change when a value comes again, so skipping those
    /// inserts is exact; and almost every label of a new or refused series (`env`, `method`,
    /// `job`...) repeats: without this, each cost a sparse-sketch insert.
    sketched_values: SeenFilter,
}

impl Offenders {
    fn new() -> Box<Self> {
        Box::new(Offenders {
            metrics: Names::default(),
            labels: Names::default(),
            sketched_values: SeenFilter::new(SKETCHED_VALUES_FILTER.0, SKETCHED_VALUES_FILTER.1),
        })
    }
}

/// The filters' sizes: they start at the first and grow with the keys a slice brings, so an
/// owner of a few series holds a few hundred bytes, not 36 KiB. The refused filter stops at
/// 4096 slots (32 KiB, kept while the owner lives): an explosion of more distinct refused
/// series than that a slice is partly sketched again on every request. 2¹⁷ slots (1 MiB) kept
/// the load harness's 50k in it and cut 7 % of the instructions of a half-refused request,
/// but no CPU time the harness could measure (the bucket loads became cache misses), for up
/// to 32× the memory of every exploding owner: not worth it.
const REFUSED_FILTER: (usize, usize) = (64, 4096);
const SKETCHED_VALUES_FILTER: (usize, usize) = (16, 512);

impl OwnerState {
    pub fn new(budget: Arc<Budget>, generation: u64, window: &Window, now_slice: u64) -> Self {
        OwnerState {
            budget,
            generation,
            slice: now_slice,
            last_seen: now_slice,
            active: 0,
            slices: window.slices(),
            metrics: Tables::default(),
            label_values: Vec::new(),
            demand: None,
            offenders: None,
            refused: SeenFilter::new(REFUSED_FILTER.0, REFUSED_FILTER.1),
        }
    }

    pub fn active(&self) -> u64 {
        self.active
    }

    /// A request touched this owner in slice `now`.
    pub fn seen(&mut self, now: u64) {
        self.last_seen = self.last_seen.max(now);
    }

    /// No active series and no request for a whole window: nothing left worth keeping.
    pub fn idle(&self, window: &Window, now: u64) -> bool {
        self.active == 0 && now.saturating_sub(self.last_seen) >= u64::from(window.slices())
    }

    /// Slide the window to `now`: expire series unseen for a whole window and reset the
    /// sketches of slices that left it. Returns how many series expired.
    #[inline]
    pub fn advance(&mut self, window: &Window, now: u64) -> u64 {
        // Once per owner per request; the slice turns once a slice.
        if now <= self.slice {
            return 0;
        }
        self.turn(window, now)
    }

    #[cold]
    fn turn(&mut self, window: &Window, now: u64) -> u64 {
        let steps = (now - self.slice).min(u64::from(window.slices()));
        for s in (now + 1 - steps)..=now {
            if let Some(d) = &mut self.demand {
                d.clear_slot(s);
            }
            if let Some(o) = &mut self.offenders {
                o.metrics.for_each_ring(|r| r.clear_slot(s));
                o.labels.for_each_ring(|r| r.clear_slot(s));
            }
        }
        let gap = now - self.slice;
        let expired = if gap >= u64::from(window.slices()) {
            self.metrics.clear()
        } else {
            self.metrics.retain_tags(|t| window.is_live(t, now))
        } as u64;
        for (_, values) in &mut self.label_values {
            if gap >= u64::from(window.slices()) {
                *values = SeriesTable::new();
            } else {
                values.retain_tags(|t| window.is_live(t, now));
            }
        }
        if let Some(o) = &mut self.offenders {
            o.metrics.retain_nonempty();
            o.labels.retain_nonempty();
            o.sketched_values.clear();
            if o.metrics.is_empty() && o.labels.is_empty() {
                // Nothing sketched over a whole window: small again until it grows.
                self.offenders = None;
            }
        }
        if self.demand.as_ref().is_some_and(SketchRing::is_empty) {
            // Nothing came for a whole window, refused or not: the admitted series (none)
            // are the demand again.
            self.demand = None;
        }
        self.refused.clear();
        self.active -= expired.min(self.active);
        self.slice = now;
        expired
    }

    /// Decide one series. `global` counts active series across owners; `cap` bounds it.
    /// `share` divides every limit: 1, or `replicas_hint` while shared budgets are away.
    #[inline]
    pub fn admit<'a, L>(
        &mut self,
        s: SeriesKey<'a, L>,
        now: u64,
        global: &AtomicU64,
        cap: Option<u64>,
        share: u64,
        tally: &mut OwnerDelta,
    ) -> Verdict
    where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        tally.samples += s.samples;
        let metric_key = s.metric_key;
        if self.known(&s, metric_key, now).is_some() {
            return Verdict::Keep;
        }

        // A series this owner has not admitted (or that expired).
        let reason = self.check(&s, metric_key, global, cap, share);
        if let Some(r) = reason {
            // The refused series' own names count among the offenders, and the series in the
            // demand, which the admitted series no longer are alone.
            self.track_offenders();
            self.demand_ring(now);
            if self.budget.action != Action::Warn {
                // Refused (`refuse`), and looked up in the refused filter in the same pass
                // that puts it there: sketched unless already refused in this slice.
                if self.refused.replace_tagged(s.id, refused_tag(r)).is_none() {
                    self.sketch(&s, now);
                }
                return self.refused_verdict(r, s.samples, tally);
            }
        }
        if self.refused.tag(s.id).is_none() {
            self.sketch(&s, now);
        }
        if let Some(r) = reason {
            if let Some(v) = self.refuse(s.id, r, s.samples, tally) {
                return v;
            }
        }
        self.record(&s, metric_key, now, global, tally);
        Verdict::Keep
    }

    /// Where the inline series list lies (address, bytes), while the owner is small.
    #[inline]
    pub fn inline_series(&self) -> Option<(usize, usize)> {
        self.metrics.inline_block()
    }

    /// Start loading the table slots `admit` of series `id` of metric `metric_key` will
    /// read: called for every series of the owner in a request before admitting any, so that
    /// their cache misses overlap.
    #[inline]
    pub fn prefetch(&self, metric_key: u64, id: u64) {
        self.metrics.prefetch(metric_key, id);
    }

    /// A series this owner admitted and still holds: `Some(true)` on its first sighting in
    /// slice `now` (its slice is refreshed), `Some(false)` when already seen in it.
    #[inline]
    fn known<'a, L>(&mut self, s: &SeriesKey<'a, L>, metric_key: u64, now: u64) -> Option<bool>
    where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        let tag = Window::tag(now);
        match self.metrics.tag(metric_key, s.id)? {
            t if t == tag => Some(false),
            _ => {
                self.metrics.insert(metric_key, s.id, tag);
                self.sketch(s, now);
                self.touch_label_values(s, tag);
                Some(true)
            }
        }
    }

    /// The budget's action for a new series refused for `r`: `Some(verdict)`, or `None` when
    /// the action is `warn` (admit it anyway, counted).
    #[inline]
    fn refuse(
        &mut self,
        id: u64,
        r: Reason,
        samples: u64,
        tally: &mut OwnerDelta,
    ) -> Option<Verdict> {
        self.track_offenders();
        match self.budget.action {
            Action::Drop | Action::Relabel => {
                self.refused.insert_tagged(id, refused_tag(r));
                Some(self.refused_verdict(r, samples, tally))
            }
            Action::Warn => {
                tally.warned(r, samples);
                None
            }
        }
    }

    /// The verdict and tally of a series refused for `r` under a `drop` or `relabel` budget
    /// (already in the refused filter).
    #[inline]
    fn refused_verdict(&self, r: Reason, samples: u64, tally: &mut OwnerDelta) -> Verdict {
        if self.budget.action == Action::Relabel {
            tally.overflowed(r, samples);
            Verdict::Overflow(r)
        } else {
            tally.refused(r, samples);
            Verdict::Drop(r)
        }
    }

    /// Admit a new series into the exact tables.
    #[inline]
    fn record<'a, L>(
        &mut self,
        s: &SeriesKey<'a, L>,
        metric_key: u64,
        now: u64,
        global: &AtomicU64,
        tally: &mut OwnerDelta,
    ) where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        let tag = Window::tag(now);
        self.metrics.insert(metric_key, s.id, tag);
        self.touch_label_values(s, tag);
        self.active += 1;
        global.fetch_add(1, Ordering::Relaxed);
        tally.created += 1;
    }

    /// Shared budgets, first step: what this replica knows of a series without asking Redis.
    pub fn lookup<'a, L>(
        &mut self,
        s: &SeriesKey<'a, L>,
        now: u64,
        tally: &mut OwnerDelta,
    ) -> Lookup
    where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        tally.samples += s.samples;
        match self.known(s, s.metric_key, now) {
            Some(false) => Lookup::Fresh,
            Some(true) => Lookup::Refreshed,
            None => {
                if let Some(tag) = self.refused.tag(s.id) {
                    // Refused by Redis earlier in this slice: refused again without asking,
                    // so a refused series sent every scrape costs no round trip per request.
                    return Lookup::RefusedThisSlice(refused_reason(tag));
                }
                // Redis may refuse it: in the demand either way.
                self.demand_ring(now);
                self.sketch(s, now);
                Lookup::New
            }
        }
    }

    /// Shared budgets, last step: apply Redis's verdict on a new series (`None`: admit).
    pub fn settle<'a, L>(
        &mut self,
        s: &SeriesKey<'a, L>,
        refused: Option<Reason>,
        now: u64,
        global: &AtomicU64,
        tally: &mut OwnerDelta,
    ) -> Verdict
    where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        let metric_key = s.metric_key;
        if self.known(s, metric_key, now).is_some() {
            // Another request of this replica admitted it meanwhile.
            return Verdict::Keep;
        }
        if let Some(r) = refused {
            if let Some(v) = self.refuse(s.id, r, s.samples, tally) {
                return v;
            }
        }
        self.record(s, metric_key, now, global, tally);
        Verdict::Keep
    }

    /// Refuse a series this replica refused earlier in this slice (see `Lookup`), for the
    /// reason it was refused then.
    pub fn refuse_again(
        &mut self,
        id: u64,
        reason: Reason,
        samples: u64,
        tally: &mut OwnerDelta,
    ) -> Verdict {
        self.refuse(id, reason, samples, tally)
            .unwrap_or(Verdict::Keep)
    }

    /// Every admitted series as (id key, metric hash, tag), and every limited label's values
    /// as (label name, value hash, tag): what this replica tells Redis when it rejoins.
    pub fn held(&self) -> Held<'_> {
        let series = self.metrics.iter().collect();
        let values = self
            .label_values
            .iter()
            .flat_map(|(n, t)| t.iter().map(move |(k, tag)| (n.as_str(), k, tag)))
            .collect();
        (series, values)
    }

    /// The slice this owner's window is at.
    pub fn slice(&self) -> u64 {
        self.slice
    }

    fn check<'a, L>(
        &self,
        s: &SeriesKey<'a, L>,
        metric_key: u64,
        global: &AtomicU64,
        cap: Option<u64>,
        share: u64,
    ) -> Option<Reason>
    where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        if let Some(cap) = cap {
            if global.load(Ordering::Relaxed) >= cap / share {
                return Some(Reason::GlobalCap);
            }
        }
        if self.active >= self.budget.max_series / share {
            return Some(Reason::Budget);
        }
        if let Some(limit) = self.budget.metric_limit(s.metric) {
            let n = self.metrics.metric_len(metric_key) as u64;
            if n >= limit / share {
                return Some(Reason::MetricBudget);
            }
        }
        for (name, limit) in &self.budget.label_limits {
            let limit = limit / share;
            let Some((_, value)) = s.labels.clone().find(|(n, _)| *n == name.as_bytes()) else {
                continue;
            };
            let h = value_hash(value);
            let seen = self
                .label_values
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| (t.contains(h), t.len() as u64));
            match seen {
                Some((true, _)) => {}
                Some((false, n)) if n >= limit => return Some(Reason::LabelLimit),
                None if limit == 0 => return Some(Reason::LabelLimit),
                _ => {}
            }
        }
        None
    }

    fn touch_label_values<'a, L>(&mut self, s: &SeriesKey<'a, L>, tag: u8)
    where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        for (name, _) in &self.budget.label_limits {
            let Some((_, value)) = s.labels.clone().find(|(n, _)| *n == name.as_bytes()) else {
                continue;
            };
            let h = value_hash(value);
            match self.label_values.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => {
                    t.insert(h, tag);
                }
                None => {
                    let mut t = SeriesTable::new();
                    t.insert(h, tag);
                    self.label_values.push((name.clone(), t));
                }
            }
        }
    }

    /// Demand: the series into the owner's sketch, and into the per-metric and per-label-name
    /// sketches (a label's sketch counts its distinct values).
    fn sketch<'a, L>(&mut self, s: &SeriesKey<'a, L>, now: u64)
    where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        // By the key the tables hold it under, so that a ring built from them
        // (`demand_ring`) counts each series once.
        if let Some(d) = &mut self.demand {
            d.insert(now, key_of(s.id));
        }
        if self.offenders.is_none() {
            // The admitted series, not the demand: a snapshot restores them exactly, and what
            // demand is not admitted was refused, which starts the tracking anyway. A
            // `relabel` budget that names no labels aggregates away the top label at its
            // first refusal, whatever refuses it (a per-metric limit, the global cap): that
            // needs the names from the start.
            let b = &self.budget;
            if self.active <= UNTRACKED_MAX
                && self.active.saturating_add(UNTRACKED_MAX) < b.max_series
                && !(b.action == Action::Relabel && b.overflow_labels.is_empty())
            {
                return;
            }
            self.offenders = Some(Offenders::new());
        }
        let slices = self.slices;
        let Some(o) = self.offenders.as_deref_mut() else {
            return;
        };
        if let Some(r) = tracked(&mut o.metrics, s.metric, slices) {
            r.insert(now, s.id);
        }
        for (name, value) in s.labels.clone() {
            if name == b"__name__" {
                continue;
            }
            let vh = value_hash(value);
            // Never 0, the empty slot.
            let key = (vh ^ name_key(name)) | 1;
            if o.sketched_values.contains(key) {
                continue;
            }
            if let Some(r) = tracked(&mut o.labels, name, slices) {
                r.insert(now, vh);
                o.sketched_values.insert(key);
            }
        }
    }

    /// The demand as a ring, built from the admitted series if it was them alone: before a
    /// series that may not be admitted is sketched.
    fn demand_ring(&mut self, now: u64) {
        let (slices, metrics) = (self.slices, &self.metrics);
        self.demand.get_or_insert_with(|| {
            let mut ring = SketchRing::new(slices, DEMAND_PRECISION);
            let t = Window::tag(now);
            for (key, _, tag) in metrics.iter() {
                // The slice it was last seen in, from its tag (at most a window old).
                ring.insert(now.saturating_sub(u64::from(t.wrapping_sub(tag))), key);
            }
            ring
        });
    }

    /// Track the names of what comes from now on, whatever the owner's size (a refusal).
    fn track_offenders(&mut self) {
        if self.offenders.is_none() {
            self.offenders = Some(Offenders::new());
        }
    }

    /// Distinct series that arrived over the window, admitted or not.
    pub fn demand_estimate(&self) -> f64 {
        self.demand
            .as_ref()
            .map_or(self.active as f64, SketchRing::estimate)
    }

    /// The `k` metric names with the most distinct series over the window (estimated).
    /// None while the owner is small (see `UNTRACKED_MAX`).
    pub fn top_metrics(&self, k: usize) -> Vec<(String, f64)> {
        self.offenders
            .as_ref()
            .map_or_else(Vec::new, |o| top(&o.metrics, k))
    }

    /// The `k` label names with the most distinct values over the window (estimated).
    pub fn top_labels(&self, k: usize) -> Vec<(String, f64)> {
        self.offenders
            .as_ref()
            .map_or_else(Vec::new, |o| top(&o.labels, k))
    }

    /// Heap bytes this owner holds, about: the exact tables, the filters, the sketches (at
    /// their dense size, an upper bound) and the tracked names.
    pub fn memory_bytes(&self) -> usize {
        let ring = SketchRing::memory_bytes;
        std::mem::size_of::<Self>()
            + self.table_bytes()
            + self.metrics.map_bytes()
            + self.refused.memory_bytes()
            + self.demand.as_ref().map_or(0, ring)
            + self.offenders.as_ref().map_or(0, |o| {
                std::mem::size_of::<Offenders>()
                    + o.metrics.memory_bytes()
                    + o.labels.memory_bytes()
                    + o.sketched_values.memory_bytes()
            })
    }

    /// Heap bytes of the exact tables (what a series costs the guard).
    pub fn table_bytes(&self) -> usize {
        self.metrics.memory_bytes()
            + self
                .label_values
                .iter()
                .map(|(_, t)| t.memory_bytes())
                .sum::<usize>()
    }
}

impl OwnerState {
    /// A copy of the state for a snapshot (tables and sketches cloned: a memcpy each, the
    /// encoding happens after the lock is released).
    pub fn image(&self, key: &super::OwnerKey) -> OwnerImage {
        let ring = |r: &SketchRing| RingImage {
            precision: r.precision(),
            slices: r.to_slices(),
        };
        let named = |m: Option<&Names>| {
            m.into_iter()
                .flat_map(|m| m.iter())
                .map(|(k, r)| (k.to_vec(), ring(r)))
                .collect()
        };
        let o = self.offenders.as_deref();
        OwnerImage {
            tenant: key.tenant.clone(),
            owner: key.owner.clone(),
            slice: self.slice,
            last_seen: self.last_seen,
            metrics: self.metrics.tables(),
            label_values: self.label_values.clone(),
            // The admitted series as the demand: an empty ring, and so back to `None`.
            demand: self.demand.as_ref().map_or_else(
                || RingImage {
                    precision: DEMAND_PRECISION,
                    slices: vec![None; usize::from(self.slices)],
                },
                ring,
            ),
            metric_demand: named(o.map(|o| &o.metrics)),
            label_demand: named(o.map(|o| &o.labels)),
        }
    }

    /// The state saved by [`Self::image`], under `budget` (from the config in force; its
    /// generation 0 makes the next request resolve it again). Fails when the sketches do not
    /// fit the window (slices) or break the bounds on tracked names.
    pub fn from_image(
        img: OwnerImage,
        budget: Arc<Budget>,
        window: &Window,
    ) -> Result<Self, RestoreError> {
        let slices = window.slices();
        let ring = |r: RingImage, precision: u8| {
            (r.precision == precision)
                .then(|| SketchRing::from_slices(r.slices, slices, precision))
                .flatten()
                .ok_or(RestoreError::Sketches("ring size or precision"))
        };
        let named = |m: Vec<(Vec<u8>, RingImage)>| {
            if m.len() > MAX_TRACKED_NAMES {
                return Err(RestoreError::Sketches("too many tracked names"));
            }
            let mut out = Names::default();
            for (k, r) in m {
                if k.len() > MAX_TRACKED_NAME_BYTES {
                    return Err(RestoreError::Sketches("a tracked name too long"));
                }
                out.insert(&k, ring(r, OFFENDER_PRECISION)?);
            }
            Ok(out)
        };
        let mut st = OwnerState::new(budget, 0, window, img.slice);
        st.last_seen = img.last_seen;
        st.demand = Some(ring(img.demand, DEMAND_PRECISION)?).filter(|r| !r.is_empty());
        if !img.metric_demand.is_empty() || !img.label_demand.is_empty() {
            let mut o = Offenders::new();
            o.metrics = named(img.metric_demand)?;
            o.labels = named(img.label_demand)?;
            st.offenders = Some(o);
        }
        st.metrics = Tables::from_tables(img.metrics);
        st.active = st.metrics.len() as u64;
        st.label_values = img.label_values;
        Ok(st)
    }
}

fn tracked<'m>(names: &'m mut Names, name: &[u8], slices: u8) -> Option<&'m mut SketchRing> {
    let name = &name[..name.len().min(MAX_TRACKED_NAME_BYTES)];
    names.get_or_insert(name, MAX_TRACKED_NAMES, || {
        SketchRing::new(slices, OFFENDER_PRECISION)
    })
}

fn top(names: &Names, k: usize) -> Vec<(String, f64)> {
    let mut all: Vec<(String, f64)> = names
        .iter()
        .map(|(name, ring)| (String::from_utf8_lossy(name).into_owned(), ring.estimate()))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// A label name's part of its values' keys in `Offenders::sketched_values`: distinct for
/// distinct names, so that a (name, value) key is another pair's only when the values' 64-bit
/// hashes say so. A name of up to 7 bytes (`job`, `service`, `user_id`...) is its bytes and
/// its length, spread by an odd multiplier (a bijection); a longer one its hash. An xxh3 call
/// for each label of each sketched series was a sixth of sketching it.
fn name_key(name: &[u8]) -> u64 {
    if name.len() < 8 {
        let mut b = [0u8; 8];
        b[..name.len()].copy_from_slice(name);
        b[7] = name.len() as u8;
        u64::from_le_bytes(b).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    } else {
        // Never one of the short names' keys by more than chance (2⁻⁶⁴).
        value_hash(name).rotate_left(29)
    }
}

pub(crate) fn value_hash(value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value)
}

#[cfg(test)]
mod name_key_tests {
    use super::name_key;

    /// Distinct names have distinct keys, and none two that differ in the bit the keys'
    /// `| 1` sets (then one value would be one key under both names).
    #[test]
    fn names_keys_differ_beyond_the_low_bit() {
        let mut names: Vec<Vec<u8>> =
            ["", "a", "b", "ab", "ba", "job", "env", "service", "user_id"]
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect();
        names.extend((0..=255u8).map(|b| vec![b]));
        names.extend((0..=255u8).map(|b| vec![b'x', b]));
        names.extend((0..300u32).map(|i| format!("label_{i}").into_bytes()));
        names.extend((0..300u32).map(|i| format!("a_longer_label_{i}").into_bytes()));
        names.sort();
        names.dedup();
        let mut keys: Vec<u64> = names.iter().map(|n| name_key(n) | 1).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), names.len());
    }
}
