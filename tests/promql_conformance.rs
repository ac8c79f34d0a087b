//! Prometheus's own PromQL test scripts, run against cardguard's rule engine.
//!
//! Reads every `*.test` file in `$PROMQL_TESTDATA` (default `../shared/testdata/promql` from
//! the repository root; the format is described in `FORMAT.upstream.md` there) and runs the
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
//! A case is **unsupported** (counted, never passed) when its expression is refused with
//! `CompileError::Unsupported`, when it reads native-histogram data (`{{...}}` loads, the
//! histograms `load_with_nhcb` derives) or expects native histograms. Every other case must
//! pass; the test prints per-file counts, every failure, and one final line
//! `promql conformance: N passed, M failed, K unsupported`, and asserts M == 0.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cardguard::rules::promql::testing::MemStorage;
use cardguard::rules::promql::{
    almost_equal, matches, CompileError, Compiled, Labels, Sample, Value, STALE_NAN_BITS,
};

const EPSILON: f64 = 1e-6;

#[derive(Default, Clone, Copy)]
struct Counts {
    passed: usize,
    failed: usize,
    unsupported: usize,
}

enum Outcome {
    Pass,
    Fail(String),
    Unsupported(String),
}

/// One value of a series description: a float, a stale marker, or nothing at that step.
#[derive(Debug, Clone, Copy)]
enum Point {
    Value(f64),
    Stale,
    Omitted,
    /// A native histogram sample (not loaded: the engine reads floats only).
    Histogram,
}

#[derive(Debug)]
struct Expected {
    labels: Labels,
    points: Vec<Point>,
}

#[derive(Default)]
struct Expect {
    fail: bool,
    fail_msg: Option<String>,
    fail_regex: Option<String>,
    ordered: bool,
    string: Option<String>,
    range_vector: Option<(i64, i64, i64)>,
    results: Vec<Expected>,
    histograms: bool,
}

enum Query {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

#[derive(Default)]
struct Script {
    storage: MemStorage,
    /// Series with native-histogram samples, and those samples' timestamps.
    native: Vec<(Labels, Vec<i64>)>,
}

#[test]
fn promql_conformance() {
    let dir = std::env::var_os("PROMQL_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/promql"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("PROMQL_TESTDATA {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test files in {}", dir.display());

    let mut total = Counts::default();
    let mut report = String::new();
    let mut failures = String::new();
    let mut unsupported = String::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let mut c = Counts::default();
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
    println!(
        "promql conformance: {} passed, {} failed, {} unsupported",
        total.passed, total.failed, total.unsupported
    );
    assert_eq!(
        total.failed, 0,
        "PromQL conformance failures (listed above)"
    );
}

/// promqltest's line handling: trimmed, comment lines blank (and so ending a block).
fn lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                ""
            } else {
                l
            }
        })
        .collect()
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

/// Split off `n` whitespace-separated words; returns them and the rest, trimmed.
fn words(s: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut rest = s.trim_start();
    let mut ws = Vec::new();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace)?;
        ws.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    Some((ws, rest.trim()))
}

/// A Prometheus duration (`1h30m`, `10s53ms`, `0s`) or a number of seconds, to ms.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(v) = s.parse::<f64>() {
        return Ok((v * 1000.0).round() as i64);
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut ms: i64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            u => return Err(format!("bad duration unit {u:?} in {s:?}")),
        };
        rest = &rest[unit_len..];
        ms += n * unit;
    }
    Ok(if neg { -ms } else { ms })
}

