//! The writer against the prost reference types: for random requests and random edit plans
//! (copy, drop, relabel, push), prost must decode the output as the intended request, in all
//! four version pairs.

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::wire::strategies::{self, resolve_v1, resolve_v2, Resolved};
use crate::wire::types::{v1, v2};
use crate::wire::{Limits, Version};

/// What to do with one source series.
#[derive(Debug, Clone)]
enum Op {
    Copy,
    Drop,
    Relabel(Vec<(String, String)>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => Just(Op::Copy), 1 => Just(Op::Drop), 2 => strategies::labels(6).prop_map(Op::Relabel)]
}

fn owned() -> impl Strategy<Value = OwnedSeries> {
    (
        strategies::labels(5),
        vec((strategies::float(), any::<i64>()), 0..3),
    )
        .prop_map(|(labels, samples)| OwnedSeries {
            labels,
            samples,
            histograms: Vec::new(),
        })
}

/// The source, one logical request in both versions' terms.
enum Source {
    V1(v1::WriteRequest),
    V2(v2::Request),
}

impl Source {
    fn encode(&self) -> (Vec<u8>, Version) {
        match self {
            Source::V1(r) => (r.encode_to_vec(), Version::V1),
            Source::V2(r) => (r.encode_to_vec(), Version::V2),
        }
    }
    fn resolved(&self) -> Vec<Resolved> {
        match self {
            Source::V1(r) => r.timeseries.iter().map(resolve_v1).collect(),
            Source::V2(r) => r
                .timeseries
                .iter()
                .map(|t| resolve_v2(&r.symbols, t))
                .collect(),
        }
    }
}

fn name_of(labels: &[(String, String)]) -> Option<&str> {
    labels
        .iter()
        .find(|(n, _)| n == "__name__")
        .map(|(_, v)| v.as_str())
}

