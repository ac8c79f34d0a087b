//! The `relabel` action: series over budget are not dropped but collapsed. Their overflow
//! labels are set to `__overflow__`, and every series that collapses into the same label set
//! becomes a member of one aggregate:
//!
//! - counters (names ending `_total`, `_count`, `_sum`, `_bucket`; classic histogram buckets
//!   keep their `le`, so they are summed per bucket) add up the members' latest values, and a
//!   member's reset adds its last value to a base so the sum never goes down;
//! - gauges combine the members' latest values with the budget's `overflow_gauge` function.
//!
//! Aggregates are emitted every `overflow_flush_interval` as ordinary series, stamped with the
//! flush time: one scrape's members may arrive in several requests on either side of a flush,
//! so a member timestamp would get two different sums (a partial one first), which a backend
//! refuses as a duplicate sample. A flush time is new every time. Members are kept
//! by id with their latest value only; a member unseen for a whole window leaves the aggregate,
//! its counter value folded into the base. The number of members per aggregate is capped, and
//! so are the bytes of all aggregates with their labels and members (`max_overflow_bytes`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use foldhash::fast::RandomState;

use super::identity::Identity;
use super::GaugeFunction;
use crate::series::OwnedLabels;
use crate::wire::OwnedSeries;

/// The value overflow labels are set to.
pub const OVERFLOW_VALUE: &str = "__overflow__";
/// Members tracked per aggregate; past this, further new members are not merged (counted).
pub const MAX_MEMBERS: usize = 100_000;
/// Aggregates tracked in all; past this, further new aggregates are not created (counted).
pub const MAX_AGGREGATES: usize = 100_000;

/// What one member costs, about: its entry in the members map with the map's slack.
const MEMBER_BYTES: usize = 48;
/// The byte cap until the config sets one (`GuardConfig::max_overflow_bytes`'s default).
const DEFAULT_MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge(GaugeFunction),
}

/// A member's latest sample.
#[derive(Debug, Clone, Copy)]
struct Member {
    value: f64,
    timestamp: i64,
    /// Wall-clock ms when last updated (for expiry).
    seen_ms: i64,
}

#[derive(Debug)]
struct Aggregate {
    /// The tenant whose series it merges (when tenants are on): it goes back to that tenant.
    tenant: Option<String>,
    labels: Vec<(String, String)>,
    kind: Kind,
    members: HashMap<u64, Member, RandomState>,
    /// Counters: what members that reset or left contributed before.
    base: f64,
    /// Newest member timestamp.
    timestamp: i64,
    /// Timestamp of the last emitted sample; the next one is strictly later.
    emitted: i64,
    /// Changed since the last flush.
    dirty: bool,
    /// What the aggregate itself costs, without its members (`MEMBER_BYTES` each).
    own_bytes: usize,
}

impl Aggregate {
    fn bytes(&self) -> usize {
        self.own_bytes + self.members.len() * MEMBER_BYTES
    }

    fn value(&self) -> f64 {
        let latest = self.members.values().map(|m| m.value);
        match self.kind {
            Kind::Counter => self.base + latest.sum::<f64>(),
            Kind::Gauge(GaugeFunction::Sum) => latest.sum(),
            Kind::Gauge(GaugeFunction::Max) => latest.fold(f64::NEG_INFINITY, f64::max),
            Kind::Gauge(GaugeFunction::Min) => latest.fold(f64::INFINITY, f64::min),
            Kind::Gauge(GaugeFunction::Last) => self
                .members
                .values()
                .max_by_key(|m| m.timestamp)
                .map_or(f64::NAN, |m| m.value),
        }
    }
}

/// One aggregate's sample from a flush.
#[derive(Debug, Clone, PartialEq)]
pub struct Flushed {
    /// For `Overflow::requeue`.
    pub key: u64,
    /// The tenant of its members, sent as the upstream's tenant header.
    pub tenant: Option<String>,
    pub series: OwnedSeries,
}

/// Counts of what the overflow stage could not merge.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OverflowStats {
    pub aggregates: usize,
    pub members: usize,
    pub refused_members: u64,
    /// Bytes held by the aggregates, their labels and members (about).
    pub bytes: usize,
    pub max_bytes: usize,
}

/// All overflow aggregates of the process.
#[derive(Debug)]
pub struct Overflow {
    inner: Mutex<Inner>,
    max_bytes: AtomicUsize,
}

