//! The load: N services × M series with the labels a real exporter sends, optionally one
//! service exploding with a unique `user_id` per series, cut into requests of 1000–2000 series
//! and encoded (remote write 1.0 or 2.0, snappy) before any clock starts.

use std::collections::BTreeMap;
use std::sync::Arc;

use cardguard::wire::testgen::{self, Rng};
use cardguard::wire::Version;

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
    /// How many labels each series has.
    pub labels: Labels,
    /// Samples per series in each request (a sender that batches several scrapes).
    pub samples_per_series: usize,
    /// Encode as remote write 2.0 (symbol table) instead of 1.0.
    pub v2: bool,
    /// Service `s` has `1 + s % 10` series instead of `series_per_service` (many small
    /// owners).
    pub small_owners: bool,
    /// Every series also carries a label `group`, `grp-NNNN` for `s % groups` (0: none).
    /// `--small-owners` runs the same load twice, owned by `service` and then by `group`:
    /// the same series over fewer owners, every request's bytes the same.
    pub groups: usize,
}

/// The label set of each series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// An exporter's 8 labels (the main phases' load).
    Exporter,
    /// 4–5: `__name__`, `instance`, `job`, `service`, and `method` on half the series.
    Few,
    /// 10–12: the exporter's 8 plus `container` and `namespace`, then `node` and `zone` on a
    /// third of the series each.
    Many,
}

impl Labels {
    pub fn name(self) -> &'static str {
        match self {
            Labels::Exporter => "8 labels",
            Labels::Few => "4–5 labels",
            Labels::Many => "10–12 labels",
        }
    }
}

impl Shape {
    pub fn distinct(&self) -> usize {
        if self.small_owners {
            (0..self.services).map(|s| self.owner_series(s)).sum()
        } else {
            self.services * self.series_per_service
        }
    }

    /// Series of service `s`.
    pub fn owner_series(&self, s: usize) -> usize {
        if self.small_owners {
            1 + s % 10
        } else {
            self.series_per_service
        }
    }

