//! Deterministic generators of realistic remote-write payloads for benches, demos and tests
//! (not `cfg(test)`, so benches and the demo can use them; hidden from the docs).
//!
//! The shape follows what Prometheus sends for a typical HTTP service scraped with client
//! libraries: sorted labels, `__name__` first, one sample per series, histogram buckets as
//! separate `_bucket` series with an `le` label.

use super::types::{v1, v2};

/// SplitMix64: tiny, fast, and good enough to vary label values.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0; modulo bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

const SERVICES: [&str; 12] = [
    "api-gateway",
    "auth",
    "billing",
    "cart",
    "catalog",
    "checkout",
    "inventory",
    "notifications",
    "orders",
    "payments",
    "search",
    "shipping",
];
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const STATUSES: [&str; 6] = ["200", "201", "204", "404", "429", "500"];
const BUCKETS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

/// `series` series of an HTTP service fleet, one sample each at `ts_ms`: request counters,
/// latency histograms (buckets, `_sum`, `_count`) and process gauges, labels sorted by name.
pub fn realistic_v1(series_count: usize, seed: u64, ts_ms: i64) -> v1::WriteRequest {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(series_count);
    let job = "kubernetes-pods";
    while out.len() < series_count {
        let service = SERVICES[rng.below(SERVICES.len())];
        let instance = format!(
            "10.{}.{}.{}:8080",
            rng.below(4),
            rng.below(256),
            rng.below(256)
        );
        let method = METHODS[rng.below(METHODS.len())];
        let status = STATUSES[rng.below(STATUSES.len())];
        let base = (rng.below(1_000_000) + 1) as f64;
        let common = [("instance", instance.as_str()), ("job", job)];
        out.push(series(
            &[
                ("__name__", "http_requests_total"),
                common[0],
                common[1],
                ("method", method),
                ("service", service),
                ("status", status),
            ],
            &[(base, ts_ms)],
        ));
        let mut cumulative = 0.0;
        for le in BUCKETS {
            cumulative += (rng.below(100)) as f64;
            out.push(series(
                &[
                    ("__name__", "http_request_duration_seconds_bucket"),
                    common[0],
                    common[1],
                    ("le", le),
                    ("method", method),
                    ("service", service),
                ],
                &[(cumulative, ts_ms)],
            ));
        }
        for (name, value) in [
            ("http_request_duration_seconds_sum", cumulative * 0.137),
            ("http_request_duration_seconds_count", cumulative),
        ] {
            out.push(series(
                &[
                    ("__name__", name),
                    common[0],
                    common[1],
                    ("method", method),
                    ("service", service),
                ],
                &[(value, ts_ms)],
            ));
        }
        for (name, value) in [
            ("process_cpu_seconds_total", base / 1000.0),
            (
                "process_resident_memory_bytes",
                (rng.below(1 << 30) + (64 << 20)) as f64,
            ),
            ("go_goroutines", rng.below(500) as f64),
        ] {
            out.push(series(
                &[
                    ("__name__", name),
                    common[0],
                    common[1],
                    ("service", service),
                ],
                &[(value, ts_ms)],
            ));
        }
    }
    out.truncate(series_count);
    v1::WriteRequest {
        timeseries: out,
        metadata: Vec::new(),
    }
}

