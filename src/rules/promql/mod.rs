//! A PromQL instant-query evaluator with Prometheus 3 semantics, over any [`Storage`].
//!
//! This is the contract between the engine (this directory) and the rest of `rules`
//! (buffers, groups, output). The engine parses with `promql-parser`, refuses what it does not
//! support at compile time (naming the construct), and evaluates a compiled expression at one
//! timestamp against whatever storage it is handed: the stream buffers in production, an
//! in-memory store in the conformance harness.
//!
//! What it evaluates, measured against Prometheus's own test scripts by
//! `tests/promql_conformance.rs`:
//! - selectors with every matcher type (and `or` groups), `offset`, `@ <t>`/`@ start()`/
//!   `@ end()` (the evaluation time for an instant query), 5m lookback, stale markers, left-open
//!   range windows, subqueries with steps aligned to absolute multiples of the step (1m when
//!   omitted), step-invariant subexpressions evaluated once per range as Prometheus does;
//! - arithmetic, comparison (with `bool`), `atan2` and set operators with `on`/`ignoring`/
//!   `group_left`/`group_right`, unary minus, number and string literals;
//! - `sum avg min max count group stddev stdvar topk bottomk quantile count_values limitk
//!   limit_ratio` with `by`/`without` (compensated sums and means as Prometheus 3;
//!   `limit_ratio` picks by Prometheus 3's label hash, see `limit.rs`);
//! - Prometheus 3 duration expressions in ranges, subquery steps and offsets (`x[5m+1m]`,
//!   `offset (1h/2)`, `step()`, `range()`, `min_of`/`max_of`), resolved to literals before
//!   parsing (`durations.rs`): `step()` and `range()` are those of the query the expression is
//!   compiled for ([`Compiled::for_range_query`]), 0 for an instant query such as a rule;
//! - the functions of `functions.rs`'s `Func` list: the rate family with extrapolation and
//!   counter resets, `deriv`, `predict_linear`, `resets`, `changes`, the `*_over_time` family
//!   (including `mad_`, `first_`, `ts_of_*_over_time`), `double_exponential_smoothing`,
//!   `histogram_quantile` on classic `le` buckets, math, trigonometry, date functions,
//!   `label_replace`/`label_join`, the `sort` family, `absent`, `scalar`, `vector`, `time`,
//!   `start`/`end`/`step`/`range`, `min_of`/`max_of`;
//! - native histograms (`native`, `native_eval`): selectors, range vectors and subqueries, the
//!   rate family, every range function (`sum_over_time`/`avg_over_time` of histograms with
//!   compensated sums, `resets`/`changes` over both kinds, the float-only ones over the floats),
//!   `sum avg count group` (compensated), `count_values`, the `histogram_*` functions, `*` `/`
//!   by floats, `+ - == !=` between histograms, unary minus, and the trim operators `</` `>/`
//!   (`native/trim.rs`, parsed around `promql-parser` by `trim_syntax.rs`). Functions that
//!   Prometheus defines over floats only leave histograms out as it does; anything else that
//!   meets a histogram (`histogram_fraction` over classic buckets) fails with
//!   [`EvalError::Unsupported`] naming it, rather than treating it as a float.
//!
//! Refused with [`CompileError::Unsupported`]: the `smoothed`/`anchored` modifiers (which
//! `promql-parser` cannot parse; named in `compile.rs`'s `unparsed_construct`), `info`, `fill`
//! modifiers, `\x80`-`\xff` escapes in strings (promql-parser decodes them differently from
//! Prometheus), and expressions nested deeper than 256.
//!
//! Metric names are removed as Prometheus 3 does with delayed name removal (the mode of its
//! test scripts): only when the result leaves the engine, which is also when two identical
//! label sets are an error (and right after `label_replace`/`label_join`). Aggregations,
//! `topk` and the range functions stream series from the storage, cloning labels only for
//! what they output. An evaluation fails rather than run away: at most
//! [`DEFAULT_MAX_SAMPLES`] samples read (see [`Compiled::with_max_samples`]), 200k subquery
//! steps in all, 11k steps per subquery. The engine computes no warnings or info
//! annotations.