fn parse_eval(head: &str, body: &[&str]) -> Result<(String, Query, Expect), String> {
    let (w, _) = words(head, 2).ok_or("short eval line")?;
    let mut exp = Expect::default();
    match w[0] {
        "eval" | "eval_warn" | "eval_info" => {}
        "eval_fail" => exp.fail = true,
        "eval_ordered" => exp.ordered = true,
        other => return Err(format!("unknown command {other}")),
    }
    let (q, expr) = match w[1] {
        "instant" => {
            let (w, expr) = words(head, 4).ok_or("short eval instant line")?;
            if w[2] != "at" {
                return Err("expected `at`".into());
            }
            (Query::Instant(parse_time(w[3])?), expr)
        }
        "range" => {
            let (w, expr) = words(head, 8).ok_or("short eval range line")?;
            if w[2] != "from" || w[4] != "to" || w[6] != "step" {
                return Err("expected `from .. to .. step ..`".into());
            }
            let q = Query::Range {
                start: parse_time(w[3])?,
                end: parse_time(w[5])?,
                step: parse_time(w[7])?,
            };
            (q, expr)
        }
        other => return Err(format!("unknown eval kind {other}")),
    };
    for l in body {
        if let Some(rest) = l.strip_prefix("expected_fail_message") {
            exp.fail = true;
            exp.fail_msg = Some(rest.trim().to_string());
        } else if let Some(rest) = l.strip_prefix("expected_fail_regexp") {
            exp.fail = true;
            exp.fail_regex = Some(rest.trim().to_string());
        } else if let Some(rest) = l.strip_prefix("expect ") {
            parse_expect(rest.trim(), &mut exp)?;
        } else if l.contains("{{") {
            exp.histograms = true;
        } else {
            exp.results.push(parse_expected(l)?);
        }
    }
    Ok((expr.to_string(), q, exp))
}

fn parse_expect(s: &str, exp: &mut Expect) -> Result<(), String> {
    let (kind, rest) = match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    match kind {
        "fail" => {
            exp.fail = true;
            if let Some(m) = rest.strip_prefix("msg:") {
                exp.fail_msg = Some(unquote_opt(m.trim()));
            } else if let Some(r) = rest.strip_prefix("regex:") {
                exp.fail_regex = Some(unquote_opt(r.trim()));
            }
        }
        // The engine computes no annotations: only the result is compared.
        "warn" | "info" | "no_warn" | "no_info" => {}
        "ordered" => exp.ordered = true,
        "string" => exp.string = Some(unquote(rest)?),
        "range" => {
            let padded = format!("{rest} ");
            let (w, _) = words(&padded, 7).ok_or("bad expect range vector")?;
            if w[0] != "vector" || w[1] != "from" || w[3] != "to" || w[5] != "step" {
                return Err(format!("bad expect range vector: {rest}"));
            }
            exp.range_vector = Some((parse_time(w[2])?, parse_time(w[4])?, parse_time(w[6])?));
        }
        other => return Err(format!("unknown expect {other}")),
    }
    Ok(())
}

fn unquote_opt(s: &str) -> String {
    if s.len() >= 2 && (s.starts_with('"') || s.starts_with('`')) {
        unquote(s).unwrap_or_else(|_| s.to_string())
    } else {
        s.to_string()
    }
}

