//! The reader against the prost reference types: random requests encoded by prost must read
//! back identically, and no input may make it panic.

use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::wire::strategies::{self, hostile_bytes, resolve_v1, resolve_v2, Resolved};
use crate::wire::types::{v1, v2};
use crate::wire::Writer;

/// What the reader saw, in the same resolved form (histograms and exemplars are checked by
/// count here; the writer tests check their bytes).
fn read_back(p: &Parsed, buf: &[u8]) -> Vec<Resolved> {
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).expect("utf-8");
    p.iter(buf)
        .map(|v| Resolved {
            labels: v.labels().map(|(n, l)| (s(n), s(l))).collect(),
            samples: v
                .samples()
                .map(|x| (x.value.to_bits(), x.timestamp, x.start_timestamp))
                .collect(),
            histograms: v.histograms_raw().map(<[u8]>::to_vec).collect(),
            exemplars: Vec::new(),
            metadata: None,
        })
        .collect()
}

fn check_v1(req: &v1::WriteRequest, buf: &[u8], p: &Parsed) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.version(), Version::V1);
    prop_assert_eq!(p.len(), req.timeseries.len());
    let got = read_back(p, buf);
    for ((g, want), view) in got.iter().zip(&req.timeseries).zip(p.iter(buf)) {
        let w = resolve_v1(want);
        prop_assert_eq!(&g.labels, &w.labels);
        prop_assert_eq!(&g.samples, &w.samples);
        let hist: Vec<Vec<u8>> = want.histograms.iter().map(Message::encode_to_vec).collect();
        prop_assert_eq!(&g.histograms, &hist);
        prop_assert_eq!(view.exemplar_count(), want.exemplars.len());
        let raw = want.encode_to_vec();
        prop_assert_eq!(view.raw(), raw.as_slice());
    }
    let c = p.counts();
    prop_assert_eq!(c.series, req.timeseries.len() as u64);
    prop_assert_eq!(
        c.samples,
        req.timeseries
            .iter()
            .map(|t| t.samples.len() as u64)
            .sum::<u64>()
    );
    prop_assert_eq!(
        c.histograms,
        req.timeseries
            .iter()
            .map(|t| t.histograms.len() as u64)
            .sum::<u64>()
    );
    prop_assert_eq!(
        c.exemplars,
        req.timeseries
            .iter()
            .map(|t| t.exemplars.len() as u64)
            .sum::<u64>()
    );
    prop_assert_eq!(c.metadata, req.metadata.len() as u64);
    for (i, m) in req.metadata.iter().enumerate() {
        let raw = m.encode_to_vec();
        prop_assert_eq!(p.metadata_raw(buf, i), Some(raw.as_slice()));
    }
    Ok(())
}

fn check_v2(req: &v2::Request, buf: &[u8], p: &Parsed) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.len(), req.timeseries.len());
    prop_assert_eq!(p.symbol_count(), req.symbols.len());
    let got = read_back(p, buf);
    for ((g, want), view) in got.iter().zip(&req.timeseries).zip(p.iter(buf)) {
        let w = resolve_v2(&req.symbols, want);
        prop_assert_eq!(&g.labels, &w.labels);
        prop_assert_eq!(&g.samples, &w.samples);
        prop_assert_eq!(&g.histograms, &w.histograms);
        prop_assert_eq!(view.exemplar_count(), want.exemplars.len());
        let meta = want.metadata.map(|m| V2Metadata {
            metric_type: m.r#type,
            help_ref: m.help_ref,
            unit_ref: m.unit_ref,
        });
        prop_assert_eq!(view.v2_metadata(), meta);
    }
    let c = p.counts();
    prop_assert_eq!(
        c.samples,
        req.timeseries
            .iter()
            .map(|t| t.samples.len() as u64)
            .sum::<u64>()
    );
    prop_assert_eq!(
        c.histograms,
        req.timeseries
            .iter()
            .map(|t| t.histograms.len() as u64)
            .sum::<u64>()
    );
    prop_assert_eq!(
        c.exemplars,
        req.timeseries
            .iter()
            .map(|t| t.exemplars.len() as u64)
            .sum::<u64>()
    );
    let with_meta = req
        .timeseries
        .iter()
        .filter(|t| t.metadata.is_some_and(|m| m != v2::Metadata::default()))
        .count();
    prop_assert_eq!(c.metadata, with_meta as u64);
    Ok(())
}

/// Re-encode a v2 request with every `labels_refs` unpacked (one varint field per ref), which
/// Go's and prost's decoders accept and so must we.
fn unpacked_v2(req: &v2::Request) -> Vec<u8> {
    use crate::wire::proto::{begin_nested, end_nested, put_bytes, put_tag, put_varint, VARINT};
    let mut out = Vec::new();
    for s in &req.symbols {
        put_bytes(&mut out, 4, s.as_bytes());
    }
    for ts in &req.timeseries {
        let pos = begin_nested(&mut out, 5);
        for &r in &ts.labels_refs {
            put_tag(&mut out, 1, VARINT);
            put_varint(&mut out, u64::from(r));
        }
        let rest = v2::TimeSeries {
            labels_refs: Vec::new(),
            ..ts.clone()
        };
        out.extend_from_slice(&rest.encode_to_vec());
        end_nested(&mut out, pos);
    }
    out
}

/// What `SeriesView::canonical_labels` answered before the v1 pass found it: a walk over the
/// recorded labels that checks the framing bytes and the order where they lie.
fn canonical_by_walk<'a>(view: &SeriesView<'a>) -> Option<&'a [u8]> {
    if view.version != Version::V1 {
        return None;
    }
    let first = view.labels.first()?;
    let start = (first.name_off as usize).checked_sub(4)?;
    let mut at = start;
    let mut prev: &[u8] = &[];
    for l in view.labels {
        let (n, v) = (l.name_len as usize, l.value_len as usize);
        let len = n + v + 4;
        if l.name_off as usize != at + 4 || l.value_off as usize != at + 4 + n + 2 || len >= 0x80 {
            return None;
        }
        let b = view.buf.get(at..at + 2 + len)?;
        if b[..4] != [0x0a, len as u8, 0x0a, n as u8] || b[4 + n..6 + n] != [0x12, v as u8] {
            return None;
        }
        let name = &b[4..4 + n];
        if name <= prev {
            return None;
        }
        prev = name;
        at += 2 + len;
    }
    view.buf.get(start..at)
}

