//! End to end: a real Prometheus 2.42 scrapes itself and a test target every second and
//! remote-writes THROUGH cardguard into a real VictoriaMetrics. Afterwards every raw sample
//! Prometheus holds for the test target must be in VictoriaMetrics with identical labels,
//! timestamps and values, and Prometheus's own series must have arrived as well.
//!
//! Needs the peers from `scripts/fetch-peers.sh`. `CARDGUARD_E2E_DIRECT=1` bypasses cardguard
//! (harness self-test).
//!
//! Also holds the (ignored) payload capture used by the benchmarks:
//! `cargo test --test e2e_passthrough -- --ignored --exact capture_prometheus_payload`
//! (see `scripts/capture-payload.sh`).

mod common;

use common::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// VictoriaMetrics keeps floats losslessly with -precisionBits=64; Prometheus's own metrics
/// are compared with this relative tolerance anyway (they are not ours to control).
const SELF_METRICS_REL_TOL: f64 = 1e-12;

#[test]
fn prometheus_remote_write_passes_through_cardguard_into_victoriametrics() {
    let t0 = Instant::now();
    let mut st = Stack::start("passthrough", &[]);
    let instance = st.target_instance();
    eprintln!("[passthrough] stack up after {:?}", t0.elapsed());

    // Let Prometheus scrape for ~10 s. (Prometheus 2.42 applies new targets on a 5 s tick, so
    // the first scrape comes ~5 s after start.)
    st.wait_scrapes(10, Duration::from_secs(40));
    // Everything Prometheus scraped up to `cutoff` must end up in VM.
    let cutoff = now_ms() - 1_500;
    st.wait_vm_reaches(cutoff, Duration::from_secs(30));
    eprintln!(
        "[passthrough] VM caught up to the cutoff after {:?}",
        t0.elapsed()
    );

    let from = st.prom.started_ms - 60_000;
    let range_s = ((now_ms() - from) / 1000 + 5) as u64;

    // 1. Raw samples of the target job: Prometheus's TSDB == VictoriaMetrics, bit for bit.
    //    Different series travel in different batches, so poll until VM has all of them.
    let prom_target = st
        .prom
        .raw_samples(r#"{job="target"}"#, cutoff, range_s)
        .expect("prometheus query");
    assert!(
        prom_target.len() >= standard_target_series().len(),
        "Prometheus itself holds only {} target series: {:?}",
        prom_target.len(),
        prom_target.keys().map(fmt_labels).collect::<Vec<_>>()
    );
    let vm_target = wait_until_backend_matches_prometheus(
        "VictoriaMetrics to hold exactly Prometheus's raw samples for job=target",
        &st.vm,
        &prom_target,
        r#"{job="target"}"#,
        (from, cutoff),
        0.0,
        Duration::from_secs(20),
        |_, _| Ok(()),
    );
    let target_samples: usize = window(&vm_target, from, cutoff)
        .values()
        .map(|s| s.len())
        .sum();
    eprintln!(
        "[passthrough] job=target: {} series, {} samples identical in Prometheus and VM",
        prom_target.len(),
        target_samples
    );

    // 2. Every series the target serves is in VM with exactly the labels Prometheus adds, and
    //    every value is one the target served.
    let served = st.target.scrapes();
    let mut problems = Vec::new();
    let mut expected_names = BTreeSet::new();
    for (l, expect) in standard_target_series() {
        let mut full = l.clone();
        full.insert("job".into(), "target".into());
        full.insert("instance".into(), instance.clone());
        expected_names.insert(full.clone());
        let Some(samples) = vm_target.get(&full) else {
            let same_name: Vec<String> = vm_target
                .keys()
                .filter(|k| k.get("__name__") == l.get("__name__"))
                .map(fmt_labels)
                .collect();
            problems.push(format!(
                "missing {} (VM has with that name: {same_name:?})",
                fmt_labels(&full)
            ));
            continue;
        };
        let samples: Vec<(i64, f64)> = samples
            .iter()
            .copied()
            .filter(|(t, _)| *t <= cutoff)
            .collect();
        if samples.len() < 5 {
            problems.push(format!(
                "{}: only {} samples",
                fmt_labels(&full),
                samples.len()
            ));
        }
        match expect {
            Expect::Const(c) => {
                for (t, v) in &samples {
                    if *v != c {
                        problems.push(format!(
                            "{} @{}: VM {v}, target served {c}",
                            fmt_labels(&full),
                            fmt_ms(*t)
                        ));
                    }
                }
            }
            Expect::PerScrape(m) => {
                let mut prev = 0.0;
                for (t, v) in &samples {
                    let n = v / m;
                    if n.fract() != 0.0 || n < 1.0 || n > served as f64 || *v <= prev {
                        problems.push(format!(
                            "{} @{}: VM {v} is not {m}×n for a new scrape n ≤ {served} (previous {prev})",
                            fmt_labels(&full),
                            fmt_ms(*t)
                        ));
                    }
                    prev = *v;
                }
            }
        }
    }
    // The synthetic series Prometheus adds per target.
    let n_exposed = standard_target_series().len() as f64;
    for (name, want) in [
        ("up", Some(1.0)),
        ("scrape_samples_scraped", Some(n_exposed)),
        ("scrape_samples_post_metric_relabeling", Some(n_exposed)),
        ("scrape_duration_seconds", None),
        ("scrape_series_added", None),
    ] {
        let full = labels(&[
            ("__name__", name),
            ("job", "target"),
            ("instance", &instance),
        ]);
        expected_names.insert(full.clone());
        match vm_target.get(&full) {
            None => problems.push(format!("missing {}", fmt_labels(&full))),
            Some(s) => {
                if let Some(w) = want {
                    if let Some((t, v)) = s.iter().find(|(_, v)| *v != w) {
                        problems.push(format!(
                            "{} @{}: {v}, expected {w}",
                            fmt_labels(&full),
                            fmt_ms(*t)
                        ));
                    }
                }
            }
        }
    }
    let vm_names: BTreeSet<_> = vm_target.keys().cloned().collect();
    for extra in vm_names.difference(&expected_names) {
        problems.push(format!(
            "unexpected series in VM for job=target: {}",
            fmt_labels(extra)
        ));
    }
    assert!(
        problems.is_empty(),
        "target series in VictoriaMetrics do not match what the target served ({served} scrapes):\n{}",
        summarize(&problems, 30)
    );

    // 3. Prometheus's own series: same label sets and samples in both (NaN samples excluded —
    //    VictoriaMetrics drops ordinary NaNs, e.g. summary quantiles without observations).
    let prom_self = st
        .prom
        .raw_samples(r#"{job="prometheus"}"#, cutoff, range_s)
        .expect("prometheus query");
    let vm_self = wait_until_backend_matches_prometheus(
        "VictoriaMetrics to hold Prometheus's own series (job=prometheus)",
        &st.vm,
        &prom_self,
        r#"{job="prometheus"}"#,
        (from, cutoff),
        SELF_METRICS_REL_TOL,
        Duration::from_secs(20),
        |_, _| Ok(()),
    );
    let self_window = window(&vm_self, from, cutoff);
    eprintln!(
        "[passthrough] job=prometheus: {} series, {} samples identical in Prometheus and VM",
        self_window.len(),
        self_window.values().map(|s| s.len()).sum::<usize>()
    );
    let prom_addr = format!("127.0.0.1:{}", st.prom.port);
    for name in ["up", "prometheus_build_info"] {
        let found: Vec<_> = self_window
            .iter()
            .filter(|(l, _)| l.get("__name__").map(String::as_str) == Some(name))
            .collect();
        assert!(
            !found.is_empty(),
            "{name}{{job=\"prometheus\"}} did not arrive in VictoriaMetrics"
        );
        for (l, s) in found {
            assert_eq!(
                l.get("instance"),
                Some(&prom_addr),
                "{}: wrong instance label",
                fmt_labels(l)
            );
            assert!(
                s.iter().all(|(_, v)| *v == 1.0),
                "{}: values {:?}, expected all 1",
                fmt_labels(l),
                s
            );
        }
    }

    // 4. The /api/v1/series views agree: VM's label sets for each job are all known to
    //    Prometheus, and every Prometheus series with a non-NaN sample in the window is in VM.
    for (job, prom_raw) in [("target", &prom_target), ("prometheus", &prom_self)] {
        let sel = format!("{{job=\"{job}\"}}");
        let vm_series = st.vm.series(&sel, from, cutoff).expect("VM series");
        let prom_series = st
            .prom
            .series(&sel, from, now_ms())
            .expect("Prometheus series");
        let unknown: Vec<String> = vm_series.difference(&prom_series).map(fmt_labels).collect();
        assert!(
            unknown.is_empty(),
            "VM /api/v1/series has label sets Prometheus does not know (job={job}): {unknown:?}"
        );
        let must_have: BTreeSet<Labels> = window(prom_raw, from, cutoff).into_keys().collect();
        let not_in_prom_series: Vec<String> =
            must_have.difference(&prom_series).map(fmt_labels).collect();
        assert!(
            not_in_prom_series.is_empty(),
            "harness bug: {not_in_prom_series:?}"
        );
        let missing: Vec<String> = must_have.difference(&vm_series).map(fmt_labels).collect();
        assert!(
            missing.is_empty(),
            "Prometheus series (job={job}) missing from VM /api/v1/series: {missing:?}"
        );
        eprintln!(
            "[passthrough] /api/v1/series job={job}: VM {} ⊆ Prometheus {}; all {} with data in the window present",
            vm_series.len(),
            prom_series.len(),
            must_have.len()
        );
    }

    // 5. Prometheus never had a batch rejected (a 4xx from cardguard would drop data).
    let pm = st.prom.metrics_text();
    let failed = metric_sum(&pm, "prometheus_remote_storage_samples_failed_total").unwrap_or(0.0);
    assert_eq!(
        failed,
        0.0,
        "Prometheus counted failed (dropped) remote-write samples: {}",
        remote_storage_summary(&pm)
    );
    eprintln!(
        "[passthrough] prometheus remote storage: {}",
        remote_storage_summary(&pm)
    );

    // 6. cardguard's own telemetry saw the traffic.
    if let Some(cg) = &st.cardguard {
        let received = cg_metrics::assert_received_samples(&cg.metrics_text());
        eprintln!("[passthrough] cardguard received {received} samples");
    }
    eprintln!("[passthrough] done in {:?}", t0.elapsed());
}

/// Record one real remote-write body from Prometheus 2.42 (snappy-compressed, as sent) with at
/// least 500 distinct series into testdata/payloads/prometheus-capture.v1.bin (or
/// $CARDGUARD_CAPTURE_OUT). Ignored by default; run via scripts/capture-payload.sh.
#[test]
#[ignore = "writes testdata; run explicitly via scripts/capture-payload.sh"]
fn capture_prometheus_payload() {
    let out = std::env::var_os("CARDGUARD_CAPTURE_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("testdata/payloads/prometheus-capture.v1.bin"));
    let dir = TestDir::new("capture");
    let sink = fake_upstream();
    let target = TestTarget::start_with(Arc::new(capture_exposition));
    let mut cfg = PromConfig::new(&sink.write_url()).job("app", &target.addr());
    // Prometheus's default deadline, and the current default batch size (2.42 still had 500).
    cfg.batch_send_deadline = "5s".into();
    cfg.max_samples_per_send = Some(2000);
    let mut prom = Prom::start(&dir, &cfg);

    let body = poll_until(
        "a remote-write body with >= 500 distinct series",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            prom.proc.assert_running();
            let reqs = sink.received();
            for r in &reqs {
                let raw =
                    rw::unsnappy(&r.body).map_err(|e| format!("captured body not snappy: {e}"))?;
                let (series, _) = rw::decode(&raw)?;
                let distinct: BTreeSet<_> = series.iter().map(|s| s.labels.clone()).collect();
                if distinct.len() >= 500 {
                    return Ok((r.clone(), series.len(), distinct.len(), raw.len()));
                }
            }
            Err(format!(
                "{} bodies so far, none with >= 500 series",
                reqs.len()
            ))
        },
    );
    let (req, entries, distinct, raw_len) = body;
    assert_eq!(req.header("content-encoding"), Some("snappy"));
    assert!(
        req.body.len() < 200 << 10,
        "capture is {} bytes, over 200 KiB",
        req.body.len()
    );
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, &req.body).unwrap();
    eprintln!(
        "[capture] wrote {} ({} bytes snappy, {} bytes raw, {} TimeSeries entries, {} distinct series); \
         headers: {:?}",
        out.display(),
        req.body.len(),
        raw_len,
        entries,
        distinct,
        req.headers
    );
}
