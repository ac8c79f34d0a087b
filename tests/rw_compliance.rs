//! The remote-write receiver compliance suite (`prometheus/compliance`,
//! `remotewrite/receiver`), ported: every case of the suite, named as `go test` names it,
//! at its RFC level (MUST, SHOULD, MAY), sent to an in-process cardguard in front of a v1
//! upstream and again in front of a v2 upstream (the recording `Sink`).
//!
//! Each case checks what the suite checks (status, the exact
//! `X-Prometheus-Remote-Write-*-Written` headers on 2xx, at most what was sent on 4xx, 204 for
//! the strict variants), sent as the suite sends it: snappy, a chunked body, labels in the
//! order the case lists them (Go's map order is random, so not sorted), metadata always
//! present as Go's non-nullable field. On top of the suite, every accepted case checks what
//! reached the upstream: the same samples, histograms, exemplars and metadata, created
//! timestamps kept for a v2 upstream and counted in `cardguard_translation_dropped_total`
//! for a v1 one. docs/compliance.md lists the cases with their status.
//!
//! The suite's code is Go (Apache-2.0); this is our own code after its cases.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cardguard::app::App;
use cardguard::config::{Config, UpstreamConfig};
use cardguard::ingest::ConfigSource;
use cardguard::route::Routing;
use cardguard::sink::{Sink, SinkOptions};
use cardguard::wire::types::{v1, v2};
use cardguard::wire::Version;
use prost::Message;

// ---------------------------------------------------------------------------------------
// The messages as the suite's sender writes them: Prometheus v0.306's `writev2`, whose
// TimeSeries still has `created_timestamp` as field 6 (reserved since 2.0-rc.4).

#[derive(Clone, PartialEq, prost::Message)]
struct SentRequest {
    #[prost(string, repeated, tag = "4")]
    symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    timeseries: Vec<SentSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SentSeries {
    #[prost(uint32, repeated, tag = "1")]
    labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<v2::Sample>,
    #[prost(message, repeated, tag = "3")]
    histograms: Vec<v2::Histogram>,
    #[prost(message, repeated, tag = "4")]
    exemplars: Vec<v2::Exemplar>,
    #[prost(message, optional, tag = "5")]
    metadata: Option<v2::Metadata>,
    #[prost(int64, tag = "6")]
    created_timestamp: i64,
}

// ---------------------------------------------------------------------------------------
// The suite's request options (helpers_test.go), with labels as ordered pairs.

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone, Default)]
struct SampleIn {
    labels: Labels,
    value: f64,
    offset_ms: i64,
    created_ms_ago: Option<i64>,
}

#[derive(Clone, Default)]
struct HistogramIn {
    labels: Labels,
    histogram: v2::Histogram,
    offset_ms: i64,
    created_ms_ago: Option<i64>,
}

#[derive(Clone, Default)]
struct ExemplarIn {
    labels: Labels,
    exemplar_labels: Labels,
    value: f64,
    offset_ms: i64,
}

#[derive(Clone, Default)]
struct MetadataIn {
    labels: Labels,
    metric_type: v2::MetricType,
    help: &'static str,
    unit: &'static str,
}

#[derive(Clone, Default)]
struct Opts {
    samples: Vec<SampleIn>,
    exemplars: Vec<ExemplarIn>,
    metadata: Vec<MetadataIn>,
    histograms: Vec<HistogramIn>,
    unsafe_request: bool,
}

fn sample(labels: Labels, value: f64) -> SampleIn {
    SampleIn {
        labels,
        value,
        ..Default::default()
    }
}

fn hist(labels: Labels, histogram: v2::Histogram) -> HistogramIn {
    HistogramIn {
        labels,
        histogram,
        ..Default::default()
    }
}

fn exemplar(labels: Labels, exemplar_labels: Labels, value: f64) -> ExemplarIn {
    ExemplarIn {
        labels,
        exemplar_labels,
        value,
        ..Default::default()
    }
}

fn meta(
    labels: Labels,
    metric_type: v2::MetricType,
    help: &'static str,
    unit: &'static str,
) -> MetadataIn {
    MetadataIn {
        labels,
        metric_type,
        help,
        unit,
    }
}

fn basic(name: &'static str) -> Labels {
    vec![("__name__", name)]
}

fn job_instance() -> Labels {
    vec![
        ("__name__", "up"),
        ("job", "testjob"),
        ("instance", "localhost:9090"),
    ]
}

fn name_of(l: &Labels) -> &'static str {
    l.iter()
        .find(|(n, _)| *n == "__name__")
        .map(|(_, v)| *v)
        .unwrap_or("")
}

fn same(a: &Labels, b: &Labels) -> bool {
    a.len() == b.len() && a.iter().all(|p| b.contains(p))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[derive(Default)]
struct Symbols {
    table: Vec<String>,
    index: BTreeMap<String, u32>,
}

impl Symbols {
    fn new() -> Self {
        let mut s = Symbols::default();
        s.get("");
        s
    }
    fn get(&mut self, v: &str) -> u32 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.table.len() as u32;
        self.table.push(v.to_string());
        self.index.insert(v.to_string(), i);
        i
    }
    fn refs(&mut self, labels: &Labels) -> Vec<u32> {
        labels
            .iter()
            .flat_map(|(n, v)| [self.get(n), self.get(v)])
            .collect()
    }
}

/// `generateRequest`: one series per sample and per histogram, exemplars attached to the
/// series with the same labels (one per entry, the rest on the last), leftover exemplars and
/// metadata as series of their own; metadata joins series by metric name.
fn generate(opts: &Opts) -> SentRequest {
    let now = now_ms();
    let mut sym = Symbols::new();
    let mut by_name: BTreeMap<&str, v2::Metadata> = BTreeMap::new();
    for m in &opts.metadata {
        let name = name_of(&m.labels);
        if !name.is_empty() || opts.unsafe_request {
            by_name.insert(
                name,
                v2::Metadata {
                    r#type: m.metric_type as i32,
                    help_ref: sym.get(m.help),
                    unit_ref: sym.get(m.unit),
                },
            );
        }
    }
    let mut used = vec![false; opts.exemplars.len()];
    let mut series = Vec::new();
    let mut attach = |labels: &Labels, last: bool, sym: &mut Symbols| {
        let mut out = Vec::new();
        for (i, e) in opts.exemplars.iter().enumerate() {
            if used[i] || !same(labels, &e.labels) {
                continue;
            }
            out.push(v2::Exemplar {
                labels_refs: sym.refs(&e.exemplar_labels),
                value: e.value,
                timestamp: now + e.offset_ms,
            });
            used[i] = true;
            if !last {
                break;
            }
        }
        out
    };
    let metadata_for = |labels: &Labels| {
        let name = name_of(labels);
        if name.is_empty() && !opts.unsafe_request {
            return Some(v2::Metadata::default());
        }
        Some(by_name.get(name).copied().unwrap_or_default())
    };
    for (i, s) in opts.samples.iter().enumerate() {
        let last = !opts.samples[i + 1..]
            .iter()
            .any(|x| same(&x.labels, &s.labels));
        let exemplars = attach(&s.labels, last, &mut sym);
        series.push(SentSeries {
            labels_refs: sym.refs(&s.labels),
            samples: vec![v2::Sample {
                value: s.value,
                timestamp: now + s.offset_ms,
                start_timestamp: 0,
            }],
            exemplars,
            created_timestamp: s.created_ms_ago.map_or(0, |ago| now - ago),
            metadata: metadata_for(&s.labels),
            ..Default::default()
        });
    }
    for (i, h) in opts.histograms.iter().enumerate() {
        let last = !opts.histograms[i + 1..]
            .iter()
            .any(|x| same(&x.labels, &h.labels));
        let exemplars = attach(&h.labels, last, &mut sym);
        let mut histogram = h.histogram.clone();
        histogram.timestamp = now + h.offset_ms;
        series.push(SentSeries {
            labels_refs: sym.refs(&h.labels),
            histograms: vec![histogram],
            exemplars,
            created_timestamp: h.created_ms_ago.map_or(0, |ago| now - ago),
            metadata: metadata_for(&h.labels),
            ..Default::default()
        });
    }
    for (i, e) in opts.exemplars.iter().enumerate() {
        let matched = opts.samples.iter().any(|s| same(&s.labels, &e.labels))
            || opts.histograms.iter().any(|h| same(&h.labels, &e.labels));
        if used[i] || matched {
            continue;
        }
        series.push(SentSeries {
            labels_refs: sym.refs(&e.labels),
            exemplars: vec![v2::Exemplar {
                labels_refs: sym.refs(&e.exemplar_labels),
                value: e.value,
                timestamp: now + e.offset_ms,
            }],
            metadata: Some(v2::Metadata::default()),
            ..Default::default()
        });
    }
    for m in &opts.metadata {
        let name = name_of(&m.labels);
        let matched = opts.samples.iter().any(|s| name_of(&s.labels) == name)
            || opts.histograms.iter().any(|h| name_of(&h.labels) == name);
        if name.is_empty() || matched {
            continue;
        }
        series.push(SentSeries {
            labels_refs: sym.refs(&m.labels),
            metadata: Some(v2::Metadata {
                r#type: m.metric_type as i32,
                help_ref: sym.get(m.help),
                unit_ref: sym.get(m.unit),
            }),
            ..Default::default()
        });
    }
    SentRequest {
        symbols: sym.table,
        timeseries: series,
    }
}