/// What `Parsed::validate` records agrees with the walk, and its answer with the view's.
fn check_canonical(p: &mut Parsed, buf: &[u8]) -> Result<(), TestCaseError> {
    for i in 0..p.len() {
        // What the pass settled alone is what the full walk finds.
        let (settled, full) = p.flags_and_check(buf, i);
        if settled != 0 {
            prop_assert_eq!(full.clone(), Ok(settled));
        }
        let before = p.series(buf, i).canonical_labels();
        prop_assert_eq!(before, canonical_by_walk(&p.series(buf, i)));
        let view_said = format!("{:?}", p.series(buf, i).validate(i));
        prop_assert_eq!(view_said.clone(), format!("{:?}", full.map(|_| ())));
        prop_assert_eq!(format!("{:?}", p.validate(buf, i)), view_said.clone());
        let view = p.series(buf, i);
        prop_assert_eq!(view.canonical_labels(), canonical_by_walk(&view));
        // Accepted series know whether their names are strictly increasing; others nothing.
        let names: Vec<&[u8]> = view.labels().map(|(n, _)| n).collect();
        let increasing = names.windows(2).all(|w| w[0] < w[1]);
        let accepted = view_said.starts_with("Ok");
        prop_assert_eq!(view.sorted(), accepted.then_some(increasing));
    }
    Ok(())
}

/// Everything a caller may do with a parsed body, to shake out panics.
fn exercise(p: &Parsed, buf: &[u8]) {
    for (i, s) in p.iter(buf).enumerate() {
        let _ = s.validate(i);
        let _ = s.metric_name();
        assert_eq!(s.labels().count(), s.label_count());
        assert_eq!(s.samples().count(), s.sample_count());
        assert_eq!(s.histograms_raw().count(), s.histogram_count());
        assert_eq!(s.exemplars_raw().count(), s.exemplar_count());
    }
    for out in [Version::V1, Version::V2] {
        let mut w = Writer::new(out);
        w.begin(p, buf);
        for i in 0..p.len() {
            if i % 2 == 0 {
                w.copy_series(p, buf, i);
            } else {
                w.relabeled_series(p, buf, i, &[(b"__name__", b"x"), (b"a", b"")]);
            }
        }
        w.copy_metadata(p, buf);
        let bytes = w.finish().unwrap().to_vec();
        // The output is well framed whatever came in (labels may be invalid UTF-8, which
        // validate() and not the parser rejects, so prost may refuse it).
        let mut again = Parsed::new();
        again
            .parse(&bytes, out, &Limits::default())
            .expect("writer output parses");
    }
}

proptest! {
    #[test]
    fn v1_reads_like_prost(req in strategies::v1_request()) {
        let buf = req.encode_to_vec();
        let mut p = Parsed::new();
        p.parse(&buf, Version::V1, &Limits::default()).unwrap();
        check_v1(&req, &buf, &p)?;
        check_canonical(&mut p, &buf)?;
        // Reuse: a second parse into the same tables gives the same answer.
        p.parse(&buf, Version::V1, &Limits::default()).unwrap();
        check_v1(&req, &buf, &p)?;
    }

    #[test]
    fn v2_reads_like_prost(req in strategies::v2_request()) {
        let buf = req.encode_to_vec();
        let mut p = Parsed::new();
        p.parse(&buf, Version::V2, &Limits::default()).unwrap();
        check_v2(&req, &buf, &p)?;
        prop_assert_eq!(p.symbols_raw.is_some(), !req.symbols.is_empty());
        check_canonical(&mut p, &buf)?;
    }

    #[test]
    fn v2_accepts_unpacked_refs_and_symbols_last(req in strategies::v2_request()) {
        let mut p = Parsed::new();
        let unpacked = unpacked_v2(&req);
        // Same message for prost (compared re-encoded, so NaNs compare by bits).
        prop_assert_eq!(v2::Request::decode(unpacked.as_slice()).unwrap().encode_to_vec(), req.encode_to_vec());
        p.parse(&unpacked, Version::V2, &Limits::default()).unwrap();
        check_v2(&req, &unpacked, &p)?;
        // Concatenated messages merge, so this is the same request with the table last.
        let series_only = v2::Request { symbols: Vec::new(), ..req.clone() };
        let symbols_only = v2::Request { symbols: req.symbols.clone(), timeseries: Vec::new() };
        let mut reordered = series_only.encode_to_vec();
        reordered.extend_from_slice(&symbols_only.encode_to_vec());
        p.parse(&reordered, Version::V2, &Limits::default()).unwrap();
        check_v2(&req, &reordered, &p)?;
    }

    /// `label_fields` (the relabel memo's key) holds every label string whole, and only
    /// bytes before the first sample; Prometheus-shaped series (prost writes labels first)
    /// with samples always have it.
    #[test]
    fn label_fields_hold_every_label(req in strategies::v1_request()) {
        let buf = req.encode_to_vec();
        let p = parse(&buf, Version::V1).unwrap();
        for view in p.iter(&buf) {
            check_label_fields(&view, &buf)?;
            prop_assert_eq!(view.label_fields().is_some(), view.sample_count() > 0 && view.label_count() > 0);
        }
    }

    /// Sorted labels, as Prometheus sends them (random ones rarely are): the pass finds them
    /// canonical exactly when the walk does, and `validate` answers as without the flags,
    /// with or without `__name__`, with empty names or values, non-ASCII and long strings.
    #[test]
    fn sorted_labels_canonical_like_the_walk(
        labels in proptest::collection::btree_map(
            prop_oneof![4 => "[a-z_]{1,10}", 1 => Just("__name__".to_owned()), 1 => "\\PC{0,4}"],
            prop_oneof![4 => "[ -~]{0,20}", 1 => "\\PC{0,6}", 1 => "[a-z]{100,130}"],
            0..12,
        ),
        reverse in any::<bool>(),
    ) {
        let mut pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        if reverse {
            pairs.reverse();
        }
        let req = v1::WriteRequest { timeseries: vec![v1_series(&pairs)], ..Default::default() };
        let buf = req.encode_to_vec();
        let mut p = parse(&buf, Version::V1).unwrap();
        check_canonical(&mut p, &buf)?;
        let short = pairs.iter().all(|(n, v)| !n.is_empty() && !v.is_empty() && n.len() + v.len() + 4 < 0x80);
        if short && !pairs.is_empty() && (!reverse || pairs.len() == 1) {
            prop_assert!(p.series(&buf, 0).canonical_labels().is_some());
            // The pass settles what Prometheus sends: named, ASCII, sorted short labels.
            let named = pairs.iter().any(|(n, _)| *n == "__name__");
            if named && pairs.iter().all(|(n, v)| n.is_ascii() && v.is_ascii()) {
                let mut fresh = parse(&buf, Version::V1).unwrap();
                prop_assert_eq!(fresh.flags_and_check(&buf, 0).0, CHECKED | CANONICAL | SORTED);
                prop_assert!(fresh.validate(&buf, 0).is_ok());
            }
        }
    }

    #[test]
    fn parse_never_panics(bytes in hostile_bytes()) {
        let mut p = Parsed::new();
        for version in [Version::V1, Version::V2] {
            let limits = hostile_caps();
            if p.parse(&bytes, version, &limits).is_ok() {
                exercise(&p, &bytes);
                check_canonical(&mut p, &bytes)?;
                for view in p.iter(&bytes) {
                    check_label_fields(&view, &bytes)?;
                }
            }
        }
    }
}

