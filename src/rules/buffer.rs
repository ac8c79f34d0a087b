//! The stream buffers: for each series some rule reads, its labels (stored once) and a ring of
//! recent `(timestamp, value)` samples covering the plan's history, and one of its native
//! histograms (kept sparse, spans and counts as on the wire). Implements the engine's
//! [`Storage`].
//!
//! A series is its labels *and its tenant*: two tenants' series with the same labels are two
//! series (their samples never interleave). The label bytes of all series are capped
//! (`rules.max_buffered_label_bytes`), counted when a series comes and goes, not per sample.
//!
//! Write-side calls come from the pipeline's worker threads, reads from the rule evaluator, so
//! the map is split into mutex-guarded shards by series hash: a writer holds one shard's lock
//! for one series' samples, an evaluation walks the shards one at a time. Sizes are counted
//! inside each shard and summed when `/metrics` is scraped, never updated per sample in a
//! shared atomic.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use promql_parser::label::Matchers;
use xxhash_rust::xxh3::xxh3_128_with_seed;

use super::plan::name_equality;
use super::promql::{self, HistogramSample, Labels, Sample, SeriesSink, Storage};
use crate::guard::identity::Identity;

const SHARDS: usize = 64;
/// Rings are not shrunk below this many samples.
const COMPACT_MIN: usize = 8;

/// Limits on what the buffers may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    /// New series beyond this are not buffered (counted, logged once).
    pub max_series: usize,
    /// Samples kept per series at most; older ones go first (counted).
    pub max_samples_per_series: usize,
    /// Bytes of labels (and tenants) of all buffered series; new series beyond it are not
    /// buffered (counted as refused).
    pub max_label_bytes: usize,
}

/// What one call of [`Buffer::append`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The series is (now) buffered.
    pub buffered: bool,
    pub samples: u64,
    /// At or before the newest sample already buffered (a retried request, or out of order).
    pub out_of_order: u64,
    /// A new series refused because of `max_series`.
    pub refused_series: bool,
    /// Samples pushed out by `max_samples_per_series` before their time.
    pub evicted_early: u64,
}

/// One buffered series as plain data, for snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesImage {
    pub tenant: Option<String>,
    pub labels: Labels,
    /// Oldest first.
    pub samples: Vec<Sample>,
    /// Native histograms, oldest first.
    pub histograms: Vec<HistogramSample>,
    pub retention_ms: i64,
}

/// Sizes, for telemetry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BufferStats {
    pub series: u64,
    pub samples: u64,
    pub bytes: u64,
    /// Label and tenant bytes (what `max_label_bytes` caps).
    pub label_bytes: u64,
}

struct Series {
    /// `SeriesKey::check`.
    check: u64,
    /// The tenant whose series it is (`None`: tenants off, or recorded by a rule).
    tenant: Option<Box<str>>,
    /// Sorted by name; what `select` hands the engine.
    labels: Labels,
    /// Oldest first, strictly increasing timestamps. A ring, so memory is about one power of
    /// two above what the history needs; made contiguous when the engine reads it. Changed
    /// only through `push_sample` and `pop_samples`, which keep `oldest` and `newest`.
    samples: VecDeque<Sample>,
    /// The timestamps of `samples`' ends (`i64::MAX` and `i64::MIN` when it is empty), kept
    /// here so that an append in order with nothing to expire never loads the ring's heap
    /// lines: its ends are a cache miss apart from the map entry, one each, on every series a
    /// request appends to.
    oldest: i64,
    newest: i64,
    /// Native histograms (`None` for float series): boxed, so that the map entry every append
    /// loads is 40 bytes smaller for the series that have none.
    histograms: Option<Box<Histograms>>,
    retention_ms: i64,
}

#[derive(Default)]
struct Histograms {
    /// Oldest first, strictly increasing timestamps.
    ring: VecDeque<HistogramSample>,
    /// Heap bytes the histograms hold (their structs and bucket arrays).
    bytes: usize,
}

impl Histograms {
    fn pop(&mut self) {
        if let Some(h) = self.ring.pop_front() {
            self.bytes -= histogram_bytes(&h);
        }
    }
}

/// Memory one buffered histogram holds besides its ring slot.
fn histogram_bytes(h: &HistogramSample) -> usize {
    // The Arc's allocation: two counters and the histogram.
    16 + std::mem::size_of::<promql::Histogram>() + h.h.heap_bytes()
}

