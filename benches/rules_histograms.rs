//! Recording rules over native histograms against the same rules over floats, in one run.
//! 10k series (100 services × 100 pods), each either a float counter or a native histogram
//! (schema 3, 24 populated buckets in two spans, as a latency histogram of a busy service
//! has):
//!
//! - `histo_ingest/{floats,histograms}_2000`: `pipeline::prepare` of a 2000-series request
//!   with one sample (float or histogram) a series, every series buffered for a rule.
//! - `histo_eval/{floats,histograms}_10_rules_10k_series`: one evaluation of a group of 10
//!   rules over 10k buffered series holding 5 minutes of 15 s samples; the histogram rules
//!   are the native forms of the float ones (`rate`, `sum by`, `histogram_quantile`,
//!   `histogram_count`, ...).
//!
//! Bytes per buffered sample are printed while setting up the evaluation bench.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use cardguard::pipeline::{self, Context};
use cardguard::rules::buffer::{Buffer, BufferLimits};
use cardguard::rules::file;
use cardguard::rules::group::{self, GroupState};
use cardguard::rules::plan::Plan;
use cardguard::rules::promql::{Histogram, HistogramSample, Sample, Span};
use cardguard::rules::tap::{encode_histogram, Tap};
use cardguard::wire::{self, Limits, OwnedSeries, Version, Writer};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;

const FLOAT_RULES: &str = r#"
groups:
  - name: floats
    rules:
      - {record: service:req:rate5m, expr: 'sum by (service) (rate(req[5m]))'}
      - {record: req:rate5m, expr: 'sum(rate(req[5m]))'}
      - {record: service:req:increase1m, expr: 'sum by (service) (increase(req[1m]))'}
      - {record: service:req:avg, expr: 'avg by (service) (rate(req[5m]))'}
      - {record: service:req:count, expr: 'count by (service) (req)'}
      - {record: service:req:irate, expr: 'sum by (service) (irate(req[5m]))'}
      - {record: pod:req:rate5m_scaled, expr: 'rate(req[5m]) * 1000'}
      - {record: service:req:delta, expr: 'sum by (service) (delta(req[5m]))'}
      - {record: service:req:max, expr: 'max by (service) (rate(req[5m]))'}
      - {record: service:req:sum, expr: 'sum by (service) (req)'}
"#;

const HISTOGRAM_RULES: &str = r#"
groups:
  - name: histograms
    rules:
      - {record: service:lat:p99_5m, expr: 'histogram_quantile(0.99, sum by (service) (rate(lat[5m])))'}
      - {record: service:lat:p50_5m, expr: 'histogram_quantile(0.5, sum by (service) (rate(lat[5m])))'}
      - {record: service:lat:rate5m, expr: 'sum by (service) (rate(lat[5m]))'}
      - {record: service:lat:count_rate5m, expr: 'histogram_count(sum by (service) (rate(lat[5m])))'}
      - {record: service:lat:avg5m, expr: 'histogram_avg(sum by (service) (rate(lat[5m])))'}
      - {record: service:lat:fraction_fast, expr: 'histogram_fraction(0, 0.1, sum by (service) (rate(lat[5m])))'}
      - {record: service:lat:increase1m, expr: 'sum by (service) (increase(lat[1m]))'}
      - {record: lat:rate5m, expr: 'sum(rate(lat[5m]))'}
      - {record: service:lat:count, expr: 'count by (service) (lat)'}
      - {record: service:lat:stddev, expr: 'histogram_stddev(sum by (service) (rate(lat[5m])))'}
"#;

const SERVICES: usize = 100;
const PODS: usize = 100;
const T0: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 15_000;

fn labels(name: &str, s: usize, p: usize) -> Vec<(String, String)> {
    vec![
        ("__name__".into(), name.into()),
        ("pod".into(), format!("pod-{p}")),
        ("service".into(), format!("svc-{s}")),
    ]
}

