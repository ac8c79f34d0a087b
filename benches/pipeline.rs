//! The in-process path of one request through `pipeline::prepare`, exactly as ingest runs it,
//! and the guard stage alone. Baselines are measured in the same run so ratios are meaningful:
//!
//! - `pipeline/unchanged_v1_to_v1`: no guard; the original body is forwarded (the fast path).
//! - `pipeline/guarded_all_admitted`: the guard on, every series already admitted: the cost
//!   the guard adds to a steady-state request (compare with the line above).
//! - `pipeline/guarded_half_dropped`: half the series over budget: drop + re-encode.
//! - `pipeline/guarded_v2_all_admitted`: the same request from a 2.0 sender, guarded, every
//!   series admitted, forwarded as 2.0.
//! - `pipeline/translate_v1_to_v2`: full decode, write every series, compress.
//! - `guard/existing`: `Guard::admit` alone over 2000 admitted series (per-series cost).
//! - `guard/new`: the same request into a fresh guard (new-series path: insert + sketches).

use std::hint::black_box;

use cardguard::config::GuardConfig;
use cardguard::demo::Fleet;
use cardguard::guard::{self, Guard};
use cardguard::pipeline::{self, Context};
use cardguard::series::Decisions;
use cardguard::wire::{self, Limits, Parsed, Version};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const NOW: i64 = 1_700_000_000_000;

fn ctx<'a>(
    limits: &'a Limits,
    out: Version,
    guard: Option<(&'a Guard, &'a GuardConfig)>,
) -> Context<'a> {
    Context {
        guard,
        ..Context::new(Version::V1, out, limits, NOW)
    }
}

fn bench(c: &mut Criterion) {
    // 2000 series of realistic exporter labels over 5 services, one sample each.
    let mut fleet = Fleet::new(5, 400);
    let body = fleet.scrape(NOW, 2000).remove(0);
    let limits = Limits::default();
    let roomy = GuardConfig::with_default_budget(1_000_000, vec!["service".into()]);
    let tight = GuardConfig::with_default_budget(200, vec!["service".into()]);
    let admitted = Guard::new();
    pipeline::prepare(&body, &ctx(&limits, Version::V1, Some((&admitted, &roomy)))).unwrap();
    let half = Guard::new();
    pipeline::prepare(&body, &ctx(&limits, Version::V1, Some((&half, &tight)))).unwrap();

    // The same series as a remote write 2.0 body (a 2.0 sender), for the guarded 2.0 path.
    let body_v2 = pipeline::prepare(&body, &ctx(&limits, Version::V2, None))
        .unwrap()
        .routed
        .parts
        .remove(0)
        .body;
    let ctx_v2 = |guard| Context {
        guard,
        ..Context::new(Version::V2, Version::V2, &limits, NOW)
    };
    let admitted_v2 = Guard::new();
    pipeline::prepare(&body_v2, &ctx_v2(Some((&admitted_v2, &roomy)))).unwrap();

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(fleet.len() as u64));
    g.bench_function("unchanged_v1_to_v1", |b| {
        b.iter(|| pipeline::prepare(black_box(&body), &ctx(&limits, Version::V1, None)).unwrap())
    });
    g.bench_function("guarded_all_admitted", |b| {
        b.iter(|| {
            pipeline::prepare(
                black_box(&body),
                &ctx(&limits, Version::V1, Some((&admitted, &roomy))),
            )
            .unwrap()
        })
    });
    g.bench_function("guarded_half_dropped", |b| {
        b.iter(|| {
            pipeline::prepare(
                black_box(&body),
                &ctx(&limits, Version::V1, Some((&half, &tight))),
            )
            .unwrap()
        })
    });
    g.bench_function("guarded_v2_all_admitted", |b| {
        b.iter(|| {
            pipeline::prepare(black_box(&body_v2), &ctx_v2(Some((&admitted_v2, &roomy)))).unwrap()
        })
    });
    g.bench_function("translate_v1_to_v2", |b| {
        b.iter(|| pipeline::prepare(black_box(&body), &ctx(&limits, Version::V2, None)).unwrap())
    });
    g.finish();

    let mut decoded = Vec::new();
    wire::snappy::decompress(&body, limits.max_decoded_bytes, &mut decoded).unwrap();
    let mut parsed = Parsed::new();
    parsed.parse(&decoded, Version::V1, &limits).unwrap();
    let mut scratch = guard::Scratch::default();
    let mut decisions = Decisions::default();
    let batch = guard::Batch {
        req: &parsed,
        buf: &decoded,
        tenant: None,
        now_ms: NOW,
    };
    let mut g = c.benchmark_group("guard");
    g.throughput(Throughput::Elements(parsed.len() as u64));
    g.bench_function("existing", |b| {
        b.iter(|| {
            decisions.reset(parsed.len());
            admitted.admit(&roomy, batch, &mut decisions, &mut scratch)
        })
    });
    g.bench_function("new", |b| {
        b.iter_batched(
            Guard::new,
            |fresh| {
                decisions.reset(parsed.len());
                fresh.admit(&roomy, batch, &mut decisions, &mut scratch);
                fresh
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
