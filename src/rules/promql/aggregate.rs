//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, ...) with `by`/`without`.
//! Series are grouped through a hash of their grouping labels, so aggregation is linear in the
//! input; the arithmetic (Neumaier-compensated sums, the overflow-safe mean, Welford variance)
//! follows Prometheus 3 so results match to the last bit where its tests demand it.

use std::hash::{BuildHasher, Hasher};

use foldhash::{HashMap, HashMapExt};

use super::compile::AggOp;
use super::eval::{err, set, Elem, Val};
use super::limit::Limit;
use super::{EvalError, Labels};

/// Neumaier's improvement of Kahan summation (Prometheus's `kahanSumInc`).
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

/// Prometheus's `quantile` over unsorted values (phi-quantile with linear interpolation).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go's sort.Float64s: NaNs first.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

pub(crate) fn grouping_labels(labels: &Labels, without: bool, grouping: &[String]) -> Labels {
    labels
        .iter()
        .filter(|(n, _)| in_group(n, without, grouping))
        .cloned()
        .collect()
}

fn in_group(name: &str, without: bool, grouping: &[String]) -> bool {
    let listed = grouping.iter().any(|g| g == name);
    if without {
        !listed && name != "__name__"
    } else {
        listed
    }
}

fn group_hash(labels: &Labels, without: bool, grouping: &[String]) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x9a0).build_hasher();
    for (n, v) in labels {
        if in_group(n, without, grouping) {
            h.write(n.as_bytes());
            h.write_u8(0xff);
            h.write(v.as_bytes());
            h.write_u8(0xfe);
        }
    }
    h.finish()
}

/// Assigns each input series a group index, in order of first appearance.
pub(crate) struct Grouper {
    by_hash: HashMap<u64, Vec<usize>>,
    labels: Vec<Labels>,
}

impl Grouper {
    pub fn new() -> Self {
        Grouper {
            by_hash: HashMap::new(),
            labels: Vec::new(),
        }
    }

    pub fn group(&mut self, labels: &Labels, without: bool, grouping: &[String]) -> usize {
        let h = group_hash(labels, without, grouping);
        let cands = self.by_hash.entry(h).or_default();
        for &g in cands.iter() {
            let mut it = labels
                .iter()
                .filter(|(n, _)| in_group(n, without, grouping));
            if self.labels[g].iter().eq(&mut it) {
                return g;
            }
        }
        let g = self.labels.len();
        cands.push(g);
        self.labels.push(grouping_labels(labels, without, grouping));
        g
    }
}

#[derive(Default, Clone)]
struct Acc {
    value: f64,
    mean: f64,
    c: f64,
    count: f64,
    incremental_mean: bool,
    values: Vec<f64>,
    drop_name: bool,
}

pub(crate) fn eval(
    op: AggOp,
    param: Option<Val>,
    input: Vec<Elem>,
    without: bool,
    grouping: &[String],
) -> Result<Val, EvalError> {
    match op {
        AggOp::Topk | AggOp::Bottomk => {
            let k = match param {
                Some(Val::Scalar(k)) => k,
                _ => return Err(err("topk/bottomk need a scalar parameter")),
            };
            let mut t = TopK::new(op == AggOp::Topk, k, without, grouping)?;
            for e in &input {
                t.push(&e.labels, e.v, e.drop_name);
            }
            Ok(Val::Vector(t.finish()))
        }
        AggOp::Limitk | AggOp::LimitRatio => {
            let p = match param {
                Some(Val::Scalar(p)) => p,
                _ => return Err(err("limitk/limit_ratio need a scalar parameter")),
            };
            let mut l = if op == AggOp::Limitk {
                Limit::first(p, without, grouping)?
            } else {
                Limit::ratio(p, without, grouping)?
            };
            for e in &input {
                l.push(&e.labels, e.v, e.h.as_ref(), e.drop_name);
            }
            Ok(Val::Vector(l.finish()))
        }
        AggOp::CountValues => {
            let label = match param {
                Some(Val::Str(s)) => s,
                _ => return Err(err("count_values needs a string parameter")),
            };
            if label.is_empty() {
                return Err(err(format!("invalid label name {label:?}")));
            }
            count_values(&label, input, without, grouping).map(Val::Vector)
        }
        _ => {
            let q = match (op, param) {
                (AggOp::Quantile, Some(Val::Scalar(q))) => q,
                (AggOp::Quantile, _) => return Err(err("quantile needs a scalar parameter")),
                _ => 0.0,
            };
            let mut agg = Aggregator::new(op, q, without, grouping)
                .ok_or_else(|| err("not a reducing aggregation"))?;
            for e in &input {
                agg.push(&e.labels, e.v, e.drop_name);
            }
            Ok(Val::Vector(agg.finish()))
        }
    }
}

/// The aggregations that reduce each group to one value, fed one series at a time so that
/// the input need not be materialised (`sum by (job) (rate(x[5m]))` streams from the storage).
pub(crate) struct Aggregator<'a> {
    op: AggOp,
    q: f64,
    without: bool,
    grouping: &'a [String],
    grouper: Grouper,
    accs: Vec<Acc>,
}