/// `histogram(sum, positive, negative, zero, custom, badCount)` of helpers_test.go.
fn suite_histogram(
    sum: f64,
    positive: bool,
    negative: bool,
    zero: bool,
    custom: bool,
    bad_count: bool,
) -> v2::Histogram {
    let span = |offset, length| v2::BucketSpan { offset, length };
    let mut h = v2::Histogram {
        sum,
        ..Default::default()
    };
    let mut count = 0;
    if positive {
        h.positive_spans = vec![span(0, 3), span(2, 2)];
        h.positive_deltas = vec![1, 2, 1, 3, 1];
        count += 23;
    }
    if negative {
        h.negative_spans = vec![span(0, 2)];
        h.negative_deltas = vec![1, 1];
        count += 3;
    }
    if zero {
        h.zero_count = Some(v2::histogram::ZeroCount::ZeroCountInt(1));
        count += 1;
    }
    if custom {
        h.schema = -53;
        h.custom_values = vec![0.1, 0.5, 1.0, 2.5, 5.0, 10.0];
        h.positive_spans = vec![span(0, 6)];
        h.positive_deltas = vec![2, 1, 2, 3, -1, -2];
        count = 30;
    }
    if bad_count {
        count = 99;
    }
    h.count = Some(v2::histogram::Count::CountInt(count));
    h
}

// ---------------------------------------------------------------------------------------
// Cases.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Must,
    Should,
    May,
}

#[derive(Clone)]
enum Body {
    V2(Opts),
    /// `generateRW1Request`: a v1 request of samples, no version header.
    V1(Vec<SampleIn>),
}

#[derive(Clone, Copy, Default, Debug)]
struct Expect {
    samples: u64,
    exemplars: u64,
    histograms: u64,
    success: bool,
    /// Only 204 will do (the "returns 204" variants).
    strict: bool,
    exact: Option<u16>,
}

#[derive(Clone)]
struct Case {
    /// As `go test` names it (spaces as `_`, an empty name as `#00`).
    name: String,
    level: Level,
    body: Body,
    /// Header replaced after generation (TestBadContentTypes, TestBadContentEncodings).
    header: Option<(&'static str, &'static str)>,
    /// First body byte overwritten (the corrupt-body cases).
    corrupt: Option<u8>,
    expect: Expect,
}