impl Series {
    fn len(&self) -> usize {
        self.samples.len() + self.histograms.as_ref().map_or(0, |h| h.ring.len())
    }
    fn push_sample(&mut self, s: Sample) {
        if self.samples.is_empty() {
            self.oldest = s.t;
        }
        self.newest = s.t;
        self.samples.push_back(s);
    }
    /// Drop the oldest `n` samples.
    fn pop_samples(&mut self, n: usize) {
        self.samples.drain(..n);
        match self.samples.front() {
            Some(s) => self.oldest = s.t,
            None => (self.oldest, self.newest) = (i64::MAX, i64::MIN),
        }
    }
    /// Whether `oldest` and `newest` are those of the ring.
    fn ends_agree(&self) -> bool {
        let ends = match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) => (a.t, b.t),
            _ => (i64::MAX, i64::MIN),
        };
        ends == (self.oldest, self.newest)
    }
    fn newest_histogram(&self) -> Option<i64> {
        self.histograms.as_ref()?.ring.back().map(|s| s.t)
    }
    fn label_bytes(labels: &Labels) -> usize {
        labels.capacity() * std::mem::size_of::<(String, String)>()
            + labels
                .iter()
                .map(|(n, v)| n.capacity() + v.capacity())
                .sum::<usize>()
    }
    fn bytes(&self) -> usize {
        std::mem::size_of::<Series>()
            + self.tenant.as_ref().map_or(0, |t| t.len())
            + Self::label_bytes(&self.labels)
            + self.ring_bytes()
    }
    /// The part of `bytes` an append can change. The labels' part would read every label's
    /// heap line (a cache miss per series on the write path) for a number that never moves.
    fn ring_bytes(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<Sample>()
            + self.histograms.as_ref().map_or(0, |h| {
                std::mem::size_of::<Histograms>()
                    + h.ring.capacity() * std::mem::size_of::<HistogramSample>()
                    + h.bytes
            })
    }
    /// Drop samples at or before `cutoff`; give memory back when the ring is mostly empty.
    fn trim(&mut self, cutoff: i64) {
        if self.oldest <= cutoff {
            // From the front, not a binary search: most trims expire one sample or two, whose
            // lines the scan reads anyway.
            let expired = if self.newest <= cutoff {
                self.samples.len()
            } else {
                self.samples.iter().take_while(|s| s.t <= cutoff).count()
            };
            self.pop_samples(expired);
        }
        if self.samples.capacity() > 4 * self.samples.len().max(COMPACT_MIN) {
            self.samples
                .shrink_to(2 * self.samples.len().max(COMPACT_MIN));
        }
        if let Some(h) = &mut self.histograms {
            while h.ring.front().is_some_and(|s| s.t <= cutoff) {
                h.pop();
            }
            if h.ring.capacity() > 4 * h.ring.len().max(COMPACT_MIN) {
                h.ring.shrink_to(2 * h.ring.len().max(COMPACT_MIN));
            }
        }
    }
}

/// A buffered sample's timestamp.
trait Timed {
    fn t(&self) -> i64;
}
impl Timed for Sample {
    fn t(&self) -> i64 {
        self.t
    }
}
impl Timed for HistogramSample {
    fn t(&self) -> i64 {
        self.t
    }
}

/// The samples with `mint < t <= maxt`. Most reads take every sample, so both ends are
/// checked first: two cache lines instead of a binary search through the ring.
fn window<T: Timed>(samples: &mut VecDeque<T>, mint: i64, maxt: i64) -> &[T] {
    let all = samples.make_contiguous();
    let (first, last) = match (all.first(), all.last()) {
        (Some(f), Some(l)) => (f.t(), l.t()),
        _ => return &[],
    };
    let lo = if first > mint {
        0
    } else {
        all.partition_point(|x| x.t() <= mint)
    };
    let hi = if last <= maxt {
        all.len()
    } else {
        all.partition_point(|x| x.t() <= maxt)
    };
    if lo < hi {
        &all[lo..hi]
    } else {
        &[]
    }
}

#[derive(Default)]
struct Shard {
    series: Table<Series>,
    /// Metric name → hashes of the buffered series with it, for selectors naming a metric.
    by_name: HashMap<String, Vec<u64>, foldhash::fast::RandomState>,
    samples: usize,
    bytes: usize,
}

/// The buffers of every series some rule reads. Lives across config reloads.
pub struct Buffer {
    shards: Box<[Mutex<Shard>]>,
    /// Where each shard's series table is (`table::Hint`), to prefetch without its lock.
    hints: Box<[Hint<Series>]>,
    series: AtomicUsize,
    /// Label (and tenant) bytes of all series: changes when a series comes or goes only.
    label_bytes: AtomicUsize,
    refused_logged: AtomicBool,
}

