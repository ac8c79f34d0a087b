//! The evaluator: walks a compiled plan at one timestamp. Selectors read the storage, the
//! other nodes delegate to `binary`, `aggregate` and `functions`.
//!
//! Metric names are removed the way Prometheus 3 does with delayed name removal (the mode
//! its own test scripts run in): operators and functions only flag a series (`drop_name`),
//! and the name is removed once, when the final result leaves the engine; only then is a
//! result with two identical label sets an error (and, as in Prometheus, right after
//! `label_replace`/`label_join`).

use foldhash::HashMap;

use super::compile::{AggOp, At, Node, Selector, LOOKBACK_MS};
use std::sync::Arc;

use super::limit::Limit;
use super::native::{Histogram, ResetHint};
use super::{
    aggregate, binary, functions, native_eval, EvalError, HistogramSample, Labels, Point, Sample,
    Storage, Value,
};

/// One element of an instant vector.
#[derive(Debug, Clone)]
pub(crate) struct Elem {
    pub labels: Labels,
    pub v: f64,
    /// The metric name is to be removed when the result leaves the engine.
    pub drop_name: bool,
    /// A native histogram (then `v` is meaningless).
    pub h: Option<Arc<Histogram>>,
}

/// One series of a range vector.
#[derive(Debug, Clone)]
pub(crate) struct Range {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    /// Native-histogram samples, oldest first (empty for a series of floats).
    pub hists: Vec<HistogramSample>,
    pub drop_name: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Elem>),
    Matrix(Vec<Range>),
}

impl Val {
    pub fn kind(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

pub(crate) fn err(msg: impl Into<String>) -> EvalError {
    EvalError::Runtime(msg.into())
}

/// Native histograms reached an operation that does not evaluate them.
pub(crate) fn unsupported(what: impl Into<String>) -> EvalError {
    EvalError::Unsupported(what.into())
}

pub(crate) fn is_stale(v: f64) -> bool {
    v.to_bits() == super::STALE_NAN_BITS
}

/// The window a range vector was read over: `(start, end]` in ms, and its nominal range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub start: i64,
    pub end: i64,
    pub range_ms: i64,
}

/// Receives one series of a range vector: its window, labels, float samples, histogram
/// samples, and whether its name is to be dropped.
pub(crate) type RangeSink<'a> =
    dyn FnMut(&Bounds, &Labels, &[Sample], &[HistogramSample], bool) + 'a;

/// Receives one element of an instant vector: labels, value, histogram (if it is one), and
/// whether its name is to be dropped.
pub(crate) type ElemSink<'a> = dyn FnMut(&Labels, f64, Option<&Arc<Histogram>>, bool) + 'a;

/// Receives one series' newest sample (and its histogram, when that is one).
pub(crate) type InstantSink<'a> = dyn FnMut(&Labels, Sample, Option<&Arc<Histogram>>) + 'a;

/// A range vector argument with the window it was read over.
pub(crate) struct Window {
    pub series: Vec<Range>,
    pub start: i64,
    pub end: i64,
    pub range_ms: i64,
}

/// What every node needs: the storage and the query's `start()`/`end()`.
pub(crate) struct Ctx<'a> {
    pub storage: &'a dyn Storage,
    pub query_start: i64,
    pub query_end: i64,
    /// The range query's step (0 for an instant query), for `step()`.
    pub query_step: i64,
    /// Samples read so far by this evaluation, against `max_samples`.
    pub samples: std::cell::Cell<u64>,
    pub max_samples: u64,
    /// Subquery steps evaluated so far, against [`MAX_SUBQUERY_STEPS`].
    pub steps: std::cell::Cell<u64>,
}

/// Subquery steps one evaluation may take in total. One subquery of a day at a 1m step takes
/// 1440; nesting multiplies, and every step reads the storage again.
pub(crate) const MAX_SUBQUERY_STEPS: u64 = 200_000;

/// The timing of the evaluation in progress: the step timestamp `t` and the start of the
/// range being evaluated (the query's, or the enclosing subquery's), at which step-invariant
/// subtrees are evaluated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub t: i64,
    pub range_start: i64,
}