impl<'a> Aggregator<'a> {
    /// `None` for the operators that are not a reduction (`topk`, `bottomk`, `count_values`).
    pub fn new(op: AggOp, q: f64, without: bool, grouping: &'a [String]) -> Option<Self> {
        if matches!(
            op,
            AggOp::Topk | AggOp::Bottomk | AggOp::Limitk | AggOp::LimitRatio | AggOp::CountValues
        ) {
            return None;
        }
        Some(Aggregator {
            op,
            q,
            without,
            grouping,
            grouper: Grouper::new(),
            accs: Vec::new(),
        })
    }

    pub fn push(&mut self, labels: &Labels, f: f64, drop_name: bool) {
        let op = self.op;
        let g = self.grouper.group(labels, self.without, self.grouping);
        let accs = &mut self.accs;
        if g == accs.len() {
            let mut a = Acc {
                value: f,
                mean: f,
                count: 1.0,
                drop_name,
                ..Acc::default()
            };
            match op {
                AggOp::Stddev | AggOp::Stdvar => {
                    a.value = if f.is_nan() || f.is_infinite() {
                        f64::NAN
                    } else {
                        0.0
                    };
                }
                AggOp::Quantile => a.values.push(f),
                AggOp::Group => a.value = 1.0,
                _ => {}
            }
            accs.push(a);
            return;
        }
        let a = &mut accs[g];
        // One member whose name is to be dropped drops the group's (`x or rate(x[5m])`
        // grouped by `__name__`), whatever the order of the members.
        a.drop_name |= drop_name;
        match op {
            AggOp::Sum => (a.value, a.c) = kahan_inc(f, a.value, a.c),
            AggOp::Avg => {
                a.count += 1.0;
                if !a.incremental_mean {
                    let (nv, nc) = kahan_inc(f, a.value, a.c);
                    if !nv.is_infinite() {
                        (a.value, a.c) = (nv, nc);
                        return;
                    }
                    // The sum would overflow: continue with an incremental mean.
                    a.incremental_mean = true;
                    a.mean = a.value / (a.count - 1.0);
                    a.c /= a.count - 1.0;
                }
                if a.mean.is_infinite() {
                    if f.is_infinite() && (a.mean > 0.0) == (f > 0.0) {
                        return;
                    }
                    if !f.is_infinite() && !f.is_nan() {
                        return;
                    }
                }
                let current = a.mean + a.c;
                (a.mean, a.c) = kahan_inc(f / a.count - current / a.count, a.mean, a.c);
            }
            AggOp::Group => {}
            AggOp::Max => {
                if a.value < f || a.value.is_nan() {
                    a.value = f;
                }
            }
            AggOp::Min => {
                if a.value > f || a.value.is_nan() {
                    a.value = f;
                }
            }
            AggOp::Count => a.count += 1.0,
            AggOp::Stddev | AggOp::Stdvar => {
                a.count += 1.0;
                let delta = f - a.mean;
                a.mean += delta / a.count;
                a.value += delta * (f - a.mean);
            }
            AggOp::Quantile => a.values.push(f),
            AggOp::Topk
            | AggOp::Bottomk
            | AggOp::Limitk
            | AggOp::LimitRatio
            | AggOp::CountValues => {}
        }
    }

    pub fn finish(self) -> Vec<Elem> {
        let (op, q) = (self.op, self.q);
        let mut out = Vec::with_capacity(self.accs.len());
        for (mut a, labels) in self.accs.into_iter().zip(self.grouper.labels) {
            let v = match op {
                AggOp::Sum => a.value + a.c,
                AggOp::Avg => {
                    if a.incremental_mean {
                        a.mean + a.c
                    } else {
                        (a.value + a.c) / a.count
                    }
                }
                AggOp::Count => a.count,
                AggOp::Stdvar => a.value / a.count,
                AggOp::Stddev => (a.value / a.count).sqrt(),
                AggOp::Quantile => quantile(q, &mut a.values),
                _ => a.value,
            };
            // Only a grouping that keeps the name can carry a pending name removal.
            let drop_name = a.drop_name && labels.iter().any(|(n, _)| n == "__name__");
            out.push(Elem {
                h: None,
                labels,
                v,
                drop_name,
            });
        }
        out
    }
}

/// `topk`/`bottomk`, fed one series at a time; a series' labels are cloned only when it
/// enters a heap. Go's `container/heap` and `sort.Sort` are reproduced so that ties come out
/// in the order Prometheus returns them.
pub(crate) struct TopK<'a> {
    top: bool,
    k: usize,
    without: bool,
    grouping: &'a [String],
    grouper: Grouper,
    heaps: Vec<Vec<Elem>>,
}

impl<'a> TopK<'a> {
    /// `k` as the query gave it: NaN and values beyond int64 are errors, below 1 selects
    /// nothing.
    pub fn new(
        top: bool,
        k: f64,
        without: bool,
        grouping: &'a [String],
    ) -> Result<Self, EvalError> {
        Ok(TopK {
            top,
            k: k_param(k)?,
            without,
            grouping,
            grouper: Grouper::new(),
            heaps: Vec::new(),
        })
    }