fn go_name(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| {
            if p.is_empty() {
                "#00".into()
            } else {
                p.replace(' ', "_")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn plain(name: String, level: Level, body: Body, expect: Expect) -> Case {
    Case {
        name,
        level,
        body,
        header: None,
        corrupt: None,
        expect,
    }
}

/// `runComplianceTest`: a strict SHOULD variant when success is expected, and the MUST one.
fn compliance(out: &mut Vec<Case>, path: &[&str], opts: Opts, expect: Expect, success: bool) {
    let (parent, name) = path.split_at(path.len() - 1);
    if success {
        let strict = format!("{} returns 204", name[0]);
        let mut p = parent.to_vec();
        p.push(&strict);
        out.push(plain(
            go_name(&p),
            Level::Should,
            Body::V2(opts.clone()),
            Expect {
                success: true,
                strict: true,
                ..expect
            },
        ));
    }
    out.push(plain(
        go_name(path),
        Level::Must,
        Body::V2(opts),
        Expect { success, ..expect },
    ));
}

fn counts(samples: u64, exemplars: u64, histograms: u64) -> Expect {
    Expect {
        samples,
        exemplars,
        histograms,
        ..Expect::default()
    }
}

const VALUES: [(&str, f64); 5] = [
    ("1.0", 1.0),
    ("StaleNaN", f64::from_bits(0x7ff0_0000_0000_0002)),
    ("NaN", f64::from_bits(0x7ff8_0000_0000_0001)),
    ("Inf", f64::INFINITY),
    ("-Inf", f64::NEG_INFINITY),
];

fn request_cases(out: &mut Vec<Case>) {
    let up = || {
        Body::V2(Opts {
            samples: vec![sample(basic("up"), 1.0)],
            ..Default::default()
        })
    };
    let refused = Expect {
        exact: Some(415),
        ..Expect::default()
    };
    for ct in ["application/json", "image/png"] {
        out.push(Case {
            header: Some(("content-type", ct)),
            corrupt: Some(b'0'),
            ..plain(
                go_name(&["TestBadContentTypes", &ct.replace('/', "_")]),
                Level::Must,
                up(),
                refused,
            )
        });
    }
    for enc in ["gzip", "deflate"] {
        out.push(Case {
            header: Some(("content-encoding", enc)),
            corrupt: Some(b'0'),
            ..plain(
                go_name(&["TestBadContentEncodings", enc]),
                Level::Must,
                up(),
                refused,
            )
        });
    }
    out.push(Case {
        corrupt: Some(b'0'),
        ..plain(
            "TestCorruptRequestBody".into(),
            Level::Must,
            up(),
            Expect::default(),
        )
    });
}

fn metric_cases(out: &mut Vec<Case>) {
    for (k, v) in VALUES {
        let cases: [(&str, Labels, bool); 7] = [
            ("simple metric", basic("up"), true),
            ("simple metric with multiple labels", job_instance(), true),
            (
                "simple metric with newlines",
                vec![
                    ("__name__", "up"),
                    ("job", "test\njob\n"),
                    ("instance", "localhost:9090"),
                ],
                true,
            ),
            (
                "simple metric with dots",
                vec![
                    ("__name__", "resource.cpu.usage"),
                    ("job.name", "testjob"),
                    ("instance.name", "localhost:9090"),
                ],
                true,
            ),
            (
                "simple metric with spaces",
                vec![
                    ("__name__", "resource cpu usage"),
                    ("job name", "testjob"),
                    ("instance name", "localhost:9090"),
                ],
                true,
            ),
            (
                "simple metric without name label",
                vec![("job", "testjob"), ("instance", "localhost:9090")],
                false,
            ),
            ("empty metric", vec![], false),
        ];
        for (name, labels, success) in cases {
            let opts = Opts {
                samples: vec![sample(labels, v)],
                ..Default::default()
            };
            compliance(
                out,
                &["TestSingleMetric", k, name],
                opts,
                counts(1, 0, 0),
                success,
            );
        }
    }
    let created = Opts {
        samples: vec![SampleIn {
            created_ms_ago: Some(3_600_000),
            ..sample(
                vec![("__name__", "http_requests_total"), ("job", "api")],
                100.0,
            )
        }],
        ..Default::default()
    };
    compliance(
        out,
        &["TestCounterWithCreatedTimestamp", ""],
        created,
        counts(1, 0, 0),
        true,
    );
    for (k, v) in VALUES {
        let up = |name: Option<&'static str>, instance: &'static str| {
            let mut l: Labels = vec![("job", "testjob"), ("instance", instance)];
            if let Some(n) = name {
                l.insert(0, ("__name__", n));
            }
            sample(l, v)
        };
        let cases = [
            (
                "multiple metrics",
                vec![
                    up(Some("up"), "localhost:9090"),
                    up(Some("up"), "localhost:9091"),
                    up(Some("up"), "localhost:9092"),
                    up(Some("up"), "localhost:9093"),
                ],
                true,
                4,
            ),
            (
                "multiple metrics, without name label",
                vec![
                    up(None, "localhost:9090"),
                    up(None, "localhost:9091"),
                    up(None, "localhost:9092"),
                    up(None, "localhost:9093"),
                ],
                false,
                0,
            ),
            (
                "multiple metrics, 1 without name label",
                vec![
                    up(None, "localhost:9090"),
                    up(Some("up"), "localhost:9091"),
                    up(Some("up"), "localhost:9092"),
                    up(Some("up"), "localhost:9093"),
                ],
                false,
                3,
            ),
        ];
        for (name, samples, success, valid) in cases {
            let opts = Opts {
                samples,
                ..Default::default()
            };
            compliance(
                out,
                &["TestMultipleMetrics", k, name],
                opts,
                counts(valid, 0, 0),
                success,
            );
        }
    }
}

fn rw1_cases(out: &mut Vec<Case>) {
    out.push(plain(
        "TestRW1BasicCompatibility".into(),
        Level::May,
        Body::V1(vec![
            sample(job_instance(), 1.0),
            sample(basic("http_requests_total"), 100.0),
        ]),
        Expect {
            success: true,
            ..Expect::default()
        },
    ));
    out.push(Case {
        corrupt: Some(0xff),
        ..plain(
            "TestRW1ErrorHandling".into(),
            Level::May,
            Body::V1(vec![sample(basic("error_test"), 1.0)]),
            Expect::default(),
        )
    });
}

fn with_exemplar(labels: Labels, exemplar_labels: Labels, value: f64) -> Opts {
    Opts {
        samples: vec![sample(labels.clone(), value)],
        exemplars: vec![exemplar(labels, exemplar_labels, value)],
        ..Default::default()
    }
}

fn exemplar_cases(out: &mut Vec<Case>) {
    let cases: [(&str, Labels, Labels, f64); 7] = [
        (
            "basic_exemplar",
            vec![("__name__", "http_requests_total"), ("job", "api")],
            vec![("trace_id", "abc123def456")],
            1.0,
        ),
        (
            "exemplar_with_span_id",
            vec![("__name__", "request_duration_seconds"), ("method", "GET")],
            vec![("trace_id", "xyz789"), ("span_id", "span123")],
            0.125,
        ),
        (
            "exemplar_without_trace_id",
            vec![("__name__", "cpu_usage"), ("instance", "host1")],
            vec![("user_id", "user123")],
            0.85,
        ),
        (
            "exemplar_with_multiple_labels",
            vec![("__name__", "request_latency"), ("service", "auth")],
            vec![
                ("trace_id", "trace456"),
                ("user", "admin"),
                ("endpoint", "/login"),
            ],
            0.05,
        ),
        ("exemplar_no_labels", basic("simple_counter"), vec![], 1.0),
        (
            "exemplar_with_special_chars",
            basic("test_metric"),
            vec![("trace_id", "trace-with-dashes_and_underscores.123")],
            42.0,
        ),
        (
            "exemplar_with_unicode",
            vec![("__name__", "unicode_test"), ("region", "🌍")],
            vec![("trace_id", "unicode_trace_测试")],
            100.0,
        ),
    ];
    for (name, labels, ex, value) in cases {
        let opts = with_exemplar(labels, ex, value);
        compliance(out, &["TestExemplars", name], opts, counts(1, 1, 0), true);
    }
    let labels = vec![("__name__", "http_requests_total"), ("job", "api")];
    let mut opts = with_exemplar(
        labels,
        vec![("trace_id", "abc123"), ("span_id", "span456")],
        250.0,
    );
    opts.samples[0].created_ms_ago = Some(2 * 3_600_000);
    compliance(
        out,
        &["TestExemplarWithCreatedTimestamp", ""],
        opts,
        counts(1, 1, 0),
        true,
    );

    let three = [
        (
            vec![("__name__", "request_duration"), ("method", "GET")],
            vec![("trace_id", "trace1"), ("span_id", "span1")],
            0.1,
        ),
        (
            vec![("__name__", "request_duration"), ("method", "POST")],
            vec![("trace_id", "trace2"), ("span_id", "span2")],
            0.25,
        ),
        (
            vec![("__name__", "error_count"), ("service", "payment")],
            vec![("trace_id", "trace3"), ("user", "test_user")],
            1.0,
        ),
    ];
    let opts = Opts {
        samples: three
            .iter()
            .map(|(l, _, v)| sample(l.clone(), *v))
            .collect(),
        exemplars: three
            .iter()
            .map(|(l, e, v)| exemplar(l.clone(), e.clone(), *v))
            .collect(),
        ..Default::default()
    };
    compliance(
        out,
        &["TestMultipleExemplars", ""],
        opts,
        counts(3, 3, 0),
        true,
    );

    let timed = [
        (-3_600_000, "old_trace", 0.05),
        (-60_000, "recent_trace", 0.15),
        (0, "current_trace", 0.08),
    ];
    let opts = Opts {
        samples: timed
            .iter()
            .map(|(off, _, v)| SampleIn {
                offset_ms: *off,
                ..sample(basic("latency_hist"), *v)
            })
            .collect(),
        exemplars: timed
            .iter()
            .map(|(off, t, v)| ExemplarIn {
                offset_ms: *off,
                ..exemplar(basic("latency_hist"), vec![("trace_id", t)], *v)
            })
            .collect(),
        ..Default::default()
    };
    compliance(
        out,
        &["TestExemplarTimestamps", ""],
        opts,
        counts(3, 3, 0),
        true,
    );

    let validation: [(&str, Labels, bool); 3] = [
        ("exemplar_without_name_label", vec![("job", "test")], false),
        ("exemplar_with_empty_name", vec![("__name__", "")], false),
        ("exemplar_with_valid_name", basic("valid_metric"), true),
    ];
    for (name, labels, success) in validation {
        out.push(plain(
            go_name(&["TestExemplarValidation", name]),
            Level::Should,
            Body::V2(with_exemplar(labels, vec![("trace_id", "test_trace")], 1.0)),
            Expect {
                success,
                ..counts(1, 1, 0)
            },
        ));
    }

    let special = [
        ("zero_value", 0.0),
        ("negative_value", -123.456),
        ("large_value", 1e10),
        ("small_value", 1e-10),
        ("nan_value", f64::from_bits(0x7ff8_0000_0000_0001)),
        ("inf_value", f64::INFINITY),
        ("-inf_value", f64::NEG_INFINITY),
    ];
    for (name, v) in special {
        let opts = with_exemplar(
            basic("test_metric"),
            vec![("trace_id", "special_value_trace")],
            v,
        );
        compliance(
            out,
            &["TestExemplarSpecialValues", name],
            opts,
            counts(1, 1, 0),
            true,
        );
    }
}

fn histogram_cases(out: &mut Vec<Case>) {
    let cases: [(&str, Labels, [bool; 5], bool); 6] = [
        (
            "basic_histogram",
            basic("test_histogram"),
            [true, true, true, false, false],
            true,
        ),
        (
            "custom_buckets_histogram",
            basic("test_histogram"),
            [true, false, false, true, false],
            true,
        ),
        (
            "positive_only_histogram",
            vec![("__name__", "test_histogram"), ("job", "test")],
            [true, false, true, false, false],
            true,
        ),
        (
            "negative_only_histogram",
            vec![("__name__", "test_histogram"), ("instance", "localhost")],
            [false, true, false, false, false],
            true,
        ),
        (
            "minimal_histogram",
            basic("minimal_hist"),
            [false, false, true, false, false],
            true,
        ),
        (
            "bad_count_histogram",
            basic("minimal_hist"),
            [true, false, false, false, true],
            false,
        ),
    ];
    for (name, labels, [p, n, z, c, bad], success) in cases {
        let opts = Opts {
            histograms: vec![hist(labels, suite_histogram(1.0, p, n, z, c, bad))],
            ..Default::default()
        };
        compliance(
            out,
            &["TestHistograms", name],
            opts,
            counts(0, 0, 1),
            success,
        );
    }
    let api = vec![("__name__", "request_duration_seconds"), ("job", "api")];
    let opts = Opts {
        histograms: vec![HistogramIn {
            created_ms_ago: Some(30 * 60_000),
            ..hist(
                api.clone(),
                suite_histogram(1.5, true, true, true, false, false),
            )
        }],
        ..Default::default()
    };
    compliance(
        out,
        &["TestHistogramWithCreatedTimestamp", ""],
        opts,
        counts(0, 0, 1),
        true,
    );
    let opts = Opts {
        histograms: vec![
            hist(
                vec![("__name__", "hist1"), ("job", "test")],
                suite_histogram(10.5, true, false, true, false, false),
            ),
            hist(
                vec![("__name__", "hist2"), ("job", "test")],
                suite_histogram(5.2, false, true, false, false, false),
            ),
        ],
        ..Default::default()
    };
    compliance(
        out,
        &["TestMultipleHistograms", ""],
        opts,
        counts(0, 0, 2),
        true,
    );
    let opts = Opts {
        histograms: vec![hist(
            basic("empty_hist"),
            suite_histogram(0.0, false, false, false, false, false),
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestEmptyHistogram", ""],
        opts,
        counts(0, 0, 1),
        true,
    );
    let opts = Opts {
        histograms: vec![hist(
            api.clone(),
            suite_histogram(2.5, true, true, true, false, false),
        )],
        metadata: vec![meta(
            basic("request_duration_seconds"),
            v2::MetricType::Histogram,
            "HTTP request duration in seconds",
            "seconds",
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestHistogramWithMetadata", ""],
        opts,
        counts(0, 0, 1),
        true,
    );
    let get = vec![
        ("__name__", "http_request_duration_seconds"),
        ("method", "GET"),
    ];
    let opts = Opts {
        histograms: vec![hist(
            get.clone(),
            suite_histogram(1.23, true, false, true, false, false),
        )],
        exemplars: vec![exemplar(
            get,
            vec![("trace_id", "abc123def456"), ("span_id", "span789")],
            1.23,
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestHistogramWithExemplar", ""],
        opts,
        counts(0, 1, 1),
        true,
    );
    let upload = vec![("__name__", "response_size_bytes"), ("service", "upload")];
    let opts = Opts {
        histograms: vec![hist(
            upload.clone(),
            suite_histogram(10485760.0, true, true, true, false, false),
        )],
        metadata: vec![meta(
            basic("response_size_bytes"),
            v2::MetricType::Histogram,
            "HTTP response size in bytes",
            "bytes",
        )],
        exemplars: vec![exemplar(
            upload,
            vec![("trace_id", "large_upload_trace"), ("user_id", "user456")],
            10485760.0,
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestHistogramWithMetadataAndExemplar", ""],
        opts,
        counts(0, 1, 1),
        true,
    );
    let opts = Opts {
        histograms: vec![
            hist(
                vec![("__name__", "cpu_usage_histogram"), ("instance", "server1")],
                suite_histogram(0.75, true, false, true, false, false),
            ),
            hist(
                vec![
                    ("__name__", "memory_usage_histogram"),
                    ("instance", "server1"),
                ],
                suite_histogram(8589934592.0, true, true, false, false, false),
            ),
        ],
        metadata: vec![
            meta(
                basic("cpu_usage_histogram"),
                v2::MetricType::Histogram,
                "CPU usage distribution",
                "ratio",
            ),
            meta(
                basic("memory_usage_histogram"),
                v2::MetricType::Histogram,
                "Memory usage distribution",
                "bytes",
            ),
        ],
        ..Default::default()
    };
    compliance(
        out,
        &["TestMultipleHistogramsWithMetadata", ""],
        opts,
        counts(0, 0, 2),
        true,
    );
}

fn metadata_cases(out: &mut Vec<Case>) {
    use v2::MetricType as T;
    let cases: [(&str, &'static str, T, &'static str, &'static str, Labels); 10] = [
        (
            "counter_metadata",
            "http_requests_total",
            T::Counter,
            "Total number of HTTP requests",
            "requests",
            vec![],
        ),
        (
            "gauge_metadata",
            "cpu_usage_percent",
            T::Gauge,
            "Current CPU usage percentage",
            "percent",
            vec![],
        ),
        (
            "histogram_metadata",
            "request_duration_seconds",
            T::Histogram,
            "Request duration in seconds",
            "seconds",
            vec![],
        ),
        (
            "metadata_no_help_no_unit",
            "simple_counter",
            T::Counter,
            "",
            "",
            vec![],
        ),
        (
            "metadata_with_special_chars",
            "test_metric",
            T::Gauge,
            "Test metric with\nnewlines and \"quotes\"",
            "bytes/sec",
            vec![("job", "test")],
        ),
        (
            "unspecified_metadata_type",
            "unknown_metric",
            T::Unspecified,
            "Unknown metric type",
            "",
            vec![],
        ),
        (
            "info_metadata_type",
            "build_info",
            T::Info,
            "Build information",
            "",
            vec![],
        ),
        (
            "stateset_metadata_type",
            "node_state",
            T::Stateset,
            "Node state information",
            "",
            vec![],
        ),
        (
            "summary_metadata_type",
            "request_latency_summary",
            T::Summary,
            "Request latency summary",
            "seconds",
            vec![],
        ),
        (
            "gauge_histogram_metadata_type",
            "temperature_histogram",
            T::Gaugehistogram,
            "Temperature distribution gauge histogram",
            "celsius",
            vec![],
        ),
    ];
    for (name, metric, t, help, unit, extra) in cases {
        let mut labels = basic(metric);
        labels.extend(extra);
        let mut opts = Opts {
            metadata: vec![meta(labels.clone(), t, help, unit)],
            ..Default::default()
        };
        let expect = if t == T::Histogram {
            opts.histograms = vec![hist(
                labels,
                suite_histogram(1.0, true, true, true, false, false),
            )];
            counts(0, 0, 1)
        } else {
            opts.samples = vec![sample(labels, 1.0)];
            counts(1, 0, 0)
        };
        compliance(out, &["TestMetadata", name], opts, expect, true);
    }
    let counter = vec![("__name__", "http_requests_total"), ("job", "api")];
    let opts = Opts {
        samples: vec![SampleIn {
            created_ms_ago: Some(3_600_000),
            ..sample(counter, 150.0)
        }],
        metadata: vec![meta(
            basic("http_requests_total"),
            T::Counter,
            "Total HTTP requests",
            "requests",
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestCounterMetadataWithCreatedTimestamp", ""],
        opts,
        counts(1, 0, 0),
        true,
    );
    let opts = Opts {
        samples: vec![sample(
            vec![("__name__", "http_requests_total"), ("job", "test")],
            42.0,
        )],
        metadata: vec![meta(
            basic("http_requests_total"),
            T::Counter,
            "Total HTTP requests",
            "requests",
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestMetadataWithSamples", ""],
        opts,
        counts(1, 0, 0),
        true,
    );
    let disk = vec![("__name__", "disk_usage"), ("device", "sda1")];
    let opts = Opts {
        samples: vec![
            sample(basic("cpu_usage"), 85.5),
            sample(basic("memory_usage"), 4096000000.0),
            sample(disk.clone(), 75.2),
        ],
        metadata: vec![
            meta(
                basic("cpu_usage"),
                T::Gauge,
                "CPU usage percentage",
                "percent",
            ),
            meta(
                basic("memory_usage"),
                T::Gauge,
                "Memory usage in bytes",
                "bytes",
            ),
            meta(disk, T::Gauge, "Disk usage percentage", "percent"),
        ],
        ..Default::default()
    };
    compliance(
        out,
        &["TestMultipleMetadata", ""],
        opts,
        counts(3, 0, 0),
        true,
    );
    let complex = vec![
        ("__name__", "http_request_duration_seconds"),
        ("job", "api-server"),
        ("instance", "localhost:8080"),
        ("method", "GET"),
        ("status", "200"),
        ("endpoint", "/api/v1/users"),
    ];
    let opts = Opts {
        histograms: vec![hist(
            complex.clone(),
            suite_histogram(0.250, true, true, true, false, false),
        )],
        metadata: vec![meta(
            complex,
            T::Histogram,
            "HTTP request duration in seconds",
            "seconds",
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestMetadataWithComplexLabels", ""],
        opts,
        counts(0, 0, 1),
        true,
    );
    let validation: [(&str, Labels, T, bool, bool); 3] = [
        (
            "metadata_without_name_label",
            vec![("job", "test")],
            T::Counter,
            false,
            false,
        ),
        (
            "metadata_with_empty_name",
            vec![("__name__", "")],
            T::Gauge,
            false,
            true,
        ),
        (
            "metadata_with_valid_name",
            basic("valid_metric_name"),
            T::Counter,
            true,
            false,
        ),
    ];
    for (name, labels, t, success, unsafe_request) in validation {
        let opts = Opts {
            samples: vec![sample(labels.clone(), 1.0)],
            metadata: vec![meta(labels, t, "Test help", "unit")],
            unsafe_request,
            ..Default::default()
        };
        out.push(plain(
            go_name(&["TestMetadataValidation", name]),
            Level::Should,
            Body::V2(opts),
            Expect {
                success,
                ..counts(1, 0, 0)
            },
        ));
    }
}

fn combined_cases(out: &mut Vec<Case>) {
    use v2::MetricType as T;
    let post = vec![
        ("__name__", "http_requests_total"),
        ("job", "api"),
        ("method", "POST"),
    ];
    let opts = Opts {
        samples: vec![sample(post.clone(), 1.0)],
        metadata: vec![meta(
            post.clone(),
            T::Counter,
            "Total number of HTTP requests",
            "requests",
        )],
        exemplars: vec![exemplar(
            post,
            vec![("trace_id", "request_trace_123"), ("user_id", "user789")],
            1.0,
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestSamplesWithMetadataAndExemplars", ""],
        opts,
        counts(1, 1, 0),
        true,
    );
    let auth = vec![
        ("__name__", "request_duration_seconds"),
        ("service", "auth"),
    ];
    let opts = Opts {
        histograms: vec![hist(
            auth.clone(),
            suite_histogram(0.456, true, true, true, false, false),
        )],
        metadata: vec![meta(
            basic("request_duration_seconds"),
            T::Histogram,
            "HTTP request duration distribution",
            "seconds",
        )],
        exemplars: vec![exemplar(
            auth,
            vec![("trace_id", "slow_request_trace"), ("endpoint", "/login")],
            0.456,
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestHistogramsWithMetadataAndExemplars", ""],
        opts,
        counts(0, 1, 1),
        true,
    );
    let cpu = vec![("__name__", "cpu_usage"), ("instance", "server1")];
    let opts = Opts {
        samples: vec![
            sample(cpu.clone(), 0.85),
            sample(
                vec![("__name__", "memory_usage"), ("instance", "server1")],
                8589934592.0,
            ),
        ],
        metadata: vec![
            meta(basic("cpu_usage"), T::Gauge, "CPU usage ratio", "ratio"),
            meta(
                basic("memory_usage"),
                T::Gauge,
                "Memory usage in bytes",
                "bytes",
            ),
        ],
        exemplars: vec![exemplar(
            cpu,
            vec![("trace_id", "high_cpu_trace"), ("process", "worker")],
            0.85,
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestComplexSamplesRequest", ""],
        opts,
        counts(2, 1, 0),
        true,
    );
    let users = vec![
        ("__name__", "response_time_hist"),
        ("endpoint", "/api/v1/users"),
    ];
    let opts = Opts {
        histograms: vec![
            hist(
                users.clone(),
                suite_histogram(0.125, true, false, true, false, false),
            ),
            hist(
                vec![("__name__", "request_size_hist"), ("method", "POST")],
                suite_histogram(1024.0, false, true, true, false, false),
            ),
        ],
        metadata: vec![
            meta(
                basic("response_time_hist"),
                T::Histogram,
                "Response time distribution",
                "seconds",
            ),
            meta(
                basic("request_size_hist"),
                T::Histogram,
                "Request size distribution",
                "bytes",
            ),
        ],
        exemplars: vec![exemplar(
            users,
            vec![("trace_id", "fast_response"), ("user", "premium")],
            0.125,
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestComplexHistogramsRequest", ""],
        opts,
        counts(0, 1, 2),
        true,
    );
    let ok = vec![("__name__", "http_requests_total"), ("status", "200")];
    let opts = Opts {
        samples: vec![
            sample(ok.clone(), 1000.0),
            sample(
                vec![
                    ("__name__", "temperature_celsius"),
                    ("location", "datacenter1"),
                ],
                23.5,
            ),
        ],
        metadata: vec![
            meta(
                basic("http_requests_total"),
                T::Counter,
                "Total HTTP requests",
                "requests",
            ),
            meta(
                basic("temperature_celsius"),
                T::Gauge,
                "Temperature in Celsius",
                "celsius",
            ),
        ],
        exemplars: vec![exemplar(
            ok,
            vec![("trace_id", "successful_request")],
            1000.0,
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestMultipleMetricFamiliesSamples", ""],
        opts,
        counts(2, 1, 0),
        true,
    );
    let handler = vec![
        ("__name__", "request_duration_seconds"),
        ("handler", "/metrics"),
    ];
    let opts = Opts {
        histograms: vec![hist(
            handler.clone(),
            suite_histogram(0.003, true, false, true, false, false),
        )],
        metadata: vec![meta(
            basic("request_duration_seconds"),
            T::Histogram,
            "Request duration in seconds",
            "seconds",
        )],
        exemplars: vec![exemplar(
            handler,
            vec![("trace_id", "metrics_scrape"), ("scraper", "prometheus")],
            0.003,
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestMultipleMetricFamiliesHistograms", ""],
        opts,
        counts(0, 1, 1),
        true,
    );

    let edge = [
        (
            "metadata_without_data",
            Opts {
                metadata: vec![meta(
                    basic("orphan_metric"),
                    T::Counter,
                    "Orphaned metric metadata",
                    "count",
                )],
                unsafe_request: true,
                ..Default::default()
            },
            counts(0, 0, 0),
        ),
        (
            "exemplars_without_data",
            Opts {
                exemplars: vec![exemplar(
                    basic("orphan_metric"),
                    vec![("trace_id", "orphan_trace")],
                    42.0,
                )],
                unsafe_request: true,
                ..Default::default()
            },
            counts(0, 1, 0),
        ),
        (
            "mixed_timestamp_data",
            Opts {
                samples: vec![
                    SampleIn {
                        offset_ms: -3_600_000,
                        ..sample(basic("old_metric"), 1.0)
                    },
                    sample(basic("new_metric"), 2.0),
                ],
                exemplars: vec![ExemplarIn {
                    offset_ms: -30 * 60_000,
                    ..exemplar(basic("old_metric"), vec![("trace_id", "old_trace")], 1.0)
                }],
                ..Default::default()
            },
            counts(2, 1, 0),
        ),
    ];
    for (name, opts, expect) in edge {
        out.push(plain(
            go_name(&["TestEdgeCaseCombinations", name]),
            Level::Should,
            Body::V2(opts),
            Expect {
                success: true,
                ..expect
            },
        ));
    }

    let names: Vec<&'static str> = (0..50)
        .map(|i| &*format!("counter_metric_{i}").leak())
        .collect();
    let series: Vec<&'static str> = (0..50).map(|i| &*format!("series_{i}").leak()).collect();
    let helps: Vec<&'static str> = (0..50)
        .map(|i| &*format!("Counter metric number {i}").leak())
        .collect();
    let traces: Vec<&'static str> = (0..50).map(|i| &*format!("trace_{i}").leak()).collect();
    let mut opts = Opts::default();
    for i in 0..50 {
        let labels = vec![("__name__", names[i]), ("series", series[i])];
        opts.samples.push(sample(labels.clone(), (i * 100) as f64));
        opts.metadata
            .push(meta(basic(names[i]), T::Counter, helps[i], "count"));
        opts.exemplars.push(exemplar(
            labels,
            vec![("trace_id", traces[i])],
            (i * 100) as f64,
        ));
    }
    compliance(out, &["TestManySamples", ""], opts, counts(50, 50, 0), true);
    let names: Vec<&'static str> = (0..50)
        .map(|i| &*format!("histogram_metric_{i}").leak())
        .collect();
    let buckets: Vec<&'static str> = (0..50).map(|i| &*format!("bucket_{i}").leak()).collect();
    let helps: Vec<&'static str> = (0..50)
        .map(|i| &*format!("Histogram metric number {i}").leak())
        .collect();
    let mut opts = Opts::default();
    for i in 0..50 {
        let labels = vec![("__name__", names[i]), ("bucket", buckets[i])];
        let sum = i as f64 / 10.0;
        opts.histograms.push(hist(
            labels.clone(),
            suite_histogram(sum, true, i % 2 == 0, true, false, false),
        ));
        opts.metadata
            .push(meta(basic(names[i]), T::Histogram, helps[i], "seconds"));
        opts.exemplars
            .push(exemplar(labels, vec![("trace_id", traces[i])], sum));
    }
    compliance(
        out,
        &["TestManyHistograms", ""],
        opts,
        counts(0, 50, 50),
        true,
    );
    let special = vec![
        ("__name__", "test_metric"),
        ("job", "test-job_with.special@chars"),
        ("instance", "localhost:9090"),
        ("environment", "test🚀"),
    ];
    let opts = Opts {
        samples: vec![sample(special.clone(), 42.0)],
        metadata: vec![meta(
            basic("test_metric"),
            T::Gauge,
            "Test metric with special characters: äöü, newlines\nand \"quotes\"",
            "special/units",
        )],
        exemplars: vec![exemplar(
            special,
            vec![
                ("trace_id", "special_trace_äöü-123"),
                ("span_id", "span_with.dots-and_underscores"),
            ],
            42.0,
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestSpecialCharactersCombined", ""],
        opts,
        counts(1, 1, 0),
        true,
    );
    let custom = vec![("__name__", "custom_latency_hist"), ("version", "v2")];
    let opts = Opts {
        histograms: vec![hist(
            custom.clone(),
            suite_histogram(0.05, false, false, false, true, false),
        )],
        exemplars: vec![exemplar(
            custom,
            vec![("trace_id", "custom_bucket_trace"), ("bucket", "0.1")],
            0.05,
        )],
        ..Default::default()
    };
    compliance(
        out,
        &["TestCustomBucketsHistogramWithExemplar", ""],
        opts,
        counts(0, 1, 1),
        true,
    );
}

/// Every case of the suite, in the order of its files.
fn all_cases() -> Vec<Case> {
    let mut out = Vec::new();
    combined_cases(&mut out);
    exemplar_cases(&mut out);
    histogram_cases(&mut out);
    metadata_cases(&mut out);
    metric_cases(&mut out);
    request_cases(&mut out);
    rw1_cases(&mut out);
    out
}

// ---------------------------------------------------------------------------------------
// cardguard in front of a recording upstream, and a client that sends chunked bodies.

struct Env {
    version: Version,
    addr: SocketAddr,
    sink: Sink,
    app: Option<App>,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn start(version: Version) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (sink, app) = rt.block_on(async {
            let sink = Sink::start(SinkOptions::recording()).await.expect("sink");
            let mut config = Config {
                routing: Some(Arc::new(Routing::single(UpstreamConfig {
                    name: "up".into(),
                    url: sink.write_url().parse().unwrap(),
                    version,
                    timeout: Duration::from_secs(5),
                    headers: vec![],
                    tenant_header: None,
                    client: None,
                }))),
                ..Config::default()
            };
            // Nothing to drain in-process: each case's shutdown is immediate.
            config.server.shutdown_drain_delay = Duration::ZERO;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let app = App::start_on(config, ConfigSource::default(), listener).expect("start");
            (sink, app)
        });
        Env {
            version,
            addr: app.local_addr(),
            sink,
            app: Some(app),
            rt,
        }
    }

    fn metric(&self, name_and_labels: &str) -> f64 {
        let r = http(self.addr, "GET", "/metrics", &[], None);
        let text = String::from_utf8_lossy(&r.body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap_or(f64::NAN))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            self.rt.block_on(app.shutdown());
        }
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// `getHeaderValue`: a missing Written header counts 0.
    fn written(&self, what: &str) -> Result<u64, String> {
        match self.header(&format!("x-prometheus-remote-write-{what}-written")) {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| format!("{what}-written is {v:?}")),
        }
    }
}

/// One HTTP/1.1 request on its own connection. A `body` goes chunked (in three chunks), as
/// the suite's Go client sends it (its requests carry no length).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect to cardguard");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if body.is_some() {
        req.push_str("Transfer-Encoding: chunked\r\n");
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    if let Some(b) = body {
        let third = b.len().div_ceil(3).max(1);
        for chunk in b.chunks(third) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    }
    // A server may answer (415) and close before reading the body: a failed write is fine.
    let _ = s.write_all(&out);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    cardguard::wire::snappy::compress(raw, &mut out);
    out
}

fn unsnappy(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    cardguard::wire::snappy::decompress(body, 64 << 20, &mut out).expect("upstream body is snappy");
    out
}

/// The request of a case: `(headers, body, what was sent)`.
fn build(
    case: &Case,
) -> (
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
    Option<SentRequest>,
) {
    let (mut headers, raw, sent) = match &case.body {
        Body::V2(opts) => {
            let req = generate(opts);
            (
                vec![
                    ("content-encoding", "snappy"),
                    (
                        "content-type",
                        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                    ),
                    ("x-prometheus-remote-write-version", "2.0.0"),
                ],
                req.encode_to_vec(),
                Some(req),
            )
        }
        Body::V1(samples) => {
            let now = now_ms();
            let req = v1::WriteRequest {
                timeseries: samples
                    .iter()
                    .map(|s| v1::TimeSeries {
                        labels: s
                            .labels
                            .iter()
                            .map(|(n, v)| v1::Label {
                                name: n.to_string(),
                                value: v.to_string(),
                            })
                            .collect(),
                        samples: vec![v1::Sample {
                            value: s.value,
                            timestamp: now + s.offset_ms,
                        }],
                        ..Default::default()
                    })
                    .collect(),
                metadata: vec![],
            };
            (
                vec![
                    ("content-encoding", "snappy"),
                    ("content-type", "application/x-protobuf"),
                ],
                req.encode_to_vec(),
                None,
            )
        }
    };
    let mut body = snappy(&raw);
    if let Some(b) = case.corrupt {
        body[0] = b;
    }
    if let Some((k, v)) = case.header {
        headers.retain(|(h, _)| *h != k);
        headers.push((k, v));
    }
    (headers, body, sent)
}

/// `validateResponse`.
fn validate(e: &Expect, r: &Resp) -> Result<(), String> {
    let (s, x, h) = (
        r.written("samples")?,
        r.written("exemplars")?,
        r.written("histograms")?,
    );
    if let Some(code) = e.exact {
        if r.status != code {
            return Err(format!(
                "status {} where exactly {code} is required",
                r.status
            ));
        }
    }
    match r.status / 100 {
        2 => {
            if !e.success {
                return Err(format!("status {} for a case that must fail", r.status));
            }
            if (s, x, h) != (e.samples, e.exemplars, e.histograms) {
                return Err(format!(
                    "written samples/exemplars/histograms {s}/{x}/{h}, want {}/{}/{}",
                    e.samples, e.exemplars, e.histograms
                ));
            }
            if e.strict && r.status != 204 {
                return Err(format!("status {}, want 204", r.status));
            }
        }
        4 => {
            if e.exact.is_none() && r.status != 400 {
                return Err(format!("status {}, want 400", r.status));
            }
            if s > e.samples || x > e.exemplars || h > e.histograms {
                return Err(format!(
                    "a {} reports more written than sent: {s}/{x}/{h}",
                    r.status
                ));
            }
        }
        _ => {
            return Err(format!(
                "status {} (not retryable here, not 2xx or 4xx)",
                r.status
            ))
        }
    }
    Ok(())
}

/// A series as an upstream of either version received it, labels resolved.
#[derive(Debug, PartialEq)]
struct Seen {
    labels: Vec<(String, String)>,
    /// `(value bits, timestamp)`
    samples: Vec<(u64, i64)>,
    /// `(count, schema, sum bits, timestamp)`
    histograms: Vec<(u64, i32, u64, i64)>,
    exemplars: Vec<SeenExemplar>,
}

/// `(labels, value bits, timestamp)`
type SeenExemplar = (Vec<(String, String)>, u64, i64);

fn pairs(symbols: &[String], refs: &[u32]) -> Vec<(String, String)> {
    refs.chunks(2)
        .map(|p| {
            (
                symbols[p[0] as usize].clone(),
                symbols[p[1] as usize].clone(),
            )
        })
        .collect()
}

fn int_count(c: &Option<v2::histogram::Count>) -> u64 {
    match c {
        Some(v2::histogram::Count::CountInt(n)) => *n,
        Some(v2::histogram::Count::CountFloat(f)) => *f as u64,
        None => 0,
    }
}

fn seen_v2(req: &SentRequest) -> Vec<Seen> {
    let sym = &req.symbols;
    req.timeseries
        .iter()
        .map(|t| Seen {
            labels: pairs(sym, &t.labels_refs),
            samples: t
                .samples
                .iter()
                .map(|s| (s.value.to_bits(), s.timestamp))
                .collect(),
            histograms: t
                .histograms
                .iter()
                .map(|h| (int_count(&h.count), h.schema, h.sum.to_bits(), h.timestamp))
                .collect(),
            exemplars: t
                .exemplars
                .iter()
                .map(|e| (pairs(sym, &e.labels_refs), e.value.to_bits(), e.timestamp))
                .collect(),
        })
        .collect()
}

fn seen_v1(req: &v1::WriteRequest) -> Vec<Seen> {
    let labels = |l: &[v1::Label]| {
        l.iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    };
    req.timeseries
        .iter()
        .map(|t| Seen {
            labels: labels(&t.labels),
            samples: t
                .samples
                .iter()
                .map(|s| (s.value.to_bits(), s.timestamp))
                .collect(),
            histograms: t
                .histograms
                .iter()
                .map(|h| {
                    let count = match h.count {
                        Some(v1::histogram::Count::CountInt(n)) => n,
                        Some(v1::histogram::Count::CountFloat(f)) => f as u64,
                        None => 0,
                    };
                    (count, h.schema, h.sum.to_bits(), h.timestamp)
                })
                .collect(),
            exemplars: t
                .exemplars
                .iter()
                .map(|e| (labels(&e.labels), e.value.to_bits(), e.timestamp))
                .collect(),
        })
        .collect()
}

/// `(name, type, help, unit)` of every series' non-empty metadata, deduplicated by name.
fn metadata_of(req: &SentRequest) -> BTreeMap<String, (i32, String, String)> {
    let mut out = BTreeMap::new();
    for t in &req.timeseries {
        let Some(m) = t.metadata.filter(|m| *m != v2::Metadata::default()) else {
            continue;
        };
        let name = pairs(&req.symbols, &t.labels_refs)
            .into_iter()
            .find(|(n, _)| n == "__name__")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let s = |r: u32| req.symbols[r as usize].clone();
        out.entry(name)
            .or_insert((m.r#type, s(m.help_ref), s(m.unit_ref)));
    }
    out
}

/// What reached the upstream after an accepted case, against what was sent.
fn check_forwarded(
    env: &Env,
    before: usize,
    sent: &SentRequest,
    created_before: f64,
) -> Result<(), String> {
    let got = env.sink.received();
    let bodies: Vec<Vec<u8>> = got[before..].iter().map(|r| unsnappy(&r.body)).collect();
    let want = seen_v2(sent);
    let created = sent
        .timeseries
        .iter()
        .filter(|t| t.created_timestamp != 0)
        .count();
    match env.version {
        Version::V2 => {
            let recv: Vec<SentRequest> = bodies
                .iter()
                .map(|b| {
                    SentRequest::decode(b.as_slice())
                        .map_err(|e| format!("upstream got bad v2: {e}"))
                })
                .collect::<Result<_, _>>()?;
            let seen: Vec<Seen> = recv.iter().flat_map(seen_v2).collect();
            if seen != want {
                return Err(format!("the v2 upstream got {seen:?}, sent {want:?}"));
            }
            let ct_sent: Vec<i64> = sent
                .timeseries
                .iter()
                .map(|t| t.created_timestamp)
                .collect();
            let ct_got: Vec<i64> = recv
                .iter()
                .flat_map(|r| r.timeseries.iter().map(|t| t.created_timestamp))
                .collect();
            if ct_got != ct_sent {
                return Err(format!(
                    "created timestamps {ct_got:?} reached the v2 upstream, sent {ct_sent:?}"
                ));
            }
            let md: BTreeMap<_, _> = recv.iter().flat_map(metadata_of).collect();
            if md != metadata_of(sent) {
                return Err(format!(
                    "the v2 upstream got metadata {md:?}, sent {:?}",
                    metadata_of(sent)
                ));
            }
        }
        Version::V1 => {
            let recv: Vec<v1::WriteRequest> = bodies
                .iter()
                .map(|b| {
                    v1::WriteRequest::decode(b.as_slice())
                        .map_err(|e| format!("upstream got bad v1: {e}"))
                })
                .collect::<Result<_, _>>()?;
            let seen: Vec<Seen> = recv.iter().flat_map(seen_v1).collect();
            if seen != want {
                return Err(format!("the v1 upstream got {seen:?}, sent {want:?}"));
            }
            let md: BTreeMap<String, (i32, String, String)> = recv
                .iter()
                .flat_map(|r| r.metadata.iter())
                .map(|m| {
                    (
                        m.metric_family_name.clone(),
                        (m.r#type, m.help.clone(), m.unit.clone()),
                    )
                })
                .collect();
            if md != metadata_of(sent) {
                return Err(format!(
                    "the v1 upstream got metadata {md:?}, sent {:?}",
                    metadata_of(sent)
                ));
            }
            let counted = env.metric(
                r#"cardguard_translation_dropped_total{upstream="up",what="created_timestamp"}"#,
            ) - created_before;
            if counted != created as f64 {
                return Err(format!(
                    "{created} created timestamps cannot reach a v1 upstream, {counted} counted as dropped"
                ));
            }
        }
    }
    Ok(())
}

/// Run `case` against `env`; the reason it fails, if it does.
fn run(env: &Env, case: &Case) -> Result<(), String> {
    let (headers, body, sent) = build(case);
    let before = env.sink.received().len();
    let created_before = env
        .metric(r#"cardguard_translation_dropped_total{upstream="up",what="created_timestamp"}"#);
    let r = http(env.addr, "POST", "/api/v1/write", &headers, Some(&body));
    validate(&case.expect, &r)
        .map_err(|e| format!("{e} (body {:?})", String::from_utf8_lossy(&r.body)))?;
    if r.status / 100 == 4 && env.sink.received().len() != before {
        return Err(format!("answered {} but forwarded something", r.status));
    }
    if let (2, Some(sent)) = (r.status / 100, &sent) {
        check_forwarded(env, before, sent, created_before)?;
    }
    Ok(())
}

/// Run the cases whose name starts with `prefix` against both upstream versions; fail with
/// every failing case named.
fn suite(prefix: &str) {
    let cases: Vec<Case> = all_cases()
        .into_iter()
        .filter(|c| c.name == prefix || c.name.starts_with(&format!("{prefix}/")))
        .collect();
    assert!(!cases.is_empty(), "no case named {prefix}");
    let mut failures = Vec::new();
    for version in [Version::V1, Version::V2] {
        let env = Env::start(version);
        for case in &cases {
            if let Err(e) = run(&env, case) {
                failures.push(format!(
                    "{:?} {} [{version:?} upstream]: {e}",
                    case.level, case.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs failed:\n{}",
        failures.len(),
        2 * cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The suite's tests, one Rust test each (named after it), every case against a v1 and a v2
// upstream.

#[test]
fn case_inventory_matches_the_suite() {
    let cases = all_cases();
    let count = |l: Level| cases.iter().filter(|c| c.level == l).count();
    assert_eq!(
        (count(Level::Must), count(Level::Should), count(Level::May)),
        (110, 93, 2)
    );
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
}

macro_rules! suite_tests {
    ($($fn:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $fn() {
                suite($name);
            }
        )*
    };
}

suite_tests! {
    test_samples_with_metadata_and_exemplars => "TestSamplesWithMetadataAndExemplars",
    test_histograms_with_metadata_and_exemplars => "TestHistogramsWithMetadataAndExemplars",
    test_complex_samples_request => "TestComplexSamplesRequest",
    test_complex_histograms_request => "TestComplexHistogramsRequest",
    test_multiple_metric_families_samples => "TestMultipleMetricFamiliesSamples",
    test_multiple_metric_families_histograms => "TestMultipleMetricFamiliesHistograms",
    test_edge_case_combinations => "TestEdgeCaseCombinations",
    test_many_samples => "TestManySamples",
    test_many_histograms => "TestManyHistograms",
    test_special_characters_combined => "TestSpecialCharactersCombined",
    test_custom_buckets_histogram_with_exemplar => "TestCustomBucketsHistogramWithExemplar",
    test_exemplars => "TestExemplars",
    test_exemplar_with_created_timestamp => "TestExemplarWithCreatedTimestamp",
    test_multiple_exemplars => "TestMultipleExemplars",
    test_exemplar_timestamps => "TestExemplarTimestamps",
    test_exemplar_validation => "TestExemplarValidation",
    test_exemplar_special_values => "TestExemplarSpecialValues",
    test_histograms => "TestHistograms",
    test_histogram_with_created_timestamp => "TestHistogramWithCreatedTimestamp",
    test_multiple_histograms => "TestMultipleHistograms",
    test_empty_histogram => "TestEmptyHistogram",
    test_histogram_with_metadata => "TestHistogramWithMetadata",
    test_histogram_with_exemplar => "TestHistogramWithExemplar",
    test_histogram_with_metadata_and_exemplar => "TestHistogramWithMetadataAndExemplar",
    test_multiple_histograms_with_metadata => "TestMultipleHistogramsWithMetadata",
    test_metadata => "TestMetadata",
    test_counter_metadata_with_created_timestamp => "TestCounterMetadataWithCreatedTimestamp",
    test_metadata_with_samples => "TestMetadataWithSamples",
    test_multiple_metadata => "TestMultipleMetadata",
    test_metadata_with_complex_labels => "TestMetadataWithComplexLabels",
    test_metadata_validation => "TestMetadataValidation",
    test_single_metric => "TestSingleMetric",
    test_counter_with_created_timestamp => "TestCounterWithCreatedTimestamp",
    test_multiple_metrics => "TestMultipleMetrics",
    test_bad_content_types => "TestBadContentTypes",
    test_bad_content_encodings => "TestBadContentEncodings",
    test_corrupt_request_body => "TestCorruptRequestBody",
    test_rw1_basic_compatibility => "TestRW1BasicCompatibility",
    test_rw1_error_handling => "TestRW1ErrorHandling",
}

// ---------------------------------------------------------------------------------------
// Beyond the suite: what cardguard does with what the suite only sends.

const V2_HEADERS: [(&str, &str); 3] = [
    ("content-encoding", "snappy"),
    (
        "content-type",
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    ),
    ("x-prometheus-remote-write-version", "2.0.0"),
];

fn dropped(env: &Env, what: &str) -> f64 {
    env.metric(&format!(
        r#"cardguard_translation_dropped_total{{upstream="up",what="{what}"}}"#
    ))
}

/// Start timestamps as 2.0-rc.4 carries them (Sample field 3, Histogram field 17) reach a v2
/// upstream as sent; a v1 upstream cannot carry them, so they are counted.
#[test]
fn start_timestamps_reach_a_v2_upstream_and_are_counted_for_a_v1_one() {
    let now = now_ms();
    let mut h = suite_histogram(1.0, true, false, true, false, false);
    h.timestamp = now;
    h.start_timestamp = now - 60_000;
    let req = v2::Request {
        symbols: ["", "__name__", "c_total", "h_seconds"]
            .map(String::from)
            .to_vec(),
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: vec![v2::Sample {
                    value: 5.0,
                    timestamp: now,
                    start_timestamp: now - 3_600_000,
                }],
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 3],
                histograms: vec![h],
                ..Default::default()
            },
        ],
    };
    let body = snappy(&req.encode_to_vec());
    for version in [Version::V1, Version::V2] {
        let env = Env::start(version);
        let r = http(env.addr, "POST", "/api/v1/write", &V2_HEADERS, Some(&body));
        assert_eq!(
            r.status,
            204,
            "{version:?}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.written("samples").unwrap(), 1);
        assert_eq!(r.written("histograms").unwrap(), 1);
        let got = env.sink.received();
        assert_eq!(got.len(), 1);
        let raw = unsnappy(&got[0].body);
        match version {
            Version::V2 => {
                let up = v2::Request::decode(raw.as_slice()).unwrap();
                assert_eq!(up, req, "the v2 upstream gets the request as sent");
                assert_eq!(dropped(&env, "start_timestamp"), 0.0);
            }
            Version::V1 => {
                let up = v1::WriteRequest::decode(raw.as_slice()).unwrap();
                assert_eq!(up.timeseries.len(), 2);
                assert_eq!(dropped(&env, "start_timestamp"), 2.0);
            }
        }
    }
}

/// Prometheus sends its metadata in v1 requests of their own; a v2 upstream has no place for
/// metadata without a series, so it is counted, and the sender still hears 204.
#[test]
fn v1_metadata_a_v2_upstream_cannot_carry_is_counted() {
    let req = v1::WriteRequest {
        timeseries: vec![],
        metadata: vec![v1::MetricMetadata {
            r#type: v1::MetricType::Counter as i32,
            metric_family_name: "http_requests".into(),
            help: "Requests.".into(),
            unit: String::new(),
        }],
    };
    let body = snappy(&req.encode_to_vec());
    let headers = [
        ("content-encoding", "snappy"),
        ("content-type", "application/x-protobuf"),
    ];
    let env = Env::start(Version::V2);
    let r = http(env.addr, "POST", "/api/v1/write", &headers, Some(&body));
    assert_eq!(r.status, 204);
    assert!(
        env.sink.received().is_empty(),
        "nothing to send a v2 upstream"
    );
    assert_eq!(dropped(&env, "metadata"), 1.0);
    let env = Env::start(Version::V1);
    let r = http(env.addr, "POST", "/api/v1/write", &headers, Some(&body));
    assert_eq!(r.status, 204);
    assert_eq!(env.sink.received().len(), 1);
    assert_eq!(dropped(&env, "metadata"), 0.0);
}

/// 415 is decided on the headers alone: a request announcing a large body it never sends is
/// answered at once, and a body with a Content-Length (not chunked) is accepted as well.
#[test]
fn unsupported_media_is_refused_before_the_body_and_sized_bodies_work_too() {
    let env = Env::start(Version::V2);
    for (k, v) in [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ] {
        let mut s = TcpStream::connect(env.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = format!(
            "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n{k}: {v}\r\n"
        );
        if k != "content-type" {
            head.push_str("content-type: application/x-protobuf\r\n");
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).expect("an answer before any body byte");
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(line.starts_with("HTTP/1.1 415"), "{k}: {v}: {line:?}");
    }
    let req = generate(&Opts {
        samples: vec![sample(basic("up"), 1.0)],
        ..Default::default()
    });
    let body = snappy(&req.encode_to_vec());
    let mut s = TcpStream::connect(env.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in V2_HEADERS {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    s.write_all(&out).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 204"), "{text}");
    assert!(text.contains("x-prometheus-remote-write-samples-written: 1"));
}

// ---------------------------------------------------------------------------------------
// docs/compliance.md lists every case; `cargo test --test rw_compliance -- --ignored
// print_case_table --nocapture` prints its rows.

fn describe(case: &Case) -> (String, String) {
    let mut sends = Vec::new();
    match &case.body {
        Body::V1(samples) => sends.push(format!("v1: {} samples", samples.len())),
        Body::V2(o) => {
            let n = |k: usize, what: &str| (k > 0).then(|| format!("{k} {what}"));
            let created = o
                .samples
                .iter()
                .filter(|s| s.created_ms_ago.is_some())
                .count()
                + o.histograms
                    .iter()
                    .filter(|h| h.created_ms_ago.is_some())
                    .count();
            sends.extend(
                [
                    n(o.samples.len(), "samples"),
                    n(o.histograms.len(), "histograms"),
                    n(o.exemplars.len(), "exemplars"),
                    n(o.metadata.len(), "metadata"),
                    n(created, "created ts"),
                ]
                .into_iter()
                .flatten(),
            );
        }
    }
    if let Some((k, v)) = case.header {
        sends.push(format!("{k}: {v}"));
    }
    if let Some(b) = case.corrupt {
        sends.push(format!("body[0] = 0x{b:02x}"));
    }
    let e = &case.expect;
    let expects = match (e.exact, e.success) {
        (Some(code), _) => code.to_string(),
        (None, false) => "400".to_string(),
        (None, true) if matches!(case.body, Body::V1(_)) => "2xx, no Written headers".into(),
        (None, true) => format!(
            "{}, written {}/{}/{}",
            if e.strict { "204" } else { "2xx" },
            e.samples,
            e.histograms,
            e.exemplars
        ),
    };
    (sends.join(", "), expects)
}

#[test]
#[ignore = "prints the rows of docs/compliance.md"]
fn print_case_table() {
    for (i, c) in all_cases().iter().enumerate() {
        let (sends, expects) = describe(c);
        let level = format!("{:?}", c.level).to_uppercase();
        println!(
            "| {} | `{}` | {level} | {sends} | {expects} | pass | pass |",
            i + 1,
            c.name
        );
    }
}

#[test]
fn docs_list_every_case() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/compliance.md"))
        .expect("docs/compliance.md");
    let missing: Vec<String> = all_cases()
        .into_iter()
        .map(|c| c.name)
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/compliance.md: {missing:?}");
}
