//! What an owner costs per request when owners are many and small (issue 16): the same
//! 10 000 series, in ten requests of 1000, once over 10 000 owners (`service` values) of one
//! series each, so that every series of a request has an owner of its own, and once over 20
//! owners, interleaved as a Prometheus shard mixes its targets. Steady state: every series
//! admitted before anything is measured, no slice turning. The series' labels have the same
//! lengths both ways (only the owner's value differs, in the same number of bytes), so the
//! difference is what the guard does per owner.
//!
//! - `guard_owners/admit_small`, `admit_large`: `Guard::admit` of the ten requests in turn;
//!   `prepare_small`, `prepare_large`: the whole in-process path (`pipeline::prepare`).
//! - Instruction counts, which the machine's load does not distort: with
//!   `CARDGUARD_IR_MODE=admit_small|admit_large|prepare_small|prepare_large` (and
//!   `CARDGUARD_IR_ITERS`, requests, default 100) the binary runs that many requests after the
//!   warm-up in `measured` and exits. Under
//!   `valgrind --tool=callgrind --toggle-collect='*guard_owners::measured*'` the total is the
//!   measured requests' alone: divide by ITERS × 1000 for instructions per series.
//! - Heap per owner: `CARDGUARD_IR_MODE=heap` admits the load harness's `--small-owners`
//!   shape (10 000 owners of 1–10 series, each series its own metric name, the exporter's 8
//!   labels) once over those owners and once over 20, under a counting allocator, and prints
//!   the live heap each way, what an owner costs beyond its series (requested bytes and
//!   glibc chunks), and the small owners' live allocations by size. Run it under heaptrack
//!   for the call sites.

use std::hint::black_box;

use bytes::Bytes;
use cardguard::config::GuardConfig;
use cardguard::guard::{self, Guard};
use cardguard::pipeline::{self, Context};
use cardguard::series::Decisions;
use cardguard::wire::types::v1;
use cardguard::wire::{self, Limits, Parsed, Version};
use criterion::{Criterion, Throughput};
use prost::Message;

/// Counts live heap bytes and allocations (and glibc's chunk bytes for them), for `heap`.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

    pub struct Counting;
    pub static BYTES: AtomicI64 = AtomicI64::new(0);
    pub static CHUNKS: AtomicI64 = AtomicI64::new(0);
    pub static COUNT: AtomicI64 = AtomicI64::new(0);
    /// Live allocations by glibc chunk size / 16, the last bucket for everything larger.
    pub static BY_CHUNK: [AtomicI64; 129] = [const { AtomicI64::new(0) }; 129];

    /// glibc's chunk for a request: 8 bytes of header, 16-byte aligned, at least 32.
    pub fn chunk(size: usize) -> usize {
        ((size + 8 + 15) & !15).max(32)
    }

    fn count(size: usize, sign: i64) {
        BYTES.fetch_add(sign * size as i64, Relaxed);
        CHUNKS.fetch_add(sign * chunk(size) as i64, Relaxed);
        COUNT.fetch_add(sign, Relaxed);
        BY_CHUNK[(chunk(size) / 16).min(128)].fetch_add(sign, Relaxed);
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            count(l.size(), 1);
            System.alloc(l)
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            count(l.size(), 1);
            System.alloc_zeroed(l)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            count(l.size(), -1);
            System.dealloc(p, l)
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            count(l.size(), -1);
            count(new, 1);
            System.realloc(p, l, new)
        }
    }

    /// (bytes, chunk bytes, allocations, by chunk size) live now.
    pub fn live() -> (i64, i64, i64, Vec<i64>) {
        (
            BYTES.load(Relaxed),
            CHUNKS.load(Relaxed),
            COUNT.load(Relaxed),
            BY_CHUNK.iter().map(|c| c.load(Relaxed)).collect(),
        )
    }
}

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

const NOW: i64 = 1_700_000_000_000;
const SERIES: usize = 10_000;
const PER_REQUEST: usize = 1000;
const METRICS: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds_count",
    "process_cpu_seconds_total",
    "rpc_errors_total",
];

