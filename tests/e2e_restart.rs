//! End to end: what cardguard learned survives a restart (`storage.path`).
//!
//! * `explosion_across_a_sigkill_restart`: real Prometheus → cardguard → VictoriaMetrics, a
//!   budget of 100 on `search`, filled. cardguard is killed with SIGKILL after a periodic
//!   snapshot, and while it is down `search` exposes only *new* series, so they are the first
//!   of it cardguard sees after the restart: they must be refused, and VictoriaMetrics holds
//!   exactly the same 100 series before and after.
//! * `overflow_counters_stay_monotonic_across_a_sigkill_restart`: a `relabel` budget collapses
//!   `search`'s users into one `__overflow__` counter; every member resets once, then cardguard
//!   is killed and restarted. The aggregate's sum never goes down in VictoriaMetrics.
//! * `a_truncated_or_bit_flipped_snapshot_starts_empty_and_says_why`: cardguard starts, logs
//!   and counts the reason, moves the file aside and serves.
//!
//! Rules across a restart are in `e2e_rules.rs` (they reuse its differential comparison).
//! Needs the peers from `scripts/fetch-peers.sh`.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wait until cardguard has written a snapshot at or after `after_ms`.
fn wait_snapshot_after(cg: &mut Cardguard, after_ms: i64) {
    poll_until(
        "cardguard to write a snapshot",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            cg.proc.assert_running();
            let m = cg.metrics_text();
            match metric_sum(&m, "cardguard_snapshot_last_success_timestamp_seconds") {
                Some(s) if s * 1000.0 >= after_ms as f64 => Ok(()),
                other => Err(format!("last snapshot at {other:?} s")),
            }
        },
    );
}

fn storage_yaml(dir: &TestDir) -> String {
    format!(
        "storage:\n  path: {}\n  snapshot_interval: 1s\n",
        dir.join("state").display()
    )
}

// ---------------------------------------------------------------------------------------------
// An explosion across a SIGKILL restart
// ---------------------------------------------------------------------------------------------

const BUDGET: u64 = 100;

/// 0: the admitted users; 1: only new users (cardguard is down); 2: both.
fn explosion(mode: &AtomicU8, n: u64) -> String {
    let mut s = String::from("# TYPE cg_test_scrapes_total counter\n");
    s.push_str(&format!("cg_test_scrapes_total {n}\n"));
    s.push_str("# TYPE cg_search_user_hits_total counter\n");
    let m = mode.load(Ordering::SeqCst);
    let old = (m != 1).then_some(0..BUDGET);
    let new = (m != 0).then_some(1000..1000 + 150);
    for u in old.into_iter().flatten().chain(new.into_iter().flatten()) {
        s.push_str(&format!(
            "cg_search_user_hits_total{{service=\"search\",user_id=\"u{u:05}\"}} {n}\n"
        ));
    }
    s
}

