//! Pieces of a body the upstream refused as too large (413): the body decoded once, then any
//! range of its series re-encoded by the writer, in the body's own remote-write version.
//!
//! Series are copied as raw bytes (same version in and out), so nothing about them changes.
//! v1 request-level metadata goes with the piece that starts at the first series. A v2 piece
//! carries the whole symbols table (its series' refs point into it): halving shrinks the
//! series bytes only, so a v2 body whose table alone is over the upstream's limit cannot be
//! delivered this way (the sender then gets 503, as without splitting).

use std::ops::Range;

use bytes::Bytes;

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
};

/// A decoded body, ready to be cut by series.
pub struct Pieces {
    decoded: Vec<u8>,
    parsed: Parsed,
    writer: Writer,
    compressed: Vec<u8>,
}

impl Pieces {
    /// `None` when the body does not decode (then it cannot be split either).
    pub fn new(body: &[u8], version: Version) -> Option<Pieces> {
        let mut decoded = Vec::new();
        wire::snappy::decompress(body, LIMITS.max_decoded_bytes, &mut decoded).ok()?;
        let mut parsed = Parsed::new();
        parsed.parse(&decoded, version, &LIMITS).ok()?;
        Some(Pieces {
            decoded,
            parsed,
            writer: Writer::new(version),
            compressed: Vec::new(),
        })
    }

    /// Series in the body.
    pub fn series(&self) -> usize {
        self.parsed.len()
    }

    /// The snappy-compressed request of the series in `range`.
    pub fn encode(&mut self, range: Range<usize>) -> Bytes {
        let (req, buf) = (&self.parsed, self.decoded.as_slice());
        let first = range.start == 0;
        self.writer.begin(req, buf);
        for i in range {
            self.writer.copy_series(req, buf, i);
        }
        if first {
            self.writer.copy_metadata(req, buf);
        }
        wire::snappy::compress(self.writer.finish(), &mut self.compressed);
        Bytes::copy_from_slice(&self.compressed)
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
                labels: vec![
                    ("__name__".into(), "m".into()),
                    ("k".into(), format!("{k:04}")),
                ],
                samples: vec![(k as f64, 1_700_000_000_000)],
            });
        }
        let mut out = Vec::new();
        wire::snappy::compress(w.finish(), &mut out);
        out
    }

    /// The `k` label of every series in a compressed body.
    fn keys(body: &[u8], version: Version) -> Vec<String> {
        let p = Pieces::new(body, version).unwrap();
        p.parsed
            .iter(&p.decoded)
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
            let (a, b) = (p.encode(a), p.encode(b));
            assert_eq!(keys(&a, version), ["0000", "0001"], "{version:?}");
            assert_eq!(keys(&b, version), ["0002", "0003", "0004"], "{version:?}");
            assert!(a.len() < original.len() && b.len() < original.len());
            // The whole range is the same request again.
            assert_eq!(keys(&p.encode(0..5), version).len(), 5);
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
        let (a, b) = (decode(p.encode(0..1)), decode(p.encode(1..2)));
        assert_eq!((a.timeseries.len(), a.metadata.len()), (1, 1));
        assert_eq!((b.timeseries.len(), b.metadata.len()), (1, 0));
    }

    #[test]
    fn a_body_that_does_not_decode_has_no_pieces() {
        assert!(Pieces::new(b"not snappy", Version::V1).is_none());
    }
}