impl Default for Buffer {
    fn default() -> Self {
        Self::new()
    }
}

/// Seed of the buffers' series keys: fixed, not the guard's `hash_seed`, so that a reload
/// never changes the key of a buffered series.
const KEY_SEED: u64 = 0x7275_6c65_735f_6275;

/// The key of a tenant's series in the buffers: a 128-bit xxh3 of its labels in the guard's
/// canonical form (`guard::identity`: sorted, so any wire order is one series). The low half
/// picks the shard and the map slot; the high half is kept with the series and tells apart
/// two series whose low halves collide without comparing their labels, which cost several
/// times the hash (two live series agreeing in all 128 bits: about n²/2¹²⁹, 1.5e-27 at a
/// million).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesKey {
    hash: u64,
    check: u64,
}

impl SeriesKey {
    /// `canonical`: the labels' canonical encoding where the request already holds it
    /// (`SeriesView::canonical_labels`), hashed in place; otherwise it is built from `labels`.
    pub fn new<'a>(
        tenant: Option<&str>,
        labels: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
        canonical: Option<&[u8]>,
    ) -> SeriesKey {
        thread_local! {
            static IDENTITY: RefCell<Identity> = RefCell::new(Identity::new());
        }
        let h = match canonical {
            Some(bytes) => xxh3_128_with_seed(bytes, KEY_SEED),
            None => {
                IDENTITY.with_borrow_mut(|id| xxh3_128_with_seed(id.canonical(labels), KEY_SEED))
            }
        };
        let h = match tenant {
            None => h,
            Some(t) => h ^ xxh3_128_with_seed(t.as_bytes(), KEY_SEED ^ 0x007e_4a47).rotate_left(17),
        };
        SeriesKey {
            hash: h as u64,
            check: (h >> 64) as u64,
        }
    }
}

impl Buffer {
    pub fn new() -> Buffer {
        Buffer {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hints: (0..SHARDS).map(|_| Hint::default()).collect(),
            series: AtomicUsize::new(0),
            label_bytes: AtomicUsize::new(0),
            refused_logged: AtomicBool::new(false),
        }
    }

