//! cardguard's own log lines on stderr, in the format `--log.format` names: `text` (tracing's
//! human-readable lines, colored only when stderr is a terminal, so log files and journald get
//! no ANSI escapes), or `logfmt` and `json` as Prometheus spells them, one event per line with
//! the keys `time`, `level`, `msg` and then the event's fields, for Loki, Vector or jq.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, colored on a terminal.
    #[default]
    Text,
    /// `time=... level=info msg="..." key=value`.
    Logfmt,
    /// `{"time":"...","level":"info","msg":"...","key":"value"}`.
    Json,
}

impl LogFormat {
    /// The values `--log.format` accepts.
    pub const NAMES: [&'static str; 3] = ["text", "logfmt", "json"];
}

#[derive(Debug, thiserror::Error)]
#[error("unknown log format {0:?}: use text, logfmt or json")]
pub struct UnknownFormat(String);

impl std::str::FromStr for LogFormat {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, UnknownFormat> {
        match s {
            "text" => Ok(LogFormat::Text),
            "logfmt" => Ok(LogFormat::Logfmt),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownFormat(other.to_string())),
        }
    }
}

/// Install the global subscriber: `filter` is a level or a tracing filter (`cardguard=debug`);
/// one that does not parse means `info`. `terminal` says whether stderr is one (colors).
pub fn init(filter: &str, format: LogFormat, terminal: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).with_ansi(terminal).init(),
        LogFormat::Logfmt => builder.with_ansi(false).event_format(Lines::Logfmt).init(),
        LogFormat::Json => builder.with_ansi(false).event_format(Lines::Json).init(),
    }
}

/// The logfmt and json event formatters.
#[derive(Debug, Clone, Copy)]
enum Lines {
    Logfmt,
    Json,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = Line {
            time: &time,
            level: level_name(event.metadata().level()),
            msg: fields.msg.as_deref().unwrap_or(""),
            fields: &fields.rest,
        };
        match self {
            Lines::Logfmt => line.logfmt(&mut w),
            Lines::Json => line.json(&mut w),
        }?;
        writeln!(w)
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// A field's value: numbers and booleans stay unquoted in json.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Raw(String),
}

/// An event's fields: `message` apart, the rest in the order they were given.
#[derive(Default)]
struct Fields {
    msg: Option<String>,
    rest: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, v: Value) {
        match (field.name(), v) {
            ("message", Value::Str(s) | Value::Raw(s)) => self.msg = Some(s),
            (name, v) => self.rest.push((name, v)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Str(format!("{value:?}")));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Raw(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Raw(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Raw(value.to_string()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities are not JSON numbers.
        let v = if value.is_finite() {
            Value::Raw(value.to_string())
        } else {
            Value::Str(value.to_string())
        };
        self.put(field, v);
    }
}

struct Line<'a> {
    time: &'a str,
    level: &'static str,
    msg: &'a str,
    fields: &'a [(&'static str, Value)],
}

impl Line<'_> {
    fn logfmt(&self, w: &mut impl fmt::Write) -> fmt::Result {
        write!(w, "time={} level={} msg=", self.time, self.level)?;
        logfmt_value(w, self.msg)?;
        for (k, v) in self.fields {
            write!(w, " {k}=")?;
            match v {
                Value::Str(s) | Value::Raw(s) => logfmt_value(w, s)?,
            }
        }
        Ok(())
    }

    fn json(&self, w: &mut impl fmt::Write) -> fmt::Result {
        let s = |v: &str| serde_json::to_string(v).map_err(|_| fmt::Error);
        write!(
            w,
            "{{\"time\":{},\"level\":{},\"msg\":{}",
            s(self.time)?,
            s(self.level)?,
            s(self.msg)?
        )?;
        for (k, v) in self.fields {
            write!(w, ",{}:", s(k)?)?;
            match v {
                Value::Str(v) => w.write_str(&s(v)?)?,
                Value::Raw(v) => w.write_str(v)?,
            }
        }
        w.write_char('}')
    }
}

/// A logfmt value: bare when it is a non-empty run of printable characters other than space,
/// `=` and `"`; otherwise quoted, with Go's escapes (as go-logfmt writes it).
fn logfmt_value(w: &mut impl fmt::Write, v: &str) -> fmt::Result {
    let bare = !v.is_empty()
        && v.chars()
            .all(|c| c > ' ' && c != '=' && c != '"' && c != '\u{7f}' && !c.is_control());
    if bare {
        return w.write_str(v);
    }
    w.write_char('"')?;
    for c in v.chars() {
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            c if c.is_control() => write!(w, "\\u{:04x}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    w.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(fields: &'a [(&'static str, Value)]) -> Line<'a> {
        Line {
            time: "2026-12-04T10:00:00.000000Z",
            level: "warn",
            msg: "upstream refused",
            fields,
        }
    }

    #[test]
    fn logfmt_quotes_only_what_needs_it() {
        let mut out = String::new();
        line(&[
            ("upstream", Value::Str("mimir".into())),
            ("status", Value::Raw("401".into())),
            ("body", Value::Str("bad \"token\"\nx=1 \\".into())),
            ("empty", Value::Str(String::new())),
            ("esc", Value::Str("\u{1b}[31m".into())),
        ])
        .logfmt(&mut out)
        .unwrap();
        assert_eq!(
            out,
            "time=2026-12-04T10:00:00.000000Z level=warn msg=\"upstream refused\" \
             upstream=mimir status=401 body=\"bad \\\"token\\\"\\nx=1 \\\\\" empty=\"\" \
             esc=\"\\u001b[31m\""
        );
    }

    #[test]
    fn json_keeps_numbers_and_escapes_strings() {
        let mut out = String::new();
        line(&[
            ("status", Value::Raw("401".into())),
            ("ok", Value::Raw("false".into())),
            ("body", Value::Str("a \"b\"\n".into())),
        ])
        .json(&mut out)
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["time"], "2026-12-04T10:00:00.000000Z");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "upstream refused");
        assert_eq!(v["status"], 401);
        assert_eq!(v["ok"], false);
        assert_eq!(v["body"], "a \"b\"\n");
        let keys: Vec<&str> = out
            .split(['{', ','])
            .map(|k| k.split(':').next().unwrap())
            .collect();
        assert_eq!(&keys[1..4], ["\"time\"", "\"level\"", "\"msg\""], "{out}");
    }

    #[test]
    fn formats_parse_from_their_flag_values() {
        for name in LogFormat::NAMES {
            assert!(name.parse::<LogFormat>().is_ok(), "{name}");
        }
        assert!("pretty".parse::<LogFormat>().is_err());
    }
}
