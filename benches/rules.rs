//! Recording rules on the stream. Inputs are the classic HTTP instrumentation of a fleet:
//! 100 services × 50 pods, `http_requests_total` (5 codes), the 12 buckets, `_sum` and
//! `_count` of `http_request_duration_seconds`, and `up`: 100k series in all, read by the 10
//! rules of `RULES` below (the shapes of `rules/example.yml`).
//!
//! - `rules_ingest/pipeline_without_rules`: `pipeline::prepare` of a 2000-series request, no
//!   rules: the baseline.
//! - `rules_ingest/pipeline_10_rules`: the same with the tap on and every series buffered
//!   (each iteration carries newer timestamps, so every sample is appended).
//! - `rules_ingest/pipeline_10_rules_unmatched`: the tap on, no series read by any rule (one
//!   hash lookup a series).
//! - `rules_ingest/pipeline_10_rules_100k_buffered`: the tap on, all 100k series buffered (far
//!   more than the caches hold), a 2000-series request of which 200 are read by a rule, each
//!   appending one sample to a series last touched 500 requests ago (the steady state).
//! - `rules_eval/group_10_rules_100k_series`: one evaluation of the 10-rule group over 100k
//!   buffered series holding 5 minutes of 15 s samples.
//! - `rules_eval/select_only_10_rules`: the storage's share of it: every selector of the 10
//!   rules read from the buffers, the samples only counted.
//!
//! Bytes per buffered sample are printed while setting up the evaluation bench.

use std::hint::black_box;

use bytes::Bytes;
use cardguard::pipeline::{self, Context};
use cardguard::rules::buffer::{Buffer, BufferLimits};
use cardguard::rules::file;
use cardguard::rules::group::{self, GroupState};
use cardguard::rules::plan::Plan;
use cardguard::rules::promql::Storage;
use cardguard::rules::tap::Tap;
use cardguard::wire::{self, Limits, OwnedSeries, Version, Writer};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const RULES: &str = r#"
groups:
  - name: bench
    rules:
      - record: service:http_requests:rate5m
        expr: sum by (service) (rate(http_requests_total[5m]))
      - record: service_code:http_requests:rate5m
        expr: sum by (service, code) (rate(http_requests_total[5m]))
      - record: service:http_requests_success:ratio_rate5m
        expr: sum by (service) (rate(http_requests_total{code!~"5.."}[5m])) / sum by (service) (rate(http_requests_total[5m]))
      - record: service:http_request_duration_seconds:p99_5m
        expr: histogram_quantile(0.99, sum by (service, le) (rate(http_request_duration_seconds_bucket[5m])))
      - record: service:http_request_duration_seconds:p50_5m
        expr: histogram_quantile(0.5, sum by (service, le) (rate(http_request_duration_seconds_bucket[5m])))
      - record: service:http_request_duration_seconds:mean5m
        expr: sum by (service) (rate(http_request_duration_seconds_sum[5m])) / sum by (service) (rate(http_request_duration_seconds_count[5m]))
      - record: service:http_requests:increase1m
        expr: sum by (service) (increase(http_requests_total[1m]))
      - record: http_requests:errors:rate5m
        expr: sum(rate(http_requests_total{code=~"5.."}[5m]))
      - record: service:up:count
        expr: count by (service) (up == 1)
      - record: service:http_requests:max
        expr: max by (service) (http_requests_total)
"#;

const SERVICES: usize = 100;
const PODS: usize = 50;
const CODES: [&str; 5] = ["200", "201", "404", "500", "503"];
const LES: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
const STEP_MS: i64 = 15_000;
const T0: i64 = 1_700_000_000_000;

/// Every input series' labels (sorted) and a per-series growth rate.
fn fleet() -> Vec<(Vec<(String, String)>, f64)> {
    let mut out = Vec::new();
    let l = |pairs: &[(&str, &str)]| {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    };
    for s in 0..SERVICES {
        let svc = format!("svc-{s:03}");
        for p in 0..PODS {
            let pod = format!("{svc}-pod-{p:02}");
            for (ci, c) in CODES.iter().enumerate() {
                out.push((
                    l(&[
                        ("__name__", "http_requests_total"),
                        ("service", &svc),
                        ("pod", &pod),
                        ("code", c),
                    ]),
                    (10 - 2 * ci) as f64,
                ));
            }
            for (li, le) in LES.iter().enumerate() {
                out.push((
                    l(&[
                        ("__name__", "http_request_duration_seconds_bucket"),
                        ("service", &svc),
                        ("pod", &pod),
                        ("le", le),
                    ]),
                    (li + 1) as f64,
                ));
            }
            for n in [
                "http_request_duration_seconds_sum",
                "http_request_duration_seconds_count",
            ] {
                out.push((l(&[("__name__", n), ("service", &svc), ("pod", &pod)]), 3.0));
            }
            out.push((
                l(&[("__name__", "up"), ("service", &svc), ("pod", &pod)]),
                0.0,
            ));
        }
    }
    out
}

fn body(series: &[(Vec<(String, String)>, f64)], step: i64, rename: bool) -> Bytes {
    encode(
        series.iter().map(|(labels, rate)| {
            let mut labels = labels.clone();
            if rename {
                labels[0].1.push_str("_other");
            }
            (labels, *rate)
        }),
        step,
    )
}

