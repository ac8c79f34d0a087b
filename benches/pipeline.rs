//! The in-process path of one request through `pipeline::prepare`, exactly as ingest runs it:
//! the unchanged fast path (v1 in, v1 out: the original body is forwarded) against the full
//! path (v1 in, v2 out: decompress, read, write every series, compress). Both in one run, so
//! the ratio is meaningful on any machine.

use std::hint::black_box;

use cardguard::demo::Fleet;
use cardguard::pipeline;
use cardguard::wire::{Limits, Version};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    // 2000 series of realistic exporter labels, one sample each: a Prometheus-sized batch.
    let mut fleet = Fleet::new(5, 400);
    let body = fleet.scrape(1_700_000_000_000, 2000).remove(0);
    let limits = Limits::default();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(fleet.len() as u64));
    g.bench_function("unchanged_v1_to_v1", |b| {
        b.iter(|| pipeline::prepare(black_box(&body), Version::V1, Version::V1, &limits).unwrap())
    });
    g.bench_function("translate_v1_to_v2", |b| {
        b.iter(|| pipeline::prepare(black_box(&body), Version::V1, Version::V2, &limits).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
