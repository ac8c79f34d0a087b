//! Native histograms for the end-to-end tests, independently of `cardguard::wire`: the scrape
//! side (the `io.prometheus.client` protobuf exposition Prometheus scrapes with
//! `--enable-feature=native-histograms`), the remote-write 1.0 `Histogram` (integer and
//! float), and [`Histo`], one histogram as Prometheus's query API shows it: count, sum and the
//! non-empty buckets with their bounds.
//!
//! Messages: `io/prometheus/client/metrics.proto` (client_model) and `prompb/types.proto`.
//! Both `.proto` files are proto2 with optional fields; prost encodes the proto3 way (defaults
//! left out, repeated scalars packed), which proto2 decoders read the same.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prost::Message;
use serde_json::Value;

use super::{parse_prom_float, HttpServer, Reply, Request};

/// The `Content-Type` of the protobuf exposition: length-delimited `MetricFamily` messages.
pub const PROTOBUF_EXPOSITION: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// `io.prometheus.client`, the subset a target of counters and native histograms needs.
pub mod client {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub help: String,
        /// `MetricType`: COUNTER = 0, HISTOGRAM = 4.
        #[prost(int32, tag = "3")]
        pub r#type: i32,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
    }

    pub const COUNTER: i32 = 0;
    pub const HISTOGRAM: i32 = 4;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Counter>,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Counter {
        #[prost(double, tag = "1")]
        pub value: f64,
    }

    /// A native histogram as client_golang exposes it: integer counts, buckets as spans and
    /// deltas between consecutive bucket counts. Prometheus 2.42 takes a histogram for native
    /// when it has a delta, a zero count or a zero threshold (`isNativeHistogram`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, tag = "1")]
        pub sample_count: u64,
        #[prost(double, tag = "2")]
        pub sample_sum: f64,
        #[prost(sint32, tag = "5")]
        pub schema: i32,
        #[prost(double, tag = "6")]
        pub zero_threshold: f64,
        #[prost(uint64, tag = "7")]
        pub zero_count: u64,
        #[prost(message, repeated, tag = "9")]
        pub negative_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "10")]
        pub negative_delta: Vec<i64>,
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "13")]
        pub positive_delta: Vec<i64>,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint32, tag = "2")]
        pub length: u32,
    }
}

/// `prometheus.Histogram` of remote write 1.0 (`prompb/types.proto`): integer counts as
/// deltas, float counts as they are.
pub mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, tag = "1")]
        pub count_int: u64,
        #[prost(double, tag = "2")]
        pub count_float: f64,
        #[prost(double, tag = "3")]
        pub sum: f64,
        #[prost(sint32, tag = "4")]
        pub schema: i32,
        #[prost(double, tag = "5")]
        pub zero_threshold: f64,
        #[prost(uint64, tag = "6")]
        pub zero_count_int: u64,
        #[prost(double, tag = "7")]
        pub zero_count_float: f64,
        #[prost(message, repeated, tag = "8")]
        pub negative_spans: Vec<super::client::BucketSpan>,
        #[prost(sint64, repeated, tag = "9")]
        pub negative_deltas: Vec<i64>,
        #[prost(double, repeated, tag = "10")]
        pub negative_counts: Vec<f64>,
        #[prost(message, repeated, tag = "11")]
        pub positive_spans: Vec<super::client::BucketSpan>,
        #[prost(sint64, repeated, tag = "12")]
        pub positive_deltas: Vec<i64>,
        #[prost(double, repeated, tag = "13")]
        pub positive_counts: Vec<f64>,
        #[prost(int32, tag = "14")]
        pub reset_hint: i32,
        #[prost(int64, tag = "15")]
        pub timestamp: i64,
    }
}

/// Length-delimited `MetricFamily` messages: the body of a protobuf scrape.
pub fn encode_families(families: &[client::MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        f.encode_length_delimited(&mut out).expect("encode");
    }
    out
}

