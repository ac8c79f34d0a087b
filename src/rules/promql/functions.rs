//! Function calls: the supported set (`Func`), argument evaluation, and the functions over
//! instant vectors. Functions over ranges live in `over_time`, label functions in `labels`,
//! `histogram_quantile` in `histogram`.

use super::compile::Node;
use super::eval::{err, Bounds, Ctx, Elem, ElemSink, Step, Val};
use std::sync::Arc;

use super::native::Histogram;
use super::{
    histogram, labels, native_eval, over_time, EvalError, HistogramSample, Labels, Sample,
};

macro_rules! funcs {
    ($($v:ident = $name:literal),* $(,)?) => {
        /// Every function the engine evaluates.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Func { $($v),* }
        impl Func {
            pub fn from_name(name: &str) -> Option<Func> {
                match name { $($name => Some(Func::$v),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $(Func::$v => $name),* }
            }
        }
    };
}

funcs! {
    Rate = "rate", Irate = "irate", Increase = "increase", Delta = "delta", Idelta = "idelta",
    Deriv = "deriv", PredictLinear = "predict_linear", Resets = "resets", Changes = "changes",
    AvgOverTime = "avg_over_time", MinOverTime = "min_over_time", MaxOverTime = "max_over_time",
    SumOverTime = "sum_over_time", CountOverTime = "count_over_time",
    QuantileOverTime = "quantile_over_time", StddevOverTime = "stddev_over_time",
    StdvarOverTime = "stdvar_over_time", LastOverTime = "last_over_time",
    FirstOverTime = "first_over_time", PresentOverTime = "present_over_time",
    AbsentOverTime = "absent_over_time", MadOverTime = "mad_over_time",
    TsOfFirstOverTime = "ts_of_first_over_time", TsOfLastOverTime = "ts_of_last_over_time",
    TsOfMinOverTime = "ts_of_min_over_time", TsOfMaxOverTime = "ts_of_max_over_time",
    DoubleExponentialSmoothing = "double_exponential_smoothing",
    Abs = "abs", Ceil = "ceil", Floor = "floor", Round = "round", Clamp = "clamp",
    ClampMin = "clamp_min", ClampMax = "clamp_max", Exp = "exp", Ln = "ln", Log2 = "log2",
    Log10 = "log10", Sqrt = "sqrt", Sgn = "sgn", Timestamp = "timestamp", Time = "time",
    Vector = "vector", Scalar = "scalar", LabelReplace = "label_replace",
    LabelJoin = "label_join", HistogramQuantile = "histogram_quantile", Absent = "absent",
    Minute = "minute", Hour = "hour", DayOfWeek = "day_of_week", DayOfMonth = "day_of_month",
    DayOfYear = "day_of_year", Month = "month", Year = "year", DaysInMonth = "days_in_month",
    Sort = "sort", SortDesc = "sort_desc", SortByLabel = "sort_by_label",
    SortByLabelDesc = "sort_by_label_desc", Pi = "pi", Deg = "deg", Rad = "rad",
    Acos = "acos", Acosh = "acosh", Asin = "asin", Asinh = "asinh", Atan = "atan",
    Atanh = "atanh", Cos = "cos", Cosh = "cosh", Sin = "sin", Sinh = "sinh", Tan = "tan",
    Tanh = "tanh", Start = "start", End = "end", Step = "step", Range = "range",
    MinOf = "min_of", MaxOf = "max_of",
    HistogramCount = "histogram_count", HistogramSum = "histogram_sum",
    HistogramAvg = "histogram_avg", HistogramStddev = "histogram_stddev",
    HistogramStdvar = "histogram_stdvar", HistogramFraction = "histogram_fraction",
}

impl Func {
    /// Prometheus's `AtModifierUnsafeFunctions`: their value depends on the evaluation time
    /// even when every selector below them has an `@`.
    pub fn at_modifier_unsafe(self) -> bool {
        matches!(
            self,
            Func::DaysInMonth
                | Func::DayOfMonth
                | Func::DayOfWeek
                | Func::DayOfYear
                | Func::Hour
                | Func::Minute
                | Func::Month
                | Func::Year
                | Func::PredictLinear
                | Func::Time
                | Func::Timestamp
        )
    }
}

fn arg(args: &[Node], i: usize, f: Func) -> Result<&Node, EvalError> {
    args.get(i)
        .ok_or_else(|| err(format!("missing argument {} of {}", i + 1, f.name())))
}

fn string_arg(ctx: &Ctx, args: &[Node], i: usize, f: Func, s: Step) -> Result<String, EvalError> {
    match ctx.eval(arg(args, i, f)?, s)? {
        Val::Str(v) => Ok(v),
        other => Err(err(format!(
            "expected string argument to {}, got {}",
            f.name(),
            other.kind()
        ))),
    }
}

/// Go's `math.Max`, whose special cases (NaN wins, except against +Inf) differ from Rust's.
fn go_max(x: f64, y: f64) -> f64 {
    if x == f64::INFINITY || y == f64::INFINITY {
        f64::INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && y == 0.0 {
        if x.is_sign_negative() {
            y
        } else {
            x
        }
    } else if x > y {
        x
    } else {
        y
    }
}

/// Go's `math.Min`.
fn go_min(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY || y == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && y == 0.0 {
        if x.is_sign_negative() {
            x
        } else {
            y
        }
    } else if x < y {
        x
    } else {
        y
    }
}

/// Apply `f` to every float; native histograms are left out, as Prometheus's
/// `simpleFloatFunc` does.
fn map_values(mut v: Vec<Elem>, f: impl Fn(f64) -> f64) -> Val {
    v.retain(|e| e.h.is_none());
    for e in &mut v {
        e.v = f(e.v);
        e.drop_name = true;
    }
    Val::Vector(v)
}

/// What a function over a range outputs for one series: a float or a histogram, or nothing.
pub(crate) type RangeOut = Option<(f64, Option<Arc<Histogram>>)>;

/// Evaluate `f` if it is a function over a range vector, handing each output series to
/// `out` (labels, value, histogram when the result is one, name to be dropped); false if `f`
/// is another kind of function.
pub(crate) fn range_call(
    ctx: &Ctx,
    f: Func,
    args: &[Node],
    s: Step,
    out: &mut ElemSink<'_>,
) -> Result<bool, EvalError> {
    use Func as F;
    match f {
        F::Rate
        | F::Irate
        | F::Increase
        | F::Delta
        | F::Idelta
        | F::Deriv
        | F::Resets
        | F::Changes
        | F::AvgOverTime
        | F::MinOverTime
        | F::MaxOverTime
        | F::SumOverTime
        | F::CountOverTime
        | F::StddevOverTime
        | F::StdvarOverTime
        | F::LastOverTime
        | F::FirstOverTime
        | F::PresentOverTime
        | F::MadOverTime
        | F::TsOfFirstOverTime
        | F::TsOfLastOverTime
        | F::TsOfMinOverTime
        | F::TsOfMaxOverTime => over_series(ctx, f, arg(args, 0, f)?, s, out, |w, samples, hs| {
            if !hs.is_empty() {
                return native_eval::range_value(f, w, samples, hs);
            }
            let v = match f {
                F::Rate => over_time::extrapolated_rate(samples, w, true, true),
                F::Increase => over_time::extrapolated_rate(samples, w, true, false),
                F::Delta => over_time::extrapolated_rate(samples, w, false, false),
                F::Irate => over_time::instant_value(samples, true),
                F::Idelta => over_time::instant_value(samples, false),
                F::Deriv => over_time::deriv(samples),
                F::Resets => Some(over_time::resets(samples)),
                F::Changes => Some(over_time::changes(samples)),
                F::AvgOverTime => Some(over_time::avg(samples)),
                F::MinOverTime => Some(over_time::min(samples)),
                F::MaxOverTime => Some(over_time::max(samples)),
                F::SumOverTime => Some(over_time::sum(samples)),
                F::CountOverTime => Some(samples.len() as f64),
                F::StddevOverTime => Some(over_time::stdvar(samples).sqrt()),
                F::StdvarOverTime => Some(over_time::stdvar(samples)),
                F::LastOverTime => samples.last().map(|p| p.v),
                F::FirstOverTime => samples.first().map(|p| p.v),
                F::PresentOverTime => Some(1.0),
                F::MadOverTime => Some(over_time::mad(samples)),
                F::TsOfFirstOverTime => samples.first().map(|p| p.t as f64 / 1000.0),
                F::TsOfLastOverTime => samples.last().map(|p| p.t as f64 / 1000.0),
                F::TsOfMinOverTime => Some(over_time::ts_of_extreme(samples, false)),
                F::TsOfMaxOverTime => Some(over_time::ts_of_extreme(samples, true)),
                _ => None,
            };
            v.map(|v| (v, None))
        })?,
        F::QuantileOverTime => {
            let q = ctx.scalar(arg(args, 0, f)?, s)?;
            // Histograms are left out (with an info in Prometheus).
            over_series(ctx, f, arg(args, 1, f)?, s, out, |_, p, _| {
                (!p.is_empty()).then(|| (over_time::quantile_of(q, p), None))
            })?
        }
        F::PredictLinear => {
            let d = ctx.scalar(arg(args, 1, f)?, s)?;
            over_series(ctx, f, arg(args, 0, f)?, s, out, |_, p, _| {
                over_time::predict_linear(p, s.t, d).map(|v| (v, None))
            })?
        }
        F::DoubleExponentialSmoothing => {
            let sf = ctx.scalar(arg(args, 1, f)?, s)?;
            let tf = ctx.scalar(arg(args, 2, f)?, s)?;
            if sf <= 0.0 || sf >= 1.0 || sf.is_nan() {
                return Err(err(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                )));
            }
            if tf <= 0.0 || tf >= 1.0 || tf.is_nan() {
                return Err(err(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                )));
            }
            over_series(ctx, f, arg(args, 0, f)?, s, out, |_, p, _| {
                over_time::double_exponential_smoothing(p, sf, tf).map(|v| (v, None))
            })?
        }
        _ => return Ok(false),
    }
    Ok(true)
}

