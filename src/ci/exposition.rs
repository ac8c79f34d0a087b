//! A strict reader of what a service serves on `/metrics`: the Prometheus text format (0.0.4)
//! and OpenMetrics 1.0, chosen by the `# EOF` line (or by the scrape's Content-Type). Every
//! error names its line. `render` writes the samples back out, for the round-trip tests.
//!
//! Written here rather than taken from a crate: the Rust parsers that exist either report no
//! positions (`prometheus-parse`) or are LGPL with an unstable API (`openmetrics-parser`).
//! Lenient where Prometheus's own scraper is (whitespace between tokens in the text format,
//! unknown escapes kept as written, a trailing comma in a label set), strict where a silent
//! guess would change the series (duplicate series, labels, TYPE lines; a `_bucket` without
//! `le`; anything after `# EOF`).

use std::collections::HashMap;

/// Which format a text is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: timestamps are integer milliseconds.
    Prometheus,
    /// `application/openmetrics-text`: ends with `# EOF`; timestamps are seconds; exemplars.
    OpenMetrics,
}

impl Format {
    /// The format of `text`: OpenMetrics when a line is exactly `# EOF`.
    pub fn detect(text: &str) -> Format {
        if text.lines().any(|l| l.trim_end_matches('\r') == "# EOF") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// The metric type a `# TYPE` line declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl Kind {
    fn parse(s: &str, format: Format) -> Option<Kind> {
        Some(match (s, format) {
            ("counter", _) => Kind::Counter,
            ("gauge", _) => Kind::Gauge,
            ("histogram", _) => Kind::Histogram,
            ("summary", _) => Kind::Summary,
            ("untyped", Format::Prometheus) | ("unknown", Format::OpenMetrics) => Kind::Unknown,
            ("gaugehistogram", Format::OpenMetrics) => Kind::GaugeHistogram,
            ("info", Format::OpenMetrics) => Kind::Info,
            ("stateset", Format::OpenMetrics) => Kind::StateSet,
            _ => return None,
        })
    }
}

/// One sample line: one series of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's metric name (`foo_bucket`, not the family `foo`).
    pub name: String,
    /// In the order written, without `__name__`.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
    /// 1-based line in the text.
    pub line: usize,
}

/// A parsed exposition: its samples, in order, and the declared type of each family.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: HashMap<String, Kind>,
}

/// Why a text is not a valid exposition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Suffixes of the samples of a family, longest first so `_gcount` is not read as `_count`.
const SUFFIXES: [&str; 8] = [
    "_bucket", "_gcount", "_gsum", "_created", "_count", "_total", "_info", "_sum",
];

/// Parse `text` in the format it declares (see [`Format::detect`]).
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    parse_as(text, Format::detect(text))
}

/// Parse `text` as `format`.
pub fn parse_as(text: &str, format: Format) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    let mut helps: HashMap<String, usize> = HashMap::new();
    let mut units: HashMap<String, usize> = HashMap::new();
    let mut type_lines: HashMap<String, usize> = HashMap::new();
    let mut seen: HashMap<(String, Vec<(String, String)>), usize> = HashMap::new();
    let mut eof = false;
    let lines = text.split('\n').count();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let err = |message: String| ParseError { line, message };
        let l = raw.strip_suffix('\r').unwrap_or(raw);
        if eof {
            if l.is_empty() && i + 1 == lines {
                break; // the newline that ends `# EOF`
            }
            return Err(err("content after # EOF".into()));
        }
        if l.trim().is_empty() {
            if format == Format::OpenMetrics && i + 1 < lines {
                return Err(err("empty line (not allowed in OpenMetrics)".into()));
            }
            continue;
        }
        if let Some(comment) = l.strip_prefix('#') {
            match comment_line(comment, format).map_err(err)? {
                Comment::Eof => eof = true,
                Comment::Other => {}
                Comment::Help(name) => first_time(&mut helps, name, line, "HELP")?,
                Comment::Unit(name) => first_time(&mut units, name, line, "UNIT")?,
                Comment::Type(name, kind) => {
                    first_time(&mut type_lines, name.clone(), line, "TYPE")?;
                    out.types.insert(name, kind);
                }
            }
            continue;
        }
        let s = sample_line(l, line, format).map_err(err)?;
        check_family(&s, &out.types).map_err(err)?;
        let mut key_labels = s.labels.clone();
        key_labels.sort();
        if let Some(first) = seen.insert((s.name.clone(), key_labels), line) {
            return Err(err(format!(
                "duplicate series {} (first on line {first})",
                series_text(&s.name, &s.labels)
            )));
        }
        out.samples.push(s);
    }
    if format == Format::OpenMetrics && !eof {
        return Err(ParseError {
            line: lines,
            message: "OpenMetrics text must end with # EOF".into(),
        });
    }
    Ok(out)
}