/// A Go-style quoted string: "..." with escapes, '...', or `...` raw.
fn unquote(s: &str) -> Result<String, String> {
    let q = s.chars().next().ok_or("empty string literal")?;
    if !matches!(q, '"' | '\'' | '`') || s.len() < 2 || !s.ends_with(q) {
        return Err(format!("not a quoted string: {s}"));
    }
    let inner = &s[1..s.len() - 1];
    if q == '`' {
        return Ok(inner.to_string());
    }
    let mut out = Vec::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            let mut b = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match it.next() {
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('r') => out.push(b'\r'),
            Some('\\') => out.push(b'\\'),
            Some('"') => out.push(b'"'),
            Some('\'') => out.push(b'\''),
            Some('x') => {
                let h: String = it.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&h, 16).map_err(|e| e.to_string())?);
            }
            Some(c) => {
                out.push(b'\\');
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
            None => out.push(b'\\'),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Split a series line into its description and its values.
fn split_series(l: &str) -> (&str, &str) {
    let brace = l.find('{');
    let space = l.find(char::is_whitespace);
    match (brace, space) {
        (Some(b), s) if s.is_none_or(|s| b < s) => {
            let mut quote: Option<char> = None;
            let mut esc = false;
            for (i, c) in l.char_indices().skip_while(|(i, _)| *i < b) {
                if let Some(q) = quote {
                    if esc {
                        esc = false;
                    } else if c == '\\' && q != '`' {
                        esc = true;
                    } else if c == q {
                        quote = None;
                    }
                    continue;
                }
                match c {
                    '"' | '\'' | '`' => quote = Some(c),
                    '}' => return (&l[..=i], l[i + 1..].trim()),
                    _ => {}
                }
            }
            (l, "")
        }
        (_, Some(s)) => (&l[..s], l[s..].trim()),
        (_, None) => (l, ""),
    }
}

/// `name{a="b", "c.d"="e"}` to sorted labels.
fn parse_labels(desc: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    let (name, rest) = match desc.find('{') {
        Some(i) => (desc[..i].trim(), Some(&desc[i + 1..])),
        None => (desc.trim(), None),
    };
    if !name.is_empty() {
        labels.push(("__name__".into(), name.into()));
    }
    if let Some(rest) = rest {
        let body = rest.strip_suffix('}').ok_or("unclosed {")?;
        let mut s = body.trim();
        while !s.is_empty() {
            let (key, after) = take_token(s)?;
            let after = after.trim_start();
            let after = after
                .strip_prefix('=')
                .ok_or(format!("expected = in {desc}"))?;
            let (val, after) = take_token(after.trim_start())?;
            if !key.is_empty() && (!val.is_empty() || key == "__name__") {
                labels.retain(|(n, _)| n != &key);
                labels.push((key, val));
            }
            s = after.trim_start();
            s = s.strip_prefix(',').unwrap_or(s).trim_start();
        }
    }
    labels.sort();
    Ok(labels)
}

/// A label name (bare or quoted) or a quoted value.
fn take_token(s: &str) -> Result<(String, &str), String> {
    let Some(q) = s.chars().next() else {
        return Err("unexpected end of labels".into());
    };
    if matches!(q, '"' | '\'' | '`') {
        let mut esc = false;
        for (i, c) in s.char_indices().skip(1) {
            if esc {
                esc = false;
            } else if c == '\\' && q != '`' {
                esc = true;
            } else if c == q {
                return Ok((unquote(&s[..=i])?, &s[i + 1..]));
            }
        }
        return Err(format!("unterminated string in {s}"));
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '.'))
        .unwrap_or(s.len());
    Ok((s[..end].to_string(), &s[end..]))
}

fn parse_float(s: &str) -> Result<f64, String> {
    let t = s.strip_prefix('+').unwrap_or(s);
    t.parse::<f64>().map_err(|e| format!("{s}: {e}"))
}

/// Whitespace-separated value tokens, a `{{...}}` histogram (with spaces inside) kept whole.
fn value_tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start: Option<usize> = None;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"{{") {
            depth += 1;
            start.get_or_insert(i);
            i += 2;
            continue;
        }
        if depth > 0 && b[i..].starts_with(b"}}") {
            depth -= 1;
            i += 2;
            continue;
        }
        if depth == 0 && b[i].is_ascii_whitespace() {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
        } else {
            start.get_or_insert(i);
        }
        i += 1;
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// The expanding value notation of `load` and of expected results.
fn parse_points(s: &str) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    for tok in value_tokens(s) {
        if tok.contains("{{") {
            // `{{..}}`, `{{..}}xN` or `{{..}}+{{..}}xN`.
            let tail = &tok[tok.rfind("}}").map_or(0, |i| i + 2)..];
            let n = match tail.strip_prefix('x') {
                Some(n) => n.parse::<usize>().map_err(|e| format!("{tok}: {e}"))? + 1,
                None => 1,
            };
            out.extend(std::iter::repeat_n(Point::Histogram, n));
            continue;
        }
        if tok == "_" {
            out.push(Point::Omitted);
            continue;
        }
        if tok == "stale" {
            out.push(Point::Stale);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|e| format!("{tok}: {e}"))?;
            out.extend(std::iter::repeat_n(Point::Omitted, n));
            continue;
        }
        let Some(x) = tok.rfind('x') else {
            out.push(Point::Value(parse_float(tok)?));
            continue;
        };
        let n: usize = tok[x + 1..].parse().map_err(|e| format!("{tok}: {e}"))?;
        let head = &tok[..x];
        // `a`, `a+b` or `a-b`; the sign splitting them is not the one of an exponent or of a.
        let split = head
            .char_indices()
            .skip(1)
            .filter(|(i, c)| {
                (*c == '+' || *c == '-') && !matches!(head.as_bytes()[i - 1], b'e' | b'E')
            })
            .map(|(i, _)| i)
            .next();
        let (a, b) = match split {
            Some(i) => (parse_float(&head[..i])?, parse_float(&head[i..])?),
            None => (parse_float(head)?, 0.0),
        };
        let mut v = a;
        for _ in 0..=n {
            out.push(Point::Value(v));
            v += b;
        }
    }
    Ok(out)
}

