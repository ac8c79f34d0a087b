//! End to end, differential: a real Prometheus 2.42 scrapes a target exposing request counters
//! and classic latency histograms (values that change every scrape) and remote-writes through
//! cardguard, which evaluates `rules/example.yml` (intervals shortened to 5 s) and forwards
//! the recorded series to a fake upstream. For every timestamp cardguard recorded, the test then
//! asks Prometheus's query API for each rule's expression at that timestamp and compares: the
//! same label sets, values equal to 1e-9 relative.
//!
//! Window edges (docs/protocol.md §4 and §6): cardguard has Prometheus 3 semantics, range
//! windows and the lookback left-open `(t-r, t]`; Prometheus 2.42 closes them `[t-r, t]`. The two differ only
//! when a sample sits exactly on `t-r` (or `t-5m`). Evaluation timestamps here are multiples of
//! 5 s, minus a 5 s offset; the test runs well under 5 minutes, so no sample is ever 5 m before
//! an evaluation timestamp: every window (`[5m]` ranges and the 5 m lookback) starts before the
//! first scrape. The right edge `t` is closed in both.
//!
//! Extrapolation at a series' start (found by this test): when a counter starts inside the
//! window, 2.x caps the extrapolation towards the window start at the time to reach zero
//! *before* deciding whether to extrapolate at all, 3.x after (docs/protocol.md §4), so the two
//! differ for small counters. Every counter here starts at a large base (one million), which
//! puts the time to zero far beyond the window in both versions: both then extrapolate by
//! half a scrape interval, and agree.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const REL_TOL: f64 = 1e-9;
const SERVICES: [&str; 2] = ["checkout", "search"];
const PODS: [&str; 3] = ["a", "b", "c"];
const CODES: [&str; 3] = ["200", "404", "503"];
const LES: [&str; 6] = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"];
/// Where every counter starts (see the module doc on extrapolation).
const COUNTER_BASE: u64 = 1_000_000;

/// The n-th scrape: counters that grow by a different amount per series and per scrape (with
/// a pseudo-random wobble), and a histogram whose shape drifts.
fn exposition(n: u64) -> String {
    let mut s = String::new();
    s.push_str("# TYPE http_requests_total counter\n");
    for (si, svc) in SERVICES.iter().enumerate() {
        for (pi, pod) in PODS.iter().enumerate() {
            for (ci, code) in CODES.iter().enumerate() {
                let base = (si * 31 + pi * 7 + ci * 3 + 1) as u64;
                let wobble = (n * (pi as u64 + 3) + ci as u64) % 5;
                let v = COUNTER_BASE + base * n * (3 - ci as u64) + n * wobble;
                s.push_str(&format!(
                    "http_requests_total{{service=\"{svc}\",pod=\"{pod}\",code=\"{code}\"}} {v}\n"
                ));
            }
        }
    }
    s.push_str("# TYPE http_request_duration_seconds histogram\n");
    for (si, svc) in SERVICES.iter().enumerate() {
        for (pi, pod) in PODS.iter().enumerate() {
            let mut cum = COUNTER_BASE;
            for (li, le) in LES.iter().enumerate() {
                // Per-scrape increments per bucket, varying with n so quantiles move.
                let inc = ((si + 1) * (li + 1) + pi) as u64 + (n + li as u64) % 4;
                cum += inc * n;
                s.push_str(&format!(
                    "http_request_duration_seconds_bucket{{service=\"{svc}\",pod=\"{pod}\",le=\"{le}\"}} {cum}\n"
                ));
            }
            s.push_str(&format!(
                "http_request_duration_seconds_sum{{service=\"{svc}\",pod=\"{pod}\"}} {}\n",
                cum as f64 * 0.173 + n as f64 * 0.5
            ));
            s.push_str(&format!(
                "http_request_duration_seconds_count{{service=\"{svc}\",pod=\"{pod}\"}} {cum}\n"
            ));
        }
    }
    s
}

/// Appended to the example's `groups:`: `_count` series are buffered and withheld.
const TIER_GROUP: &str = "
  - name: tier
    interval: 5s
    forward_inputs: false
    rules:
      - record: service:http_request_duration_seconds_count:sum
        expr: sum by (service) (http_request_duration_seconds_count)
";

struct Rule {
    record: String,
    expr: String,
    labels: Vec<(String, String)>,
}