impl Default for Overflow {
    fn default() -> Self {
        Overflow {
            inner: Mutex::default(),
            max_bytes: AtomicUsize::new(DEFAULT_MAX_BYTES),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    aggregates: HashMap<u64, Aggregate, RandomState>,
    identity: Identity,
    refused_members: u64,
    bytes: usize,
}

/// Whether a metric is summed as a counter.
pub fn is_counter(metric: &[u8]) -> bool {
    [&b"_total"[..], b"_count", b"_sum", b"_bucket"]
        .iter()
        .any(|s| metric.ends_with(s))
}

/// The overflow label set of a series: `labels` with every label in `overflow` set to
/// `__overflow__` (labels absent from the series are left absent).
pub fn overflow_labels<'a>(
    labels: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    overflow: &[String],
) -> OwnedLabels {
    labels
        .map(|(n, v)| {
            if overflow.iter().any(|o| o.as_bytes() == n) {
                (n.to_vec(), OVERFLOW_VALUE.as_bytes().to_vec())
            } else {
                (n.to_vec(), v.to_vec())
            }
        })
        .collect()
}

impl Overflow {
    /// The byte cap of the config in force; set by the guard before it merges.
    pub fn set_max_bytes(&self, n: usize) {
        self.max_bytes.store(n, Ordering::Relaxed);
    }

