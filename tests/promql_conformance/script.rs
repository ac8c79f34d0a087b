//! The promqltest script language: commands, series descriptions, expectations.

use std::sync::Arc;

use cardguard::rules::promql::{Histogram, Labels, ResetHint, Span};

/// promqltest's line handling: trimmed, comment lines blank (and so ending a block).
pub fn lines(text: &str) -> Vec<&str> {
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

/// One value of a series description: a float, a stale marker, nothing at that step, or a
/// native histogram (and whether its counter reset hint was written out).
#[derive(Debug, Clone)]
pub enum Point {
    Value(f64),
    Stale,
    Omitted,
    Histogram(Arc<Histogram>, bool),
}

#[derive(Debug)]
pub struct Expected {
    pub labels: Labels,
    pub points: Vec<Point>,
}

#[derive(Default)]
pub struct Expect {
    pub fail: bool,
    pub fail_msg: Option<String>,
    pub fail_regex: Option<String>,
    pub ordered: bool,
    pub string: Option<String>,
    pub range_vector: Option<(i64, i64, i64)>,
    pub results: Vec<Expected>,
}

pub enum Query {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

/// Split off `n` whitespace-separated words; returns them and the rest, trimmed.
pub fn words(s: &str, n: usize) -> Option<(Vec<&str>, &str)> {
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
pub fn parse_time(s: &str) -> Result<i64, String> {
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

pub fn parse_eval(head: &str, body: &[&str]) -> Result<(String, Query, Expect), String> {
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
pub fn split_series(l: &str) -> (&str, &str) {
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
pub fn parse_labels(desc: &str) -> Result<Labels, String> {
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
pub fn parse_points(s: &str) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    for tok in value_tokens(s) {
        if tok.contains("{{") {
            out.extend(parse_histogram_series(tok)?);
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

/// `{{..}}`, `{{..}}xN`, `{{..}}+{{..}}xN` or `{{..}}-{{..}}xN`: the first histogram, then
/// N more, each the previous plus (minus) the increment.
fn parse_histogram_series(tok: &str) -> Result<Vec<Point>, String> {
    let end = tok
        .find("}}")
        .ok_or_else(|| format!("{tok}: unclosed histogram"))?
        + 2;
    let (base, base_hint) = parse_histogram(&tok[..end])?;
    let rest = &tok[end..];
    let (inc, tail) = match rest.chars().next() {
        Some(sign @ ('+' | '-')) => {
            let e2 = rest
                .find("}}")
                .ok_or_else(|| format!("{tok}: unclosed histogram"))?
                + 2;
            let (h, _) = parse_histogram(&rest[1..e2])?;
            (Some((sign == '-', h)), &rest[e2..])
        }
        _ => (None, rest),
    };
    let n = match tail.strip_prefix('x') {
        Some(n) => n.parse::<usize>().map_err(|e| format!("{tok}: {e}"))?,
        None if tail.is_empty() => 0,
        None => return Err(format!("{tok}: unexpected {tail:?}")),
    };
    let mut out = vec![Point::Histogram(Arc::new(base.clone()), base_hint)];
    let mut cur = base;
    for _ in 0..n {
        if let Some((neg, inc)) = &inc {
            cur.add(inc, *neg).map_err(|e| format!("{tok}: {e}"))?;
        }
        out.push(Point::Histogram(Arc::new(cur.clone()), base_hint));
    }
    Ok(out)
}

/// One `{{schema:.. sum:.. count:.. buckets:[..] offset:.. ...}}` description.
pub fn parse_histogram(s: &str) -> Result<(Histogram, bool), String> {
    let inner = s
        .strip_prefix("{{")
        .and_then(|x| x.strip_suffix("}}"))
        .ok_or_else(|| format!("not a histogram: {s}"))?;
    let mut h = Histogram::default();
    let mut hint_set = false;
    let (mut pos, mut neg, mut pos_off, mut neg_off) = (Vec::new(), Vec::new(), 0i32, 0i32);
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("{s}: expected key:value"))?;
        let key = rest[..colon].trim();
        rest = rest[colon + 1..].trim_start();
        let value;
        if rest.starts_with('[') {
            let close = rest.find(']').ok_or_else(|| format!("{s}: unclosed ["))?;
            value = &rest[..=close];
            rest = rest[close + 1..].trim_start();
        } else {
            let e = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = &rest[..e];
            rest = rest[e..].trim_start();
        }
        let list = || -> Result<Vec<f64>, String> {
            value
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split_whitespace()
                .map(parse_float)
                .collect()
        };
        match key {
            "schema" => h.schema = value.parse().map_err(|e| format!("{s}: {e}"))?,
            "sum" => h.sum = parse_float(value)?,
            "count" => h.count = parse_float(value)?,
            "z_bucket" => h.zero_count = parse_float(value)?,
            "z_bucket_w" => h.zero_threshold = parse_float(value)?,
            "buckets" => pos = list()?,
            "n_buckets" => neg = list()?,
            "offset" => pos_off = value.parse().map_err(|e| format!("{s}: {e}"))?,
            "n_offset" => neg_off = value.parse().map_err(|e| format!("{s}: {e}"))?,
            "custom_values" => h.custom_values = list()?.into(),
            "counter_reset_hint" => {
                hint_set = true;
                h.hint = match value {
                    "unknown" => ResetHint::Unknown,
                    "reset" => ResetHint::Reset,
                    "not_reset" => ResetHint::NotReset,
                    "gauge" => ResetHint::Gauge,
                    other => return Err(format!("{s}: counter_reset_hint {other}")),
                };
            }
            other => return Err(format!("{s}: unknown key {other}")),
        }
    }
    let spans = |n: usize, off: i32| {
        if n == 0 {
            Vec::new()
        } else {
            vec![Span {
                offset: off,
                length: n as u32,
            }]
        }
    };
    h.positive_spans = spans(pos.len(), pos_off);
    h.positive = pos;
    h.negative_spans = spans(neg.len(), neg_off);
    h.negative = neg;
    Ok((h, hint_set))
}