fn check_label_fields(view: &SeriesView<'_>, buf: &[u8]) -> Result<(), TestCaseError> {
    let Some(span) = view.label_fields() else {
        return Ok(());
    };
    let lo = span.as_ptr() as usize - buf.as_ptr() as usize;
    let hi = lo + span.len();
    for (name, value) in view.labels() {
        for s in [name, value] {
            let at = s.as_ptr() as usize - buf.as_ptr() as usize;
            prop_assert!(s.is_empty() || (lo <= at && at + s.len() <= hi));
        }
    }
    // It starts at the series body and ends where the first sample's field starts.
    prop_assert_eq!(lo, view.rec.start as usize);
    prop_assert_eq!(hi, view.rec.first_sample as usize);
    prop_assert!(view.sample_count() > 0);
    Ok(())
}

fn parse(buf: &[u8], version: Version) -> Result<Parsed, WireError> {
    let mut p = Parsed::new();
    p.parse(buf, version, &Limits::default()).map(|()| p)
}

fn v1_series(labels: &[(&str, &str)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels: labels
            .iter()
            .map(|&(n, v)| v1::Label {
                name: n.into(),
                value: v.into(),
            })
            .collect(),
        samples: vec![v1::Sample {
            value: 1.0,
            timestamp: 5,
        }],
        ..Default::default()
    }
}

#[test]
fn validate_reports_each_label_problem() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<WireError>);
    let cases: &[Case] = &[
        (&[("__name__", "up"), ("job", "a")], None),
        (&[("job", "a"), ("__name__", "up")], None), // unsorted is fine
        (&[], Some(WireError::NoLabels { series: 0 })),
        (&[("job", "a")], Some(WireError::NoMetricName { series: 0 })),
        // An empty value is no value: the compliance suite's `__name__=""` cases.
        (
            &[("__name__", ""), ("job", "a")],
            Some(WireError::NoMetricName { series: 0 }),
        ),
        (
            &[("__name__", "up"), ("", "a")],
            Some(WireError::EmptyLabelName { series: 0 }),
        ),
        (
            &[("__name__", "up"), ("job", "a"), ("job", "b")],
            Some(WireError::DuplicateLabel {
                series: 0,
                name: "job".into(),
            }),
        ),
        (
            &[("job", "a"), ("__name__", "up"), ("job", "b")],
            Some(WireError::DuplicateLabel {
                series: 0,
                name: "job".into(),
            }),
        ),
    ];
    for (labels, want) in cases {
        let req = v1::WriteRequest {
            timeseries: vec![v1_series(labels)],
            metadata: vec![],
        };
        let buf = req.encode_to_vec();
        let p = parse(&buf, Version::V1).unwrap();
        assert_eq!(p.series(&buf, 0).validate(0).err(), *want, "{labels:?}");
    }
}

#[test]
fn validate_finds_duplicates_among_many_unsorted_labels() {
    let names: Vec<String> = (0..40).rev().map(|i| format!("l{i:02}")).collect();
    let mut labels: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    labels.push(("__name__", "up"));
    let ok = v1::WriteRequest {
        timeseries: vec![v1_series(&labels)],
        metadata: vec![],
    }
    .encode_to_vec();
    parse(&ok, Version::V1)
        .unwrap()
        .series(&ok, 0)
        .validate(0)
        .unwrap();
    labels.push(("l07", "again"));
    let dup = v1::WriteRequest {
        timeseries: vec![v1_series(&labels)],
        metadata: vec![],
    }
    .encode_to_vec();
    let err = parse(&dup, Version::V1)
        .unwrap()
        .series(&dup, 0)
        .validate(3)
        .unwrap_err();
    assert_eq!(
        err,
        WireError::DuplicateLabel {
            series: 3,
            name: "l07".into()
        }
    );
}

#[test]
fn validate_rejects_invalid_utf8() {
    use crate::wire::proto::{begin_nested, end_nested, put_bytes};
    for (name, value, part) in [
        (&b"__name__"[..], &b"\xff"[..], "value"),
        (b"\xc3", b"x", "name"),
    ] {
        let mut buf = Vec::new();
        let s = begin_nested(&mut buf, 1);
        for (n, v) in [(&b"__name__"[..], &b"up"[..]), (name, value)] {
            let l = begin_nested(&mut buf, 1);
            put_bytes(&mut buf, 1, n);
            put_bytes(&mut buf, 2, v);
            end_nested(&mut buf, l);
        }
        end_nested(&mut buf, s);
        let p = parse(&buf, Version::V1).unwrap();
        assert_eq!(
            p.series(&buf, 0).validate(1),
            Err(WireError::InvalidUtf8 { series: 1, part })
        );
    }
}

/// v2 checks UTF-8 once per symbol, not per label reference: the same errors as a check of
/// every label string, and a symbol no label reads (help text) is not one of them.
#[test]
fn v2_utf8_is_checked_per_symbol_with_the_same_verdicts() {
    use crate::wire::proto::put_bytes;
    // symbols: "", "__name__", "up", "job", then the odd one out; the sorted framing (tag 0x22,
    // one-byte lengths) would let an all-ASCII table pass in one scan.
    let body = |odd: &[u8], refs: &[u32]| {
        let mut buf = Vec::new();
        for s in [&b""[..], b"__name__", b"up", b"job", odd] {
            put_bytes(&mut buf, 4, s);
        }
        buf.extend(
            v2::Request {
                symbols: vec![],
                timeseries: vec![v2::TimeSeries {
                    labels_refs: refs.to_vec(),
                    ..Default::default()
                }],
            }
            .encode_to_vec(),
        );
        buf
    };
    let check = |buf: &[u8]| {
        let mut p = parse(buf, Version::V2).unwrap();
        let view = p.series(buf, 0).validate(0);
        assert_eq!(p.validate(buf, 0), view);
        view
    };
    let bad = Err(WireError::InvalidUtf8 {
        series: 0,
        part: "value",
    });
    assert_eq!(check(&body(b"\xff", &[1, 2, 3, 4])), bad);
    assert_eq!(check(&body(b"\xff", &[1, 2])), Ok(()));
    // Not ASCII but UTF-8, and long enough for a two-byte length: the slow path, accepted.
    let long = "é".repeat(100);
    assert_eq!(check(&body(long.as_bytes(), &[1, 2, 3, 4])), Ok(()));
    assert_eq!(check(&body(b"plain", &[1, 2, 3, 4])), Ok(()));
}

