//! End to end: three cardguard replicas sharing their budgets through one real Redis, in front
//! of one real VictoriaMetrics. Three senders (in-test remote-write clients), each writing to
//! its own replica.
//!
//! * `three_replicas_admit_exactly_one_budget`: `search` explodes with series that differ per
//!   sender; exactly `budget` of them reach VictoriaMetrics in total, every series of the other
//!   services arrives, every request gets 2xx; the same series sent through all three replicas
//!   counts once; every replica reports the global active count.
//! * `metric_label_and_global_limits_are_exact_across_replicas`: the same for a metric's limit,
//!   a label's distinct values and the global `max_series`, with the three senders sending at
//!   once: exactly the limit reaches VictoriaMetrics, every series under no limit arrives;
//!   after Redis restarts empty, the rejoining replicas restore the global set and the label's
//!   values, and the limits hold as before.
//! * `redis_outage_falls_back_and_rejoins`: Redis killed mid-run: 2xx continues, admitted
//!   series keep flowing, new series are admitted up to `budget / replicas_hint` per replica;
//!   Redis started again (empty): the replicas rejoin, tell it what they hold, and the global
//!   count is exact again (no new series past the budget) within a slice.
//! * `a_replica_with_another_hash_seed_refuses_to_join`: it exits at start, saying why.
//!
//! Needs `redis-server` and VictoriaMetrics from `scripts/fetch-peers.sh`.

mod common;

use common::rw::Series;
use common::*;
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const SEED: u64 = 42;

fn config(dir: &TestDir, name: &str, vm: &Vm, redis: &Redis, budget: u64, seed: u64) -> String {
    let limits = format!(
        "\x20 default_budget:\n    max_series: {budget}\n\
         \x20 budgets:\n    - service: everywhere\n      max_series: 5\n"
    );
    config_with(dir, name, vm, redis, &limits, seed)
}