fn first_time(
    seen: &mut HashMap<String, usize>,
    name: String,
    line: usize,
    what: &str,
) -> Result<(), ParseError> {
    match seen.insert(name.clone(), line) {
        Some(first) => Err(ParseError {
            line,
            message: format!("second # {what} line for {name} (first on line {first})"),
        }),
        None => Ok(()),
    }
}

enum Comment {
    Help(String),
    Type(String, Kind),
    Unit(String),
    Eof,
    Other,
}

fn comment_line(c: &str, format: Format) -> Result<Comment, String> {
    if c == " EOF" && format == Format::OpenMetrics {
        return Ok(Comment::Eof);
    }
    let mut words = c.trim_start_matches([' ', '\t']).splitn(3, [' ', '\t']);
    let keyword = words.next().unwrap_or_default();
    let known =
        matches!(keyword, "HELP" | "TYPE") || (keyword == "UNIT" && format == Format::OpenMetrics);
    if !known {
        return match format {
            Format::Prometheus => Ok(Comment::Other),
            Format::OpenMetrics => Err(format!(
                "unknown comment line \"#{c}\" (OpenMetrics allows # HELP, # TYPE, # UNIT, # EOF)"
            )),
        };
    }
    let name = words.next().unwrap_or_default();
    if !is_metric_name(name) {
        return Err(format!("# {keyword}: invalid metric name {name:?}"));
    }
    let rest = words.next().unwrap_or_default();
    Ok(match keyword {
        "HELP" => {
            unescape(rest, false)?;
            Comment::Help(name.to_string())
        }
        "UNIT" => Comment::Unit(name.to_string()),
        _ => {
            let t = rest.trim();
            let kind = Kind::parse(t, format)
                .ok_or_else(|| format!("# TYPE {name}: unknown type {t:?}"))?;
            Comment::Type(name.to_string(), kind)
        }
    })
}

/// A cursor over one sample line.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.at..].chars().next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }
    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.at += 1;
        }
    }
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.at;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.s[start..self.at]
    }
    fn expect(&mut self, c: char, what: &str) -> Result<(), String> {
        match self.bump() {
            Some(x) if x == c => Ok(()),
            Some(x) => Err(format!("expected {what}, found {x:?}")),
            None => Err(format!("expected {what}, found the end of the line")),
        }
    }
    fn word(&mut self) -> &'a str {
        self.take_while(|c| c != ' ' && c != '\t')
    }
}

