//! `histogram_quantile` over classic `le` buckets, with Prometheus's bucket fixes
//! (`promql/quantile.go`).

use foldhash::HashMap;

use super::eval::{get, Elem};
use super::Labels;

/// Differences smaller than this (relative) between neighbouring buckets are float noise.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// Prometheus's `almost.Equal`: relative comparison, NaN equal to NaN.
pub fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Go's `strconv.ParseFloat` for the spellings an `le` label takes.
fn parse_le(s: &str) -> Option<f64> {
    let t = s.trim_start_matches('+');
    if t.eq_ignore_ascii_case("inf") || t.eq_ignore_ascii_case("infinity") {
        return Some(if s.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    s.parse::<f64>().ok()
}

pub(crate) fn histogram_quantile(q: f64, v: Vec<Elem>) -> Vec<Elem> {
    let mut index: HashMap<Labels, usize> = HashMap::default();
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    for e in v {
        let Some(le) = parse_le(get(&e.labels, "le")) else {
            continue;
        };
        let labels: Labels = e.labels.into_iter().filter(|(n, _)| n != "le").collect();
        match index.get(&labels) {
            Some(&i) => groups[i].1.push((le, e.v)),
            None => {
                index.insert(labels.clone(), groups.len());
                groups.push((labels, vec![(le, e.v)]));
            }
        }
    }
    groups
        .into_iter()
        .map(|(labels, mut buckets)| Elem {
            h: None,
            labels,
            v: bucket_quantile(q, &mut buckets),
            drop_name: true,
        })
        .collect()
}

/// `BucketQuantile` on (upper bound, cumulative count) pairs.
pub(crate) fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go's cmp.Compare: NaN before every number. A comparator that calls NaN equal to
    // everything is not a total order, and Rust's sort may panic on one.
    buckets.sort_by(|a, b| match (a.0.is_nan(), b.0.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.0.total_cmp(&b.0),
    });
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Merge buckets with equal bounds.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    *buckets = merged;
    // Monotonicity: equalise float noise, raise decreases to the previous count.
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let cur = b.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, SMALL_DELTA_TOLERANCE) || cur < prev {
            b.1 = prev;
            continue;
        }
        prev = cur;
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let n = buckets.len();
    let observations = buckets[n - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets[..n - 1].partition_point(|x| x.1 < rank);
    if b == n - 1 {
        return buckets[n - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let mut start = 0.0;
    let end = buckets[b].0;
    let mut count = buckets[b].1;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}
