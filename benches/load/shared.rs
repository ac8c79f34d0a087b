//! `--shared` (issue 13): cardguard with `guard.shared` (budgets in a real Redis) next to the
//! local guard, in one run, behind the same load and null upstream.
//!
//! * Steady state (every series already admitted): samples per CPU-second of each, measured
//!   alternately (local, shared, local, shared) so that the machine's load hits both alike, and
//!   Redis round trips per request (should be none within a window slice).
//! * New series (the explosion load, fresh `user_id` series in every request of a step): at
//!   the same offered rate, the latency of each (p99 added), Redis round trips per request and
//!   Redis CPU per 1,000 series new to the replica.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cardguard::sink::Sink;

use crate::attack::scrape;
use crate::drive;
use crate::gen::Load;
use crate::target::{peers_bin, Kind, Limits, ProcStats, Target};
use crate::{assert_ok, plan, print_latency, saturate, settle, Args};

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        let bin = peers_bin("redis-server");
        if !bin.is_file() {
            panic!(
                "redis-server not found at {}: run `scripts/fetch-peers.sh` (or set \
                 CARDGUARD_PEERS_DIR)",
                bin.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("redis.log")).expect("redis log");
        let child = Command::new(bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        let r = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.ping().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn ping(&self) -> Result<(), String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.write_all(b"*1\r\n$4\r\nPING\r\n")
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        line.starts_with("+PONG").then_some(()).ok_or(line)
    }

    /// Microseconds Redis spent running scripts (`EVALSHA` and `EVAL`), and their calls.
    fn script_usec(&self) -> (f64, f64) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0.0, 0.0);
        };
        let _ = s.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n");
        let mut r = BufReader::new(s);
        let mut head = String::new();
        let _ = r.read_line(&mut head);
        let len: usize = head
            .trim()
            .get(1..)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        let _ = std::io::Read::read_exact(&mut r, &mut body);
        let (mut usec, mut calls) = (0.0, 0.0);
        for line in String::from_utf8_lossy(&body).lines() {
            let Some(stats) = line
                .strip_prefix("cmdstat_evalsha:")
                .or_else(|| line.strip_prefix("cmdstat_eval:"))
            else {
                continue;
            };
            for kv in stats.split(',') {
                match kv.split_once('=') {
                    Some(("calls", v)) => calls += v.parse::<f64>().unwrap_or(0.0),
                    Some(("usec", v)) => usec += v.parse::<f64>().unwrap_or(0.0),
                    _ => {}
                }
            }
        }
        (usec, calls)
    }

    fn cpu_s(&self) -> f64 {
        ProcStats::read(self.child.id()).cpu_s
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds requests waited for Redis in all.
fn waited(t: &Target) -> f64 {
    scrape(t.addr, "cardguard_shared_admission_duration_seconds_sum")
}

fn round_trips(t: &Target) -> f64 {
    scrape(t.addr, "cardguard_shared_round_trips_total")
}

pub async fn run(
    args: &Args,
    base: &Load,
    explode: &Load,
    upstream: &Sink,
    limits: Limits,
    dir: &Path,
) {
    let duration = Duration::from_secs_f64(args.duration);
    let redis = Redis::start(dir);
    let url = upstream.write_url();
    let mut local = Target::start(Kind::Cardguard, dir, &url, limits);
    let mut shared = Target::start_cardguard(dir, |port| {
        format!(
            "server:\n  listen_address: 127.0.0.1:{port}\n\
             upstream:\n  url: {url}\n\
             guard:\n  owner_labels: [service]\n  max_series: {global}\n  \
             default_budget:\n    max_series: {per}\n    action: drop\n  \
             shared:\n    url: redis://127.0.0.1:{redis}/\n    replicas_hint: 2\n",
            global = limits.global,
            per = limits.per_service,
            redis = redis.port,
        )
    });
    // Joined (the maintainer runs every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(shared.addr, "cardguard_shared_admission_up") != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the shared replica did not join Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Warm-up: every series once, through Redis for the shared one.
    for t in [&local, &shared] {
        let warm = drive::run(plan(
            t,
            base,
            args.conns,
            duration * 1000,
            None,
            true,
            0,
            base.first_step,
        ))
        .await;
        settle(upstream).await;
        assert_ok(Kind::Cardguard, "warm-up", &warm);
    }
    let rt_warm = round_trips(&shared);
    println!(
        "shared warm-up: {} series admitted through {:.0} Redis round trips",
        base.shape.distinct(),
        rt_warm
    );

    // Steady state, alternating: the machine's load drifts, so each round's ratio compares
    // two runs seconds apart, and the median over rounds resists one noisy round.
    let (mut l_samples, mut l_cpu, mut s_samples, mut s_cpu) = (0u64, 0.0, 0u64, 0.0);
    let (mut s_requests, rt0) = (0u64, round_trips(&shared));
    let redis_cpu0 = redis.cpu_s();
    let mut ratios = Vec::new();
    for round in 0..args.shared_rounds.max(1) {
        let mut per = [0.0; 2];
        let mut order = [(0, "local", &mut local), (1, "shared", &mut shared)];
        if args.shared_abba && round % 2 == 1 {
            order.reverse();
        }
        for (n, name, t) in order {
            let sat = saturate(t, upstream, base, args.conns, duration).await;
            assert_ok(Kind::Cardguard, "steady state", &sat.out);
            println!(
                "{name:<6} steady {round}: {:>10.0} samples/s, {:>10.0} samples/CPU-s, p99 {:.2} ms",
                sat.out.samples_per_sec(),
                sat.per_cpu_s(),
                sat.out.quantile_ms(0.99)
            );
            per[n] = sat.per_cpu_s();
            if name == "local" {
                l_samples += sat.out.samples_ok;
                l_cpu += sat.cpu_s;
            } else {
                s_samples += sat.out.samples_ok;
                s_cpu += sat.cpu_s;
                s_requests += sat.out.requests;
            }
        }
        ratios.push(per[1] / per[0].max(1e-9));
    }
    let (l, s) = (
        l_samples as f64 / l_cpu.max(1e-9),
        s_samples as f64 / s_cpu.max(1e-9),
    );
    ratios.sort_by(f64::total_cmp);
    let median = if ratios.len() % 2 == 1 {
        ratios[ratios.len() / 2]
    } else {
        (ratios[ratios.len() / 2 - 1] + ratios[ratios.len() / 2]) / 2.0
    };
    println!(
        "steady state: local {l:.0} samples/CPU-s, shared {s:.0} samples/CPU-s: shared/local = \
         {:.3} pooled; per round median {median:.3}, spread {:.3}–{:.3} over {} rounds; Redis \
         round trips per request {:.4} ({:.0} over {} requests), Redis CPU {:.2} s",
        s / l,
        ratios[0],
        ratios[ratios.len() - 1],
        ratios.len(),
        (round_trips(&shared) - rt0) / s_requests.max(1) as f64,
        round_trips(&shared) - rt0,
        s_requests,
        redis.cpu_s() - redis_cpu0
    );

    // New series: the explosion load at a fixed rate, half of the local steady throughput.
    let rounds = args.shared_rounds.max(1) as f64;
    let rate = l_samples as f64 / (2.0 * rounds * duration.as_secs_f64());
    let one_cycle = explode.requests.len();
    for (name, t) in [("local", &local), ("shared", &shared)] {
        let (rt0, cpu0, new0) = (
            round_trips(t),
            redis.cpu_s(),
            scrape(t.addr, "cardguard_shared_new_series_total"),
        );
        let waited0 = waited(t);
        let waited_count0 = scrape(t.addr, "cardguard_shared_admission_duration_seconds_count");
        let script0 = redis.script_usec();
        // One pass over the steps: every exploding series is new once.
        let o = drive::run(plan(
            t,
            explode,
            args.conns,
            duration * 1000,
            Some(rate),
            true,
            0,
            one_cycle,
        ))
        .await;
        settle(upstream).await;
        assert_ok(Kind::Cardguard, "new series", &o);
        print_latency(&format!("{name}-new"), rate, &o);
        if name == "shared" {
            let new = scrape(t.addr, "cardguard_shared_new_series_total") - new0;
            let cpu = redis.cpu_s() - cpu0;
            println!(
                "new series: {new:.0} series new to the replica in {} requests, {:.3} Redis \
                 round trips per request, Redis CPU {:.3} s = {:.1} ms per 1,000 new series",
                o.requests,
                (round_trips(t) - rt0) / o.requests.max(1) as f64,
                cpu,
                cpu * 1e6 / new.max(1.0)
            );
            // Where a request's wait goes: the script's run in Redis against the whole round
            // trip as cardguard timed it.
            let (w, n) = (
                waited(t),
                scrape(t.addr, "cardguard_shared_admission_duration_seconds_count"),
            );
            let (script, calls) = redis.script_usec();
            let calls = (calls - script0.1).max(1.0);
            println!(
                "new series: a request waited {:.2} ms for Redis on average ({:.0} waits), of \
                 which the script ran {:.2} ms in Redis ({:.0} calls)",
                (w - waited0) * 1e3 / (n - waited_count0).max(1.0),
                n - waited_count0,
                (script - script0.0) / 1e3 / calls,
                calls,
            );
        }
    }
}