fn sample_line(l: &str, line: usize, format: Format) -> Result<Sample, String> {
    let mut c = Cursor { s: l, at: 0 };
    if format == Format::Prometheus {
        c.skip_blank();
    }
    let name = c.take_while(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':');
    if name.is_empty() && c.peek() == Some('{') {
        return Err(
            "a metric name inside the braces is not supported; write it before them".into(),
        );
    }
    if !is_metric_name(name) || !matches!(c.peek(), None | Some(' ' | '\t' | '{')) {
        let token = l[c.at - name.len()..]
            .split([' ', '\t', '{'])
            .next()
            .unwrap_or_default();
        return Err(format!("invalid metric name {token:?}"));
    }
    let mut labels: Vec<(String, String)> = Vec::new();
    if c.peek() == Some('{') {
        c.bump();
        labels = label_set(&mut c, format)?;
    }
    let blank = c.take_while(|ch| ch == ' ' || ch == '\t');
    if blank.is_empty() || (format == Format::OpenMetrics && blank != " ") {
        return match c.peek() {
            None => Err(format!("{name}: no value")),
            Some(ch) => Err(format!(
                "{name}: expected a space before the value, found {ch:?}"
            )),
        };
    }
    let value = parse_value(c.word()).map_err(|e| format!("{name}: value {e}"))?;
    let mut timestamp_ms = None;
    if format == Format::Prometheus {
        c.skip_blank();
    } else if c.peek() == Some(' ') {
        c.bump();
    }
    if c.peek().is_some() && c.peek() != Some('#') {
        let t = c.word();
        timestamp_ms = Some(parse_timestamp(t, format).map_err(|e| format!("{name}: {e}"))?);
        if format == Format::Prometheus {
            c.skip_blank();
        } else if c.peek() == Some(' ') {
            c.bump();
        }
    }
    if c.peek() == Some('#') {
        if format == Format::Prometheus {
            return Err(format!(
                "{name}: exemplars (\" # {{...}}\") are OpenMetrics only; end the text with # EOF"
            ));
        }
        c.bump();
        c.expect(' ', "a space after '#' of the exemplar")?;
        c.expect('{', "'{' starting the exemplar's labels")?;
        label_set(&mut c, format).map_err(|e| format!("exemplar: {e}"))?;
        c.expect(' ', "a space before the exemplar's value")?;
        parse_value(c.word()).map_err(|e| format!("exemplar value {e}"))?;
        if c.peek() == Some(' ') {
            c.bump();
            parse_timestamp(c.word(), format).map_err(|e| format!("exemplar {e}"))?;
        }
    }
    if let Some(ch) = c.peek() {
        return Err(format!("{name}: unexpected {ch:?} after the sample"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
        line,
    })
}

/// After `{`, through `}`.
fn label_set(c: &mut Cursor<'_>, format: Format) -> Result<Vec<(String, String)>, String> {
    let lenient = format == Format::Prometheus;
    let mut labels: Vec<(String, String)> = Vec::new();
    loop {
        if lenient {
            c.skip_blank();
        }
        if c.peek() == Some('}') {
            c.bump();
            return Ok(labels);
        }
        let name = c.take_while(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !is_label_name(name) {
            return Err(match c.peek() {
                _ if !name.is_empty() => format!("invalid label name {name:?}"),
                Some(ch) => format!("expected a label name, found {ch:?}"),
                None => "unterminated label set".into(),
            });
        }
        if name == "__name__" {
            return Err("label __name__ inside the braces is not supported".into());
        }
        if lenient {
            c.skip_blank();
        }
        c.expect('=', &format!("'=' after label {name}"))?;
        if lenient {
            c.skip_blank();
        }
        c.expect('"', &format!("'\"' opening the value of label {name}"))?;
        let start = c.at;
        loop {
            match c.bump() {
                None => return Err(format!("unterminated value of label {name}")),
                Some('\\') => {
                    if c.bump().is_none() {
                        return Err(format!("unterminated value of label {name}"));
                    }
                }
                Some('"') => break,
                Some(_) => {}
            }
        }
        let raw = &c.s[start..c.at - 1];
        let value = unescape(raw, true).map_err(|e| format!("label {name}: {e}"))?;
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label {name}"));
        }
        labels.push((name.to_string(), value));
        if lenient {
            c.skip_blank();
        }
        match c.bump() {
            Some(',') => {}
            Some('}') => return Ok(labels),
            Some(ch) => {
                return Err(format!(
                    "expected ',' or '}}' after label {name}, found {ch:?}"
                ))
            }
            None => return Err("unterminated label set".into()),
        }
    }
}

/// Label values (`quoted`) know `\\`, `\"` and `\n`; HELP text `\\` and `\n`. Other escapes
/// are kept as written, as Prometheus's scraper keeps them.
fn unescape(raw: &str, quoted: bool) -> Result<String, String> {
    if !raw.contains('\\') {
        return Ok(raw.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quoted => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => return Err("ends with a lone backslash".into()),
        }
    }
    Ok(out)
}

/// A sample value: a float as Go's `ParseFloat` writes them, `+Inf`, `-Inf`, `NaN`.
fn parse_value(s: &str) -> Result<f64, String> {
    if s.is_empty() {
        return Err("is missing".into());
    }
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => return Ok(f64::INFINITY),
        "-Inf" | "-inf" => return Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => return Ok(f64::NAN),
        _ => {}
    }
    // Rust accepts spellings Go does not ("infinity"); only digits, signs, '.', 'e' pass here.
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return Err(format!("{s:?} is not a number"));
    }
    s.parse::<f64>()
        .map_err(|_| format!("{s:?} is not a number"))
}