    /// Merge one member series into its aggregate. `member` is the series' own id;
    /// `samples` its `(value, timestamp)` pairs. Idempotent: re-sending the same samples
    /// (a retried request) changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn absorb(
        &self,
        seed: u64,
        tenant: Option<&str>,
        labels: &OwnedLabels,
        member: u64,
        gauge: GaugeFunction,
        samples: impl Iterator<Item = (f64, i64)>,
        now_ms: i64,
    ) {
        let max_bytes = self.max_bytes.load(Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner {
            aggregates,
            identity,
            refused_members,
            bytes,
        } = &mut *inner;
        // Two tenants' series never merge into one aggregate: the tenant is part of the key.
        let seed = tenant.map_or(seed, |t| {
            seed ^ xxhash_rust::xxh3::xxh3_64(t.as_bytes()).rotate_left(1)
        });
        let key = identity.series_id(
            seed,
            labels.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        let new_bytes = std::mem::size_of::<(u64, Aggregate)>()
            + 8
            + tenant.map_or(0, str::len)
            + labels
                .iter()
                .map(|(n, v)| n.len() + v.len() + std::mem::size_of::<(String, String)>())
                .sum::<usize>();
        if !aggregates.contains_key(&key)
            && (aggregates.len() >= MAX_AGGREGATES || *bytes + new_bytes + MEMBER_BYTES > max_bytes)
        {
            *refused_members += 1;
            return;
        }
        let agg = aggregates.entry(key).or_insert_with(|| {
            *bytes += new_bytes;
            let metric = labels
                .iter()
                .find(|(n, _)| n == b"__name__")
                .map(|(_, v)| v.as_slice())
                .unwrap_or_default();
            Aggregate {
                tenant: tenant.map(str::to_string),
                labels: labels
                    .iter()
                    .map(|(n, v)| {
                        (
                            String::from_utf8_lossy(n).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        )
                    })
                    .collect(),
                kind: if is_counter(metric) {
                    Kind::Counter
                } else {
                    Kind::Gauge(gauge)
                },
                members: HashMap::default(),
                base: 0.0,
                timestamp: 0,
                emitted: i64::MIN,
                dirty: false,
                own_bytes: new_bytes,
            }
        });
        if !agg.members.contains_key(&member)
            && (agg.members.len() >= MAX_MEMBERS || *bytes + MEMBER_BYTES > max_bytes)
        {
            *refused_members += 1;
            if agg.members.is_empty() {
                // Created just now for a member that does not fit: nothing to keep it for.
                *bytes -= agg.own_bytes;
                aggregates.remove(&key);
            }
            return;
        }
        for (value, timestamp) in samples {
            // Stale markers end a member's series; they carry no value to aggregate.
            if value.to_bits() == STALE_NAN || value.is_nan() {
                continue;
            }
            match agg.members.entry(member) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    *bytes += MEMBER_BYTES;
                    e.insert(Member {
                        value,
                        timestamp,
                        seen_ms: now_ms,
                    });
                }
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    let m = e.get_mut();
                    if timestamp <= m.timestamp {
                        continue; // not newer than what we have: a retry or out of order
                    }
                    if agg.kind == Kind::Counter && value < m.value {
                        // A reset: keep what the member had counted so the sum never goes down.
                        agg.base += m.value;
                    }
                    m.value = value;
                    m.timestamp = timestamp;
                    m.seen_ms = now_ms;
                }
            }
            agg.timestamp = agg.timestamp.max(timestamp);
            agg.dirty = true;
        }
    }

    /// The aggregates changed since the last flush, as series stamped `now_ms` (or just after
    /// the aggregate's previous sample). Members unseen for `expire_ms` leave their aggregate
    /// first.
    pub fn flush(&self, now_ms: i64, expire_ms: i64) -> Vec<OwnedSeries> {
        self.flush_keyed(now_ms, expire_ms)
            .into_iter()
            .map(|f| f.series)
            .collect()
    }

    /// `flush`, with each series' aggregate key (so that a failed send can `requeue` it) and
    /// tenant.
    pub fn flush_keyed(&self, now_ms: i64, expire_ms: i64) -> Vec<Flushed> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let Inner {
            aggregates, bytes, ..
        } = &mut *inner;
        aggregates.retain(|key, agg| {
            *bytes -= agg.bytes();
            let mut folded = 0.0;
            agg.members.retain(|_, m| {
                let keep = now_ms - m.seen_ms < expire_ms;
                if !keep {
                    folded += m.value;
                }
                keep
            });
            if agg.kind == Kind::Counter {
                agg.base += folded;
            }
            if agg.dirty {
                let at = now_ms.max(agg.emitted.saturating_add(1));
                agg.emitted = at;
                out.push(Flushed {
                    key: *key,
                    tenant: agg.tenant.clone(),
                    series: OwnedSeries {
                        histograms: Vec::new(),
                        labels: agg.labels.clone(),
                        samples: vec![(agg.value(), at)],
                    },
                });
                agg.dirty = false;
            }
            // Every member gone (its last value was emitted above or before): finished.
            let keep = !agg.members.is_empty();
            if keep {
                *bytes += agg.bytes();
            }
            keep
        });
        out
    }

    /// The upstream did not take a flush: send these aggregates again next time.
    pub fn requeue(&self, keys: impl Iterator<Item = u64>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            if let Some(agg) = inner.aggregates.get_mut(&k) {
                agg.dirty = true;
            }
        }
    }

    /// Every aggregate with its members, for a snapshot (copied under the lock, which the
    /// write path takes only for series over budget).
    pub fn image(&self) -> Vec<super::image::AggregateImage> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .aggregates
            .iter()
            .map(|(&key, a)| super::image::AggregateImage {
                key,
                tenant: a.tenant.clone(),
                labels: a.labels.clone(),
                kind: match a.kind {
                    Kind::Counter => 0,
                    Kind::Gauge(GaugeFunction::Sum) => 1,
                    Kind::Gauge(GaugeFunction::Max) => 2,
                    Kind::Gauge(GaugeFunction::Min) => 3,
                    Kind::Gauge(GaugeFunction::Last) => 4,
                },
                members: a
                    .members
                    .iter()
                    .map(|(&id, m)| (id, m.value, m.timestamp, m.seen_ms))
                    .collect(),
                base: a.base,
                timestamp: a.timestamp,
                emitted: a.emitted,
                dirty: a.dirty,
            })
            .collect()
    }

    /// Put saved aggregates back (before any request), within the caps: counters go on from
    /// their members' last values and base, so their sums never go down across a restart.
    /// Returns how many were restored.
    pub fn restore(&self, images: Vec<super::image::AggregateImage>) -> usize {
        let max_bytes = self.max_bytes.load(Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut restored = 0;
        for img in images {
            let kind = match img.kind {
                0 => Kind::Counter,
                1 => Kind::Gauge(GaugeFunction::Sum),
                2 => Kind::Gauge(GaugeFunction::Max),
                3 => Kind::Gauge(GaugeFunction::Min),
                _ => Kind::Gauge(GaugeFunction::Last),
            };
            let own_bytes = std::mem::size_of::<(u64, Aggregate)>()
                + 8
                + img.tenant.as_ref().map_or(0, String::len)
                + img
                    .labels
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + std::mem::size_of::<(String, String)>())
                    .sum::<usize>();
            let members: HashMap<u64, Member, RandomState> = img
                .members
                .iter()
                .take(MAX_MEMBERS)
                .map(|&(id, value, timestamp, seen_ms)| {
                    (
                        id,
                        Member {
                            value,
                            timestamp,
                            seen_ms,
                        },
                    )
                })
                .collect();
            let agg = Aggregate {
                tenant: img.tenant,
                labels: img.labels,
                kind,
                members,
                base: img.base,
                timestamp: img.timestamp,
                emitted: img.emitted,
                dirty: img.dirty,
                own_bytes,
            };
            if agg.members.is_empty()
                || inner.aggregates.len() >= MAX_AGGREGATES
                || inner.bytes + agg.bytes() > max_bytes
                || inner.aggregates.contains_key(&img.key)
            {
                continue;
            }
            inner.bytes += agg.bytes();
            inner.aggregates.insert(img.key, agg);
            restored += 1;
        }
        restored
    }

    pub fn stats(&self) -> OverflowStats {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        OverflowStats {
            aggregates: inner.aggregates.len(),
            members: inner.aggregates.values().map(|a| a.members.len()).sum(),
            refused_members: inner.refused_members,
            bytes: inner.bytes,
            max_bytes: self.max_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Prometheus's stale-marker bit pattern (docs/protocol.md §1).
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> OwnedLabels {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn value(o: &Overflow) -> f64 {
        let out = o.flush(0, i64::MAX);
        assert_eq!(out.len(), 1, "{out:?}");
        out[0].samples[0].0
    }

    #[test]
    fn counters_sum_and_never_go_down_on_a_member_reset() {
        let o = Overflow::default();
        let l = labels(&[("__name__", "req_total"), ("user_id", OVERFLOW_VALUE)]);
        o.absorb(
            0,
            None,
            &l,
            1,
            GaugeFunction::Sum,
            [(10.0, 1000)].into_iter(),
            0,
        );
        o.absorb(
            0,
            None,
            &l,
            2,
            GaugeFunction::Sum,
            [(5.0, 1000)].into_iter(),
            0,
        );
        assert_eq!(value(&o), 15.0);
        // Member 1 resets to 2: the aggregate goes on from 15, to 17.
        o.absorb(
            0,
            None,
            &l,
            1,
            GaugeFunction::Sum,
            [(2.0, 2000)].into_iter(),
            0,
        );
        assert_eq!(value(&o), 17.0);
        // A retried (older) sample changes nothing; a flush with nothing new emits nothing.
        o.absorb(
            0,
            None,
            &l,
            1,
            GaugeFunction::Sum,
            [(10.0, 1000)].into_iter(),
            0,
        );
        assert!(o.flush(0, i64::MAX).is_empty());
    }

    /// Found end to end: one scrape's members split across two requests with a flush in
    /// between gave two different sums at one member timestamp, which a backend refuses.
    #[test]
    fn every_flush_gets_a_new_timestamp() {
        let o = Overflow::default();
        let l = labels(&[("__name__", "req_total"), ("user_id", OVERFLOW_VALUE)]);
        o.absorb(
            0,
            None,
            &l,
            1,
            GaugeFunction::Sum,
            [(4.0, 1000)].into_iter(),
            0,
        );
        let first = o.flush(5_000, i64::MAX);
        o.absorb(
            0,
            None,
            &l,
            2,
            GaugeFunction::Sum,
            [(6.0, 1000)].into_iter(),
            0,
        );
        let second = o.flush(5_000, i64::MAX);
        assert_eq!(first[0].samples[0], (4.0, 5_000));
        assert_eq!(second[0].samples[0], (10.0, 5_001));
    }

    #[test]
    fn gauges_combine_by_function() {
        for (f, want) in [
            (GaugeFunction::Sum, 6.0),
            (GaugeFunction::Max, 3.0),
            (GaugeFunction::Min, 1.0),
            (GaugeFunction::Last, 2.0),
        ] {
            let o = Overflow::default();
            let l = labels(&[("__name__", "queue_depth"), ("user_id", OVERFLOW_VALUE)]);
            o.absorb(0, None, &l, 1, f, [(1.0, 100)].into_iter(), 0);
            o.absorb(0, None, &l, 2, f, [(3.0, 200)].into_iter(), 0);
            o.absorb(0, None, &l, 3, f, [(2.0, 300)].into_iter(), 0);
            assert_eq!(value(&o), want, "{f:?}");
        }
    }

    #[test]
    fn histogram_buckets_sum_per_le() {
        let o = Overflow::default();
        for (member, le, v) in [
            (1, "0.1", 3.0),
            (2, "0.1", 4.0),
            (1, "+Inf", 5.0),
            (2, "+Inf", 6.0),
        ] {
            let l = labels(&[
                ("__name__", "lat_bucket"),
                ("le", le),
                ("user_id", OVERFLOW_VALUE),
            ]);
            o.absorb(
                0,
                None,
                &l,
                member,
                GaugeFunction::Sum,
                [(v, 1)].into_iter(),
                0,
            );
        }
        let mut out = o.flush(0, i64::MAX);
        out.sort_by(|a, b| a.labels[1].1.cmp(&b.labels[1].1));
        assert_eq!(
            out.iter().map(|s| s.samples[0].0).collect::<Vec<_>>(),
            vec![11.0, 7.0]
        );
    }

    #[test]
    fn expired_members_keep_their_count() {
        let o = Overflow::default();
        let l = labels(&[("__name__", "x_total")]);
        o.absorb(
            0,
            None,
            &l,
            1,
            GaugeFunction::Sum,
            [(10.0, 1)].into_iter(),
            0,
        );
        o.absorb(
            0,
            None,
            &l,
            2,
            GaugeFunction::Sum,
            [(1.0, 1)].into_iter(),
            5_000,
        );
        o.flush(5_000, 1_000_000);
        // Member 1 expires at 1_000_001; member 2 goes on.
        o.absorb(
            0,
            None,
            &l,
            2,
            GaugeFunction::Sum,
            [(2.0, 2)].into_iter(),
            1_000_001,
        );
        let out = o.flush(1_000_001, 1_000_000);
        assert_eq!(out[0].samples[0].0, 12.0);
        assert_eq!(o.stats().members, 1);
    }

    #[test]
    fn overflow_label_set() {
        let pairs = [("__name__", "m"), ("path", "/a/1"), ("service", "s")];
        let got = overflow_labels(
            pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &["path".into()],
        );
        assert_eq!(got[1].1, OVERFLOW_VALUE.as_bytes());
        assert_eq!(got[2].1, b"s");
    }

    /// Issue 11: 100k aggregates of 100k members each were possible; now their bytes are
    /// capped, labels included, and what does not fit is refused and counted.
    #[test]
    fn aggregates_and_members_stay_under_the_byte_cap() {
        let o = Overflow::default();
        o.set_max_bytes(1 << 20);
        let long = "v".repeat(16 << 10);
        for a in 0..200 {
            let l = labels(&[("__name__", "x_total"), ("a", &a.to_string()), ("b", &long)]);
            for m in 0..200 {
                o.absorb(
                    0,
                    Some("t"),
                    &l,
                    m,
                    GaugeFunction::Sum,
                    [(1.0, 1)].into_iter(),
                    0,
                );
                let st = o.stats();
                assert!(st.bytes <= st.max_bytes, "{st:?}");
            }
        }
        let st = o.stats();
        assert!(st.refused_members > 0 && st.aggregates < 200, "{st:?}");
        // Members that leave give their bytes back.
        o.flush_keyed(10, 1);
        assert_eq!(o.stats().bytes, 0);
        assert_eq!(o.stats().aggregates, 0);
    }

    #[test]
    fn tenants_never_share_an_aggregate_and_get_theirs_back() {
        let o = Overflow::default();
        let l = labels(&[("__name__", "req_total"), ("user", OVERFLOW_VALUE)]);
        let add = |tenant, member, v| {
            o.absorb(
                0,
                tenant,
                &l,
                member,
                GaugeFunction::Sum,
                [(v, 1000)].into_iter(),
                0,
            )
        };
        add(Some("team-a"), 1, 10.0);
        add(Some("team-b"), 2, 5.0);
        add(None, 3, 1.0);
        let mut out: Vec<(Option<String>, f64)> = o
            .flush_keyed(2000, 3_600_000)
            .into_iter()
            .map(|f| (f.tenant, f.series.samples[0].0))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            out,
            [
                (None, 1.0),
                (Some("team-a".into()), 10.0),
                (Some("team-b".into()), 5.0)
            ]
        );
    }
}