use promql_parser::label::Matchers;

mod aggregate;
mod binary;
mod compile;
mod durations;
mod eval;
mod functions;
mod histogram;
mod labels;
mod lex;
mod limit;
mod native;
mod native_eval;
mod over_time;
pub mod testing;
#[cfg(test)]
mod tests;
mod trim_syntax;

pub use histogram::almost_equal;
pub use native::{
    from_pairs, pairs, Bucket, Histogram, HistogramError, ResetHint, Span, CUSTOM_BUCKETS_SCHEMA,
};

/// Labels of one series, sorted by name, `__name__` included when the series has one.
pub type Labels = Vec<(String, String)>;

/// One float sample. A Prometheus stale marker is `f64::from_bits(STALE_NAN_BITS)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

/// One native-histogram sample. A stale marker is always a float [`Sample`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    pub t: i64,
    pub h: std::sync::Arc<Histogram>,
}

/// The value of one element of an instant vector holding native histograms.
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    Float(f64),
    Histogram(std::sync::Arc<Histogram>),
}

/// The bit pattern of Prometheus's stale marker NaN.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Receives one series: its labels, float samples and native-histogram samples.
pub type SeriesSink<'a> = dyn FnMut(&Labels, &[Sample], &[HistogramSample]) + 'a;

/// Where the engine reads samples from.
pub trait Storage {
    /// Call `f` once for every series whose labels match every matcher in `matchers`
    /// (including `or_matchers` semantics), with its labels and its samples with
    /// `mint < t <= maxt`, oldest first, stale markers included.
    fn select(
        &self,
        matchers: &Matchers,
        mint: i64,
        maxt: i64,
        f: &mut dyn FnMut(&Labels, &[Sample]),
    );

    /// [`Storage::select`] with each series' native-histogram samples in the window too,
    /// series with histograms only included. The default: a storage of floats only.
    fn select_all(&self, matchers: &Matchers, mint: i64, maxt: i64, f: &mut SeriesSink<'_>) {
        self.select(matchers, mint, maxt, &mut |l, s| f(l, s, &[]))
    }
}

/// One selector a compiled expression reads, and how far back it reads relative to the
/// evaluation time (range + lookback + offset + subquery range, in milliseconds).
#[derive(Debug, Clone)]
pub struct SelectorNeed {
    /// All matchers of the selector, the metric name as a `__name__` matcher.
    pub matchers: Matchers,
    pub history_ms: i64,
    /// `Some(t)` when the selector, or a subquery around it, has a fixed `@ t` modifier: it
    /// then reads `history_ms` before `t` (milliseconds since the epoch), whatever the
    /// evaluation time. `None`: `history_ms` before the evaluation time.
    pub at_ms: Option<i64>,
}

/// The result of an instant evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<(Labels, f64)>),
    /// An instant vector with at least one native histogram.
    Mixed(Vec<(Labels, Point)>),
    Matrix(Vec<(Labels, Vec<Sample>)>),
    /// A range vector with at least one native-histogram sample: each series' floats and
    /// histograms, each oldest first.
    MixedMatrix(Vec<(Labels, Vec<Sample>, Vec<HistogramSample>)>),
}

/// An expression refused at load.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CompileError {
    #[error("{0}")]
    Parse(String),
    /// A construct cardguard does not evaluate, named (e.g. "function `holt_winters`").
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// A failure while evaluating (counted and logged by the caller, never fatal).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EvalError {
    #[error("{0}")]
    Runtime(String),
    /// Native histograms reached an operation cardguard does not evaluate over them (named).
    #[error("unsupported over native histograms: {0}")]
    Unsupported(String),
}

