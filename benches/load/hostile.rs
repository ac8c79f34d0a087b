//! The hostile soak (`--soak-hostile SECS`, issue 11): cardguard alone, for SECS seconds,
//! under a hostile mix (junk `service` values, a new tenant every request, an exploding
//! `user_id` collapsed by a `relabel` budget, 16 KiB label values read by a recording rule,
//! metric names new in every request) next to well-behaved services on their own tenant.
//! RSS is sampled throughout; what matters is that it is flat after warm-up (the caps and
//! forgetting of idle owners hold) and that the well-behaved services lose nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardguard::sink::Sink;
use cardguard::wire::testgen;

use crate::target::{ProcStats, Target};

/// Well-behaved services, series each, and how often each sends all of its series.
const GOOD_SERVICES: usize = 10;
const GOOD_SERIES: usize = 500;
const GOOD_EVERY: Duration = Duration::from_secs(1);
/// Hostile series per request, per kind, and how often a hostile request goes out.
const HOSTILE_PER_KIND: usize = 50;
const HOSTILE_EVERY: Duration = Duration::from_millis(250);

pub struct HostileSoak {
    pub secs: f64,
    pub warmup_secs: f64,
    /// (seconds since start, RSS bytes)
    pub rss: Vec<(f64, u64)>,
    pub good_sent: BTreeMap<String, u64>,
    pub good_seen: BTreeMap<String, u64>,
    pub good_refused: u64,
    pub hostile_requests: u64,
    pub hostile_statuses: BTreeMap<u16, u64>,
    /// `cardguard_memory_bytes` and friends at the end.
    pub memory: Vec<String>,
}

impl HostileSoak {
    /// RSS at the end of warm-up, at the end, and min/max after warm-up.
    pub fn rss_summary(&self) -> (u64, u64, u64, u64) {
        let after: Vec<u64> = self
            .rss
            .iter()
            .filter(|(t, _)| *t >= self.warmup_secs)
            .map(|(_, r)| *r)
            .collect();
        let warm = after.first().copied().unwrap_or(0);
        let end = after.last().copied().unwrap_or(0);
        let min = after.iter().copied().min().unwrap_or(0);
        let max = after.iter().copied().max().unwrap_or(0);
        (warm, end, min, max)
    }

    /// The least share of its samples a well-behaved service got through, in %.
    pub fn least_served(&self) -> f64 {
        self.good_sent
            .iter()
            .map(|(s, n)| self.good_seen.get(s).copied().unwrap_or(0) as f64 / *n as f64 * 100.0)
            .fold(f64::INFINITY, f64::min)
    }

