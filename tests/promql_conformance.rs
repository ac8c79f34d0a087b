//! Prometheus's own PromQL test scripts, run against cardguard's rule engine.
//!
//! Reads every `*.test` file in `$PROMQL_TESTDATA` (default `testdata/promql`, the copy kept in
//! this repository; the format is described in `FORMAT.upstream.md` there), and separately
//! cardguard's own cases in `testdata/promql-cases`, and runs the
//! script language: `load` (with the `a+bxN`, `a-bxN`, `axN`, `_`, `_xN` and `stale` value
//! syntax), `clear`, `eval instant at` and `eval range from .. to .. step ..` (a range query is
//! a series of instant evaluations assembled into a matrix, with `@ start()`/`@ end()` and
//! step-invariant subexpressions as Prometheus evaluates them), the `expect` lines and the
//! deprecated `eval_fail`/`eval_warn`/`eval_info`/`eval_ordered`/`expected_fail_*` forms.
//!
//! Results are compared as promqltest does: series sets equal (in order with `expect
//! ordered`), floats with `almost.Equal` at epsilon 1e-6, NaN equal to NaN.
//!
//! The engine computes no annotations, so `expect warn`/`info`/`no_warn`/`no_info` (and
//! `eval_warn`/`eval_info`) compare only the result; `expect fail` must really fail, and its
//! `msg:`/`regex:` must match the engine's error.
//!
//! `load_with_nhcb` also loads each classic histogram (`_bucket`/`_count`/`_sum` series) as a
//! native histogram with custom buckets, as promqltest does (`nhcb.rs`).
//!
//! Native histograms (`{{...}}`) are loaded and compared as promqltest does (schema, count,
//! sum, zero bucket, spans and buckets at epsilon 1e-6; the counter reset hint only when the
//! expected histogram spells it out). Loaded histograms get the hints Prometheus's TSDB gives
//! them on the way back from its chunks: `gauge` as written, otherwise the first of a run
//! `unknown`, then `reset` or `not_reset` from the values.
//!
//! A case is **unsupported** (counted, never passed) when its expression is refused with
//! `CompileError::Unsupported`, or when the evaluation meets a native histogram in an
//! operation the engine refuses over them (`EvalError::Unsupported`). Every other case must
//! pass; the test prints per-file counts, every failure, and one final line
//! `promql conformance: N passed, M failed, K unsupported`, and asserts M == 0. The
//! unsupported cases are summed up by reason; `PROMQL_SHOW_UNSUPPORTED=1` lists each.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cardguard::rules::promql::testing::MemStorage;
use std::sync::Arc;

use cardguard::rules::promql::{
    almost_equal, pairs, CompileError, Compiled, EvalError, Histogram, HistogramSample, Labels,
    Point as Got, ResetHint, Sample, Span, Value, STALE_NAN_BITS,
};

#[path = "promql_conformance/nhcb.rs"]
mod nhcb;
#[path = "promql_conformance/script.rs"]
mod script;

use script::{
    lines, parse_eval, parse_labels, parse_points, parse_time, split_series, words, Expect,
    Expected, Point, Query,
};

const EPSILON: f64 = 1e-6;

#[derive(Default, Clone, Copy)]
struct CaseCounts {
    passed: usize,
    failed: usize,
    unsupported: usize,
}

enum Outcome {
    Pass,
    Fail(String),
    Unsupported(String),
}

#[derive(Default)]
struct Script {
    storage: MemStorage,
}

#[test]
fn promql_conformance() {
    let dir = std::env::var_os("PROMQL_TESTDATA")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/promql"));
    let total = run_dir(&dir, "promql conformance");
    assert_eq!(
        total.failed, 0,
        "PromQL conformance failures (listed above)"
    );
}

/// cardguard's own cases in the same script language (`testdata/promql-cases`): the
/// constructs Prometheus's scripts cover only together with native histograms, or not at all.
#[test]
fn promql_own_cases() {
    let total = run_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/promql-cases"),
        "promql own cases",
    );
    assert_eq!(total.failed, 0, "promql own cases: failures (listed above)");
}

