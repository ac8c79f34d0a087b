//! The engine over native histograms: the `histogram_*` functions, the functions over ranges
//! holding histograms (`range_value`, called by `functions::range_call` for a series with
//! histograms), `sum`/`avg`/`count`/`group` of histograms (compensated sums, see
//! `native/kahan.rs`), and binary operators with a histogram operand (the trim operators
//! included), as Prometheus 3 evaluates them (`promql/functions.go`, `promql/engine.go`).
//! Where Prometheus drops a series with a warning (mixed floats and histograms in one range or
//! group, incompatible layouts), so does this; where it leaves histograms out with an info
//! (float-only functions over a mixed range), so does this.
//!
//! Anything else that meets a histogram is refused with [`EvalError::Unsupported`] naming the
//! operation, never evaluated as if the histogram were a float.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use super::aggregate::grouping_labels;
use super::binary;
use super::compile::{AggOp, BinOp, Card, Matching, Node};
use super::eval::{err, get, unsupported, Bounds, Ctx, Elem, Step, Val};
use super::functions::{Func, RangeOut};
use super::native::{Histogram, HistogramError, KahanSum, ResetHint};
use super::{histogram, over_time, EvalError, HistogramSample, Labels, Sample};

pub(crate) fn has_histograms(v: &Val) -> bool {
    matches!(v, Val::Vector(es) if es.iter().any(|e| e.h.is_some()))
}

/// A short name of what a node computes, for "unsupported" errors.
pub(crate) fn describe(n: &Node) -> String {
    match n {
        Node::Call { func, .. } => format!("function `{}`", func.name()),
        Node::Agg { op, .. } => format!("aggregation `{op:?}`").to_lowercase(),
        Node::Binary { op, .. } => format!("binary operator {op:?}").to_lowercase(),
        _ => "this expression".into(),
    }
}

fn arg(args: &[Node], i: usize, f: Func) -> Result<&Node, EvalError> {
    args.get(i)
        .ok_or_else(|| err(format!("missing argument {} of {}", i + 1, f.name())))
}

/// Evaluate `f` if it is one of the `histogram_*` functions (`histogram_quantile` over
/// classic buckets too); `None` for any other function.
pub(crate) fn call(ctx: &Ctx, f: Func, args: &[Node], s: Step) -> Result<Option<Val>, EvalError> {
    use Func as F;
    match f {
        F::HistogramCount
        | F::HistogramSum
        | F::HistogramAvg
        | F::HistogramStddev
        | F::HistogramStdvar => {
            let v = ctx.vector_any(arg(args, 0, f)?, s)?;
            let out = v
                .into_iter()
                .filter_map(|e| {
                    let h = e.h?;
                    let v = match f {
                        F::HistogramCount => h.count,
                        F::HistogramSum => h.sum,
                        F::HistogramAvg => h.sum / h.count,
                        F::HistogramStddev => h.stdvar().sqrt(),
                        _ => h.stdvar(),
                    };
                    Some(Elem {
                        labels: e.labels,
                        v,
                        drop_name: true,
                        h: None,
                    })
                })
                .collect();
            Ok(Some(Val::Vector(out)))
        }
        F::HistogramFraction => {
            let lower = ctx.scalar(arg(args, 0, f)?, s)?;
            let upper = ctx.scalar(arg(args, 1, f)?, s)?;
            let v = ctx.vector_any(arg(args, 2, f)?, s)?;
            if v.iter()
                .any(|e| e.h.is_none() && !get(&e.labels, "le").is_empty())
            {
                return Err(unsupported("histogram_fraction over classic buckets"));
            }
            let out = v
                .into_iter()
                .filter_map(|e| {
                    let h = e.h?;
                    Some(Elem {
                        labels: e.labels,
                        v: h.fraction(lower, upper),
                        drop_name: true,
                        h: None,
                    })
                })
                .collect();
            Ok(Some(Val::Vector(out)))
        }
        F::HistogramQuantile => {
            let q = ctx.scalar(arg(args, 0, f)?, s)?;
            let v = ctx.vector_any(arg(args, 1, f)?, s)?;
            let (native, classic): (Vec<Elem>, Vec<Elem>) =
                v.into_iter().partition(|e| e.h.is_some());
            let mut out: Vec<Elem> = native
                .into_iter()
                .filter_map(|e| {
                    let h = e.h?;
                    Some(Elem {
                        labels: e.labels,
                        v: h.quantile(q),
                        drop_name: true,
                        h: None,
                    })
                })
                .collect();
            out.extend(histogram::histogram_quantile(q, classic));
            Ok(Some(Val::Vector(out)))
        }
        _ => Ok(None),
    }
}

