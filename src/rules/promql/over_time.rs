//! Functions over a range of samples: `rate` and friends, regression, and the `*_over_time`
//! family. Each takes one series' samples (stale markers already removed, oldest first) and
//! returns its value, or `None` when Prometheus outputs nothing for the series.

use super::aggregate::{kahan_inc, quantile};
use super::eval::Bounds;
use super::Sample;

/// `extrapolatedRate` (the classic path): `rate`, `increase` and `delta`.
pub(crate) fn extrapolated_rate(
    s: &[Sample],
    w: &Bounds,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let first = s[0];
    let last = s[s.len() - 1];
    let mut result = last.v - first.v;
    if is_counter {
        let mut prev = first.v;
        for p in &s[1..] {
            if p.v < prev {
                result += prev;
            }
            prev = p.v;
        }
    }
    let mut to_start = first.t.saturating_sub(w.start) as f64 / 1000.0;
    let mut to_end = w.end.saturating_sub(last.t) as f64 / 1000.0;
    let sampled = last.t.saturating_sub(first.t) as f64 / 1000.0;
    let avg = sampled / (s.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if is_counter {
        // A counter cannot be extrapolated below zero.
        let mut to_zero = f64::INFINITY;
        if result > 0.0 && first.v >= 0.0 {
            to_zero = sampled * (first.v / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= w.range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: the last two samples.
pub(crate) fn instant_value(s: &[Sample], is_rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let prev = s[s.len() - 2];
    let last = s[s.len() - 1];
    let mut v = last.v;
    // On a counter reset the last value is the increase.
    let reset = last.v < prev.v;
    if !is_rate || !reset {
        v = last.v - prev.v;
    }
    if is_rate {
        let interval = last.t.saturating_sub(prev.t);
        if interval == 0 {
            return None;
        }
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// Least squares with compensated sums (`linearRegression`); x in seconds from
/// `intercept_t`.
pub(crate) fn linear_regression(s: &[Sample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = s[0].v;
    let mut const_y = true;
    for (i, p) in s.iter().enumerate() {
        if const_y && i > 0 && p.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = p.t.saturating_sub(intercept_t) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(p.v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * p.v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

pub(crate) fn deriv(s: &[Sample]) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    Some(linear_regression(s, s[0].t).0)
}

pub(crate) fn predict_linear(s: &[Sample], t: i64, duration_s: f64) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (slope, intercept) = linear_regression(s, t);
    Some(slope * duration_s + intercept)
}

pub(crate) fn changes(s: &[Sample]) -> f64 {
    let mut n = 0.0;
    for w in s.windows(2) {
        let (prev, cur) = (w[0].v, w[1].v);
        if cur != prev && !(cur.is_nan() && prev.is_nan()) {
            n += 1.0;
        }
    }
    n
}

pub(crate) fn resets(s: &[Sample]) -> f64 {
    s.windows(2).filter(|w| w[1].v < w[0].v).count() as f64
}

pub(crate) fn sum(s: &[Sample]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for p in s {
        (sum, c) = kahan_inc(p.v, sum, c);
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

/// The mean with a compensated sum, switching to an incremental mean if the sum overflows.
pub(crate) fn avg(s: &[Sample]) -> f64 {
    let mut sum = s[0].v;
    let mut count = 1.0;
    let (mut mean, mut c) = (0.0, 0.0);
    let mut incremental = false;
    for (i, p) in s[1..].iter().enumerate() {
        count = (i + 2) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(p.v, sum, c);
            if !ns.is_infinite() {
                (sum, c) = (ns, nc);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(p.v / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

pub(crate) fn min(s: &[Sample]) -> f64 {
    let mut m = s[0].v;
    for p in s {
        if p.v < m || m.is_nan() {
            m = p.v;
        }
    }
    m
}

pub(crate) fn max(s: &[Sample]) -> f64 {
    let mut m = s[0].v;
    for p in s {
        if p.v > m || m.is_nan() {
            m = p.v;
        }
    }
    m
}

/// Population variance with compensated sums.
pub(crate) fn stdvar(s: &[Sample]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in s {
        count += 1.0;
        let delta = p.v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (p.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

pub(crate) fn quantile_of(q: f64, s: &[Sample]) -> f64 {
    let mut vals: Vec<f64> = s.iter().map(|p| p.v).collect();
    quantile(q, &mut vals)
}

/// Median absolute deviation.
pub(crate) fn mad(s: &[Sample]) -> f64 {
    if s.iter().any(|p| p.v.is_nan()) {
        return f64::NAN;
    }
    let mut vals: Vec<f64> = s.iter().map(|p| p.v).collect();
    let median = quantile(0.5, &mut vals);
    let mut dev: Vec<f64> = vals.iter().map(|v| (v - median).abs()).collect();
    quantile(0.5, &mut dev)
}

/// Timestamp (s) of the minimum (`want_max` false) or maximum sample: the last one on ties,
/// NaNs replaced by any later value (`compareOverTime` with `<=`/`>=`).
pub(crate) fn ts_of_extreme(s: &[Sample], want_max: bool) -> f64 {
    let (mut best, mut best_t) = (s[0].v, s[0].t);
    for p in s {
        let better = if want_max { p.v >= best } else { p.v <= best };
        if better || best.is_nan() {
            best = p.v;
            best_t = p.t;
        }
    }
    best_t as f64 / 1000.0
}

/// `double_exponential_smoothing` (formerly `holt_winters`).
pub(crate) fn double_exponential_smoothing(s: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, s[0].v);
    let mut b = s[1].v - s[0].v;
    for (i, p) in s.iter().enumerate().skip(1) {
        let x = sf * p.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}
