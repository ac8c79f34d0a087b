//! End to end: the guard's `relabel` action between a real Prometheus 2.42 and a real
//! VictoriaMetrics 1.79.
//!
//! * `overflow_series_equals_the_sum_of_its_members`: Prometheus scrapes (every 1 s) a target
//!   where service `search` exposes 80 counters `search_requests_total{user_id="uN"}` (all from
//!   the first scrape, value `(N+1) * scrape`), and service `checkout` a few series well within
//!   budget. cardguard (budget 30 per service, action `relabel` on `user_id`, flushed every 1 s)
//!   must let exactly 30 real `user_id` series into VictoriaMetrics, sample for sample as
//!   Prometheus scraped them, plus exactly one `user_id="__overflow__"` series whose every
//!   sample equals the sum of the 50 other members' values at that sample's timestamp
//!   (Prometheus's own TSDB is the reference), is stamped with a real scrape timestamp and never
//!   goes down. `checkout` and the unowned series pass untouched; /metrics and
//!   /api/v1/cardinality account the merged samples as overflowed, not dropped; Prometheus sees
//!   no failed or retried remote-write samples.
//!
//! Needs the peers from `scripts/fetch-peers.sh`. Under `CARDGUARD_E2E_DIRECT=1` (harness
//! self-test without cardguard) this test has nothing to test and returns at once.

mod common;

use common::*;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BUDGET: usize = 30;
/// `user_id` series of `search`, all exposed from the first scrape.
const USERS: usize = 80;
/// Overflow members: the `search` series beyond the budget.
const MEMBERS: usize = USERS - BUDGET;
/// Series of `checkout` (counters + gauges), well within budget.
const CHECKOUT_COUNTERS: usize = 4;
const CHECKOUT_GAUGES: usize = 2;
const CHECKOUT_SERIES: usize = CHECKOUT_COUNTERS + CHECKOUT_GAUGES;
/// Scrapes of the target before the checks.
const SCRAPES: u64 = 10;
const OVERFLOW: &str = "__overflow__";
const METRIC: &str = "search_requests_total";

/// Value of `search_requests_total{user_id="u{user}"}` on scrape `n` (1-based).
fn user_value(user: usize, n: u64) -> u64 {
    (user as u64 + 1) * n
}

fn exposition(n: u64) -> String {
    let mut s = String::with_capacity(8 << 10);
    s.push_str("# TYPE cg_test_scrapes_total counter\n");
    s.push_str(&format!("cg_test_scrapes_total {n}\n"));
    s.push_str(&format!("# TYPE {METRIC} counter\n"));
    for u in 0..USERS {
        s.push_str(&format!(
            "{METRIC}{{service=\"search\",user_id=\"u{u}\"}} {}\n",
            user_value(u, n)
        ));
    }
    s.push_str("# TYPE checkout_requests_total counter\n");
    for i in 0..CHECKOUT_COUNTERS {
        s.push_str(&format!(
            "checkout_requests_total{{service=\"checkout\",endpoint=\"/e{i}\"}} {}\n",
            n * (i as u64 + 2) + 5
        ));
    }
    s.push_str("# TYPE checkout_queue_depth gauge\n");
    for i in 0..CHECKOUT_GAUGES {
        s.push_str(&format!(
            "checkout_queue_depth{{service=\"checkout\",queue=\"q{i}\"}} {}\n",
            ((n * 7 + i as u64) % 13) as f64 + 0.25
        ));
    }
    s
}

/// Sum over every reason of a `{reason: n}` object of a cardinality row.
fn by_reason_sum(row: &Json, key: &str) -> f64 {
    row.get(key)
        .and_then(Json::as_object)
        .map(|o| o.iter().filter_map(|(_, v)| v.as_f64()).sum())
        .unwrap_or(0.0)
}

