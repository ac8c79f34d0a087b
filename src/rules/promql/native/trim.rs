//! The trim operators `h </ x` (keep the observations below `x`) and `h >/ x` (keep those
//! above), Prometheus 3's `FloatHistogram.TrimBuckets` (`model/histogram/float_histogram.go`):
//! buckets wholly on the kept side stay, buckets wholly on the other side empty, and the bucket
//! holding `x` keeps the share of its count on the kept side, interpolated exponentially in
//! exponential buckets and linearly in custom buckets and the zero bucket. When any bucket
//! changed, the count and the sum are re-estimated from the buckets (each bucket's kept count
//! at the midpoint of its kept interval).

use super::Histogram;

/// One populated bucket as Prometheus's bucket iterators yield it.
#[derive(Clone, Copy)]
struct B {
    lower: f64,
    upper: f64,
    count: f64,
}

impl Histogram {
    /// `TrimBuckets(x, upper)`: `upper` for `</`, otherwise `>/`.
    pub fn trim(&mut self, x: f64, upper: bool) {
        let custom = self.uses_custom_buckets();
        let (mut count, mut sum) = (0.0, 0.0);
        let mut trimmed = false;
        let mut seen = [false, false];
        for positive in [true, false] {
            let mut ps = if positive {
                self.positive_pairs()
            } else {
                self.negative_pairs()
            };
            for p in ps.iter_mut() {
                if p.1 == 0.0 {
                    continue;
                }
                seen[usize::from(!positive)] = true;
                let b = if positive {
                    B {
                        lower: self.bound(p.0 - 1),
                        upper: self.bound(p.0),
                        count: p.1,
                    }
                } else {
                    B {
                        lower: -self.bound(p.0),
                        upper: -self.bound(p.0 - 1),
                        count: p.1,
                    }
                };
                let whole = if upper { b.upper <= x } else { b.lower >= x };
                let part = if upper { b.lower < x } else { b.upper > x };
                if whole {
                    count += b.count;
                    sum += midpoint(b.lower, b.upper, positive, custom) * b.count;
                } else if part {
                    let (keep, mid) = bucket_trim(b, x, upper, positive, custom);
                    count += keep;
                    sum += mid * keep;
                    if p.1 != keep {
                        p.1 = keep;
                        trimmed = true;
                    }
                } else {
                    p.1 = 0.0;
                    trimmed = true;
                }
            }
            if positive {
                self.set_positive(&ps);
            } else {
                self.set_negative(&ps);
            }
        }
        if self.zero_count > 0.0 {
            let (keep, mid) = self.zero_bucket_trim(x, seen[1], seen[0], upper);
            if self.zero_count != keep {
                self.zero_count = keep;
                trimmed = true;
            }
            sum += mid * keep;
            count += keep;
        }
        if trimmed {
            self.count = count;
            self.sum = sum;
            self.compact();
        }
    }

    /// `computeZeroBucketTrim`: the zero bucket reaches only to zero on the side without
    /// buckets when the other side has some.
    fn zero_bucket_trim(
        &self,
        x: f64,
        has_negative: bool,
        has_positive: bool,
        upper: bool,
    ) -> (f64, f64) {
        let (mut lower, mut up) = (-self.zero_threshold, self.zero_threshold);
        if has_negative && !has_positive {
            up = 0.0;
        }
        if has_positive && !has_negative {
            lower = 0.0;
        }
        let c = self.zero_count;
        if upper {
            if x <= lower {
                return (0.0, 0.0);
            }
            if x >= up {
                return (c, (lower + up) / 2.0);
            }
            (c * (x - lower) / (up - lower), (lower + x) / 2.0)
        } else {
            if x <= lower {
                return (c, (lower + up) / 2.0);
            }
            if x >= up {
                return (0.0, 0.0);
            }
            (c * (up - x) / (up - lower), (x + up) / 2.0)
        }
    }
}

/// `computeBucketTrim`: the kept count of a bucket holding `x`, and its midpoint.
fn bucket_trim(b: B, x: f64, upper: bool, positive: bool, linear: bool) -> (f64, f64) {
    if b.lower == f64::NEG_INFINITY || b.upper == f64::INFINITY {
        return infinite_bucket_trim(b, x, upper);
    }
    let under = if x <= b.lower {
        0.0
    } else if x >= b.upper {
        b.count
    } else {
        b.count * fraction_below(b, x, linear)
    };
    if upper {
        (under, midpoint(b.lower, x, positive, linear))
    } else {
        (b.count - under, midpoint(x, b.upper, positive, linear))
    }
}

/// `Bucket.FractionBelow`: the share of the bucket's width below `x`, on a log scale for
/// exponential buckets (negative buckets mirrored).
fn fraction_below(b: B, x: f64, linear: bool) -> f64 {
    if linear {
        return (x - b.lower) / (b.upper - b.lower);
    }
    let (lo, up, v) = (b.lower.abs().log2(), b.upper.abs().log2(), x.abs().log2());
    if x > 0.0 {
        (v - lo) / (up - lo)
    } else {
        1.0 - (v - up) / (lo - up)
    }
}

/// `handleInfinityBuckets`: a bucket reaching to an infinity is kept or dropped whole, except
/// the lowest custom bucket with a positive upper bound, taken to start at zero.
fn infinite_bucket_trim(b: B, x: f64, upper: bool) -> (f64, f64) {
    let finite = |v: f64| if v.is_infinite() { 0.0 } else { v };
    if b.lower == f64::NEG_INFINITY {
        if upper {
            if x >= b.upper {
                return (b.count, 0.0);
            }
            if x > 0.0 && b.upper > 0.0 && b.upper != f64::INFINITY {
                return (b.count * x / b.upper, x / 2.0);
            }
            if b.upper <= 0.0 {
                return (b.count, x);
            }
            return (0.0, finite(b.upper));
        }
        if x <= b.lower {
            return (b.count, 0.0);
        }
        if x >= 0.0 && b.upper > x && b.upper != f64::INFINITY {
            return (b.count * (1.0 - x / b.upper), (x + b.upper) / 2.0);
        }
        return (0.0, finite(b.upper));
    }
    if upper {
        return (0.0, finite(b.lower));
    }
    if x >= b.lower {
        return (b.count, x);
    }
    (0.0, finite(b.lower))
}

/// `computeMidpoint`: the arithmetic mean of the bounds for linear buckets, the geometric mean
/// for exponential ones; an infinite bound gives the other bound (or half of it).
fn midpoint(lower: f64, upper: f64, positive: bool, linear: bool) -> f64 {
    if lower.is_infinite() {
        if upper.is_infinite() {
            return 0.0;
        }
        if upper > 0.0 {
            return upper / 2.0;
        }
        return upper;
    }
    if upper.is_infinite() {
        return lower;
    }
    if linear {
        return (lower + upper) / 2.0;
    }
    let g = (lower * upper).abs().sqrt();
    if positive {
        g
    } else {
        -g
    }
}
