//! `Guard::admit` at steady state (every series already admitted, no slice turning) with
//! `guard.shared` joined to a real Redis, next to the same guard without it, in one run
//! (issue 13: "samples per CPU-second with `guard.shared` on, at steady state, within 5 % of
//! the local guard"). At steady state the shared guard must not call Redis at all, so the two
//! should cost the same per series.
//!
//! - `guard_shared/local`, `guard_shared/shared`: criterion, `Guard::admit` of one request of
//!   2000 series over 5 services; `guard_shared/prepare_local`, `prepare_shared`: the whole
//!   in-process path of that request (`pipeline::prepare`: decode, guard, forward as is).
//! - Instruction counts, which the machine's load does not distort: with
//!   `CARDGUARD_IR_MODE=local|shared|prepare_local|prepare_shared` (and `CARDGUARD_IR_ITERS`,
//!   default 1000) the binary runs that many requests after the warm-up and exits. Run it under
//!   `valgrind --tool=callgrind` with 0 and with N iterations: the difference over N × 2000 is
//!   the instructions per series (one sample each). `CARDGUARD_IR_TURN=1` (with `local` or
//!   `shared`, at most 64 iterations): every request in a new window slice, so every series
//!   is refreshed, the once-a-slice cost.
//!
//! Needs `redis-server` from `scripts/fetch-peers.sh` (`CARDGUARD_PEERS_DIR`).

use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardguard::config::GuardConfig;
use cardguard::demo::Fleet;
use cardguard::guard::shared::Shared;
use cardguard::guard::{self, Guard, SharedConfig};
use cardguard::pipeline::{self, Context};
use cardguard::series::Decisions;
use cardguard::wire::{self, Limits, Parsed, Version};
use criterion::{Criterion, Throughput};

