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
    let limits = Limits::default();
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
            let req = v1::WriteRequest {
                timeseries,
                metadata: Vec::new(),
            };
            let mut body = Vec::new();
            wire::snappy::compress(&req.encode_to_vec(), &mut body);
            let mut decoded = Vec::new();
            wire::snappy::decompress(&body, limits.max_decoded_bytes, &mut decoded).unwrap();
            let mut parsed = Parsed::new();
            parsed.parse(&decoded, Version::V1, &limits).unwrap();
            Request {
                body: Bytes::from(body),
                decoded,
                parsed,
            }
        })
        .collect()
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
        self.guard.admit(&self.cfg, batch, decisions, scratch)
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

fn main() {
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
