//! End to end: VictoriaMetrics goes away for ~20 s while Prometheus keeps scraping and writing
//! through cardguard. cardguard must answer 503 (retryable) so Prometheus keeps the data in its
//! WAL and retries; once VictoriaMetrics is back on the same port and data directory, every
//! sample Prometheus's own TSDB holds for the target over the whole run must be in
//! VictoriaMetrics — no gap.
//!
//! Needs the peers from `scripts/fetch-peers.sh`. `CARDGUARD_E2E_DIRECT=1` bypasses cardguard.

mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

const OUTAGE: Duration = Duration::from_secs(20);

#[test]
fn no_samples_lost_while_victoriametrics_is_down() {
    let t0 = Instant::now();
    let mut st = Stack::start("outage", &[]);

    // Data is flowing end to end.
    st.wait_scrapes(4, Duration::from_secs(40));
    st.wait_vm_reaches(now_ms() - 1_500, Duration::from_secs(30));
    eprintln!("[outage] data flowing after {:?}", t0.elapsed());
    let before = st.prom.metrics_text();
    let retried_before =
        metric_sum(&before, "prometheus_remote_storage_samples_retried_total").unwrap_or(0.0);

    // --- outage -------------------------------------------------------------------------
    let t_down = now_ms();
    let took = st.vm.stop();
    eprintln!(
        "[outage] VictoriaMetrics stopped (SIGINT, {took:?}) at {}",
        fmt_ms(t_down)
    );

    // cardguard answers 503 to a write it cannot deliver.
    if let Some(cg) = &st.cardguard {
        let probe = rw::body(&[rw::Series::new(
            "cg_outage_probe",
            &[("job", "probe")],
            1.0,
            now_ms(),
        )]);
        let r = poll_until(
            "cardguard to answer 503 while the upstream is down",
            Duration::from_secs(10),
            Duration::from_millis(200),
            || match post_remote_write(&cg.write_url(), &probe) {
                Ok(r) if r.status == 503 => Ok(r),
                Ok(r) => Err(format!("status {} body {:?}", r.status, r.text())),
                Err(e) => Err(e),
            },
        );
        eprintln!(
            "[outage] cardguard answered 503 ({:?}) with the upstream down",
            r.text().trim()
        );
    }

    let outage_end = Instant::now() + OUTAGE.saturating_sub(took);
    while Instant::now() < outage_end {
        st.assert_running();
        thread::sleep(Duration::from_millis(500));
    }
    let during = st.prom.metrics_text();
    let retried =
        metric_sum(&during, "prometheus_remote_storage_samples_retried_total").unwrap_or(0.0);
    let failed =
        metric_sum(&during, "prometheus_remote_storage_samples_failed_total").unwrap_or(0.0);
    eprintln!(
        "[outage] during the outage: {}",
        remote_storage_summary(&during)
    );
    assert!(
        retried > retried_before,
        "Prometheus did not retry during the outage (retried_total {retried_before} -> {retried}); \
         cardguard must answer a retryable status (5xx). {}",
        remote_storage_summary(&during)
    );
    assert_eq!(
        failed,
        0.0,
        "Prometheus dropped samples as failed during the outage (a non-retryable answer): {}",
        remote_storage_summary(&during)
    );

    // --- recovery -----------------------------------------------------------------------
    st.vm.restart();
    let t_up = now_ms();
    eprintln!(
        "[outage] VictoriaMetrics restarted at {} (down {} ms)",
        fmt_ms(t_up),
        t_up - t_down
    );
    st.wait_vm_reaches(t_up + 3_000, Duration::from_secs(60));
    eprintln!("[outage] caught up after {:?}", t0.elapsed());

    let cutoff = t_up + 2_000;
    let from = st.prom.started_ms - 60_000;
    let range_s = ((now_ms() - from) / 1000 + 5) as u64;
    let prom_target = st
        .prom
        .raw_samples(r#"{job="target"}"#, cutoff, range_s)
        .expect("prometheus query");
    let vm_target = wait_until_backend_matches_prometheus(
        &format!(
            "VictoriaMetrics to hold every sample Prometheus holds for job=target (no gap; \
             outage {}..{})",
            fmt_ms(t_down),
            fmt_ms(t_up)
        ),
        &st.vm,
        &prom_target,
        r#"{job="target"}"#,
        (from, cutoff),
        0.0,
        Duration::from_secs(30),
        |_, _| Ok(()),
    );

    // The window really covered the outage: Prometheus scraped through it and all of that is in VM.
    let counter = labels(&[
        ("__name__", "cg_test_scrapes_total"),
        ("job", "target"),
        ("instance", &st.target_instance()),
    ]);
    let in_outage = |m: &SeriesMap| {
        m.get(&counter)
            .map(|s| s.iter().filter(|(t, _)| *t > t_down && *t < t_up).count())
            .unwrap_or(0)
    };
    let (p, v) = (in_outage(&prom_target), in_outage(&vm_target));
    let total: usize = window(&vm_target, from, cutoff)
        .values()
        .map(|s| s.len())
        .sum();
    eprintln!(
        "[outage] {} target series, {total} samples identical; scrapes during the outage: Prometheus {p}, VM {v}",
        prom_target.len()
    );
    let min_expected = (OUTAGE.as_secs() as usize) * 3 / 4;
    assert!(
        p >= min_expected,
        "Prometheus scraped only {p} times during the {OUTAGE:?} outage"
    );
    assert_eq!(p, v, "outage-window samples: Prometheus {p}, VM {v}");

    // Scrape timestamps are 1 s apart with no hole anywhere in VM.
    let ts: Vec<i64> = vm_target[&counter]
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t <= cutoff)
        .collect();
    let max_gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(
        max_gap <= 2_000,
        "largest gap between consecutive samples in VM is {max_gap} ms"
    );

    let after = st.prom.metrics_text();
    assert_eq!(
        metric_sum(&after, "prometheus_remote_storage_samples_failed_total").unwrap_or(0.0),
        0.0,
        "Prometheus counted failed samples: {}",
        remote_storage_summary(&after)
    );
    if let Some(cg) = &st.cardguard {
        cg_metrics::assert_received_samples(&cg.metrics_text());
    }
    eprintln!("[outage] done in {:?}", t0.elapsed());
}