/// The rules of `rules/example.yml`, read the simple way: each `record:` line, the `expr:`
/// (one line or a `|` block) and `labels:` entries after it.
fn example_rules(text: &str) -> Vec<Rule> {
    let mut rules = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if let Some(r) = l.strip_prefix("- record:") {
            let mut rule = Rule {
                record: r.trim().to_string(),
                expr: String::new(),
                labels: Vec::new(),
            };
            i += 1;
            while i < lines.len() && !lines[i].trim().starts_with("- ") {
                let t = lines[i].trim();
                if let Some(e) = t.strip_prefix("expr:") {
                    let e = e.trim();
                    if e == "|" {
                        let indent = lines[i + 1].len() - lines[i + 1].trim_start().len();
                        let mut body = Vec::new();
                        while i + 1 < lines.len()
                            && (lines[i + 1].trim().is_empty()
                                || lines[i + 1].len() - lines[i + 1].trim_start().len() >= indent)
                        {
                            i += 1;
                            body.push(lines[i].trim());
                        }
                        rule.expr = body.join(" ").trim().to_string();
                    } else {
                        rule.expr = e.to_string();
                    }
                } else if t == "labels:" {
                    while i + 1 < lines.len() && lines[i + 1].trim().contains(": ") {
                        let (k, v) = lines[i + 1].trim().split_once(": ").unwrap();
                        if k.starts_with('#') || k.starts_with("- ") {
                            break;
                        }
                        rule.labels.push((k.to_string(), v.to_string()));
                        i += 1;
                    }
                }
                if t.starts_with("- name:") || t.starts_with('#') && t.contains("forward_inputs") {
                    break;
                }
                i += 1;
            }
            rules.push(rule);
            continue;
        }
        i += 1;
    }
    rules
}

type Recorded = BTreeMap<(String, i64), BTreeMap<Labels, f64>>;

/// Recorded samples (stale markers left out) by (record, timestamp), from the fake upstream.
fn recorded(up: &Sink, records: &[String]) -> Recorded {
    let mut out = Recorded::new();
    for req in up.received() {
        let raw = rw::unsnappy(&req.body).expect("snappy");
        let (series, _) = rw::decode(&raw).expect("remote write 1.0");
        for s in series {
            let labels: Labels = s
                .labels
                .iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            let Some(name) = labels.get("__name__").cloned() else {
                continue;
            };
            if !records.contains(&name) {
                continue;
            }
            for (v, t) in s.samples {
                if v.to_bits() == 0x7ff0_0000_0000_0002 {
                    continue;
                }
                out.entry((name.clone(), t))
                    .or_default()
                    .insert(labels.clone(), v);
            }
        }
    }
    out
}

/// Prometheus's answer for `rule` at `t_ms`, relabelled as a recording rule would.
fn prometheus_answer(prom: &Prom, rule: &Rule, t_ms: i64) -> BTreeMap<Labels, f64> {
    let data = prom.query_data(&rule.expr, t_ms).expect("prometheus query");
    let mut out = BTreeMap::new();
    let result = data.get("result").unwrap();
    if data.get("resultType").and_then(|t| t.as_str()) == Some("scalar") {
        let v = result.as_array().unwrap()[1].as_str().unwrap();
        out.insert(
            labels(&[("__name__", &rule.record)]),
            parse_prom_float(v).unwrap(),
        );
        return out;
    }
    for s in result.as_array().unwrap() {
        let mut l = json_labels(s.get("metric").unwrap()).unwrap();
        l.insert("__name__".into(), rule.record.clone());
        for (k, v) in &rule.labels {
            l.insert(k.clone(), v.clone());
        }
        let v = s.get("value").unwrap().as_array().unwrap()[1]
            .as_str()
            .unwrap()
            .to_string();
        out.insert(l, parse_prom_float(&v).unwrap());
    }
    out
}

fn close(a: f64, b: f64) -> (bool, f64) {
    if a.is_nan() || b.is_nan() {
        return (a.is_nan() && b.is_nan(), 0.0);
    }
    if a == b {
        return (true, 0.0);
    }
    let rel = (a - b).abs() / a.abs().max(b.abs());
    (rel <= REL_TOL, rel)
}

/// What [`compare`] found.
struct Compared {
    compared: usize,
    timestamps: std::collections::BTreeSet<i64>,
    max_rel: f64,
    failures: Vec<String>,
}

