//! The in-process path of one request through `pipeline::prepare`, exactly as ingest runs it,
//! and the guard stage alone. Baselines are measured in the same run so ratios are meaningful:
//!
//! - `pipeline/unchanged_v1_to_v1`: no guard; the original body is forwarded (the fast path).
//! - `pipeline/guarded_all_admitted`: the guard on, every series already admitted: the cost
//!   the guard adds to a steady-state request (compare with the line above).
//! - `pipeline/guarded_all_admitted_full_reads`: the same with every series' labels read and
//!   checked before the guard (`Context::lazy_labels` off), what lazy reads save.
//! - `pipeline/guarded_half_dropped`: half the series over budget: drop + re-encode.
//! - `pipeline/guarded_v2_all_admitted`: the same request from a 2.0 sender, guarded, every
//!   series admitted, forwarded as 2.0.
//! - `pipeline/translate_v1_to_v2`: full decode, write every series, compress.
//! - `guard/existing`: `Guard::admit` alone over 2000 admitted series (per-series cost).
//! - `guard/existing_after_slice_turns`: the same after six turns of the window's slices,
//!   the request admitted in each (what the fresh table holds of a long-running load).
//! - `guard/new`: the same request into a fresh guard (new-series path: insert + sketches).

use std::hint::black_box;

use cardguard::config::GuardConfig;
use cardguard::demo::Fleet;
use cardguard::guard::{self, Guard};
use cardguard::pipeline::{self, Context};
use cardguard::series::Decisions;
use cardguard::wire::{self, testgen, Limits, Parsed, Version};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const NOW: i64 = 1_700_000_000_000;

/// Series per owner in `explosion_bodies`, each owner's budget.
const EXPLOSION_OWNER_SERIES: usize = 320;

/// The requests of `guarded_explosion_returning` (see the module doc): like the load harness's
/// "4–5 labels" shape, each request 1600 series of 5 owners (`service`), the same every time,
/// with 400 of a pool of 50,000 `user_id` series of the first owner spread between them;
/// first, the 1600 series alone (what fills the owners' budgets).
fn explosion_bodies() -> (bytes::Bytes, Vec<bytes::Bytes>) {
    use cardguard::demo::{METHODS, METRICS};
    const POOL: usize = 50_000;
    const PER_REQUEST: usize = 400;
    fn labels(s: usize, j: usize, user: Option<usize>) -> Vec<(String, String)> {
        let service = format!("svc-{s:03}");
        let q = j / METRICS.len();
        let mut l = vec![
            (
                "__name__".to_string(),
                METRICS[j % METRICS.len()].to_string(),
            ),
            (
                "instance".to_string(),
                format!("10.{s}.{}.{}:8080", q / 256, q % 256),
            ),
            ("job".to_string(), service.clone()),
        ];
        if q % 2 == 0 {
            l.push(("method".into(), METHODS[(q / 2) % METHODS.len()].into()));
        }
        l.push(("service".into(), service));
        if let Some(u) = user {
            l.push(("user_id".into(), format!("u{u:09}")));
        }
        l
    }
    let normal: Vec<_> = (0..EXPLOSION_OWNER_SERIES)
        .flat_map(|j| (0..5).map(move |s| labels(s, j, None)))
        .collect();
    let body = |series: &[Vec<(String, String)>]| {
        let ts = series
            .iter()
            .map(|l| {
                let l: Vec<(&str, &str)> =
                    l.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                testgen::series(&l, &[(1.0, NOW)])
            })
            .collect();
        testgen::body_in(Version::V1, ts)
    };
    let exploding = (0..POOL / PER_REQUEST)
        .map(|r| {
            let mut series = Vec::with_capacity(normal.len() + PER_REQUEST);
            for (i, l) in normal.iter().enumerate() {
                series.push(l.clone());
                if i % 4 == 3 {
                    let k = r * PER_REQUEST + i / 4;
                    series.push(labels(0, k % 40, Some(k)));
                }
            }
            body(&series)
        })
        .collect();
    (body(&normal), exploding)
}

/// Put every body through `guard` once (not through `pipeline::prepare`, so that a profile
/// of it counts only the measured requests). Returns how many series it refused.
fn admit_all(guard: &Guard, cfg: &GuardConfig, bodies: &[bytes::Bytes], limits: &Limits) -> u64 {
    let mut refused = 0;
    let mut scratch = guard::Scratch::default();
    let mut decisions = Decisions::default();
    for body in bodies {
        let mut decoded = Vec::new();
        wire::snappy::decompress(body, limits.max_decoded_bytes, &mut decoded).unwrap();
        let mut parsed = Parsed::new();
        parsed.parse(&decoded, Version::V1, limits).unwrap();
        decisions.reset(parsed.len());
        refused += guard
            .admit(
                cfg,
                guard::Batch {
                    req: &parsed,
                    buf: &decoded,
                    tenant: None,
                    now_ms: NOW,
                },
                &mut decisions,
                &mut scratch,
            )
            .unwrap()
            .dropped_series;
    }
    refused
}

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

    // The owners at their budgets, then twice through the pool: every exploding series
    // refused and come back once.
    let (steady, exploding) = explosion_bodies();
    let at_budget =
        GuardConfig::with_default_budget(EXPLOSION_OWNER_SERIES as u64, vec!["service".into()]);
    let explosion = Guard::new();
    assert_eq!(admit_all(&explosion, &at_budget, &[steady], &limits), 0);
    for _ in 0..2 {
        let refused = admit_all(&explosion, &at_budget, &exploding, &limits);
        assert_eq!(refused, 50_000, "only the exploding series refused");
    }

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
    g.bench_function("guarded_all_admitted_full_reads", |b| {
        b.iter(|| {
            pipeline::prepare(
                black_box(&body),
                &Context {
                    lazy_labels: false,
                    ..ctx(&limits, Version::V1, Some((&admitted, &roomy)))
                },
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
    let mut next = 0;
    g.bench_function("guarded_explosion_returning", |b| {
        b.iter(|| {
            next = (next + 1) % exploding.len();
            pipeline::prepare(
                black_box(&exploding[next]),
                &ctx(&limits, Version::V1, Some((&explosion, &at_budget))),
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
            admitted
                .admit(&roomy, batch, &mut decisions, &mut scratch)
                .unwrap()
        })
    });
    // The same guard after six slice turns, each with the request admitted twice: what a
    // steady load costs ten minutes and more into a run, when the fresh table's buckets hold
    // the earlier slices' entries.
    let turned = Guard::new();
    let slice_ms = roomy.slice_length().as_millis() as i64;
    let last = NOW + 6 * slice_ms;
    for now_ms in (0..=6).map(|k| NOW + k * slice_ms) {
        for _ in 0..2 {
            decisions.reset(parsed.len());
            let b = guard::Batch { now_ms, ..batch };
            turned
                .admit(&roomy, b, &mut decisions, &mut scratch)
                .unwrap();
        }
    }
    g.bench_function("existing_after_slice_turns", |b| {
        let batch = guard::Batch {
            now_ms: last,
            ..batch
        };
        b.iter(|| {
            decisions.reset(parsed.len());
            turned
                .admit(&roomy, batch, &mut decisions, &mut scratch)
                .unwrap()
        })
    });
    g.bench_function("new", |b| {
        b.iter_batched(
            Guard::new,
            |fresh| {
                decisions.reset(parsed.len());
                fresh
                    .admit(&roomy, batch, &mut decisions, &mut scratch)
                    .unwrap();
                fresh
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
