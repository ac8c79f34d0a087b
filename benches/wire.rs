//! Wire benches: the zero-copy reader against prost on the same payload (the baseline runs
//! in the same process, STYLE.md habit 10), and the per-request paths of the proxy.
//!
//! Payloads: a generated 2000-series v1 request (realistic exporter labels, one sample per
//! series, what one Prometheus `max_samples_per_send` batch carries) and, if present, a
//! capture from a real Prometheus in `testdata/payloads/prometheus-capture.v1.bin` (snappy
//! body as sent, or raw protobuf).
//!
//! Run: `cargo bench --bench wire -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::Path;

use cardguard::wire::types::{v1, v2};
use cardguard::wire::{snappy, testgen, Limits, Parsed, Version, Writer};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prost::Message;

/// One payload under test: its decompressed and compressed bodies.
struct Payload {
    name: &'static str,
    version: Version,
    raw: Vec<u8>,
    compressed: Vec<u8>,
    samples: u64,
}

impl Payload {
    fn new(name: &'static str, version: Version, raw: Vec<u8>) -> Self {
        let mut compressed = Vec::new();
        snappy::compress(&raw, &mut compressed);
        let mut p = Parsed::new();
        p.parse(&raw, version, &Limits::default())
            .expect("bench payload parses");
        let c = p.counts();
        let samples = (c.samples + c.histograms + c.exemplars).max(1);
        Payload {
            name,
            version,
            raw,
            compressed,
            samples,
        }
    }
}

fn payloads() -> Vec<Payload> {
    let generated = testgen::realistic_v1(2000, 42, 1_700_000_000_000);
    let mut out = vec![
        Payload::new("generated-2000", Version::V1, generated.encode_to_vec()),
        Payload::new(
            "generated-2000-v2",
            Version::V2,
            testgen::v1_to_v2(&generated).encode_to_vec(),
        ),
    ];
    let capture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/payloads/prometheus-capture.v1.bin");
    match std::fs::read(&capture) {
        Ok(body) => {
            // Stored as the snappy body Prometheus sent, or already decompressed.
            let mut raw = Vec::new();
            if snappy::decompress(&body, 64 << 20, &mut raw).is_err() {
                raw = body;
            }
            out.push(Payload::new("prometheus-capture", Version::V1, raw));
        }
        Err(_) => eprintln!(
            "note: {} not found; benching the generated payload only",
            capture.display()
        ),
    }
    for p in &out {
        eprintln!(
            "payload {}: {} items, {} bytes decoded, {} bytes snappy",
            p.name,
            p.samples,
            p.raw.len(),
            p.compressed.len()
        );
    }
    out
}

/// Placeholder label-set hash (FxHash-style multiply-rotate over 8-byte words): the baseline
/// cost of identifying a series, until the guard picks its real hasher.
#[inline]
fn hash_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let mut word = [0u8; 8];
    word[..words.remainder().len()].copy_from_slice(words.remainder());
    (h.rotate_left(5) ^ u64::from_le_bytes(word) ^ bytes.len() as u64).wrapping_mul(K)
}