/// A function over a range of one series holding histograms (`hs` not empty), as Prometheus 3
/// evaluates it: the rate family and `sum_over_time`/`avg_over_time` over histograms only
/// (nothing when floats and histograms mix), `resets`/`changes`/`count`/`present`/`last`/
/// `first`/`ts_of_first`/`ts_of_last` over both kinds in time order, and every other function
/// over the floats alone (nothing without floats; Prometheus adds an info either way).
pub(crate) fn range_value(f: Func, b: &Bounds, fs: &[Sample], hs: &[HistogramSample]) -> RangeOut {
    use Func as F;
    let float = |v: Option<f64>| v.map(|v| (v, None));
    let hist = |h: Option<Histogram>| h.map(|h| (f64::NAN, Some(Arc::new(h))));
    match f {
        F::Rate | F::Increase | F::Delta | F::Irate | F::Idelta => {
            if !fs.is_empty() {
                if matches!(f, F::Irate | F::Idelta) {
                    return instant_mixed(f, fs, hs);
                }
                return None;
            }
            hist(match f {
                F::Rate => extrapolated_histogram_rate(hs, b, true, true),
                F::Increase => extrapolated_histogram_rate(hs, b, true, false),
                F::Delta => extrapolated_histogram_rate(hs, b, false, false),
                F::Irate => instant_histogram(hs, true),
                _ => instant_histogram(hs, false),
            })
        }
        F::SumOverTime | F::AvgOverTime => {
            if !fs.is_empty() {
                return None;
            }
            hist(sum_over_time(hs, f == F::AvgOverTime))
        }
        F::CountOverTime => float(Some((fs.len() + hs.len()) as f64)),
        F::PresentOverTime => float(Some(1.0)),
        F::LastOverTime => match fs.last() {
            Some(p) if p.t > hs[hs.len() - 1].t => float(Some(p.v)),
            _ => Some((f64::NAN, Some(hs[hs.len() - 1].h.clone()))),
        },
        F::FirstOverTime => match fs.first() {
            Some(p) if p.t < hs[0].t => float(Some(p.v)),
            _ => Some((f64::NAN, Some(hs[0].h.clone()))),
        },
        F::TsOfFirstOverTime => {
            let t = fs.first().map_or(hs[0].t, |p| p.t.min(hs[0].t));
            float(Some(t as f64 / 1000.0))
        }
        F::TsOfLastOverTime => {
            let last = hs[hs.len() - 1].t;
            let t = fs.last().map_or(last, |p| p.t.max(last));
            float(Some(t as f64 / 1000.0))
        }
        F::Resets | F::Changes => float(Some(count_transitions(f == F::Resets, fs, hs))),
        F::Deriv => float(over_time::deriv(fs)),
        _ if fs.is_empty() => None,
        F::MinOverTime => float(Some(over_time::min(fs))),
        F::MaxOverTime => float(Some(over_time::max(fs))),
        F::StddevOverTime => float(Some(over_time::stdvar(fs).sqrt())),
        F::StdvarOverTime => float(Some(over_time::stdvar(fs))),
        F::MadOverTime => float(Some(over_time::mad(fs))),
        F::TsOfMinOverTime => float(Some(over_time::ts_of_extreme(fs, false))),
        F::TsOfMaxOverTime => float(Some(over_time::ts_of_extreme(fs, true))),
        _ => None,
    }
}

