//! End to end, differential, over native histograms: a real Prometheus 2.42
//! (`--enable-feature=native-histograms`, so it scrapes the protobuf format) scrapes a target
//! exposing native histograms and remote-writes them (`send_native_histograms: true`) through
//! cardguard, which evaluates histogram recording rules every 5 s and forwards everything to a
//! second Prometheus 2.42, a remote-write receiver that stores native histograms (VictoriaMetrics
//! 1.79 does not). For every (rule, timestamp) the receiver holds, the test asks the first
//! Prometheus's query API for the same expression at that timestamp and compares: the same
//! label sets, floats within 1e-9 relative, histograms bucket by bucket (bounds and counts),
//! count and sum within 1e-9 relative.
//!
//! The data: 4 series (2 services × 2 pods) of integer histograms, schema 3, positive buckets
//! with a gap (two spans), negative buckets, a zero bucket (threshold 0.01), every bucket
//! growing every scrape. Mid-run, `checkout`/`b` is reset (its counts start again) at scrape
//! [`RESET_AT`], and `search`/`b` halves its resolution (schema 3 → 2, its buckets merged in
//! pairs as a client does when it has too many) at scrape [`SCHEMA_AT`]; the run records
//! evaluations whose `[1m]` windows hold both. Next to them, a float counter and a float rule.
//!
//! Where Prometheus 2.42 and Prometheus 3 (cardguard's semantics, docs/protocol.md §4) differ,
//! the test says how it compares:
//!
//! - Window edges: 2.42's range windows are closed `[t-1m, t]`, 3's left-open. A timestamp
//!   with a scrape exactly at `t-1m` is left out of the comparison and counted (the run is
//!   about as long as the window, so it is rare).
//! - `histogram_quantile` interpolates linearly inside a bucket in 2.42 and exponentially in
//!   3 (within the zero bucket linearly in both). The reference is computed from Prometheus's
//!   own answer for the inner histogram (`sum by (service) (rate(...))`, itself compared bucket
//!   by bucket as a rule of its own) with 3's interpolation. The same computation with linear
//!   interpolation must give 2.42's own `histogram_quantile` answer: a check that the test reads
//!   the buckets and finds the rank as Prometheus does.
//! - `histogram_fraction` also interpolates exponentially in 3. Here no series ever has an
//!   observation in the buckets around 0.1 (at schema 3 or 2), and 0 lies in the zero bucket
//!   (linear in both), so 2.42's answer is the reference as it is.
//! - `histogram_avg` and `histogram_stddev` do not exist in 2.42. `histogram_avg(x)` is defined
//!   as `histogram_sum(x) / histogram_count(x)`, which 2.42 evaluates; `histogram_stddev` is
//!   computed from Prometheus's inner histogram as Prometheus 3 defines it (geometric bucket
//!   means, 0 in the zero bucket).
//!
//! Prometheus 2.42 and cardguard both reduce to the coarser schema when `sum by (service)` adds
//! `search`/`b` (schema 2 after the change) to `search`/`a` (schema 3), and when `rate` spans the
//! change.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REL_TOL: f64 = 1e-9;
const SERVICES: [&str; 2] = ["checkout", "search"];
const PODS: [&str; 2] = ["a", "b"];
const ZERO_THRESHOLD: f64 = 0.01;
/// From this scrape on, `checkout`/`b` counts from zero again.
const RESET_AT: u64 = 12;
/// From this scrape on, `search`/`b` exposes schema 2 instead of 3.
const SCHEMA_AT: u64 = 20;
/// Scrapes to wait for before the last evaluation that counts.
const SCRAPES: u64 = 30;
const INNER: &str = "sum by (service) (rate(rpc_duration_seconds[1m]))";

/// Schema-3 indices of the positive buckets that get observations: (0.0144, 2], except
/// (0.0841, 0.1187] (indices −28..=−25; −13 and −14 at schema 2), which stays empty so that
/// `histogram_fraction(0, 0.1, ...)` never interpolates inside an exponential bucket.
fn positive_indices() -> impl Iterator<Item = i32> {
    (-48..=-29).chain(-24..=8)
}

/// Schema-3 indices of the negative buckets: observations in [−1, −0.46).
fn negative_indices() -> impl Iterator<Item = i32> {
    -8..=0
}