/// A latency histogram after `step` scrapes: 24 buckets around 1 ms–1 s at schema 3.
fn histogram(step: i64, seed: usize) -> Histogram {
    let n = (step + 1) as f64 * (1.0 + (seed % 7) as f64);
    let positive: Vec<f64> = (0..24).map(|i| n * (1 + i % 5) as f64).collect();
    Histogram {
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: n,
        count: positive.iter().sum::<f64>() + n,
        sum: n * 12.5,
        positive_spans: vec![
            Span {
                offset: -70,
                length: 12,
            },
            Span {
                offset: 3,
                length: 12,
            },
        ],
        positive,
        ..Histogram::default()
    }
}

fn body(histograms: bool, step: i64) -> Bytes {
    let mut w = Writer::new(Version::V1);
    w.reset();
    for k in 0..2000 {
        let (s, p) = (k % SERVICES, k / SERVICES);
        let t = T0 + step * STEP_MS;
        w.push_series(&if histograms {
            OwnedSeries {
                labels: labels("lat", s, p),
                samples: Vec::new(),
                histograms: vec![encode_histogram(t, &histogram(step, k)).encode_to_vec()],
            }
        } else {
            OwnedSeries {
                labels: labels("req", s, p),
                samples: vec![(1.0 + step as f64 * k as f64, t)],
                histograms: Vec::new(),
            }
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

fn bench(c: &mut Criterion) {
    let floats = file::parse("f.yml", FLOAT_RULES).expect("float rules load");
    let hists = file::parse("h.yml", HISTOGRAM_RULES).expect("histogram rules load");
    let plan = Plan::new(
        floats.iter().chain(hists.iter()),
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(30),
    );
    let limits = Limits::default();
    let buffer_limits = BufferLimits {
        max_series: 10_000_000,
        max_samples_per_series: 4096,
        max_label_bytes: usize::MAX,
    };

    let mut g = c.benchmark_group("histo_ingest");
    g.throughput(Throughput::Elements(2000));
    for (name, histograms) in [("floats_2000", false), ("histograms_2000", true)] {
        let buffer = Buffer::new();
        let tap = Tap {
            plan: &plan,
            buffer: &buffer,
            limits: buffer_limits,
            tenant: None,
        };
        let mut step = 0;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    step += 1;
                    body(histograms, step)
                },
                |body| {
                    let p = pipeline::prepare(black_box(&body), &ctx(&limits, Some(tap))).unwrap();
                    assert_eq!(p.rules.samples, 2000);
                    p
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    // 10k series of each kind, 5 minutes of 15 s samples.
    let steps = 21;
    let float_buf = Buffer::new();
    let hist_buf = Buffer::new();
    for k in 0..SERVICES * PODS {
        let (s, p) = (k % SERVICES, k / SERVICES);
        let fl = labels("req", s, p);
        let l: Vec<(&[u8], &[u8])> = fl
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let samples = (0..steps).map(|i| Sample {
            t: T0 + i * STEP_MS,
            v: 1.0 + (i as usize * k) as f64,
        });
        float_buf.append(l.into_iter(), samples, 400_000, &buffer_limits);
        let hl = labels("lat", s, p);
        let l: Vec<(&[u8], &[u8])> = hl
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let hs = (0..steps).map(|i| HistogramSample {
            t: T0 + i * STEP_MS,
            h: Arc::new(histogram(i, k)),
        });
        hist_buf.append_all(
            None,
            None,
            l.into_iter(),
            std::iter::empty(),
            hs,
            400_000,
            &buffer_limits,
        );
    }
    for (what, b) in [("floats", &float_buf), ("histograms", &hist_buf)] {
        let st = b.stats();
        eprintln!(
            "{what}: {} series, {} samples, {:.1} bytes per buffered sample",
            st.series,
            st.samples,
            st.bytes as f64 / st.samples as f64
        );
    }
    let t_eval = T0 + (steps - 1) * STEP_MS;
    let mut g = c.benchmark_group("histo_eval");
    g.sample_size(10);
    g.throughput(Throughput::Elements((SERVICES * PODS) as u64));
    for (name, groups, buf) in [
        ("floats_10_rules_10k_series", &floats, &float_buf),
        ("histograms_10_rules_10k_series", &hists, &hist_buf),
    ] {
        let mut state = GroupState::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                let e = group::evaluate(&groups[0], buf, t_eval, &mut state);
                assert!(e.failures.is_empty(), "{:?}", e.failures);
                e
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
