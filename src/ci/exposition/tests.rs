//! The parser on both formats, its errors (each with its line), and render → parse round trips.

use proptest::prelude::*;

use super::*;

const PROM: &str = r#"# HELP http_requests_total Requests, by \\ path
# TYPE http_requests_total counter
http_requests_total{method="GET",path="/a\"b\\c\nd"} 1027 1395066363000
http_requests_total{ method = "POST" , } 3
# a comment that is not HELP or TYPE
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 1
latency_seconds_bucket{le="+Inf"} 2
latency_seconds_sum 0.3
latency_seconds_count 2
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.99"} NaN
rpc_seconds_sum -Inf
up 1e-3

"#;

const OM: &str = "# TYPE foo counter
# UNIT foo seconds
# HELP foo Foo.
foo_total{a=\"1\"} 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67 1520879602.029
foo_created{a=\"1\"} 1520872607.123
# TYPE h histogram
h_bucket{le=\"1\"} 0 # {trace_id=\"x\"} 0.5
h_bucket{le=\"+Inf\"} 1
h_count 1
h_sum 2
# TYPE s stateset
s{s=\"a\"} 1
# TYPE i info
i_info{version=\"1.2\"} 1
# EOF
";

#[test]
fn prometheus_text() {
    let e = parse(PROM).unwrap();
    let names: Vec<&str> = e.samples.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "http_requests_total",
            "http_requests_total",
            "latency_seconds_bucket",
            "latency_seconds_bucket",
            "latency_seconds_sum",
            "latency_seconds_count",
            "rpc_seconds",
            "rpc_seconds_sum",
            "up"
        ]
    );
    let first = &e.samples[0];
    assert_eq!(first.labels[1], ("path".into(), "/a\"b\\c\nd".into()));
    assert_eq!(first.timestamp_ms, Some(1_395_066_363_000));
    assert_eq!(first.line, 3);
    assert_eq!(e.samples[1].labels, [("method".into(), "POST".into())]);
    assert!(e.samples[6].value.is_nan());
    assert_eq!(e.samples[7].value, f64::NEG_INFINITY);
    assert_eq!(e.samples[8].value, 0.001);
    assert_eq!(e.types["latency_seconds"], Kind::Histogram);
}

#[test]
fn openmetrics_text() {
    assert_eq!(Format::detect(OM), Format::OpenMetrics);
    let e = parse(OM).unwrap();
    assert_eq!(e.samples.len(), 8);
    assert_eq!(e.samples[0].name, "foo_total");
    assert_eq!(e.samples[0].timestamp_ms, Some(1_520_879_607_789));
    assert_eq!(e.samples[1].value, 1_520_872_607.123);
    assert_eq!(e.types["s"], Kind::StateSet);
}

#[test]
fn errors_name_their_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("up 1\nup{a=\"1\"} x\n", 2, "not a number"),
        ("up 1\nup 2\n", 2, "duplicate series up (first on line 1)"),
        ("a{b=\"1\",b=\"2\"} 1\n", 1, "duplicate label b"),
        ("a{b=\"1} 1\n", 1, "unterminated value"),
        ("a{b=1} 1\n", 1, "'\"' opening the value of label b"),
        ("a{1b=\"1\"} 1\n", 1, "invalid label name \"1b\""),
        ("a{,} 1\n", 1, "expected a label name"),
        ("a{__name__=\"x\"} 1\n", 1, "__name__"),
        ("{\"a.b\"} 1\n", 1, "metric name inside the braces"),
        ("a 1 1.5\n", 1, "integer milliseconds"),
        ("a\n", 1, "no value"),
        ("a 1 2 3\n", 1, "unexpected"),
        ("# TYPE h histogram\nh_bucket 1\n", 2, "bucket without le"),
        ("# TYPE s summary\ns 1\n", 2, "without the quantile label"),
        (
            "# TYPE a counter\n# TYPE a gauge\n",
            2,
            "second # TYPE line for a",
        ),
        ("# TYPE a bogus\n", 1, "unknown type"),
        ("# TYPE a gaugehistogram\n", 1, "unknown type"),
        ("a 1 # {t=\"1\"} 1\n", 1, "OpenMetrics only"),
        ("a 1\n# EOF\nb 1\n", 3, "after # EOF"),
        ("a 1\n\n# EOF\n", 2, "empty line"),
        ("a  1\n# EOF\n", 1, "expected a space before the value"),
        ("# random\n# EOF\n", 1, "unknown comment line"),
        ("a 1 # {t=\"1\"}\n# EOF\n", 1, "exemplar"),
        ("a{b=\"\\\"} 1\n", 1, "unterminated"),
        ("a\u{e9} 1\n", 1, "invalid metric name"),
    ];
    for (text, line, msg) in cases {
        let e = parse(text).expect_err(text);
        assert_eq!(e.line, *line, "{text:?}: {e}");
        assert!(e.message.contains(msg), "{text:?}: {e}");
    }
    let missing = parse_as("a 1\n", Format::OpenMetrics).unwrap_err();
    assert!(missing.message.contains("must end with # EOF"), "{missing}");
}

#[test]
fn crlf_line_endings_are_read() {
    let e = parse("# TYPE a gauge\r\na{b=\"c\"} 1\r\n").unwrap();
    assert_eq!(e.samples[0].labels, [("b".into(), "c".into())]);
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}"
}

fn label_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,8}".prop_filter("reserved", |n| n != "__name__")
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        (-1000i64..1000).prop_map(|v| v as f64 / 8.0),
    ]
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        name(),
        prop::collection::btree_map(label_name(), "(\\PC|[\\\\\"\n]){0,8}", 0..4),
        value(),
        prop::option::of(-10_000_000_000_000i64..10_000_000_000_000),
    )
        .prop_map(|(name, labels, value, timestamp_ms)| Sample {
            name,
            labels: labels.into_iter().collect(),
            value,
            timestamp_ms,
            line: 0,
        })
}