const NOW: i64 = 1_700_000_000_000;

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (Redis, u16) {
    let dir = match std::env::var_os("CARDGUARD_PEERS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".peers"),
    };
    let bin = dir.join("bin").join("redis-server");
    assert!(
        bin.is_file(),
        "redis-server not found at {}: run `scripts/fetch-peers.sh` (or set CARDGUARD_PEERS_DIR)",
        bin.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    (Redis(child), port)
}

/// One guard, its config, and the request it has admitted every series of.
struct Setup {
    guard: Guard,
    cfg: GuardConfig,
}

fn main() {
    let mut fleet = Fleet::new(5, 400);
    let body = fleet.scrape(NOW, 2000).remove(0);
    let limits = Limits::default();
    let mut decoded = Vec::new();
    wire::snappy::decompress(&body, limits.max_decoded_bytes, &mut decoded).unwrap();
    let mut parsed = Parsed::new();
    parsed.parse(&decoded, Version::V1, &limits).unwrap();
    let batch = guard::Batch {
        req: &parsed,
        buf: &decoded,
        tenant: None,
        now_ms: NOW,
    };
    let mut scratch = guard::Scratch::default();
    let mut decisions = Decisions::default();

    let (_redis, port) = start_redis();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let local = Setup {
        guard: Guard::new(),
        cfg: GuardConfig::with_default_budget(1_000_000, vec!["service".into()]),
    };
    let mut shared_cfg = GuardConfig::with_default_budget(1_000_000, vec!["service".into()]);
    shared_cfg.shared = Some(SharedConfig {
        url: format!("redis://127.0.0.1:{port}/"),
        // Roomy: under valgrind a round trip takes far longer than in production.
        timeout: Duration::from_secs(10),
        ..SharedConfig::default()
    });
    let shared = Setup {
        guard: Guard::new(),
        cfg: shared_cfg,
    };
    let sh = Shared::new(
        shared.cfg.shared.clone().unwrap(),
        shared.cfg.hash_seed,
        &prometheus::Registry::new(),
    )
    .unwrap();
    shared.guard.attach_shared(sh.clone());
    join(&rt, &shared, &sh);

    // Warm-up: every series admitted (through Redis for the shared guard).
    for s in [&local, &shared] {
        let _enter = rt.enter();
        decisions.reset(parsed.len());
        let out = s
            .guard
            .admit(&s.cfg, batch, &mut decisions, &mut scratch)
            .unwrap();
        assert_eq!(out.kept_series, parsed.len() as u64, "warm-up admits all");
    }
    assert!(
        sh.is_up(),
        "the shared guard stayed joined through the warm-up"
    );
    let trips = || sh.metrics.round_trips.with_label_values(&["admit"]).get();
    let trips_warm = trips();

    let mut admit_at = |s: &Setup, now_ms: i64| {
        decisions.reset(parsed.len());
        let batch = guard::Batch { now_ms, ..batch };
        s.guard
            .admit(&s.cfg, batch, &mut decisions, &mut scratch)
            .unwrap()
    };
    let prepare = |s: &Setup| {
        let ctx = Context {
            guard: Some((&s.guard, &s.cfg)),
            ..Context::new(Version::V1, Version::V1, &limits, NOW)
        };
        pipeline::prepare(black_box(&body), &ctx).unwrap()
    };
    if let Ok(mode) = std::env::var("CARDGUARD_IR_MODE") {
        let iters: u64 = std::env::var("CARDGUARD_IR_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let (s, whole) = match mode.as_str() {
            "local" => (&local, false),
            "shared" => (&shared, false),
            "prepare_local" => (&local, true),
            "prepare_shared" => (&shared, true),
            m => panic!("CARDGUARD_IR_MODE={m}: local, shared, prepare_local or prepare_shared"),
        };
        // `CARDGUARD_IR_TURN=1`: every request in a new window slice, so every series is
        // refreshed (told to Redis without waiting, by the shared guard): the once-a-slice
        // cost. At most 64 such requests (the refreshes in flight allowed), then a pause for
        // the last ones to finish.
        let turn = std::env::var("CARDGUARD_IR_TURN").is_ok_and(|v| v == "1");
        let slice_ms = s.cfg.slice_length().as_millis() as i64;
        let _enter = rt.enter();
        for k in 0..iters {
            if whole {
                black_box(prepare(s));
            } else if turn {
                black_box(admit_at(s, NOW + (k as i64 + 1) * slice_ms));
                std::thread::sleep(Duration::from_millis(50));
            } else {
                black_box(admit_at(s, NOW));
            }
        }
        if turn {
            std::thread::sleep(Duration::from_secs(3));
            let refreshes = sh.metrics.round_trips.with_label_values(&["refresh"]).get();
            println!(
                "{refreshes} refresh calls, {} Redis errors",
                sh.metrics.errors.get()
            );
        }
        println!(
            "{mode}: {iters} requests of {} series admitted; {trips_warm} Redis round trips \
             in the warm-up",
            parsed.len()
        );
    } else {
        let mut c = Criterion::default().configure_from_args();
        let mut g = c.benchmark_group("guard_shared");
        g.throughput(Throughput::Elements(parsed.len() as u64));
        let _enter = rt.enter();
        g.bench_function("local", |b| b.iter(|| admit_at(&local, NOW)));
        g.bench_function("shared", |b| b.iter(|| admit_at(&shared, NOW)));
        g.bench_function("prepare_local", |b| b.iter(|| prepare(&local)));
        g.bench_function("prepare_shared", |b| b.iter(|| prepare(&shared)));
        g.finish();
        c.final_summary();
    }
    assert!(sh.is_up(), "the shared guard stayed joined");
    assert_eq!(trips(), trips_warm, "no Redis round trip at steady state");
}

/// Join Redis as the maintainer does at start (once a second in the proxy).
fn join(rt: &tokio::runtime::Runtime, s: &Setup, sh: &Arc<Shared>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sh.is_up() {
        assert!(Instant::now() < deadline, "did not join Redis at 127.0.0.1");
        rt.block_on(s.guard.maintain_shared(&s.cfg, NOW));
        std::thread::sleep(Duration::from_millis(50));
    }
}