impl Ctx<'_> {
    /// Account for `n` more samples read; false once over the budget.
    fn take_samples(&self, n: usize) -> bool {
        let total = self.samples.get().saturating_add(n as u64);
        self.samples.set(total);
        total <= self.max_samples
    }

    fn check_budget(&self) -> Result<(), EvalError> {
        if self.samples.get() > self.max_samples {
            return Err(err(
                "query processing would load too many samples into memory in query execution",
            ));
        }
        Ok(())
    }

    pub fn at(&self, at: At, t: i64) -> i64 {
        match at {
            At::Eval => t,
            At::Fixed(ts) => ts,
            At::Start => self.query_start,
            At::End => self.query_end,
        }
    }

    pub fn eval(&self, n: &Node, s: Step) -> Result<Val, EvalError> {
        match n {
            Node::Num(v) => Ok(Val::Scalar(*v)),
            Node::Str(v) => Ok(Val::Str(v.clone())),
            Node::Regex { source, .. } => Ok(Val::Str(source.clone())),
            Node::Vector(sel) => Ok(Val::Vector(self.instant_selector(sel, s.t, |_| {})?)),
            Node::Matrix { .. } | Node::Subquery { .. } => {
                let w = self.window(n, s)?;
                Ok(Val::Matrix(w.series))
            }
            Node::StepInvariant(inner) => self.eval(
                inner,
                Step {
                    t: s.range_start,
                    range_start: s.range_start,
                },
            ),
            Node::Neg(e) => match self.eval(e, s)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(mut vs) => {
                    for e in &mut vs {
                        e.v = -e.v;
                        e.drop_name = true;
                        if let Some(h) = &mut e.h {
                            // A negated histogram is a gauge (`Mul(-1)`).
                            Arc::make_mut(h).mul(-1.0);
                        }
                    }
                    Ok(Val::Vector(vs))
                }
                other => Err(err(format!("unary minus on {}", other.kind()))),
            },
            Node::Binary {
                op,
                lhs,
                rhs,
                matching,
                return_bool,
            } => {
                let l = self.eval(lhs, s)?;
                let r = self.eval(rhs, s)?;
                if native_eval::has_histograms(&l) || native_eval::has_histograms(&r) {
                    return native_eval::binary(*op, l, r, matching, *return_bool);
                }
                binary::eval(*op, l, r, matching, *return_bool)
            }
            Node::Agg {
                op,
                expr,
                param,
                without,
                grouping,
            } => {
                let p = match param {
                    Some(p) => Some(self.eval(p, s)?),
                    None => None,
                };
                let q = match p {
                    Some(Val::Scalar(q)) => q,
                    _ => f64::NAN,
                };
                if let (AggOp::Topk | AggOp::Bottomk, Some(Val::Scalar(k))) = (op, &p) {
                    let mut t = aggregate::TopK::new(*op == AggOp::Topk, *k, *without, grouping)?;
                    // Prometheus leaves histograms out of `topk`/`bottomk` (with an info).
                    self.stream_vector(expr, s, &mut |labels, v, h, drop_name| {
                        if h.is_none() {
                            t.push(labels, v, drop_name)
                        }
                    })?;
                    return Ok(Val::Vector(t.finish()));
                }
                if let (AggOp::Limitk | AggOp::LimitRatio, Some(Val::Scalar(k))) = (op, &p) {
                    let mut l = if *op == AggOp::Limitk {
                        Limit::first(*k, *without, grouping)?
                    } else {
                        Limit::ratio(*k, *without, grouping)?
                    };
                    self.stream_vector(expr, s, &mut |labels, v, h, drop_name| {
                        l.push(labels, v, h, drop_name)
                    })?;
                    return Ok(Val::Vector(l.finish()));
                }
                if param.is_none() || *op == AggOp::Quantile {
                    if let Some(mut agg) = aggregate::Aggregator::new(*op, q, *without, grouping) {
                        let mut hists = native_eval::HistogramAgg::new(*op, *without, grouping);
                        self.stream_vector(expr, s, &mut |labels, v, h, drop_name| match h {
                            Some(h) => hists.push(labels, h, drop_name),
                            None => agg.push(labels, v, drop_name),
                        })?;
                        return hists.finish(agg.finish());
                    }
                }
                // `count_values` counts histograms by their text; the others refuse them.
                let v = if *op == AggOp::CountValues {
                    self.vector_any(expr, s)?
                } else {
                    self.vector(expr, s)?
                };
                aggregate::eval(*op, p, v, *without, grouping)
            }
            Node::Call { func, args } => match native_eval::call(self, *func, args, s)? {
                Some(v) => Ok(v),
                None => functions::call(self, *func, args, s),
            },
        }
    }

    /// Evaluate a node that must produce an instant vector of floats (native histograms are
    /// refused as unsupported: the callers compute over `v`).
    pub fn vector(&self, n: &Node, s: Step) -> Result<Vec<Elem>, EvalError> {
        let v = self.vector_any(n, s)?;
        if v.iter().any(|e| e.h.is_some()) {
            return Err(unsupported(native_eval::describe(n)));
        }
        Ok(v)
    }

    /// Evaluate a node that must produce an instant vector, native histograms included.
    pub fn vector_any(&self, n: &Node, s: Step) -> Result<Vec<Elem>, EvalError> {
        match self.eval(n, s)? {
            Val::Vector(v) => Ok(v),
            other => Err(err(format!(
                "expected instant vector, got {}",
                other.kind()
            ))),
        }
    }

    /// Hand each element of an instant-vector node to `f` (labels, value, histogram, name to
    /// be dropped). Selectors and functions over matrix selectors stream from the storage
    /// without cloning the labels of every series.
    pub fn stream_vector(&self, n: &Node, s: Step, f: &mut ElemSink<'_>) -> Result<(), EvalError> {
        match n {
            Node::Vector(sel) => {
                self.for_each_instant(sel, s.t, &mut |labels, p, h| f(labels, p.v, h, false))
            }
            Node::Call { func, args } if functions::range_call(self, *func, args, s, f)? => Ok(()),
            _ => {
                for e in self.vector_any(n, s)? {
                    f(&e.labels, e.v, e.h.as_ref(), e.drop_name);
                }
                Ok(())
            }
        }
    }

    /// Evaluate a node that must produce a scalar.
    pub fn scalar(&self, n: &Node, s: Step) -> Result<f64, EvalError> {
        match self.eval(n, s)? {
            Val::Scalar(v) => Ok(v),
            other => Err(err(format!("expected scalar, got {}", other.kind()))),
        }
    }

    /// Call `f` with each matching series and its newest sample in `(ts - 5m, ts]`, unless
    /// that sample is a stale marker; with the histogram when the newest is a native
    /// histogram (the float sample then carries only its timestamp).
    pub fn for_each_instant(
        &self,
        sel: &Selector,
        t: i64,
        f: &mut InstantSink<'_>,
    ) -> Result<(), EvalError> {
        let ts = self.at(sel.at, t).saturating_sub(sel.offset_ms);
        let mint = ts.saturating_sub(LOOKBACK_MS);
        self.storage
            .select_all(&sel.matchers, mint, ts, &mut |labels, samples, hists| {
                let last = samples.iter().rev().find(|s| s.t <= ts);
                let last_h = hists.iter().rev().find(|s| s.t <= ts && s.t > mint);
                match (last, last_h) {
                    (Some(l), Some(h)) if h.t > l.t => {
                        if self.take_samples(1) {
                            f(
                                labels,
                                Sample {
                                    t: h.t,
                                    v: f64::NAN,
                                },
                                Some(&h.h),
                            );
                        }
                    }
                    (None, Some(h)) => {
                        if self.take_samples(1) {
                            f(
                                labels,
                                Sample {
                                    t: h.t,
                                    v: f64::NAN,
                                },
                                Some(&h.h),
                            );
                        }
                    }
                    (last, _) => {
                        if let Some(last) = last.filter(|s| s.t > mint && !is_stale(s.v)) {
                            if self.take_samples(1) {
                                f(labels, *last, None);
                            }
                        }
                    }
                }
            });
        self.check_budget()
    }

    /// The instant selector's vector. `on_t` receives each kept sample's timestamp (for
    /// `timestamp()`).
    pub fn instant_selector(
        &self,
        sel: &Selector,
        t: i64,
        mut on_t: impl FnMut(i64),
    ) -> Result<Vec<Elem>, EvalError> {
        let mut out = Vec::new();
        self.for_each_instant(sel, t, &mut |labels, p, h| {
            on_t(p.t);
            out.push(Elem {
                labels: labels.clone(),
                v: p.v,
                drop_name: false,
                h: h.cloned(),
            });
        })?;
        Ok(out)
    }

    /// Call `f` with each series of a range-vector node. A plain matrix selector streams
    /// from the storage without copying samples (unless stale markers must be dropped), so
    /// `rate(x[5m])` over many series allocates only for its output.
    pub fn for_each_range(
        &self,
        n: &Node,
        s: Step,
        f: &mut RangeSink<'_>,
    ) -> Result<(), EvalError> {
        match n {
            Node::Matrix { sel, range_ms } => {
                let end = self.at(sel.at, s.t).saturating_sub(sel.offset_ms);
                let start = end.saturating_sub(*range_ms);
                let b = Bounds {
                    start,
                    end,
                    range_ms: *range_ms,
                };
                let mut scratch: Vec<Sample> = Vec::new();
                self.storage.select_all(
                    &sel.matchers,
                    start,
                    end,
                    &mut |labels, samples, hists| {
                        if !self.take_samples(samples.len() + hists.len()) {
                            return;
                        }
                        let lo = hists.partition_point(|h| h.t <= start);
                        let hi = hists.partition_point(|h| h.t <= end);
                        let hs = &hists[lo..hi.max(lo)];
                        let clean = samples
                            .iter()
                            .all(|p| p.t > start && p.t <= end && !is_stale(p.v));
                        if clean {
                            if !samples.is_empty() || !hs.is_empty() {
                                f(&b, labels, samples, hs, false);
                            }
                            return;
                        }
                        scratch.clear();
                        scratch.extend(
                            samples
                                .iter()
                                .filter(|p| p.t > start && p.t <= end && !is_stale(p.v)),
                        );
                        if !scratch.is_empty() || !hs.is_empty() {
                            f(&b, labels, &scratch, hs, false);
                        }
                    },
                );
                self.check_budget()
            }
            Node::StepInvariant(inner) if matches!(inner.as_ref(), Node::Matrix { .. }) => self
                .for_each_range(
                    inner,
                    Step {
                        t: s.range_start,
                        range_start: s.range_start,
                    },
                    f,
                ),
            _ => {
                let w = self.window(n, s)?;
                let b = Bounds {
                    start: w.start,
                    end: w.end,
                    range_ms: w.range_ms,
                };
                for r in &w.series {
                    if !r.samples.is_empty() || !r.hists.is_empty() {
                        f(&b, &r.labels, &r.samples, &r.hists, r.drop_name);
                    }
                }
                Ok(())
            }
        }
    }

    /// Evaluate a range-vector node (matrix selector or subquery, possibly step-invariant),
    /// with the window it covers.
    pub fn window(&self, n: &Node, s: Step) -> Result<Window, EvalError> {
        match n {
            Node::Matrix { sel, range_ms } => {
                let end = self.at(sel.at, s.t).saturating_sub(sel.offset_ms);
                let start = end.saturating_sub(*range_ms);
                let mut series = Vec::new();
                self.storage.select_all(
                    &sel.matchers,
                    start,
                    end,
                    &mut |labels, samples, hists| {
                        if !self.take_samples(samples.len() + hists.len()) {
                            return;
                        }
                        let kept: Vec<Sample> = samples
                            .iter()
                            .filter(|p| p.t > start && p.t <= end && !is_stale(p.v))
                            .copied()
                            .collect();
                        let hs: Vec<HistogramSample> = hists
                            .iter()
                            .filter(|h| h.t > start && h.t <= end)
                            .cloned()
                            .collect();
                        if !kept.is_empty() || !hs.is_empty() {
                            series.push(Range {
                                labels: labels.clone(),
                                samples: kept,
                                hists: hs,
                                drop_name: false,
                            });
                        }
                    },
                );
                self.check_budget()?;
                Ok(Window {
                    series,
                    start,
                    end,
                    range_ms: *range_ms,
                })
            }
            Node::Subquery {
                inner,
                range_ms,
                step_ms,
                offset_ms,
                at,
            } => {
                let end = self.at(*at, s.t).saturating_sub(*offset_ms);
                let start = end.saturating_sub(*range_ms);
                // Steps are aligned to absolute multiples of the step (Go's truncating
                // division, as Prometheus computes it), strictly after the window start.
                let mut first = step_ms * (start / step_ms);
                if first <= start {
                    first = first.saturating_add(*step_ms);
                }
                let steps = (end.saturating_sub(first) / step_ms).max(-1) + 1;
                if steps > 11_000 {
                    return Err(err(format!(
                        "subquery would evaluate {steps} steps; at most 11000 are allowed"
                    )));
                }
                // Each step is a full evaluation of the inner expression (a storage read per
                // selector): nested subqueries are bounded by their total number of steps.
                let total = self.steps.get().saturating_add(steps.max(0) as u64);
                self.steps.set(total);
                if total > MAX_SUBQUERY_STEPS {
                    return Err(err(format!(
                        "query would evaluate more than {MAX_SUBQUERY_STEPS} subquery steps"
                    )));
                }
                let mut index: HashMap<Labels, usize> = HashMap::default();
                let mut series: Vec<Range> = Vec::new();
                let mut ts = first;
                while ts <= end {
                    let step = Step {
                        t: ts,
                        range_start: first,
                    };
                    let v = self.eval(inner, step)?;
                    self.check_budget()?;
                    match v {
                        Val::Vector(v) => {
                            self.take_samples(v.len());
                            for e in v {
                                let i = match index.get(&e.labels) {
                                    Some(&i) => i,
                                    None => {
                                        index.insert(e.labels.clone(), series.len());
                                        series.push(Range {
                                            labels: e.labels,
                                            samples: Vec::new(),
                                            hists: Vec::new(),
                                            drop_name: e.drop_name,
                                        });
                                        series.len() - 1
                                    }
                                };
                                match e.h {
                                    None => series[i].samples.push(Sample { t: ts, v: e.v }),
                                    Some(h) => series[i].hists.push(HistogramSample {
                                        t: ts,
                                        h: unknown_reset(h),
                                    }),
                                }
                            }
                        }
                        Val::Scalar(v) => {
                            if series.is_empty() {
                                series.push(Range {
                                    labels: Vec::new(),
                                    samples: Vec::new(),
                                    hists: Vec::new(),
                                    drop_name: false,
                                });
                            }
                            series[0].samples.push(Sample { t: ts, v });
                        }
                        other => {
                            return Err(err(format!("subquery over {}", other.kind())));
                        }
                    }
                    ts = match ts.checked_add(*step_ms) {
                        Some(next) => next,
                        None => break,
                    };
                }
                Ok(Window {
                    series,
                    start,
                    end,
                    range_ms: *range_ms,
                })
            }
            Node::StepInvariant(inner) => self.window(
                inner,
                Step {
                    t: s.range_start,
                    range_start: s.range_start,
                },
            ),
            _ => Err(err("expected range vector")),
        }
    }
}

