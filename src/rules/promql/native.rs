//! Native histograms as the engine sees them: the value type (spans + absolute bucket counts,
//! the layout of Prometheus's `FloatHistogram` and of remote write's float histograms) and
//! its arithmetic, with Prometheus 3's semantics (`model/histogram/float_histogram.go`,
//! `promql/quantile.go`): schema reduction to the coarser of two schemas, zero-bucket
//! reconciliation, counter-reset detection across schemas, compaction, quantiles, fractions
//! and variance estimated from the buckets.
//!
//! Buckets are kept sparse (a span list and one count per populated position); arithmetic
//! walks them as `(index, count)` pairs, so a histogram never expands into a dense array.

use std::sync::Arc;

use super::aggregate::kahan_inc;

pub(crate) use kahan::KahanSum;

/// The schema of native histograms with custom bucket bounds (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// A run of `length` consecutive buckets starting `offset` indices after the previous run's end
/// (after index 0 for the first run), as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: i32,
    pub length: u32,
}

/// What the producer says about counter resets (remote write's `ResetHint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetHint {
    #[default]
    Unknown,
    Reset,
    NotReset,
    Gauge,
}

/// One native histogram (integer histograms are converted to absolute float counts).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub hint: ResetHint,
    /// -4..=8 for exponential buckets, [`CUSTOM_BUCKETS_SCHEMA`] for custom bounds.
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    pub positive: Vec<f64>,
    pub negative_spans: Vec<Span>,
    pub negative: Vec<f64>,
    /// Upper bounds of the custom buckets (schema -53 only), shared between samples.
    pub custom_values: Arc<[f64]>,
}

/// Why two histograms cannot be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    #[error("cannot combine exponential and custom-bucket histograms")]
    IncompatibleSchema,
    #[error("custom-bucket histograms with different bounds")]
    MismatchedBounds,
}

/// One bucket with its bounds, as Prometheus's bucket iterators yield them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub count: f64,
}

/// `(index, count)` of every stored bucket, in index order.
pub fn pairs(spans: &[Span], counts: &[f64]) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(counts.len());
    let mut idx = 0i32;
    let mut k = 0usize;
    for (n, s) in spans.iter().enumerate() {
        idx = if n == 0 {
            s.offset
        } else {
            idx.saturating_add(s.offset)
        };
        for _ in 0..s.length {
            let Some(&c) = counts.get(k) else {
                return out;
            };
            out.push((idx, c));
            k += 1;
            idx = idx.saturating_add(1);
        }
    }
    out
}

/// Spans and counts for `(index, count)` pairs in increasing index order: one span per run of
/// consecutive indices, explicit zero counts kept.
pub fn from_pairs(ps: &[(i32, f64)]) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut counts = Vec::with_capacity(ps.len());
    let mut next = 0i32; // index just past the previous span
    for (n, &(idx, c)) in ps.iter().enumerate() {
        match spans.last_mut() {
            Some(s) if n > 0 && idx == next => s.length += 1,
            _ => spans.push(Span {
                offset: if n == 0 { idx } else { idx - next },
                length: 1,
            }),
        }
        next = idx + 1;
        counts.push(c);
    }
    (spans, counts)
}

/// Prometheus's `targetIdx`: the bucket of `target` schema that bucket `idx` of `origin` falls in.
fn target_idx(idx: i32, origin: i32, target: i32) -> i32 {
    ((idx - 1) >> (origin - target)) + 1
}

/// Merge buckets into a coarser schema (Prometheus's `reduceResolution`), keeping the
/// positions that result even when their count is zero.
fn reduce(ps: &[(i32, f64)], origin: i32, target: i32) -> Vec<(i32, f64)> {
    if origin <= target {
        return ps.to_vec();
    }
    let mut out: Vec<(i32, f64)> = Vec::with_capacity(ps.len());
    for &(i, c) in ps {
        let t = target_idx(i, origin, target);
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 += c,
            _ => out.push((t, c)),
        }
    }
    out
}