/// `funcResets` (`resets`) and `funcChanges` over floats and histograms merged in time order:
/// a switch between a float and a histogram counts as one; two histograms count by
/// `DetectReset` (resets) or by inequality (changes).
fn count_transitions(resets: bool, fs: &[Sample], hs: &[HistogramSample]) -> f64 {
    enum S<'a> {
        F(f64),
        H(&'a Histogram),
    }
    let (mut i, mut j) = (0, 0);
    let mut prev: Option<S> = None;
    let mut n = 0.0;
    while i < fs.len() || j < hs.len() {
        let cur = if j >= hs.len() || (i < fs.len() && fs[i].t < hs[j].t) {
            i += 1;
            S::F(fs[i - 1].v)
        } else {
            j += 1;
            S::H(&hs[j - 1].h)
        };
        if let Some(p) = &prev {
            let counts = match (p, &cur) {
                (S::F(a), S::F(b)) if resets => b < a,
                (S::F(a), S::F(b)) => a != b && !(a.is_nan() && b.is_nan()),
                (S::H(a), S::H(b)) if resets => b.detect_reset(a),
                (S::H(a), S::H(b)) => !b.equals(a),
                _ => true,
            };
            if counts {
                n += 1.0;
            }
        }
        prev = Some(cur);
    }
    n
}

/// `sum_over_time` (or `avg_over_time`) of histograms only, compensated; nothing when their
/// layouts are incompatible (exponential and custom buckets mixed).
fn sum_over_time(hs: &[HistogramSample], avg: bool) -> Option<Histogram> {
    let mut acc = Mean::new(&hs[0].h, avg);
    for h in &hs[1..] {
        acc.add(&h.h).ok()?;
    }
    let mut h = if avg { acc.mean() } else { acc.sum() };
    h.compact();
    Some(h)
}

/// A compensated sum of histograms, or their mean: the direct mean (the sum over the count)
/// while the sum does not overflow, then an incremental one, as Prometheus's `avg` and
/// `avg_over_time`.
pub(crate) struct Mean {
    sum: KahanSum,
    n: f64,
    /// Whether the mean is wanted (else only the sum, which may overflow).
    want_mean: bool,
    /// The incremental mean, once the sum overflowed.
    incremental: Option<Histogram>,
}

impl Mean {
    pub fn new(first: &Histogram, want_mean: bool) -> Mean {
        Mean {
            sum: KahanSum::new(first),
            n: 1.0,
            want_mean,
            incremental: None,
        }
    }

    pub fn add(&mut self, h: &Histogram) -> Result<(), HistogramError> {
        self.n += 1.0;
        if let Some(mean) = &mut self.incremental {
            let q = (self.n - 1.0) / self.n;
            mean.mul(q);
            let mut add = h.clone();
            add.div(self.n);
            return mean.add(&add, false);
        }
        if !self.want_mean {
            return self.sum.add(h);
        }
        let before = self.sum.clone();
        self.sum.add(h)?;
        if self.sum.has_overflow() {
            let mut mean = before.finish_mean(self.n - 1.0);
            let q = (self.n - 1.0) / self.n;
            mean.mul(q);
            let mut add = h.clone();
            add.div(self.n);
            mean.add(&add, false)?;
            self.incremental = Some(mean);
        }
        Ok(())
    }

    pub fn sum(self) -> Histogram {
        self.sum.finish()
    }

    pub fn mean(self) -> Histogram {
        match self.incremental {
            Some(m) => m,
            None => self.sum.finish_mean(self.n),
        }
    }
}

/// `irate`/`idelta` over a series with both: Prometheus takes the last two samples of either
/// kind and gives up on a float next to a histogram; two floats are computed as floats.
fn instant_mixed(f: Func, fs: &[Sample], hs: &[HistogramSample]) -> RangeOut {
    let last_f = fs[fs.len().saturating_sub(2)..].iter().map(|p| p.t);
    let last_h = hs[hs.len().saturating_sub(2)..].iter().map(|p| p.t);
    let mut ts: Vec<(i64, bool)> = last_f
        .map(|t| (t, false))
        .chain(last_h.map(|t| (t, true)))
        .collect();
    ts.sort();
    let tail = &ts[ts.len().saturating_sub(2)..];
    match tail {
        [(_, false), (_, false)] => {
            over_time::instant_value(&fs[fs.len() - 2..], f == Func::Irate).map(|v| (v, None))
        }
        [(_, true), (_, true)] => instant_histogram(&hs[hs.len() - 2..], f == Func::Irate)
            .map(|h| (f64::NAN, Some(Arc::new(h)))),
        _ => None,
    }
}