/// Series `k`'s labels, sorted by name as Prometheus sends them; `owner` is its service.
fn labels(k: usize, owner: usize) -> Vec<v1::Label> {
    let label = |n: &str, v: String| v1::Label {
        name: n.into(),
        value: v,
    };
    vec![
        label("__name__", METRICS[k % METRICS.len()].into()),
        label("code", ["200", "404", "500"][k % 3].into()),
        label(
            "instance",
            format!("10.0.{:03}.{:03}:9100", k / 250, k % 250),
        ),
        label("job", "app".into()),
        label("method", ["GET", "PUT"][k % 2].into()),
        label("pod", format!("pod-{k:05}")),
        label("service", format!("svc-{owner:05}")),
    ]
}

/// One request: its body (snappy) and its decoded, parsed form.
struct Request {
    body: Bytes,
    decoded: Vec<u8>,
    parsed: Parsed,
}

fn requests(owners: usize) -> Vec<Request> {
    (0..SERIES / PER_REQUEST)
        .map(|r| {
            let timeseries = (r * PER_REQUEST..(r + 1) * PER_REQUEST)
                .map(|k| v1::TimeSeries {
                    labels: labels(k, k % owners),
                    samples: vec![v1::Sample {
                        value: k as f64,
                        timestamp: NOW,
                    }],
                    ..Default::default()
                })
                .collect();
            request(timeseries, true)
        })
        .collect()
}

/// One request of `timeseries`, decoded and parsed; its compressed body only if `body`.
fn request(timeseries: Vec<v1::TimeSeries>, body: bool) -> Request {
    let limits = Limits::default();
    let decoded = v1::WriteRequest {
        timeseries,
        metadata: Vec::new(),
    }
    .encode_to_vec();
    let mut compressed = Vec::new();
    if body {
        wire::snappy::compress(&decoded, &mut compressed);
    }
    let mut parsed = Parsed::new();
    parsed.parse(&decoded, Version::V1, &limits).unwrap();
    Request {
        body: Bytes::from(compressed),
        decoded,
        parsed,
    }
}

/// A guard with every series of `reqs` admitted, each owner under its own entry.
struct Setup {
    guard: Guard,
    cfg: GuardConfig,
    reqs: Vec<Request>,
}

impl Setup {
    fn new(owners: usize) -> Self {
        let mut cfg = GuardConfig::with_default_budget(1_000_000, vec!["service".into()]);
        cfg.max_owners = 2 * SERIES;
        cfg.max_owners_per_tenant = 2 * SERIES;
        let s = Setup {
            guard: Guard::new(),
            cfg,
            reqs: requests(owners),
        };
        let mut scratch = guard::Scratch::default();
        let mut decisions = Decisions::default();
        for _ in 0..2 {
            for r in 0..s.reqs.len() {
                let out = s.admit(r, &mut decisions, &mut scratch);
                assert_eq!(out.kept_series, PER_REQUEST as u64, "warm-up admits all");
            }
        }
        assert_eq!(
            s.guard.owners().len(),
            owners,
            "one registry entry per owner"
        );
        s
    }

    fn admit(
        &self,
        r: usize,
        decisions: &mut Decisions,
        scratch: &mut guard::Scratch,
    ) -> guard::AdmissionCounts {
        let req = &self.reqs[r];
        decisions.reset(req.parsed.len());
        let batch = guard::Batch {
            req: &req.parsed,
            buf: &req.decoded,
            tenant: None,
            now_ms: NOW,
        };
        self.guard
            .admit(&self.cfg, batch, decisions, scratch)
            .unwrap()
    }

    fn prepare(&self, r: usize, limits: &Limits) -> u64 {
        let ctx = Context {
            guard: Some((&self.guard, &self.cfg)),
            ..Context::new(Version::V1, Version::V1, limits, NOW)
        };
        let out = pipeline::prepare(black_box(&self.reqs[r].body), &ctx).unwrap();
        assert!(out.passthrough, "steady state: the body goes on as it came");
        out.decoded_bytes as u64
    }

