//! The load: N services × M series with the labels a real exporter sends, optionally one
//! service exploding with a unique `user_id` per series, cut into requests of 1000–2000 series
//! and encoded (remote write 1.0, snappy) before any clock starts.

use std::collections::BTreeMap;
use std::sync::Arc;

use cardguard::wire::testgen::Rng;

const METRICS: [&str; 10] = [
    "http_requests_total",
    "http_request_errors_total",
    "http_request_bytes_total",
    "http_response_bytes_total",
    "rpc_client_calls_total",
    "rpc_client_errors_total",
    "db_queries_total",
    "db_query_errors_total",
    "cache_hits_total",
    "cache_misses_total",
];
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub services: usize,
    pub series_per_service: usize,
    /// Fraction of each request's series that come from the exploding service's unique
    /// `user_id` series (0 = no explosion).
    pub explosion: f64,
    pub min_batch: usize,
    pub max_batch: usize,
    /// 15 s steps to pre-encode; the driver cycles through them.
    pub steps: usize,
}

impl Shape {
    pub fn distinct(&self) -> usize {
        self.services * self.series_per_service
    }
}

/// One pre-encoded request: the full HTTP/1.1 request bytes (headers and body), what it
/// carries, and per service the samples it carries (for the explosion report).
pub struct Request {
    pub bytes: Vec<u8>,
    pub samples: u64,
    pub per_service: Vec<(u16, u32)>,
}

/// Every request of every step, in send order.
pub struct Load {
    pub shape: Shape,
    pub requests: Arc<Vec<Request>>,
    /// Service names by index (the exploding one is index 0).
    pub services: Vec<String>,
    /// Distinct exploding series over all steps (each step brings new ones).
    pub exploding_distinct: usize,
    /// Number of requests in the first step (every normal series once).
    pub first_step: usize,
}

impl Load {
    pub fn samples_per_request(&self) -> f64 {
        let total: u64 = self.requests.iter().map(|r| r.samples).sum();
        total as f64 / self.requests.len().max(1) as f64
    }

    /// Per-service counts by name.
    pub fn by_name(&self, counts: &[u64]) -> BTreeMap<String, u64> {
        self.services
            .iter()
            .zip(counts)
            .map(|(s, c)| (s.clone(), *c))
            .collect()
    }
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i:03}")
}