/// Every recorded (record, timestamp) against Prometheus's answer for the rule's expression
/// at that timestamp: the same label sets, values within `REL_TOL`.
fn compare(prom: &Prom, rules: &[Rule], got: &Recorded) -> Compared {
    let mut c = Compared {
        compared: 0,
        timestamps: Default::default(),
        max_rel: 0.0,
        failures: Vec::new(),
    };
    for ((record, t), ours) in got {
        let rule = rules.iter().find(|r| &r.record == record).unwrap();
        let theirs = prometheus_answer(prom, rule, *t);
        c.timestamps.insert(*t);
        if ours.keys().collect::<Vec<_>>() != theirs.keys().collect::<Vec<_>>() {
            c.failures.push(format!(
                "{record} @ {t}: label sets differ\n  cardguard:  {:?}\n  prometheus: {:?}",
                ours.keys().map(fmt_labels).collect::<Vec<_>>(),
                theirs.keys().map(fmt_labels).collect::<Vec<_>>()
            ));
            continue;
        }
        for (l, v) in ours {
            let p = theirs[l];
            let (ok, rel) = close(*v, p);
            c.max_rel = c.max_rel.max(rel);
            c.compared += 1;
            if !ok {
                c.failures.push(format!(
                    "{} @ {t}: cardguard {v} prometheus {p} (rel {rel:e})",
                    fmt_labels(l)
                ));
            }
        }
    }
    c
}

#[test]
fn recorded_series_match_prometheus_query_answers() {
    let t0 = Instant::now();
    let dir = TestDir::new("rules");
    let example = std::fs::read_to_string(repo_root().join("rules/example.yml")).unwrap();
    let rules = example_rules(&example);
    assert_eq!(rules.len(), 7, "rules parsed from example.yml");
    // The example as users get it, evaluated every 5 s, plus an aggregation-tier group whose
    // raw inputs must not reach the upstream.
    std::fs::write(
        dir.join("example.yml"),
        example.replace("interval: 1m", "interval: 5s") + TIER_GROUP,
    )
    .unwrap();
    std::fs::write(
        dir.join("cardguard.yml"),
        "rule_files: [example.yml]\nrules:\n  query_offset: 5s\n",
    )
    .unwrap();

    let upstream = fake_upstream();
    let target = TestTarget::start_with(Arc::new(exposition));
    let cfg_path = dir.join("cardguard.yml");
    let mut cg = Cardguard::start(
        &dir,
        &upstream.write_url(),
        &["--config", cfg_path.to_str().unwrap()],
    );
    let prom = Prom::start(
        &dir,
        &PromConfig::new(&cg.write_url()).job("target", &target.addr()),
    );

    // ~35 s of scrapes: 6 or more evaluations per group after the first samples arrive.
    let records: Vec<String> = rules.iter().map(|r| r.record.clone()).collect();
    let got = poll_until(
        "cardguard to record 6 timestamps of the p99 rule",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            cg.proc.assert_running();
            let r = recorded(&upstream, &records);
            let p99 = r
                .keys()
                .filter(|(n, _)| n == "service:http_request_duration_seconds:p99_5m")
                .count();
            if p99 >= 6 {
                Ok(r)
            } else {
                Err(format!("{p99} timestamps so far, {} pairs in all", r.len()))
            }
        },
    );
    eprintln!("[rules] recorded after {:?}", t0.elapsed());
    assert!(target.scrapes() > 10);

    let Compared {
        compared,
        timestamps,
        max_rel,
        failures,
    } = compare(&prom, &rules, &got);
    eprintln!(
        "[rules] compared {compared} values over {} (record, timestamp) pairs, {} timestamps, \
         max relative error {max_rel:e}",
        got.len(),
        timestamps.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every rule produced something (the ratio and the quantiles included).
    for r in &records {
        assert!(
            got.keys().any(|(n, _)| n == r),
            "no samples recorded for {r}"
        );
    }
    assert!(compared >= 6 * 7, "only {compared} values compared");

    // forward_inputs: false: the tier's inputs never reached the upstream, its output did,
    // and everything else was forwarded.
    let mut raw_names = std::collections::BTreeSet::new();
    for req in upstream.received() {
        let (series, _) = rw::decode(&rw::unsnappy(&req.body).unwrap()).unwrap();
        for s in series {
            if let Some(n) = s.label("__name__") {
                raw_names.insert(String::from_utf8_lossy(n).into_owned());
            }
        }
    }
    assert!(!raw_names.contains("http_request_duration_seconds_count"));
    assert!(raw_names.contains("service:http_request_duration_seconds_count:sum"));
    assert!(raw_names.contains("http_request_duration_seconds_sum"));
    assert!(raw_names.contains("http_requests_total"));

    let m = cg.metrics_text();
    assert!(metric_sum(&m, "cardguard_rule_withheld_series_total").unwrap() > 0.0);
    assert!(metric_sum(&m, "cardguard_rule_evaluation_failures_total").unwrap_or(0.0) == 0.0);
    assert!(metric_sum(&m, "cardguard_rule_samples_buffered_total").unwrap() > 0.0);
    assert!(metric_sum(&m, "cardguard_rule_output_samples_sent_total").unwrap() > 0.0);
    cg.proc.assert_running();
}