/// `instantValue` over the last two histograms.
fn instant_histogram(hs: &[HistogramSample], is_rate: bool) -> Option<Histogram> {
    if hs.len() < 2 {
        return None;
    }
    let (prev, last) = (&hs[hs.len() - 2], &hs[hs.len() - 1]);
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    let mut h = (*last.h).clone();
    if !is_rate || !last.h.detect_reset(&prev.h) {
        h.add(&prev.h, true).ok()?;
    }
    h.hint = ResetHint::Gauge;
    h.compact();
    if is_rate {
        h.div(interval as f64 / 1000.0);
    }
    Some(h)
}

/// `histogramRate`: last minus first at the coarsest schema of the range (of the two ends
/// for `delta`), plus every histogram before a counter reset.
fn histogram_rate(hs: &[HistogramSample], is_counter: bool) -> Option<Histogram> {
    let prev = &hs[0].h;
    let last = &hs[hs.len() - 1].h;
    let custom = prev.uses_custom_buckets();
    if last.uses_custom_buckets() != custom {
        return None;
    }
    let mut min_schema = last.schema.min(prev.schema);
    for cur in &hs[1..hs.len() - 1] {
        if !is_counter {
            continue;
        }
        min_schema = min_schema.min(cur.h.schema);
        if cur.h.uses_custom_buckets() != custom {
            return None;
        }
    }
    let mut h = last.to_schema(min_schema);
    h.add(prev, true).ok()?;
    if is_counter {
        let mut prev = &hs[0].h;
        for cur in &hs[1..] {
            if cur.h.detect_reset(prev) {
                h.add(prev, false).ok()?;
            }
            prev = &cur.h;
        }
    }
    h.hint = ResetHint::Gauge;
    h.compact();
    Some(h)
}