pub(crate) fn call(ctx: &Ctx, f: Func, args: &[Node], s: Step) -> Result<Val, EvalError> {
    use Func as F;
    let mut v = Vec::new();
    let handled = range_call(ctx, f, args, s, &mut |labels, x, h, drop_name| {
        v.push(Elem {
            h: h.cloned(),
            labels: labels.clone(),
            v: x,
            drop_name,
        })
    })?;
    if handled {
        return Ok(Val::Vector(v));
    }
    match f {
        F::AbsentOverTime => {
            let n = arg(args, 0, f)?;
            let mut empty = true;
            ctx.for_each_range(n, s, &mut |_, _, _, _, _| empty = false)?;
            Ok(absent(empty, n))
        }
        F::Absent => {
            let n = arg(args, 0, f)?;
            let v = ctx.vector_any(n, s)?;
            Ok(absent(v.is_empty(), n))
        }
        F::Abs => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::abs)),
        F::Ceil => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::ceil)),
        F::Floor => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::floor)),
        F::Exp => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::exp)),
        F::Ln => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::ln)),
        F::Log2 => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::log2)),
        F::Log10 => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::log10)),
        F::Sqrt => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::sqrt)),
        F::Sgn => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, |v| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        })),
        F::Deg => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, |v| {
            v * 180.0 / std::f64::consts::PI
        })),
        F::Rad => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, |v| {
            v * std::f64::consts::PI / 180.0
        })),
        F::Acos => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::acos)),
        F::Acosh => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::acosh)),
        F::Asin => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::asin)),
        F::Asinh => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::asinh)),
        F::Atan => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::atan)),
        F::Atanh => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::atanh)),
        F::Cos => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::cos)),
        F::Cosh => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::cosh)),
        F::Sin => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::sin)),
        F::Sinh => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::sinh)),
        F::Tan => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::tan)),
        F::Tanh => Ok(map_values(ctx.vector_any(arg(args, 0, f)?, s)?, f64::tanh)),
        F::Round => {
            let v = ctx.vector_any(arg(args, 0, f)?, s)?;
            let to = match args.get(1) {
                Some(n) => ctx.scalar(n, s)?,
                None => 1.0,
            };
            let inv = 1.0 / to;
            Ok(map_values(v, |x| (x * inv + 0.5).floor() / inv))
        }
        F::Clamp => {
            let v = ctx.vector_any(arg(args, 0, f)?, s)?;
            let lo = ctx.scalar(arg(args, 1, f)?, s)?;
            let hi = ctx.scalar(arg(args, 2, f)?, s)?;
            if hi < lo {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(map_values(v, |x| go_max(lo, go_min(hi, x))))
        }
        F::ClampMin => {
            let v = ctx.vector_any(arg(args, 0, f)?, s)?;
            let lo = ctx.scalar(arg(args, 1, f)?, s)?;
            Ok(map_values(v, |x| go_max(lo, x)))
        }
        F::ClampMax => {
            let v = ctx.vector_any(arg(args, 0, f)?, s)?;
            let hi = ctx.scalar(arg(args, 1, f)?, s)?;
            Ok(map_values(v, |x| go_min(hi, x)))
        }
        F::Timestamp => timestamp(ctx, arg(args, 0, f)?, s),
        F::Time => Ok(Val::Scalar(s.t as f64 / 1000.0)),
        F::Pi => Ok(Val::Scalar(std::f64::consts::PI)),
        F::MinOf | F::MaxOf => {
            let a = ctx.scalar(arg(args, 0, f)?, s)?;
            let b = ctx.scalar(arg(args, 1, f)?, s)?;
            Ok(Val::Scalar(if f == F::MinOf {
                go_min(a, b)
            } else {
                go_max(a, b)
            }))
        }
        F::Start => Ok(Val::Scalar(ctx.query_start as f64 / 1000.0)),
        F::End => Ok(Val::Scalar(ctx.query_end as f64 / 1000.0)),
        F::Step => Ok(Val::Scalar(ctx.query_step as f64 / 1000.0)),
        F::Range => Ok(Val::Scalar(
            (ctx.query_end - ctx.query_start) as f64 / 1000.0,
        )),
        F::Vector => Ok(Val::Vector(vec![Elem {
            h: None,
            labels: Labels::new(),
            v: ctx.scalar(arg(args, 0, f)?, s)?,
            drop_name: false,
        }])),
        F::Scalar => {
            // Histograms are ignored: the one float, else NaN.
            let v = ctx.vector_any(arg(args, 0, f)?, s)?;
            let mut floats = v.iter().filter(|e| e.h.is_none());
            Ok(Val::Scalar(match (floats.next(), floats.next()) {
                (Some(e), None) => e.v,
                _ => f64::NAN,
            }))
        }
        F::Minute
        | F::Hour
        | F::DayOfWeek
        | F::DayOfMonth
        | F::DayOfYear
        | F::Month
        | F::Year
        | F::DaysInMonth => {
            let v = match args.first() {
                Some(n) => ctx.vector_any(n, s)?,
                None => vec![Elem {
                    h: None,
                    labels: Labels::new(),
                    v: s.t as f64 / 1000.0,
                    drop_name: false,
                }],
            };
            let mut out = Vec::with_capacity(v.len());
            // Histograms are ignored (`dateWrapper`).
            for mut e in v.into_iter().filter(|e| e.h.is_none()) {
                // Go converts these to an undefined instant; a NaN says as much.
                e.v = if e.v.is_nan() || e.v.is_infinite() {
                    f64::NAN
                } else {
                    date_part(f, e.v)
                };
                e.drop_name = true;
                out.push(e);
            }
            Ok(Val::Vector(out))
        }
        F::LabelReplace => {
            let v = ctx.vector_any(arg(args, 0, f)?, s)?;
            let dst = string_arg(ctx, args, 1, f, s)?;
            let repl = string_arg(ctx, args, 2, f, s)?;
            let src = string_arg(ctx, args, 3, f, s)?;
            let Node::Regex { re, .. } = arg(args, 4, f)? else {
                return Err(err("label_replace needs a literal regular expression"));
            };
            labels::label_replace(v, &dst, &repl, &src, re).map(Val::Vector)
        }
        F::LabelJoin => {
            let v = ctx.vector_any(arg(args, 0, f)?, s)?;
            let dst = string_arg(ctx, args, 1, f, s)?;
            let sep = string_arg(ctx, args, 2, f, s)?;
            let mut srcs = Vec::new();
            for i in 3..args.len() {
                srcs.push(string_arg(ctx, args, i, f, s)?);
            }
            labels::label_join(v, &dst, &sep, &srcs).map(Val::Vector)
        }
        F::Sort | F::SortDesc => {
            // Histograms are left out (`filterFloats`).
            let mut v = ctx.vector_any(arg(args, 0, f)?, s)?;
            v.retain(|e| e.h.is_none());
            labels::sort_by_value(&mut v, f == F::SortDesc);
            Ok(Val::Vector(v))
        }
        F::SortByLabel | F::SortByLabelDesc => {
            let mut v = ctx.vector_any(arg(args, 0, f)?, s)?;
            let mut names = Vec::new();
            for i in 1..args.len() {
                names.push(string_arg(ctx, args, i, f, s)?);
            }
            labels::sort_by_label(&mut v, &names, f == F::SortByLabelDesc);
            Ok(Val::Vector(v))
        }
        F::HistogramQuantile => {
            let q = ctx.scalar(arg(args, 0, f)?, s)?;
            let v = ctx.vector(arg(args, 1, f)?, s)?;
            Ok(Val::Vector(histogram::histogram_quantile(q, v)))
        }
        _ => Err(err(format!("{} over a range vector", f.name()))),
    }
}

