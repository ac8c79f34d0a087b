//! Pieces of a body the upstream refused as too large (413): the body decoded once, then any
//! range of its series encoded again as a request of its own, in the body's remote-write
//! version and with nothing about the series changed.
//!
//! v1: the writer copies the series as raw bytes; the request-level metadata goes with the
//! piece that starts at the first series. v2: a piece gets a symbols table of only the strings
//! its series use (labels, exemplar labels, metadata help and unit), their refs renumbered;
//! with the writer's raw copies every piece would carry the whole table, and a table of
//! per-series label values (pod names, ids) would keep every piece as large as the limit. This
//! runs only after a 413, so it uses the prost reference messages rather than a hand-written
//! encoder.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use prost::Message;

use crate::wire::types::v2;
use crate::wire::{self, Limits, Parsed, Version, Writer};

/// The body was built by cardguard from a request already held to the configured caps: these
/// only stop a bug from turning into an unbounded allocation.
const LIMITS: Limits = Limits {
    max_decoded_bytes: 1 << 30,
    max_series: 10_000_000,
    max_labels_per_series: 1 << 16,
    max_label_name_bytes: 1 << 20,
    max_label_value_bytes: 1 << 24,
    max_symbols: 100_000_000,
    max_output_bytes: 1 << 30,
};

/// A decoded body, ready to be cut by series.
pub struct Pieces {
    source: Source,
    compressed: Vec<u8>,
}

enum Source {
    V1 {
        decoded: Vec<u8>,
        parsed: Box<Parsed>,
        writer: Box<Writer>,
    },
    V2(v2::Request),
}

impl Pieces {
    /// `None` when the body does not decode (then it cannot be split either).
    pub fn new(body: &[u8], version: Version) -> Option<Pieces> {
        let mut decoded = Vec::new();
        wire::snappy::decompress(body, LIMITS.max_decoded_bytes, &mut decoded).ok()?;
        let source = match version {
            Version::V1 => {
                let mut parsed = Box::new(Parsed::new());
                parsed.parse(&decoded, version, &LIMITS).ok()?;
                Source::V1 {
                    decoded,
                    parsed,
                    writer: Box::new(Writer::new(version)),
                }
            }
            Version::V2 => {
                let req = v2::Request::decode(decoded.as_slice()).ok()?;
                let n = req.symbols.len();
                let refs_ok = req.timeseries.iter().all(|ts| {
                    ts.labels_refs
                        .iter()
                        .chain(ts.exemplars.iter().flat_map(|e| &e.labels_refs))
                        .chain(ts.metadata.iter().flat_map(|m| [&m.help_ref, &m.unit_ref]))
                        .all(|&r| (r as usize) < n)
                });
                if !refs_ok {
                    return None;
                }
                Source::V2(req)
            }
        };
        Some(Pieces {
            source,
            compressed: Vec::new(),
        })
    }

    /// Series in the body.
    pub fn series(&self) -> usize {
        match &self.source {
            Source::V1 { parsed, .. } => parsed.len(),
            Source::V2(req) => req.timeseries.len(),
        }
    }

    /// The snappy-compressed request of the series in `range`; `None` only if a piece would
    /// be larger than any body cardguard builds (it never is: a piece is part of a body that
    /// was built under the limits).
    pub fn encode(&mut self, range: Range<usize>) -> Option<Bytes> {
        match &mut self.source {
            Source::V1 {
                decoded,
                parsed,
                writer,
            } => {
                let first = range.start == 0;
                writer.begin(parsed, decoded);
                for i in range {
                    writer.copy_series(parsed, decoded, i);
                }
                if first {
                    writer.copy_metadata(parsed, decoded);
                }
                wire::snappy::compress(writer.finish().ok()?, &mut self.compressed);
            }
            Source::V2(req) => {
                let piece = v2_piece(req, range);
                wire::snappy::compress(&piece.encode_to_vec(), &mut self.compressed);
            }
        }
        Some(Bytes::copy_from_slice(&self.compressed))
    }
}