    pub fn print(&self) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let (warm, end, min, max) = self.rss_summary();
        let drift = (end as f64 - warm as f64) / warm as f64 * 100.0;
        println!(
            "cardguard hostile soak {:.0}s: RSS after {:.0}s warm-up {:.1} MiB, at the end {:.1} MiB ({drift:+.1}%), \
             min {:.1} max {:.1} MiB after warm-up; well-behaved services: least served {:.3}% of their samples, \
             {} of their requests refused; {} hostile requests ({:?})",
            self.secs,
            self.warmup_secs,
            mib(warm),
            mib(end),
            mib(min),
            mib(max),
            self.least_served(),
            self.good_refused,
            self.hostile_requests,
            self.hostile_statuses,
        );
        let curve: Vec<String> = self
            .rss
            .iter()
            .step_by((self.rss.len() / 12).max(1))
            .map(|(t, r)| format!("{t:.0}s {:.1}", mib(*r)))
            .collect();
        println!("RSS (MiB) over the run: {}", curve.join(", "));
        for m in &self.memory {
            println!("  {m}");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn post(agent: &ureq::Agent, url: &str, tenant: &str, body: &[u8]) -> u16 {
    agent
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .header("X-Scope-OrgID", tenant)
        .send(body)
        .map_or(0, |r| r.status().as_u16())
}

fn config(port: u16, upstream: &str, rules: &std::path::Path) -> String {
    format!(
        "server:\n  listen_address: 127.0.0.1:{port}\n\
         upstream:\n  url: {upstream}\n\
         rule_files: [{rules}]\n\
         rules:\n  evaluation_interval: 5s\n  query_offset: 1s\n\
         guard:\n  owner_labels: [service]\n  tenant_header: X-Scope-OrgID\n  window: 1m\n  \
         window_slices: 6\n  max_owners: 2000\n  max_tenants: 50\n  max_owners_per_tenant: 200\n  \
         overflow_flush_interval: 5s\n  \
         default_budget:\n    max_series: 2000\n    action: drop\n  \
         budgets:\n    - service: explode\n      action: relabel\n      overflow_labels: [user_id]\n      max_series: 100\n",
        rules = rules.display()
    )
}

pub fn run(dir: &std::path::Path, upstream: &Sink, secs: f64) -> HostileSoak {
    let rules = dir.join("hostile-rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: long\n    rules:\n      - record: service:long:count\n        expr: count by (service) (long)\n",
    )
    .expect("write rules");
    let upstream_url = upstream.write_url();
    let t = Target::start_cardguard(dir, |port| config(port, &upstream_url, &rules));
    upstream.reset();
    let url = format!("http://{}/api/v1/write", t.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();

    // Well-behaved: every series of every service once a second, tenant `good`.
    let good = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let agent = agent();
            let mut sent: BTreeMap<String, u64> = BTreeMap::new();
            let mut refused = 0u64;
            let mut step = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let ts = now_ms();
                for s in 0..GOOD_SERVICES {
                    let service = format!("good-{s:02}");
                    let series: Vec<_> = (0..GOOD_SERIES)
                        .map(|i| {
                            let pod = format!("pod-{i:04}");
                            testgen::sorted_series(
                                &[
                                    ("__name__", "http_requests_total"),
                                    ("pod", &pod),
                                    ("service", &service),
                                ],
                                &[(step as f64, ts)],
                            )
                        })
                        .collect();
                    let status = post(&agent, &url, "good", &testgen::body_v1(series));
                    if (200..300).contains(&status) {
                        *sent.entry(service).or_default() += GOOD_SERIES as u64;
                    } else {
                        refused += 1;
                    }
                }
                step += 1;
                std::thread::sleep(GOOD_EVERY);
            }
            (sent, refused)
        })
    };

    // Hostile: four kinds of abuse in every request, a new tenant each time.
    let hostile = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let agent = agent();
            let long = "v".repeat(16 << 10).split_off(64); // just under the 16 KiB value cap
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut n = 0u64;
            let mut requests = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ts = now_ms();
                let mut series = Vec::with_capacity(3 * HOSTILE_PER_KIND);
                // The explosion on the well-behaved tenant, where its budget is exceeded and
                // `relabel` collapses it, with junk owners pressing on that tenant's cap.
                let mut on_good = Vec::with_capacity(2 * HOSTILE_PER_KIND);
                for _ in 0..HOSTILE_PER_KIND {
                    n += 1;
                    let id = n.to_string();
                    let junk = format!("junk-{n}");
                    let name = format!("m_{n}");
                    let value = format!("{long}{n}");
                    series.push(testgen::sorted_series(
                        &[("__name__", "up"), ("service", &junk)],
                        &[(1.0, ts)],
                    ));
                    on_good.push(testgen::sorted_series(
                        &[("__name__", "up"), ("service", &junk)],
                        &[(1.0, ts)],
                    ));
                    on_good.push(testgen::sorted_series(
                        &[
                            ("__name__", "req_total"),
                            ("service", "explode"),
                            ("user_id", &id),
                        ],
                        &[(n as f64, ts)],
                    ));
                    series.push(testgen::sorted_series(
                        &[("__name__", &name), ("service", "names")],
                        &[(1.0, ts)],
                    ));
                    series.push(testgen::sorted_series(
                        &[("__name__", "long"), ("service", "long"), ("v", &value)],
                        &[(1.0, ts)],
                    ));
                }
                requests += 2;
                let tenant = format!("tenant-{requests}");
                let status = post(&agent, &url, &tenant, &testgen::body_v1(series));
                *statuses.entry(status).or_default() += 1;
                let status = post(&agent, &url, "good", &testgen::body_v1(on_good));
                *statuses.entry(status).or_default() += 1;
                std::thread::sleep(HOSTILE_EVERY);
            }
            (requests, statuses)
        })
    };

    let every = Duration::from_secs_f64((secs / 120.0).clamp(0.2, 5.0));
    let mut rss = Vec::new();
    while start.elapsed().as_secs_f64() < secs {
        rss.push((start.elapsed().as_secs_f64(), ProcStats::read(t.pid()).rss));
        std::thread::sleep(every);
    }
    stop.store(true, Ordering::Relaxed);
    let (good_sent, good_refused) = good.join().expect("well-behaved sender");
    let (hostile_requests, hostile_statuses) = hostile.join().expect("hostile sender");
    let memory = agent()
        .get(&format!("http://{}/metrics", t.addr))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("cardguard_memory")
                || l.starts_with("cardguard_guard_services")
                || l.starts_with("cardguard_guard_tenants")
        })
        .map(str::to_string)
        .collect();
    let seen = upstream.samples_by_service();
    let good_seen = good_sent
        .keys()
        .map(|s| (s.clone(), seen.get(s).copied().unwrap_or(0)))
        .collect();
    HostileSoak {
        secs,
        warmup_secs: (secs * 0.2).clamp(1.0, 120.0),
        rss,
        good_sent,
        good_seen,
        good_refused,
        hostile_requests,
        hostile_statuses,
        memory,
    }
}
