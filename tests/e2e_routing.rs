//! End to end: routing to two real VictoriaMetrics, a short- and a long-retention backend.
//!
//! A real Prometheus 2.42 scrapes (every second) a target with SLO series (`slo="true"`) and
//! others, and remote-writes through cardguard, configured with two upstreams: the SLO route
//! sends `{slo="true"}` to `long` with `min_interval: 5s` and continues; the default route
//! sends everything to `short`. Then:
//!
//! 1. `short` holds every target series at full resolution, sample for sample as Prometheus's
//!    own TSDB has them; `long` holds only the SLO series, exactly the first sample of each
//!    5 s interval.
//! 2. `long` is stopped (SIGINT) for several seconds: cardguard answers 503 (counted on its
//!    /metrics; Prometheus retries), then `long` comes back.
//! 3. After it returns, nothing is missing in either backend: the same comparisons as in 1
//!    over the whole run, outage included.
//!
//! Needs the peers from `scripts/fetch-peers.sh`. Under `CARDGUARD_E2E_DIRECT=1` (harness
//! self-test without cardguard) this test has nothing to test and returns at once.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const INTERVAL_MS: i64 = 5_000;

fn exposition(n: u64) -> String {
    format!(
        "# TYPE cg_test_scrapes_total counter\n\
         cg_test_scrapes_total {n}\n\
         # TYPE checkout_requests_total counter\n\
         checkout_requests_total{{slo=\"true\",code=\"200\"}} {}\n\
         checkout_requests_total{{slo=\"true\",code=\"500\"}} {}\n\
         # TYPE checkout_latency_ok_ratio gauge\n\
         checkout_latency_ok_ratio{{slo=\"true\"}} 0.{}\n\
         # TYPE queue_depth gauge\n\
         queue_depth{{queue=\"a\"}} {}\n\
         queue_depth{{queue=\"b\",slo=\"false\"}} {}\n",
        10 * n,
        n / 3,
        900 + n % 100,
        n % 7,
        n % 11
    )
}

/// The samples a `min_interval` route keeps: the first of each interval bucket.
fn downsampled(m: &SeriesMap) -> SeriesMap {
    m.iter()
        .map(|(l, s)| {
            let mut seen = BTreeMap::new();
            for &(t, v) in s {
                seen.entry(t.div_euclid(INTERVAL_MS)).or_insert((t, v));
            }
            (l.clone(), seen.into_values().collect())
        })
        .collect()
}

fn is_slo(l: &Labels) -> bool {
    l.get("slo").map(String::as_str) == Some("true")
}