fn parse_timestamp(s: &str, format: Format) -> Result<i64, String> {
    match format {
        Format::Prometheus => s
            .parse::<i64>()
            .map_err(|_| format!("timestamp {s:?} is not integer milliseconds")),
        Format::OpenMetrics => {
            let secs = parse_value(s).map_err(|e| format!("timestamp {e}"))?;
            let ms = (secs * 1000.0).round();
            // Past ±1e13 ms (the year 2286) seconds with three decimals no longer round-trip
            // through an f64 to the millisecond.
            if !ms.is_finite() || ms.abs() > 1.0e13 {
                return Err(format!("timestamp {s:?} is out of range"));
            }
            Ok(ms as i64)
        }
    }
}

/// The family a sample belongs to, and the label that family requires of it.
fn check_family(s: &Sample, types: &HashMap<String, Kind>) -> Result<(), String> {
    let declared = |family: &str| types.get(family).copied();
    let (family, suffix) = SUFFIXES
        .iter()
        .find_map(|suf| {
            let f = s.name.strip_suffix(suf)?;
            declared(f).map(|_| (f, *suf))
        })
        .unwrap_or((s.name.as_str(), ""));
    let label = |n: &str| {
        s.labels
            .iter()
            .find(|(l, _)| l == n)
            .map(|(_, v)| v.as_str())
    };
    match (declared(family), suffix) {
        (Some(Kind::Histogram | Kind::GaugeHistogram), "_bucket") => {
            let le = label("le").ok_or_else(|| format!("{}: a bucket without le", s.name))?;
            parse_value(le).map_err(|e| format!("{}: le {e}", s.name))?;
        }
        (Some(Kind::Summary), "") => {
            let q = label("quantile").ok_or_else(|| {
                format!("{}: a summary quantile without the quantile label", s.name)
            })?;
            parse_value(q).map_err(|e| format!("{}: quantile {e}", s.name))?;
        }
        _ => {}
    }
    Ok(())
}

pub fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

pub fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// `name{a="1",b="2"}`, escaped as in the text format: how reports name a series.
pub fn series_text(name: &str, labels: &[(String, String)]) -> String {
    let mut out = name.to_string();
    if !labels.is_empty() {
        out.push('{');
        for (k, (n, v)) in labels.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            out.push_str(n);
            out.push_str("=\"");
            escape_into(&mut out, v);
            out.push('"');
        }
        out.push('}');
    }
    out
}

fn escape_into(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A value as the text formats write it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The samples as `format` writes them (with `# TYPE` lines for `types`, each before its
/// family's first sample). `parse_as(render(e, f), f)` gives back `e`'s samples.
pub fn render(samples: &[Sample], types: &[(String, Kind)], format: Format) -> String {
    let mut out = String::new();
    for (name, kind) in types {
        let t = match (kind, format) {
            (Kind::Counter, _) => "counter",
            (Kind::Gauge, _) => "gauge",
            (Kind::Histogram, _) => "histogram",
            (Kind::Summary, _) => "summary",
            (Kind::GaugeHistogram, _) => "gaugehistogram",
            (Kind::Info, _) => "info",
            (Kind::StateSet, _) => "stateset",
            (Kind::Unknown, Format::Prometheus) => "untyped",
            (Kind::Unknown, Format::OpenMetrics) => "unknown",
        };
        out.push_str(&format!("# TYPE {name} {t}\n"));
    }
    for s in samples {
        out.push_str(&series_text(&s.name, &s.labels));
        out.push(' ');
        out.push_str(&format_value(s.value));
        if let Some(ts) = s.timestamp_ms {
            match format {
                Format::Prometheus => out.push_str(&format!(" {ts}")),
                Format::OpenMetrics => {
                    let sign = if ts < 0 { "-" } else { "" };
                    let abs = ts.unsigned_abs();
                    out.push_str(&format!(" {sign}{}.{:03}", abs / 1000, abs % 1000));
                }
            }
        }
        out.push('\n');
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests;