/// The series of `range` with a symbols table of the strings they use, refs renumbered.
/// Refs were checked in range by `Pieces::new`.
fn v2_piece(req: &v2::Request, range: Range<usize>) -> v2::Request {
    let mut symbols = vec![String::new()];
    let mut renumbered: HashMap<u32, u32> = HashMap::from([(0, 0)]);
    let mut map = |r: &mut u32| {
        *r = *renumbered.entry(*r).or_insert_with(|| {
            symbols.push(req.symbols[*r as usize].clone());
            (symbols.len() - 1) as u32
        });
    };
    let mut timeseries = req.timeseries[range].to_vec();
    for ts in &mut timeseries {
        ts.labels_refs.iter_mut().for_each(&mut map);
        for e in &mut ts.exemplars {
            e.labels_refs.iter_mut().for_each(&mut map);
        }
        if let Some(m) = &mut ts.metadata {
            map(&mut m.help_ref);
            map(&mut m.unit_ref);
        }
    }
    v2::Request {
        symbols,
        timeseries,
    }
}

/// `range` cut in two, the first half first; `None` for a single series.
pub fn halves(range: Range<usize>) -> Option<(Range<usize>, Range<usize>)> {
    if range.len() < 2 {
        return None;
    }
    let mid = range.start + range.len() / 2;
    Some((range.start..mid, mid..range.end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::OwnedSeries;

    fn body(version: Version, n: usize) -> Vec<u8> {
        let mut w = Writer::new(version);
        for k in 0..n {
            w.push_series(&OwnedSeries {
                histograms: Vec::new(),
                labels: vec![
                    ("__name__".into(), "m".into()),
                    ("k".into(), format!("{k:04}")),
                ],
                samples: vec![(k as f64, 1_700_000_000_000)],
            });
        }
        let mut out = Vec::new();
        wire::snappy::compress(w.finish().unwrap(), &mut out);
        out
    }

    /// The `k` label of every series in a compressed body.
    fn keys(body: &[u8], version: Version) -> Vec<String> {
        let mut decoded = Vec::new();
        wire::snappy::decompress(body, 1 << 20, &mut decoded).unwrap();
        let mut parsed = Parsed::new();
        parsed.parse(&decoded, version, &Limits::default()).unwrap();
        parsed
            .iter(&decoded)
            .map(|s| {
                let (_, v) = s.labels().find(|(n, _)| *n == b"k").unwrap();
                String::from_utf8(v.to_vec()).unwrap()
            })
            .collect()
    }

    #[test]
    fn pieces_carry_their_series_in_order_in_the_same_version() {
        for version in [Version::V1, Version::V2] {
            let original = body(version, 5);
            let mut p = Pieces::new(&original, version).unwrap();
            assert_eq!(p.series(), 5);
            let (a, b) = halves(0..5).unwrap();
            assert_eq!((a.clone(), b.clone()), (0..2, 2..5));
            let (a, b) = (p.encode(a).unwrap(), p.encode(b).unwrap());
            assert_eq!(keys(&a, version), ["0000", "0001"], "{version:?}");
            assert_eq!(keys(&b, version), ["0002", "0003", "0004"], "{version:?}");
            assert!(a.len() < original.len() && b.len() < original.len());
            // The whole range is the same request again.
            assert_eq!(keys(&p.encode(0..5).unwrap(), version).len(), 5);
        }
        assert_eq!(halves(3..4), None);
        assert_eq!(halves(3..5), Some((3..4, 4..5)));
    }

    #[test]
    fn v1_metadata_goes_with_the_first_piece() {
        use crate::wire::types::v1;
        use prost::Message;
        let req = v1::WriteRequest {
            timeseries: (0..2)
                .map(|k| v1::TimeSeries {
                    labels: vec![v1::Label {
                        name: "__name__".into(),
                        value: format!("m{k}"),
                    }],
                    samples: vec![v1::Sample {
                        value: 1.0,
                        timestamp: 1,
                    }],
                    ..Default::default()
                })
                .collect(),
            metadata: vec![v1::MetricMetadata {
                metric_family_name: "m0".into(),
                help: "help".into(),
                ..Default::default()
            }],
        };
        let mut compressed = Vec::new();
        wire::snappy::compress(&req.encode_to_vec(), &mut compressed);
        let mut p = Pieces::new(&compressed, Version::V1).unwrap();
        let decode = |b: Bytes| {
            let mut raw = Vec::new();
            wire::snappy::decompress(&b, 1 << 20, &mut raw).unwrap();
            v1::WriteRequest::decode(raw.as_slice()).unwrap()
        };
        let (a, b) = (
            decode(p.encode(0..1).unwrap()),
            decode(p.encode(1..2).unwrap()),
        );
        assert_eq!((a.timeseries.len(), a.metadata.len()), (1, 1));
        assert_eq!((b.timeseries.len(), b.metadata.len()), (1, 0));
    }

    /// A v2 piece carries only its own strings, refs renumbered, exemplars and metadata too.
    #[test]
    fn v2_pieces_have_a_table_of_their_own_strings() {
        let s = |x: &str| x.to_string();
        let req = v2::Request {
            symbols: [
                "", "__name__", "m", "pod", "a", "b", "trace_id", "t1", "help", "bytes",
            ]
            .map(s)
            .to_vec(),
            timeseries: vec![
                v2::TimeSeries {
                    labels_refs: vec![1, 2, 3, 4],
                    samples: vec![v2::Sample {
                        value: 1.0,
                        timestamp: 1,
                        start_timestamp: 0,
                    }],
                    ..Default::default()
                },
                v2::TimeSeries {
                    labels_refs: vec![1, 2, 3, 5],
                    exemplars: vec![v2::Exemplar {
                        labels_refs: vec![6, 7],
                        value: 1.0,
                        timestamp: 1,
                    }],
                    metadata: Some(v2::Metadata {
                        r#type: 1,
                        help_ref: 8,
                        unit_ref: 9,
                    }),
                    ..Default::default()
                },
            ],
        };
        let mut compressed = Vec::new();
        wire::snappy::compress(&req.encode_to_vec(), &mut compressed);
        let mut p = Pieces::new(&compressed, Version::V2).unwrap();
        let decode = |b: Bytes| {
            let mut raw = Vec::new();
            wire::snappy::decompress(&b, 1 << 20, &mut raw).unwrap();
            v2::Request::decode(raw.as_slice()).unwrap()
        };
        let second = decode(p.encode(1..2).unwrap());
        assert_eq!(
            second.symbols,
            ["", "__name__", "m", "pod", "b", "trace_id", "t1", "help", "bytes"].map(s)
        );
        let ts = &second.timeseries[0];
        assert_eq!(ts.labels_refs, [1, 2, 3, 4]);
        assert_eq!(ts.exemplars[0].labels_refs, [5, 6]);
        assert_eq!(
            ts.metadata.as_ref().map(|m| (m.help_ref, m.unit_ref)),
            Some((7, 8))
        );
        let first = decode(p.encode(0..1).unwrap());
        assert_eq!(first.symbols, ["", "__name__", "m", "pod", "a"].map(s));
        assert_eq!(first.timeseries, req.timeseries[..1]);
        // Refs out of range are refused, not followed.
        let mut bad = req.clone();
        bad.timeseries[0].labels_refs[3] = 10;
        wire::snappy::compress(&bad.encode_to_vec(), &mut compressed);
        assert!(Pieces::new(&compressed, Version::V2).is_none());
    }

    #[test]
    fn a_body_that_does_not_decode_has_no_pieces() {
        assert!(Pieces::new(b"not snappy", Version::V1).is_none());
    }
}