/// Observations in bucket `idx` (`i32::MIN`: the zero bucket) of series `k` at scrape `n`: at
/// least one, varying with the scrape so that quantiles move.
fn observations(k: usize, idx: i32, n: u64) -> u64 {
    if idx == i32::MIN {
        return 2 + (k as u64 + n) % 3;
    }
    1 + (k as u64 * 7 + (idx + 100) as u64 * 3 + n * (k as u64 + 1)) % 5
}

/// The value each observation in bucket `idx` of sign `sign` had (inside the bucket).
fn observed_value(idx: i32, sign: f64) -> f64 {
    sign * 0.97 * bound(idx, 3)
}

/// Series `k`'s histogram at scrape `n`: cumulative counts since its (re)start.
fn histogram(k: usize, n: u64) -> client::Histogram {
    let reset = SERVICES[k / 2] == "checkout" && PODS[k % 2] == "b";
    let first = if reset && n >= RESET_AT { RESET_AT } else { 1 };
    let coarse = SERVICES[k / 2] == "search" && PODS[k % 2] == "b" && n >= SCHEMA_AT;
    let mut pos: BTreeMap<i32, u64> = BTreeMap::new();
    let mut neg: BTreeMap<i32, u64> = BTreeMap::new();
    let (mut zero, mut sum) = (0u64, 0f64);
    for m in first..=n {
        for i in positive_indices() {
            let c = observations(k, i, m);
            *pos.entry(i).or_default() += c;
            sum += c as f64 * observed_value(i, 1.0);
        }
        for i in negative_indices() {
            let c = observations(k, i - 50, m);
            *neg.entry(i).or_default() += c;
            sum += c as f64 * observed_value(i, -1.0);
        }
        zero += observations(k, i32::MIN, m);
    }
    let count = zero + pos.values().sum::<u64>() + neg.values().sum::<u64>();
    let schema = if coarse { 2 } else { 3 };
    // Halving the resolution: schema-3 buckets 2j−1 and 2j become schema-2 bucket j.
    let reduce = |b: BTreeMap<i32, u64>| -> Vec<(i32, u64)> {
        let mut out: BTreeMap<i32, u64> = BTreeMap::new();
        for (i, c) in b {
            let j = if coarse { ((i - 1) >> 1) + 1 } else { i };
            *out.entry(j).or_default() += c;
        }
        out.into_iter().collect()
    };
    let (positive_span, positive_delta) = spans_and_deltas(&reduce(pos));
    let (negative_span, negative_delta) = spans_and_deltas(&reduce(neg));
    client::Histogram {
        sample_count: count,
        sample_sum: sum,
        schema,
        zero_threshold: ZERO_THRESHOLD,
        zero_count: zero,
        negative_span,
        negative_delta,
        positive_span,
        positive_delta,
    }
}