/// Go's `math.Ldexp` without intermediate overflow.
fn ldexp(frac: f64, exp: i32) -> f64 {
    let half = exp / 2;
    frac * 2f64.powi(half) * 2f64.powi(exp - half)
}

/// The upper bound of exponential bucket `idx` (`getBoundExponential`).
fn bound_exponential(idx: i32, schema: i32) -> f64 {
    if schema < 0 {
        let exp = (idx as i64) << (-schema);
        if exp == 1024 {
            return f64::MAX;
        }
        return ldexp(1.0, exp.clamp(-2000, 2000) as i32);
    }
    let frac_idx = idx & ((1 << schema) - 1);
    let frac = 2f64.powf(frac_idx as f64 / (1u32 << schema) as f64) / 2.0;
    let exp = (idx >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    ldexp(frac, exp)
}

impl Histogram {
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    /// The upper bound of bucket `idx` (for `positive`; negated and swapped for negative).
    fn bound(&self, idx: i32) -> f64 {
        if self.uses_custom_buckets() {
            let len = self.custom_values.len() as i32;
            return match idx {
                i if i >= len => f64::INFINITY,
                i if i < 0 => f64::NEG_INFINITY,
                i => self.custom_values[i as usize],
            };
        }
        bound_exponential(idx, self.schema)
    }

    pub fn positive_pairs(&self) -> Vec<(i32, f64)> {
        pairs(&self.positive_spans, &self.positive)
    }

    pub fn negative_pairs(&self) -> Vec<(i32, f64)> {
        pairs(&self.negative_spans, &self.negative)
    }

    fn set_positive(&mut self, ps: &[(i32, f64)]) {
        (self.positive_spans, self.positive) = from_pairs(ps);
    }

    fn set_negative(&mut self, ps: &[(i32, f64)]) {
        (self.negative_spans, self.negative) = from_pairs(ps);
    }

    /// Scale every count and the sum (`Mul`); a negative factor makes it a gauge.
    pub fn mul(&mut self, f: f64) {
        self.zero_count *= f;
        self.count *= f;
        self.sum *= f;
        self.positive.iter_mut().for_each(|b| *b *= f);
        self.negative.iter_mut().for_each(|b| *b *= f);
        if f < 0.0 {
            self.hint = ResetHint::Gauge;
        }
    }

    /// Divide every count and the sum (`Div`); dividing by zero removes the buckets.
    pub fn div(&mut self, f: f64) {
        self.zero_count /= f;
        self.count /= f;
        self.sum /= f;
        if f == 0.0 {
            self.positive.clear();
            self.positive_spans.clear();
            self.negative.clear();
            self.negative_spans.clear();
            return;
        }
        self.positive.iter_mut().for_each(|b| *b /= f);
        self.negative.iter_mut().for_each(|b| *b /= f);
        if f < 0.0 {
            self.hint = ResetHint::Gauge;
        }
    }

    /// Drop every empty bucket (`Compact(0)`).
    pub fn compact(&mut self) {
        if self.positive.contains(&0.0) {
            let ps: Vec<_> = self
                .positive_pairs()
                .into_iter()
                .filter(|p| p.1 != 0.0)
                .collect();
            self.set_positive(&ps);
        }
        if self.negative.contains(&0.0) {
            let ps: Vec<_> = self
                .negative_pairs()
                .into_iter()
                .filter(|p| p.1 != 0.0)
                .collect();
            self.set_negative(&ps);
        }
        // Spans without buckets, or runs split by zero-offset spans, are merged too.
        let ps = self.positive_pairs();
        self.set_positive(&ps);
        let ps = self.negative_pairs();
        self.set_negative(&ps);
    }

    /// A copy at a coarser schema (`CopyToSchema`).
    pub fn to_schema(&self, target: i32) -> Histogram {
        let mut h = self.clone();
        if target < self.schema && !self.uses_custom_buckets() {
            let ps = reduce(&self.positive_pairs(), self.schema, target);
            h.set_positive(&ps);
            let ns = reduce(&self.negative_pairs(), self.schema, target);
            h.set_negative(&ns);
            h.schema = target;
        }
        h
    }

    /// `zeroCountForLargerThreshold`: the zero count were the threshold raised to `larger`,
    /// and the threshold that really results (raised to a bucket bound if `larger` falls in
    /// a populated bucket).
    fn zero_count_for_larger_threshold(&self, mut larger: f64) -> (f64, f64) {
        if larger == self.zero_threshold {
            return (self.zero_count, larger);
        }
        let pos = self.positive_pairs();
        let neg = self.negative_pairs();
        'outer: loop {
            let mut zc = self.zero_count;
            for &(i, c) in &pos {
                let (lower, upper) = (self.bound(i - 1), self.bound(i));
                if lower >= larger {
                    break;
                }
                zc += c;
                if upper > larger {
                    if c != 0.0 {
                        larger = upper;
                    }
                    break;
                }
            }
            for &(i, c) in &neg {
                let (lower, upper) = (-self.bound(i), -self.bound(i - 1));
                if upper <= -larger {
                    break;
                }
                zc += c;
                if lower < -larger {
                    if c != 0.0 {
                        larger = -lower;
                        continue 'outer;
                    }
                    break;
                }
            }
            return (zc, larger);
        }
    }

    /// Empty the buckets now inside the zero bucket, then compact (`trimBucketsInZeroBucket`).
    fn trim_buckets_in_zero_bucket(&mut self) {
        let zt = self.zero_threshold;
        let mut pos = self.positive_pairs();
        for p in pos.iter_mut() {
            if self.bound(p.0 - 1) >= zt {
                break;
            }
            p.1 = 0.0;
        }
        let mut neg = self.negative_pairs();
        for p in neg.iter_mut() {
            if -self.bound(p.0 - 1) <= -zt {
                break;
            }
            p.1 = 0.0;
        }
        self.set_positive(&pos);
        self.set_negative(&neg);
        self.compact();
    }

    /// `reconcileZeroBuckets`: raise either threshold until both agree; returns `other`'s zero
    /// count at the common threshold (this histogram is changed in place).
    fn reconcile_zero_buckets(&mut self, other: &Histogram) -> f64 {
        let mut other_count = other.zero_count;
        let mut other_threshold = other.zero_threshold;
        while other_threshold != self.zero_threshold {
            if self.zero_threshold > other_threshold {
                (other_count, other_threshold) =
                    other.zero_count_for_larger_threshold(self.zero_threshold);
            }
            if other_threshold > self.zero_threshold {
                (self.zero_count, self.zero_threshold) =
                    self.zero_count_for_larger_threshold(other_threshold);
                self.trim_buckets_in_zero_bucket();
            }
        }
        other_count
    }

    /// `adjustCounterReset`: the hint of a sum or difference.
    fn adjust_hint(&mut self, other: &Histogram) {
        use ResetHint as R;
        self.hint = match (self.hint, other.hint) {
            (a, b) if a == b => a,
            (R::Gauge, _) | (_, R::Gauge) => R::Gauge,
            _ => R::Unknown,
        };
    }

    /// `self += other` (`Add`), or `-=` with `negate`. The result has the coarser schema and
    /// the larger zero threshold; buckets of either side are kept even when empty.
    pub fn add(&mut self, other: &Histogram, negate: bool) -> Result<(), HistogramError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        let sign = if negate { -1.0 } else { 1.0 };
        self.adjust_hint(other);
        if !self.uses_custom_buckets() {
            let oz = self.reconcile_zero_buckets(other);
            self.zero_count += sign * oz;
        }
        self.count += sign * other.count;
        self.sum += sign * other.sum;
        if self.uses_custom_buckets() && self.custom_values[..] != other.custom_values[..] {
            // Prometheus adds custom-bucket histograms of different layouts on the bounds
            // both have (`intersectCustomBucketBounds`).
            let common: Arc<[f64]> = intersect(&self.custom_values, &other.custom_values).into();
            let mine = remap_custom(&self.positive_pairs(), &self.custom_values, &common);
            let theirs = remap_custom(&other.positive_pairs(), &other.custom_values, &common);
            self.custom_values = common;
            self.set_positive(&mine);
            let mut o = other.clone();
            o.custom_values = self.custom_values.clone();
            o.set_positive(&theirs);
            let pos = merge_pairs(&self.positive_pairs(), &o.positive_pairs(), sign);
            self.set_positive(&pos);
            return Ok(());
        }
        let target = self.schema.min(other.schema);
        let threshold = self.zero_threshold;
        let merge = |mine: Vec<(i32, f64)>, theirs: Vec<(i32, f64)>, positive: bool| {
            let mine = reduce(&mine, self.schema, target);
            let theirs = reduce(&theirs, other.schema, target);
            let mut out: Vec<(i32, f64)> = Vec::with_capacity(mine.len() + theirs.len());
            let (mut a, mut b) = (0, 0);
            while a < mine.len() || b < theirs.len() {
                let take_b = b < theirs.len() && (a >= mine.len() || theirs[b].0 <= mine[a].0);
                if !take_b {
                    out.push(mine[a]);
                    a += 1;
                    continue;
                }
                let (i, c) = theirs[b];
                b += 1;
                // Buckets of `other` inside the (reconciled) zero bucket were counted there.
                let upper = if self.uses_custom_buckets() {
                    f64::INFINITY
                } else {
                    let u = bound_exponential(i, target);
                    if positive {
                        u
                    } else {
                        u.abs()
                    }
                };
                if !self.uses_custom_buckets() && upper <= threshold {
                    continue;
                }
                if a < mine.len() && mine[a].0 == i {
                    out.push((i, mine[a].1 + sign * c));
                    a += 1;
                } else {
                    out.push((i, sign * c));
                }
            }
            out
        };
        let pos = merge(self.positive_pairs(), other.positive_pairs(), true);
        let neg = merge(self.negative_pairs(), other.negative_pairs(), false);
        self.schema = target;
        self.set_positive(&pos);
        self.set_negative(&neg);
        Ok(())
    }

    /// Buckets of one sign at `target` schema (merged), skipping those whose absolute upper
    /// bound is at most `start` (`floatBucketIterator` with an absolute start value).
    fn stripped(&self, positive: bool, start: f64, target: i32) -> Vec<(i32, f64)> {
        let ps = if positive {
            self.positive_pairs()
        } else {
            self.negative_pairs()
        };
        let reduced = if self.uses_custom_buckets() {
            ps
        } else {
            reduce(&ps, self.schema, target)
        };
        let mut out = Vec::with_capacity(reduced.len());
        let mut reached = start == 0.0;
        for (i, c) in reduced {
            if !reached {
                let upper = if self.uses_custom_buckets() {
                    self.bound(i)
                } else {
                    bound_exponential(i, target)
                };
                if upper > start {
                    reached = true;
                } else {
                    continue;
                }
            }
            out.push((i, c));
        }
        out
    }

    /// `DetectReset`: whether this histogram, following `prev`, starts a new counter.
    pub fn detect_reset(&self, prev: &Histogram) -> bool {
        match self.hint {
            ResetHint::Reset => return true,
            ResetHint::NotReset => return false,
            _ => {}
        }
        if self.count < prev.count {
            return true;
        }
        if self.uses_custom_buckets() {
            if !prev.uses_custom_buckets() {
                return true;
            }
            if self.custom_values[..] != prev.custom_values[..] {
                // Both compared on the bounds they have in common
                // (`detectResetWithMismatchedCustomBounds`).
                let common = intersect(&self.custom_values, &prev.custom_values);
                let cur = remap_custom(&self.positive_pairs(), &self.custom_values, &common);
                let prv = remap_custom(&prev.positive_pairs(), &prev.custom_values, &common);
                return buckets_reset(&cur, &prv);
            }
        }
        if self.schema > prev.schema {
            return true;
        }
        if self.zero_threshold < prev.zero_threshold {
            return true;
        }
        let (prev_zero, threshold) = prev.zero_count_for_larger_threshold(self.zero_threshold);
        if threshold != self.zero_threshold {
            return true;
        }
        if self.zero_count < prev_zero {
            return true;
        }
        for positive in [true, false] {
            let cur = self.stripped(positive, self.zero_threshold, self.schema);
            let prv = prev.stripped(positive, self.zero_threshold, self.schema);
            if buckets_reset(&cur, &prv) {
                return true;
            }
        }
        false
    }

    /// Every bucket from the lowest to the highest (`AllBucketIterator`): negative buckets,
    /// the zero bucket when populated, positive buckets, with bounds clamped to the zero
    /// bucket.
    pub fn all_buckets(&self) -> Vec<Bucket> {
        let zt = self.zero_threshold;
        let mut out = Vec::with_capacity(self.positive.len() + self.negative.len() + 1);
        for (i, c) in self.negative_pairs().into_iter().rev() {
            let mut b = Bucket {
                lower: -self.bound(i),
                upper: -self.bound(i - 1),
                count: c,
            };
            if b.upper < 0.0 && b.upper > -zt {
                b.upper = -zt;
            }
            out.push(b);
        }
        if self.zero_count > 0.0 {
            out.push(Bucket {
                lower: -zt,
                upper: zt,
                count: self.zero_count,
            });
        }
        for (i, c) in self.positive_pairs() {
            let mut b = Bucket {
                lower: self.bound(i - 1),
                upper: self.bound(i),
                count: c,
            };
            if b.lower > 0.0 && b.lower < zt {
                b.lower = zt;
            }
            out.push(b);
        }
        out
    }

    /// `HistogramQuantile`: the `q` quantile estimated from the buckets, interpolating
    /// exponentially within exponential buckets and linearly in the zero bucket and custom
    /// buckets.
    pub fn quantile(&self, q: f64) -> f64 {
        if q < 0.0 {
            return f64::NEG_INFINITY;
        }
        if q > 1.0 {
            return f64::INFINITY;
        }
        if self.count == 0.0 || q.is_nan() {
            return f64::NAN;
        }
        let all = self.all_buckets();
        let forward = self.sum.is_nan() || q < 0.5;
        let mut rank = if forward {
            q * self.count
        } else {
            (1.0 - q) * self.count
        };
        let order: Box<dyn Iterator<Item = usize>> = if forward {
            Box::new(0..all.len())
        } else {
            Box::new((0..all.len()).rev())
        };
        let mut bucket = Bucket {
            lower: 0.0,
            upper: 0.0,
            count: 0.0,
        };
        let mut count = 0.0;
        let mut rest = Vec::new();
        let mut found = false;
        for k in order {
            if found {
                rest.push(k);
                continue;
            }
            bucket = all[k];
            if bucket.count == 0.0 {
                continue;
            }
            count += bucket.count;
            if count >= rank {
                found = true;
            }
        }
        if !self.uses_custom_buckets() && bucket.lower < 0.0 && bucket.upper > 0.0 {
            if self.negative.is_empty() && !self.positive.is_empty() {
                bucket.lower = 0.0;
            } else if self.positive.is_empty() && !self.negative.is_empty() {
                bucket.upper = 0.0;
            }
        } else if self.uses_custom_buckets() {
            if bucket.lower == f64::NEG_INFINITY {
                if bucket.upper <= 0.0 {
                    return bucket.upper;
                }
                bucket.lower = 0.0;
            } else if bucket.upper == f64::INFINITY {
                return bucket.lower;
            }
        }
        if count > self.count {
            count = self.count;
        }
        if count < rank {
            if self.sum.is_nan() {
                return f64::NAN;
            }
            return bucket.upper;
        }
        if forward {
            rank -= count - bucket.count;
        } else {
            rank = count - rank;
        }
        let fraction = rank / bucket.count;
        if self.uses_custom_buckets() || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
            return bucket.lower + (bucket.upper - bucket.lower) * fraction;
        }
        let log_lower = bucket.lower.abs().log2();
        let log_upper = bucket.upper.abs().log2();
        if bucket.lower > 0.0 {
            return (log_lower + (log_upper - log_lower) * fraction).exp2();
        }
        -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2()
    }

    /// `HistogramFraction`: the estimated share of observations between `lower` and `upper`.
    pub fn fraction(&self, lower: f64, upper: f64) -> f64 {
        if self.count == 0.0 || lower.is_nan() || upper.is_nan() {
            return f64::NAN;
        }
        if lower >= upper {
            return 0.0;
        }
        let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
        let (mut lower_set, mut upper_set) = (false, false);
        let mut count = 0.0;
        let all = self.all_buckets();
        let mut it = all.iter();
        for b in it.by_ref() {
            let mut b = *b;
            count += b.count;
            let mut zero_bucket = false;
            if b.lower <= 0.0 && b.upper >= 0.0 {
                zero_bucket = true;
                if self.negative.is_empty() && !self.positive.is_empty() {
                    b.lower = 0.0;
                } else if self.positive.is_empty() && !self.negative.is_empty() {
                    b.upper = 0.0;
                }
            }
            let below = |v: f64, linear: bool| -> f64 {
                if linear {
                    if b.lower == f64::NEG_INFINITY {
                        return b.count;
                    }
                    return rank + b.count * (v - b.lower) / (b.upper - b.lower);
                }
                let ll = b.lower.abs().log2();
                let lu = b.upper.abs().log2();
                let lv = v.abs().log2();
                let f = if v > 0.0 {
                    (lv - ll) / (lu - ll)
                } else {
                    1.0 - ((lv - lu) / (ll - lu))
                };
                rank + b.count * f
            };
            let linear = self.uses_custom_buckets() || zero_bucket;
            if !lower_set && b.lower >= lower {
                lower_rank = rank;
                lower_set = true;
            }
            if !upper_set && b.lower >= upper {
                upper_rank = rank;
                upper_set = true;
            }
            if lower_set && upper_set {
                break;
            }
            if !lower_set && b.lower < lower && b.upper > lower {
                lower_rank = below(lower, linear);
                lower_set = true;
            }
            if !upper_set && b.lower < upper && b.upper > upper {
                upper_rank = below(upper, linear);
                upper_set = true;
            }
            if lower_set && upper_set {
                break;
            }
            rank += b.count;
        }
        if self.sum.is_nan() {
            count += it.map(|b| b.count).sum::<f64>();
        } else {
            count = self.count;
        }
        if !lower_set || lower_rank > count {
            lower_rank = count;
        }
        if !upper_set || upper_rank > count {
            upper_rank = count;
        }
        (upper_rank - lower_rank) / self.count
    }

    /// The variance of the observations estimated from the buckets (`histogram_stdvar`):
    /// each bucket's observations at its geometric mean (arithmetic for custom buckets, zero
    /// in the zero bucket).
    pub fn stdvar(&self) -> f64 {
        let mean = self.sum / self.count;
        let (mut var, mut c) = (0.0, 0.0);
        for b in self.all_buckets() {
            if b.count == 0.0 {
                continue;
            }
            let val = if self.uses_custom_buckets() {
                (b.upper + b.lower) / 2.0
            } else if b.lower <= 0.0 && b.upper >= 0.0 {
                0.0
            } else {
                let v = (b.upper * b.lower).sqrt();
                if b.upper < 0.0 {
                    -v
                } else {
                    v
                }
            };
            let d = val - mean;
            (var, c) = kahan_inc(b.count * d * d, var, c);
        }
        (var + c) / self.count
    }

    /// `Equals`: the same layout and the same numbers (NaN sums equal), empty spans ignored.
    pub fn equals(&self, o: &Histogram) -> bool {
        let norm = |s: &[Span]| -> Vec<Span> {
            let mut out: Vec<Span> = Vec::new();
            let mut carry = 0;
            for x in s {
                if x.length == 0 {
                    carry += x.offset;
                    continue;
                }
                out.push(Span {
                    offset: x.offset + carry,
                    length: x.length,
                });
                carry = 0;
            }
            out
        };
        self.schema == o.schema
            && self.zero_threshold == o.zero_threshold
            && self.zero_count == o.zero_count
            && self.count == o.count
            && (self.sum == o.sum || (self.sum.is_nan() && o.sum.is_nan()))
            && self.custom_values[..] == o.custom_values[..]
            && norm(&self.positive_spans) == norm(&o.positive_spans)
            && norm(&self.negative_spans) == norm(&o.negative_spans)
            && self.positive == o.positive
            && self.negative == o.negative
    }

    /// Memory the histogram holds, for the buffers' byte caps (the custom bounds are shared
    /// and counted once per series by their owner).
    pub fn heap_bytes(&self) -> usize {
        (self.positive_spans.len() + self.negative_spans.len()) * std::mem::size_of::<Span>()
            + (self.positive.len() + self.negative.len()) * 8
    }
}