    /// Less of vectorByValueHeap (topk) / vectorByReverseValueHeap (bottomk).
    fn less(top: bool, a: f64, b: f64) -> bool {
        if top {
            less_by_value(a, b)
        } else {
            a.is_nan() || a > b
        }
    }

    pub fn push(&mut self, labels: &Labels, v: f64, drop_name: bool) {
        if self.k == 0 {
            return;
        }
        let (top, k) = (self.top, self.k);
        let g = self.grouper.group(labels, self.without, self.grouping);
        if g == self.heaps.len() {
            self.heaps.push(Vec::with_capacity(k.min(64)));
        }
        let h = &mut self.heaps[g];
        let less = |a: &Elem, b: &Elem| Self::less(top, a.v, b.v);
        let elem = || Elem {
            h: None,
            labels: labels.clone(),
            v,
            drop_name,
        };
        if h.len() < k {
            h.push(elem());
            let last = h.len() - 1;
            heap_up(h, last, &less);
            return;
        }
        let root = h[0].v;
        let replace = if top {
            root < v || (root.is_nan() && !v.is_nan())
        } else {
            root > v || (root.is_nan() && !v.is_nan())
        };
        if replace {
            h[0] = elem();
            if k > 1 {
                let n = h.len();
                if !heap_down(h, 0, n, &less) {
                    heap_up(h, 0, &less);
                }
            }
        }
    }

    pub fn finish(self) -> Vec<Elem> {
        let top = self.top;
        let mut out = Vec::new();
        for mut h in self.heaps {
            // sort.Sort(sort.Reverse(heap)).
            go_sort(&mut h, &|a: &Elem, b: &Elem| Self::less(top, b.v, a.v));
            out.extend(h);
        }
        out
    }
}

pub(crate) fn heap_up<T>(h: &mut [T], mut j: usize, less: &dyn Fn(&T, &T) -> bool) {
    while j > 0 {
        let i = (j - 1) / 2;
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        j = i;
    }
}

/// Less of Prometheus's `vectorByValueHeap`: NaN first, then ascending.
pub(crate) fn less_by_value(a: f64, b: f64) -> bool {
    a.is_nan() || a < b
}

/// The `k` of `topk`/`bottomk`/`limitk` as Prometheus checks it: NaN is an error, below 1
/// selects nothing (however far below), from 2^63 on it overflows int64.
pub(crate) fn k_param(k: f64) -> Result<usize, EvalError> {
    if k.is_nan() {
        return Err(err("Parameter value is NaN"));
    }
    if k < 1.0 {
        return Ok(0);
    }
    if k >= 9.223_372_036_854_776e18 {
        return Err(err(format!("Scalar value {k} overflows int64")));
    }
    Ok(usize::try_from(k as i64).unwrap_or(usize::MAX))
}

fn heap_down<T>(h: &mut [T], i0: usize, n: usize, less: &dyn Fn(&T, &T) -> bool) -> bool {
    let mut i = i0;
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        let j2 = j1 + 1;
        if j2 < n && less(&h[j2], &h[j1]) {
            j = j2;
        }
        if !less(&h[j], &h[i]) {
            break;
        }
        h.swap(i, j);
        i = j;
    }
    i > i0
}

/// Go's `sort.Sort` is an insertion sort up to 12 elements; beyond that a stable sort is a
/// close stand-in (only the order of ties can differ).
fn go_sort<T>(v: &mut [T], less: &dyn Fn(&T, &T) -> bool) {
    if v.len() <= 12 {
        for i in 1..v.len() {
            let mut j = i;
            while j > 0 && less(&v[j], &v[j - 1]) {
                v.swap(j, j - 1);
                j -= 1;
            }
        }
    } else {
        // `less` says NaN < NaN (as Go's heap does); both directions true counts as a tie,
        // which keeps the comparator a total order (Rust's sort may panic otherwise).
        v.sort_by(|a, b| match (less(a, b), less(b, a)) {
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            _ => std::cmp::Ordering::Equal,
        });
    }
}

fn count_values(
    label: &str,
    input: Vec<Elem>,
    without: bool,
    grouping: &[String],
) -> Result<Vec<Elem>, EvalError> {
    let mut grouping = grouping.to_vec();
    if !without {
        grouping.push(label.to_string());
        grouping.sort();
    }
    let mut grouper = Grouper::new();
    let mut counts: Vec<f64> = Vec::new();
    for mut e in input {
        let value = match &e.h {
            Some(h) => h.to_prometheus_string(),
            None => format_float(e.v),
        };
        set(&mut e.labels, label, &value);
        let g = grouper.group(&e.labels, without, &grouping);
        if g == counts.len() {
            counts.push(0.0);
        }
        counts[g] += 1.0;
    }
    Ok(grouper
        .labels
        .into_iter()
        .zip(counts)
        .map(|(labels, v)| Elem {
            h: None,
            labels,
            v,
            drop_name: false,
        })
        .collect())
}
