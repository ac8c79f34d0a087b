//! The load harness: cardguard and vmagent side by side, in one run, behind the same load and
//! in front of the same null upstream (`cardguard::sink`). See benches/README.md for what it measures and how.
//!
//! `cargo bench --bench load -- [flags]` runs the full comparison; `cargo test --benches` runs
//! it without `--bench`, which makes it a seconds-long smoke run that checks the harness
//! itself (both proxies answer 2xx, the null upstream sees what was sent, cardguard keeps every
//! well-behaved service whole in the explosion) and fails when vmagent is missing.

mod attack;
mod drive;
mod gen;
mod hostile;
mod owners;
mod shapes;
mod shared;
mod target;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cardguard::sink::{Sink, SinkOptions};
use clap::Parser;
use drive::{LoadResult, Plan};
use gen::{Load, Shape};
use target::{Kind, Limits, ProcStats, Target};

#[derive(Parser, Debug, Clone)]
#[command(name = "load", about = "cardguard vs vmagent load harness")]
struct Args {
    /// Services in the load.
    #[arg(long, default_value_t = 20)]
    services: usize,
    /// Series per service (services × this = distinct series of the main phases).
    #[arg(long, default_value_t = 5000)]
    series_per_service: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    #[arg(long, default_value_t = 1000)]
    min_batch: usize,
    #[arg(long, default_value_t = 2000)]
    max_batch: usize,
    /// 15 s steps pre-encoded for the main phases (the driver cycles through them).
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Distinct series of the large RSS phase (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    rss_series: usize,
    /// Share of incoming series that come from the exploding service in the explosion phase.
    #[arg(long, default_value_t = 0.2)]
    explosion: f64,
    /// Seconds of the cardguard soak at half of vmagent's saturation rate (0 skips it).
    #[arg(long, default_value_t = 60.0)]
    soak: f64,
    /// Seconds of the hostile soak (issue 11): cardguard alone under junk owners, rotating
    /// tenants, exploding labels, 16 KiB label values and new metric names next to
    /// well-behaved services; RSS sampled throughout. When given, only this runs.
    #[arg(long, default_value_t = 0.0)]
    soak_hostile: f64,
    /// Headroom of the budgets over the well-behaved series count.
    #[arg(long, default_value_t = 1.1)]
    headroom: f64,
    /// Instead of the comparison with vmagent: cardguard's latency at half its saturation
    /// rate without and then with the slow-sender attack (issue 11, point 3).
    #[arg(long)]
    attack: bool,
    /// Slow-loris HTTP/1 connections of the attack.
    #[arg(long, default_value_t = 2000)]
    attack_slowloris: usize,
    /// h2c connections of the attack, each with `--attack-streams` trickling streams.
    #[arg(long, default_value_t = 5)]
    attack_h2_conns: usize,
    #[arg(long, default_value_t = 100)]
    attack_streams: usize,
    /// Seconds over which the attackers start (0: all at once, every cut-off in one burst).
    #[arg(long, default_value_t = 0.0)]
    attack_spread: f64,
    /// Samples per second of the well-behaved sender under `--attack`; 0: half of
    /// cardguard's saturation rate, measured first.
    #[arg(long, default_value_t = 0.0)]
    attack_rate: f64,
    /// Milliseconds between the bytes each attacker trickles.
    #[arg(long, default_value_t = 1000)]
    attack_trickle_ms: u64,
    /// Instead of the main phases: samples per CPU-second of both proxies on every load shape
    /// of issue 16 (labels, samples per series, 1.0/2.0 senders, guard modes), one table.
    #[arg(long)]
    shapes: bool,
    /// `--shapes`: only the rows whose name contains this text (e.g. `10–12 labels, 1 sample/series, v1.0, guard, 20%`).
    #[arg(long)]
    shape: Option<String>,
    /// `--shapes`: cardguard without its guard (decode and forward only): the ceiling the
    /// guarded rows are measured against.
    #[arg(long)]
    unguarded: bool,
    /// `--shapes`: run each row this many times (the proxies' order alternating), each proxy
    /// fresh every time, and count each side's median: a single pass moves ±10–20 % with
    /// vmagent's own figure, so the lowest ratio of one pass was mostly the luck of
    /// vmagent's best run.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Run the proxies on these CPUs (a `taskset -c` list, e.g. `1`) and the harness (driver,
    /// null upstream) on the others, so latency measures the proxy, not the sender competing
    /// with it.
    #[arg(long)]
    pin_proxy: Option<String>,
    /// Instead of the main phases: cardguard with this many owners of 1–10 series each, then
    /// with the same series over 20 owners: RSS per owner, CPU per sample (issue 16).
    #[arg(long, default_value_t = 0)]
    small_owners: usize,
    /// `--small-owners`: drive both runs at this many samples/s instead of as fast as they
    /// go, so that CPU per sample compares the same offered load (0: saturate). At saturation
    /// the harness itself may be what limits the small owners' run, and a proxy less busy
    /// spends more per sample on waking up.
    #[arg(long, default_value_t = 0.0)]
    small_owners_rate: f64,
    /// Instead of the comparison with vmagent: cardguard with `guard.shared` (a real Redis)
    /// next to the local guard (issue 13): steady-state samples per CPU-second, Redis round
    /// trips per request, Redis CPU per 1,000 new series, latency of requests with new series.
    #[arg(long)]
    shared: bool,
    /// `--shared`: steady-state rounds of each, alternated local, shared, local, shared...
    #[arg(long, default_value_t = 4)]
    shared_rounds: usize,
    /// `--shared`: shared first in every other round (local, shared, shared, local...), so
    /// that what running second does to a proxy falls on both alike.
    #[arg(long)]
    shared_abba: bool,
    /// Only the RSS phase at `--rss-series`, cardguard alone (no vmagent): RSS growth per
    /// series, the process's anonymous memory (`/proc/<pid>/smaps_rollup`) and its own
    /// `cardguard_memory_bytes`, to profile where the bytes per series go (issue 16).
    #[arg(long)]
    rss_only: bool,
    /// Set by `cargo bench`; without it the harness runs its smoke test.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn smoke() -> Args {
        Args {
            services: 5,
            series_per_service: 400,
            conns: 2,
            duration: 1.0,
            min_batch: 500,
            max_batch: 1000,
            steps: 2,
            rss_series: 20_000,
            explosion: 0.2,
            soak: 2.0,
            soak_hostile: 3.0,
            headroom: 1.1,
            attack: false,
            attack_slowloris: 2000,
            attack_h2_conns: 5,
            attack_streams: 100,
            attack_spread: 0.0,
            attack_rate: 0.0,
            attack_trickle_ms: 1000,
            shapes: false,
            shape: None,
            unguarded: false,
            repeat: 1,
            pin_proxy: None,
            small_owners: 200,
            small_owners_rate: 0.0,
            shared: false,
            shared_rounds: 2,
            shared_abba: false,
            rss_only: false,
            bench: false,
        }
    }
}

