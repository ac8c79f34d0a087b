//! The tap inside the real pipeline: what is buffered, what is withheld, what is forwarded.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::pipeline::{self, Context};
use crate::rules::file;
use crate::rules::promql::Storage;
use crate::wire::{self, testgen, Limits, Version};

const LIMITS: BufferLimits = BufferLimits {
    max_series: 100,
    max_samples_per_series: 100,
    max_label_bytes: usize::MAX,
};

fn body(series: &[(&[(&str, &str)], i64)]) -> Bytes {
    body_in(Version::V1, series)
}

fn body_in(version: Version, series: &[(&[(&str, &str)], i64)]) -> Bytes {
    testgen::body_in(
        version,
        series
            .iter()
            .map(|(labels, t)| testgen::sorted_series(labels, &[(1.0, *t)]))
            .collect(),
    )
}

fn plan(forward_inputs: bool) -> Plan {
    let yaml = format!(
        "groups:\n  - name: g\n    forward_inputs: {forward_inputs}\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n"
    );
    let groups = file::parse("t.yml", &yaml).unwrap();
    Plan::new(
        groups.iter(),
        Duration::from_secs(10),
        Duration::from_secs(5),
    )
}

fn prepare(body: &Bytes, tap: Tap<'_>) -> pipeline::Prepared {
    prepare_in(Version::V1, body, tap)
}

fn prepare_in(version_in: Version, body: &Bytes, tap: Tap<'_>) -> pipeline::Prepared {
    let limits = Limits::default();
    let ctx = Context {
        rules: Some(tap),
        ..Context::new(version_in, Version::V1, &limits, 0)
    };
    pipeline::prepare(body, &ctx).unwrap()
}

fn forwarded_names(p: &pipeline::Prepared) -> Vec<String> {
    let mut decoded = Vec::new();
    wire::snappy::decompress(&p.routed.parts[0].body, 1 << 20, &mut decoded).unwrap();
    let mut parsed = wire::Parsed::new();
    parsed
        .parse(&decoded, Version::V1, &Limits::default())
        .unwrap();
    (0..parsed.len())
        .map(|i| {
            String::from_utf8_lossy(parsed.series(&decoded, i).metric_name().unwrap()).into_owned()
        })
        .collect()
}

#[test]
fn matched_series_are_buffered_and_everything_forwarded_by_default() {
    let (plan, buffer) = (plan(true), Buffer::new());
    let tap = Tap {
        plan: &plan,
        buffer: &buffer,
        limits: LIMITS,
        tenant: None,
    };
    let b = body(&[
        (&[("__name__", "up"), ("job", "a")], 1000),
        (&[("__name__", "other"), ("job", "a")], 1000),
    ]);
    let p = prepare(&b, tap);
    assert!(p.passthrough);
    assert_eq!(p.rules.samples, 1);
    assert_eq!(buffer.stats().series, 1);
    // A retry of the same request adds nothing.
    let p = prepare(&b, tap);
    assert_eq!((p.rules.samples, p.rules.out_of_order), (0, 1));
}

#[test]
fn forward_inputs_false_withholds_buffered_series() {
    let (plan, buffer) = (plan(false), Buffer::new());
    let tap = Tap {
        plan: &plan,
        buffer: &buffer,
        limits: LIMITS,
        tenant: None,
    };
    let b = body(&[
        (&[("__name__", "up"), ("job", "a")], 1000),
        (&[("__name__", "other"), ("job", "a")], 1000),
        (&[("__name__", "up"), ("job", "b")], 1000),
    ]);
    let p = prepare(&b, tap);
    assert!(!p.passthrough);
    assert_eq!((p.rules.withheld_series, p.rules.withheld_samples), (2, 2));
    assert_eq!(p.received.series, 3);
    assert_eq!(p.forwarded.series, 1);
    assert_eq!(forwarded_names(&p), ["other"]);

    // Only up: nothing left to forward, yet the request is accepted.
    let only = body(&[(&[("__name__", "up"), ("job", "a")], 2000)]);
    let p = prepare(&only, tap);
    assert!(p.empty);

    // A series the buffers refuse (cap reached) is forwarded, not lost.
    let full = Buffer::new();
    let tap = Tap {
        plan: &plan,
        buffer: &full,
        limits: BufferLimits {
            max_series: 1,
            max_samples_per_series: 10,
            max_label_bytes: usize::MAX,
        },
        tenant: None,
    };
    let p = prepare(&b, tap);
    assert_eq!(p.rules.refused_series, 1);
    assert_eq!(forwarded_names(&p), ["other", "up"]);
}