/// Apply `value` to every series of a range-vector argument (its floats and histograms);
/// functions other than `last_over_time` and `first_over_time` flag the name for removal.
fn over_series(
    ctx: &Ctx,
    f: Func,
    n: &Node,
    s: Step,
    out: &mut ElemSink<'_>,
    value: impl Fn(&Bounds, &[Sample], &[HistogramSample]) -> RangeOut,
) -> Result<(), EvalError> {
    let keeps_name = matches!(f, Func::LastOverTime | Func::FirstOverTime);
    ctx.for_each_range(n, s, &mut |b, labels, samples, hs, drop_name| {
        if let Some((v, h)) = value(b, samples, hs) {
            out(labels, v, h.as_ref(), drop_name || !keeps_name);
        }
    })
}

/// `absent` and `absent_over_time`: one series when the argument is empty, labelled from the
/// argument's equality matchers when it is a selector (`createLabelsForAbsentFunction`).
fn absent(empty: bool, n: &Node) -> Val {
    if !empty {
        return Val::Vector(Vec::new());
    }
    let sel = match n {
        Node::Vector(sel) | Node::Matrix { sel, .. } => Some(sel),
        Node::StepInvariant(inner) => match inner.as_ref() {
            Node::Vector(sel) | Node::Matrix { sel, .. } => Some(sel),
            _ => None,
        },
        _ => None,
    };
    let mut labels = Labels::new();
    if let Some(sel) = sel {
        let mut has: Vec<&str> = Vec::new();
        for m in &sel.matchers.matchers {
            if m.name == "__name__" {
                continue;
            }
            let eq = matches!(m.op, promql_parser::label::MatchOp::Equal);
            if eq && !has.contains(&m.name.as_str()) {
                super::eval::set(&mut labels, &m.name, &m.value);
                has.push(&m.name);
            } else {
                super::eval::set(&mut labels, &m.name, "");
            }
        }
    }
    Val::Vector(vec![Elem {
        h: None,
        labels,
        v: 1.0,
        drop_name: false,
    }])
}

