//! Relabeling on the request path: `pipeline::prepare` over a 2000-series request (5 services,
//! realistic exporter labels) with no `relabel_configs`, with 10 rules that match no series,
//! and with the same 10 rules where they rewrite 1% of the series (20 series). All three in
//! one run, so the ratios are meaningful:
//!
//! - `relabel/none`: the baseline (unchanged request, the original body goes out).
//! - `relabel/10_rules_touch_none`: the cost of evaluating 10 rules on traffic they leave
//!   alone (the request still leaves as its original body).
//! - `relabel/10_rules_touch_1pct`: 1% rewritten: those series re-encoded, the other 99%
//!   copied raw, the body compressed again.
//! - `relabel/10_rules_all_new`: touching none, but every series new to the rule set's memo
//!   (a fresh rule set per iteration): the rules plus hashing and remembering each series.
//!
//! The first two send the same request again and again, as remote write does (the same series
//! every scrape): after the first, the memo answers for every series the rules leave alone.

use std::hint::black_box;

use cardguard::config::Config;
use cardguard::demo::Fleet;
use cardguard::pipeline::{self, Context};
use cardguard::wire::{Limits, Version};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const NOW: i64 = 1_700_000_000_000;

/// Ten rules of the kinds people write; `HOT` selects 20 of the 2000 series (one instance's
/// `http_requests_total`), everything else matches nothing the fleet has.
fn rules(hot_instance: &str) -> String {
    format!(
        r#"
relabel_configs:
  - source_labels: [instance, __name__]
    regex: '{hot_instance};http_requests_total'
    target_label: hot
    replacement: "yes"
  - source_labels: [hot]
    regex: "yes"
    target_label: tier
    replacement: gold
  - source_labels: [__name__]
    regex: "debug_.*|go_gc_.*"
    action: drop
  - source_labels: [__name__]
    regex: ".+"
    action: keep
  - regex: "tmp_.*"
    action: labeldrop
  - source_labels: [service, method]
    regex: "svc-none;.*"
    target_label: x
  - source_labels: [code]
    regex: "599"
    target_label: err
    replacement: "1"
  - regex: "__meta_(.*)"
    action: labelmap
  - source_labels: [hot]
    target_label: hot_copy
  - source_labels: [job]
    target_label: job
    action: keepequal
"#
    )
}

fn bench(c: &mut Criterion) {
    let mut fleet = Fleet::new(5, 400);
    let body = fleet.scrape(NOW, 2000).remove(0);
    let limits = Limits::default();
    let touch_none = Config::from_yaml(&rules("10\\.9\\.9\\.9:9100")).unwrap();
    let touch_1pct = Config::from_yaml(&rules("10\\.0\\.0\\.0:9100")).unwrap();
    let no_rules = cardguard::relabel::RuleSet::default();
    let ctx = |relabel| Context {
        relabel,
        ..Context::new(Version::V1, Version::V1, &limits, NOW)
    };
    // Check the premise: 20 series rewritten, none dropped; nothing touched in the other.
    // Twice: the second time the memo answers for the rest (changed series are never in it).
    for _ in 0..2 {
        let p = pipeline::prepare(&body, &ctx(&touch_1pct.relabel)).unwrap();
        assert_eq!(p.relabel.rewritten_series, 20);
        assert_eq!(p.relabel.dropped_series, 0);
        let p = pipeline::prepare(&body, &ctx(&touch_none.relabel)).unwrap();
        assert!(p.passthrough && p.relabel.rewritten_series == 0);
    }

    let mut g = c.benchmark_group("relabel");
    g.throughput(Throughput::Elements(2000));
    g.bench_function("none", |b| {
        b.iter(|| pipeline::prepare(black_box(&body), &ctx(&no_rules)).unwrap())
    });
    g.bench_function("10_rules_touch_none", |b| {
        b.iter(|| pipeline::prepare(black_box(&body), &ctx(&touch_none.relabel)).unwrap())
    });
    g.bench_function("10_rules_touch_1pct", |b| {
        b.iter(|| pipeline::prepare(black_box(&body), &ctx(&touch_1pct.relabel)).unwrap())
    });
    g.bench_function("10_rules_all_new", |b| {
        b.iter_batched_ref(
            || touch_none.relabel.clone(),
            |rules| {
                let ctx = Context {
                    relabel: rules,
                    ..ctx(&no_rules)
                };
                pipeline::prepare(black_box(&body), &ctx).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