/// One saturation phase of one proxy.
#[derive(Debug, Clone)]
struct Sat {
    out: LoadResult,
    cpu_s: f64,
    forwarded: u64,
}

impl Sat {
    fn per_cpu_s(&self) -> f64 {
        self.out.samples_ok as f64 / self.cpu_s.max(1e-9)
    }
}

/// The explosion phase of one proxy: the run, and per service the samples sent (and
/// acknowledged) and those the null upstream saw.
type Explosion = (Sat, BTreeMap<String, u64>, BTreeMap<String, u64>);

#[derive(Debug, Default, Clone)]
struct Side {
    sat: Option<Sat>,
    half: Option<LoadResult>,
    hwm_main: u64,
    rss_large: Option<(ProcStats, ProcStats)>,
    explosion: Option<Explosion>,
}

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    let full = raw.iter().any(|a| a == "--bench");
    let args = if full {
        Args::parse_from(raw)
    } else {
        Args::smoke()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(args, full));
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

async fn run(args: Args, full: bool) {
    STRICT.store(!full, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile::tempdir().expect("temp dir");
    if let Some(cpus) = &args.pin_proxy {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rest = target::other_cpus(cpus, n);
        target::pin_self(&rest);
        target::PIN.set(cpus.clone()).expect("pinned once");
        println!("proxies pinned to CPU {cpus}, the harness to CPU {rest}");
    }
    if full && args.shapes {
        let upstream = Sink::start(SinkOptions::default())
            .await
            .expect("bind null upstream");
        println!("machine: {}", machine());
        shapes::run(&args, &upstream, dir.path(), true).await;
        return;
    }
    if full && args.small_owners > 0 {
        let upstream = Sink::start(SinkOptions::default())
            .await
            .expect("bind null upstream");
        println!("machine: {}", machine());
        owners::run(&args, args.small_owners, &upstream, dir.path(), true).await;
        return;
    }
    if full && args.soak_hostile > 0.0 {
        let upstream = Sink::start(SinkOptions::default())
            .await
            .expect("bind null upstream");
        println!("machine: {}", machine());
        let s =
            tokio::task::block_in_place(|| hostile::run(dir.path(), &upstream, args.soak_hostile));
        s.print();
        return;
    }
    if full && args.rss_only {
        let upstream = Sink::start(SinkOptions::default())
            .await
            .expect("bind null upstream");
        println!("machine: {}", machine());
        rss_only(&args, &upstream, dir.path()).await;
        return;
    }
    let t0 = Instant::now();
    let shape = Shape {
        services: args.services,
        series_per_service: args.series_per_service,
        explosion: 0.0,
        min_batch: args.min_batch,
        max_batch: args.max_batch,
        steps: args.steps,
        labels: gen::Labels::Exporter,
        samples_per_series: 1,
        v2: false,
        small_owners: false,
        groups: 0,
    };
    let base = gen::build(shape, 1);
    let explode = gen::build(
        Shape {
            explosion: args.explosion,
            ..shape
        },
        2,
    );
    let large = (args.rss_series > 0).then(|| {
        gen::build(
            Shape {
                series_per_service: args.rss_series.div_ceil(args.services),
                steps: 1,
                ..shape
            },
            3,
        )
    });
    let bytes: usize = base.requests.iter().map(|r| r.bytes.len()).sum();
    println!(
        "load: {} services × {} series = {} distinct, {} requests of {:.0} samples ({:.1} MiB) over {} steps; \
         explosion {:.0}%: {} exploding series; large: {} series; encoded in {:.1}s",
        args.services,
        args.series_per_service,
        shape.distinct(),
        base.requests.len(),
        base.samples_per_request(),
        mib(bytes as u64),
        args.steps,
        args.explosion * 100.0,
        explode.exploding_distinct,
        large.as_ref().map_or(0, |l| l.shape.distinct()),
        t0.elapsed().as_secs_f64()
    );
    println!("machine: {}", machine());

    let upstream = Sink::start(SinkOptions::default())
        .await
        .expect("bind null upstream");
    let limits = budget(&args, args.series_per_service);
    let duration = Duration::from_secs_f64(args.duration);
    if args.attack {
        attack_run(&args, &base, &upstream, limits, dir.path()).await;
        return;
    }
    if args.shared {
        shared::run(&args, &base, &explode, &upstream, limits, dir.path()).await;
        return;
    }
    let kinds = [Kind::Vmagent, Kind::Cardguard];
    let mut sides: BTreeMap<&'static str, Side> = BTreeMap::new();

    // Saturation: as fast as each proxy answers, after one warm-up step (every series known).
    let mut running = Vec::new();
    for kind in kinds {
        let mut t = Target::start(kind, dir.path(), &upstream.write_url(), limits);
        let warm = drive::run(plan(
            &t,
            &base,
            args.conns,
            duration * 1000,
            None,
            true,
            0,
            base.first_step,
        ))
        .await;
        settle(&upstream).await;
        assert_ok(kind, "warm-up", &warm);
        let sat = saturate(&mut t, &upstream, &base, args.conns, duration).await;
        println!(
            "{:<9} saturation: {:>10.0} samples/s, {:>10.0} samples/CPU-s ({:.2} CPU-s), p50 {:.2} ms p99 {:.2} ms, forwarded {} of {}, {}",
            kind.name(),
            sat.out.samples_per_sec(),
            sat.per_cpu_s(),
            sat.cpu_s,
            sat.out.quantile_ms(0.5),
            sat.out.quantile_ms(0.99),
            sat.forwarded,
            sat.out.samples_ok,
            sat.out.statuses_text()
        );
        assert_ok(kind, "saturation", &sat.out);
        sides.entry(kind.name()).or_default().sat = Some(sat);
        running.push(t);
    }

    // Latency at half of vmagent's saturation throughput, and the null upstream alone at the
    // same rate (what the proxy adds is the difference).
    let half_rate = sides["vmagent"].sat.as_ref().unwrap().out.samples_per_sec() / 2.0;
    let direct = drive::run(Plan {
        addr: upstream.addr(),
        ..plan_raw(&base, args.conns, duration, Some(half_rate), false)
    })
    .await;
    print_latency("direct", half_rate, &direct);
    for t in running.iter_mut() {
        let o = drive::run(plan(
            t,
            &base,
            args.conns,
            duration,
            Some(half_rate),
            false,
            0,
            base.requests.len(),
        ))
        .await;
        settle(&upstream).await;
        t.assert_running();
        print_latency(t.kind.name(), half_rate, &o);
        assert_ok(t.kind, "half rate", &o);
        let side = sides.entry(t.kind.name()).or_default();
        side.half = Some(o);
        side.hwm_main = t.stats().hwm;
    }
    drop(running);

    // Explosion: fresh processes, the exploding service interleaved from the first request.
    for kind in kinds {
        let mut t = Target::start(kind, dir.path(), &upstream.write_url(), limits);
        upstream.reset();
        let before = t.stats();
        let o = drive::run(plan(
            &t,
            &explode,
            args.conns,
            duration,
            None,
            false,
            0,
            explode.requests.len(),
        ))
        .await;
        settle(&upstream).await;
        t.assert_running();
        let cpu_s = t.stats().cpu_s - before.cpu_s;
        let seen = upstream.samples_by_service();
        let sent = explode.by_name(&o.sent_per_service);
        let forwarded = upstream.samples();
        let sat = Sat {
            out: o,
            cpu_s,
            forwarded,
        };
        println!(
            "{:<9} explosion: {:>10.0} samples/s, {:>10.0} samples/CPU-s, forwarded {} of {} accepted, {}",
            kind.name(),
            sat.out.samples_per_sec(),
            sat.per_cpu_s(),
            sat.forwarded,
            sat.out.samples_ok,
            sat.out.statuses_text()
        );
        assert_ok(kind, "explosion", &sat.out);
        sides.entry(kind.name()).or_default().explosion = Some((sat, sent, seen));
    }

    // RSS with many distinct series: fresh processes, every series sent twice.
    if let Some(large) = &large {
        let limits = budget(&args, large.shape.series_per_service);
        for kind in kinds {
            let mut t = Target::start(kind, dir.path(), &upstream.write_url(), limits);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let idle = t.stats();
            for _ in 0..2 {
                let o = drive::run(plan(
                    &t,
                    large,
                    args.conns,
                    duration * 1000,
                    None,
                    true,
                    0,
                    large.requests.len(),
                ))
                .await;
                assert_ok(kind, "large", &o);
            }
            settle(&upstream).await;
            // Both return freed memory to the OS in the background (Go's scavenger, cardguard
            // every 10 s): RSS is read once that has run, as it stays (not in the smoke run).
            if full {
                tokio::time::sleep(RETURNED_AFTER).await;
            }
            t.assert_running();
            let after = t.stats();
            println!(
                "{:<9} {} series: RSS {:.1} MiB (idle {:.1} MiB), peak {:.1} MiB",
                kind.name(),
                large.shape.distinct(),
                mib(after.rss),
                mib(idle.rss),
                mib(after.hwm)
            );
            sides.entry(kind.name()).or_default().rss_large = Some((idle, after));
        }
    }

    // Soak: cardguard at half of vmagent's saturation rate, constant series count.
    let soak = if args.soak > 0.0 {
        Some(soak_run(&args, &base, &upstream, limits, half_rate, dir.path()).await)
    } else {
        None
    };

    report(
        &args,
        &base,
        large.as_ref(),
        &sides,
        &direct,
        half_rate,
        soak.as_ref(),
        full,
    );
    if !full {
        // The shapes' smoke: the configurations the main phases don't run.
        shapes::run(
            &Args {
                duration: 0.5,
                ..args.clone()
            },
            &upstream,
            dir.path(),
            false,
        )
        .await;
        owners::run(
            &Args {
                duration: 0.5,
                ..args.clone()
            },
            args.small_owners,
            &upstream,
            dir.path(),
            false,
        )
        .await;
        // The hostile soak's smoke: seconds, checking the harness and the property it
        // measures (the well-behaved services lose nothing).
        let s =
            tokio::task::block_in_place(|| hostile::run(dir.path(), &upstream, args.soak_hostile));
        s.print();
        assert_eq!(s.good_refused, 0, "well-behaved requests refused");
        assert!(
            s.least_served() >= 100.0,
            "a well-behaved service lost samples under the hostile mix"
        );
    }
}

/// How long after the load the RSS of the large phase is read: past two of cardguard's 10 s
/// rounds of returning idle memory to the OS (the first after the load marks the workers
/// idle, the next releases their buffers and returns freed heap memory).
const RETURNED_AFTER: Duration = Duration::from_secs(21);

/// `--rss-only`: the large RSS phase, cardguard alone, with what its memory is made of.
async fn rss_only(args: &Args, upstream: &Sink, dir: &std::path::Path) {
    let shape = Shape {
        services: args.services,
        series_per_service: args.rss_series.div_ceil(args.services),
        explosion: 0.0,
        min_batch: args.min_batch,
        max_batch: args.max_batch,
        steps: 1,
        labels: gen::Labels::Exporter,
        samples_per_series: 1,
        v2: false,
        small_owners: false,
        groups: 0,
    };
    let large = gen::build(shape, 3);
    let limits = budget(args, shape.series_per_service);
    let mut t = Target::start(Kind::Cardguard, dir, &upstream.write_url(), limits);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = t.stats();
    let idle_anon = smaps_anon(t.pid());
    for pass in 0..2 {
        let o = drive::run(plan(
            &t,
            &large,
            args.conns,
            Duration::from_secs(3600),
            None,
            true,
            0,
            large.requests.len(),
        ))
        .await;
        assert_ok(Kind::Cardguard, "large", &o);
        settle(upstream).await;
        let s = t.stats();
        println!(
            "pass {}: RSS {:.2} MiB, {:.2} B/series over idle",
            pass + 1,
            mib(s.rss),
            s.rss.saturating_sub(idle.rss) as f64 / shape.distinct() as f64
        );
    }
    tokio::time::sleep(RETURNED_AFTER).await;
    t.assert_running();
    let after = t.stats();
    let n = shape.distinct() as f64;
    println!(
        "cardguard {} series: RSS {:.2} MiB (idle {:.2} MiB), peak {:.2} MiB; \
         RSS growth per series over idle {:.2} B; anonymous growth {:.2} B/series",
        shape.distinct(),
        mib(after.rss),
        mib(idle.rss),
        mib(after.hwm),
        after.rss.saturating_sub(idle.rss) as f64 / n,
        smaps_anon(t.pid()).saturating_sub(idle_anon) as f64 / n,
    );
    for l in target::metrics(t.addr)
        .lines()
        .filter(|l| l.starts_with("cardguard_memory_bytes"))
    {
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        println!("  {l}  ({:.2} B/series)", v / n);
    }
    if let Some(secs) = std::env::var("CARDGUARD_RSS_HOLD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        println!("holding pid {} for {secs} s", t.pid());
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}

/// Anonymous resident bytes of a process (`/proc/<pid>/smaps_rollup`; 0 where absent).
fn smaps_anon(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Anonymous:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn budget(args: &Args, series_per_service: usize) -> Limits {
    let per_service = (series_per_service as f64 * args.headroom).ceil() as u64;
    Limits {
        per_service,
        global: per_service * args.services as u64,
    }
}

fn plan_raw(load: &Load, conns: usize, duration: Duration, rate: Option<f64>, once: bool) -> Plan {
    Plan {
        addr: "127.0.0.1:1".parse().unwrap(),
        conns,
        duration,
        rate,
        requests: load.requests.clone(),
        start: 0,
        end: load.requests.len(),
        once,
        services: load.services.len(),
    }
}

#[allow(clippy::too_many_arguments)]
fn plan(
    t: &Target,
    load: &Load,
    conns: usize,
    duration: Duration,
    rate: Option<f64>,
    once: bool,
    start: usize,
    end: usize,
) -> Plan {
    Plan {
        addr: t.addr,
        start,
        end,
        ..plan_raw(load, conns, duration, rate, once)
    }
}

async fn saturate(
    t: &mut Target,
    upstream: &Sink,
    load: &Load,
    conns: usize,
    duration: Duration,
) -> Sat {
    at_rate(t, upstream, load, conns, duration, None).await
}

/// One warm-up step: every series of the load's first step once, as fast as `t` answers.
async fn warm_up(t: &Target, load: &Load, conns: usize, duration: Duration) -> LoadResult {
    drive::run(plan(
        t,
        load,
        conns,
        duration * 1000,
        None,
        true,
        0,
        load.first_step,
    ))
    .await
}

/// `saturate`, or at `rate` samples/s when one is given.
async fn at_rate(
    t: &mut Target,
    upstream: &Sink,
    load: &Load,
    conns: usize,
    duration: Duration,
    rate: Option<f64>,
) -> Sat {
    upstream.reset();
    let before = t.stats();
    let out = drive::run(plan(
        t,
        load,
        conns,
        duration,
        rate,
        false,
        0,
        load.requests.len(),
    ))
    .await;
    // vmagent acknowledges before it forwards: its CPU for this load is spent once the null
    // upstream has everything.
    settle(upstream).await;
    t.assert_running();
    let after = t.stats();
    Sat {
        out,
        cpu_s: after.cpu_s - before.cpu_s,
        forwarded: upstream.samples(),
    }
}

/// Wait until the null upstream has seen nothing new for 500 ms (at most 15 s).
async fn settle(upstream: &Sink) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = u64::MAX;
    let mut stable_since = Instant::now();
    while Instant::now() < deadline {
        let now = upstream.requests();
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(500) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The smoke run fails on any answer but 2xx; the full run reports it and carries on, so one
/// hiccup under load does not throw away the other measurements.
static STRICT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn assert_ok(kind: Kind, phase: &str, o: &LoadResult) {
    let bad: u64 = o
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    if bad == 0 && o.errors == 0 && o.requests > 0 {
        return;
    }
    let msg = format!(
        "{} {phase}: {} requests, not all 2xx: {}",
        kind.name(),
        o.requests,
        o.statuses_text()
    );
    if STRICT.load(std::sync::atomic::Ordering::Relaxed) {
        panic!("{msg}");
    }
    println!("WARNING: {msg}");
}

fn print_latency(who: &str, rate: f64, o: &LoadResult) {
    println!(
        "{who:<9} at {rate:>10.0} samples/s offered: {:>10.0} achieved, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, {}",
        o.samples_per_sec(),
        o.quantile_ms(0.5),
        o.quantile_ms(0.99),
        o.quantile_ms(0.999),
        o.statuses_text()
    );
    // Where the tail falls in time (a periodic task, a slow start, or spread evenly) is what
    // the quantiles cannot say: one line per request, scheduled send and latency in µs.
    if let Some(dir) = std::env::var_os("CARDGUARD_LOAD_LATENCY_LOG") {
        let path = std::path::Path::new(&dir).join(format!("{}.tsv", who.replace(' ', "-")));
        let text: String = o
            .timeline_us
            .iter()
            .map(|(at, lat)| format!("{at}\t{lat}\n"))
            .collect();
        if let Err(e) = std::fs::write(&path, text) {
            println!("WARNING: latency log {}: {e}", path.display());
        }
    }
}

struct Soak {
    secs: f64,
    warmup_secs: f64,
    /// (seconds since start, RSS bytes)
    samples: Vec<(f64, u64)>,
    out: LoadResult,
}

impl Soak {
    /// (min, max, mean) RSS after warm-up.
    fn after_warmup(&self) -> (u64, u64, f64) {
        let v: Vec<u64> = self
            .samples
            .iter()
            .filter(|(t, _)| *t >= self.warmup_secs)
            .map(|(_, r)| *r)
            .collect();
        let min = v.iter().copied().min().unwrap_or(0);
        let max = v.iter().copied().max().unwrap_or(0);
        let mean = v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
        (min, max, mean)
    }
}

async fn soak_run(
    args: &Args,
    load: &Load,
    upstream: &Sink,
    limits: Limits,
    rate: f64,
    dir: &std::path::Path,
) -> Soak {
    let mut t = Target::start(Kind::Cardguard, dir, &upstream.write_url(), limits);
    let secs = args.soak;
    let every = Duration::from_secs_f64((secs / 120.0).clamp(0.1, 5.0));
    let pid = t.pid();
    let sampler = tokio::spawn(async move {
        let start = Instant::now();
        let mut v = Vec::new();
        while start.elapsed().as_secs_f64() < secs {
            v.push((start.elapsed().as_secs_f64(), ProcStats::read(pid).rss));
            tokio::time::sleep(every).await;
        }
        v
    });
    let out = drive::run(plan(
        &t,
        load,
        args.conns,
        Duration::from_secs_f64(secs),
        Some(rate),
        false,
        0,
        load.requests.len(),
    ))
    .await;
    let samples = sampler.await.expect("sampler");
    t.assert_running();
    assert_ok(Kind::Cardguard, "soak", &out);
    let soak = Soak {
        secs,
        warmup_secs: (secs * 0.2).min(60.0),
        samples,
        out,
    };
    let (min, max, mean) = soak.after_warmup();
    println!(
        "cardguard soak {:.0}s at {:.0} samples/s: RSS after {:.0}s warm-up min {:.1} MiB max {:.1} MiB mean {:.1} MiB (−{:.1}% / +{:.1}%), p99 {:.3} ms, {}",
        secs,
        soak.out.samples_per_sec(),
        soak.warmup_secs,
        mib(min),
        mib(max),
        mib(mean as u64),
        (mean - min as f64) / mean * 100.0,
        (max as f64 - mean) / mean * 100.0,
        soak.out.quantile_ms(0.99),
        soak.out.statuses_text()
    );
    soak
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    // The machine's, not this process's (which `--pin-proxy` narrows).
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cores} cores, {model}, load average {}", load.join(" "))
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        100.0
    } else {
        a as f64 / b as f64 * 100.0
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    base: &Load,
    large: Option<&Load>,
    sides: &BTreeMap<&'static str, Side>,
    direct: &LoadResult,
    half_rate: f64,
    soak: Option<&Soak>,
    full: bool,
) {
    let cg = &sides["cardguard"];
    let vm = &sides["vmagent"];
    let (cs, vs) = (cg.sat.as_ref().unwrap(), vm.sat.as_ref().unwrap());
    println!();
    println!("## cardguard vs vmagent ({})", machine());
    println!();
    println!("| measure | cardguard | vmagent | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| saturation throughput, samples/s ({} conns) | {:.0} | {:.0} | {:.2}× | |",
        args.conns,
        cs.out.samples_per_sec(),
        vs.out.samples_per_sec(),
        cs.out.samples_per_sec() / vs.out.samples_per_sec()
    );
    let r = cs.per_cpu_s() / vs.per_cpu_s();
    println!(
        "| samples per CPU-second of the proxy | {:.0} | {:.0} | {:.2}× | ≥ 3× {} |",
        cs.per_cpu_s(),
        vs.per_cpu_s(),
        r,
        verdict(r >= 3.0)
    );
    let r = cg.hwm_main as f64 / vm.hwm_main as f64;
    println!(
        "| peak RSS at {} series, MiB | {:.1} | {:.1} | {:.2}× | ≤ 1× {} |",
        base.shape.distinct(),
        mib(cg.hwm_main),
        mib(vm.hwm_main),
        r,
        verdict(r <= 1.0)
    );
    if let (Some(l), Some((ci, ca)), Some((vi, va))) = (large, &cg.rss_large, &vm.rss_large) {
        let r = ca.hwm as f64 / va.hwm as f64;
        println!(
            "| peak RSS at {} series, MiB (idle before) | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2}× | ≤ 1× {} |",
            l.shape.distinct(),
            mib(ca.hwm),
            mib(ci.rss),
            mib(va.hwm),
            mib(vi.rss),
            r,
            verdict(r <= 1.0)
        );
        println!(
            "| RSS growth per series over idle, bytes | {:.1} | {:.1} | | |",
            (ca.rss.saturating_sub(ci.rss)) as f64 / l.shape.distinct() as f64,
            (va.rss.saturating_sub(vi.rss)) as f64 / l.shape.distinct() as f64,
        );
    }
    let (ch, vh) = (cg.half.as_ref().unwrap(), vm.half.as_ref().unwrap());
    let added = ch.quantile_ms(0.99) - direct.quantile_ms(0.99);
    println!(
        "| p99 latency at {:.0} samples/s (½ vmagent saturation), ms; null upstream alone {:.3} | {:.3} (+{:.3}) | {:.3} (+{:.3}) | | added ≤ 1 ms {} |",
        half_rate,
        direct.quantile_ms(0.99),
        ch.quantile_ms(0.99),
        added,
        vh.quantile_ms(0.99),
        vh.quantile_ms(0.99) - direct.quantile_ms(0.99),
        verdict(added <= 1.0)
    );
    println!(
        "| p50 / p99.9 latency at that rate, ms | {:.3} / {:.3} | {:.3} / {:.3} | | |",
        ch.quantile_ms(0.5),
        ch.quantile_ms(0.999),
        vh.quantile_ms(0.5),
        vh.quantile_ms(0.999)
    );
    if let Some(s) = soak {
        let (min, max, mean) = s.after_warmup();
        let drift = ((max as f64 - mean).max(mean - min as f64)) / mean * 100.0;
        println!(
            "| soak {:.0} s at {} series, RSS after {:.0} s warm-up: mean MiB, worst deviation | {:.1}, ±{:.1}% | not run | | ±5% {} |",
            s.secs,
            base.shape.distinct(),
            s.warmup_secs,
            mib(mean as u64),
            drift,
            verdict(drift <= 5.0)
        );
    }
    let (ce, ve) = (
        cg.explosion.as_ref().unwrap(),
        vm.explosion.as_ref().unwrap(),
    );
    let thr = |e: &Explosion, s: &Sat| e.0.out.samples_per_sec() / s.out.samples_per_sec();
    let (ct, vt) = (thr(ce, cs), thr(ve, vs));
    println!(
        "| explosion ({:.0}% of series over budget): throughput vs no explosion | {:.0}% | {:.0}% | | ≥ 80% {} |",
        args.explosion * 100.0,
        ct * 100.0,
        vt * 100.0,
        verdict(ct >= 0.8)
    );
    let kept = |e: &Explosion| {
        let (_, sent, seen) = e;
        sent.iter()
            .skip(1)
            .map(|(s, n)| pct(seen.get(s).copied().unwrap_or(0), *n))
            .fold(f64::INFINITY, f64::min)
    };
    let (ck, vk) = (kept(ce), kept(ve));
    println!(
        "| explosion: least-served well-behaved service, % of its samples forwarded | {:.2}% | {:.2}% | | 100% {} |",
        ck,
        vk,
        verdict(ck >= 100.0)
    );
    println!();
    println!("explosion, samples per service seen by the null upstream / sent and acknowledged:");
    println!("| service | cardguard | vmagent |");
    println!("|---|---|---|");
    for (s, sent_c) in &ce.1 {
        let seen_c = ce.2.get(s).copied().unwrap_or(0);
        let sent_v = ve.1.get(s).copied().unwrap_or(0);
        let seen_v = ve.2.get(s).copied().unwrap_or(0);
        let tag = if s == &base.services[0] {
            " (exploding)"
        } else {
            ""
        };
        println!(
            "| {s}{tag} | {seen_c} / {sent_c} ({:.1}%) | {seen_v} / {sent_v} ({:.1}%) |",
            pct(seen_c, *sent_c),
            pct(seen_v, sent_v)
        );
    }
    println!();
    println!("vmagent acknowledges a request once it is in its queue and forwards later; cardguard acknowledges only after the upstream did.");
    if !full {
        // The smoke run's own checks: the harness works, whatever the machine's speed.
        assert!(
            cs.forwarded == cs.out.samples_ok,
            "cardguard forwarded {} of {} acknowledged samples",
            cs.forwarded,
            cs.out.samples_ok
        );
        assert!(
            ck >= 100.0,
            "cardguard lost samples of a well-behaved service in the explosion"
        );
        assert!(vs.forwarded > 0, "vmagent forwarded nothing");
        println!(
            "load harness smoke run: ok (run `cargo bench --bench load` for the measurements)"
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

/// `--attack`: one cardguard, its saturation rate, then the well-behaved load at half of it
/// without and with the slow-sender attack running alongside. The attackers share the
/// machine (and the harness's process) with cardguard and the driver, so the figure under
/// attack includes their CPU cost too.
async fn attack_run(
    args: &Args,
    load: &Load,
    upstream: &Sink,
    limits: Limits,
    dir: &std::path::Path,
) {
    let duration = Duration::from_secs_f64(args.duration);
    let mut t = Target::start(Kind::Cardguard, dir, &upstream.write_url(), limits);
    let warm = warm_up(&t, load, args.conns, duration).await;
    assert_ok(Kind::Cardguard, "warm-up", &warm);
    let sat = saturate(&mut t, upstream, load, args.conns, duration).await;
    let rate = if args.attack_rate > 0.0 {
        args.attack_rate
    } else {
        sat.out.samples_per_sec() / 2.0
    };
    println!(
        "cardguard saturation: {:.0} samples/s; the well-behaved sender runs at {:.0}",
        sat.out.samples_per_sec(),
        rate
    );
    let at_rate = |t: &Target| {
        drive::run(plan(
            t,
            load,
            args.conns,
            duration,
            Some(rate),
            false,
            0,
            load.requests.len(),
        ))
    };
    let (cpu0, own0) = (t.stats().cpu_s, ProcStats::read(std::process::id()).cpu_s);
    let calm = at_rate(&t).await;
    let (cpu1, own1) = (t.stats().cpu_s, ProcStats::read(std::process::id()).cpu_s);
    print_latency("no attack", rate, &calm);
    assert_ok(Kind::Cardguard, "no attack", &calm);

    let streams = args.attack_h2_conns * args.attack_streams;
    let attack = attack::Attack::start(
        t.addr,
        args.attack_slowloris,
        args.attack_h2_conns,
        args.attack_streams,
        Duration::from_secs_f64(args.attack_spread),
        Duration::from_millis(args.attack_trickle_ms),
    );
    let deadline =
        Instant::now() + Duration::from_secs(30) + Duration::from_secs_f64(args.attack_spread);
    let (mut conns, mut bodies) = (0.0, 0.0);
    while Instant::now() < deadline {
        conns = attack::scrape(t.addr, "cardguard_server_connections");
        bodies = attack::scrape(t.addr, "cardguard_server_bodies_reading");
        if conns >= args.attack_slowloris as f64 && bodies >= (streams / 2) as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("attack in place: {conns} connections, {bodies} bodies arriving");
    let (cpu2, own2) = (t.stats().cpu_s, ProcStats::read(std::process::id()).cpu_s);
    let hot = at_rate(&t).await;
    let (cpu3, own3) = (t.stats().cpu_s, ProcStats::read(std::process::id()).cpu_s);
    let during = (
        attack::scrape(t.addr, "cardguard_server_connections"),
        attack::scrape(t.addr, "cardguard_server_bodies_reading"),
    );
    let stats = attack.stop();
    t.assert_running();
    print_latency("attack", rate, &hot);
    assert_ok(Kind::Cardguard, "attack", &hot);
    let counter = |name: &str, label: &str| attack::scrape(t.addr, &format!("{name}{{{label}}}"));
    println!(
        "attack: {} slow-loris connections opened, {} h2c streams; at the end of the run {} \
         connections open, {} bodies arriving; cardguard cut off: header {} detect {} body rate {} \
         body total {}; connections rejected {}",
        stats.h1_connects,
        stats.h2_streams,
        during.0,
        during.1,
        counter(
            "cardguard_server_connection_timeouts_total",
            "phase=\"header\""
        ),
        counter(
            "cardguard_server_connection_timeouts_total",
            "phase=\"detect\""
        ),
        counter("cardguard_server_body_timeouts_total", "reason=\"rate\""),
        counter("cardguard_server_body_timeouts_total", "reason=\"total\""),
        attack::scrape(t.addr, "cardguard_server_connections_rejected_total"),
    );
    let ratio = hot.quantile_ms(0.99) / calm.quantile_ms(0.99);
    println!();
    println!("## cardguard under the slow-sender attack ({})", machine());
    println!();
    println!("| measure | no attack | attack | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| well-behaved p99 at {rate:.0} samples/s, ms | {:.3} | {:.3} | {ratio:.2}× | ≤ 3× {} |",
        calm.quantile_ms(0.99),
        hot.quantile_ms(0.99),
        verdict(ratio <= 3.0)
    );
    println!(
        "| p50 / p99.9, ms | {:.3} / {:.3} | {:.3} / {:.3} | | |",
        calm.quantile_ms(0.5),
        calm.quantile_ms(0.999),
        hot.quantile_ms(0.5),
        hot.quantile_ms(0.999)
    );
    println!(
        "| CPU-seconds of cardguard / of the harness (driver, null upstream, attackers) | {:.2} / {:.2} | {:.2} / {:.2} | | |",
        cpu1 - cpu0,
        own1 - own0,
        cpu3 - cpu2,
        own3 - own2
    );
    println!(
        "| answers | {} | {} | | all 2xx {} |",
        calm.statuses_text(),
        hot.statuses_text(),
        verdict(hot.statuses.keys().all(|s| (200..300).contains(s)) && hot.errors == 0)
    );
}