/// The 2.0 pass settles a series whose names, ranked once per request, rise strictly with
/// `__name__` set; every other series (and any series of a table that is not UTF-8) is left
/// to the walk, which answers as before. Symbols may repeat: equal strings rank alike.
#[test]
fn the_v2_pass_settles_only_clean_series() {
    // 0 "", 1 __name__, 2 up, 3 job, 4 node, 5 job again, 6 zone, 7 Zürich
    let symbols = ["", "__name__", "up", "job", "node", "job", "zone", "Zürich"];
    let settled = |symbols: &[&str], refs: &[u32], hist: bool| {
        let mut req = v2::Request {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            timeseries: vec![v2::TimeSeries {
                labels_refs: refs.to_vec(),
                ..Default::default()
            }],
        };
        if hist {
            req.timeseries[0]
                .histograms
                .push(crate::wire::types::v2::Histogram::default());
        }
        let buf = req.encode_to_vec();
        let mut p = parse(&buf, Version::V2).unwrap();
        let (flags, full) = p.flags_and_check(&buf, 0);
        if flags != 0 {
            assert_eq!(full, Ok(flags), "{refs:?}");
        }
        assert_eq!(p.validate(&buf, 0), full.clone().map(|_| ()));
        (flags, full.is_ok())
    };
    let clean = (CHECKED | SORTED, true);
    assert_eq!(settled(&symbols, &[1, 2, 3, 4, 6, 7], false), clean);
    // The other "job" symbol ranks with the first.
    assert_eq!(settled(&symbols, &[1, 2, 5, 4], false), clean);
    let cases: [&[u32]; 6] = [
        &[3, 4, 1, 2],       // unsorted: the walk accepts it
        &[1, 2, 3, 4, 5, 4], // "job" twice, by two symbols
        &[1, 2, 3, 4, 3, 4], // "job" twice, by one
        &[3, 4],             // no __name__
        &[1, 0, 3, 4],       // __name__ empty
        &[0, 4, 1, 2],       // an empty name
    ];
    let walk: Vec<bool> = cases
        .iter()
        .map(|refs| {
            let (flags, ok) = settled(&symbols, refs, false);
            assert_eq!(flags, 0, "{refs:?}");
            ok
        })
        .collect();
    assert_eq!(walk, [true, false, false, false, false, false]);
    assert_eq!(settled(&symbols, &[1, 2], true).0, 0, "a native histogram");
    // No labels at all.
    assert_eq!(settled(&symbols, &[], false), (0, false));
}

fn v2_req(symbols: &[&str], refs: &[u32]) -> Vec<u8> {
    v2::Request {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        timeseries: vec![v2::TimeSeries {
            labels_refs: refs.to_vec(),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn v2_structural_errors() {
    assert_eq!(
        parse(&v2_req(&["x", "a"], &[1, 1]), Version::V2).err(),
        Some(WireError::FirstSymbolNotEmpty)
    );
    assert_eq!(
        parse(&v2_req(&["", "a"], &[1, 1, 1]), Version::V2).err(),
        Some(WireError::OddLabelRefs { series: 0 })
    );
    assert_eq!(
        parse(&v2_req(&["", "a"], &[1, 2]), Version::V2).err(),
        Some(WireError::SymbolOutOfRange {
            series: 0,
            reference: 2,
            symbols: 2
        })
    );
    // No symbols at all but refs.
    assert_eq!(
        parse(&v2_req(&[], &[0, 0]), Version::V2).err(),
        Some(WireError::SymbolOutOfRange {
            series: 0,
            reference: 0,
            symbols: 0
        })
    );
    // Metadata refs are checked too.
    let meta = v2::Request {
        symbols: vec!["".into(), "a".into()],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 1],
            metadata: Some(v2::Metadata {
                r#type: 1,
                help_ref: 9,
                unit_ref: 0,
            }),
            ..Default::default()
        }],
    };
    assert!(matches!(
        parse(&meta.encode_to_vec(), Version::V2),
        Err(WireError::SymbolOutOfRange { reference: 9, .. })
    ));
    // v1 bytes read as v2 are an empty request (fields 1–3 are reserved in v2).
    let v1_bytes = v1::WriteRequest {
        timeseries: vec![v1_series(&[("__name__", "up")])],
        metadata: vec![],
    }
    .encode_to_vec();
    assert!(parse(&v1_bytes, Version::V2).unwrap().is_empty());
}

#[test]
fn limits_are_enforced() {
    let req = v1::WriteRequest {
        timeseries: vec![v1_series(&[("__name__", "up"), ("job", "abcdef")]); 3],
        metadata: vec![],
    };
    let buf = req.encode_to_vec();
    let mut p = Parsed::new();
    let tight = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        l
    };
    let cases = [
        (
            tight(|l| l.max_series = 2),
            WireError::TooManySeries { limit: 2 },
        ),
        (
            tight(|l| l.max_labels_per_series = 1),
            WireError::TooManyLabels {
                series: 0,
                limit: 1,
            },
        ),
        (
            tight(|l| l.max_label_name_bytes = 4),
            WireError::LabelNameTooLong {
                series: 0,
                limit: 4,
            },
        ),
        (
            tight(|l| l.max_label_value_bytes = 5),
            WireError::LabelValueTooLong {
                series: 0,
                limit: 5,
            },
        ),
    ];
    for (limits, want) in cases {
        assert_eq!(p.parse(&buf, Version::V1, &limits), Err(want));
        assert!(p.is_empty());
    }
    let v2 = v2_req(&["", "__name__", "up", "x"], &[1, 2]);
    let l = tight(|l| l.max_symbols = 3);
    assert_eq!(
        p.parse(&v2, Version::V2, &l),
        Err(WireError::TooManySymbols { limit: 3 })
    );
    let l = tight(|l| l.max_label_value_bytes = 1);
    assert_eq!(
        p.parse(&v2, Version::V2, &l),
        Err(WireError::LabelValueTooLong {
            series: 0,
            limit: 1
        })
    );
}