/// Absolute bucket counts at consecutive indices as spans and deltas (`index -> count`,
/// ascending), the way client_golang encodes them: a new span after a gap of more than 2
/// empty buckets, shorter gaps filled with zero counts.
pub fn spans_and_deltas(buckets: &[(i32, u64)]) -> (Vec<client::BucketSpan>, Vec<i64>) {
    let mut spans: Vec<client::BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let (mut prev_idx, mut prev_count) = (0i32, 0i64);
    for (n, &(idx, count)) in buckets.iter().enumerate() {
        let gap = idx - prev_idx - 1;
        if n == 0 || gap > 2 {
            let offset = if n == 0 { idx } else { gap };
            spans.push(client::BucketSpan { offset, length: 0 });
        } else {
            for _ in 0..gap {
                deltas.push(-prev_count);
                prev_count = 0;
                spans.last_mut().unwrap().length += 1;
            }
        }
        deltas.push(count as i64 - prev_count);
        prev_count = count as i64;
        spans.last_mut().unwrap().length += 1;
        prev_idx = idx;
    }
    (spans, deltas)
}

/// A scrape target on 127.0.0.1 answering every GET of `/metrics` with `render(n)` (n = 1,
/// 2, ...) as the protobuf exposition.
pub struct ProtobufTarget {
    pub server: HttpServer,
    scrapes: Arc<AtomicU64>,
}

impl ProtobufTarget {
    pub fn start(render: Arc<dyn Fn(u64) -> Vec<client::MetricFamily> + Send + Sync>) -> Self {
        let scrapes = Arc::new(AtomicU64::new(0));
        let s2 = scrapes.clone();
        let server = HttpServer::start(Arc::new(move |req: &Request| {
            if req.method != "GET" || !req.path.starts_with("/metrics") {
                return Reply::status(404);
            }
            // Only a Prometheus asking for protobuf gets it: without the feature flag it would
            // ask for text, and the test must fail rather than scrape nothing.
            if !req.header("accept").unwrap_or("").contains("protobuf") {
                return Reply::status(406).with_body(b"this target speaks protobuf only\n");
            }
            let n = s2.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::status(200)
                .with_header("Content-Type", PROTOBUF_EXPOSITION)
                .with_body(&encode_families(&render(n)))
        }));
        ProtobufTarget { server, scrapes }
    }

    pub fn addr(&self) -> String {
        self.server.addr()
    }

    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }
}

/// One bucket: its bounds, whether each is inclusive, its count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub count: f64,
}

/// A histogram as the query API shows it: count, sum, and the buckets with a count in the
/// order of Prometheus's `AllBucketIterator` (negative buckets from the lowest value up, the
/// zero bucket, the positive buckets), plus whether it has negative and positive buckets at
/// all (quantile and fraction look at that in the zero bucket).
#[derive(Debug, Clone, PartialEq)]
pub struct Histo {
    pub count: f64,
    pub sum: f64,
    pub buckets: Vec<Bucket>,
}

impl Histo {
    /// From the `{"count", "sum", "buckets": [[boundary rule, lower, upper, count], ...]}`
    /// object of a query answer.
    pub fn from_json(j: &Value) -> Result<Histo, String> {
        let num = |v: &Value| -> Result<f64, String> {
            parse_prom_float(v.as_str().ok_or_else(|| format!("not a string: {v}"))?)
        };
        let mut buckets = Vec::new();
        if let Some(bs) = j.get("buckets").and_then(Value::as_array) {
            for b in bs {
                let b = b.as_array().ok_or("bucket not an array")?;
                if b.len() != 4 {
                    return Err(format!("bucket {b:?}"));
                }
                buckets.push(Bucket {
                    lower: num(&b[1])?,
                    upper: num(&b[2])?,
                    count: num(&b[3])?,
                });
            }
        }
        Ok(Histo {
            count: num(j.get("count").ok_or("no count")?)?,
            sum: num(j.get("sum").ok_or("no sum")?)?,
            buckets,
        })
    }