/// True when `labels` satisfy every matcher (and one of the `or_matchers` groups, if any).
/// A missing label matches as the empty string, as in Prometheus.
pub fn matches<'a>(
    matchers: &Matchers,
    labels: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> bool {
    let get = |name: &str| {
        labels
            .clone()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v)
    };
    let all = |ms: &[promql_parser::label::Matcher]| ms.iter().all(|m| m.is_match(get(&m.name)));
    all(&matchers.matchers)
        && (matchers.or_matchers.is_empty() || matchers.or_matchers.iter().any(|g| all(g)))
}

/// A parsed, checked expression ready to evaluate.
#[derive(Debug, Clone)]
pub struct Compiled {
    expr: String,
    plan: compile::Node,
    needs: Vec<SelectorNeed>,
    max_samples: u64,
}

/// Prometheus's default `--query.max-samples`: an evaluation reading more samples fails
/// rather than exhausting memory or time (nested subqueries multiply quickly).
pub const DEFAULT_MAX_SAMPLES: u64 = 50_000_000;

impl Compiled {
    /// Parse and check `expr`; every unsupported construct is refused here.
    pub fn new(expr: &str) -> Result<Compiled, CompileError> {
        Self::compile(expr, durations::QueryShape::default())
    }

    /// [`Compiled::new`] for one range query from `start_ms` to `end_ms` by `step_ms`:
    /// `step()` and `range()` in duration expressions (`x[step()*2]`) take that query's values,
    /// as Prometheus resolves them per query. A rule is an instant query, for which both are 0
    /// (what [`Compiled::new`] uses).
    pub fn for_range_query(
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Compiled, CompileError> {
        let shape = durations::QueryShape {
            step_ms,
            range_ms: end_ms.saturating_sub(start_ms),
        };
        Self::compile(expr, shape)
    }

    fn compile(expr: &str, shape: durations::QueryShape) -> Result<Compiled, CompileError> {
        let (plan, needs) = compile::compile(expr, shape)?;
        Ok(Compiled {
            expr: expr.to_string(),
            plan,
            needs,
            max_samples: DEFAULT_MAX_SAMPLES,
        })
    }

    /// Fail evaluations that read more than `n` samples (default [`DEFAULT_MAX_SAMPLES`]).
    pub fn with_max_samples(mut self, n: u64) -> Compiled {
        self.max_samples = n;
        self
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The selectors the expression reads and their history.
    pub fn needs(&self) -> &[SelectorNeed] {
        &self.needs
    }

    /// Evaluate at `t_ms` (milliseconds since the epoch) as a Prometheus instant query.
    pub fn eval(&self, storage: &dyn Storage, t_ms: i64) -> Result<Value, EvalError> {
        self.eval_in_range(storage, t_ms, t_ms, t_ms)
    }

    /// Evaluate at `t_ms` as one step of a range query from `start_ms` to `end_ms`: `@ start()`
    /// and `@ end()` refer to those, and step-invariant subexpressions (every selector under
    /// an `@`) are evaluated at `start_ms`, as Prometheus does.
    pub fn eval_in_range(
        &self,
        storage: &dyn Storage,
        t_ms: i64,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Value, EvalError> {
        self.eval_range_step(storage, t_ms, start_ms, end_ms, 0)
    }

    /// [`Compiled::eval_in_range`] with the range query's step too, for `step()`.
    pub fn eval_range_step(
        &self,
        storage: &dyn Storage,
        t_ms: i64,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Value, EvalError> {
        let ctx = eval::Ctx {
            storage,
            query_start: start_ms,
            query_end: end_ms,
            query_step: step_ms,
            samples: std::cell::Cell::new(0),
            max_samples: self.max_samples,
            steps: std::cell::Cell::new(0),
        };
        let v = ctx.eval(
            &self.plan,
            eval::Step {
                t: t_ms,
                range_start: start_ms,
            },
        )?;
        eval::finish(v)
    }
}
