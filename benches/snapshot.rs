//! Snapshot benches (`storage`): time and size of a snapshot at 1M admitted series, and of
//! the restore. The baseline in the same run is a plain copy of the same admission tables
//! (`clone`, what a snapshot cannot do with less), so the ratio carries across machines.
//!
//! - `snapshot/capture`: copying the state out (one owner lock at a time), no encoding;
//! - `snapshot/capture_encode`: the same plus the whole file's bytes (no disk);
//! - `snapshot/write`: `Snapshotter::write_blocking`, i.e. capture, encode, temp file,
//!   fsync, rename, fsync of the directory;
//! - `snapshot/decode_apply`: reading the bytes back into fresh state;
//! - `snapshot/baseline_clone_tables`: the guard's tables and sketches cloned (`Guard::image`),
//!   the copy alone.
//!
//! The file size per admitted series is printed once (target: at most 16 bytes), and so is
//! the write path's p50/p99 (`Guard::admit` of 2000 admitted series) without and with
//! snapshots written back to back on another thread.
//!
//! 1M series: 100 services × 10 metrics × 1000 ids, admitted through `Guard::admit` from
//! remote-write requests of 2000 series, as the write path does.
//!
//! Run: `cargo bench --bench snapshot -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;
use std::time::{Duration, Instant};

use cardguard::config::Config;
use cardguard::guard::{Batch, GuardConfig, Scratch};
use cardguard::series::Decisions;
use cardguard::storage::{decode_file, encode_file, Parts, Snapshotter};
use cardguard::wire::types::v1;
use cardguard::wire::{testgen, Limits, Parsed, Version};
use criterion::{criterion_group, criterion_main, Criterion};
use prost::Message;

const SERVICES: usize = 100;
const METRICS: usize = 10;
const PER_METRIC: usize = 1000;
const TOTAL: usize = SERVICES * METRICS * PER_METRIC;

/// Series admitted: 1M under `cargo bench`; 10k when `cargo test --benches` runs this once as
/// a smoke test (no `--bench` argument), so that CI stays quick in a debug build.
fn total() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        TOTAL
    } else {
        TOTAL / 100
    }
}
const T0: i64 = 1_700_000_000_000;

fn config() -> Config {
    Config {
        guard: Some(GuardConfig::with_default_budget(
            total() as u64,
            vec!["service".into()],
        )),
        ..Config::default()
    }
}

/// Requests of 2000 series each, series `from..to` of the 1M.
fn requests(from: usize, to: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = from;
    while next < to {
        let ts: Vec<v1::TimeSeries> = (next..(next + 2000).min(to))
            .map(|i| {
                let svc = format!("svc-{:03}", i % SERVICES);
                let metric = format!("metric_{}_total", (i / SERVICES) % METRICS);
                testgen::series(
                    &[
                        ("__name__", &metric),
                        ("id", &i.to_string()),
                        ("service", &svc),
                    ],
                    &[(1.0, T0)],
                )
            })
            .collect();
        next += ts.len();
        out.push(
            v1::WriteRequest {
                timeseries: ts,
                metadata: vec![],
            }
            .encode_to_vec(),
        );
    }
    out
}

/// Admit one request body; returns how long `Guard::admit` took.
fn admit(parts: &Parts, cfg: &GuardConfig, buf: &[u8], scratch: &mut Scratch) -> Duration {
    let mut parsed = Parsed::new();
    parsed.parse(buf, Version::V1, &Limits::default()).unwrap();
    let mut decisions = Decisions::default();
    decisions.reset(parsed.len());
    let started = Instant::now();
    parts
        .guard
        .admit(
            cfg,
            Batch {
                req: &parsed,
                buf,
                tenant: None,
                now_ms: T0,
            },
            &mut decisions,
            scratch,
        )
        .unwrap();
    started.elapsed()
}

/// The write path's latency (`Guard::admit` of 2000 admitted series) with and without
/// snapshots being written back to back on another thread: p50 and p99 of each, printed.
fn p99_effect(parts: &Parts, snapshotter: &Snapshotter) {
    let cfg = config().guard.unwrap();
    let bodies = requests(0, total() / 5);
    let mut scratch = Scratch::default();
    let mut run = |label: &str| {
        let mut lat: Vec<Duration> = Vec::new();
        for _ in 0..5 {
            for b in &bodies {
                lat.push(admit(parts, &cfg, b, &mut scratch));
            }
        }
        lat.sort();
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        println!(
            "admit of 2000 admitted series, {label}: p50 {:?}, p99 {:?} ({} requests)",
            q(0.5),
            q(0.99),
            lat.len()
        );
        q(0.99)
    };
    let without = run("no snapshot");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (with, written) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                snapshotter.write_blocking().unwrap();
                n += 1;
            }
            n
        });
        let with = run("snapshots written back to back meanwhile");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (with, writer.join().unwrap())
    });
    println!(
        "p99 with snapshots / without: {:.2} ({written} snapshots written meanwhile)",
        with.as_secs_f64() / without.as_secs_f64()
    );
}

/// Fresh state with every series admitted, through the write path's `Guard::admit`.
fn admitted() -> Parts {
    let parts = Parts::standalone(config());
    let cfg = config().guard.unwrap();
    let mut scratch = Scratch::default();
    for chunk in (0..total()).step_by(100_000) {
        for b in requests(chunk, (chunk + 100_000).min(total())) {
            admit(&parts, &cfg, &b, &mut scratch);
        }
    }
    assert_eq!(parts.guard.global_active(), total() as u64);
    parts
}

fn bench(c: &mut Criterion) {
    let parts = admitted();
    let image = parts.capture();
    let bytes = encode_file(&image);
    println!(
        "snapshot at {} admitted series: {} bytes, {:.2} bytes per series",
        image.admitted_series(),
        bytes.len(),
        bytes.len() as f64 / image.admitted_series() as f64
    );
    let dir = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::new(
        Some(dir.path()),
        parts.clone(),
        &prometheus::Registry::new(),
    );

    p99_effect(&parts, &snapshotter);

    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.bench_function("baseline_clone_tables", |b| {
        b.iter(|| {
            let img = parts
                .guard
                .image(parts.config.load().guard.as_ref().unwrap());
            black_box(img.owners.len())
        })
    });
    g.bench_function("capture", |b| b.iter(|| black_box(parts.capture())));
    g.bench_function("capture_encode", |b| {
        b.iter(|| black_box(encode_file(&parts.capture()).len()))
    });
    g.bench_function("write", |b| {
        b.iter(|| black_box(snapshotter.write_blocking().unwrap().bytes))
    });
    g.bench_function("decode_apply", |b| {
        b.iter(|| {
            let fresh = Parts::standalone(config());
            black_box(fresh.apply(decode_file(&bytes).unwrap()).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