/// Rules across a restart: the same differential comparison, with cardguard stopped (SIGTERM,
/// final snapshot) and started again on the same `storage.path` in the middle. The rule
/// buffers and group states come back, so every evaluation after the restart (whose `[5m]`
/// windows reach back before it) still equals Prometheus's answer.
#[test]
fn recorded_series_match_prometheus_across_a_restart() {
    let t0 = Instant::now();
    let dir = TestDir::new("rules-restart");
    let example = std::fs::read_to_string(repo_root().join("rules/example.yml")).unwrap();
    let rules = example_rules(&example);
    std::fs::write(
        dir.join("example.yml"),
        example.replace("interval: 1m", "interval: 5s") + TIER_GROUP,
    )
    .unwrap();
    std::fs::write(
        dir.join("cardguard.yml"),
        format!(
            "rule_files: [example.yml]\nrules:\n  query_offset: 5s\n\
             storage:\n  path: {}\n  snapshot_interval: 1s\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    let upstream = fake_upstream();
    let target = TestTarget::start_with(Arc::new(exposition));
    let cfg_path = dir.join("cardguard.yml");
    let up = upstream.write_url();
    let args = ["--upstream", &up, "--config", cfg_path.to_str().unwrap()];
    let mut cg = Cardguard::start_args(&dir, &args);
    let prom = Prom::start(
        &dir,
        &PromConfig::new(&cg.write_url()).job("target", &target.addr()),
    );
    let records: Vec<String> = rules.iter().map(|r| r.record.clone()).collect();
    let p99 = "service:http_request_duration_seconds:p99_5m";
    let p99_after =
        |r: &Recorded, after: i64| r.keys().filter(|(n, t)| n == p99 && *t > after).count();
    poll_until(
        "cardguard to record 3 timestamps of the p99 rule before the restart",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            cg.proc.assert_running();
            match p99_after(&recorded(&upstream, &records), 0) {
                n if n >= 3 => Ok(()),
                n => Err(format!("{n} timestamps")),
            }
        },
    );
    let port = cg.port;
    cg.proc.stop("TERM", Duration::from_secs(20));
    let restarted_at = now_ms();
    let mut cg = Cardguard::start_on_port(&dir, port, &args);
    eprintln!("[rules] restarted after {:?}", t0.elapsed());
    let got = poll_until(
        "cardguard to record 4 timestamps of the p99 rule after the restart",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            cg.proc.assert_running();
            let r = recorded(&upstream, &records);
            match p99_after(&r, restarted_at) {
                n if n >= 4 => Ok(r),
                n => Err(format!("{n} timestamps")),
            }
        },
    );
    assert!(
        cg.proc
            .log_text()
            .contains("state restored from the snapshot"),
        "{}",
        cg.proc.log_text()
    );
    let after: Recorded = got
        .iter()
        .filter(|((_, t), _)| *t > restarted_at)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let c = compare(&prom, &rules, &got);
    let c_after = compare(&prom, &rules, &after);
    eprintln!(
        "[rules] across a restart: compared {} values ({} after it) over {} timestamps, max \
         relative error {:e}",
        c.compared,
        c_after.compared,
        c.timestamps.len(),
        c.max_rel
    );
    assert!(c.failures.is_empty(), "{}", c.failures.join("\n"));
    for r in &records {
        assert!(
            after.keys().any(|(n, _)| n == r),
            "no samples recorded for {r} after the restart"
        );
    }
    assert!(
        c_after.compared >= 4 * 7,
        "only {} values compared after the restart",
        c_after.compared
    );
    cg.proc.assert_running();
}