fn parse_expected(l: &str) -> Result<Expected, String> {
    let (desc, vals) = split_series(l);
    if vals.is_empty() && !desc.contains('{') {
        if let Ok(v) = parse_float(desc) {
            return Ok(Expected {
                labels: Labels::new(),
                points: vec![Point::Value(v)],
            });
        }
    }
    Ok(Expected {
        labels: parse_labels(desc)?,
        points: parse_points(vals)?,
    })
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
        for l in body {
            let (desc, vals) = split_series(l);
            let labels = parse_labels(desc)?;
            let mut samples = Vec::new();
            let mut histograms = Vec::new();
            for (i, p) in parse_points(vals)?.into_iter().enumerate() {
                let t = i as i64 * step;
                match p {
                    Point::Value(v) => samples.push(Sample { t, v }),
                    Point::Stale => samples.push(Sample {
                        t,
                        v: f64::from_bits(STALE_NAN_BITS),
                    }),
                    Point::Omitted => {}
                    Point::Histogram => histograms.push(t),
                }
            }
            if !histograms.is_empty() {
                self.native.push((labels.clone(), histograms));
            }
            if nhcb {
                // The native histogram with custom buckets derived from a classic one.
                let name = labels
                    .iter()
                    .find(|(n, _)| n == "__name__")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                for suffix in ["_bucket", "_count", "_sum"] {
                    if let Some(base) = name.strip_suffix(suffix) {
                        let mut nl: Labels = labels
                            .iter()
                            .filter(|(n, _)| n != "le" && n != "__name__")
                            .cloned()
                            .collect();
                        nl.push(("__name__".into(), base.into()));
                        nl.sort();
                        let ts = samples.iter().map(|p| p.t).collect();
                        self.native.push((nl, ts));
                    }
                }
            }
            self.storage.add(labels, &samples);
        }
        Ok(())
    }

    fn eval(&self, expr: &str, q: &Query, exp: &Expect) -> Outcome {
        let c = match Compiled::new(expr) {
            Ok(c) => c,
            Err(CompileError::Unsupported(m)) => return Outcome::Unsupported(m),
            Err(e @ CompileError::Parse(_)) => return check_error(&e.to_string(), exp),
        };
        // Whether any selector reads a native-histogram sample within its window.
        let (t_min, t_max) = match q {
            Query::Instant(t) => (*t, *t),
            Query::Range { start, end, .. } => (*start, *end),
        };
        let reads_native = c.needs().iter().any(|n| {
            let (lo, hi) = match n.at_ms {
                Some(at) => (at - n.history_ms, at),
                None => (t_min - n.history_ms, t_max),
            };
            self.native.iter().any(|(l, ts)| {
                ts.iter().any(|t| *t > lo && *t <= hi)
                    && matches(&n.matchers, l.iter().map(|(a, b)| (a.as_str(), b.as_str())))
            })
        });
        if reads_native || exp.histograms {
            return Outcome::Unsupported("native histograms".into());
        }
        let got = match q {
            Query::Instant(t) => c.eval(&self.storage, *t),
            Query::Range { start, end, step } => {
                range_query(&c, &self.storage, *start, *end, *step)
            }
        };
        match got {
            Err(e) => check_error(&e.to_string(), exp),
            Ok(v) if exp.fail => Outcome::Fail(format!("expected an error, got {v:?}")),
            Ok(v) => match compare(&v, q, exp) {
                Ok(()) => Outcome::Pass,
                Err(why) => Outcome::Fail(why),
            },
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
) -> Result<Value, cardguard::rules::promql::EvalError> {
    let mut series: Vec<(Labels, Vec<Sample>)> = Vec::new();
    let mut t = start;
    while t <= end {
        match c.eval_range_step(s, t, start, end, step)? {
            Value::Scalar(v) => push_point(&mut series, Labels::new(), Sample { t, v }),
            Value::Vector(v) => {
                for (l, v) in v {
                    push_point(&mut series, l, Sample { t, v });
                }
            }
            other => {
                return Err(cardguard::rules::promql::EvalError::Runtime(format!(
                    "range query over {other:?}"
                )))
            }
        }
        if step <= 0 {
            break;
        }
        t += step;
    }
    Ok(Value::Matrix(series))
}

fn push_point(series: &mut Vec<(Labels, Vec<Sample>)>, l: Labels, p: Sample) {
    match series.iter_mut().find(|(x, _)| *x == l) {
        Some((_, ps)) => ps.push(p),
        None => series.push((l, vec![p])),
    }
}

fn same(a: f64, b: f64) -> bool {
    almost_equal(a, b, EPSILON)
}

fn compare(v: &Value, q: &Query, exp: &Expect) -> Result<(), String> {
    match v {
        Value::String(s) => match &exp.string {
            Some(e) if e == s => Ok(()),
            other => Err(format!("got string {s:?}, expected {other:?}")),
        },
        Value::Scalar(f) => match exp.results.as_slice() {
            [e] if e.points.len() == 1 => match e.points[0] {
                Point::Value(x) if same(x, *f) => Ok(()),
                _ => Err(format!("got scalar {f}, expected {:?}", e.points)),
            },
            _ => Err(format!("got scalar {f}, expected {:?}", exp.results)),
        },
        Value::Vector(got) => {
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
                    [Point::Value(x)] => *x,
                    other => return Err(format!("expected one value per series, got {other:?}")),
                };
                let found = if exp.ordered {
                    got.get(i).filter(|g| g.0 == e.labels)
                } else {
                    got.iter().find(|g| g.0 == e.labels)
                };
                match found {
                    Some((_, v)) if same(want, *v) => {}
                    Some((_, v)) => {
                        return Err(format!(
                            "{}: got {v}, expected {want}",
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
        Value::Matrix(got) => {
            let (start, step) = match (q, exp.range_vector) {
                (Query::Range { start, step, .. }, _) => (*start, *step),
                (Query::Instant(_), Some((from, _, step))) => (from, step),
                (Query::Instant(_), None) => (0, 0),
            };
            let mut nonempty = 0;
            for e in &exp.results {
                let want: Vec<(i64, f64)> = e
                    .points
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| match p {
                        Point::Value(v) => Some((start + i as i64 * step, *v)),
                        _ => None,
                    })
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
                        .all(|(p, (t, v))| (step == 0 || p.t == *t) && same(p.v, *v));
                if !ok {
                    let got_pts: Vec<(i64, f64)> = ps.iter().map(|p| (p.t, p.v)).collect();
                    return Err(format!(
                        "{}: got {got_pts:?}, expected {want:?}",
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

fn fmt_vector(v: &[(Labels, f64)]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|(l, v)| format!("{} {v}", fmt_labels(l)))
        .collect();
    items.join(", ")
}

fn fmt_matrix(m: &[(Labels, Vec<Sample>)]) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(l, ps)| {
            let pts: Vec<String> = ps.iter().map(|p| format!("{}@{}", p.v, p.t)).collect();
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