/// A replica's config with `limits` (YAML lines of the `guard:` section) and the shared part.
fn config_with(
    dir: &TestDir,
    name: &str,
    vm: &Vm,
    redis: &Redis,
    limits: &str,
    seed: u64,
) -> String {
    let path = dir.join(&format!("{name}.yml"));
    std::fs::write(
        &path,
        format!(
            "upstream:\n  url: {vm}\n\
             guard:\n  hash_seed: {seed}\n  window: 1m\n  window_slices: 60\n\
             {limits}\
             \x20 shared:\n    url: {redis}\n    key_prefix: \"e2e:\"\n    timeout: 500ms\n\
             \x20   connect_timeout: 500ms\n    replicas_hint: 3\n",
            vm = vm.write_url(),
            redis = redis.url(),
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn replicas(dir: &TestDir, vm: &Vm, redis: &Redis, budget: u64) -> Vec<Cardguard> {
    (0..3)
        .map(|k| {
            let cfg = config(dir, &format!("replica{k}"), vm, redis, budget, SEED);
            Cardguard::start_args(dir, &["--config.file", &cfg])
        })
        .collect()
}

/// Send and insist on 2xx.
fn send(cg: &Cardguard, series: &[Series]) {
    let r = post_remote_write(&cg.write_url(), &rw::body(series))
        .unwrap_or_else(|e| panic!("write to {}: {e}", cg.addr()));
    assert!(
        (200..300).contains(&r.status),
        "write to {} answered {}: {}",
        cg.addr(),
        r.status,
        r.text()
    );
}

fn search(sender: usize, j: usize, ts: i64) -> Series {
    Series::new(
        "search_requests_total",
        &[
            ("service", "search"),
            ("user_id", &format!("u{sender}-{j}")),
        ],
        1.0,
        ts,
    )
}

fn steady(sender: usize, j: usize, ts: i64) -> Series {
    Series::new(
        "api_requests_total",
        &[
            ("service", "api"),
            ("sender", &sender.to_string()),
            ("path", &format!("/p{j}")),
        ],
        1.0,
        ts,
    )
}

fn everywhere(j: usize, ts: i64) -> Series {
    Series::new(
        "shared_thing",
        &[("service", "everywhere"), ("n", &j.to_string())],
        1.0,
        ts,
    )
}

/// Distinct series of `selector` in VictoriaMetrics since `from`.
fn vm_series(vm: &Vm, selector: &str, from: i64) -> BTreeSet<Labels> {
    vm.export(selector, from, now_ms() + 60_000)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_keys()
        .collect()
}

fn service_active(cg: &Cardguard, service: &str) -> Option<f64> {
    let card: Json = cg.cardinality().ok()?;
    num(service_row(&card, service)?, "active")
}

fn shared_up(cg: &Cardguard) -> Option<f64> {
    metric_value(&cg.metrics_text(), "cardguard_shared_admission_up", &[])
}

fn wait_joined(cg: &Cardguard, what: &str) {
    poll_until(
        what,
        Duration::from_secs(20),
        Duration::from_millis(100),
        || match shared_up(cg) {
            Some(1.0) => Ok(()),
            other => Err(format!("{}: up = {other:?}", cg.addr())),
        },
    );
}

#[test]
fn three_replicas_admit_exactly_one_budget() {
    let dir = TestDir::new("shared-exact");
    let redis = Redis::start(&dir);
    let vm = Vm::start(&dir);
    let budget = 30;
    let cgs = replicas(&dir, &vm, &redis, budget);
    let t0 = now_ms();
    for cg in &cgs {
        wait_joined(cg, "the replica to join");
    }

    // Ten rounds; per round each sender adds 8 search series of its own, re-sends what it sent
    // before (as a scraper would), and sends its 5 steady api series.
    for round in 0..10 {
        let ts = now_ms();
        for (k, cg) in cgs.iter().enumerate() {
            let mut body: Vec<Series> = (0..5).map(|j| steady(k, j, ts)).collect();
            body.extend((0..(round + 1) * 8).map(|j| search(k, j, ts)));
            body.extend((0..5).map(|j| everywhere(j, ts)));
            send(cg, &body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // One more series of `everywhere` (budget 5, already full through all three) is refused.
    send(&cgs[1], &[everywhere(5, now_ms())]);

    let searched = vm_series(&vm, "{service=\"search\"}", t0);
    assert_eq!(
        searched.len() as u64,
        budget,
        "exactly the budget of search series must reach VictoriaMetrics in total across the \
         three replicas"
    );
    assert_eq!(
        vm_series(&vm, "{service=\"api\"}", t0).len(),
        15,
        "every api series arrives"
    );
    assert_eq!(
        vm_series(&vm, "{service=\"everywhere\"}", t0).len(),
        5,
        "the same five series through three replicas count once (budget 5), a sixth is refused"
    );
    assert_eq!(redis.int(&["ZCARD", "e2e:s:-:search"]), budget as i64);
    for cg in &cgs {
        poll_until(
            "the global counts on every replica",
            Duration::from_secs(10),
            Duration::from_millis(200),
            || {
                let (s, e) = (
                    service_active(cg, "search"),
                    service_active(cg, "everywhere"),
                );
                if s == Some(budget as f64) && e == Some(5.0) {
                    Ok(())
                } else {
                    Err(format!(
                        "{}: search active {s:?}, everywhere active {e:?}",
                        cg.addr()
                    ))
                }
            },
        );
    }
}

/// Every sender at once, each to its own replica: requests race for the same last slots.
fn send_all(cgs: &[Cardguard], body: impl Fn(usize) -> Vec<Series> + Sync) {
    std::thread::scope(|s| {
        for (k, cg) in cgs.iter().enumerate() {
            let body = &body;
            s.spawn(move || send(cg, &body(k)));
        }
    });
}

fn series(name: &str, service: &str, labels: &[(&str, String)], ts: i64) -> Series {
    let mut all = vec![("service", service.to_string())];
    all.extend(labels.iter().cloned());
    let refs: Vec<(&str, &str)> = all.iter().map(|(n, v)| (*n, v.as_str())).collect();
    Series::new(name, &refs, 1.0, ts)
}

/// What sender `k` sends in round `round` of the limits test: everything it sent before
/// again (as a scraper would), plus new series. `flood` adds the global-cap phase.
fn limited(k: usize, round: usize, flood: Option<usize>, ts: i64) -> Vec<Series> {
    let mut body = Vec::new();
    // metered: 2 calm series per sender (all arrive), 4 new `metered_explode` per round.
    for n in 0..2 {
        let l = [("sender", k.to_string()), ("n", n.to_string())];
        body.push(series("metered_calm", "metered", &l, ts));
    }
    for j in 0..(round + 1) * 4 {
        let l = [("id", format!("{k}-{j}"))];
        body.push(series("metered_explode", "metered", &l, ts));
    }
    // labelled: 1 series without user_id, and 2 new user_id values per round, each on 2 paths.
    let l = [("sender", k.to_string())];
    body.push(series("labelled_calm", "labelled", &l, ts));
    for j in 0..(round + 1) * 2 {
        for path in ["/a", "/b"] {
            let l = [("user_id", format!("u{k}-{j}")), ("path", path.to_string())];
            body.push(series("labelled_requests", "labelled", &l, ts));
        }
    }
    // flood: 15 new series per round, under a budget far above the global cap.
    for j in 0..flood.map_or(0, |f| (f + 1) * 15) {
        let l = [("id", format!("{k}-{j}"))];
        body.push(series("flood_total", "flood", &l, ts));
    }
    body
}

/// The other limits a series must have room under are as exact across replicas as the owner's
/// budget: a metric's limit, a label's distinct values, and the global `max_series`.
#[test]
fn metric_label_and_global_limits_are_exact_across_replicas() {
    let dir = TestDir::new("shared-limits");
    let mut redis = Redis::start(&dir);
    let vm = Vm::start(&dir);
    let (metric_limit, label_limit, global) = (12, 7, 100);
    let limits = format!(
        "\x20 max_series: {global}\n\
         \x20 default_budget:\n    max_series: 1000\n\
         \x20 budgets:\n\
         \x20   - service: metered\n      metrics: {{metered_explode: {metric_limit}}}\n\
         \x20   - service: labelled\n      label_limits: {{user_id: {label_limit}}}\n"
    );
    let cgs: Vec<Cardguard> = (0..3)
        .map(|k| {
            let cfg = config_with(&dir, &format!("replica{k}"), &vm, &redis, &limits, SEED);
            Cardguard::start_args(&dir, &["--config.file", &cfg])
        })
        .collect();
    for cg in &cgs {
        wait_joined(cg, "the replica to join");
    }
    let t0 = now_ms();

    // Phase 1: six rounds; 72 metered_explode series offered for 12 slots, 36 user_id values
    // for 7, all senders at once.
    for round in 0..6 {
        let ts = now_ms();
        send_all(&cgs, |k| limited(k, round, None, ts));
        std::thread::sleep(Duration::from_millis(100));
    }
    let count = |selector: &str| vm_series(&vm, selector, t0).len();
    assert_eq!(
        count("{__name__=\"metered_explode\"}"),
        metric_limit,
        "exactly the metric's limit of metered_explode series reach VictoriaMetrics across the \
         three replicas"
    );
    assert_eq!(
        count("{__name__=\"metered_calm\"}"),
        6,
        "other metrics all arrive"
    );
    let users = vm_series(&vm, "{__name__=\"labelled_requests\"}", t0);
    let values: BTreeSet<&String> = users.iter().filter_map(|l| l.get("user_id")).collect();
    assert_eq!(
        values.len(),
        label_limit,
        "exactly the label's limit of user_id values reach VictoriaMetrics: {values:?}"
    );
    assert_eq!(
        users.len(),
        2 * label_limit,
        "both paths of every admitted user_id value arrive"
    );
    assert_eq!(count("{__name__=\"labelled_calm\"}"), 3);
    assert_eq!(
        redis.int(&["ZCARD", "e2e:l:-:labelled:user_id"]),
        label_limit as i64
    );
    let held = 6 + metric_limit + 2 * label_limit + 3;

    // Phase 2: `flood` (budget 1000) fills what the global cap leaves, all senders at once.
    for round in 0..4 {
        let ts = now_ms();
        send_all(&cgs, |k| limited(k, 5, Some(round), ts));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        count("{__name__=\"flood_total\"}"),
        global - held,
        "flood gets exactly what the global max_series leaves ({global} - {held})"
    );
    assert_eq!(
        count("{__name__=~\".+\"}"),
        global,
        "exactly the global max_series of series reach VictoriaMetrics in total"
    );
    assert_eq!(redis.int(&["ZCARD", "e2e:g"]), global as i64);

    // Phase 3: Redis restarted empty. Rejoining, the replicas tell it every series and every
    // limited label value they hold: the global set and the label's values are whole again,
    // and the limits hold as before (new user_id values and flood series are still refused).
    redis.kill();
    for cg in &cgs {
        poll_until(
            "the replica to notice Redis is gone",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || match shared_up(cg) {
                Some(0.0) => Ok(()),
                other => Err(format!("{}: up = {other:?}", cg.addr())),
            },
        );
    }
    redis.restart();
    for cg in &cgs {
        wait_joined(cg, "the replica to rejoin");
    }
    assert_eq!(redis.int(&["ZCARD", "e2e:g"]), global as i64);
    assert_eq!(
        redis.int(&["ZCARD", "e2e:l:-:labelled:user_id"]),
        label_limit as i64
    );
    let ts = now_ms();
    send_all(&cgs, |k| limited(k, 7, Some(5), ts));
    assert_eq!(
        count("{__name__=~\".+\"}"),
        global,
        "after the rejoin, still exactly the global max_series in total"
    );

    // Every refusal is counted under its own reason, somewhere among the replicas.
    for reason in ["metric_budget", "label_limit", "global_cap"] {
        let dropped: f64 = cgs
            .iter()
            .map(|cg| {
                metric_samples(&cg.metrics_text(), "cardguard_samples_dropped_total")
                    .into_iter()
                    .filter(|(l, _)| l.get("reason").map(String::as_str) == Some(reason))
                    .map(|(_, v)| v)
                    .sum::<f64>()
            })
            .sum();
        assert!(dropped > 0.0, "no samples dropped with reason {reason}");
    }
    // ...and never as the owner's budget, which none of them reached (a series refused again
    // later in the slice keeps the reason it was refused for).
    for cg in &cgs {
        let text = cg.metrics_text();
        for service in ["metered", "labelled", "flood"] {
            let budget = metric_value(
                &text,
                "cardguard_samples_dropped_total",
                &[("service", service), ("reason", "budget")],
            );
            assert!(
                budget.unwrap_or(0.0) == 0.0,
                "{}: {service} dropped {budget:?} samples for its budget, which it never reached",
                cg.addr()
            );
        }
    }
}

#[test]
fn redis_outage_falls_back_and_rejoins() {
    let dir = TestDir::new("shared-outage");
    let mut redis = Redis::start(&dir);
    let vm = Vm::start(&dir);
    // Fallback budget: 60 / replicas_hint 3 = 20 per replica.
    let budget = 60;
    let cgs = replicas(&dir, &vm, &redis, budget);
    for cg in &cgs {
        wait_joined(cg, "the replica to join");
    }
    // Phase 1: 10 search series per sender, all admitted through Redis (30 of 60).
    let t0 = now_ms();
    for (k, cg) in cgs.iter().enumerate() {
        send(cg, &(0..10).map(|j| search(k, j, t0)).collect::<Vec<_>>());
    }
    assert_eq!(redis.int(&["ZCARD", "e2e:s:-:search"]), 30);

    // Phase 2: Redis gone. Each sender sends its 10 admitted series and 20 new ones, twice.
    redis.kill();
    let t1 = now_ms() + 1;
    for _ in 0..2 {
        let ts = now_ms().max(t1);
        for (k, cg) in cgs.iter().enumerate() {
            send(cg, &(0..30).map(|j| search(k, j, ts)).collect::<Vec<_>>());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for cg in &cgs {
        let text = cg.metrics_text();
        assert_eq!(
            metric_value(&text, "cardguard_shared_admission_up", &[]),
            Some(0.0)
        );
        assert!(
            metric_value(&text, "cardguard_shared_admission_errors_total", &[]).unwrap_or(0.0)
                >= 1.0,
            "{}: the failed call is counted",
            cg.addr()
        );
    }
    let during = vm_series(&vm, "{service=\"search\"}", t1);
    for k in 0..3 {
        let mine = during
            .iter()
            .filter(|l| {
                l.get("user_id")
                    .is_some_and(|u| u.starts_with(&format!("u{k}-")))
            })
            .count();
        assert_eq!(
            mine, 20,
            "sender {k}: its 10 admitted series keep flowing, and the fallback admits 10 more \
             (budget / replicas_hint = 20 held by its replica)"
        );
    }

    // Phase 3: Redis back, empty. The replicas rejoin and tell it the 60 series they hold.
    redis.restart();
    for cg in &cgs {
        wait_joined(cg, "the replica to rejoin");
    }
    assert_eq!(redis.int(&["ZCARD", "e2e:s:-:search"]), 60);
    // Exact again: the budget is full, so no sender gets a new series in.
    let t2 = now_ms() + 1;
    let ts = now_ms().max(t2);
    for (k, cg) in cgs.iter().enumerate() {
        send(cg, &(0..40).map(|j| search(k, j, ts)).collect::<Vec<_>>());
    }
    assert_eq!(vm_series(&vm, "{service=\"search\"}", t2).len(), 60);
    assert_eq!(redis.int(&["ZCARD", "e2e:s:-:search"]), 60);
}

#[test]
fn a_replica_with_another_hash_seed_refuses_to_join() {
    let dir = TestDir::new("shared-seed");
    let redis = Redis::start(&dir);
    let vm = Vm::start(&dir);
    let first = config(&dir, "first", &vm, &redis, 10, SEED);
    let _a = Cardguard::start_args(&dir, &["--config.file", &first]);
    let other = config(&dir, "other", &vm, &redis, 10, 7);
    let out = Command::new(cardguard_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--config.file", &other])
        .output()
        .expect("run cardguard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a replica with another seed must not start: {stderr}"
    );
    assert!(
        stderr.contains("hash_seed (7) differs") && stderr.contains("(42"),
        "the refusal says why: {stderr}"
    );
}