fn decode(c: &mut Criterion, payloads: &[Payload]) {
    let mut g = c.benchmark_group("decode");
    let limits = Limits::default();
    for p in payloads {
        g.throughput(Throughput::Elements(p.samples));
        g.bench_with_input(BenchmarkId::new("prost", p.name), p, |b, p| {
            match p.version {
                Version::V1 => b.iter(|| {
                    black_box(v1::WriteRequest::decode(black_box(p.raw.as_slice())).unwrap())
                }),
                Version::V2 => {
                    b.iter(|| black_box(v2::Request::decode(black_box(p.raw.as_slice())).unwrap()))
                }
            }
        });
        let mut parsed = Parsed::new();
        g.bench_with_input(BenchmarkId::new("zero_copy", p.name), p, |b, p| {
            b.iter(|| {
                parsed.parse(black_box(&p.raw), p.version, &limits).unwrap();
                black_box(parsed.len())
            })
        });
        if p.version == Version::V1 {
            // Labels not recorded (what the server does where the guard reads them first):
            // the pass that is left for the series the guard knows.
            let mut lazy = Parsed::new();
            lazy.set_lazy_labels(true);
            g.bench_with_input(BenchmarkId::new("zero_copy_lazy", p.name), p, |b, p| {
                b.iter(|| {
                    lazy.parse(black_box(&p.raw), p.version, &limits).unwrap();
                    black_box(lazy.len())
                })
            });
            // And runs guessed from the series' ends: what is left for a series the fresh
            // table knows by its bytes.
            lazy.set_guessed_runs(true);
            g.bench_with_input(BenchmarkId::new("zero_copy_guessed", p.name), p, |b, p| {
                b.iter(|| {
                    lazy.parse(black_box(&p.raw), p.version, &limits).unwrap();
                    black_box(lazy.len())
                })
            });
        }
        g.bench_with_input(BenchmarkId::new("zero_copy+hash", p.name), p, |b, p| {
            b.iter(|| {
                parsed.parse(black_box(&p.raw), p.version, &limits).unwrap();
                let mut acc = 0u64;
                for s in parsed.iter(&p.raw) {
                    let mut h = 0u64;
                    for (n, v) in s.labels() {
                        h = hash_bytes(hash_bytes(h, n), v);
                    }
                    acc ^= h;
                }
                black_box(acc)
            })
        });
    }
    g.finish();
}

fn path(c: &mut Criterion, payloads: &[Payload]) {
    let mut g = c.benchmark_group("path");
    let limits = Limits::default();
    for p in payloads {
        g.throughput(Throughput::Elements(p.samples));
        let mut body = Vec::new();
        let mut parsed = Parsed::new();
        let mut writer = Writer::new(p.version);
        writer.set_limit(limits.max_output_bytes);
        let mut out = Vec::new();
        // Decompress → parse → validate → copy every series → compress.
        g.bench_with_input(BenchmarkId::new("full", p.name), p, |b, p| {
            b.iter(|| {
                snappy::decompress(
                    black_box(&p.compressed),
                    limits.max_decoded_bytes,
                    &mut body,
                )
                .unwrap();
                parsed.parse(&body, p.version, &limits).unwrap();
                writer.begin(&parsed, &body);
                for (i, s) in parsed.iter(&body).enumerate() {
                    if s.validate(i).is_ok() {
                        writer.copy_series(&parsed, &body, i);
                    }
                }
                writer.copy_metadata(&parsed, &body);
                snappy::compress(writer.finish().unwrap(), &mut out);
                black_box(out.len())
            })
        });
        // Nothing changed: the compressed body is forwarded as it came.
        g.bench_with_input(BenchmarkId::new("unchanged", p.name), p, |b, p| {
            b.iter(|| {
                snappy::decompress(
                    black_box(&p.compressed),
                    limits.max_decoded_bytes,
                    &mut body,
                )
                .unwrap();
                parsed.parse(&body, p.version, &limits).unwrap();
                let valid = parsed
                    .iter(&body)
                    .enumerate()
                    .all(|(i, s)| s.validate(i).is_ok());
                black_box((valid, p.compressed.as_slice()))
            })
        });
        if p.version == Version::V2 {
            let mut to_v1 = Writer::new(Version::V1);
            to_v1.set_limit(limits.max_output_bytes);
            g.bench_with_input(BenchmarkId::new("v2_to_v1", p.name), p, |b, p| {
                b.iter(|| {
                    snappy::decompress(
                        black_box(&p.compressed),
                        limits.max_decoded_bytes,
                        &mut body,
                    )
                    .unwrap();
                    parsed.parse(&body, p.version, &limits).unwrap();
                    to_v1.begin(&parsed, &body);
                    for i in 0..parsed.len() {
                        to_v1.copy_series(&parsed, &body, i);
                    }
                    snappy::compress(to_v1.finish().unwrap(), &mut out);
                    black_box(out.len())
                })
            });
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let payloads = payloads();
    decode(c, &payloads);
    path(c, &payloads);
}

criterion_group!(wire, benches);
criterion_main!(wire);