/// cardguard's own cases (`testdata/promql-cardguard`): every one must pass, none may be
/// unsupported.
#[test]
fn cardguard_promql_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/promql-cardguard");
    let total = run_dir(&dir, "promql cardguard cases");
    assert_eq!((total.failed, total.unsupported), (0, 0), "listed above");
}

/// Run every `*.test` file of `dir`, print the report, return the counts.
fn run_dir(dir: &Path, title: &str) -> CaseCounts {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("PROMQL_TESTDATA {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test files in {}", dir.display());

    let mut total = CaseCounts::default();
    let mut report = String::new();
    let mut failures = String::new();
    let mut unsupported = String::new();
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let mut c = CaseCounts::default();
        for (line, expr, outcome) in run_script(&text) {
            match outcome {
                Outcome::Pass => c.passed += 1,
                Outcome::Fail(why) => {
                    c.failed += 1;
                    let _ = writeln!(failures, "FAIL {name}:{line}: {expr}\n    {why}");
                }
                Outcome::Unsupported(why) => {
                    c.unsupported += 1;
                    let _ = writeln!(unsupported, "  {name}:{line}: {why}");
                    *reasons.entry(why).or_default() += 1;
                }
            }
        }
        let _ = writeln!(
            report,
            "{name}: {} passed, {} failed, {} unsupported",
            c.passed, c.failed, c.unsupported
        );
        total.passed += c.passed;
        total.failed += c.failed;
        total.unsupported += c.unsupported;
    }
    if std::env::var_os("PROMQL_SHOW_UNSUPPORTED").is_some() {
        println!("unsupported cases:\n{unsupported}");
    }
    print!("{failures}");
    print!("{report}");
    for (why, n) in &reasons {
        println!("unsupported ({n}): {why}");
    }
    println!(
        "{title}: {} passed, {} failed, {} unsupported",
        total.passed, total.failed, total.unsupported
    );
    total
}