    /// (service, series index) of the `n`th normal series of a step: round-robin over the
    /// services, so a request mixes many of them.
    fn nth(&self, n: usize, small: &[(u32, u32)]) -> (usize, usize) {
        if self.small_owners {
            let (s, j) = small[n];
            (s as usize, j as usize)
        } else {
            (n % self.services, n / self.services)
        }
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
fn normal_labels(
    kind: Labels,
    service: &str,
    s: usize,
    j: usize,
    out: &mut Vec<(&'static str, String)>,
) {
    exporter_labels(service, s, j, out);
    match kind {
        Labels::Exporter => {}
        Labels::Few => {
            // A small exporter: the instance tells series of one metric apart, and half of
            // them carry a `method` too.
            let q = j / METRICS.len();
            out.clear();
            out.push(("__name__", METRICS[j % METRICS.len()].to_string()));
            out.push((
                "instance",
                format!(
                    "10.{}.{}.{}:{}",
                    s % 256,
                    q / 256 % 256,
                    q % 256,
                    8080 + q / 65536
                ),
            ));
            out.push(("job", service.to_string()));
            if q % 2 == 0 {
                out.push(("method", METHODS[(q / 2) % METHODS.len()].to_string()));
            }
            out.push(("service", service.to_string()));
        }
        Labels::Many => {
            out.push(("container", "app".to_string()));
            out.push(("namespace", format!("ns-{}", s % 7)));
            if j % 3 == 1 {
                out.push(("node", format!("node-{:03}", j % 97)));
            } else if j % 3 == 2 {
                out.push(("node", format!("node-{:03}", j % 97)));
                out.push(("zone", format!("zone-{}", j % 3)));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
}

fn exporter_labels(service: &str, s: usize, j: usize, out: &mut Vec<(&'static str, String)>) {
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

fn exploding_labels(kind: Labels, service: &str, k: usize, out: &mut Vec<(&'static str, String)>) {
    normal_labels(kind, service, 0, k % 40, out);
    // Sorted like the rest: `user_id` sorts before `zone`, which a third of the many-labels
    // series carry. Unsorted, those series missed the guard's canonical-labels path (their
    // id built label by label, their labels checked for duplicates pairwise), a cost no
    // Prometheus sender makes a proxy pay.
    out.push(("user_id", format!("u{k:09}")));
    out.sort_by(|a, b| a.0.cmp(b.0));
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    prost::encoding::encode_varint(v, out);
}

fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
}

/// Append one `TimeSeries` (field 1 of `WriteRequest`) with its samples.
fn encode_series(out: &mut Vec<u8>, labels: &[(&'static str, String)], samples: &[(f64, i64)]) {
    let label_len = |n: &str, v: &str| {
        1 + varint_len(n.len() as u64) + n.len() + 1 + varint_len(v.len() as u64) + v.len()
    };
    let sample_len = |ts: i64| 1 + 8 + 1 + varint_len(ts as u64);
    let mut ts_len: usize = samples
        .iter()
        .map(|&(_, ts)| 1 + varint_len(sample_len(ts) as u64) + sample_len(ts))
        .sum();
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
    for &(value, ts) in samples {
        out.push(0x12);
        put_varint(out, sample_len(ts) as u64);
        out.push(0x09);
        out.extend_from_slice(&value.to_bits().to_le_bytes());
        out.push(0x10);
        put_varint(out, ts as u64);
    }
}

fn http_request(body: &[u8], v2: bool) -> Vec<u8> {
    let (content_type, version) = if v2 {
        (
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            "2.0.0",
        )
    } else {
        ("application/x-protobuf", "0.1.0")
    };
    let mut r = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: cardguard-load/0\r\n\
         Content-Type: {content_type}\r\nContent-Encoding: snappy\r\n\
         X-Prometheus-Remote-Write-Version: {version}\r\nContent-Length: {}\r\n\r\n",
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
    let mut v2_series = Vec::new();
    let mut samples = Vec::with_capacity(shape.samples_per_series);
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
    let small: Vec<(u32, u32)> = if shape.small_owners {
        (0..10)
            .flat_map(|j| {
                (0..shape.services)
                    .filter(move |&s| j < shape.owner_series(s))
                    .map(move |s| (s as u32, j as u32))
            })
            .collect()
    } else {
        Vec::new()
    };
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
            v2_series.clear();
            let mut per_service = vec![0u32; shape.services];
            for _ in 0..batch {
                // Keep the exploding share on track at every point of the step.
                let explode = per_step_exploding > 0
                    && emitted_exploding < per_step_exploding
                    && (emitted_normal >= normal
                        || (emitted_exploding as f64) < (i as f64 + 1.0) * shape.explosion);
                let value = (step * 15 + (i % 7)) as f64;
                // Several scrapes of one step, 15 s / samples_per_series apart.
                let spread = 15_000 / shape.samples_per_series.max(1) as i64;
                samples.clear();
                samples.extend(
                    (0..shape.samples_per_series.max(1) as i64)
                        .map(|k| (value + k as f64, ts + k * spread)),
                );
                if explode {
                    exploding_labels(shape.labels, &services[0], exploding_next, &mut labels);
                    exploding_next += 1;
                    emitted_exploding += 1;
                    per_service[0] += 1;
                } else {
                    let (s, j) = shape.nth(emitted_normal, &small);
                    normal_labels(shape.labels, &services[s], s, j, &mut labels);
                    if shape.groups > 0 {
                        labels.push(("group", format!("grp-{:04}", s % shape.groups)));
                        labels.sort_by(|a, b| a.0.cmp(b.0));
                    }
                    emitted_normal += 1;
                    per_service[s] += 1;
                }
                if shape.v2 {
                    let l: Vec<(&str, &str)> =
                        labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
                    v2_series.push(testgen::series(&l, &samples));
                } else {
                    encode_series(&mut raw, &labels, &samples);
                }
                i += 1;
            }
            let body = if shape.v2 {
                testgen::body_in(Version::V2, std::mem::take(&mut v2_series)).to_vec()
            } else {
                enc.compress_vec(&raw).expect("snappy compress")
            };
            let per_sample = shape.samples_per_series.max(1) as u32;
            requests.push(Request {
                bytes: http_request(&body, shape.v2),
                samples: (batch * shape.samples_per_series.max(1)) as u64,
                per_service: per_service
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(s, n)| (s as u16, *n * per_sample))
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