/// A histogram read back from a subquery: Prometheus turns its `reset`/`not_reset` hint into
/// `unknown`, since the subquery may skip or repeat the samples the hint was set against.
fn unknown_reset(h: Arc<Histogram>) -> Arc<Histogram> {
    match h.hint {
        ResetHint::Reset | ResetHint::NotReset => {
            let mut c = (*h).clone();
            c.hint = ResetHint::Unknown;
            Arc::new(c)
        }
        _ => h,
    }
}

/// Remove the names flagged for removal and refuse a result with two identical label sets.
pub(crate) fn finish(v: Val) -> Result<Value, EvalError> {
    const DUP: &str = "vector cannot contain metrics with the same labelset";
    match v {
        Val::Scalar(f) => Ok(Value::Scalar(f)),
        Val::Str(s) => Ok(Value::String(s)),
        Val::Vector(es) if es.iter().any(|e| e.h.is_some()) => {
            let mut out = Vec::with_capacity(es.len());
            for mut e in es {
                if e.drop_name {
                    drop_name(&mut e.labels);
                }
                let p = match e.h {
                    Some(h) => Point::Histogram(h),
                    None => Point::Float(e.v),
                };
                out.push((e.labels, p));
            }
            let mut seen: foldhash::HashSet<&Labels> = foldhash::HashSet::default();
            for (l, _) in &out {
                if !seen.insert(l) {
                    return Err(err(DUP));
                }
            }
            Ok(Value::Mixed(out))
        }
        Val::Vector(es) => {
            let mut out = Vec::with_capacity(es.len());
            for mut e in es {
                if e.drop_name {
                    drop_name(&mut e.labels);
                }
                out.push((e.labels, e.v));
            }
            if out.len() > 1 {
                let mut seen: foldhash::HashSet<&Labels> = foldhash::HashSet::default();
                for (l, _) in &out {
                    if !seen.insert(l) {
                        return Err(err(DUP));
                    }
                }
            }
            Ok(Value::Vector(out))
        }
        Val::Matrix(rs) if rs.iter().any(|r| !r.hists.is_empty()) => {
            let mut out: Vec<(Labels, Vec<Sample>, Vec<HistogramSample>)> =
                Vec::with_capacity(rs.len());
            let mut index: HashMap<Labels, usize> = HashMap::default();
            for mut r in rs {
                if r.drop_name {
                    drop_name(&mut r.labels);
                }
                match index.get(&r.labels) {
                    Some(&i) => {
                        let (_, fs, hs) = &mut out[i];
                        let taken = |t: i64, fs: &[Sample], hs: &[HistogramSample]| {
                            fs.iter().any(|p| p.t == t) || hs.iter().any(|p| p.t == t)
                        };
                        for p in &r.samples {
                            if taken(p.t, fs, hs) {
                                return Err(err(DUP));
                            }
                        }
                        for p in &r.hists {
                            if taken(p.t, fs, hs) {
                                return Err(err(DUP));
                            }
                        }
                        fs.extend(r.samples);
                        hs.extend(r.hists);
                        fs.sort_by_key(|p| p.t);
                        hs.sort_by_key(|p| p.t);
                    }
                    None => {
                        index.insert(r.labels.clone(), out.len());
                        out.push((r.labels, r.samples, r.hists));
                    }
                }
            }
            Ok(Value::MixedMatrix(out))
        }
        Val::Matrix(rs) => {
            let mut out: Vec<(Labels, Vec<Sample>)> = Vec::with_capacity(rs.len());
            let mut index: HashMap<Labels, usize> = HashMap::default();
            for mut r in rs {
                if r.drop_name {
                    drop_name(&mut r.labels);
                }
                match index.get(&r.labels) {
                    Some(&i) => {
                        let into = &mut out[i].1;
                        for s in r.samples {
                            if into.iter().any(|p| p.t == s.t) {
                                return Err(err(DUP));
                            }
                            into.push(s);
                        }
                        into.sort_by_key(|p| p.t);
                    }
                    None => {
                        index.insert(r.labels.clone(), out.len());
                        out.push((r.labels, r.samples));
                    }
                }
            }
            Ok(Value::Matrix(out))
        }
    }
}

/// Remove `__name__`; true if there was one.
pub(crate) fn drop_name(labels: &mut Labels) -> bool {
    let before = labels.len();
    labels.retain(|(n, _)| n != "__name__");
    labels.len() != before
}

/// The value of label `name`, "" when absent.
pub(crate) fn get<'a>(labels: &'a Labels, name: &str) -> &'a str {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Set (or, with an empty value, delete) label `name`, keeping the labels sorted.
pub(crate) fn set(labels: &mut Labels, name: &str, value: &str) {
    match labels.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
        Ok(i) => {
            if value.is_empty() {
                labels.remove(i);
            } else {
                labels[i].1 = value.to_string();
            }
        }
        Err(i) => {
            if !value.is_empty() {
                labels.insert(i, (name.to_string(), value.to_string()));
            }
        }
    }
}