/// A request of these series (labels, rate), each with its sample at `step`.
fn encode(series: impl Iterator<Item = (Vec<(String, String)>, f64)>, step: i64) -> Bytes {
    let mut w = Writer::new(Version::V1);
    w.reset();
    for (labels, rate) in series {
        w.push_series(&OwnedSeries {
            histograms: Vec::new(),
            labels,
            samples: vec![(1.0 + rate * step as f64, T0 + step * STEP_MS)],
        });
    }
    let mut out = Vec::new();
    wire::snappy::compress(w.finish().unwrap(), &mut out);
    Bytes::from(out)
}

fn ctx<'a>(limits: &'a Limits, tap: Option<Tap<'a>>) -> Context<'a> {
    Context {
        rules: tap,
        ..Context::new(Version::V1, Version::V1, limits, T0)
    }
}

/// Samples each series of `filled` holds: 5 minutes of 15 s samples.
const STEPS: i64 = 21;

/// A buffer holding every series of `all` with `STEPS` samples each, as in production (far
/// bigger than the caches at 100k series).
fn filled(all: &[(Vec<(String, String)>, f64)], limits: &BufferLimits) -> Buffer {
    let buffer = Buffer::new();
    for (labels, rate) in all {
        let l: Vec<(&[u8], &[u8])> = labels
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let samples = (0..STEPS).map(|i| cardguard::rules::promql::Sample {
            t: T0 + i * STEP_MS,
            v: 1.0 + rate * i as f64,
        });
        buffer.append(l.into_iter(), samples, 400_000, limits);
    }
    buffer
}

fn bench(c: &mut Criterion) {
    let groups = file::parse("bench.yml", RULES).expect("bench rules load");
    let plan = Plan::new(
        groups.iter(),
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(30),
    );
    let limits = Limits::default();
    let buffer_limits = BufferLimits {
        max_series: 10_000_000,
        max_samples_per_series: 4096,
        max_label_bytes: usize::MAX,
    };
    let all = fleet();
    let request: Vec<_> = all
        .iter()
        .step_by(all.len() / 2000)
        .take(2000)
        .cloned()
        .collect();

    let mut g = c.benchmark_group("rules_ingest");
    g.throughput(Throughput::Elements(request.len() as u64));
    let fixed = body(&request, 0, false);
    g.bench_function("pipeline_without_rules", |b| {
        b.iter(|| pipeline::prepare(black_box(&fixed), &ctx(&limits, None)).unwrap())
    });
    let buffer = Buffer::new();
    let tap = Tap {
        plan: &plan,
        buffer: &buffer,
        limits: buffer_limits,
        tenant: None,
    };
    let mut step = 0;
    g.bench_function("pipeline_10_rules", |b| {
        b.iter_batched(
            || {
                step += 1;
                body(&request, step, false)
            },
            |body| {
                let p = pipeline::prepare(&body, &ctx(&limits, Some(tap))).unwrap();
                assert_eq!(p.rules.samples, 2000);
                p
            },
            BatchSize::SmallInput,
        )
    });
    let unmatched = body(&request, 0, true);
    g.bench_function("pipeline_10_rules_unmatched", |b| {
        b.iter(|| pipeline::prepare(black_box(&unmatched), &ctx(&limits, Some(tap))).unwrap())
    });

    // Buffers far bigger than the caches, as in production: all 100k series buffered with 5
    // minutes of samples, each request 2000 series of which every 10th is read by a rule,
    // walking the fleet so that each buffered series gets its next sample every 500 requests.
    let big = filled(&all, &buffer_limits);
    let big_tap = Tap {
        buffer: &big,
        ..tap
    };
    let per_request = 200;
    let mut n = 0usize;
    g.bench_function("pipeline_10_rules_100k_buffered", |b| {
        b.iter_batched(
            || {
                let first = n * per_request % all.len();
                let step = STEPS + (n * per_request / all.len()) as i64;
                n += 1;
                let series = (0..2000).map(|k| {
                    let (mut labels, rate) = all[(first + k / 10) % all.len()].clone();
                    if k % 10 != 0 {
                        labels[0].1.push_str(&format!("_other{k}"));
                    }
                    (labels, rate)
                });
                encode(series, step)
            },
            |body| {
                let p = pipeline::prepare(&body, &ctx(&limits, Some(big_tap))).unwrap();
                assert_eq!(p.rules.samples, per_request as u64);
                p
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    drop(big);

    // 100k series, 5 minutes of 15 s samples each.
    let full = filled(&all, &buffer_limits);
    let st = full.stats();
    eprintln!(
        "rules buffer: {} series, {} samples, {} bytes: {:.1} bytes per buffered sample, {:.0} bytes per series",
        st.series,
        st.samples,
        st.bytes,
        st.bytes as f64 / st.samples as f64,
        st.bytes as f64 / st.series as f64
    );
    let t_eval = T0 + (STEPS - 1) * STEP_MS;
    let mut g = c.benchmark_group("rules_eval");
    g.sample_size(10);
    g.throughput(Throughput::Elements(all.len() as u64));
    // The storage's share: every selector of the 10 rules read once, samples only counted.
    let needs: Vec<_> = groups[0]
        .rules
        .iter()
        .flat_map(|r| r.compiled.needs().to_vec())
        .collect();
    g.bench_function("select_only_10_rules", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for need in &needs {
                full.select(
                    &need.matchers,
                    t_eval - need.history_ms,
                    t_eval,
                    &mut |_, s| n += s.len(),
                );
            }
            n
        })
    });
    let mut state = GroupState::default();
    g.bench_function("group_10_rules_100k_series", |b| {
        b.iter(|| {
            let e = group::evaluate(&groups[0], &full, t_eval, &mut state);
            assert!(e.failures.is_empty(), "{:?}", e.failures);
            e
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