    /// From a remote-write histogram (integer or float), its empty buckets left out as the
    /// query API leaves them out.
    pub fn from_remote_write(h: &prompb::Histogram) -> Histo {
        let float = h.count_float != 0.0
            || h.zero_count_float != 0.0
            || !h.positive_counts.is_empty()
            || !h.negative_counts.is_empty();
        let expand = |spans: &[client::BucketSpan], deltas: &[i64], counts: &[f64]| {
            let mut out = Vec::new();
            let (mut idx, mut k, mut running) = (0i32, 0usize, 0i64);
            // The first offset is the first index; later ones count the empty buckets after
            // the previous span.
            for s in spans {
                idx += s.offset;
                for _ in 0..s.length {
                    let c = if float {
                        counts.get(k).copied().unwrap_or(f64::NAN)
                    } else {
                        running += deltas.get(k).copied().unwrap_or(0);
                        running as f64
                    };
                    out.push((idx, c));
                    idx += 1;
                    k += 1;
                }
            }
            out
        };
        let pos = expand(&h.positive_spans, &h.positive_deltas, &h.positive_counts);
        let neg = expand(&h.negative_spans, &h.negative_deltas, &h.negative_counts);
        let mut buckets = Vec::new();
        for &(i, c) in neg.iter().rev() {
            if c != 0.0 {
                buckets.push(Bucket {
                    lower: -bound(i, h.schema),
                    upper: -bound(i - 1, h.schema),
                    count: c,
                });
            }
        }
        let zero = if float {
            h.zero_count_float
        } else {
            h.zero_count_int as f64
        };
        if zero != 0.0 {
            buckets.push(Bucket {
                lower: -h.zero_threshold,
                upper: h.zero_threshold,
                count: zero,
            });
        }
        for &(i, c) in &pos {
            if c != 0.0 {
                buckets.push(Bucket {
                    lower: bound(i - 1, h.schema),
                    upper: bound(i, h.schema),
                    count: c,
                });
            }
        }
        Histo {
            count: if float {
                h.count_float
            } else {
                h.count_int as f64
            },
            sum: h.sum,
            buckets,
        }
    }

    /// Differences from `other` beyond `rel_tol`: count, sum, then bucket by bucket (bounds
    /// and counts).
    pub fn differences(&self, other: &Histo, rel_tol: f64) -> Vec<String> {
        let mut out = Vec::new();
        let close = |a: f64, b: f64| a == b || (a - b).abs() <= rel_tol * a.abs().max(b.abs());
        if !close(self.count, other.count) {
            out.push(format!("count {} vs {}", self.count, other.count));
        }
        if !close(self.sum, other.sum) {
            out.push(format!("sum {} vs {}", self.sum, other.sum));
        }
        if self.buckets.len() != other.buckets.len() {
            out.push(format!(
                "{} buckets vs {}",
                self.buckets.len(),
                other.buckets.len()
            ));
        }
        for (a, b) in self.buckets.iter().zip(&other.buckets) {
            if !close(a.lower, b.lower) || !close(a.upper, b.upper) || !close(a.count, b.count) {
                out.push(format!("bucket {a:?} vs {b:?}"));
            }
        }
        out
    }

    /// The largest relative difference over count, sum and bucket counts, when the layouts
    /// are the same.
    pub fn max_rel(&self, other: &Histo) -> f64 {
        let rel = |a: f64, b: f64| {
            if a == b {
                0.0
            } else {
                (a - b).abs() / a.abs().max(b.abs())
            }
        };
        let mut m = rel(self.count, other.count).max(rel(self.sum, other.sum));
        for (a, b) in self.buckets.iter().zip(&other.buckets) {
            m = m.max(rel(a.count, b.count));
        }
        m
    }
}

/// The upper bound of bucket `idx` of an exponential schema: `2^(idx / 2^schema)`, computed
/// as Prometheus's `getBound` does for schemas ≤ 0 (exact powers of two) and to within an ulp
/// for positive schemas (compared with a relative tolerance).
pub fn bound(idx: i32, schema: i32) -> f64 {
    if schema <= 0 {
        let exp = (idx as i64) << (-schema);
        return 2f64.powi(exp as i32);
    }
    2f64.powf(idx as f64 / (1u32 << schema) as f64)
}