/// The non-zero entries of a `{reason: n}` object of a cardinality row.
fn nonzero(row: &Json, key: &str) -> BTreeMap<String, f64> {
    row.get(key)
        .and_then(Json::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_f64().filter(|n| *n != 0.0).map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default()
}

fn row_summary(card: &Json, service: &str) -> String {
    match service_row(card, service) {
        None => format!("{service}: (no row)"),
        Some(r) => format!(
            "{service}: budget={:?} action={:?} active={:?} created={:?} dropped={:?} \
             overflowed={:?}",
            num(r, "budget"),
            r.get("action").and_then(Json::as_str),
            num(r, "active"),
            num(r, "created_total"),
            nonzero(r, "dropped_samples_total"),
            nonzero(r, "overflowed_samples_total"),
        ),
    }
}

/// Sum of the samples of `name` in a text exposition whose `service` label is `service`.
fn service_metric_sum(text: &str, name: &str, service: &str) -> f64 {
    metric_samples(text, name)
        .iter()
        .filter(|(l, _)| l.get("service").map(String::as_str) == Some(service))
        .map(|(_, v)| v)
        .sum()
}

fn fmt_samples(s: &Samples) -> String {
    let v: Vec<String> = s
        .iter()
        .map(|(t, v)| format!("{}={v}", fmt_ms(*t)))
        .collect();
    format!("[{}]", v.join(", "))
}

fn user_of(l: &Labels) -> &str {
    l.get("user_id").map(String::as_str).unwrap_or("")
}

/// One look at VictoriaMetrics and Prometheus that passed the checks of the admitted and
/// untouched series and found the overflow series settled up to `check_to`.
struct Snapshot {
    admitted: BTreeSet<String>,
    admitted_samples: usize,
    /// The overflow series' samples, in VictoriaMetrics's export order.
    overflow: Samples,
    /// Prometheus's samples of the non-admitted users (the overflow members).
    members: Vec<Samples>,
    /// The newest scrape at or before the cutoff: every overflow sample up to here is final.
    check_to: i64,
}

/// Sum of the members' Prometheus values at `t`, if every member has a sample there.
fn members_sum(members: &[Samples], t: i64) -> Option<f64> {
    members
        .iter()
        .map(|s| s.iter().find(|(ts, _)| *ts == t).map(|(_, v)| *v))
        .sum()
}

/// Everything wrong with the overflow samples. Each is stamped with cardguard's flush time and
/// holds the sum of the members' latest values at that moment, so up to `check_to` it must lie
/// between the members' sum at some scrape and at the newest scrape before its timestamp (a
/// flush may fall between the requests of one scrape, or before a scrape arrived); timestamps
/// must be unique and values must never go down; and at least one sample must be exactly a
/// complete scrape's sum.
fn overflow_problems(s: &Snapshot) -> Vec<String> {
    let mut problems = Vec::new();
    let scrape_ts: Vec<i64> = s.members[0].iter().map(|(t, _)| *t).collect();
    let sums: Vec<(i64, f64)> = scrape_ts
        .iter()
        .filter_map(|t| members_sum(&s.members, *t).map(|v| (*t, v)))
        .collect();
    let mut exact = 0;
    for (t, v) in s.overflow.iter().filter(|(t, _)| *t <= s.check_to) {
        let Some(&(_, newest)) = sums.iter().rev().find(|(st, _)| st <= t) else {
            problems.push(format!(
                "overflow sample {v} at {} precedes every scrape",
                fmt_ms(*t)
            ));
            continue;
        };
        // Remote write lags the scrape: allow the sum of a scrape up to 3 s older.
        let oldest = sums
            .iter()
            .rev()
            .find(|(st, _)| *st <= t - 3_000)
            .or(sums.first())
            .map_or(0.0, |(_, x)| *x);
        if *v > newest || *v < oldest {
            problems.push(format!(
                "@{}: {v} is not a sum of the members' values (newest scrape sum before it: {newest})",
                fmt_ms(*t)
            ));
        }
        if sums.iter().any(|(_, x)| x == v) {
            exact += 1;
        }
    }
    if exact == 0 {
        problems.push(format!(
            "no overflow sample equals a complete scrape's sum ({} samples checked)",
            s.overflow.len()
        ));
    }
    for w in s.overflow.windows(2) {
        if w[1].0 <= w[0].0 || w[1].1 < w[0].1 {
            problems.push(format!(
                "overflow series not strictly timed and monotonic: {}={} then {}={}",
                fmt_ms(w[0].0),
                w[0].1,
                fmt_ms(w[1].0),
                w[1].1
            ));
        }
    }
    problems
}

#[test]
fn overflow_series_equals_the_sum_of_its_members() {
    if skip_in_direct_mode("relabel") {
        return;
    }
    let t0 = Instant::now();
    let config = format!(
        "guard:\n  owner_labels: [service]\n  overflow_flush_interval: 1s\n  \
         default_budget:\n    max_series: {BUDGET}\n    action: relabel\n    \
         overflow_labels: [user_id]\n  \
         # Prometheus's own series and the per-target up/scrape_* series have no owner.\n  \
         unowned_budget:\n    max_series: 100000\n    action: drop\n"
    );
    let target = TestTarget::start_with(Arc::new(exposition));
    let instance = target.addr();
    let mut st = Stack::start_with("relabel-overflow", target, Some(&config), &[]);
    eprintln!("[relabel] stack up after {:?}", t0.elapsed());

    st.wait_scrapes(SCRAPES + 1, Duration::from_secs(40));
    let cutoff = now_ms() - 1_500;
    st.wait_vm_reaches(cutoff, Duration::from_secs(20));
    eprintln!(
        "[relabel] {} scrapes; VM caught up to {} after {:?}",
        st.target.scrapes(),
        fmt_ms(cutoff),
        t0.elapsed()
    );
    let from = st.prom.started_ms - 60_000;

    let want_overflow_labels = labels(&[
        ("__name__", METRIC),
        ("service", "search"),
        ("user_id", OVERFLOW),
        ("job", "target"),
        ("instance", &instance),
    ]);

    // --- VictoriaMetrics against Prometheus's own TSDB --------------------------------------
    let snap = poll_until(
        "VictoriaMetrics to hold exactly 30 admitted search series identical to Prometheus, \
         exactly one __overflow__ series with a sample newer than the last checked scrape, and \
         checkout / unowned target series untouched",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || {
            st.assert_running();
            // VM first: Prometheus's TSDB always holds at least what remote write delivered.
            let vm = st.vm.export(r#"{job="target"}"#, from, now_ms() + 60_000)?;
            let at = now_ms();
            let range_s = ((at - from) / 1000 + 5) as u64;
            let prom = st.prom.raw_samples(r#"{job="target"}"#, at, range_s)?;
            let mut problems = Vec::new();

            // Harness sanity: Prometheus scraped all 80 users on every scrape.
            let prom_users: SeriesMap = prom
                .iter()
                .filter(|(l, _)| l.get("service").map(String::as_str) == Some("search"))
                .map(|(l, s)| (l.clone(), s.clone()))
                .collect();
            if prom_users.len() != USERS || prom_users.keys().any(|l| user_of(l) == OVERFLOW) {
                return Err(format!(
                    "harness: Prometheus holds {} search series, expected {USERS}: {:?}",
                    prom_users.len(),
                    prom_users.keys().map(fmt_labels).collect::<Vec<_>>()
                ));
            }
            let prom_ts: BTreeSet<i64> = prom_users
                .values()
                .flat_map(|s| s.iter().map(|(t, _)| *t))
                .collect();
            for (l, s) in &prom_users {
                if s.len() != prom_ts.len() {
                    return Err(format!(
                        "harness: Prometheus holds {} samples of {} but the search series have \
                         {} distinct timestamps (a partial scrape?)",
                        s.len(),
                        fmt_labels(l),
                        prom_ts.len()
                    ));
                }
            }
            // The newest scrape at or before the cutoff: VM must hold it for admitted series.
            let Some(&check_to) = prom_ts.range(..=cutoff).next_back() else {
                return Err(format!(
                    "harness: Prometheus has no search sample at or before {}",
                    fmt_ms(cutoff)
                ));
            };

            // The search series in VM: 30 real users and one overflow series.
            let vm_search: SeriesMap = vm
                .iter()
                .filter(|(l, _)| l.get("service").map(String::as_str) == Some("search"))
                .map(|(l, s)| (l.clone(), s.clone()))
                .collect();
            let vm_admitted: SeriesMap = vm_search
                .iter()
                .filter(|(l, _)| user_of(l) != OVERFLOW)
                .map(|(l, s)| (l.clone(), s.clone()))
                .collect();
            let vm_overflow: Vec<(&Labels, &Samples)> = vm_search
                .iter()
                .filter(|(l, _)| user_of(l) == OVERFLOW)
                .collect();
            if vm_admitted.len() != BUDGET {
                problems.push(format!(
                    "VM holds {} real user_id series of search, expected exactly the budget \
                     {BUDGET}: {:?}",
                    vm_admitted.len(),
                    vm_admitted.keys().map(user_of).collect::<Vec<_>>()
                ));
            }
            for l in vm_admitted.keys().filter(|l| !prom_users.contains_key(*l)) {
                problems.push(format!(
                    "search series in VM that Prometheus never had: {}",
                    fmt_labels(l)
                ));
            }
            // Every admitted series: all of Prometheus's samples, from its first one on.
            let admitted_prom: SeriesMap = prom_users
                .iter()
                .filter(|(l, _)| vm_admitted.contains_key(*l))
                .map(|(l, s)| (l.clone(), s.clone()))
                .collect();
            problems.extend(compare_samples(
                &admitted_prom,
                &vm_admitted,
                from,
                cutoff,
                0.0,
            ));

            // Everything else of the target (checkout, cg_test_scrapes_total, up, scrape_*)
            // passes untouched.
            let not_search = |m: &SeriesMap| -> SeriesMap {
                m.iter()
                    .filter(|(l, _)| l.get("service").map(String::as_str) != Some("search"))
                    .map(|(l, s)| (l.clone(), s.clone()))
                    .collect()
            };
            let (prom_rest, vm_rest) = (not_search(&prom), not_search(&vm));
            let prom_checkout = prom_rest
                .keys()
                .filter(|l| l.get("service").map(String::as_str) == Some("checkout"))
                .count();
            if prom_checkout != CHECKOUT_SERIES {
                return Err(format!(
                    "harness: Prometheus holds {prom_checkout} checkout series, expected \
                     {CHECKOUT_SERIES}"
                ));
            }
            problems.extend(compare_samples(&prom_rest, &vm_rest, from, cutoff, 0.0));

            // The overflow series: exactly one, with the labels Prometheus attached.
            let overflow: Samples = match vm_overflow.as_slice() {
                [(l, s)] => {
                    if **l != want_overflow_labels {
                        problems.push(format!(
                            "overflow series has labels {}, expected {}",
                            fmt_labels(l),
                            fmt_labels(&want_overflow_labels)
                        ));
                    }
                    (*s).clone()
                }
                [] => {
                    problems.push(format!(
                        "VM holds no {METRIC}{{user_id=\"{OVERFLOW}\"}} series"
                    ));
                    Vec::new()
                }
                many => {
                    problems.push(format!(
                        "VM holds {} overflow series, expected exactly one: {:?}",
                        many.len(),
                        many.iter().map(|(l, _)| fmt_labels(l)).collect::<Vec<_>>()
                    ));
                    Vec::new()
                }
            };
            // Settled up to check_to once a flush carried a newer scrape (one remote-write
            // shard delivers in scrape order, so every member sample up to check_to was merged
            // before that flush).
            let newest = overflow.iter().map(|(t, _)| *t).max();
            if !overflow.is_empty() && newest <= Some(check_to) {
                problems.push(format!(
                    "the overflow series' newest sample is at {:?}; waiting for a flush of a \
                     scrape after {} (the last one checked)",
                    newest.map(fmt_ms),
                    fmt_ms(check_to)
                ));
            }
            // The members: the users Prometheus has that were not admitted.
            let members: Vec<Samples> = prom_users
                .iter()
                .filter(|(l, _)| !vm_admitted.contains_key(*l))
                .map(|(_, s)| s.clone())
                .collect();
            if problems.is_empty() && members.len() != MEMBERS {
                problems.push(format!(
                    "{} overflow members, expected {MEMBERS}",
                    members.len()
                ));
            }
            if problems.is_empty() {
                Ok(Snapshot {
                    admitted: vm_admitted.keys().map(|l| user_of(l).to_string()).collect(),
                    admitted_samples: window(&vm_admitted, from, cutoff)
                        .values()
                        .map(Vec::len)
                        .sum(),
                    overflow,
                    members,
                    check_to,
                })
            } else {
                Err(format!(
                    "{} problems:\n{}\n  overflow samples in VM: {}",
                    problems.len(),
                    summarize(&problems, 20),
                    fmt_samples(&overflow)
                ))
            }
        },
    );
    eprintln!(
        "[relabel] VM: {BUDGET} admitted users {:?} ({} samples, identical to Prometheus up to \
         {}); checkout and unowned series untouched; overflow series: {} ({:?})",
        snap.admitted,
        snap.admitted_samples,
        fmt_ms(snap.check_to),
        fmt_samples(&snap.overflow),
        t0.elapsed()
    );

    // --- The overflow series' values -------------------------------------------------------
    let mut overflow_fail = overflow_problems(&snap);
    let checked: Vec<(i64, f64)> = snap
        .overflow
        .iter()
        .copied()
        .filter(|(t, _)| *t <= snap.check_to)
        .collect();
    let latest_t = checked.iter().map(|(t, _)| *t).max();
    match latest_t {
        None => overflow_fail.push(format!(
            "no overflow sample at or before {} to check",
            fmt_ms(snap.check_to)
        )),
        Some(lt) => {
            let at_latest: Vec<f64> = checked
                .iter()
                .filter(|(t, _)| *t == lt)
                .map(|(_, v)| *v)
                .collect();
            let want = members_sum(&snap.members, lt);
            // The flush-time stamp need not be a scrape timestamp (`want` is then None), and a
            // flush may see part of a scrape: overflow_problems checks the value's bounds.
            if at_latest.len() != 1 {
                overflow_fail.push(format!(
                    "latest checked overflow sample @{}: VM {at_latest:?}, expected exactly one \
                     value (members' sum at that timestamp, if it is a scrape's: {want:?})",
                    fmt_ms(lt)
                ));
            }
            // Independently of Prometheus: the target's formula summed over the members.
            let weight: u64 = (0..USERS)
                .filter(|u| !snap.admitted.contains(&format!("u{u}")))
                .map(|u| user_value(u, 1))
                .sum();
            for v in &at_latest {
                if *v < weight as f64 {
                    overflow_fail.push(format!(
                        "latest checked overflow value {v} is below one scrape's worth of the \
                         members ({weight})"
                    ));
                }
            }
        }
    }
    let distinct_ts: BTreeSet<i64> = checked.iter().map(|(t, _)| *t).collect();
    if distinct_ts.len() < 3 {
        overflow_fail.push(format!(
            "only {} overflow timestamps up to {} (scraped {} times)",
            distinct_ts.len(),
            fmt_ms(snap.check_to),
            st.target.scrapes()
        ));
    }
    if !overflow_fail.is_empty() {
        // Reported at the end, after cardguard's and Prometheus's counters were looked at.
        eprintln!(
            "[relabel] OVERFLOW SERIES WRONG ({} problems):\n{}",
            overflow_fail.len(),
            summarize(&overflow_fail, 30)
        );
    }

    // --- cardguard's own accounting ---------------------------------------------------------
    // Scrapes of the members that VM verified (up to `checked_to`), each 50 overflowed samples.
    let verified_scrapes = {
        let range_s = ((now_ms() - from) / 1000 + 5) as u64;
        let m = st
            .prom
            .raw_samples(r#"{job="target",user_id="u0"}"#, snap.check_to, range_s)
            .expect("Prometheus query");
        m.values().next().map_or(0, Vec::len) as f64
    };
    let cg = st.cardguard.as_ref().unwrap();
    let (metrics, card) = poll_until(
        "cardguard's /metrics and /api/v1/cardinality to show search overflowed (not dropped) \
         and checkout untouched",
        Duration::from_secs(10),
        Duration::from_millis(500),
        || {
            let m = cg.metrics_text();
            let card = cg.cardinality()?;
            let max_scrapes = st.target.scrapes() as f64;
            let mut problems = Vec::new();
            let overflowed = metric_value(
                &m,
                "cardguard_samples_overflowed_total",
                &[("service", "search"), ("reason", "budget")],
            );
            let lo = MEMBERS as f64 * verified_scrapes;
            let hi = MEMBERS as f64 * max_scrapes;
            match overflowed {
                Some(o) if o >= lo && o <= hi => {}
                o => problems.push(format!(
                    "cardguard_samples_overflowed_total{{service=\"search\",reason=\"budget\"}} \
                     = {o:?}, expected {MEMBERS} per scrape: between {lo} and {hi}"
                )),
            }
            for svc in ["search", "checkout"] {
                let d = service_metric_sum(&m, "cardguard_samples_dropped_total", svc);
                if d != 0.0 {
                    problems.push(format!("cardguard_samples_dropped_total for {svc} is {d}"));
                }
            }
            let co = service_metric_sum(&m, "cardguard_samples_overflowed_total", "checkout");
            if co != 0.0 {
                problems.push(format!(
                    "cardguard_samples_overflowed_total for checkout is {co}"
                ));
            }
            match service_row(&card, "search") {
                None => problems.push("no search row in /api/v1/cardinality".into()),
                Some(r) => {
                    if num(r, "active") != Some(BUDGET as f64) {
                        problems.push(format!(
                            "search active {:?}, expected {BUDGET}",
                            num(r, "active")
                        ));
                    }
                    if r.get("action").and_then(Json::as_str) != Some("relabel") {
                        problems.push(format!("search action {:?}", r.get("action")));
                    }
                    let o = by_reason_sum(r, "overflowed_samples_total");
                    if !(o >= lo && o <= hi) {
                        problems.push(format!(
                            "search overflowed_samples_total {:?}, expected between {lo} and {hi}",
                            r.get("overflowed_samples_total")
                        ));
                    }
                    if by_reason_sum(r, "dropped_samples_total") != 0.0 {
                        problems.push(format!(
                            "search dropped samples: {:?}",
                            r.get("dropped_samples_total")
                        ));
                    }
                }
            }
            match service_row(&card, "checkout") {
                None => problems.push("no checkout row in /api/v1/cardinality".into()),
                Some(r) => {
                    if num(r, "active") != Some(CHECKOUT_SERIES as f64) {
                        problems.push(format!(
                            "checkout active {:?}, expected {CHECKOUT_SERIES}",
                            num(r, "active")
                        ));
                    }
                    if by_reason_sum(r, "dropped_samples_total") != 0.0
                        || by_reason_sum(r, "overflowed_samples_total") != 0.0
                    {
                        problems.push(format!(
                            "checkout had samples dropped or overflowed: {:?} {:?}",
                            r.get("dropped_samples_total"),
                            r.get("overflowed_samples_total")
                        ));
                    }
                }
            }
            if problems.is_empty() {
                Ok((m, card))
            } else {
                Err(format!(
                    "{}\n  {}\n  {}",
                    problems.join("; "),
                    row_summary(&card, "search"),
                    row_summary(&card, "checkout")
                ))
            }
        },
    );
    eprintln!(
        "[relabel] cardguard: overflowed {:?} search samples ({verified_scrapes} verified \
         scrapes x {MEMBERS}); {}; {}",
        metric_value(
            &metrics,
            "cardguard_samples_overflowed_total",
            &[("service", "search"), ("reason", "budget")],
        ),
        row_summary(&card, "search"),
        row_summary(&card, "checkout")
    );

    // --- Prometheus saw nothing fail ----------------------------------------------------------
    let pm = st.prom.metrics_text();
    let failed = metric_sum(&pm, "prometheus_remote_storage_samples_failed_total");
    let retried = metric_sum(&pm, "prometheus_remote_storage_samples_retried_total");
    assert_eq!(
        (failed, retried),
        (Some(0.0), Some(0.0)),
        "Prometheus had remote-write failures or retries: {}",
        remote_storage_summary(&pm)
    );
    let codes: BTreeMap<String, f64> = metric_samples(&metrics, "cardguard_write_requests_total")
        .into_iter()
        .map(|(l, v)| (l.get("code").cloned().unwrap_or_default(), v))
        .collect();
    assert!(
        codes.keys().all(|c| c.starts_with('2')),
        "cardguard_write_requests_total has non-2xx codes: {codes:?}"
    );
    let requests: f64 = codes.values().sum();
    let scrapes = st.target.scrapes();
    let per_send = metric_sum(&pm, "prometheus_remote_storage_max_samples_per_send");
    let sent = metric_sum(&pm, "prometheus_remote_storage_samples_total").unwrap_or(0.0);
    eprintln!(
        "[relabel] prometheus: {}, max_samples_per_send {per_send:?}; cardguard write codes \
         {codes:?} ({:.1} requests per target scrape, {:.0} samples per request); done in {:?}",
        remote_storage_summary(&pm),
        requests / scrapes as f64,
        sent / requests.max(1.0),
        t0.elapsed()
    );

    let hint = if overflow_fail
        .iter()
        .any(|p| p.contains("partial aggregate"))
    {
        format!(
            "\n  The extra values are partial aggregates: stamped with a scrape's timestamp while \
             only some of the members (a prefix, in exposition order) carried that scrape's \
             value, i.e. a flush ran while that scrape's members were still being merged (within \
             one request, or between two: Prometheus sent {requests} requests for {scrapes} \
             target scrapes, ~{:.0} samples each, max_samples_per_send {per_send:?}, so batches \
             can split one scrape). The next flush then sends the complete sum with the same \
             timestamp, leaving two different values at one timestamp upstream.",
            sent / requests.max(1.0)
        )
    } else {
        String::new()
    };
    assert!(
        overflow_fail.is_empty(),
        "the overflow series in VictoriaMetrics is not the sum of its {MEMBERS} members \
         ({} problems):\n{}{hint}\n  overflow samples in VM (export order): {}",
        overflow_fail.len(),
        summarize(&overflow_fail, 30),
        fmt_samples(&snap.overflow)
    );
}

// ---------------------------------------------------------------------------------------------
// The same property, deterministically: one scrape's members split over two requests
// ---------------------------------------------------------------------------------------------

/// `(timestamp, value)` of every `__overflow__` sample cardguard has sent to `upstream`, in the
/// order sent.
fn overflow_samples_sent(upstream: &Sink) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    for req in upstream.received() {
        let raw = rw::unsnappy(&req.body).expect("upstream body: snappy");
        let (series, _) = rw::decode(&raw).expect("upstream body: protobuf");
        for s in series {
            if s.label("user_id") == Some(OVERFLOW.as_bytes()) {
                out.extend(s.samples.iter().map(|(v, t)| (*t, *v)));
            }
        }
    }
    out
}

/// Prometheus sends a scrape in batches of `max_samples_per_send` (500 in 2.42), so one
/// scrape's overflow members can arrive in two requests, the second up to a
/// `batch_send_deadline` later (the end-to-end test above sees this in about two runs of three).
/// A flush in between must not emit the aggregate at that scrape's timestamp with only some of
/// the members at that scrape's value: every sample sent is the members' sum at its own
/// timestamp, and no timestamp is sent with two different values. No Prometheus or VM needed.
#[test]
fn overflow_flush_between_the_requests_of_one_scrape() {
    let t0 = Instant::now();
    let dir = TestDir::new("relabel-split-scrape");
    let upstream = fake_upstream();
    let cfg_path = dir.join("cardguard.yml");
    std::fs::write(
        &cfg_path,
        "guard:\n  overflow_flush_interval: 1s\n  default_budget:\n    max_series: 1\n    \
         action: relabel\n    overflow_labels: [user_id]\n",
    )
    .unwrap();
    let cg = Cardguard::start(
        &dir,
        &upstream.write_url(),
        &["--config", cfg_path.to_str().unwrap()],
    );
    let post = |users: std::ops::Range<u64>, n: u64, ts: i64| {
        let series: Vec<rw::Series> = users
            .map(|u| {
                rw::Series::new(
                    METRIC,
                    &[("service", "search"), ("user_id", &format!("u{u}"))],
                    (u * n) as f64,
                    ts,
                )
            })
            .collect();
        let r = post_remote_write(&cg.write_url(), &rw::body(&series)).expect("write");
        assert_eq!(r.status, 204, "write answered {}: {}", r.status, r.text());
    };
    // Up to `within` for a flush to carry `(ts, value)`; whether it did or not, go on (an
    // implementation may rightly hold a sample back). The flush interval is 1 s.
    let wait_for = |ts: i64, value: Option<f64>, within: Duration| {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if overflow_samples_sent(&upstream)
                .iter()
                .any(|(t, v)| *t == ts && value.is_none_or(|w| *v == w))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let t1 = now_ms() - 10_000;
    let t2 = t1 + 1_000;
    // Scrape 1 in one request: u1 admitted (budget 1), u2..u5 overflow members; value u * n.
    post(1..6, 1, t1);
    wait_for(t1, None, Duration::from_millis(2_500));
    // Scrape 2 split: u1..u3 in one request, at least one flush interval, then u4, u5.
    post(1..4, 2, t2);
    std::thread::sleep(Duration::from_millis(1_500));
    post(4..6, 2, t2);
    // Scrape 2 complete: u2..u5 = 4 + 6 + 8 + 10. Aggregates carry their flush time, so wait
    // for the value, whatever its timestamp.
    let deadline = std::time::Instant::now() + Duration::from_millis(4_000);
    while !overflow_samples_sent(&upstream)
        .iter()
        .any(|(_, v)| *v == 28.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the complete sum 28 was never sent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = overflow_samples_sent(&upstream);
    eprintln!(
        "[relabel-split] overflow samples sent: {:?} ({:?})",
        sent.iter()
            .map(|(t, v)| format!("{}={v}", fmt_ms(*t)))
            .collect::<Vec<_>>(),
        t0.elapsed()
    );
    // Every sample is a sum of the members' latest values when it was flushed: between the
    // complete sum of scrape 1 (14) and of scrape 2 (28); a partial scrape 2 (19) is allowed,
    // but at its own timestamp. Timestamps strictly increase, values never go down.
    let problems: Vec<String> = sent
        .windows(2)
        .filter(|w| w[1].0 <= w[0].0 || w[1].1 < w[0].1)
        .map(|w| {
            format!(
                "{}={} then {}={}",
                fmt_ms(w[0].0),
                w[0].1,
                fmt_ms(w[1].0),
                w[1].1
            )
        })
        .chain(
            sent.iter()
                .filter(|(_, v)| !(14.0..=28.0).contains(v))
                .map(|(t, v)| format!("{}={v} outside [14, 28]", fmt_ms(*t))),
        )
        .collect();
    assert!(
        problems.is_empty() && sent.first().is_some_and(|(_, v)| *v == 14.0),
        "scrape 2 arrived in two requests with a flush in between (t1={}, t2={}): {problems:?}; \
         all sent: {:?}",
        fmt_ms(t1),
        fmt_ms(t2),
        sent.iter()
            .map(|(t, v)| format!("{}={v}", fmt_ms(*t)))
            .collect::<Vec<_>>()
    );
}
