//! Prometheus 3's duration expressions (`x[5m+1m]`, `x[1h:step()*2]`, `x offset (1h/2)`,
//! `min_of`/`max_of`, `step()`, `range()`), which `promql-parser` does not parse: each one is
//! evaluated here and written back into the expression as a plain duration before parsing,
//! as Prometheus's `durationVisitor` resolves them before evaluation.
//!
//! Grammar and arithmetic follow Prometheus's `generated_parser.y` and `durations.go`: numbers
//! are seconds, `^` binds tightest (right-associative), then unary `-`/`+`, then `* / %`, then
//! `+ -`; after `offset` only one signed operand is read (`x offset 2 ^ 2` is `(x offset 2) ^
//! 2`), anything larger must be in parentheses. Results are truncated to milliseconds. Ranges
//! and subquery steps must be positive; division or modulo by zero, NaN and infinities are
//! errors.

use std::borrow::Cow;

use super::lex::{is_word_start, skip_comment, skip_string, word_is};

/// The query a duration expression is resolved for: `step()` and `range()` (both 0 for an
/// instant query, which is what a rule evaluation is).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueryShape {
    pub step_ms: i64,
    pub range_ms: i64,
}

/// Rewrite every duration expression of `expr` into a duration literal; the text unchanged
/// (borrowed) when it has none.
pub(crate) fn resolve(expr: &str, q: QueryShape) -> Result<Cow<'_, str>, String> {
    let b = expr.as_bytes();
    let mut out = String::new();
    // Bytes of `expr` before `copied` are already in `out`.
    let mut copied = 0;
    let mut i = 0;
    let mut braces = 0usize;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i);
                continue;
            }
            b'#' => {
                i = skip_comment(b, i);
                continue;
            }
            b'{' => braces += 1,
            b'}' => braces = braces.saturating_sub(1),
            b'[' if braces == 0 => {
                let Some(close) = expr[i..].find(']').map(|k| i + k) else {
                    break;
                };
                let inner = &expr[i + 1..close];
                if let Some(new) = resolve_brackets(inner, q)? {
                    out.push_str(&expr[copied..=i]);
                    out.push_str(&new);
                    copied = close;
                }
                i = close + 1;
                continue;
            }
            _ if braces == 0 && is_word_start(b, i) && word_is(b, i, "offset") => {
                let after = i + "offset".len();
                if let Some((end, ms)) = offset_operand(expr, after, q)? {
                    out.push_str(&expr[copied..i]);
                    // A zero offset is no offset (promql-parser refuses `offset 0s`).
                    if ms != 0 {
                        out.push_str(&format!("offset {}", literal(ms)));
                    }
                    out.push(' ');
                    copied = end;
                    i = end;
                    continue;
                }
                i = after;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if copied == 0 {
        return Ok(Cow::Borrowed(expr));
    }
    out.push_str(&expr[copied..]);
    Ok(Cow::Owned(out))
}