    fn shard_index(hash: u64) -> usize {
        (hash >> 58) as usize % SHARDS
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding a shard leaves it consistent enough to keep serving (every
        // update is a push or a trim); never let one bad request poison the rules for good.
        self.shards[Self::shard_index(hash)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Start loading where `key`'s series is, without locking its shard: the tap asks this
    /// for every series of a request before appending to any, so that their cache misses
    /// overlap instead of coming one append at a time.
    #[inline]
    pub fn prefetch(&self, key: &SeriesKey) {
        self.hints[Self::shard_index(key.hash)].prefetch(key.hash);
    }

    /// `append_for` a series of no tenant.
    pub fn append<'a, L>(
        &self,
        labels: L,
        samples: impl Iterator<Item = Sample>,
        retention_ms: i64,
        limits: &BufferLimits,
    ) -> Appended
    where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        self.append_for(None, labels, samples, retention_ms, limits)
    }

    /// Label and tenant bytes of every buffered series.
    pub fn label_bytes(&self) -> usize {
        self.label_bytes.load(Ordering::Relaxed)
    }

    /// Buffer one series' samples (wire order, oldest first). Samples at or before the newest
    /// already buffered are ignored and counted: a retried request never counts twice.
    pub fn append_for<'a, L>(
        &self,
        tenant: Option<&str>,
        labels: L,
        samples: impl Iterator<Item = Sample>,
        retention_ms: i64,
        limits: &BufferLimits,
    ) -> Appended
    where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        self.append_all(
            tenant,
            None,
            labels,
            samples,
            std::iter::empty(),
            retention_ms,
            limits,
        )
    }

    /// [`Buffer::append_for`] with the series' native histograms too (each kind in time
    /// order; a histogram at or before the newest buffered histogram is out of order). The
    /// per-series sample cap applies to each kind.
    ///
    /// `key`: the series' key when the caller has it (`SeriesKey::new` from bytes in place);
    /// otherwise it is computed from `labels`.
    #[allow(clippy::too_many_arguments)]
    pub fn append_all<'a, L>(
        &self,
        tenant: Option<&str>,
        key: Option<SeriesKey>,
        labels: L,
        samples: impl Iterator<Item = Sample>,
        histograms: impl Iterator<Item = HistogramSample>,
        retention_ms: i64,
        limits: &BufferLimits,
    ) -> Appended
    where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        let key = key.unwrap_or_else(|| SeriesKey::new(tenant, labels.clone(), None));
        let hash = key.hash;
        let mut out = Appended::default();
        let mut guard = self.shard(hash);
        let shard = &mut *guard;
        let series = match shard.series.get_mut(hash) {
            Some(s) => {
                if s.check != key.check || s.tenant.as_deref() != tenant {
                    // Two live series share the map's 64 bits: keep the first, refuse the
                    // second rather than mixing their samples.
                    out.refused_series = true;
                    return out;
                }
                s
            }
            None => {
                let label_bytes = tenant.map_or(0, str::len)
                    + labels
                        .clone()
                        .map(|(n, v)| n.len() + v.len() + std::mem::size_of::<(String, String)>())
                        .sum::<usize>();
                if self.series.load(Ordering::Relaxed) >= limits.max_series
                    || self.label_bytes.load(Ordering::Relaxed) + label_bytes
                        > limits.max_label_bytes
                {
                    out.refused_series = true;
                    if !self.refused_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            max = limits.max_series,
                            max_label_bytes = limits.max_label_bytes,
                            "rule buffers full: new series are not buffered and rules will not see them (rules.max_buffered_series, rules.max_buffered_label_bytes)"
                        );
                    }
                    return out;
                }
                self.series.fetch_add(1, Ordering::Relaxed);
                self.label_bytes.fetch_add(label_bytes, Ordering::Relaxed);
                let mut owned: Labels = labels
                    .map(|(n, v)| {
                        (
                            String::from_utf8_lossy(n).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        )
                    })
                    .collect();
                owned.sort_unstable();
                if let Some((_, name)) = owned.iter().find(|(n, _)| n == "__name__") {
                    shard.by_name.entry(name.clone()).or_default().push(hash);
                }
                let s = Series {
                    check: key.check,
                    tenant: tenant.map(Into::into),
                    labels: owned,
                    samples: VecDeque::new(),
                    oldest: i64::MAX,
                    newest: i64::MIN,
                    histograms: None,
                    retention_ms,
                };
                shard.bytes += s.bytes();
                shard
                    .series
                    .insert_new(hash, s, &self.hints[Self::shard_index(hash)])
            }
        };
        out.buffered = true;
        let before = (series.len(), series.ring_bytes());
        series.retention_ms = retention_ms;
        for s in samples {
            if s.t <= series.newest {
                out.out_of_order += 1;
                continue;
            }
            series.push_sample(s);
            out.samples += 1;
        }
        let newest = series.newest;
        let floats = out.samples;
        let mut newest_h = series.newest_histogram().unwrap_or(i64::MIN);
        for h in histograms {
            if h.t <= newest_h {
                out.out_of_order += 1;
                continue;
            }
            newest_h = h.t;
            let hs = series.histograms.get_or_insert_with(Box::default);
            hs.bytes += histogram_bytes(&h);
            hs.ring.push_back(h);
            out.samples += 1;
        }
        if out.samples > 0 {
            series.trim(newest.max(newest_h).saturating_sub(retention_ms));
            if floats > 0 && series.samples.len() > limits.max_samples_per_series {
                let excess = series.samples.len() - limits.max_samples_per_series;
                series.pop_samples(excess);
                out.evicted_early += excess as u64;
            }
            if let Some(h) = &mut series.histograms {
                while h.ring.len() > limits.max_samples_per_series {
                    h.pop();
                    out.evicted_early += 1;
                }
            }
        }
        debug_assert!(series.ends_agree());
        let after = (series.len(), series.ring_bytes());
        shard.samples = shard.samples + after.0 - before.0;
        shard.bytes = shard.bytes + after.1 - before.1;
        out
    }

    /// Drop samples older than each series' retention relative to `now_ms`, and series left
    /// with none (they no longer match anything, or stopped arriving).
    pub fn sweep(&self, now_ms: i64) {
        for (m, hint) in self.shards.iter().zip(self.hints.iter()) {
            let mut guard = m.lock().unwrap_or_else(|e| e.into_inner());
            let shard = &mut *guard;
            let mut gone_names = HashSet::new();
            let (mut samples, mut bytes) = (0, 0);
            let keep = |s: &mut Series| {
                s.trim(now_ms.saturating_sub(s.retention_ms));
                debug_assert!(s.ends_agree());
                if s.len() == 0 {
                    if let Some((_, n)) = s.labels.iter().find(|(n, _)| n == "__name__") {
                        gone_names.insert(n.clone());
                    }
                    self.series.fetch_sub(1, Ordering::Relaxed);
                    let freed = s.tenant.as_ref().map_or(0, |t| t.len())
                        + s.labels
                            .iter()
                            .map(|(n, v)| {
                                n.len() + v.len() + std::mem::size_of::<(String, String)>()
                            })
                            .sum::<usize>();
                    self.label_bytes.fetch_sub(freed, Ordering::Relaxed);
                    false
                } else {
                    samples += s.len();
                    bytes += s.bytes();
                    true
                }
            };
            shard.series.retain(keep, hint);
            for name in gone_names {
                let keep = |h: &u64| shard.series.contains_key(*h);
                if let Some(v) = shard.by_name.get_mut(&name) {
                    v.retain(keep);
                    if v.is_empty() {
                        shard.by_name.remove(&name);
                    }
                }
            }
            shard.samples = samples;
            shard.bytes = bytes;
        }
    }

    /// Every buffered series with its samples, for a snapshot: one shard locked at a time,
    /// for a copy of its series.
    pub fn image(&self) -> Vec<SeriesImage> {
        let mut out = Vec::new();
        for m in self.shards.iter() {
            let shard = m.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(shard.series.values().map(|s| {
                SeriesImage {
                    tenant: s.tenant.as_deref().map(str::to_string),
                    labels: s.labels.clone(),
                    samples: s.samples.iter().copied().collect(),
                    histograms: s
                        .histograms
                        .as_ref()
                        .map_or_else(Vec::new, |h| h.ring.iter().cloned().collect()),
                    retention_ms: s.retention_ms,
                }
            }));
        }
        out
    }

    /// Put saved series back (before any request), through the same path and limits as the
    /// write path; returns how many were buffered.
    pub fn restore(&self, series: Vec<SeriesImage>, limits: &BufferLimits) -> usize {
        let mut n = 0;
        for s in series {
            let labels = s.labels.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
            let a = self.append_all(
                s.tenant.as_deref(),
                None,
                labels,
                s.samples.into_iter(),
                s.histograms.into_iter(),
                s.retention_ms,
                limits,
            );
            n += usize::from(a.buffered);
        }
        n
    }

    pub fn stats(&self) -> BufferStats {
        let mut st = BufferStats {
            label_bytes: self.label_bytes() as u64,
            ..BufferStats::default()
        };
        for m in self.shards.iter() {
            let s = m.lock().unwrap_or_else(|e| e.into_inner());
            st.series += s.series.len() as u64;
            st.samples += s.samples as u64;
            st.bytes += (s.bytes
                + s.series.capacity() * Table::<Series>::slot_bytes()
                + s.by_name.values().map(|v| v.capacity() * 8).sum::<usize>())
                as u64;
        }
        st
    }
}