    /// Request `r`, through `Guard::admit` alone or the whole path (`whole`).
    fn run(
        &self,
        r: usize,
        whole: bool,
        limits: &Limits,
        decisions: &mut Decisions,
        scratch: &mut guard::Scratch,
    ) -> u64 {
        if whole {
            self.prepare(r, limits)
        } else {
            self.admit(r, decisions, scratch).kept_series
        }
    }
}

/// The requests counted under callgrind (`--toggle-collect`): nothing else runs in here.
#[inline(never)]
fn measured(
    s: &Setup,
    whole: bool,
    iters: usize,
    decisions: &mut Decisions,
    scratch: &mut guard::Scratch,
) {
    let limits = Limits::default();
    for k in 0..iters {
        black_box(s.run(k % s.reqs.len(), whole, &limits, decisions, scratch));
    }
}

/// The load harness's `--small-owners` shape: owner `s` has `1 + s % 10` series, series `j`
/// of an owner named `METRICS10[j]`, with the exporter's 8 labels; requests of 1000 series
/// round-robin over the owners. `owners` of `None`: the same series over 20 owners.
fn harness_requests(small_owners: usize, over_20: bool) -> Vec<Request> {
    const METRICS10: [&str; 10] = [
        "http_requests_total",
        "http_request_errors_total",
        "http_request_bytes_total",
        "http_response_bytes_total",
        "rpc_client_calls_total",
        "rpc_client_errors_total",
        "db_queries_total",
        "db_query_errors_total",
        "cache_hits_total",
        "cache_misses_total",
    ];
    let mut all = Vec::new();
    for j in 0..10 {
        for s in (0..small_owners).filter(|s| j < 1 + s % 10) {
            all.push((s, j));
        }
    }
    let label = |n: &str, v: String| v1::Label {
        name: n.into(),
        value: v,
    };
    all.chunks(PER_REQUEST)
        .enumerate()
        .map(|(r, chunk)| {
            let timeseries = chunk
                .iter()
                .enumerate()
                .map(|(i, &(s, j))| {
                    // Over 20 owners, each series keeps its labels but its service is one of 20.
                    let svc = format!("svc-{:05}", if over_20 { s % 20 } else { s });
                    let owner_svc = format!("svc-{s:05}");
                    v1::TimeSeries {
                        labels: vec![
                            label("__name__", METRICS10[j].into()),
                            label("env", "prod".into()),
                            label("instance", format!("10.{}.0.0:8080", s % 256)),
                            label("job", owner_svc.clone()),
                            label("method", "GET".into()),
                            label("pod", format!("{owner_svc}-00000")),
                            label("route", "/api/v1/r0".into()),
                            label("service", svc),
                        ],
                        samples: vec![v1::Sample {
                            value: (r * PER_REQUEST + i) as f64,
                            timestamp: NOW,
                        }],
                        ..Default::default()
                    }
                })
                .collect();
            request(timeseries, false)
        })
        .collect()
}