/// A 2.0 request's labels are checked one by one only when some symbol is longer than a cap;
/// then each name and value against its own.
#[test]
fn v2_label_caps_hold_whichever_symbol_is_longest() {
    // `__name__` (8 bytes) is the longest name; the 20-byte symbol is only a value. (A symbol
    // over both caps is refused as it is read, `SymbolTooLong`.)
    let v2 = v2_req(
        &["", "__name__", "up", "job", "a-value-of-20-bytes!"],
        &[1, 2, 3, 4],
    );
    let caps = |name: usize, value: usize| Limits {
        max_label_name_bytes: name,
        max_label_value_bytes: value,
        ..Limits::default()
    };
    let mut p = Parsed::new();
    assert_eq!(p.parse(&v2, Version::V2, &caps(8, 20)), Ok(()));
    assert_eq!(
        p.parse(&v2, Version::V2, &caps(7, 20)),
        Err(WireError::LabelNameTooLong {
            series: 0,
            limit: 7
        })
    );
    assert_eq!(
        p.parse(&v2, Version::V2, &caps(30, 19)),
        Err(WireError::LabelValueTooLong {
            series: 0,
            limit: 19
        })
    );
    // A symbol no label uses (here one longer than both caps' smaller one) breaks nothing.
    let unused = v2_req(&["", "__name__", "up", "a-value-of-20-bytes!"], &[1, 2]);
    assert_eq!(p.parse(&unused, Version::V2, &caps(8, 20)), Ok(()));
}

#[test]
fn malformed_framing_is_a_protobuf_error_with_offset() {
    // Group wire type at the top level.
    assert!(matches!(
        parse(&[0x0b], Version::V1),
        Err(WireError::Protobuf { offset: 0, .. })
    ));
    // Series length past the end.
    assert!(matches!(
        parse(&[0x0a, 0x05, 0x0a], Version::V1),
        Err(WireError::Protobuf { offset: 1, .. })
    ));
    // TimeSeries as a varint.
    assert!(matches!(
        parse(&[0x08, 0x01], Version::V1),
        Err(WireError::Protobuf { .. })
    ));
    // Sample value with the wrong wire type inside a valid series.
    assert!(matches!(
        parse(&[0x0a, 0x04, 0x12, 0x02, 0x08, 0x01], Version::V1),
        Err(WireError::Protobuf { .. })
    ));
    // Unknown fields of every allowed wire type are skipped.
    let unknown = [
        0x30, 0x01, 0x39, 0, 0, 0, 0, 0, 0, 0, 0, 0x42, 0x01, 0xaa, 0x4d, 0, 0, 0, 0,
    ];
    assert!(parse(&unknown, Version::V1).unwrap().is_empty());
    assert!(parse(&unknown, Version::V2).unwrap().is_empty());
}