impl Storage for Buffer {
    fn select(
        &self,
        matchers: &Matchers,
        mint: i64,
        maxt: i64,
        f: &mut dyn FnMut(&Labels, &[Sample]),
    ) {
        let mut visit = |s: &mut Series| {
            if promql::matches(
                matchers,
                s.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            ) {
                let Series {
                    labels, samples, ..
                } = s;
                let w = window(samples, mint, maxt);
                if !w.is_empty() {
                    f(labels, w);
                }
            }
        };
        self.visit(matchers, &mut visit);
    }

    fn select_all(&self, matchers: &Matchers, mint: i64, maxt: i64, f: &mut SeriesSink<'_>) {
        let mut visit = |s: &mut Series| {
            if promql::matches(
                matchers,
                s.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            ) {
                let Series {
                    labels,
                    samples,
                    histograms,
                    ..
                } = s;
                let w = window(samples, mint, maxt);
                let h = match histograms {
                    Some(h) => window(&mut h.ring, mint, maxt),
                    None => &[],
                };
                if !w.is_empty() || !h.is_empty() {
                    f(labels, w, h);
                }
            }
        };
        self.visit(matchers, &mut visit);
    }
}

impl Buffer {
    /// Call `visit` with every series a selector may match (those of its metric name when it
    /// names one), one shard locked at a time.
    fn visit(&self, matchers: &Matchers, visit: &mut dyn FnMut(&mut Series)) {
        let name = name_equality(matchers);
        for m in self.shards.iter() {
            let mut guard = m.lock().unwrap_or_else(|e| e.into_inner());
            let Shard {
                series, by_name, ..
            } = &mut *guard;
            match name {
                Some(n) => {
                    for h in by_name.get(n).map(Vec::as_slice).unwrap_or(&[]) {
                        if let Some(s) = series.get_mut(*h) {
                            visit(s);
                        }
                    }
                }
                None => series.values_mut().for_each(&mut *visit),
            }
        }
    }
}

mod table;
#[cfg(test)]
mod tests;

use table::{Hint, Table};