/// `CARDGUARD_IR_MODE=heap`: see the module docs.
fn heap() {
    const OWNERS: usize = 10_000;
    let mut cfg = GuardConfig::with_default_budget(1_000_000, vec!["service".into()]);
    cfg.max_owners = 2 * OWNERS;
    cfg.max_owners_per_tenant = 2 * OWNERS;
    let mut grown = Vec::new();
    for over_20 in [false, true] {
        let reqs = harness_requests(OWNERS, over_20);
        let series: usize = reqs.iter().map(|r| r.parsed.len()).sum();
        let mut scratch = guard::Scratch::default();
        let mut decisions = Decisions::default();
        let g = Guard::new();
        let admit_all = |g: &Guard, decisions: &mut Decisions, scratch: &mut guard::Scratch| {
            for r in &reqs {
                decisions.reset(r.parsed.len());
                let batch = guard::Batch {
                    req: &r.parsed,
                    buf: &r.decoded,
                    tenant: None,
                    now_ms: NOW,
                };
                let out = g.admit(&cfg, batch, decisions, scratch).unwrap();
                assert_eq!(out.kept_series, r.parsed.len() as u64);
            }
        };
        // Scratch buffers grown before counting: only what the guard keeps is measured.
        admit_all(&Guard::new(), &mut decisions, &mut scratch);
        let before = counting::live();
        admit_all(&g, &mut decisions, &mut scratch);
        let after = counting::live();
        let owners = g.owners().len();
        let d = |i: usize| after.3[i] - before.3[i];
        println!(
            "{owners} owners, {series} series: +{} B requested, +{} B in glibc chunks, +{} allocations ({:.1} per owner)",
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
            (after.2 - before.2) as f64 / owners as f64
        );
        if !over_20 {
            println!("  live allocations per owner by chunk size:");
            for i in 0..129 {
                if d(i) != 0 {
                    let size = if i == 128 {
                        ">=2048".to_string()
                    } else {
                        (i * 16).to_string()
                    };
                    println!("    {size:>6} B: {:.2}", d(i) as f64 / owners as f64);
                }
            }
        }
        grown.push((owners, series, after.0 - before.0, after.1 - before.1));
        drop(g);
    }
    let (a, b) = (grown[0], grown[1]);
    let beyond = |ga: i64, gb: i64| (ga as f64 - gb as f64 * a.1 as f64 / b.1 as f64) / a.0 as f64;
    println!(
        "per owner beyond its series: {:.0} B requested, {:.0} B in glibc chunks (size_of Owner {} B, OwnerState {} B)",
        beyond(a.2, b.2),
        beyond(a.3, b.3),
        std::mem::size_of::<guard::Owner>(),
        std::mem::size_of::<guard::owner::OwnerState>()
    );
}

fn main() {
    if std::env::var("CARDGUARD_IR_MODE").as_deref() == Ok("heap") {
        heap();
        return;
    }
    let small = Setup::new(SERIES);
    let large = Setup::new(20);
    if let Ok(mode) = std::env::var("CARDGUARD_IR_MODE") {
        let iters: usize = std::env::var("CARDGUARD_IR_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        let (s, whole) = match mode.as_str() {
            "admit_small" => (&small, false),
            "admit_large" => (&large, false),
            "prepare_small" => (&small, true),
            "prepare_large" => (&large, true),
            m => panic!(
                "CARDGUARD_IR_MODE={m}: admit_small, admit_large, prepare_small or prepare_large"
            ),
        };
        let mut scratch = guard::Scratch::default();
        let mut decisions = Decisions::default();
        // Every request once outside the count: the scratch buffers grown to size.
        let limits = Limits::default();
        for r in 0..s.reqs.len() {
            s.run(r, whole, &limits, &mut decisions, &mut scratch);
        }
        measured(s, whole, iters, &mut decisions, &mut scratch);
        println!("{mode}: {iters} requests of {PER_REQUEST} admitted series");
        return;
    }
    let limits = Limits::default();
    let mut scratch = guard::Scratch::default();
    let mut decisions = Decisions::default();
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("guard_owners");
    g.throughput(Throughput::Elements(PER_REQUEST as u64));
    for (name, s) in [("small", &small), ("large", &large)] {
        let mut r = 0;
        g.bench_function(format!("admit_{name}"), |b| {
            b.iter(|| {
                r = (r + 1) % s.reqs.len();
                s.admit(r, &mut decisions, &mut scratch)
            })
        });
    }
    for (name, s) in [("small", &small), ("large", &large)] {
        let mut r = 0;
        g.bench_function(format!("prepare_{name}"), |b| {
            b.iter(|| {
                r = (r + 1) % s.reqs.len();
                s.prepare(r, &limits)
            })
        });
    }
    g.finish();
    c.final_summary();
}