fn label_pairs(k: usize) -> Vec<client::LabelPair> {
    [("pod", PODS[k % 2]), ("service", SERVICES[k / 2])]
        .iter()
        .map(|(n, v)| client::LabelPair {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// Series `k`'s float counter at scrape `n`: far from zero (docs/protocol.md §4 on the zero
/// cap), strictly increasing, so its value tells which scrape Prometheus stored.
fn requests(k: usize, n: u64) -> f64 {
    (1_000_000 + (k as u64 + 1) * 3 * n + n * (k as u64 + 2) % 7) as f64
}

/// The n-th scrape: the histograms and a float counter per series.
fn exposition(n: u64) -> Vec<client::MetricFamily> {
    let series = 0..SERVICES.len() * PODS.len();
    vec![
        client::MetricFamily {
            name: "rpc_duration_seconds".into(),
            help: "RPC latency.".into(),
            r#type: client::HISTOGRAM,
            metric: series
                .clone()
                .map(|k| client::Metric {
                    label: label_pairs(k),
                    counter: None,
                    histogram: Some(histogram(k, n)),
                })
                .collect(),
        },
        client::MetricFamily {
            name: "rpc_requests_total".into(),
            help: "RPCs served.".into(),
            r#type: client::COUNTER,
            metric: series
                .map(|k| client::Metric {
                    label: label_pairs(k),
                    counter: Some(client::Counter {
                        value: requests(k, n),
                    }),
                    histogram: None,
                })
                .collect(),
        },
    ]
}

/// How the test obtains Prometheus's answer for a rule (see the module doc).
enum Reference {
    /// Prometheus evaluates the rule's expression.
    Same,
    /// An expression 2.42 can evaluate that is the rule's by definition.
    Equivalent(&'static str),
    /// Computed from Prometheus's histogram answer for [`INNER`].
    FromInner(fn(&Histo) -> f64),
}

struct Rule {
    record: &'static str,
    expr: &'static str,
    reference: Reference,
}

fn rules() -> Vec<Rule> {
    use Reference::*;
    vec![
        Rule {
            record: "service:rpc_duration_seconds:p90_1m",
            expr: "histogram_quantile(0.9, sum by (service) (rate(rpc_duration_seconds[1m])))",
            reference: FromInner(|h| quantile(h, 0.9, true)),
        },
        Rule {
            record: "rpc_duration_seconds:count_rate1m",
            expr: "histogram_count(rate(rpc_duration_seconds[1m]))",
            reference: Same,
        },
        Rule {
            record: "service:rpc_duration_seconds:sum_rate1m",
            expr: "histogram_sum(sum by (service) (rate(rpc_duration_seconds[1m])))",
            reference: Same,
        },
        Rule {
            record: "service:rpc_duration_seconds:fraction_under_100ms_1m",
            expr: "histogram_fraction(0, 0.1, sum by (service) (rate(rpc_duration_seconds[1m])))",
            reference: Same,
        },
        Rule {
            record: "service:rpc_duration_seconds:avg_1m",
            expr: "histogram_avg(sum by (service) (rate(rpc_duration_seconds[1m])))",
            reference: Equivalent(
                "histogram_sum(sum by (service) (rate(rpc_duration_seconds[1m]))) / \
                 histogram_count(sum by (service) (rate(rpc_duration_seconds[1m])))",
            ),
        },
        Rule {
            record: "service:rpc_duration_seconds:stddev_1m",
            expr: "histogram_stddev(sum by (service) (rate(rpc_duration_seconds[1m])))",
            reference: FromInner(stddev),
        },
        Rule {
            record: "service:rpc_duration_seconds:rate1m",
            expr: INNER,
            reference: Same,
        },
        Rule {
            record: "rpc_duration_seconds:increase1m",
            expr: "increase(rpc_duration_seconds[1m])",
            reference: Same,
        },
        Rule {
            record: "service:rpc_requests:rate1m",
            expr: "sum by (service) (rate(rpc_requests_total[1m]))",
            reference: Same,
        },
    ]
}

/// `histogram_quantile` over Prometheus's buckets (`promql/quantile.go`): the first bucket
/// whose cumulative count reaches `q × count`, the zero bucket's lower (upper) bound moved to 0
/// when there are only positive (negative) buckets, then interpolation inside the bucket:
/// linearly (2.42; and in the zero bucket always) or exponentially (Prometheus 3).
fn quantile(h: &Histo, q: f64, exponential: bool) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if h.count == 0.0 || q.is_nan() || h.buckets.is_empty() {
        return f64::NAN;
    }
    let mut rank = q * h.count;
    let mut count = 0.0;
    let mut b = h.buckets[0];
    for bucket in &h.buckets {
        b = *bucket;
        count += b.count;
        if count >= rank {
            break;
        }
    }
    let has_negative = h.buckets.iter().any(|b| b.upper < 0.0);
    let has_positive = h.buckets.iter().any(|b| b.lower > 0.0);
    if b.lower < 0.0 && b.upper > 0.0 {
        if !has_negative && has_positive {
            b.lower = 0.0;
        } else if !has_positive && has_negative {
            b.upper = 0.0;
        }
    }
    rank -= count - b.count;
    let fraction = rank / b.count;
    if !exponential || (b.lower <= 0.0 && b.upper >= 0.0) {
        return b.lower + (b.upper - b.lower) * fraction;
    }
    let (log_lower, log_upper) = (b.lower.abs().log2(), b.upper.abs().log2());
    if b.lower > 0.0 {
        (log_lower + (log_upper - log_lower) * fraction).exp2()
    } else {
        -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2()
    }
}

/// `histogram_stddev` as Prometheus 3 defines it (`histogramVariance` in
/// `promql/functions.go`): each bucket's observations at its geometric mean (0 in the zero
/// bucket), around the mean `sum / count`.
fn stddev(h: &Histo) -> f64 {
    let mean = h.sum / h.count;
    let mut variance = 0.0;
    for b in &h.buckets {
        let v = if b.lower <= 0.0 && b.upper >= 0.0 {
            0.0
        } else if b.upper < 0.0 {
            -(b.upper * b.lower).sqrt()
        } else {
            (b.upper * b.lower).sqrt()
        };
        variance += b.count * (v - mean) * (v - mean);
    }
    (variance / h.count).sqrt()
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Float(f64),
    Hist(Histo),
}

type Answer = BTreeMap<Labels, Value>;
type Recorded = BTreeMap<(String, i64), Answer>;

/// What the receiver stored of the recorded series (stale markers are not returned), by
/// (record, timestamp): every raw sample of the last 5 minutes.
fn recorded(receiver: &Prom, records: &BTreeSet<&str>) -> Recorded {
    let names: Vec<&str> = records.iter().copied().collect();
    let q = format!("{{__name__=~\"{}\"}}[5m]", names.join("|"));
    let data = receiver.query_data(&q, now_ms()).expect("receiver query");
    let ms = |t: &serde_json::Value| (t.as_f64().unwrap() * 1000.0).round() as i64;
    let mut out = Recorded::new();
    for s in data["result"].as_array().expect("a matrix") {
        let labels = json_labels(&s["metric"]).unwrap();
        let name = labels["__name__"].clone();
        for p in s["values"].as_array().into_iter().flatten() {
            let v = parse_prom_float(p[1].as_str().unwrap()).unwrap();
            out.entry((name.clone(), ms(&p[0])))
                .or_default()
                .insert(labels.clone(), Value::Float(v));
        }
        for p in s["histograms"].as_array().into_iter().flatten() {
            out.entry((name.clone(), ms(&p[0]))).or_default().insert(
                labels.clone(),
                Value::Hist(Histo::from_json(&p[1]).unwrap()),
            );
        }
    }
    out
}

/// Prometheus's answer for `expr` at `t_ms`, relabelled as the recording rule `record` would.
fn query(prom: &Prom, expr: &str, record: &str, t_ms: i64) -> Answer {
    let data = prom.query_data(expr, t_ms).expect("prometheus query");
    let mut out = Answer::new();
    for s in data["result"].as_array().expect("a vector") {
        let mut l = json_labels(&s["metric"]).unwrap();
        l.insert("__name__".into(), record.to_string());
        let v = if let Some(h) = s.get("histogram") {
            Value::Hist(Histo::from_json(&h[1]).unwrap())
        } else {
            Value::Float(parse_prom_float(s["value"][1].as_str().unwrap()).unwrap())
        };
        out.insert(l, v);
    }
    out
}

/// Prometheus's answer for `rule` at `t_ms` (see [`Reference`]); for a quantile, also the
/// check that linear interpolation over the same buckets gives 2.42's own answer.
fn reference(prom: &Prom, rule: &Rule, t_ms: i64, failures: &mut Vec<String>) -> Answer {
    match &rule.reference {
        Reference::Same => query(prom, rule.expr, rule.record, t_ms),
        Reference::Equivalent(e) => query(prom, e, rule.record, t_ms),
        Reference::FromInner(f) => {
            let inner = query(prom, INNER, rule.record, t_ms);
            if rule.expr.starts_with("histogram_quantile") {
                let theirs = query(prom, rule.expr, rule.record, t_ms);
                for (l, v) in &inner {
                    let (Value::Hist(h), Some(Value::Float(p))) = (v, theirs.get(l)) else {
                        failures.push(format!("{} @ {t_ms}: no 2.42 quantile", rule.record));
                        continue;
                    };
                    let lin = quantile(h, 0.9, false);
                    if !close(lin, *p).0 {
                        failures.push(format!(
                            "test's linear quantile {lin} != Prometheus 2.42's {p} @ {t_ms} \
                             for {}",
                            fmt_labels(l)
                        ));
                    }
                }
            }
            inner
                .into_iter()
                .map(|(l, v)| match v {
                    Value::Hist(h) => (l, Value::Float(f(&h))),
                    other => (l, other),
                })
                .collect()
        }
    }
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

#[derive(Default)]
struct Compared {
    floats: usize,
    histograms: usize,
    skipped_on_edge: usize,
    max_rel: f64,
    failures: Vec<String>,
}

fn compare(prom: &Prom, rules: &[Rule], got: &Recorded, scrape_ts: &BTreeSet<i64>) -> Compared {
    let mut c = Compared::default();
    for ((record, t), ours) in got {
        // A scrape on the left edge of `[1m]` is inside 2.42's window and outside 3's.
        if scrape_ts.contains(&(t - 60_000)) {
            c.skipped_on_edge += 1;
            continue;
        }
        let rule = rules.iter().find(|r| r.record == record).unwrap();
        let theirs = reference(prom, rule, *t, &mut c.failures);
        if ours.keys().collect::<Vec<_>>() != theirs.keys().collect::<Vec<_>>() {
            c.failures.push(format!(
                "{record} @ {t}: label sets differ\n  cardguard:  {:?}\n  prometheus: {:?}",
                ours.keys().map(fmt_labels).collect::<Vec<_>>(),
                theirs.keys().map(fmt_labels).collect::<Vec<_>>()
            ));
            continue;
        }
        for (l, v) in ours {
            match (v, &theirs[l]) {
                (Value::Float(a), Value::Float(b)) => {
                    let (ok, rel) = close(*a, *b);
                    c.max_rel = c.max_rel.max(rel);
                    c.floats += 1;
                    if !ok {
                        c.failures.push(format!(
                            "{} @ {t}: cardguard {a} prometheus {b} (rel {rel:e})",
                            fmt_labels(l)
                        ));
                    }
                }
                (Value::Hist(a), Value::Hist(b)) => {
                    c.histograms += 1;
                    let d = a.differences(b, REL_TOL);
                    if d.is_empty() {
                        c.max_rel = c.max_rel.max(a.max_rel(b));
                    } else {
                        c.failures.push(format!(
                            "{} @ {t}: histograms differ: {}\n  cardguard:  {a:?}\n  \
                             prometheus: {b:?}",
                            fmt_labels(l),
                            d.join("; ")
                        ));
                    }
                }
                (a, b) => c.failures.push(format!(
                    "{} @ {t}: cardguard {a:?} prometheus {b:?}",
                    fmt_labels(l)
                )),
            }
        }
    }
    c
}

#[test]
fn recorded_histogram_rules_match_prometheus_query_answers() {
    let t0 = Instant::now();
    peer_bin("prometheus");
    let dir = TestDir::new("rules-histograms");
    let rules = rules();
    let mut file = String::from("groups:\n  - name: native\n    interval: 5s\n    rules:\n");
    for r in &rules {
        file.push_str(&format!(
            "      - record: {}\n        expr: '{}'\n",
            r.record, r.expr
        ));
    }
    std::fs::write(dir.join("histograms.yml"), file).unwrap();
    std::fs::write(
        dir.join("cardguard.yml"),
        "rule_files: [histograms.yml]\nrules:\n  query_offset: 5s\n",
    )
    .unwrap();

    // The upstream: a second Prometheus 2.42, a remote-write receiver that stores native
    // histograms (float ones included), so the recorded histograms are read back as
    // Prometheus stored them. Its own remote_write goes nowhere useful and is never used.
    let receiver_dir = TestDir::new("rules-histograms-receiver");
    let mut rc = PromConfig::new("http://127.0.0.1:9/api/v1/write");
    rc.extra_args = vec![
        "--enable-feature=native-histograms".into(),
        "--web.enable-remote-write-receiver".into(),
    ];
    let receiver = Prom::start(&receiver_dir, &rc);
    let target = ProtobufTarget::start(Arc::new(exposition));
    let cfg_path = dir.join("cardguard.yml");
    let mut cg = Cardguard::start(
        &dir,
        &format!("{}/api/v1/write", receiver.base()),
        &["--config", cfg_path.to_str().unwrap()],
    );
    let mut pc = PromConfig::new(&cg.write_url()).job("target", &target.addr());
    pc.extra_args = vec!["--enable-feature=native-histograms".into()];
    pc.remote_write_settings = "    send_native_histograms: true\n".into();
    let prom = Prom::start(&dir, &pc);

    // Evaluations until one at or after the scrape SCRAPES: its `[1m]` windows hold the reset
    // and the schema change.
    let records: BTreeSet<&str> = rules.iter().map(|r| r.record).collect();
    let p90 = "service:rpc_duration_seconds:p90_1m";
    let mut after_ms = None;
    let got = poll_until(
        &format!("cardguard to record {p90} after scrape {SCRAPES}"),
        Duration::from_secs(75),
        Duration::from_millis(500),
        || {
            cg.proc.assert_running();
            let n = target.scrapes();
            if after_ms.is_none() && n >= SCRAPES {
                after_ms = Some(now_ms());
            }
            let r = recorded(&receiver, &records);
            let newest = r.keys().filter(|(k, _)| k == p90).map(|(_, t)| *t).max();
            match (after_ms, newest) {
                (Some(a), Some(t)) if t >= a => Ok(r),
                _ => Err(format!(
                    "{n} scrapes, newest {p90} at {newest:?}, {} pairs in all; cardguard \
                     evaluation failures {:?}",
                    r.len(),
                    metric_sum(
                        &cg.metrics_text(),
                        "cardguard_rule_evaluation_failures_total"
                    )
                )),
            }
        },
    );
    eprintln!(
        "[rules-histograms] recorded after {:?}, {} scrapes",
        t0.elapsed(),
        target.scrapes()
    );

    // Every scrape's timestamp, for the window-edge check.
    let raw = prom
        .raw_samples(
            "rpc_requests_total{service=\"checkout\",pod=\"a\"}",
            now_ms(),
            300,
        )
        .expect("raw samples");
    let raw: Vec<(i64, f64)> = raw.into_values().next().expect("the float counter");
    let scrape_ts: BTreeSet<i64> = raw.iter().map(|(t, _)| *t).collect();
    assert!(scrape_ts.len() as u64 >= SCRAPES, "{scrape_ts:?}");

    // Prometheus stored what the target exposed (the test's protobuf encoding, read as native
    // histograms): every series at the newest scrape, one of them at schema 2 by then.
    let (newest_scrape, v) = *raw.last().unwrap();
    let n = (1..=target.scrapes())
        .find(|&n| requests(0, n) == v)
        .unwrap_or_else(|| panic!("no scrape exposed {v}"));
    for k in 0..SERVICES.len() * PODS.len() {
        let sel = format!(
            "rpc_duration_seconds{{service=\"{}\",pod=\"{}\"}}",
            SERVICES[k / 2],
            PODS[k % 2]
        );
        let stored = query(&prom, &sel, "stored", newest_scrape);
        let [Value::Hist(stored)] = stored.values().collect::<Vec<_>>()[..] else {
            panic!("{sel} @ {newest_scrape}: {stored:?}");
        };
        let h = histogram(k, n);
        let exposed = Histo::from_remote_write(&prompb::Histogram {
            count_int: h.sample_count,
            sum: h.sample_sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count_int: h.zero_count,
            negative_spans: h.negative_span,
            negative_deltas: h.negative_delta,
            positive_spans: h.positive_span,
            positive_deltas: h.positive_delta,
            ..Default::default()
        });
        let d = exposed.differences(stored, REL_TOL);
        assert!(d.is_empty(), "{sel} scrape {n}: stored {stored:?}: {d:?}");
    }

    let c = compare(&prom, &rules, &got, &scrape_ts);
    let timestamps: BTreeSet<i64> = got.keys().map(|(_, t)| *t).collect();
    eprintln!(
        "[rules-histograms] compared {} floats and {} histograms over {} (record, timestamp) \
         pairs, {} timestamps ({} pairs left out: a scrape on the window's left edge), max \
         relative error {:e}, in {:?}",
        c.floats,
        c.histograms,
        got.len(),
        timestamps.len(),
        c.skipped_on_edge,
        c.max_rel,
        t0.elapsed()
    );
    assert!(c.failures.is_empty(), "{}", c.failures.join("\n"));
    for r in &rules {
        assert!(
            got.keys().any(|(n, _)| n == r.record),
            "no samples recorded for {}",
            r.record
        );
    }
    assert!(
        c.histograms >= 10,
        "only {} histograms compared",
        c.histograms
    );
    assert!(c.floats >= 30, "only {} floats compared", c.floats);
    // The newest evaluation's window holds the scrapes before and after the reset and the
    // schema change.
    let newest = got.keys().filter(|(k, _)| k == p90).map(|(_, t)| *t).max();
    let scrapes: Vec<i64> = scrape_ts.iter().copied().collect();
    let newest = newest.unwrap();
    assert!(
        scrapes[RESET_AT as usize - 2] > newest - 60_000 && scrapes[SCHEMA_AT as usize] <= newest,
        "the newest evaluation ({newest}) does not see the reset and the schema change: \
         scrapes at {scrapes:?}"
    );
    let m = cg.metrics_text();
    assert_eq!(
        metric_sum(&m, "cardguard_rule_evaluation_failures_total").unwrap_or(0.0),
        0.0
    );
    cg.proc.assert_running();
}