#[test]
fn remote_write_2_requests_feed_the_same_buffers() {
    let (plan, buffer) = (plan(false), Buffer::new());
    let tap = Tap {
        plan: &plan,
        buffer: &buffer,
        limits: LIMITS,
        tenant: None,
    };
    let v2 = body_in(
        Version::V2,
        &[
            (&[("__name__", "up"), ("job", "a")], 1000),
            (&[("__name__", "other"), ("job", "a")], 1000),
        ],
    );
    let p = prepare_in(Version::V2, &v2, tap);
    assert_eq!((p.rules.samples, p.rules.withheld_series), (1, 1));
    assert_eq!(forwarded_names(&p), ["other"]);
    // The same series arriving as v1 later is the same buffered series.
    let v1 = body(&[(&[("__name__", "up"), ("job", "a")], 2000)]);
    prepare(&v1, tap);
    assert_eq!(buffer.stats().series, 1);
    assert_eq!(buffer.stats().samples, 2);
}

/// Issue 11: the buffer's series identity ignored the tenant, so two tenants' `up{job="a"}`
/// were one series and the second tenant's samples were dropped as out of order (or mixed).
#[test]
fn two_tenants_same_labels_are_two_series() {
    let (plan, buffer) = (plan(true), Buffer::new());
    let tap = Tap {
        plan: &plan,
        buffer: &buffer,
        limits: LIMITS,
        tenant: None,
    };
    let b = body(&[(&[("__name__", "up"), ("job", "a")], 1000)]);
    let a = prepare(&b, tap.for_tenant(Some("team-a")));
    let other = prepare(&b, tap.for_tenant(Some("team-b")));
    assert_eq!((a.rules.samples, other.rules.samples), (1, 1));
    assert_eq!(other.rules.out_of_order, 0);
    assert_eq!(buffer.stats().series, 2);
    // And each tenant's retry is still recognised as one.
    let again = prepare(&b, tap.for_tenant(Some("team-b")));
    assert_eq!((again.rules.samples, again.rules.out_of_order), (0, 1));
}

/// A series' samples go in request order even when it comes twice in a request, and the cap
/// refuses new series in request order: what any batching of the appends must keep.
#[test]
fn appends_keep_request_order_within_a_series_and_for_the_cap() {
    let plan = plan(true);
    let jobs: Vec<String> = (0..40).map(|j| format!("j{j:02}")).collect();
    let labels: Vec<[(&str, &str); 2]> = jobs
        .iter()
        .map(|j| [("__name__", "up"), ("job", j)])
        .collect();
    let request = |first: i64, second: i64| {
        let series: Vec<(&[(&str, &str)], i64)> = labels
            .iter()
            .map(|l| (&l[..], first))
            .chain(labels.iter().map(|l| (&l[..], second)))
            .collect();
        body(&series)
    };
    let buffered = |b: &Buffer| {
        let mut out: Vec<(String, Vec<i64>)> = Vec::new();
        let m = promql_parser::label::Matchers::one(promql_parser::label::Matcher::new(
            promql_parser::label::MatchOp::Equal,
            "__name__",
            "up",
        ));
        b.select(&m, i64::MIN, i64::MAX, &mut |l, s| {
            out.push((l[1].1.clone(), s.iter().map(|x| x.t).collect()))
        });
        out.sort();
        out
    };
    let buffer = Buffer::new();
    let tap = Tap {
        plan: &plan,
        buffer: &buffer,
        limits: LIMITS,
        tenant: None,
    };
    // New series, each twice.
    let p = prepare(&request(1000, 2000), tap);
    assert_eq!((p.rules.samples, p.rules.out_of_order), (80, 0));
    // Buffered series, the second sample of each older than the first.
    let p = prepare(&request(4000, 3000), tap);
    assert_eq!((p.rules.samples, p.rules.out_of_order), (40, 40));
    let want: Vec<(String, Vec<i64>)> = jobs
        .iter()
        .map(|j| (j.clone(), vec![1000, 2000, 4000]))
        .collect();
    assert_eq!(buffered(&buffer), want);

    let full = Buffer::new();
    let tap = Tap {
        buffer: &full,
        limits: BufferLimits {
            max_series: 10,
            ..LIMITS
        },
        ..tap
    };
    let p = prepare(&request(1000, 2000), tap);
    assert_eq!((p.rules.samples, p.rules.refused_series), (20, 60));
    let want: Vec<(String, Vec<i64>)> = jobs[..10]
        .iter()
        .map(|j| (j.clone(), vec![1000, 2000]))
        .collect();
    assert_eq!(buffered(&full), want);
}