fn run_script(text: &str) -> Vec<(usize, String, Outcome)> {
    let ls = lines(text);
    let mut out = Vec::new();
    let mut script = Script::default();
    let mut i = 0;
    while i < ls.len() {
        let l = ls[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let cmd = l.split_whitespace().next().unwrap_or("");
        let mut j = i + 1;
        // `clear` is one line; the other commands take the lines up to a blank one.
        while cmd != "clear" && j < ls.len() && !ls[j].is_empty() {
            j += 1;
        }
        let body = &ls[i + 1..j];
        match cmd {
            "clear" => script = Script::default(),
            "load" | "load_with_nhcb" => {
                if let Err(e) = script.load(l, body, cmd == "load_with_nhcb") {
                    panic!("line {}: bad load: {e}", i + 1);
                }
            }
            c if c.starts_with("eval") => {
                let (expr, outcome) = match parse_eval(l, body) {
                    Ok((expr, q, exp)) => {
                        let o = script.eval(&expr, &q, &exp);
                        (expr, o)
                    }
                    Err(e) => (l.to_string(), Outcome::Unsupported(format!("script: {e}"))),
                };
                out.push((i + 1, expr, outcome));
            }
            other => panic!("line {}: unknown command {other:?}", i + 1),
        }
        i = j.max(i + 1);
    }
    out
}

/// The counter reset hint Prometheus's TSDB gives a histogram on the way back from its
/// chunks: `gauge` as written, otherwise `unknown` for the first of a run, then `reset` or
/// `not_reset` from the values.
fn tsdb_hint(h: &Histogram, prev: Option<&Histogram>) -> ResetHint {
    if h.hint == ResetHint::Gauge {
        return ResetHint::Gauge;
    }
    let mut h = h.clone();
    h.hint = ResetHint::Unknown;
    match prev {
        None => ResetHint::Unknown,
        Some(p) if h.detect_reset(p) => ResetHint::Reset,
        Some(_) => ResetHint::NotReset,
    }
}

fn fmt_labels(l: &Labels) -> String {
    let inner: Vec<String> = l.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

impl Script {
    fn load(&mut self, head: &str, body: &[&str], nhcb: bool) -> Result<(), String> {
        let padded = format!("{head} ");
        let (w, _) = words(&padded, 2).ok_or("bad load line")?;
        let step = parse_time(w[1])?;
        // The classic histogram series `load_with_nhcb` also loads as native histograms.
        let mut classic: Vec<(Labels, Vec<Sample>)> = Vec::new();
        for l in body {
            let (desc, vals) = split_series(l);
            let labels = parse_labels(desc)?;
            let mut samples = Vec::new();
            let mut histograms: Vec<HistogramSample> = Vec::new();
            // The previous histogram of the current chunk, for the hints TSDB gives.
            let mut prev: Option<Arc<Histogram>> = None;
            for (i, p) in parse_points(vals)?.into_iter().enumerate() {
                let t = i as i64 * step;
                match p {
                    Point::Value(v) => {
                        prev = None;
                        samples.push(Sample { t, v })
                    }
                    Point::Stale => {
                        prev = None;
                        samples.push(Sample {
                            t,
                            v: f64::from_bits(STALE_NAN_BITS),
                        })
                    }
                    Point::Omitted => {}
                    Point::Histogram(h, _) => {
                        let mut h = (*h).clone();
                        h.hint = tsdb_hint(&h, prev.as_deref());
                        let h = Arc::new(h);
                        prev = Some(h.clone());
                        histograms.push(HistogramSample { t, h });
                    }
                }
            }
            if nhcb {
                classic.push((labels.clone(), samples.clone()));
            }
            if !histograms.is_empty() {
                self.storage.add_histograms(labels.clone(), &histograms);
            }
            self.storage.add(labels, &samples);
        }
        for (labels, hs) in nhcb::derive(&classic)? {
            let mut prev: Option<Arc<Histogram>> = None;
            let hs: Vec<HistogramSample> = hs
                .into_iter()
                .map(|(t, mut h)| {
                    h.hint = tsdb_hint(&h, prev.as_deref());
                    let h = Arc::new(h);
                    prev = Some(h.clone());
                    HistogramSample { t, h }
                })
                .collect();
            self.storage.add_histograms(labels, &hs);
        }
        Ok(())
    }

    fn eval(&self, expr: &str, q: &Query, exp: &Expect) -> Outcome {
        let compiled = match q {
            Query::Instant(_) => Compiled::new(expr),
            Query::Range { start, end, step } => {
                Compiled::for_range_query(expr, *start, *end, *step)
            }
        };
        let c = match compiled {
            Ok(c) => c,
            Err(CompileError::Unsupported(m)) => return Outcome::Unsupported(m),
            Err(e @ CompileError::Parse(_)) => return check_error(&e.to_string(), exp),
        };
        let got = match q {
            Query::Instant(t) => c.eval(&self.storage, *t).map(Evaluated::from),
            Query::Range { start, end, step } => {
                range_query(&c, &self.storage, *start, *end, *step)
            }
        };
        match got {
            Err(EvalError::Unsupported(m)) => Outcome::Unsupported(m),
            Err(e) => check_error(&e.to_string(), exp),
            Ok(v) if exp.fail => Outcome::Fail(format!("expected an error, got {v:?}")),
            Ok(v) => match compare(&v, q, exp) {
                Ok(()) => Outcome::Pass,
                Err(why) => Outcome::Fail(why),
            },
        }
    }
}

/// A result in one shape for comparison.
#[derive(Debug)]
enum Evaluated {
    Scalar(f64),
    Str(String),
    Vector(Vec<(Labels, Got)>),
    Matrix(Vec<(Labels, Vec<(i64, Got)>)>),
}

impl From<Value> for Evaluated {
    fn from(v: Value) -> Self {
        match v {
            Value::Scalar(f) => Evaluated::Scalar(f),
            Value::String(s) => Evaluated::Str(s),
            Value::Vector(v) => {
                Evaluated::Vector(v.into_iter().map(|(l, f)| (l, Got::Float(f))).collect())
            }
            Value::Mixed(v) => Evaluated::Vector(v),
            Value::Matrix(m) => Evaluated::Matrix(
                m.into_iter()
                    .map(|(l, ps)| (l, ps.into_iter().map(|p| (p.t, Got::Float(p.v))).collect()))
                    .collect(),
            ),
            Value::MixedMatrix(m) => Evaluated::Matrix(
                m.into_iter()
                    .map(|(l, fs, hs)| {
                        let mut ps: Vec<(i64, Got)> =
                            fs.into_iter().map(|p| (p.t, Got::Float(p.v))).collect();
                        ps.extend(hs.into_iter().map(|h| (h.t, Got::Histogram(h.h))));
                        ps.sort_by_key(|p| p.0);
                        (l, ps)
                    })
                    .collect(),
            ),
        }
    }
}

fn check_error(msg: &str, exp: &Expect) -> Outcome {
    if std::env::var_os("PROMQL_SHOW_ERRORS").is_some() {
        println!("error: {msg}");
    }
    if !exp.fail {
        return Outcome::Fail(format!("unexpected error: {msg}"));
    }
    if let Some(m) = &exp.fail_msg {
        if m != msg {
            return Outcome::Fail(format!("error {msg:?}, expected message {m:?}"));
        }
    }
    if let Some(r) = &exp.fail_regex {
        match regex::Regex::new(r) {
            Ok(re) if re.is_match(msg) => {}
            _ => return Outcome::Fail(format!("error {msg:?} does not match {r:?}")),
        }
    }
    Outcome::Pass
}

fn range_query(
    c: &Compiled,
    s: &MemStorage,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Evaluated, EvalError> {
    let mut series: Vec<(Labels, Vec<(i64, Got)>)> = Vec::new();
    let mut t = start;
    while t <= end {
        match c.eval_range_step(s, t, start, end, step)? {
            Value::Scalar(v) => push_point(&mut series, Labels::new(), t, Got::Float(v)),
            Value::Vector(v) => {
                for (l, v) in v {
                    push_point(&mut series, l, t, Got::Float(v));
                }
            }
            Value::Mixed(v) => {
                for (l, p) in v {
                    push_point(&mut series, l, t, p);
                }
            }
            other => return Err(EvalError::Runtime(format!("range query over {other:?}"))),
        }
        if step <= 0 {
            break;
        }
        t += step;
    }
    Ok(Evaluated::Matrix(series))
}

fn push_point(series: &mut Vec<(Labels, Vec<(i64, Got)>)>, l: Labels, t: i64, p: Got) {
    match series.iter_mut().find(|(x, _)| *x == l) {
        Some((_, ps)) => ps.push((t, p)),
        None => series.push((l, vec![(t, p)])),
    }
}

fn same(a: f64, b: f64) -> bool {
    almost_equal(a, b, EPSILON)
}

/// promqltest's `compareNativeHistogram`, of both histograms compacted (`Compact(0)`) first
/// as promqltest does.
fn same_histogram(exp: &Histogram, hint_set: bool, got: &Histogram) -> bool {
    let (mut exp, mut got) = (exp.clone(), got.clone());
    exp.compact();
    got.compact();
    let (exp, got) = (&exp, &got);
    let spans_match = |a: &[Span], ac: &[f64], b: &[Span], bc: &[f64]| {
        // Spans compared after dropping empty ones, as promqltest's `spansMatch` does.
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
        norm(a) == norm(b)
            && ac.len() == bc.len()
            && ac.iter().zip(bc).all(|(x, y)| same(*x, *y))
            && pairs(a, ac).len() == pairs(b, bc).len()
    };
    exp.schema == got.schema
        && same(exp.count, got.count)
        && same(exp.sum, got.sum)
        && (exp.schema != -53 || exp.custom_values[..] == got.custom_values[..])
        && exp.zero_threshold == got.zero_threshold
        && same(exp.zero_count, got.zero_count)
        && spans_match(
            &exp.negative_spans,
            &exp.negative,
            &got.negative_spans,
            &got.negative,
        )
        && spans_match(
            &exp.positive_spans,
            &exp.positive,
            &got.positive_spans,
            &got.positive,
        )
        && (!hint_set || exp.hint == got.hint)
}

fn same_point(exp: &Point, got: &Got) -> bool {
    match (exp, got) {
        (Point::Value(x), Got::Float(y)) => same(*x, *y),
        (Point::Histogram(e, hint_set), Got::Histogram(g)) => same_histogram(e, *hint_set, g),
        _ => false,
    }
}

fn compare(v: &Evaluated, q: &Query, exp: &Expect) -> Result<(), String> {
    match v {
        Evaluated::Str(s) => match &exp.string {
            Some(e) if e == s => Ok(()),
            other => Err(format!("got string {s:?}, expected {other:?}")),
        },
        Evaluated::Scalar(f) => match exp.results.as_slice() {
            [e] if e.points.len() == 1 => match e.points[0] {
                Point::Value(x) if same(x, *f) => Ok(()),
                _ => Err(format!("got scalar {f}, expected {:?}", e.points)),
            },
            _ => Err(format!("got scalar {f}, expected {:?}", exp.results)),
        },
        Evaluated::Vector(got) => {
            if exp.results.len() != got.len() {
                return Err(format!(
                    "got {} series, expected {}:\n    got {}\n    expected {}",
                    got.len(),
                    exp.results.len(),
                    fmt_vector(got),
                    fmt_expected(&exp.results)
                ));
            }
            for (i, e) in exp.results.iter().enumerate() {
                let want = match e.points.as_slice() {
                    [p @ (Point::Value(_) | Point::Histogram(..))] => p,
                    other => return Err(format!("expected one value per series, got {other:?}")),
                };
                let found = if exp.ordered {
                    got.get(i).filter(|g| g.0 == e.labels)
                } else {
                    got.iter().find(|g| g.0 == e.labels)
                };
                match found {
                    Some((_, v)) if same_point(want, v) => {}
                    Some((_, v)) => {
                        return Err(format!(
                            "{}: got {v:?}, expected {want:?}",
                            fmt_labels(&e.labels)
                        ))
                    }
                    None => {
                        return Err(format!(
                            "{} not in the result{}:\n    got {}",
                            fmt_labels(&e.labels),
                            if exp.ordered { " at its position" } else { "" },
                            fmt_vector(got)
                        ))
                    }
                }
            }
            Ok(())
        }
        Evaluated::Matrix(got) => {
            let (start, step) = match (q, exp.range_vector) {
                (Query::Range { start, step, .. }, _) => (*start, *step),
                (Query::Instant(_), Some((from, _, step))) => (from, step),
                (Query::Instant(_), None) => (0, 0),
            };
            let mut nonempty = 0;
            for e in &exp.results {
                let want: Vec<(i64, &Point)> = e
                    .points
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| matches!(p, Point::Value(_) | Point::Histogram(..)))
                    .map(|(i, p)| (start + i as i64 * step, p))
                    .collect();
                if want.is_empty() {
                    continue;
                }
                nonempty += 1;
                let Some((_, ps)) = got.iter().find(|g| g.0 == e.labels) else {
                    return Err(format!(
                        "{} not in the result: got {}",
                        fmt_labels(&e.labels),
                        fmt_matrix(got)
                    ));
                };
                let ok = ps.len() == want.len()
                    && ps
                        .iter()
                        .zip(&want)
                        .all(|((pt, pv), (t, v))| (step == 0 || pt == t) && same_point(v, pv));
                if !ok {
                    return Err(format!(
                        "{}: got {ps:?}, expected {want:?}",
                        fmt_labels(&e.labels)
                    ));
                }
            }
            if nonempty != got.len() {
                return Err(format!(
                    "got {} series, expected {nonempty}: got {}",
                    got.len(),
                    fmt_matrix(got)
                ));
            }
            Ok(())
        }
    }
}

fn fmt_vector(v: &[(Labels, Got)]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|(l, v)| format!("{} {v:?}", fmt_labels(l)))
        .collect();
    items.join(", ")
}

fn fmt_matrix(m: &[(Labels, Vec<(i64, Got)>)]) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(l, ps)| {
            let pts: Vec<String> = ps.iter().map(|(t, p)| format!("{p:?}@{t}")).collect();
            format!("{} [{}]", fmt_labels(l), pts.join(" "))
        })
        .collect();
    items.join(", ")
}

fn fmt_expected(e: &[Expected]) -> String {
    let items: Vec<String> = e
        .iter()
        .map(|x| format!("{} {:?}", fmt_labels(&x.labels), x.points))
        .collect();
    items.join(", ")
}