#[test]
fn explosion_across_a_sigkill_restart() {
    if skip_in_direct_mode("restart-explosion") {
        return;
    }
    let t0 = Instant::now();
    let mode = Arc::new(AtomicU8::new(0));
    let m = mode.clone();
    let target = TestTarget::start_with(Arc::new(move |n| explosion(&m, n)));
    // The storage path must be known before the stack writes the config: a directory of its
    // own next to the stack's.
    let state = TestDir::new("restart-explosion-state");
    let config = format!(
        "guard:\n  owner_labels: [service]\n  window: 1h\n  window_slices: 6\n  \
         default_budget:\n    max_series: {BUDGET}\n    action: drop\n  \
         unowned_budget:\n    max_series: 100000\n{}",
        storage_yaml(&state)
    );
    let mut st = Stack::start_with("restart-explosion", target, Some(&config), &[]);
    let search = r#"{job="target",service="search"}"#;
    let from = st.prom.started_ms - 60_000;

    let before: BTreeSet<Labels> = poll_until(
        "VictoriaMetrics to hold the 100 admitted search series",
        Duration::from_secs(40),
        Duration::from_millis(500),
        || {
            st.assert_running();
            let vm = st.vm.export(search, from, now_ms() + 60_000)?;
            match vm.len() as u64 {
                BUDGET => Ok(vm.into_keys().collect()),
                n => Err(format!("{n} series")),
            }
        },
    );
    let admitted_at = now_ms();
    let cg = st.cardguard.as_mut().unwrap();
    wait_snapshot_after(cg, admitted_at + 1000);
    let port = cg.port;
    cg.proc.stop("KILL", Duration::from_secs(5));
    mode.store(1, Ordering::SeqCst);
    eprintln!(
        "[restart] SIGKILL after {:?}; only new series from now",
        t0.elapsed()
    );

    // Scrapes of only new series pile up in Prometheus while cardguard is down.
    let scrapes = st.target.scrapes();
    poll_until(
        "3 scrapes of the new series",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || match st.target.scrapes() {
            s if s >= scrapes + 3 => Ok(()),
            s => Err(format!("{s} scrapes")),
        },
    );
    let config_path = st.config_path();
    let args = [
        "--upstream",
        &st.vm.write_url(),
        "--config",
        config_path.to_str().unwrap(),
    ];
    st.cardguard = Some(Cardguard::start_on_port(&st.dir, port, &args));
    let restarted_at = now_ms();
    st.wait_vm_reaches(restarted_at, Duration::from_secs(30));
    mode.store(2, Ordering::SeqCst);
    let scrapes = st.target.scrapes();
    st.wait_scrapes(scrapes + 3, Duration::from_secs(20));
    st.wait_vm_reaches(now_ms() - 1_000, Duration::from_secs(30));

    let cg = st.cardguard.as_ref().unwrap();
    let log = cg.proc.log_text();
    assert!(
        log.contains("state restored from the snapshot"),
        "no restore in the log:\n{log}"
    );
    let after: BTreeSet<Labels> = st
        .vm
        .export(search, from, now_ms() + 60_000)
        .unwrap()
        .into_keys()
        .collect();
    let new_admitted: Vec<String> = after.difference(&before).map(fmt_labels).collect();
    assert!(
        new_admitted.is_empty(),
        "new series admitted after the restart: {new_admitted:?}"
    );
    assert_eq!(after, before, "VictoriaMetrics lost admitted series");
    // And the old series go on after the restart.
    let recent = st
        .vm
        .export(search, restarted_at, now_ms() + 60_000)
        .unwrap();
    assert_eq!(
        recent.len() as u64,
        BUDGET,
        "admitted series with samples since the restart"
    );
    let m = cg.metrics_text();
    let restored = metric_sum(&m, "cardguard_snapshot_restored_series").unwrap_or(0.0);
    assert!(restored >= BUDGET as f64, "restored {restored} series");
    let card = cg.cardinality().unwrap();
    let row = service_row(&card, "search").expect("search row");
    assert_eq!(num(row, "active"), Some(BUDGET as f64));
    eprintln!(
        "[restart] same {} search series before and after; new ones refused; {:?}",
        after.len(),
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Overflow counters across a SIGKILL restart
// ---------------------------------------------------------------------------------------------

const USERS: u64 = 30;
/// Every user's counter resets on this scrape: the aggregate keeps what they had counted in
/// its base, which a restart must not forget.
const RESET_AT: u64 = 6;

fn overflow(n: u64) -> String {
    let mut s = String::from("# TYPE cg_test_scrapes_total counter\n");
    s.push_str(&format!("cg_test_scrapes_total {n}\n"));
    s.push_str("# TYPE cg_search_user_hits_total counter\n");
    for u in 0..USERS {
        let v = if n < RESET_AT {
            1000 + n * 10 + u
        } else {
            (n - RESET_AT) * 10 + u
        };
        s.push_str(&format!(
            "cg_search_user_hits_total{{service=\"search\",user_id=\"u{u:03}\"}} {v}\n"
        ));
    }
    s
}

#[test]
fn overflow_counters_stay_monotonic_across_a_sigkill_restart() {
    if skip_in_direct_mode("restart-overflow") {
        return;
    }
    let state = TestDir::new("restart-overflow-state");
    let config = format!(
        "guard:\n  owner_labels: [service]\n  overflow_flush_interval: 1s\n  \
         default_budget:\n    max_series: 5\n    action: relabel\n    \
         overflow_labels: [user_id]\n  \
         unowned_budget:\n    max_series: 100000\n    action: drop\n{}",
        storage_yaml(&state)
    );
    let target = TestTarget::start_with(Arc::new(overflow));
    let mut st = Stack::start_with("restart-overflow", target, Some(&config), &[]);
    let selector = r#"cg_search_user_hits_total{user_id="__overflow__"}"#;
    let from = st.prom.started_ms - 60_000;

    st.wait_scrapes(RESET_AT + 3, Duration::from_secs(40));
    st.wait_vm_reaches(now_ms() - 1_000, Duration::from_secs(30));
    let cg = st.cardguard.as_mut().unwrap();
    wait_snapshot_after(cg, now_ms() + 1000);
    let port = cg.port;
    cg.proc.stop("KILL", Duration::from_secs(5));
    let killed_at = now_ms();
    std::thread::sleep(Duration::from_secs(2));
    let config_path = st.config_path();
    let args = [
        "--upstream",
        &st.vm.write_url(),
        "--config",
        config_path.to_str().unwrap(),
    ];
    st.cardguard = Some(Cardguard::start_on_port(&st.dir, port, &args));
    let scrapes = st.target.scrapes();
    st.wait_scrapes(scrapes + 5, Duration::from_secs(20));
    st.wait_vm_reaches(now_ms() - 1_000, Duration::from_secs(30));

    let series = poll_until(
        "the overflow aggregate to have samples from after the restart",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || {
            let vm = st.vm.export(selector, from, now_ms() + 60_000)?;
            let (_, samples) = vm
                .into_iter()
                .next()
                .ok_or_else(|| "no overflow series yet".to_string())?;
            if samples.iter().any(|(t, _)| *t > killed_at + 2_000) {
                Ok(samples)
            } else {
                Err(format!("{} samples, none after the restart", samples.len()))
            }
        },
    );
    let mut problems = Vec::new();
    for w in series.windows(2) {
        if w[1].1 < w[0].1 {
            problems.push(format!(
                "{} at {} after {} at {}",
                w[1].1,
                fmt_ms(w[1].0),
                w[0].1,
                fmt_ms(w[0].0)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the overflow counter went down (killed at {}):\n{}",
        fmt_ms(killed_at),
        problems.join("\n")
    );
    // The members' counts before the reset are in it: far above what they count since.
    let last = series.last().unwrap().1;
    assert!(last > (USERS * 1000) as f64 / 2.0, "last value {last}");
    eprintln!(
        "[restart] overflow counter monotonic over {} samples, last {last}",
        series.len()
    );
}

// ---------------------------------------------------------------------------------------------
// A bad snapshot
// ---------------------------------------------------------------------------------------------

#[test]
fn a_truncated_or_bit_flipped_snapshot_starts_empty_and_says_why() {
    let dir = TestDir::new("restart-bad-snapshot");
    let upstream = fake_upstream();
    let state = dir.join("state");
    let args = [
        "--upstream",
        &upstream.write_url(),
        "--max-series-per-service",
        "10",
        "--storage.path",
        state.to_str().unwrap(),
    ];
    let body = |from: usize| {
        let series: Vec<_> = (from..from + 5)
            .map(|i| {
                rw::Series::new(
                    "cg_test_hits_total",
                    &[("service", "api"), ("id", &i.to_string())],
                    1.0,
                    now_ms(),
                )
            })
            .collect();
        rw::body(&series)
    };
    let mut cg = Cardguard::start_args(&dir, &args);
    let r = post_remote_write(&cg.write_url(), &body(0)).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    // SIGTERM: the final snapshot is written on the way out.
    cg.proc.stop("TERM", Duration::from_secs(20));
    let file = state.join("snapshot.cgs");
    let good = std::fs::read(&file).expect("a snapshot after SIGTERM");

    for (why, bytes) in [
        ("truncated", good[..good.len() * 2 / 3].to_vec()),
        ("corrupt", {
            let mut b = good.clone();
            let at = b.len() - 3;
            b[at] ^= 0x04;
            b
        }),
    ] {
        std::fs::write(&file, &bytes).unwrap();
        let mut cg = Cardguard::start_on_port(&dir, cg.port, &args);
        let m = cg.metrics_text();
        assert_eq!(
            metric_value(
                &m,
                "cardguard_snapshot_load_failures_total",
                &[("reason", why)]
            ),
            Some(1.0),
            "{why}: {m}"
        );
        let log = cg.proc.log_text();
        assert!(
            log.contains("snapshot not restored, starting empty") && log.contains(why),
            "{why}: the log does not say why:\n{log}"
        );
        assert!(!file.exists(), "{why}: the bad file was not moved aside");
        let aside = std::fs::read_dir(&state)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("snapshot.cgs.bad-")
            })
            .count();
        assert!(aside >= 1, "{why}: nothing moved aside");
        // It serves: ready, and a write is admitted and forwarded.
        assert_eq!(
            http_get(&format!("{}/-/ready", cg.base())).unwrap().status,
            200
        );
        let r = post_remote_write(&cg.write_url(), &body(100)).unwrap();
        assert_eq!(r.status, 204, "{why}: {}", r.text());
        let card = cg.cardinality().unwrap();
        let row = service_row(&card, "api").expect("api row");
        assert_eq!(num(row, "active"), Some(5.0), "{why}: started empty");
        cg.proc.stop("TERM", Duration::from_secs(20));
        // A bad file moved aside with the same second in its name must not be overwritten
        // by the next round's.
        std::thread::sleep(Duration::from_millis(1100));
    }
}