/// v1 metadata a v2 series named `name` gets (see the writer's module doc).
fn family_for(metadata: &[v1::MetricMetadata], name: &str) -> Option<(i32, String, String)> {
    let suffixes = ["_total", "_bucket", "_sum", "_count", "_created", "_info"];
    let candidates =
        std::iter::once(name).chain(suffixes.iter().filter_map(|s| name.strip_suffix(s)));
    for candidate in candidates {
        if let Some(m) = metadata.iter().find(|m| m.metric_family_name == candidate) {
            return Some((m.r#type, m.help.clone(), m.unit.clone()));
        }
    }
    None
}

/// The request the writer should produce: series in resolved form plus v1 request metadata.
fn expected(
    src: &Source,
    ops: &[Op],
    pushes: &[OwnedSeries],
    out: Version,
) -> (Vec<Resolved>, Vec<v1::MetricMetadata>) {
    let mut series = Vec::new();
    for (mut r, op) in src.resolved().into_iter().zip(ops) {
        match op {
            Op::Copy => {}
            Op::Drop => continue,
            Op::Relabel(labels) => r.labels = labels.clone(),
        }
        series.push(r);
    }
    let mut metadata = Vec::new();
    match (src, out) {
        (Source::V1(req), Version::V1) => metadata = req.metadata.clone(),
        (Source::V1(req), Version::V2) => {
            for r in &mut series {
                r.metadata = name_of(&r.labels).and_then(|n| family_for(&req.metadata, n));
            }
        }
        (Source::V2(_), Version::V1) => {
            for r in &mut series {
                if let (Some((t, help, unit)), Some(name)) = (r.metadata.take(), name_of(&r.labels))
                {
                    let empty = t == 0 && help.is_empty() && unit.is_empty();
                    if !empty
                        && !metadata
                            .iter()
                            .any(|m: &v1::MetricMetadata| m.metric_family_name == name)
                    {
                        metadata.push(v1::MetricMetadata {
                            r#type: t,
                            metric_family_name: name.into(),
                            help,
                            unit,
                        });
                    }
                }
                for s in &mut r.samples {
                    s.2 = 0;
                }
                for h in &mut r.histograms {
                    let mut decoded = v2::Histogram::decode(h.as_slice()).unwrap();
                    decoded.start_timestamp = 0;
                    *h = decoded.encode_to_vec();
                }
            }
        }
        (Source::V2(_), Version::V2) => {}
    }
    for p in pushes {
        series.push(Resolved {
            labels: p.labels.clone(),
            samples: p
                .samples
                .iter()
                .map(|&(v, t)| (v.to_bits(), t, 0))
                .collect(),
            histograms: vec![],
            exemplars: vec![],
            metadata: None,
        });
    }
    (series, metadata)
}

/// Decode the writer's output with prost into the same form.
fn decode(bytes: &[u8], out: Version) -> (Vec<Resolved>, Vec<v1::MetricMetadata>) {
    match out {
        Version::V1 => {
            let req = v1::WriteRequest::decode(bytes).expect("prost decodes v1 output");
            (
                req.timeseries.iter().map(resolve_v1).collect(),
                req.metadata,
            )
        }
        Version::V2 => {
            let req = v2::Request::decode(bytes).expect("prost decodes v2 output");
            if !req.timeseries.is_empty() {
                assert_eq!(req.symbols.first().map(String::as_str), Some(""));
            }
            (
                req.timeseries
                    .iter()
                    .map(|t| resolve_v2(&req.symbols, t))
                    .collect(),
                vec![],
            )
        }
    }
}

fn run(
    w: &mut Writer,
    src: &Source,
    ops: &[Op],
    pushes: &[OwnedSeries],
) -> Result<(), TestCaseError> {
    let (buf, version) = src.encode();
    let mut p = Parsed::new();
    p.parse(&buf, version, &Limits::default()).unwrap();
    w.begin(&p, &buf);
    for (i, op) in ops.iter().enumerate().take(p.len()) {
        match op {
            Op::Copy => w.copy_series(&p, &buf, i),
            Op::Drop => {}
            Op::Relabel(labels) => {
                let borrowed: Vec<(&[u8], &[u8])> = labels
                    .iter()
                    .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                    .collect();
                w.relabeled_series(&p, &buf, i, &borrowed);
            }
        }
    }
    for s in pushes {
        w.push_series(s);
    }
    w.copy_metadata(&p, &buf);
    let out = w.finish().unwrap().to_vec();
    let (want_series, want_meta) = expected(src, ops, pushes, w.version());
    let (got_series, got_meta) = decode(&out, w.version());
    let meta_count = match w.version() {
        Version::V1 => want_meta.len(),
        Version::V2 => want_series
            .iter()
            .filter(|r| {
                r.metadata
                    .as_ref()
                    .is_some_and(|(t, h, u)| *t != 0 || !h.is_empty() || !u.is_empty())
            })
            .count(),
    };
    prop_assert_eq!(w.metadata_written(), meta_count);
    prop_assert_eq!(got_series, want_series);
    prop_assert_eq!(got_meta, want_meta);
    // And our own reader accepts what we wrote.
    let mut again = Parsed::new();
    prop_assert!(again.parse(&out, w.version(), &Limits::default()).is_ok());
    Ok(())
}

proptest! {
    #[test]
    fn v1_source_to_both_versions(
        req in strategies::v1_request(),
        ops in vec(op(), 8),
        pushes in vec(owned(), 0..3),
    ) {
        let src = Source::V1(req);
        // One writer per output version, reused for a second request to check begin() resets.
        for out in [Version::V1, Version::V2] {
            let mut w = Writer::new(out);
            run(&mut w, &src, &ops, &pushes)?;
            run(&mut w, &src, &ops, &[])?;
        }
    }

    #[test]
    fn v2_source_to_both_versions(
        req in strategies::v2_request(),
        ops in vec(op(), 8),
        pushes in vec(owned(), 0..3),
    ) {
        let src = Source::V2(req);
        for out in [Version::V1, Version::V2] {
            let mut w = Writer::new(out);
            run(&mut w, &src, &ops, &pushes)?;
            run(&mut w, &src, &ops, &[])?;
        }
    }

    #[test]
    fn copy_all_same_version_is_byte_identical_for_v1(req in strategies::v1_request()) {
        // prost writes series then metadata, as we do, so copying everything reproduces it.
        let buf = req.encode_to_vec();
        let mut p = Parsed::new();
        p.parse(&buf, Version::V1, &Limits::default()).unwrap();
        let mut w = Writer::new(Version::V1);
        w.begin(&p, &buf);
        for i in 0..p.len() {
            w.copy_series(&p, &buf, i);
        }
        w.copy_metadata(&p, &buf);
        prop_assert_eq!(w.finish().unwrap(), buf.as_slice());
    }

    #[test]
    fn copy_all_same_version_is_byte_identical_for_v2(req in strategies::v2_request()) {
        prop_assume!(!req.timeseries.is_empty());
        let buf = req.encode_to_vec();
        let mut p = Parsed::new();
        p.parse(&buf, Version::V2, &Limits::default()).unwrap();
        let mut w = Writer::new(Version::V2);
        w.begin(&p, &buf);
        for i in 0..p.len() {
            w.copy_series(&p, &buf, i);
        }
        prop_assert_eq!(w.finish().unwrap(), buf.as_slice());
    }
}

proptest! {
    /// Runs of series copied together write what copying them one by one writes, and go
    /// over a limit at the same size, whatever the runs and the limit.
    #[test]
    fn a_run_copies_what_its_series_copy_one_by_one(
        req in strategies::v1_request(),
        cuts in vec(any::<bool>(), 0..40),
        limit in prop_oneof![Just(usize::MAX), 0usize..4000],
    ) {
        let buf = req.encode_to_vec();
        let mut p = Parsed::new();
        p.parse(&buf, Version::V1, &Limits::default()).unwrap();
        let out = |runs: bool| {
            let mut w = Writer::new(Version::V1);
            w.set_limit(limit);
            w.begin(&p, &buf);
            if runs {
                let mut start = 0;
                for i in 0..p.len() {
                    if cuts.get(i).copied().unwrap_or(false) {
                        w.copy_series_run(&p, &buf, start..i);
                        start = i;
                    }
                }
                w.copy_series_run(&p, &buf, start..p.len());
            } else {
                (0..p.len()).for_each(|i| w.copy_series(&p, &buf, i));
            }
            w.copy_metadata(&p, &buf);
            let written = w.series_written;
            (w.finish().map(<[u8]>::to_vec), written)
        };
        prop_assert_eq!(out(true), out(false));
    }
}

/// A series behind a longer length than needed (a valid varint, padded) is not copied with
/// its header: the run is written series by series, each behind the shortest length.
#[test]
fn a_run_with_a_padded_length_is_copied_series_by_series() {
    let series = |v: &str| v1::TimeSeries {
        labels: vec![v1::Label {
            name: "__name__".into(),
            value: v.into(),
        }],
        samples: vec![v1::Sample {
            value: 1.0,
            timestamp: 1,
        }],
        ..Default::default()
    };
    let (a, b) = (series("a").encode_to_vec(), series("b").encode_to_vec());
    assert!(b.len() < 0x80);
    let mut padded = vec![0x0a, a.len() as u8];
    padded.extend_from_slice(&a);
    // Length 0x80|len, 0x00: the same length in two bytes.
    padded.extend_from_slice(&[0x0a, 0x80 | b.len() as u8, 0x00]);
    padded.extend_from_slice(&b);
    let canonical = v1::WriteRequest {
        timeseries: vec![series("a"), series("b")],
        ..Default::default()
    }
    .encode_to_vec();
    let mut p = Parsed::new();
    p.parse(&padded, Version::V1, &Limits::default()).unwrap();
    let mut w = Writer::new(Version::V1);
    w.begin(&p, &padded);
    w.copy_series_run(&p, &padded, 0..2);
    assert_eq!(w.finish().unwrap(), canonical.as_slice());
}

#[test]
fn push_only_requests_start_their_symbols_with_empty_string() {
    let mut w = Writer::new(Version::V2);
    let s = OwnedSeries {
        histograms: Vec::new(),
        labels: vec![("__name__".into(), "up".into()), ("job".into(), "".into())],
        samples: vec![(1.0, 7)],
    };
    w.push_series(&s);
    w.push_series(&s);
    let req = v2::Request::decode(w.finish().unwrap()).unwrap();
    assert_eq!(req.symbols, ["", "__name__", "up", "job"]);
    assert_eq!(req.timeseries[1].labels_refs, [1, 2, 3, 0]);
    assert!(Writer::new(Version::V2).finish().unwrap().is_empty());
}

#[test]
fn v1_metadata_attaches_to_suffixed_series_in_v2() {
    let label = |n: &str, v: &str| v1::Label {
        name: n.into(),
        value: v.into(),
    };
    let series = |name: &str| v1::TimeSeries {
        labels: vec![label("__name__", name)],
        samples: vec![v1::Sample {
            value: 1.0,
            timestamp: 1,
        }],
        ..Default::default()
    };
    let req = v1::WriteRequest {
        timeseries: vec![
            series("http_requests_total"),
            series("http_requests"),
            series("other"),
        ],
        metadata: vec![v1::MetricMetadata {
            r#type: v1::MetricType::Counter as i32,
            metric_family_name: "http_requests".into(),
            help: "Requests.".into(),
            unit: String::new(),
        }],
    };
    let buf = req.encode_to_vec();
    let mut p = Parsed::new();
    p.parse(&buf, Version::V1, &Limits::default()).unwrap();
    let mut w = Writer::new(Version::V2);
    w.begin(&p, &buf);
    (0..3).for_each(|i| w.copy_series(&p, &buf, i));
    let out = v2::Request::decode(w.finish().unwrap()).unwrap();
    let help = out.symbols.iter().position(|s| s == "Requests.").unwrap() as u32;
    let want = Some(v2::Metadata {
        r#type: 1,
        help_ref: help,
        unit_ref: 0,
    });
    assert_eq!(out.timeseries[0].metadata, want);
    assert_eq!(out.timeseries[1].metadata, want);
    assert_eq!(out.timeseries[2].metadata, None);
}

/// Fuzzer find: a v1 sample with an extra field 3 was copied raw into v2, where field 3 is
/// `start_timestamp`, and the output no longer parsed. Samples are re-encoded now.
#[test]
fn unknown_v1_sample_fields_do_not_take_a_v2_meaning() {
    // TimeSeries { labels: [__name__="m"], samples: [{value 1, ts 2, field 3: bytes "x"}] }
    let label = [
        0x0a, 0x0d, 0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', 0x12, 0x01, b'm',
    ];
    let mut sample = vec![0x09];
    sample.extend_from_slice(&1f64.to_le_bytes());
    sample.extend_from_slice(&[0x10, 0x02, 0x1a, 0x01, b'x']);
    let mut series = label.to_vec();
    series.push(0x12);
    series.push(sample.len() as u8);
    series.extend_from_slice(&sample);
    let mut body = vec![0x0a, series.len() as u8];
    body.extend_from_slice(&series);

    let mut parsed = Parsed::new();
    parsed
        .parse(&body, Version::V1, &Limits::default())
        .unwrap();
    for out in [Version::V1, Version::V2] {
        let mut w = Writer::new(out);
        w.begin(&parsed, &body);
        w.copy_series(&parsed, &body, 0);
        let written = w.finish().unwrap().to_vec();
        let mut again = Parsed::new();
        again.parse(&written, out, &Limits::default()).unwrap();
        let s = again.series(&written, 0).samples().next().unwrap();
        assert_eq!(
            (s.value, s.timestamp, s.start_timestamp),
            (1.0, 2, 0),
            "{out:?}"
        );
    }
}

/// Every input a wire fuzz target once crashed on goes through decode and both writers
/// cleanly (`tests/fuzz_regressions.rs` runs them through the fuzz bodies themselves).
#[test]
fn fuzz_regressions() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz-regressions");
    let files = ["snappy_v1", "snappy_v2", "translate"]
        .iter()
        .filter_map(|t| std::fs::read_dir(root.join(t)).ok())
        .flatten();
    for entry in files {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for version in [Version::V1, Version::V2] {
            let mut buf = Vec::new();
            if crate::wire::snappy::decompress(&data, 1 << 20, &mut buf).is_err() {
                buf = data.clone();
            }
            let mut parsed = Parsed::new();
            if parsed.parse(&buf, version, &Limits::default()).is_err() {
                continue;
            }
            for out in [Version::V1, Version::V2] {
                let mut w = Writer::new(out);
                w.begin(&parsed, &buf);
                for i in 0..parsed.len() {
                    w.copy_series(&parsed, &buf, i);
                }
                w.copy_metadata(&parsed, &buf);
                let written = w.finish().unwrap().to_vec();
                Parsed::new()
                    .parse(&written, out, &Limits::default())
                    .unwrap();
            }
        }
    }
}

/// What v1 cannot carry is counted by kind: start timestamps of samples and histograms, the
/// pre-rc.4 created timestamp (series field 6), metadata differing from the first kept for
/// its name; and the other way, v1 metadata no v2 series picks up.
#[test]
fn translation_counts_what_the_output_version_cannot_carry() {
    let series = |name: &str, st: i64, help: u32| v2::TimeSeries {
        labels_refs: vec![1, name.parse::<u32>().unwrap()],
        samples: vec![v2::Sample {
            value: 1.0,
            timestamp: 10,
            start_timestamp: st,
        }],
        histograms: vec![v2::Histogram {
            start_timestamp: st,
            ..Default::default()
        }],
        metadata: Some(v2::Metadata {
            r#type: 1,
            help_ref: help,
            unit_ref: 0,
        }),
        ..Default::default()
    };
    let req = v2::Request {
        symbols: ["", "__name__", "a", "b", "help one", "help two"]
            .map(String::from)
            .to_vec(),
        timeseries: vec![series("2", 5, 4), series("2", 0, 5), series("3", 0, 4)],
    };
    // The third series also carries a created_timestamp (field 6, varint 7), appended by
    // hand: the reference types no longer know the field.
    let mut third = req.timeseries[2].encode_to_vec();
    third.extend_from_slice(&[0x30, 0x07]);
    let mut buf = v2::Request {
        symbols: req.symbols.clone(),
        timeseries: req.timeseries[..2].to_vec(),
    }
    .encode_to_vec();
    proto::put_bytes(&mut buf, 5, &third);
    let mut p = Parsed::new();
    p.parse(&buf, Version::V2, &Limits::default()).unwrap();
    let mut w = Writer::new(Version::V1);
    w.begin(&p, &buf);
    (0..3).for_each(|i| w.copy_series(&p, &buf, i));
    assert_eq!(
        w.translation_dropped(),
        TranslationDrops {
            start_timestamps: 2,
            created_timestamps: 1,
            metadata: 1,
        }
    );
    // v2 → v2 copies carry everything.
    let mut w = Writer::new(Version::V2);
    w.begin(&p, &buf);
    (0..3).for_each(|i| w.copy_series(&p, &buf, i));
    assert_eq!(w.translation_dropped(), TranslationDrops::default());

    // v1 → v2: metadata of a family no series carries is left out, and counted.
    let v1req = v1::WriteRequest {
        timeseries: vec![],
        metadata: vec![v1::MetricMetadata {
            r#type: 1,
            metric_family_name: "orphan".into(),
            help: "h".into(),
            unit: String::new(),
        }],
    };
    let buf = v1req.encode_to_vec();
    p.parse(&buf, Version::V1, &Limits::default()).unwrap();
    let mut w = Writer::new(Version::V2);
    w.begin(&p, &buf);
    w.copy_metadata(&p, &buf);
    assert_eq!(w.translation_dropped().metadata, 1);
}