/// `[range]` or `[range:step]` or `[range:]`: `None` when every part is a plain literal.
fn resolve_brackets(inner: &str, q: QueryShape) -> Result<Option<String>, String> {
    let parts: Vec<&str> = inner.splitn(2, ':').collect();
    if parts
        .iter()
        .all(|p| p.trim().is_empty() || is_plain(p.trim()))
    {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(parts.len());
    for (k, p) in parts.iter().enumerate() {
        if p.trim().is_empty() {
            out.push(String::new());
            continue;
        }
        let what = if k == 0 { "range" } else { "subquery step" };
        let mut parser = Parser::new(p, q);
        let v = parser.expr()?;
        parser.end()?;
        let ms = to_ms(v, false).map_err(|e| format!("{what} [{}]: {e}", p.trim()))?;
        out.push(literal(ms));
    }
    Ok(Some(out.join(":")))
}

/// The operand of `offset` starting at `at`: `None` when it is a plain (signed) literal,
/// left to the parser; else where it ends and its value.
fn offset_operand(expr: &str, at: usize, q: QueryShape) -> Result<Option<(usize, i64)>, String> {
    let mut parser = Parser::new(&expr[at..], q);
    parser.skip_ws();
    let start = parser.pos;
    let sign = match parser.peek() {
        Some(b'-') => -1.0,
        Some(b'+') => 1.0,
        _ => 0.0,
    };
    if sign != 0.0 {
        parser.pos += 1;
        parser.skip_ws();
    }
    let rest = &parser.src.as_bytes()[parser.pos..];
    // promql-parser reads a bare number after `offset` as seconds through `from_secs_f64`,
    // which panics on NaN, infinities and values past `u64::MAX` seconds: those are refused
    // here; a bare number in range is left to the parser (it reads `010` as octal, as
    // Prometheus does).
    if let Some(w) = ["nan", "inf"].into_iter().find(|w| word_is(rest, 0, w)) {
        return Err(format!(
            "offset {}: duration is NaN or infinite",
            String::from_utf8_lossy(&rest[..w.len()])
        ));
    }
    let bare_number = rest
        .first()
        .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
        && {
            let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            !rest
                .get(digits)
                .is_some_and(|c| matches!(c, b's' | b'm' | b'h' | b'd' | b'w' | b'y'))
        };
    if bare_number {
        let v = parser.number()?;
        to_ms(v, true)
            .map_err(|e| format!("offset {}: {e}", parser.src[start..parser.pos].trim()))?;
        return Ok(None);
    }
    // Only a parenthesis or a duration function makes an expression: any other literal
    // (or syntax error) is for the parser to judge.
    let starts_expr = rest.starts_with(b"(")
        || ["step", "range", "min_of", "max_of"].iter().any(|f| {
            rest.len() >= f.len()
                && rest[..f.len()].eq_ignore_ascii_case(f.as_bytes())
                && rest[f.len()..].trim_ascii_start().starts_with(b"(")
        });
    if !starts_expr {
        return Ok(None);
    }
    let v = parser.atom()?;
    let v = if sign < 0.0 { -v } else { v };
    let ms = to_ms(v, true)
        .map_err(|e| format!("offset {}: {e}", parser.src[start..parser.pos].trim()))?;
    Ok(Some((at + parser.pos, ms)))
}

/// A duration literal promql-parser reads as written: `5m`, `1h30m`, `90`, `1.5`.
fn is_plain(s: &str) -> bool {
    let b = s.as_bytes();
    if !b.is_empty() && b.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        // promql-parser turns a bare number into a `Duration` with `from_secs_f64`, which
        // panics past `u64::MAX` seconds: a number out of range is not plain, so that it goes
        // through `to_ms` and is refused with a message.
        return b.iter().filter(|c| **c == b'.').count() <= 1
            && b[0] != b'.'
            && s.parse::<f64>().is_ok_and(|v| v <= MAX_SECS);
    }
    let mut i = 0;
    let mut units = 0;
    while i < b.len() {
        let d = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == d {
            return false;
        }
        let u = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        if !matches!(&s[u..i], "ms" | "s" | "m" | "h" | "d" | "w" | "y") {
            return false;
        }
        units += 1;
    }
    units > 0
}

/// Milliseconds as a literal promql-parser reads (it refuses `0ms`; the callers decide what
/// zero means before getting here).
fn literal(ms: i64) -> String {
    if ms < 0 {
        format!("-{}ms", ms.unsigned_abs())
    } else {
        format!("{ms}ms")
    }
}

/// The longest duration in seconds: `i64::MAX` milliseconds.
const MAX_SECS: f64 = 9.223_372_036_854_776e9;

