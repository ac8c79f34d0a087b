//! End to end, differential: cardguard's `relabel_configs` against Prometheus's own
//! `write_relabel_configs`, the reference implementation.
//!
//! One real Prometheus 2.42 scrapes the standard test target (and itself) every second and
//! remote-writes everything twice: once with `write_relabel_configs: X` straight into
//! VictoriaMetrics A, once without relabeling through cardguard (`relabel_configs: X`) into
//! VictoriaMetrics B. X uses every action (replace with a templated target, keep, drop,
//! keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase), the
//! separator, `$1`/`${1}` expansion and the empty-value-deletes rule. A and B must then hold the
//! same series with the same samples, and cardguard must count what it dropped and rewrote.
//!
//! Needs the peers from `scripts/fetch-peers.sh`. Under `CARDGUARD_E2E_DIRECT=1` (harness
//! self-test without cardguard) this test has nothing to test and returns at once.

mod common;

use common::*;
use std::time::Duration;

/// Every action at least once; indented to sit under a `relabel_configs:`/
/// `write_relabel_configs:` key at `indent` spaces.
const RULES: &str = r#"
- source_labels: [__name__]
  regex: "scrape_.*"
  action: drop
- source_labels: [job]
  regex: "targ.t"
  action: Keep
- source_labels: [__name__, job]
  separator: "@"
  regex: "cg_test_([a-z]+)_.*@(.*)"
  target_label: "${2}_kind"
  replacement: "$1"
- source_labels: [__name__, instance, le]
  target_label: shard
  modulus: 7
  action: hashmod
- regex: "(method|code|room)"
  replacement: "x_${1}"
  action: labelmap
- source_labels: [__name__, room]
  regex: "(cg_test_temperature_celsius);b"
  target_label: name_copy
  replacement: "$1"
- source_labels: [__name__]
  target_label: name_copy
  action: dropequal
- source_labels: [job]
  target_label: job_copy
- source_labels: [__name__, le]
  regex: "cg_test_latency_seconds_bucket;(0\\.1|1)"
  target_label: job_copy
  replacement: other
- source_labels: [job]
  target_label: job_copy
  action: keepequal
- regex: "job_copy|name_copy"
  action: labeldrop
- source_labels: [x_method]
  target_label: method_upper
  action: uppercase
- source_labels: [city]
  target_label: city_lower
  action: lowercase
- source_labels: [quote]
  regex: "nomatch"
  target_label: quote
- source_labels: [missing]
  target_label: multi_gone
  replacement: ""
- source_labels: [multi]
  target_label: multi_copy
- source_labels: [quote]
  target_label: quote_copy
- regex: "__name__|job|instance|x_.*|shard|.*_kind|method_upper|city.*|le|quote.*|multi.*"
  action: labelkeep
"#;

fn indented(indent: usize) -> String {
    let pad = " ".repeat(indent);
    RULES
        .trim_start_matches('\n')
        .lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect()
}

/// Scrapes before comparing.
const SCRAPES: u64 = 12;

