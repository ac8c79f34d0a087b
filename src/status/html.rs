//! The page as HTML: one self-contained document (inline CSS, no script, no external asset, so
//! it works on an air-gapped network), refreshing itself every `REFRESH_SECONDS`. Every value
//! that comes from a sender or the config (service names, tenants, metric and label names,
//! file names) goes through `esc`: a hostile service name is text, never markup.
//!
//! The test hooks are attributes: each service row carries `data-service`, `data-tenant`,
//! `data-fill` (active / budget) and `data-exploding`; each bar's width is an inline style.

use std::fmt::Write;

use super::history::{EXPLOSION_BUDGET_SHARE_PER_HOUR, EXPLOSION_FACTOR, EXPLOSION_MIN_NEW};
use super::view::{GroupView, GuardView, Row, UpstreamView, View};
use crate::series::Reason;

pub const REFRESH_SECONDS: u32 = 10;

/// Where the runbook is served (`docs/runbook.md`, compiled in).
pub const RUNBOOK_PATH: &str = "/runbook";

const STYLE: &str = r#"
:root{--fg:#1d2330;--muted:#5b6475;--bg:#f6f7f9;--card:#fff;--line:#dde1e8;--ok:#2e8b57;--warn:#d48a00;--bad:#c62828;--bar:#3d7be0}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.5rem 1.5rem;padding:.8rem 1.2rem;background:#1d2330;color:#fff}
header h1{margin:0;font-size:1.25rem}
header .ver{color:#aeb6c6}
header nav{margin-left:auto;display:flex;gap:1rem;flex-wrap:wrap}
header a{color:#cfe0ff}
main{padding:1rem 1.2rem;max-width:1400px;margin:0 auto}
section{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.8rem 1rem;margin-bottom:1rem}
h2{font-size:1.05rem;margin:.1rem 0 .6rem}
p.sum{margin:.2rem 0 .7rem;color:var(--muted)}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.8rem;color:var(--muted);font-weight:600;white-space:nowrap}
td.n{font-variant-numeric:tabular-nums;white-space:nowrap}
.name{font-weight:600;overflow-wrap:anywhere}
.tenant{color:var(--muted);font-size:.85em}
.bar{position:relative;height:.8rem;min-width:8rem;background:#e9edf3;border-radius:3px;overflow:hidden}
.bar>span{display:block;height:100%;background:var(--bar)}
.bar>span.hi{background:var(--warn)}
.bar>span.over{background:var(--bad)}
.bar.demand>span{background:#8aa7d6}
.under{font-size:.8rem;color:var(--muted);white-space:nowrap}
.badge{display:inline-block;padding:0 .4rem;border-radius:3px;font-size:.75rem;font-weight:700;color:#fff;margin-left:.3rem}
.boom{background:var(--bad)}
.full{background:var(--warn)}
.ok{color:var(--ok);font-weight:600}
.fail{color:var(--bad);font-weight:600}
.idle{color:var(--muted)}
tr.exploding{background:#fff1f0}
code{font:12px/1.3 ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere}
dl.notes{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.8rem 0 0;color:var(--muted);font-size:.85rem}
dl.notes dt{font-weight:600}
dl.notes dd{margin:0}
footer{color:var(--muted);font-size:.8rem;padding:0 1.2rem 1rem;text-align:center}
@media (max-width:760px){
 main{padding:.5rem}
 section{padding:.6rem}
 table,thead,tbody,tr,td{display:block;width:100%}
 thead{display:none}
 tr{border:1px solid var(--line);border-radius:6px;margin-bottom:.6rem;padding:.3rem .5rem}
 td{border:0;padding:.2rem 0;display:flex;gap:.6rem;justify-content:space-between}
 td::before{content:attr(data-label);color:var(--muted);font-size:.8rem;flex:0 0 7.5rem}
 td>*{flex:1}
 .bar{min-width:0}
 dl.notes{grid-template-columns:1fr}
}
"#;

/// Escape text for HTML content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole document.
pub fn render(v: &View) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>cardguard {ver} status</title><style>{STYLE}</style></head><body>\
         <header><h1>cardguard</h1><span class=\"ver\">{ver}</span>\
         <span class=\"ver\">{now}</span><nav>\
         <a href=\"/metrics\">/metrics</a>\
         <a href=\"/api/v1/cardinality\">/api/v1/cardinality</a>\
         <a href=\"{RUNBOOK_PATH}\">runbook</a></nav></header><main>",
        ver = esc(v.version),
        now = utc(v.now_ms / 1000),
    );
    match &v.guard {
        Some(g) => services(&mut o, g),
        None => o.push_str(
            "<section id=\"services\"><h2>Services</h2><p class=\"sum\">The guard is off: \
             every series is forwarded. Configure <code>guard:</code> or pass \
             <code>--max-series-per-service</code> to give each service a budget.</p></section>",
        ),
    }
    upstreams(&mut o, &v.upstreams, v.now_ms);
    groups(&mut o, &v.groups, v.now_ms);
    config(&mut o, v);
    let _ = writeln!(
        o,
        "</main><footer>Refreshes every {REFRESH_SECONDS} s. Rates are taken between this \
         view and the counters sampled over the last minute.</footer></body></html>"
    );
    o
}

fn services(o: &mut String, g: &GuardView) {
    let r = &g.report;
    let exploding = g.rows.iter().filter(|r| r.exploding()).count();
    let _ = write!(
        o,
        "<section id=\"services\"><h2>Services</h2><p class=\"sum\">{active} active series \
         across {owners} owner{s}{cap}; window {window}; {exploding} exploding now. Closest \
         to the budget first.</p>",
        active = r.active_total,
        owners = r.owners_total,
        s = if r.owners_total == 1 { "" } else { "s" },
        cap = r
            .max_series
            .map(|m| format!(" (global cap {m}, {:.0} % used)", pct(r.active_total, m)))
            .unwrap_or_default(),
        window = duration(r.window_seconds as f64),
    );
    o.push_str(
        "<table class=\"services\"><thead><tr><th>service</th><th>budget use</th>\
         <th>demand</th><th>samples/s</th><th>drops/s by reason</th><th>new series/s</th>\
         <th>action</th><th>top metric</th><th>top label</th></tr></thead><tbody>",
    );
    for row in &g.rows {
        service_row(o, row);
    }
    o.push_str("</tbody></table>");
    let _ = write!(
        o,
        "<dl class=\"notes\"><dt>other</dt><dd>The owners past the {reported} largest \
         (<code>max_reported_services</code>), summed into one row: their budgets added up, \
         their actions mixed. Owners past <code>max_owners</code> ({max_owners}) share one \
         budget under the same name.</dd>\
         <dt>unowned</dt><dd>Series that carry none of the owner labels ({labels}); they \
         have the <code>unowned_budget</code>.</dd>\
         <dt>exploding</dt><dd>At least {min} new series within the last minute, at least \
         {factor}× its new-series rate over the rest of the last hour (when there is an hour \
         of history), and fast enough to bring {share:.0} % of its budget in an hour. New \
         series count those refused too (the demand sketch).</dd>\
         <dt>demand</dt><dd>Distinct series that arrived within the window, admitted or not \
         (HyperLogLog, ±1 %).</dd></dl></section>",
        reported = g.max_reported_services,
        max_owners = g.max_owners,
        labels = g
            .owner_labels
            .iter()
            .map(|l| format!("<code>{}</code>", esc(l)))
            .collect::<Vec<_>>()
            .join(", "),
        min = EXPLOSION_MIN_NEW,
        factor = EXPLOSION_FACTOR,
        share = EXPLOSION_BUDGET_SHARE_PER_HOUR * 100.0,
    );
}

fn service_row(o: &mut String, row: &Row) {
    let r = &row.report;
    let fill = r.fill();
    let boom = row.exploding();
    let _ = write!(
        o,
        "<tr class=\"svc{cls}\" data-service=\"{svc}\" data-tenant=\"{tenant}\" \
         data-fill=\"{fill}\" data-exploding=\"{boom}\"><td data-label=\"service\">\
         <span class=\"name\">{svc}</span>{badge}{tenant_line}</td>",
        cls = if boom { " exploding" } else { "" },
        svc = esc(&r.service),
        tenant = esc(r.tenant.as_deref().unwrap_or("")),
        fill = if fill.is_finite() {
            format!("{fill:.4}")
        } else {
            "inf".into()
        },
        badge = if boom {
            "<span class=\"badge boom\">exploding</span>"
        } else if fill >= 1.0 {
            "<span class=\"badge full\">at budget</span>"
        } else {
            ""
        },
        tenant_line = r
            .tenant
            .as_deref()
            .map(|t| format!("<div class=\"tenant\">tenant {}</div>", esc(t)))
            .unwrap_or_default(),
    );
    // Budget bar: active / budget.
    let _ = write!(
        o,
        "<td data-label=\"budget use\"><div>{bar}<div class=\"under\">{a} / {b} \
         ({p})</div></div></td>",
        bar = bar("budget", fill),
        a = r.active,
        b = r.budget,
        p = percent(fill),
    );
    match r.demand {
        Some(d) => {
            let f = if r.budget == 0 {
                f64::INFINITY
            } else {
                d / r.budget as f64
            };
            let _ = write!(
                o,
                "<td data-label=\"demand\"><div>{bar}<div class=\"under\">{d:.0} ({p} of \
                 budget)</div></div></td>",
                bar = bar("demand", f),
                p = percent(f),
            );
        }
        None => o.push_str("<td data-label=\"demand\"><span class=\"idle\">—</span></td>"),
    }
    match &row.rates {
        Some(rt) => {
            let _ = write!(
                o,
                "<td class=\"n\" data-label=\"samples/s\">{}</td>",
                rate(rt.samples_per_s)
            );
            let drops: Vec<String> = Reason::ALL
                .iter()
                .filter(|reason| rt.dropped_per_s[reason.index()] > 0.0)
                .map(|reason| {
                    format!(
                        "{} <code>{}</code>",
                        rate(rt.dropped_per_s[reason.index()]),
                        reason.as_str()
                    )
                })
                .collect();
            let _ = write!(
                o,
                "<td class=\"n\" data-label=\"drops/s\">{}</td>",
                if drops.is_empty() {
                    "0".to_string()
                } else {
                    drops.join("<br>")
                }
            );
            let _ = write!(
                o,
                "<td class=\"n\" data-label=\"new series/s\">{now}<div class=\"under\">hour: \
                 {base}</div></td>",
                now = rate(rt.new_series_per_s),
                base = rt
                    .baseline_per_s
                    .map_or_else(|| "not enough history".to_string(), rate),
            );
        }
        None => o.push_str(
            "<td class=\"n\" data-label=\"samples/s\"><span class=\"idle\">—</span></td>\
             <td class=\"n\" data-label=\"drops/s\"><span class=\"idle\">—</span></td>\
             <td class=\"n\" data-label=\"new series/s\"><span class=\"idle\">— (needs a \
             second look)</span></td>",
        ),
    }
    let _ = write!(
        o,
        "<td data-label=\"action\">{}</td>{}{}</tr>",
        esc(r.action),
        top("top metric", r.top_metrics.first()),
        top("top label", r.top_labels.first()),
    );
}

fn top(label: &str, t: Option<&crate::guard::report::Top>) -> String {
    match t {
        Some(t) => format!(
            "<td data-label=\"{label}\"><div><code>{}</code><div class=\"under\">{:.0} \
             distinct</div></div></td>",
            esc(&t.name),
            t.estimate
        ),
        None => format!("<td data-label=\"{label}\"><span class=\"idle\">—</span></td>"),
    }
}

/// A bar `fill` wide (capped at the full width; the exact ratio is in the text beside it).
fn bar(kind: &str, fill: f64) -> String {
    let width = if fill.is_finite() {
        (fill * 100.0).clamp(0.0, 100.0)
    } else {
        100.0
    };
    let cls = if fill > 1.0 {
        "over"
    } else if fill >= 0.9 {
        "hi"
    } else {
        ""
    };
    format!(
        "<div class=\"bar {kind}\" role=\"img\" aria-label=\"{kind} {p}\"><span class=\"{cls}\" \
         style=\"width:{width:.1}%\"></span></div>",
        p = percent(fill),
    )
}

fn upstreams(o: &mut String, ups: &[UpstreamView], now_ms: i64) {
    o.push_str(
        "<section id=\"upstreams\"><h2>Upstreams</h2><table><thead><tr><th>upstream</th>\
         <th>state</th><th>last success</th><th>last error</th><th>latency</th>\
         <th>requests/s</th><th>requests, errors</th></tr></thead><tbody>",
    );
    if ups.is_empty() {
        o.push_str("<tr><td colspan=\"7\" class=\"idle\">none configured</td></tr>");
    }
    for u in ups {
        let s = &u.state;
        let failing = match (&s.last_error, s.last_success_ms) {
            (Some((_, e)), Some(ok)) => *e > ok,
            (Some(_), None) => true,
            _ => false,
        };
        let state = if failing {
            format!(
                "<span class=\"fail\">failing ({})</span>",
                esc(s.last_error.as_ref().map_or("", |(c, _)| c.as_str()))
            )
        } else if s.last_success_ms.is_some() {
            "<span class=\"ok\">ok</span>".to_string()
        } else {
            "<span class=\"idle\">no traffic seen yet</span>".to_string()
        };
        let _ = write!(
            o,
            "<tr class=\"upstream\" data-upstream=\"{name}\" data-failing=\"{failing}\">\
             <td data-label=\"upstream\"><div><span class=\"name\">{name}</span>\
             <div class=\"under\"><code>{url}</code> · remote write {ver} · timeout {to}</div>\
             </div></td><td data-label=\"state\">{state}</td>\
             <td data-label=\"last success\">{ok}</td><td data-label=\"last error\">{err}</td>\
             <td class=\"n\" data-label=\"latency\">{lat}</td>\
             <td class=\"n\" data-label=\"requests/s\">{rps}</td>\
             <td class=\"n\" data-label=\"requests, errors\">{req}, {errs}</td></tr>",
            name = esc(&u.name),
            url = esc(&u.url),
            ver = esc(&u.version),
            to = duration(u.timeout_s),
            ok = s
                .last_success_ms
                .map_or_else(|| "—".into(), |t| ago(now_ms, t)),
            err = s.last_error.as_ref().map_or_else(
                || "—".into(),
                |(c, t)| format!("<code>{}</code> {}", esc(c), ago(now_ms, *t))
            ),
            lat = s
                .latency_s
                .map_or_else(|| "—".into(), |l| format!("{:.1} ms", l * 1000.0)),
            rps = s.requests_per_s.map_or_else(|| "—".into(), rate),
            req = u.requests_total,
            errs = u.errors_total,
        );
    }
    o.push_str("</tbody></table></section>");
}

fn groups(o: &mut String, groups: &[GroupView], now_ms: i64) {
    o.push_str("<section id=\"rules\"><h2>Recording rules</h2>");
    if groups.is_empty() {
        o.push_str(
            "<p class=\"sum\">No rule groups loaded (<code>rule_files:</code> or \
             <code>--rules</code>).</p></section>",
        );
        return;
    }
    o.push_str(
        "<table><thead><tr><th>group</th><th>rules</th><th>interval</th>\
         <th>last evaluation</th><th>duration</th><th>evaluations</th><th>failures</th>\
         </tr></thead><tbody>",
    );
    for g in groups {
        let _ = write!(
            o,
            "<tr class=\"group\" data-group=\"{key}\"><td data-label=\"group\"><div>\
             <span class=\"name\">{name}</span><div class=\"under\"><code>{file}</code></div>\
             </div></td><td class=\"n\" data-label=\"rules\">{rules}</td>\
             <td class=\"n\" data-label=\"interval\">{interval}</td>\
             <td data-label=\"last evaluation\">{last}</td>\
             <td class=\"n\" data-label=\"duration\">{dur}</td>\
             <td class=\"n\" data-label=\"evaluations\">{evals}</td>\
             <td class=\"n\" data-label=\"failures\">{fail}</td></tr>",
            key = esc(&g.key),
            name = esc(&g.name),
            file = esc(&g.file),
            rules = g.rules,
            interval = duration(g.interval_s),
            last = g.last_evaluation_s.map_or_else(
                || "<span class=\"idle\">not yet</span>".into(),
                |t| ago(now_ms, (t * 1000.0) as i64)
            ),
            dur = g
                .last_duration_s
                .map_or_else(|| "—".into(), |d| format!("{:.1} ms", d * 1000.0)),
            evals = g.evaluations,
            fail = if g.failures_recent > 0 {
                format!(
                    "<span class=\"fail\">{} in the last minute</span> ({} in all; see the log)",
                    g.failures_recent, g.failures_total
                )
            } else {
                g.failures_total.to_string()
            },
        );
    }
    o.push_str("</tbody></table></section>");
}

fn config(o: &mut String, v: &View) {
    let c = &v.config;
    let _ = write!(
        o,
        "<section id=\"config\"><h2>Configuration</h2><dl class=\"notes\">\
         <dt>file</dt><dd>{file}</dd><dt>last reload</dt><dd>{reload}</dd>\
         <dt>version</dt><dd>cardguard {ver}</dd></dl></section>",
        file = c.file.as_deref().map_or_else(
            || "none (flags only)".to_string(),
            |f| format!("<code>{}</code>", esc(f))
        ),
        reload = if c.last_reload_ok {
            format!(
                "<span class=\"ok\">ok</span>, config in force since {}",
                utc(c.last_reload_success_s)
            )
        } else {
            format!(
                "<span class=\"fail\">failed</span>: the previous config is kept (in force \
                 since {}); the log says why",
                utc(c.last_reload_success_s)
            )
        },
        ver = esc(v.version),
    );
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

fn percent(f: f64) -> String {
    if f.is_finite() {
        format!("{:.0} %", f * 100.0)
    } else {
        "no budget".into()
    }
}

fn rate(r: f64) -> String {
    if r == 0.0 {
        "0".into()
    } else if r < 10.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.0}")
    }
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0 => format!("{:.0} ms", secs * 1000.0),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn ago(now_ms: i64, then_ms: i64) -> String {
    let s = (now_ms - then_ms).max(0) / 1000;
    let rel = match s {
        0 => "just now".to_string(),
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    };
    format!("<span title=\"{}\">{rel}</span>", utc(then_ms / 1000))
}

/// `YYYY-MM-DD hh:mm:ss UTC` (days to civil date: Howard Hinnant's algorithm).
pub fn utc(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
