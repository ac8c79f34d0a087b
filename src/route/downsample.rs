//! Per-route downsampling (`min_interval`): at most one sample per series per interval.
//!
//! The kept sample of an interval is the first one seen in its bucket (`ts / min_interval`).
//! Decisions are taken from *committed* state plus what the same request already decided
//! (a request may carry a series several times), and a request's decisions are committed only
//! once every upstream acknowledged it. A retried request therefore gets the same decisions
//! again, sample for sample: nothing a failed attempt "kept" is lost on the retry, and what
//! reaches a backend twice is an identical duplicate.
//!
//! State is one small entry per (route, series) keyed by a 64-bit hash, in mutex-sharded maps,
//! bounded by a cap; idle entries are evicted. When the cap is reached, new series are not
//! tracked and keep every sample (counted): downsampling fails open, never losing data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const SHARDS: usize = 16;

/// Most (route, series) entries tracked at once across all routes.
pub const DEFAULT_MAX_SERIES: usize = 2_000_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Timestamp of the last kept sample.
    kept_ts: i64,
    /// Wall clock of the last commit, for idle eviction.
    seen_ms: i64,
}

/// Downsampling state; lives across reloads.
pub struct Downsampler {
    shards: Vec<Mutex<HashMap<u64, Entry, foldhash::fast::FixedState>>>,
    max_per_shard: usize,
    len: AtomicU64,
    /// Series that could not be tracked because the table was full.
    pub untracked: AtomicU64,
}

impl Default for Downsampler {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SERIES)
    }
}

/// A decision to record once the request is acknowledged: `(key, kept_ts)`.
pub type Pending = (u64, i64);

impl Downsampler {
    pub fn new(max_series: usize) -> Self {
        Downsampler {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(Default::default())))
                .collect(),
            max_per_shard: max_series.div_ceil(SHARDS).max(1),
            len: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, Entry, foldhash::fast::FixedState>> {
        &self.shards[(key >> 60) as usize % SHARDS]
    }

    /// Series tracked now.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decide which of a series' sample timestamps to keep (`keep[k]` for the k-th), given
    /// what this request already decided for the same key (`overlay`). Returns the number kept.
    pub fn decide(
        &self,
        key: u64,
        interval_ms: i64,
        timestamps: impl Iterator<Item = i64>,
        overlay: &mut HashMap<u64, i64, foldhash::fast::FixedState>,
        keep: &mut Vec<bool>,
    ) -> usize {
        keep.clear();
        let interval_ms = interval_ms.max(1);
        let mut last = match overlay.get(&key) {
            Some(&t) => Some(t),
            None => self
                .shard(key)
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .map(|e| e.kept_ts),
        };
        let mut kept = 0;
        for ts in timestamps {
            let k = match last {
                None => true,
                Some(l) => ts.div_euclid(interval_ms) > l.div_euclid(interval_ms) || ts == l,
            };
            if k {
                kept += 1;
                if last.is_none_or(|l| ts > l) {
                    last = Some(ts);
                }
            }
            keep.push(k);
        }
        if let Some(l) = last {
            overlay.insert(key, l);
        }
        kept
    }