fn same(a: &Sample, b: &Sample) -> bool {
    a.name == b.name
        && a.labels == b.labels
        && a.timestamp_ms == b.timestamp_ms
        && (a.value == b.value || (a.value.is_nan() && b.value.is_nan()))
}

proptest! {
    #[test]
    fn render_then_parse_gives_the_samples_back(
        samples in prop::collection::vec(sample(), 0..20),
        om in any::<bool>(),
    ) {
        let mut seen = std::collections::HashSet::new();
        let samples: Vec<Sample> = samples
            .into_iter()
            .filter(|s| seen.insert((s.name.clone(), s.labels.clone())))
            .collect();
        let format = if om { Format::OpenMetrics } else { Format::Prometheus };
        let text = render(&samples, &[], format);
        let back = parse_as(&text, format).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back.samples.len(), samples.len());
        for (i, (a, b)) in samples.iter().zip(&back.samples).enumerate() {
            prop_assert!(same(a, b), "{:?} != {:?}", a, b);
            prop_assert_eq!(b.line, i + 1);
        }
        prop_assert_eq!(Format::detect(&text), format);
    }

    /// What `fuzz/fuzz_targets/exposition.rs` checks, on text made of the characters that matter.
    #[test]
    fn any_text_parses_or_errors_with_a_line_in_range(
        text in "([a-z_]{1,3}|[0-9.]{1,3}|[\n#{}\" \\\\=,]|EOF|TYPE|Inf|\\PC){0,40}",
    ) {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            match parse_as(&text, format) {
                Err(e) => prop_assert!(e.line >= 1 && e.line <= text.split('\n').count(), "{e}"),
                Ok(e) => {
                    let again = render(&e.samples, &[], format);
                    let back = parse_as(&again, format).map_err(|x| TestCaseError::fail(format!("{x}\n{again}")))?;
                    prop_assert_eq!(back.samples.len(), e.samples.len());
                    for (a, b) in e.samples.iter().zip(&back.samples) {
                        prop_assert!(same(a, b), "{:?} != {:?}", a, b);
                    }
                }
            }
        }
    }
}