/// The custom bounds two layouts share (+Inf always is).
fn intersect(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().filter(|x| b.contains(x)).copied().collect()
}

/// Custom buckets moved onto coarser bounds: each into the first bucket whose upper bound is
/// at or above its own.
fn remap_custom(ps: &[(i32, f64)], from: &[f64], to: &[f64]) -> Vec<(i32, f64)> {
    let mut out: Vec<(i32, f64)> = Vec::with_capacity(ps.len());
    for &(i, c) in ps {
        let upper = from.get(i as usize).copied().unwrap_or(f64::INFINITY);
        let j = to.partition_point(|x| *x < upper) as i32;
        match out.last_mut() {
            Some(last) if last.0 == j => last.1 += c,
            _ => out.push((j, c)),
        }
    }
    out
}

/// The union of two bucket lists, counts of `b` added with `sign`.
fn merge_pairs(a: &[(i32, f64)], b: &[(i32, f64)], sign: f64) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j >= b.len() || (i < a.len() && a[i].0 < b[j].0) {
            out.push(a[i]);
            i += 1;
        } else if i >= a.len() || b[j].0 < a[i].0 {
            out.push((b[j].0, sign * b[j].1));
            j += 1;
        } else {
            out.push((a[i].0, a[i].1 + sign * b[j].1));
            i += 1;
            j += 1;
        }
    }
    out
}

/// `detectReset` over stripped buckets of one sign at a common schema.
fn buckets_reset(cur: &[(i32, f64)], prev: &[(i32, f64)]) -> bool {
    let mut c = 0usize;
    for &(pi, pc) in prev {
        while c < cur.len() && cur[c].0 < pi {
            c += 1;
        }
        match cur.get(c) {
            Some(&(ci, cc)) if ci == pi => {
                if cc < pc {
                    return true;
                }
            }
            _ => {
                if pc != 0.0 {
                    return true;
                }
            }
        }
    }
    false
}

#[path = "native/kahan.rs"]
mod kahan;
#[path = "native/text.rs"]
mod text;
#[path = "native/trim.rs"]
mod trim;

#[cfg(test)]
#[path = "native/tests.rs"]
mod tests;