    /// Record the decisions of an acknowledged request.
    pub fn commit(&self, pending: &[Pending], now_ms: i64) {
        for &(key, kept_ts) in pending {
            let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = shard.get_mut(&key) {
                if kept_ts > e.kept_ts {
                    e.kept_ts = kept_ts;
                }
                e.seen_ms = now_ms;
                continue;
            }
            if shard.len() >= self.max_per_shard {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            shard.insert(
                key,
                Entry {
                    kept_ts,
                    seen_ms: now_ms,
                },
            );
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forget series not committed since `idle_before_ms`; returns how many.
    pub fn evict_idle(&self, idle_before_ms: i64) -> u64 {
        let mut evicted = 0;
        for s in &self.shards {
            let mut shard = s.lock().unwrap_or_else(|e| e.into_inner());
            let before = shard.len();
            shard.retain(|_, e| e.seen_ms >= idle_before_ms);
            evicted += (before - shard.len()) as u64;
        }
        self.len.fetch_sub(evicted, Ordering::Relaxed);
        evicted
    }

    /// Every entry as `(key, kept_ts, seen_ms)`, for a snapshot: one shard locked at a time,
    /// for a copy of its entries.
    pub fn image(&self) -> Vec<(u64, i64, i64)> {
        let mut out = Vec::with_capacity(self.len() as usize);
        for s in &self.shards {
            let shard = s.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(shard.iter().map(|(&k, e)| (k, e.kept_ts, e.seen_ms)));
        }
        out
    }

    /// Put saved entries back (before any request), within the cap; returns how many.
    pub fn restore(&self, entries: &[(u64, i64, i64)]) -> u64 {
        let before = self.len();
        for &(key, kept_ts, seen_ms) in entries {
            let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
            if shard.len() >= self.max_per_shard || shard.contains_key(&key) {
                continue;
            }
            shard.insert(key, Entry { kept_ts, seen_ms });
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        self.len() - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Overlay = HashMap<u64, i64, foldhash::fast::FixedState>;

    fn run(d: &Downsampler, key: u64, ts: &[i64]) -> (Vec<bool>, Vec<Pending>) {
        let mut overlay = Overlay::default();
        let mut keep = Vec::new();
        d.decide(key, 10_000, ts.iter().copied(), &mut overlay, &mut keep);
        (keep, overlay.into_iter().collect())
    }

    #[test]
    fn keeps_the_first_sample_per_interval() {
        let d = Downsampler::new(100);
        let (keep, pending) = run(&d, 1, &[1_000, 5_000, 9_999, 10_000, 12_000, 35_000]);
        assert_eq!(keep, [true, false, false, true, false, true]);
        d.commit(&pending, 0);
        // The next request continues from the committed bucket.
        let (keep, _) = run(&d, 1, &[36_000, 40_000]);
        assert_eq!(keep, [false, true]);
    }

    #[test]
    fn a_retried_request_gets_the_same_decisions() {
        let d = Downsampler::new(100);
        let (first, pending) = run(&d, 7, &[1_000, 2_000, 11_000, 12_000]);
        // Not acknowledged: nothing committed, the retry decides the same.
        let (retry, _) = run(&d, 7, &[1_000, 2_000, 11_000, 12_000]);
        assert_eq!(first, retry);
        d.commit(&pending, 0);
        // A resend after the commit keeps the committed sample again (identical duplicate).
        let (again, _) = run(&d, 7, &[11_000, 12_000]);
        assert_eq!(again, [true, false]);
    }

    #[test]
    fn one_series_repeated_in_a_request_is_decided_once() {
        // Prometheus sends one TimeSeries per sample: the overlay carries the request's state.
        let d = Downsampler::new(100);
        let mut overlay = Overlay::default();
        let mut keep = Vec::new();
        let mut all = Vec::new();
        for ts in [1_000, 2_000, 10_500, 10_700] {
            d.decide(3, 10_000, std::iter::once(ts), &mut overlay, &mut keep);
            all.push(keep[0]);
        }
        assert_eq!(all, [true, false, true, false]);
    }

    #[test]
    fn bounded_and_evicts_idle_series() {
        let d = Downsampler::new(SHARDS); // one per shard
        let same_shard = [1u64, 2, 3];
        for k in same_shard {
            d.commit(&[(k, 0)], 100);
        }
        assert_eq!(d.len(), 1);
        assert_eq!(d.untracked.load(Ordering::Relaxed), 2);
        // An untracked series keeps every sample in a new bucket (fails open).
        let (keep, _) = run(&d, 2, &[0, 10_000]);
        assert_eq!(keep, [true, true]);
        assert_eq!(d.evict_idle(101), 1);
        assert!(d.is_empty());
    }
}