/// `timestamp()`: of a plain selector, the timestamps of the samples it selected; otherwise
/// the evaluation time.
fn timestamp(ctx: &Ctx, n: &Node, s: Step) -> Result<Val, EvalError> {
    let (sel, t) = match n {
        Node::Vector(sel) => (Some(sel), s.t),
        Node::StepInvariant(inner) => match inner.as_ref() {
            Node::Vector(sel) => (Some(sel), s.range_start),
            _ => (None, s.t),
        },
        _ => (None, s.t),
    };
    if let Some(sel) = sel {
        let mut ts = Vec::new();
        let mut v = ctx.instant_selector(sel, t, |t| ts.push(t))?;
        for (e, t) in v.iter_mut().zip(ts) {
            e.v = t as f64 / 1000.0;
            e.drop_name = true;
            e.h = None;
        }
        return Ok(Val::Vector(v));
    }
    // Of any other expression, every element (histograms too) has the evaluation time.
    let mut v = ctx.vector_any(n, s)?;
    for e in &mut v {
        e.v = s.t as f64 / 1000.0;
        e.h = None;
        e.drop_name = true;
    }
    Ok(Val::Vector(v))
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// The UTC date field of a Unix time in seconds (Go truncates the float to whole seconds).
fn date_part(f: Func, secs: f64) -> f64 {
    let secs = secs.clamp(-1e15, 1e15) as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match f {
        Func::Minute => ((sod / 60) % 60) as f64,
        Func::Hour => (sod / 3600) as f64,
        // 1970-01-01 was a Thursday.
        Func::DayOfWeek => (days + 4).rem_euclid(7) as f64,
        Func::DayOfMonth => d as f64,
        Func::DayOfYear => {
            let before: u32 = (1..m).map(|mm| days_in_month(y, mm)).sum();
            (before + d) as f64
        }
        Func::Month => m as f64,
        Func::Year => y as f64,
        Func::DaysInMonth => days_in_month(y, m) as f64,
        _ => f64::NAN,
    }
}