/// `calculateDuration`: seconds to whole milliseconds, truncated.
fn to_ms(secs: f64, negative_ok: bool) -> Result<i64, String> {
    if secs.is_nan() || secs.is_infinite() {
        return Err("duration is NaN or infinite".into());
    }
    if secs <= 0.0 && !negative_ok {
        return Err("duration must be greater than 0".into());
    }
    if secs.abs() > MAX_SECS {
        return Err("duration is out of range".into());
    }
    let ms = (secs * 1000.0) as i64;
    if ms == 0 && !negative_ok {
        return Err("duration must be greater than 0".into());
    }
    Ok(ms)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    q: QueryShape,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, q: QueryShape) -> Self {
        Parser { src, pos: 0, q }
    }

    fn skip_ws(&mut self) {
        let b = self.src.as_bytes();
        while self.pos < b.len() && b[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.src.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{}'", c as char)))
        }
    }

    fn unexpected(&mut self, wanted: &str) -> String {
        match self.peek() {
            None => format!("unexpected end of duration expression, expected {wanted}"),
            Some(_) => {
                let rest: String = self.src[self.pos..].chars().take(12).collect();
                format!("unexpected {rest:?} in duration expression, expected {wanted}")
            }
        }
    }

    fn end(&mut self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.unexpected("an operator")),
        }
    }

    fn expr(&mut self) -> Result<f64, String> {
        let mut v = self.term()?;
        loop {
            if self.eat(b'+') {
                v += self.term()?;
            } else if self.eat(b'-') {
                v -= self.term()?;
            } else {
                return Ok(v);
            }
        }
    }

    fn term(&mut self) -> Result<f64, String> {
        let mut v = self.unary()?;
        loop {
            if self.eat(b'*') {
                v *= self.unary()?;
            } else if self.eat(b'/') {
                let r = self.unary()?;
                if r == 0.0 {
                    return Err("division by zero in duration expression".into());
                }
                v /= r;
            } else if self.eat(b'%') {
                let r = self.unary()?;
                if r == 0.0 {
                    return Err("modulo by zero in duration expression".into());
                }
                // Go's math.Mod: the sign of the dividend, as Rust's `%`.
                v %= r;
            } else {
                return Ok(v);
            }
        }
    }

    fn unary(&mut self) -> Result<f64, String> {
        if self.eat(b'-') {
            return Ok(-self.unary()?);
        }
        if self.eat(b'+') {
            return self.unary();
        }
        self.power()
    }

    fn power(&mut self) -> Result<f64, String> {
        let base = self.atom()?;
        if self.eat(b'^') {
            let exp = self.unary()?;
            return Ok(base.powf(exp));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let v = self.expr()?;
                self.expect(b')')?;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                let b = self.src.as_bytes();
                while self.pos < b.len()
                    && (b[self.pos].is_ascii_alphanumeric() || b[self.pos] == b'_')
                {
                    self.pos += 1;
                }
                let name = self.src[start..self.pos].to_ascii_lowercase();
                self.expect(b'(')?;
                match name.as_str() {
                    "step" | "range" => {
                        self.expect(b')')?;
                        let ms = if name == "step" {
                            self.q.step_ms
                        } else {
                            self.q.range_ms
                        };
                        Ok(ms as f64 / 1000.0)
                    }
                    "min_of" | "max_of" => {
                        let a = self.expr()?;
                        self.expect(b',')?;
                        let c = self.expr()?;
                        self.expect(b')')?;
                        Ok(if name == "min_of" { go_min(a, c) } else { go_max(a, c) })
                    }
                    _ => Err(format!(
                        "function `{name}` in duration expression (only step(), range(), min_of(), max_of())"
                    )),
                }
            }
            _ => Err(self.unexpected("a number, duration or '('")),
        }
    }

    /// A number (seconds) or a duration literal (`1h30m`, `500ms`).
    fn number(&mut self) -> Result<f64, String> {
        let b = self.src.as_bytes();
        let start = self.pos;
        if b[start..].starts_with(b"0x") || b[start..].starts_with(b"0X") {
            self.pos += 2;
            while self.pos < b.len() && b[self.pos].is_ascii_hexdigit() {
                self.pos += 1;
            }
            return i64::from_str_radix(&self.src[start + 2..self.pos], 16)
                .map(|v| v as f64)
                .map_err(|e| format!("bad number in duration expression: {e}"));
        }
        while self.pos < b.len() && b[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        let unit_start = self.pos;
        if self.pos < b.len() && matches!(b[self.pos], b'm' | b's' | b'h' | b'd' | b'w' | b'y') {
            // A duration literal: digit runs with units, to the end of the letters/digits.
            while self.pos < b.len() && b[self.pos].is_ascii_alphanumeric() {
                self.pos += 1;
            }
            let lit = &self.src[start..self.pos];
            if !is_plain(lit) || unit_start == start {
                return Err(format!("bad duration {lit:?} in duration expression"));
            }
            return promql_parser::util::parse_duration(lit)
                .map(|d| d.as_secs_f64())
                .or_else(|e| {
                    if e.contains("greater than 0") {
                        Ok(0.0)
                    } else {
                        Err(e)
                    }
                });
        }
        if self.pos < b.len() && b[self.pos] == b'.' {
            self.pos += 1;
            while self.pos < b.len() && b[self.pos].is_ascii_digit() {
                self.pos += 1;
            }
        }
        if self.pos < b.len() && matches!(b[self.pos], b'e' | b'E') {
            let save = self.pos;
            self.pos += 1;
            if self.pos < b.len() && matches!(b[self.pos], b'+' | b'-') {
                self.pos += 1;
            }
            if self.pos < b.len() && b[self.pos].is_ascii_digit() {
                while self.pos < b.len() && b[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
            } else {
                self.pos = save;
            }
        }
        self.src[start..self.pos].parse::<f64>().map_err(|_| {
            format!(
                "bad number {:?} in duration expression",
                &self.src[start..self.pos]
            )
        })
    }
}

/// Go's `math.Min`/`math.Max` (NaN wins).
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(e: &str) -> String {
        resolve(e, QueryShape::default()).unwrap().into_owned()
    }

    #[test]
    fn plain_durations_are_left_alone() {
        for e in [
            "rate(x[5m])",
            "x[1h30m:1m]",
            "x[5m:]",
            "x offset 5m",
            "x offset -1h",
            "x{a=\"[1+1]\"}[5m] offset 1m",
            "sum by (offset) (x)",
        ] {
            assert!(
                matches!(resolve(e, QueryShape::default()), Ok(Cow::Borrowed(_))),
                "{e}"
            );
        }
    }

    #[test]
    fn numbers_the_parser_cannot_hold_are_refused_not_panicked_on() {
        // promql-parser's `from_secs_f64` panics on each of these (a fuzz finding).
        for e in [
            "x offset 99999999999999999999",
            "x offset -99999999999999999999",
            "x offset 1e20",
            "x offset 1e400",
            "x offset NaN",
            "x offset -inf",
            "x[99999999999999999999]",
            "x[5m:99999999999999999999]",
        ] {
            let err = resolve(e, QueryShape::default()).unwrap_err();
            assert!(
                err.contains("out of range") || err.contains("NaN or infinite"),
                "{e}: {err}"
            );
        }
        // In range, a bare number is still the parser's to read.
        for e in [
            "x offset 300",
            "x offset 010",
            "x offset 1.5",
            "x[300]",
            "x[5m:30]",
        ] {
            assert!(
                matches!(resolve(e, QueryShape::default()), Ok(Cow::Borrowed(_))),
                "{e}"
            );
        }
    }

    #[test]
    fn arithmetic_as_prometheus() {
        assert_eq!(r("changes(x[26m+4m])"), "changes(x[1800000ms])");
        assert_eq!(r("x[24m+((1.5*2m)+2m)]"), "x[1740000ms]");
        assert_eq!(r("x[30m1s-30m1s % 1m]"), "x[1800000ms]");
        assert_eq!(r("x[-5m+35m]"), "x[1800000ms]");
        assert_eq!(r("x[29s+1s:5s+5s]"), "x[30000ms:10000ms]");
        assert_eq!(r("x offset (-2 ^ 2)"), "x offset -4000ms ");
        assert_eq!(r("x offset (100 + 2) + 1"), "x offset 102000ms  + 1");
        assert_eq!(r("x offset range()"), "x  ");
        let q = QueryShape {
            step_ms: 5000,
            range_ms: 10_000,
        };
        assert_eq!(
            resolve("x offset -min_of(step(), 1s)+8000", q).unwrap(),
            "x offset -1000ms +8000"
        );
        assert_eq!(resolve("x[1+(STep()-5)*2]", q).unwrap(), "x[1000ms]");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(
            e in "[ -~ü€\\n]{0,40}",
            parts in proptest::collection::vec(proptest::sample::select(&[
                "x", "[", "]", ":", "offset", " ", "(", ")", "-", "+", "*", "/", "%", "^",
                "1m", "0", "1.5", "0x1f", "1e3", "step()", "range()", "min_of(", "max_of(", ",",
                "\"", "{", "}", "ü", "#", "\n", "NaN", "Inf", "99999999999999999999", "1e20",
            ][..]), 0..24),
            step in 0i64..100_000,
        ) {
            let q = QueryShape { step_ms: step, range_ms: step * 3 };
            let _ = resolve(&e, q);
            // What `resolve` lets through must not panic the parser either.
            if let Ok(r) = resolve(&parts.concat(), q) {
                let _ = promql_parser::parser::parse(&r);
            }
        }
    }

    #[test]
    fn errors_say_what() {
        for (e, msg) in [
            ("x[step()]", "must be greater than 0"),
            ("x[1m/0]", "division by zero"),
            ("x[1m%0]", "modulo by zero"),
            ("x[1m+]", "unexpected end"),
            ("x[foo()+1m]", "function `foo`"),
        ] {
            let err = resolve(e, QueryShape::default()).unwrap_err();
            assert!(err.contains(msg), "{e}: {err}");
        }
    }
}