/// `extrapolatedRate` for a range of histograms only.
fn extrapolated_histogram_rate(
    hs: &[HistogramSample],
    w: &Bounds,
    is_counter: bool,
    is_rate: bool,
) -> Option<Histogram> {
    if hs.len() < 2 {
        return None;
    }
    let mut result = histogram_rate(hs, is_counter)?;
    let first = &hs[0];
    let last = &hs[hs.len() - 1];
    let mut to_start = (first.t - w.start) as f64 / 1000.0;
    let mut to_end = (w.end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg = sampled / (hs.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if is_counter {
        let mut to_zero = to_start;
        if result.count > 0.0 && first.h.count >= 0.0 {
            to_zero = sampled * (first.h.count / result.count);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = 1.0;
    if sampled != 0.0 {
        factor = (sampled + to_start + to_end) / sampled;
    }
    if is_rate {
        factor /= w.range_ms as f64 / 1000.0;
    }
    result.mul(factor);
    Some(result)
}

/// `sum`, `avg`, `count` and `group` over the histograms of an aggregation (the floats go
/// to the float aggregator; the two are joined in [`HistogramAgg::finish`]).
pub(crate) struct HistogramAgg<'a> {
    op: AggOp,
    without: bool,
    grouping: &'a [String],
    index: HashMap<Labels, usize>,
    groups: Vec<HistGroup>,
}

struct HistGroup {
    labels: Labels,
    sum: Option<Mean>,
    n: f64,
    incompatible: bool,
}

impl<'a> HistogramAgg<'a> {
    pub fn new(op: AggOp, without: bool, grouping: &'a [String]) -> Self {
        HistogramAgg {
            op,
            without,
            grouping,
            index: HashMap::new(),
            groups: Vec::new(),
        }
    }

    pub fn push(&mut self, labels: &Labels, h: &Arc<Histogram>, _drop_name: bool) {
        let key = grouping_labels(labels, self.without, self.grouping);
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.index.insert(key.clone(), self.groups.len());
                self.groups.push(HistGroup {
                    labels: key,
                    sum: None,
                    n: 0.0,
                    incompatible: false,
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[i];
        g.n += 1.0;
        if !matches!(self.op, AggOp::Sum | AggOp::Avg) || g.incompatible {
            return;
        }
        match &mut g.sum {
            None => g.sum = Some(Mean::new(h, self.op == AggOp::Avg)),
            Some(sum) => {
                if sum.add(h).is_err() {
                    g.incompatible = true;
                }
            }
        }
    }

    /// Join the float aggregator's groups with the histogram groups: a `sum` or `avg` group
    /// with both kinds is dropped, `count` adds, `group` is 1; the other aggregations leave
    /// histograms out.
    pub fn finish(self, mut floats: Vec<Elem>) -> Result<Val, EvalError> {
        if self.groups.is_empty() {
            return Ok(Val::Vector(floats));
        }
        let mut float_index: HashMap<Labels, usize> = HashMap::new();
        for (i, e) in floats.iter().enumerate() {
            float_index.insert(e.labels.clone(), i);
        }
        match self.op {
            AggOp::Sum | AggOp::Avg => {
                let mut mixed = vec![false; floats.len()];
                let mut out_h = Vec::new();
                for g in self.groups {
                    if let Some(&i) = float_index.get(&g.labels) {
                        mixed[i] = true;
                        continue;
                    }
                    if g.incompatible {
                        continue;
                    }
                    let Some(acc) = g.sum else { continue };
                    let mut h = if self.op == AggOp::Avg {
                        acc.mean()
                    } else {
                        acc.sum()
                    };
                    h.compact();
                    out_h.push(Elem {
                        labels: g.labels,
                        v: f64::NAN,
                        drop_name: false,
                        h: Some(Arc::new(h)),
                    });
                }
                let mut k = 0;
                floats.retain(|_| {
                    k += 1;
                    !mixed[k - 1]
                });
                floats.extend(out_h);
            }
            AggOp::Count | AggOp::Group => {
                for g in self.groups {
                    match float_index.get(&g.labels) {
                        Some(&i) => {
                            if self.op == AggOp::Count {
                                floats[i].v += g.n;
                            }
                        }
                        None => floats.push(Elem {
                            labels: g.labels,
                            v: if self.op == AggOp::Count { g.n } else { 1.0 },
                            drop_name: false,
                            h: None,
                        }),
                    }
                }
            }
            _ => {}
        }
        Ok(Val::Vector(floats))
    }
}

/// A binary operation with a histogram on at least one side, as Prometheus's
/// `vectorElemBinop`: `*` by a float, `/` by a float, `+`, `-`, `==` and `!=` between
/// histograms; any other pairing drops the element, with `bool` too. The set operators only
/// match labels.
pub(crate) fn binary(
    op: BinOp,
    lhs: Val,
    rhs: Val,
    m: &Matching,
    return_bool: bool,
) -> Result<Val, EvalError> {
    if matches!(op, BinOp::And | BinOp::Or | BinOp::Unless) {
        return binary::eval(op, lhs, rhs, m, return_bool);
    }
    match (lhs, rhs) {
        (Val::Vector(v), Val::Scalar(x)) => Ok(vector_scalar(op, v, x, false, return_bool)),
        (Val::Scalar(x), Val::Vector(v)) => Ok(vector_scalar(op, v, x, true, return_bool)),
        (Val::Vector(l), Val::Vector(r)) => vector_vector(op, l, r, m, return_bool),
        (l, r) => Err(err(format!(
            "binary operator between {} and {}",
            l.kind(),
            r.kind()
        ))),
    }
}

/// The outcome of one element pair: value, histogram, kept, or dropped outright (an error
/// Prometheus turns into a warning).
type ElemResult = Option<(f64, Option<Arc<Histogram>>, bool)>;

fn elem_op(
    op: BinOp,
    lf: f64,
    rf: f64,
    lh: Option<&Arc<Histogram>>,
    rh: Option<&Arc<Histogram>>,
) -> ElemResult {
    let scaled = |h: &Histogram, f: &dyn Fn(&mut Histogram)| {
        let mut h = h.clone();
        f(&mut h);
        h.compact();
        Some(Arc::new(h))
    };
    Some(match (lh, rh) {
        (None, None) => {
            let (v, keep) = binary::elem_op(op, lf, rf);
            (v, None, keep)
        }
        // Any other pairing is incompatible: the element is dropped, `bool` or not.
        (None, Some(h)) => match op {
            BinOp::Mul => (0.0, scaled(h, &|h| h.mul(lf)), true),
            _ => return None,
        },
        (Some(h), None) => match op {
            BinOp::Mul => (0.0, scaled(h, &|h| h.mul(rf)), true),
            BinOp::Div => (0.0, scaled(h, &|h| h.div(rf)), true),
            // `trim` compacts only when it changed a bucket, as `TrimBuckets`.
            BinOp::TrimUpper | BinOp::TrimLower => {
                let mut t = (**h).clone();
                t.trim(rf, op == BinOp::TrimUpper);
                (0.0, Some(Arc::new(t)), true)
            }
            _ => return None,
        },
        (Some(a), Some(b)) => match op {
            BinOp::Add | BinOp::Sub => {
                let mut r = (**a).clone();
                r.add(b, op == BinOp::Sub).ok()?;
                if op == BinOp::Sub {
                    r.hint = ResetHint::Gauge;
                }
                r.compact();
                (0.0, Some(Arc::new(r)), true)
            }
            BinOp::Eq => (0.0, Some(a.clone()), a.equals(b)),
            BinOp::Ne => (0.0, Some(a.clone()), !a.equals(b)),
            _ => return None,
        },
    })
}

/// `VectorscalarBinop` with histograms.
fn vector_scalar(op: BinOp, v: Vec<Elem>, x: f64, swap: bool, return_bool: bool) -> Val {
    let mut out = Vec::with_capacity(v.len());
    for mut e in v {
        let own = e.h.take();
        let (lf, rf, lh, rh) = if swap {
            (x, e.v, None, own.as_ref())
        } else {
            (e.v, x, own.as_ref(), None)
        };
        let Some((mut f, mut h, mut keep)) = elem_op(op, lf, rf, lh, rh) else {
            continue;
        };
        if op.is_comparison() && swap {
            f = rf;
            h = rh.cloned();
        }
        if return_bool {
            f = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            e.v = f;
            e.h = h;
            if binary::drops_name(op) || return_bool {
                e.drop_name = true;
            }
            out.push(e);
        }
    }
    Val::Vector(out)
}

/// `VectorBinop` with histograms: one-to-one and many-to-one (one-to-many by swapping).
fn vector_vector(
    op: BinOp,
    lhs: Vec<Elem>,
    rhs: Vec<Elem>,
    m: &Matching,
    return_bool: bool,
) -> Result<Val, EvalError> {
    if lhs.is_empty() || rhs.is_empty() {
        return Ok(Val::Vector(Vec::new()));
    }
    let swapped = m.card == Card::OneToMany;
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let mut one_by_sig: HashMap<u64, usize> = HashMap::with_capacity(one.len());
    for (i, e) in one.iter().enumerate() {
        if let Some(j) = one_by_sig.insert(binary::signature(&e.labels, m), i) {
            return Err(binary::duplicate_on_one_side(
                &e.labels,
                &one[j].labels,
                m,
                swapped,
            ));
        }
    }
    let mut matched: HashMap<u64, foldhash::HashSet<u64>> = HashMap::new();
    let mut out = Vec::new();
    for ls in many {
        let sig = binary::signature(&ls.labels, m);
        let Some(&ri) = one_by_sig.get(&sig) else {
            continue;
        };
        let rs = &one[ri];
        let (fl, fr, hl, hr) = if swapped {
            (rs.v, ls.v, rs.h.as_ref(), ls.h.as_ref())
        } else {
            (ls.v, rs.v, ls.h.as_ref(), rs.h.as_ref())
        };
        let Some((mut v, mut h, keep)) = elem_op(op, fl, fr, hl, hr) else {
            continue;
        };
        if return_bool {
            h = None;
            v = if keep { 1.0 } else { 0.0 };
        }
        let labels = binary::result_labels(ls.labels, &rs.labels, op, m);
        if m.card == Card::OneToOne {
            if matched.insert(sig, Default::default()).is_some() {
                return Err(err(
                    "multiple matches for labels: many-to-one matching must be explicit \
                     (group_left/group_right)",
                ));
            }
        } else {
            use std::hash::BuildHasher;
            let lh = foldhash::fast::FixedState::with_seed(1).hash_one(&labels);
            if !matched.entry(sig).or_default().insert(lh) {
                return Err(err(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                ));
            }
        }
        if !keep && !return_bool {
            continue;
        }
        out.push(Elem {
            labels,
            v,
            drop_name: return_bool,
            h,
        });
    }
    Ok(Val::Vector(out))
}