#[test]
fn relabel_configs_match_prometheus_write_relabel_configs() {
    if direct_mode() {
        return;
    }
    peer_bin("prometheus");
    peer_bin("victoria-metrics");
    let dir = TestDir::new("e2e_relabel_configs");
    let vm_a = Vm::start(&dir);
    let dir_b = TestDir::new("e2e_relabel_configs_b");
    let vm_b = Vm::start(&dir_b);
    let target = TestTarget::start();

    let cfg = dir.join("cardguard.yml");
    std::fs::write(
        &cfg,
        format!(
            "upstream:\n  url: {}\nrelabel_configs:\n{}",
            vm_b.write_url(),
            indented(2)
        ),
    )
    .unwrap();
    let cfg_path = cfg.display().to_string();
    let mut cg = Cardguard::start(&dir, &vm_b.write_url(), &["--config.file", &cfg_path]);

    let mut pc = PromConfig::new(&cg.write_url()).job("target", &target.addr());
    pc.extra_remote_write_yaml = format!(
        "  - url: {}\n    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n    write_relabel_configs:\n{}",
        vm_a.write_url(),
        indented(6)
    );
    let mut prom = Prom::start(&dir, &pc);

    poll_until(
        "the target to be scraped",
        Duration::from_secs(40),
        Duration::from_millis(200),
        || {
            prom.proc.assert_running();
            cg.proc.assert_running();
            match target.scrapes() {
                s if s >= SCRAPES => Ok(()),
                s => Err(format!("{s} scrapes")),
            }
        },
    );
    // Compare up to a cutoff both backends have certainly passed: every series of a scrape
    // leaves in the same batch round, and both queues flush every second.
    let cutoff = now_ms() - 3_000;
    let from = prom.started_ms - 60_000;
    let newest = |vm: &Vm| -> Option<i64> {
        vm.export("cg_test_scrapes_total", from, now_ms() + 60_000)
            .ok()?
            .values()
            .filter_map(|s| s.last().map(|(t, _)| *t))
            .max()
    };
    poll_until(
        "both VictoriaMetrics to pass the cutoff",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || match (newest(&vm_a), newest(&vm_b)) {
            (Some(a), Some(b)) if a >= cutoff + 2_000 && b >= cutoff + 2_000 => Ok(()),
            other => Err(format!("newest A/B {other:?}, cutoff {}", fmt_ms(cutoff))),
        },
    );

    let all = "{__name__=~\".+\"}";
    let a = window(&vm_a.export(all, from, cutoff).unwrap(), from, cutoff);
    let b = window(&vm_b.export(all, from, cutoff).unwrap(), from, cutoff);

    // The reference kept what the rules say: sanity, so that an empty A cannot pass.
    let names: std::collections::BTreeSet<&str> = a
        .keys()
        .filter_map(|l| l.get("__name__").map(String::as_str))
        .collect();
    assert!(
        names.contains("up") && names.contains("cg_test_info"),
        "A: {names:?}"
    );
    assert!(
        a.keys()
            .all(|l| l.get("job").map(String::as_str) == Some("target")),
        "keep on job"
    );
    assert!(a.keys().any(|l| l.contains_key("shard")), "hashmod");
    assert!(a
        .keys()
        .any(|l| l.get("target_kind").map(String::as_str) == Some("requests")));
    assert!(a
        .keys()
        .any(|l| l.get("x_room").map(String::as_str) == Some("a")));
    assert!(!a
        .keys()
        .any(|l| l.contains_key("room") || l.contains_key("method")));
    assert!(
        !a.keys()
            .any(|l| l.get("x_room").map(String::as_str) == Some("b")),
        "dropequal"
    );
    assert!(
        a.keys()
            .filter(
                |l| l.get("__name__").map(String::as_str) == Some("cg_test_latency_seconds_bucket")
            )
            .count()
            == 2,
        "keepequal"
    );
    assert!(a
        .keys()
        .any(|l| l.get("city_lower").map(String::as_str) == Some("zürich")));
    assert!(a
        .keys()
        .any(|l| l.get("method_upper").map(String::as_str) == Some("GET")));
    // The target's 13 series and `up` (scrape_* dropped), less room b and two buckets.
    assert_eq!(
        a.len(),
        11,
        "series in A: {:#?}",
        a.keys().map(fmt_labels).collect::<Vec<_>>()
    );

    let mut problems = compare_samples(&a, &b, from, cutoff, 0.0);
    for l in b.keys().filter(|l| !a.contains_key(*l)) {
        problems.push(format!("only in B (cardguard): {}", fmt_labels(l)));
    }
    assert!(
        problems.is_empty(),
        "A (Prometheus write_relabel_configs) and B (cardguard relabel_configs) differ:\n{}",
        summarize(&problems, 20)
    );
    let samples: usize = a.values().map(Vec::len).sum();
    assert!(samples >= 11 * 3, "too few samples compared: {samples}");

    let m = cg.metrics_text();
    let dropped = metric_sum(&m, "cardguard_relabel_dropped_series_total").unwrap_or(0.0);
    let rewritten = metric_sum(&m, "cardguard_relabel_rewritten_series_total").unwrap_or(0.0);
    assert!(
        dropped > 0.0 && rewritten > 0.0,
        "dropped {dropped}, rewritten {rewritten}"
    );
    eprintln!(
        "[relabel_configs] {} series, {samples} samples identical in A and B; cardguard dropped {dropped} and rewrote {rewritten} series",
        a.len()
    );
    drop(prom);
}