#[test]
fn stale_marker_keeps_its_bits() {
    let stale = f64::from_bits(strategies::STALE);
    let req = v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: vec![v1::Label {
                name: "__name__".into(),
                value: "up".into(),
            }],
            samples: vec![v1::Sample {
                value: stale,
                timestamp: 1,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let buf = req.encode_to_vec();
    let p = parse(&buf, Version::V1).unwrap();
    let s = p.series(&buf, 0).samples().next().unwrap();
    assert_eq!(s.value.to_bits(), strategies::STALE);
}

/// A capture from a real Prometheus, if one has been recorded (scripts/capture-payload.sh):
/// read exactly as prost reads it, and every series valid.
#[test]
fn captured_prometheus_payload_reads_like_prost() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/payloads/prometheus-capture.v1.bin");
    let Ok(body) = std::fs::read(&path) else {
        eprintln!("note: {} not found; skipped", path.display());
        return;
    };
    let mut buf = Vec::new();
    crate::wire::snappy::decompress(&body, 32 << 20, &mut buf).unwrap();
    let req = v1::WriteRequest::decode(buf.as_slice()).unwrap();
    let p = parse(&buf, Version::V1).unwrap();
    check_v1(&req, &buf, &p).unwrap();
    for (i, s) in p.iter(&buf).enumerate() {
        s.validate(i).unwrap();
    }
}

#[test]
fn v2_label_pairs_may_span_packed_and_unpacked_fields() {
    use crate::wire::proto::{begin_nested, end_nested, put_bytes};
    let mut buf = Vec::new();
    for s in ["", "a", "b"] {
        put_bytes(&mut buf, 4, s.as_bytes());
    }
    let s = begin_nested(&mut buf, 5);
    // Packed run holding only the name ref 1, then the value ref 2 unpacked, then an empty
    // packed run (no refs at all).
    buf.extend_from_slice(&[0x0a, 0x01, 0x01, 0x08, 0x02, 0x0a, 0x00]);
    end_nested(&mut buf, s);
    let p = parse(&buf, Version::V2).unwrap();
    let labels: Vec<_> = p.series(&buf, 0).labels().collect();
    assert_eq!(labels, [(&b"a"[..], &b"b"[..])]);

    // An empty packed run with no symbols is no reference.
    let empty = [0x2a, 0x02, 0x0a, 0x00];
    let p = parse(&empty, Version::V2).unwrap();
    assert_eq!(
        p.series(&empty, 0).validate(0),
        Err(WireError::NoLabels { series: 0 })
    );
}

/// A series' native histograms are checked by `validate`, not by the parse pass: a bad count
/// is a 400 naming the series.
#[test]
fn validate_refuses_a_histogram_whose_count_disagrees_with_its_buckets() {
    let h = |count| v1::Histogram {
        count: Some(v1::histogram::Count::CountInt(count)),
        positive_spans: vec![v1::BucketSpan {
            offset: 0,
            length: 2,
        }],
        positive_deltas: vec![1, 1],
        ..Default::default()
    };
    for (count, ok) in [(3, true), (99, false)] {
        let mut series = v1_series(&[("__name__", "h")]);
        series.histograms = vec![h(count)];
        let req = v1::WriteRequest {
            timeseries: vec![series],
            metadata: vec![],
        };
        let buf = req.encode_to_vec();
        let p = parse(&buf, Version::V1).unwrap();
        let got = p.series(&buf, 0).validate(0);
        assert_eq!(got.is_ok(), ok, "count {count}: {got:?}");
        if let Err(e) = got {
            assert_eq!(
                e.to_string(),
                "series 0: invalid native histogram: count is 99 but the buckets hold 3"
            );
        }
    }
}

/// The pass settles a series only when nothing is left for `validate` to find: each way a
/// Prometheus-shaped series can fall short of that leaves it to the walk, which then answers.
#[test]
fn the_pass_settles_only_clean_canonical_series() {
    let settled = |ts: v1::TimeSeries| {
        let req = v1::WriteRequest {
            timeseries: vec![ts],
            ..Default::default()
        };
        let buf = req.encode_to_vec();
        let mut p = parse(&buf, Version::V1).unwrap();
        let (flags, full) = p.flags_and_check(&buf, 0);
        assert_eq!(p.validate(&buf, 0), full.clone().map(|_| ()));
        (flags, full.is_ok())
    };
    let all = CHECKED | CANONICAL | SORTED;
    let good = [("__name__", "up"), ("job", "node"), ("zone", "a")];
    assert_eq!(settled(v1_series(&good)), (all, true));
    // Unsorted, duplicated, unnamed, empty name, non-ASCII: left to the walk.
    let cases: [&[(&str, &str)]; 6] = [
        &[("job", "node"), ("__name__", "up")],
        &[("__name__", "up"), ("job", "a"), ("job", "b")],
        &[("job", "node")],
        &[("__name__", ""), ("job", "node")],
        &[("", "x"), ("__name__", "up")],
        &[("__name__", "up"), ("city", "Zürich")],
    ];
    let walk: Vec<bool> = cases
        .iter()
        .map(|labels| {
            let (flags, ok) = settled(v1_series(labels));
            assert_eq!(flags, 0, "{labels:?}");
            ok
        })
        .collect();
    assert_eq!(walk, [true, false, false, false, false, true]);
    // A label after a sample, or a native histogram (whose counts the walk checks).
    let mut late = v1_series(&good[..2]);
    late.labels.push(v1::Label {
        name: "zone".into(),
        value: "a".into(),
    });
    let req = v1::WriteRequest {
        timeseries: vec![late],
        ..Default::default()
    };
    let mut buf = req.encode_to_vec();
    // prost writes labels before samples: move the last label's field after them.
    let label = [
        0x0a, 0x09, 0x0a, 0x04, b'z', b'o', b'n', b'e', 0x12, 0x01, b'a',
    ];
    let at = buf
        .windows(label.len())
        .position(|w| w == label)
        .expect("the label's field");
    let field: Vec<u8> = buf.drain(at..at + label.len()).collect();
    buf.extend_from_slice(&field);
    let p = parse(&buf, Version::V1).unwrap();
    assert_eq!(p.flags_and_check(&buf, 0), (0, Ok(CHECKED | SORTED)));
    let mut hist = v1_series(&good);
    hist.histograms.push(v1::Histogram::default());
    assert_eq!(settled(hist).0, 0);
}

/// Lazy mode (`Parsed::set_lazy_labels`) against the full pass over the same body: the same
/// outcome, the same series and labels, and for every series the same verdict whichever way
/// it is checked (`check_lazy` as the guard does, `Parsed::validate`, `SeriesView::validate`),
/// with the same flags afterwards.
fn lazy_agrees(buf: &[u8], limits: &Limits) -> Result<usize, TestCaseError> {
    let mut full = Parsed::new();
    let mut lazy = Parsed::new();
    lazy.set_lazy_labels(true);
    let (a, b) = (
        full.parse(buf, Version::V1, limits),
        lazy.parse(buf, Version::V1, limits),
    );
    prop_assert_eq!(
        a.as_ref().map_err(ToString::to_string),
        b.as_ref().map_err(ToString::to_string)
    );
    if a.is_err() {
        return Ok(0);
    }
    prop_assert_eq!(full.counts(), lazy.counts());
    prop_assert_eq!(full.len(), lazy.len());
    let mut lazies = 0;
    for i in 0..full.len() {
        let (f, l) = (full.series(buf, i), lazy.series(buf, i));
        prop_assert_eq!(
            f.labels().collect::<Vec<_>>(),
            l.labels().collect::<Vec<_>>()
        );
        prop_assert_eq!(f.label_count(), l.label_count());
        prop_assert_eq!(f.labels().count(), l.labels().count());
        prop_assert_eq!(f.label_bytes(), l.label_bytes());
        prop_assert_eq!(f.metric_name(), l.metric_name());
        prop_assert_eq!(f.label_fields(), l.label_fields());
        prop_assert_eq!(f.raw(), l.raw());
        prop_assert_eq!(
            f.samples().map(|s| s.timestamp).collect::<Vec<_>>(),
            l.samples().map(|s| s.timestamp).collect::<Vec<_>>()
        );
        prop_assert_eq!(f.canonical_labels(), l.canonical_labels());
        let plain = f.validate(i).map_err(|e| e.to_string());
        prop_assert_eq!(&plain, &l.validate(i).map_err(|e| e.to_string()));
        let checked = full.validate(buf, i).map_err(|e| e.to_string());
        prop_assert_eq!(&plain, &checked);
        if lazy.lazy(i) {
            lazies += 1;
            prop_assert!(l.sorted().is_none());
            let flags = l.check_lazy(i).map_err(|e| e.to_string());
            prop_assert_eq!(flags.as_ref().map(|_| ()), checked.as_ref().map(|_| ()));
            if let Ok(canonical) = flags {
                prop_assert_eq!(canonical, full.series[i].flags & CANONICAL != 0);
            }
        }
        prop_assert_eq!(&checked, &lazy.validate(buf, i).map_err(|e| e.to_string()));
        let (f, l) = (full.series(buf, i), lazy.series(buf, i));
        prop_assert_eq!(f.canonical_labels(), l.canonical_labels());
        prop_assert_eq!(f.sorted(), l.sorted());
        prop_assert_eq!(
            f.labels().collect::<Vec<_>>(),
            l.labels().collect::<Vec<_>>()
        );
    }
    prop_assert_eq!(lazy.has_lazy(), lazies > 0);
    prop_assert!(!full.has_lazy());
    Ok(lazies)
}

/// Series as Prometheus sends them (sorted, unique names, mostly short), with the odd one
/// out: no `__name__`, an empty name or value, non-ASCII, long strings, exemplars, samples
/// framed the long way round.
fn prometheus_like() -> impl Strategy<Value = v1::WriteRequest> {
    let series = (
        proptest::collection::btree_map(
            prop_oneof![6 => "[a-z_]{1,10}", 1 => Just(String::new()), 1 => "\\PC{1,4}"],
            prop_oneof![6 => "[ -~]{0,20}", 1 => "\\PC{0,6}", 1 => "[a-z]{100,130}"],
            0..8,
        ),
        any::<bool>(),
        0usize..3,
        any::<bool>(),
    )
        .prop_map(|(labels, named, samples, exemplar)| {
            let mut labels: Vec<v1::Label> = labels
                .into_iter()
                .map(|(name, value)| v1::Label { name, value })
                .collect();
            if named && !labels.iter().any(|l| l.name == "__name__") {
                let name = "__name__".to_owned();
                let at = labels.partition_point(|l| l.name < name);
                labels.insert(
                    at,
                    v1::Label {
                        name,
                        value: "up".into(),
                    },
                );
            }
            v1::TimeSeries {
                labels,
                samples: (0..samples)
                    .map(|k| v1::Sample {
                        value: k as f64,
                        timestamp: 1_700_000_000_000 + k as i64,
                    })
                    .collect(),
                exemplars: if exemplar {
                    vec![v1::Exemplar {
                        labels: vec![v1::Label {
                            name: "trace_id".into(),
                            value: "abc".into(),
                        }],
                        value: 1.0,
                        timestamp: 3,
                    }]
                } else {
                    Vec::new()
                },
                ..Default::default()
            }
        });
    proptest::collection::vec(series, 0..6).prop_map(|timeseries| v1::WriteRequest {
        timeseries,
        ..Default::default()
    })
}

proptest! {
    #[test]
    fn lazy_labels_read_like_the_full_pass(
        req in prop_oneof![prometheus_like(), strategies::v1_request()],
        tight in any::<bool>(),
    ) {
        lazy_agrees(&req.encode_to_vec(), &caps(tight))?;
    }

    #[test]
    fn lazy_labels_agree_on_hostile_bytes(bytes in hostile_bytes()) {
        let limits = hostile_caps();
        lazy_agrees(&bytes, &limits)?;
    }
}

/// Lazy mode over a 2.0 body against the full pass: a body is accepted, and each of its
/// series passes its check (`check_lazy` as the guard does, `Parsed::validate`), exactly when
/// the full pass accepts them, with the same labels. (Lazily, what depends on the symbols
/// table is found when a series is checked, not by the pass: which of several errors a bad
/// body is refused for may differ.)
fn lazy_v2_agrees(buf: &[u8], limits: &Limits) -> Result<usize, TestCaseError> {
    let mut full = Parsed::new();
    let mut lazy = Parsed::new();
    lazy.set_lazy_labels(true);
    let walked = full
        .parse(buf, Version::V2, limits)
        .and_then(|()| (0..full.len()).try_for_each(|i| full.validate(buf, i)));
    let Ok(()) = lazy.parse(buf, Version::V2, limits) else {
        prop_assert!(walked.is_err(), "lazily refused, accepted in full");
        return Ok(0);
    };
    let mut lazies = 0;
    let mut checked = Ok(());
    for i in 0..lazy.len() {
        if lazy.lazy(i) {
            lazies += 1;
            let check = lazy.series(buf, i).check_lazy(i);
            if let Ok(canonical) = check {
                prop_assert!(!canonical, "2.0 labels are never canonical where they lie");
            }
            let v = lazy.validate(buf, i);
            prop_assert_eq!(check.map(|_| ()), v.clone());
        }
        if let Err(e) = lazy.validate(buf, i) {
            checked = checked.and(Err(e));
            continue;
        }
        if walked.is_ok() {
            let (f, l) = (full.series(buf, i), lazy.series(buf, i));
            prop_assert_eq!(
                f.labels().collect::<Vec<_>>(),
                l.labels().collect::<Vec<_>>()
            );
            prop_assert_eq!(f.label_count(), l.label_count());
            prop_assert_eq!(f.label_bytes(), l.label_bytes());
            prop_assert_eq!(f.raw(), l.raw());
            prop_assert_eq!(f.sorted(), lazy.series(buf, i).sorted());
        }
    }
    prop_assert_eq!(
        walked.is_ok(),
        checked.is_ok(),
        "full: {:?}, lazy: {:?}",
        walked,
        checked
    );
    prop_assert_eq!(lazy.has_lazy(), lazies > 0);
    Ok(lazies)
}

proptest! {
    #[test]
    fn lazy_v2_labels_read_like_the_full_pass(
        req in prop_oneof![
            strategies::v2_request(),
            prometheus_like().prop_map(|r| crate::wire::testgen::v1_to_v2(&r)),
        ],
        tight in any::<bool>(),
    ) {
        lazy_v2_agrees(&req.encode_to_vec(), &caps(tight))?;
    }

    #[test]
    fn lazy_v2_labels_agree_on_hostile_bytes(bytes in hostile_bytes()) {
        lazy_v2_agrees(&bytes, &hostile_caps())?;
    }
}

/// Guessed runs (`Parsed::set_guessed_runs`) against lazy mode over the same body: a series
/// not guessed is recorded as lazy mode records it; a guessed one that settles is the lazy
/// record (one sample, the same labels and verdicts); a failed guessed parse fails lazily too;
/// and a guessed run that is the canonical encoding of the series' labels (what a run the
/// fresh table knows is, whatever the lengths of its strings) reads as those labels.
fn guesses_agree(buf: &[u8], limits: &Limits) -> Result<usize, TestCaseError> {
    let (mut full, mut lazy, mut guess) = (Parsed::new(), Parsed::new(), Parsed::new());
    lazy.set_lazy_labels(true);
    guess.set_lazy_labels(true);
    guess.set_guessed_runs(true);
    let full_ok = full.parse(buf, Version::V1, limits).is_ok();
    let lazy_ok = lazy.parse(buf, Version::V1, limits).is_ok();
    if guess.parse(buf, Version::V1, limits).is_err() {
        prop_assert!(!lazy_ok);
        return Ok(0);
    }
    let unsettled = (0..guess.len()).any(|i| !guess.settle_guess(buf, i));
    if !lazy_ok {
        // Only a series the guess skipped can hold what failed.
        prop_assert!(unsettled);
        return Ok(0);
    }
    prop_assert_eq!(lazy.len(), guess.len());
    let fields = |r: &SeriesRec| {
        (
            r.start,
            r.end,
            r.first_sample,
            r.samples,
            r.exemplars,
            r.histograms,
        )
    };
    let mut guessed = 0;
    for i in 0..guess.len() {
        let (g, l) = (guess.series[i], lazy.series[i]);
        let (gv, lv) = (guess.series(buf, i), lazy.series(buf, i));
        if g.flags & GUESSED == 0 {
            prop_assert_eq!(fields(&g), fields(&l));
            prop_assert_eq!(g.flags, l.flags);
            prop_assert!(gv.labels().eq(lv.labels()));
            continue;
        }
        guessed += 1;
        prop_assert_eq!(g.flags, LAZY | GUESSED);
        prop_assert_eq!((g.samples, g.exemplars, g.histograms), (1, 0, 0));
        if guess.settle_guess(buf, i) {
            prop_assert_eq!(fields(&g), fields(&l));
            prop_assert_eq!(l.flags, LAZY);
            prop_assert!(gv.labels().eq(lv.labels()));
            prop_assert_eq!(gv.label_count(), lv.label_count());
            prop_assert_eq!(
                gv.check_lazy(i).map_err(|e| e.to_string()),
                lv.check_lazy(i).map_err(|e| e.to_string())
            );
            prop_assert_eq!(gv.canonical_labels(), lv.canonical_labels());
        }
        if full_ok {
            let f = full.series(buf, i);
            let mut identity = crate::guard::identity::Identity::new();
            if identity.canonical(f.labels()) == gv.lazy_run().unwrap_or_default() {
                prop_assert!(gv.labels().eq(f.labels()));
                prop_assert_eq!(gv.label_count(), f.label_count());
                prop_assert_eq!(gv.label_bytes(), f.label_bytes());
                prop_assert_eq!(gv.metric_name(), f.metric_name());
            }
        }
    }
    if !unsettled {
        prop_assert_eq!(lazy.counts(), guess.counts());
    }
    Ok(guessed)
}

/// Caps low enough that `strategies::hostile_bytes` reach them, so the refusals are read too.
fn hostile_caps() -> Limits {
    Limits {
        max_labels_per_series: 6,
        max_label_value_bytes: 12,
        ..Limits::default()
    }
}

/// The default caps, or (`tight`) caps low enough that runs reach them.
fn caps(tight: bool) -> Limits {
    if tight {
        Limits {
            max_labels_per_series: 4,
            max_label_name_bytes: 8,
            max_label_value_bytes: 12,
            ..Limits::default()
        }
    } else {
        Limits::default()
    }
}

/// `prometheus_like` with no sample of value 0, which the encoder leaves out (a series then
/// ends in a sample that is not the plain one guessed).
fn guessable() -> impl Strategy<Value = v1::WriteRequest> {
    prometheus_like().prop_map(|mut req| {
        for s in &mut req.timeseries {
            for x in &mut s.samples {
                x.value += 0.5;
            }
        }
        req
    })
}

proptest! {
    #[test]
    fn guessed_runs_settle_as_lazy_reads(
        req in prop_oneof![guessable(), prometheus_like(), strategies::v1_request()],
        tight in any::<bool>(),
    ) {
        guesses_agree(&req.encode_to_vec(), &caps(tight))?;
    }

    #[test]
    fn guessed_runs_agree_on_hostile_bytes(bytes in hostile_bytes()) {
        let limits = hostile_caps();
        guesses_agree(&bytes, &limits)?;
    }
}

/// A run with a label longer than 127 bytes is guessed as any other (lazy mode walks only
/// one-byte lengths, so it does not settle), and reads as its labels: what the guard relies on
/// when its fresh table knows the run.
#[test]
fn a_guessed_run_reads_its_long_labels() {
    let long = "v".repeat(200);
    let req = v1::WriteRequest {
        timeseries: vec![
            v1_series(&[("__name__", "up"), ("job", "api")]),
            v1_series(&[("__name__", "up"), ("path", &long), ("zone", "a")]),
        ],
        ..Default::default()
    };
    let buf = req.encode_to_vec();
    let mut p = Parsed::new();
    p.set_lazy_labels(true);
    p.set_guessed_runs(true);
    p.parse(&buf, Version::V1, &Limits::default()).unwrap();
    assert!(p.guessed(0) && p.guessed(1));
    assert!(p.settle_guess(&buf, 0));
    assert!(!p.settle_guess(&buf, 1), "lazy mode reads it in full");
    let s = p.series(&buf, 1);
    let labels: Vec<_> = s.labels().collect();
    assert_eq!(
        labels,
        [
            (&b"__name__"[..], &b"up"[..]),
            (b"path", long.as_bytes()),
            (b"zone", b"a")
        ]
    );
    assert_eq!(s.label_count(), 3);
    assert_eq!(s.samples().count(), 1);
}

/// A series of two samples is guessed to end in one: its run then holds the other, and does
/// not settle.
#[test]
fn a_series_of_two_samples_does_not_settle() {
    let mut two = v1_series(&[("__name__", "up"), ("job", "api")]);
    two.samples.push(v1::Sample {
        value: 2.0,
        timestamp: 6,
    });
    let buf = v1::WriteRequest {
        timeseries: vec![two],
        ..Default::default()
    }
    .encode_to_vec();
    let mut p = Parsed::new();
    p.set_lazy_labels(true);
    p.set_guessed_runs(true);
    p.parse(&buf, Version::V1, &Limits::default()).unwrap();
    assert!(p.guessed(0));
    assert!(!p.settle_guess(&buf, 0));
}

#[test]
fn prometheus_series_are_read_lazily() {
    let req = v1::WriteRequest {
        timeseries: vec![
            v1_series(&[("__name__", "up"), ("job", "api")]),
            // Unsorted: still lazy (the framing is what counts), and found out when checked.
            v1_series(&[("job", "api"), ("__name__", "up")]),
        ],
        ..Default::default()
    };
    let buf = req.encode_to_vec();
    let mut p = Parsed::new();
    p.set_lazy_labels(true);
    p.parse(&buf, Version::V1, &Limits::default()).unwrap();
    assert!(p.has_lazy() && p.lazy(0) && p.lazy(1));
    assert!(p.labels.is_empty(), "no label records");
    let (a, b) = (p.series(&buf, 0), p.series(&buf, 1));
    assert!(a.check_lazy(0).unwrap());
    assert!(!b.check_lazy(1).unwrap());
    assert_eq!(a.lazy_run(), a.label_fields());
    assert_eq!(b.metric_name(), Some(&b"up"[..]));
}