/// Reference v1 → v2 translation on the prost types (symbols deduplicated in first-use order,
/// `""` first; v1 request metadata is not carried). For building v2 fixtures.
pub fn v1_to_v2(req: &v1::WriteRequest) -> v2::Request {
    let mut symbols: Vec<String> = vec![String::new()];
    let mut index: std::collections::HashMap<String, u32> =
        [(String::new(), 0)].into_iter().collect();
    let mut intern = |s: &str| -> u32 {
        if let Some(&r) = index.get(s) {
            return r;
        }
        let r = symbols.len() as u32;
        symbols.push(s.to_owned());
        index.insert(s.to_owned(), r);
        r
    };
    let mut refs_of = |labels: &[v1::Label]| -> Vec<u32> {
        labels
            .iter()
            .flat_map(|l| [intern(&l.name), intern(&l.value)])
            .collect()
    };
    let timeseries = req
        .timeseries
        .iter()
        .map(|ts| v2::TimeSeries {
            labels_refs: refs_of(&ts.labels),
            samples: ts
                .samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            histograms: ts.histograms.iter().map(histogram_v1_to_v2).collect(),
            exemplars: ts
                .exemplars
                .iter()
                .map(|e| v2::Exemplar {
                    labels_refs: refs_of(&e.labels),
                    value: e.value,
                    timestamp: e.timestamp,
                })
                .collect(),
            metadata: None,
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

/// The same histogram as a v2 message (`start_timestamp` 0).
pub fn histogram_v1_to_v2(h: &v1::Histogram) -> v2::Histogram {
    let span = |s: &v1::BucketSpan| v2::BucketSpan {
        offset: s.offset,
        length: s.length,
    };
    v2::Histogram {
        count: h.count.map(|c| match c {
            v1::histogram::Count::CountInt(n) => v2::histogram::Count::CountInt(n),
            v1::histogram::Count::CountFloat(f) => v2::histogram::Count::CountFloat(f),
        }),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count.map(|c| match c {
            v1::histogram::ZeroCount::ZeroCountInt(n) => v2::histogram::ZeroCount::ZeroCountInt(n),
            v1::histogram::ZeroCount::ZeroCountFloat(f) => {
                v2::histogram::ZeroCount::ZeroCountFloat(f)
            }
        }),
        negative_spans: h.negative_spans.iter().map(span).collect(),
        negative_deltas: h.negative_deltas.clone(),
        negative_counts: h.negative_counts.clone(),
        positive_spans: h.positive_spans.iter().map(span).collect(),
        positive_deltas: h.positive_deltas.clone(),
        positive_counts: h.positive_counts.clone(),
        reset_hint: h.reset_hint,
        timestamp: h.timestamp,
        custom_values: h.custom_values.clone(),
        start_timestamp: 0,
    }
}

/// File names (under `testdata/payloads/`) of the generated fixtures and what they hold: the
/// One v1 series with `labels` in the order given (a test of unsorted input keeps them
/// unsorted) and `samples` as `(value, timestamp_ms)`: the unit tests' series builder.
pub fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(value, timestamp)| v1::Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

/// `series`, with its labels sorted as a well-behaved sender sorts them.
pub fn sorted_series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> v1::TimeSeries {
    let mut s = series(labels, samples);
    s.labels.sort_by(|a, b| a.name.cmp(&b.name));
    s
}

/// A v1 request of these series, encoded and snappy-compressed as it goes over HTTP.
pub fn body_v1(timeseries: Vec<v1::TimeSeries>) -> bytes::Bytes {
    let req = v1::WriteRequest {
        timeseries,
        ..Default::default()
    };
    compress(&prost::Message::encode_to_vec(&req))
}

/// The same series as a request in `version` (v2 with its symbol table), compressed.
pub fn body_in(version: super::Version, timeseries: Vec<v1::TimeSeries>) -> bytes::Bytes {
    let req = v1::WriteRequest {
        timeseries,
        ..Default::default()
    };
    match version {
        super::Version::V1 => compress(&prost::Message::encode_to_vec(&req)),
        super::Version::V2 => compress(&prost::Message::encode_to_vec(&v1_to_v2(&req))),
    }
}

fn compress(raw: &[u8]) -> bytes::Bytes {
    let mut out = Vec::new();
    super::snappy::compress(raw, &mut out);
    bytes::Bytes::from(out)
}

/// 2000-series payload as snappy bodies, as sent over HTTP.
pub const FIXTURES: [(&str, super::Version); 2] = [
    ("generated-2000.v1.bin", super::Version::V1),
    ("generated-2000.v2.bin", super::Version::V2),
];

/// The decoded protobuf of fixture `version`.
pub fn fixture_raw(version: super::Version) -> Vec<u8> {
    let req = realistic_v1(2000, 42, 1_700_000_000_000);
    match version {
        super::Version::V1 => prost::Message::encode_to_vec(&req),
        super::Version::V2 => prost::Message::encode_to_vec(&v1_to_v2(&req)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_path(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/payloads")
            .join(name)
    }

    /// Regenerate with `cargo test --lib regenerate_payload_fixtures -- --ignored`.
    #[test]
    #[ignore = "writes testdata/payloads/"]
    fn regenerate_payload_fixtures() {
        for (name, version) in FIXTURES {
            let mut body = Vec::new();
            super::super::snappy::compress(&fixture_raw(version), &mut body);
            std::fs::write(fixture_path(name), body).unwrap();
        }
    }

    /// The committed fixtures decode to what the generator makes (compared decoded: the
    /// compressed bytes may change with the snappy crate's version).
    #[test]
    fn payload_fixtures_are_current() {
        for (name, version) in FIXTURES {
            match std::fs::read(fixture_path(name)) {
                Ok(body) => {
                    let mut raw = Vec::new();
                    super::super::snappy::decompress(&body, 32 << 20, &mut raw).unwrap();
                    assert!(
                        raw == fixture_raw(version),
                        "{name} is stale; regenerate it"
                    );
                }
                Err(e) => eprintln!("note: {name}: {e}; skipped"),
            }
        }
    }

    #[test]
    fn realistic_payload_is_deterministic_and_sorted() {
        let a = realistic_v1(500, 7, 1_700_000_000_000);
        assert_eq!(a, realistic_v1(500, 7, 1_700_000_000_000));
        assert_eq!(a.timeseries.len(), 500);
        for ts in &a.timeseries {
            assert_eq!(ts.labels[0].name, "__name__");
            assert!(ts.labels.windows(2).all(|w| w[0].name < w[1].name));
        }
    }
}