fn write_503s(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("cardguard_write_requests_total{code=\"503\"}"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn slo_series_reach_both_backends_the_rest_only_short_and_an_outage_loses_nothing() {
    if direct_mode() {
        return;
    }
    peer_bin("prometheus");
    peer_bin("victoria-metrics");
    let dir = TestDir::new("e2e_routing");
    let short = Vm::start(&dir);
    let dir_long = TestDir::new("e2e_routing_long");
    let mut long = Vm::start(&dir_long);
    let target = TestTarget::start_with(Arc::new(exposition));
    let cfg = dir.join("cardguard.yml");
    std::fs::write(
        &cfg,
        format!(
            r#"upstreams:
  - name: short
    url: {}
    remote_timeout: 2s
  - name: long
    url: {}
    remote_timeout: 2s
routes:
  - name: slo
    match: '{{slo="true"}}'
    upstreams: [long]
    min_interval: 5s
    continue: true
  - upstreams: [short]
"#,
            short.write_url(),
            long.write_url()
        ),
    )
    .unwrap();
    let cfg_path = cfg.display().to_string();
    let mut cg = Cardguard::start_args(&dir, &["--config.file", &cfg_path]);
    let mut prom = Prom::start(
        &dir,
        &PromConfig::new(&cg.write_url()).job("target", &target.addr()),
    );
    let started = prom.started_ms;

    // 1. Steady state.
    poll_until(
        "12 scrapes",
        Duration::from_secs(40),
        Duration::from_millis(200),
        || {
            prom.proc.assert_running();
            cg.proc.assert_running();
            (target.scrapes() >= 12)
                .then_some(())
                .ok_or("waiting".to_string())
        },
    );
    let t1 = now_ms() - 3_000;
    wait_both(&mut prom, &mut cg, &short, &long, t1 + 1_000);
    let (s1, l1) = compare(&prom, &short, &long, started, t1);
    assert!(
        s1 >= 11 * 8 && l1 >= 3,
        "too little data: short {s1}, long {l1}"
    );

    // 2. Outage of long: cardguard answers 503 while it is down.
    long.stop();
    let down_from = now_ms();
    poll_until(
        "cardguard to answer 503 while long is down",
        Duration::from_secs(20),
        Duration::from_millis(300),
        || {
            prom.proc.assert_running();
            cg.proc.assert_running();
            match write_503s(&cg.metrics_text()) {
                n if n > 0.0 => Ok(()),
                _ => Err("no 503 yet".into()),
            }
        },
    );
    while now_ms() < down_from + 6_000 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = write_503s(&cg.metrics_text());
    let outage_s = (now_ms() - down_from) / 1000;
    long.restart();

    // 3. After it returns, nothing is missing in either.
    let t2 = now_ms() + 3_000;
    wait_both(&mut prom, &mut cg, &short, &long, t2 + 1_000);
    let (s2, l2) = compare(&prom, &short, &long, started, t2);
    let retried = metric_sum(
        &prom.metrics_text(),
        "prometheus_remote_storage_samples_retried_total",
    )
    .unwrap_or(0.0);
    eprintln!(
        "[routing] before the outage: short {s1} samples, long {l1}; after a {outage_s}s outage \
         of long (cardguard answered 503 {during} times, Prometheus retried {retried} samples): \
         short {s2}, long {l2}, nothing missing in either"
    );
    assert!(s2 > s1 && l2 > l1);
    assert!(during > 0.0);
}

/// Wait until `short` has a target sample at or after `ts` and `long` one within an interval
/// of it.
fn wait_both(prom: &mut Prom, cg: &mut Cardguard, short: &Vm, long: &Vm, ts: i64) {
    let started = prom.started_ms;
    let newest = |vm: &Vm, sel: &str| -> Option<i64> {
        vm.export(sel, started - 60_000, now_ms() + 60_000)
            .ok()?
            .values()
            .filter_map(|s| s.last().map(|(t, _)| *t))
            .max()
    };
    poll_until(
        &format!("both backends to reach {}", fmt_ms(ts)),
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            prom.proc.assert_running();
            cg.proc.assert_running();
            match (
                newest(short, "cg_test_scrapes_total"),
                newest(long, "checkout_latency_ok_ratio"),
            ) {
                (Some(s), Some(l)) if s >= ts && l >= ts - INTERVAL_MS => Ok(()),
                other => Err(format!("newest short/long {other:?}")),
            }
        },
    )
}

/// Both backends against Prometheus's own TSDB over [from, to]: short has every sample of
/// every target series, long exactly the first sample per interval of the SLO series and
/// nothing else. Returns the samples compared in each.
fn compare(prom: &Prom, short: &Vm, long: &Vm, from: i64, to: i64) -> (usize, usize) {
    let range_s = ((now_ms() - from) / 1000 + 60) as u64;
    let reference = prom
        .raw_samples("{job=\"target\"}", now_ms(), range_s)
        .unwrap();
    // Buckets over everything Prometheus has, then the window.
    let slo: SeriesMap = downsampled(
        &reference
            .iter()
            .filter(|(l, _)| is_slo(l))
            .map(|(l, s)| (l.clone(), s.clone()))
            .collect(),
    );
    let all = window(&reference, from, to);
    let slo = window(&slo, from, to);
    let sel = "{job=\"target\"}";
    let s = window(&short.export(sel, from, to).unwrap(), from, to);
    let l = window(&long.export(sel, from, to).unwrap(), from, to);
    // The 6 exposed series and Prometheus's 5 per-target series (up, scrape_*).
    assert_eq!(
        all.len(),
        11,
        "reference: {:?}",
        all.keys().map(fmt_labels).collect::<Vec<_>>()
    );
    assert_eq!(slo.len(), 3);
    let mut problems = compare_samples(&all, &s, from, to, 0.0);
    problems.extend(
        compare_samples(&slo, &l, from, to, 0.0)
            .into_iter()
            .map(|p| format!("long: {p}")),
    );
    for k in l.keys().filter(|k| !is_slo(k)) {
        problems.push(format!("non-SLO series in long: {}", fmt_labels(k)));
    }
    assert!(problems.is_empty(), "{}", summarize(&problems, 20));
    // 5 s resolution in long: never two samples of a series in one interval.
    for (k, samples) in &l {
        for w in samples.windows(2) {
            assert!(
                w[1].0.div_euclid(INTERVAL_MS) > w[0].0.div_euclid(INTERVAL_MS),
                "{}: {} and {} share an interval",
                fmt_labels(k),
                w[0].0,
                w[1].0
            );
        }
    }
    (
        s.values().map(Vec::len).sum(),
        l.values().map(Vec::len).sum(),
    )
}
