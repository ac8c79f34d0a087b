//! The report as people, bots and GitHub read it: a table, one JSON document, or workflow
//! commands (`::error file=…,line=…::…`) that GitHub shows on the pull request's diff.

use std::fmt::Write;

use super::report::{budget_line, thousands, Finding, Report, Retention, Severity};
use super::OutputFormat;

pub fn render(report: &Report, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => table(report),
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(report).unwrap_or_default();
            s.push('\n');
            s
        }
        OutputFormat::Github => github(report),
    }
}

fn tag(s: Severity) -> &'static str {
    match s {
        Severity::Fail => "FAIL",
        Severity::Warn => "WARN",
        Severity::Info => "info",
    }
}

fn kind(f: &Finding) -> String {
    serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn summary(r: &Report) -> String {
    let mut s = format!(
        "{} series exposed, {} sent{}",
        thousands(r.series.exposed),
        thousands(r.series.sent),
        if r.instances > 1 {
            format!(" (×{} instances)", r.instances)
        } else {
            String::new()
        }
    );
    if let Some(b) = &r.baseline {
        let _ = write!(s, "; {} added over {b}", thousands(r.series.added));
    }
    let _ = write!(s, "; {} admitted", thousands(r.series.admitted));
    s
}

fn hops(r: &Retention) -> String {
    if r.routes.is_empty() {
        return "no route takes them".into();
    }
    r.routes
        .iter()
        .map(|h| {
            let mut s = format!("{} → {}", h.route, h.upstreams.join(", "));
            if let Some(i) = &h.min_interval {
                let _ = write!(s, " (one sample per {i})");
            }
            if h.dropped_by_route_relabel {
                s.push_str(" (dropped by the route's relabel_configs)");
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "cardguard ci: {}", summary(r));
    if !r.findings.is_empty() {
        out.push('\n');
    }
    for f in &r.findings {
        let _ = write!(out, "{:<5} {:<13} {}", tag(f.severity), kind(f), f.message);
        if let Some(l) = &f.location {
            let _ = write!(out, "  [{}:{}]", l.file, l.line);
        }
        out.push('\n');
    }
    if !r.budgets.is_empty() {
        out.push_str("\nbudgets");
        if let Some(l) = &r.live {
            let _ = write!(out, " (current use from {l})");
        }
        out.push('\n');
        for b in &r.budgets {
            let _ = writeln!(
                out,
                "  {}{}",
                budget_line(b),
                if b.over { "  OVER" } else { "" }
            );
        }
    }
    if !r.retention.is_empty() {
        out.push_str("\nwhere the new series go\n");
        for t in &r.retention {
            let _ = writeln!(
                out,
                "  {} ({} series): {}",
                t.metric,
                thousands(t.series),
                hops(t)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nresult: {} (exit {})",
        r.result.to_uppercase(),
        r.exit_code
    );
    out
}

/// Workflow command values escape `%`, CR and LF; properties also `:` and `,`.
fn esc_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn esc_prop(s: &str) -> String {
    esc_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn github(r: &Report) -> String {
    let mut out = String::new();
    for f in &r.findings {
        let cmd = match f.severity {
            Severity::Fail => "error",
            Severity::Warn => "warning",
            Severity::Info => "notice",
        };
        let mut props = vec![format!(
            "title={}",
            esc_prop(&format!("cardguard ci: {}", kind(f)))
        )];
        if let Some(l) = &f.location {
            // A URL or stdin is no file in the repository.
            if l.file != "-" && !l.file.contains("://") {
                props.push(format!("file={}", esc_prop(&l.file)));
                props.push(format!("line={}", l.line));
            }
        }
        let _ = writeln!(out, "::{cmd} {}::{}", props.join(","), esc_data(&f.message));
    }
    for t in &r.retention {
        let _ = writeln!(
            out,
            "::notice title=cardguard ci%3A retention::{}",
            esc_data(&format!(
                "{} ({} new series): {}",
                t.metric,
                thousands(t.series),
                hops(t)
            ))
        );
    }
    for b in r.budgets.iter().filter(|b| !b.over) {
        let _ = writeln!(
            out,
            "::notice title=cardguard ci%3A budget::{}",
            esc_data(&budget_line(b))
        );
    }
    let _ = writeln!(
        out,
        "cardguard ci: {}: {} (exit {})",
        summary(r),
        r.result,
        r.exit_code
    );
    out
}