/// One series' labels, sorted by name as Prometheus sends them.
fn normal_labels(service: &str, s: usize, j: usize, out: &mut Vec<(&'static str, String)>) {
    out.clear();
    let metric = METRICS[j % METRICS.len()];
    let method = METHODS[(j / METRICS.len()) % METHODS.len()];
    let route = (j / (METRICS.len() * METHODS.len())) % 5;
    let pod = j / (METRICS.len() * METHODS.len() * 5);
    out.push(("__name__", metric.to_string()));
    out.push(("env", "prod".to_string()));
    out.push((
        "instance",
        format!("10.{}.{}.{}:8080", s % 256, pod / 256 % 256, pod % 256),
    ));
    out.push(("job", service.to_string()));
    out.push(("method", method.to_string()));
    out.push(("pod", format!("{service}-{pod:05}")));
    out.push(("route", format!("/api/v1/r{route}")));
    out.push(("service", service.to_string()));
}

fn exploding_labels(service: &str, k: usize, out: &mut Vec<(&'static str, String)>) {
    normal_labels(service, 0, k % 40, out);
    // user_id sorts last.
    out.push(("user_id", format!("u{k:09}")));
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    prost::encoding::encode_varint(v, out);
}

fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
}

/// Append one `TimeSeries` (field 1 of `WriteRequest`) with one sample.
fn encode_series(out: &mut Vec<u8>, labels: &[(&'static str, String)], value: f64, ts: i64) {
    let label_len = |n: &str, v: &str| {
        1 + varint_len(n.len() as u64) + n.len() + 1 + varint_len(v.len() as u64) + v.len()
    };
    let sample_len = 1 + 8 + 1 + varint_len(ts as u64);
    let mut ts_len = 1 + varint_len(sample_len as u64) + sample_len;
    for (n, v) in labels {
        let l = label_len(n, v);
        ts_len += 1 + varint_len(l as u64) + l;
    }
    out.push(0x0a);
    put_varint(out, ts_len as u64);
    for (n, v) in labels {
        out.push(0x0a);
        put_varint(out, label_len(n, v) as u64);
        out.push(0x0a);
        put_varint(out, n.len() as u64);
        out.extend_from_slice(n.as_bytes());
        out.push(0x12);
        put_varint(out, v.len() as u64);
        out.extend_from_slice(v.as_bytes());
    }
    out.push(0x12);
    put_varint(out, sample_len as u64);
    out.push(0x09);
    out.extend_from_slice(&value.to_bits().to_le_bytes());
    out.push(0x10);
    put_varint(out, ts as u64);
}

fn http_request(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: cardguard-load/0\r\n\
         Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n\
         X-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Build and encode every request of `shape.steps` steps. Counters advance per step; the
/// exploding service brings fresh `user_id` values in every step.
pub fn build(shape: Shape, seed: u64) -> Load {
    let services: Vec<String> = (0..shape.services).map(service_name).collect();
    let mut rng = Rng::new(seed);
    let mut requests = Vec::new();
    let mut labels = Vec::with_capacity(12);
    let mut raw = Vec::new();
    let mut enc = snap::raw::Encoder::new();
    let base_ts: i64 = 1_700_000_000_000;
    let normal = shape.distinct();
    // Explosion fraction x of all series: x/(1−x) exploding series per normal one.
    let per_step_exploding = if shape.explosion > 0.0 {
        ((normal as f64) * shape.explosion / (1.0 - shape.explosion)).round() as usize
    } else {
        0
    };
    let mut exploding_next = 0usize;
    let mut first_step = 0;
    for step in 0..shape.steps {
        if step == 1 {
            first_step = requests.len();
        }
        let ts = base_ts + step as i64 * 15_000;
        // Series interleaved across services (as a Prometheus shard mixes its targets), the
        // exploding ones spread evenly between them.
        let total = normal + per_step_exploding;
        let mut emitted_normal = 0usize;
        let mut emitted_exploding = 0usize;
        let mut i = 0usize;
        while i < total {
            let batch = if shape.max_batch > shape.min_batch {
                shape.min_batch + rng.below(shape.max_batch - shape.min_batch + 1)
            } else {
                shape.max_batch
            }
            .min(total - i);
            raw.clear();
            let mut per_service = vec![0u32; shape.services];
            for _ in 0..batch {
                // Keep the exploding share on track at every point of the step.
                let explode = per_step_exploding > 0
                    && emitted_exploding < per_step_exploding
                    && (emitted_normal >= normal
                        || (emitted_exploding as f64) < (i as f64 + 1.0) * shape.explosion);
                let value = (step * 15 + (i % 7)) as f64;
                if explode {
                    exploding_labels(&services[0], exploding_next, &mut labels);
                    exploding_next += 1;
                    emitted_exploding += 1;
                    per_service[0] += 1;
                } else {
                    let s = emitted_normal % shape.services;
                    let j = emitted_normal / shape.services;
                    normal_labels(&services[s], s, j, &mut labels);
                    emitted_normal += 1;
                    per_service[s] += 1;
                }
                encode_series(&mut raw, &labels, value, ts);
                i += 1;
            }
            let body = enc.compress_vec(&raw).expect("snappy compress");
            requests.push(Request {
                bytes: http_request(&body),
                samples: batch as u64,
                per_service: per_service
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(s, n)| (s as u16, *n))
                    .collect(),
            });
        }
    }
    if shape.steps <= 1 {
        first_step = requests.len();
    }
    Load {
        shape,
        requests: Arc::new(requests),
        services,
        exploding_distinct: exploding_next,
        first_step,
    }
}
