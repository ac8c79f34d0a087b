//! cardguard's own output queued: one rule group's results (100 series, one sample each, the
//! labels of a `service`-level recording rule) per push.
//!
//! - `own_output/memory_push`: the in-memory rule output queue (no `storage.path`), push and
//!   take back: the baseline.
//! - `own_output/disk_push`: encoded and appended to the durable queue (`storage.path`).
//! - `own_output/disk_push_peek_ack`: appended, read back and acknowledged, as the sender does
//!   when the upstream keeps up (the ack file is replaced by a rename each time).
//!
//! Disk numbers are page-cache writes (fsync runs once a second in its own task).

use std::hint::black_box;
use std::sync::Arc;

use cardguard::forward::queue::{DiskQueue, QueueMetrics, QueueOptions};
use cardguard::route::durable::{self, Kind, OwnRecord};
use cardguard::rules::output::Output;
use cardguard::wire::OwnedSeries;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SERIES: usize = 100;

fn results(t: i64) -> Vec<OwnedSeries> {
    (0..SERIES)
        .map(|i| OwnedSeries {
            labels: vec![
                ("__name__".into(), "service:http_requests:rate5m".into()),
                ("env".into(), "production".into()),
                ("service".into(), format!("service-{i:03}")),
            ],
            samples: vec![(i as f64 * 1.5, t)],
            histograms: Vec::new(),
        })
        .collect()
}

fn open(dir: &std::path::Path) -> DiskQueue {
    let m = QueueMetrics::register(&prometheus::Registry::new());
    DiskQueue::open(dir, QueueOptions::new(512 << 20), m).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("own_output");
    g.throughput(Throughput::Elements(SERIES as u64));
    let batch = results(1_700_000_000_000);

    let mem = Arc::new(Output::default());
    g.bench_function("memory_push", |b| {
        b.iter(|| {
            black_box(mem.push(batch.clone(), usize::MAX, usize::MAX));
            black_box(mem.drain_for_bench());
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir.path().join("push"));
    g.bench_function("disk_push", |b| {
        b.iter(|| {
            let r = OwnRecord {
                kind: Kind::Rules,
                tenant: None,
                series: batch.clone(),
            };
            durable::queue(&q, &r).unwrap();
        })
    });

    let q = open(&dir.path().join("ack"));
    g.bench_function("disk_push_peek_ack", |b| {
        b.iter(|| {
            let r = OwnRecord {
                kind: Kind::Rules,
                tenant: None,
                series: batch.clone(),
            };
            durable::queue(&q, &r).unwrap();
            let got = q.peek(1, usize::MAX).unwrap();
            black_box(durable::decode(&got[0].payload).unwrap());
            q.ack(got[0].next).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
