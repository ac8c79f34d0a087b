//! `limitk` and `limit_ratio`: keep some series of each group unchanged, chosen without
//! looking at their values, as Prometheus 3's `aggregationK` does.
//!
//! `limitk(k, ...)` keeps the first `k` series of each group in input order. `limit_ratio(r,
//! ...)` keeps a series when its sampling offset, the hash of its labels scaled to `[0, 1]`,
//! is below `r` (or, for a negative `r`, at least `1 + r`): the same series are picked at every
//! evaluation and by every Prometheus 3 server, and `limit_ratio(r, x)` and
//! `limit_ratio(-(1 - r), x)` split `x` in two disjoint halves that add up to all of it.

use std::sync::Arc;

use xxhash_rust::xxh64::Xxh64;

use super::aggregate::{heap_up, less_by_value, Grouper};
use super::eval::{err, Elem};
use super::native::Histogram;
use super::{EvalError, Labels};

/// Which series a [`Limit`] keeps.
#[derive(Debug, Clone, Copy)]
enum Keep {
    First(usize),
    /// The ratio, clamped to `[-1, 1]`.
    Ratio(f64),
}

/// `limitk`/`limit_ratio`, fed one series at a time; a series' labels are cloned only when it
/// is kept.
pub(crate) struct Limit<'a> {
    keep: Keep,
    without: bool,
    grouping: &'a [String],
    grouper: Grouper,
    heaps: Vec<Vec<Elem>>,
}

impl<'a> Limit<'a> {
    /// `limitk(k, ...)`: NaN and values beyond int64 are errors, below 1 keeps nothing.
    pub fn first(k: f64, without: bool, grouping: &'a [String]) -> Result<Self, EvalError> {
        let k = super::aggregate::k_param(k)?;
        Ok(Self::with(Keep::First(k), without, grouping))
    }

    /// `limit_ratio(r, ...)`: NaN is an error, beyond ±1 is capped (Prometheus adds a
    /// warning, which the engine does not compute).
    pub fn ratio(r: f64, without: bool, grouping: &'a [String]) -> Result<Self, EvalError> {
        if r.is_nan() {
            return Err(err("Ratio value is NaN"));
        }
        Ok(Self::with(
            Keep::Ratio(r.clamp(-1.0, 1.0)),
            without,
            grouping,
        ))
    }

    fn with(keep: Keep, without: bool, grouping: &'a [String]) -> Self {
        Limit {
            keep,
            without,
            grouping,
            grouper: Grouper::new(),
            heaps: Vec::new(),
        }
    }

    pub fn push(
        &mut self,
        labels: &Labels,
        v: f64,
        hist: Option<&Arc<Histogram>>,
        drop_name: bool,
    ) {
        let kept = match self.keep {
            Keep::First(0) => return,
            Keep::Ratio(0.0) => return,
            Keep::First(_) => true,
            Keep::Ratio(r) => ratio_keeps(r, sampling_offset(labels)),
        };
        let g = self.grouper.group(labels, self.without, self.grouping);
        if g == self.heaps.len() {
            self.heaps.push(Vec::new());
        }
        let h = &mut self.heaps[g];
        if !kept || matches!(self.keep, Keep::First(k) if h.len() >= k) {
            return;
        }
        // Prometheus keeps the chosen series in a heap ordered by value, and returns them
        // in heap order: the same pushes give the same order.
        h.push(Elem {
            labels: labels.clone(),
            v,
            drop_name,
            h: hist.cloned(),
        });
        let last = h.len() - 1;
        heap_up(h, last, &|a: &Elem, b: &Elem| less_by_value(a.v, b.v));
    }

    pub fn finish(self) -> Vec<Elem> {
        self.heaps.into_iter().flatten().collect()
    }
}

/// Prometheus's `AddRatioSampleWithOffset`.
fn ratio_keeps(r: f64, offset: f64) -> bool {
    (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r)
}

/// Prometheus's `HashRatioSampler.SampleOffset`: the series' `labels.Hash()` over
/// `u64::MAX`. The hash is that of Prometheus 3's default build (`stringlabels`): XXH64 of
/// the labels in its in-memory encoding, each name and value preceded by its length in one
/// byte, or for 255 bytes and more by 0xff and three little-endian bytes. The name takes part
/// while it is still there (the engine removes names at the end, as Prometheus 3 does with
/// delayed name removal).
pub(crate) fn sampling_offset(labels: &Labels) -> f64 {
    let mut h = Xxh64::new(0);
    for (n, v) in labels {
        for s in [n, v] {
            let len = s.len();
            if len < 255 {
                h.update(&[len as u8]);
            } else {
                h.update(&[0xff, len as u8, (len >> 8) as u8, (len >> 16) as u8]);
            }
            h.update(s.as_bytes());
        }
    }
    h.digest() as f64 / u64::MAX as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(ls: &[(&str, &str)]) -> Labels {
        ls.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sampling_offset_is_xxh64_of_the_stringlabels_encoding() {
        // The encoding of {a="b"} is 01 'a' 01 'b'.
        let want = xxhash_rust::xxh64::xxh64(&[1, b'a', 1, b'b'], 0) as f64 / u64::MAX as f64;
        assert_eq!(sampling_offset(&labels(&[("a", "b")])), want);
        let long = "v".repeat(300);
        let mut enc = vec![1, b'a', 0xff, 44, 1, 0];
        enc.extend(long.as_bytes());
        let want = xxhash_rust::xxh64::xxh64(&enc, 0) as f64 / u64::MAX as f64;
        assert_eq!(sampling_offset(&labels(&[("a", &long)])), want);
        assert!((0.0..=1.0).contains(&want));
    }

    #[test]
    fn a_ratio_and_its_negative_complement_split_the_series() {
        for r in [0.0, 0.1, 0.25, 0.5, 0.9, 1.0] {
            for i in 0..200 {
                let o = sampling_offset(&labels(&[("i", &i.to_string())]));
                let a = r > 0.0 && ratio_keeps(r, o);
                let b = r < 1.0 && ratio_keeps(-(1.0 - r), o);
                assert!(a != b, "r={r} i={i} offset={o}");
            }
        }
        assert!(ratio_keeps(-1.0, 0.0) && ratio_keeps(1.0, 0.999_999));
    }

    #[test]
    fn limitk_keeps_the_first_k_of_each_group() {
        let grouping = vec!["g".to_string()];
        let mut l = Limit::first(2.0, false, &grouping).unwrap();
        for (g, i) in [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("b", 5)] {
            l.push(
                &labels(&[("g", g), ("i", &i.to_string())]),
                i as f64,
                None,
                false,
            );
        }
        let mut got: Vec<f64> = l.finish().iter().map(|e| e.v).collect();
        got.sort_by(f64::total_cmp);
        assert_eq!(got, vec![1.0, 2.0, 3.0, 5.0]);
        assert!(Limit::first(f64::NAN, false, &grouping).is_err());
        assert!(Limit::ratio(f64::NAN, false, &grouping).is_err());
        let mut l = Limit::first(-3.0, false, &grouping).unwrap();
        l.push(&labels(&[("g", "a")]), 1.0, None, false);
        assert!(l.finish().is_empty());
    }
}
