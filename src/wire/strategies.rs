//! proptest strategies for random v1 and v2 requests, and a resolved form of a series for
//! comparing what the reader and writer produce with the prost reference types.

use proptest::collection::vec;
use proptest::prelude::*;

use super::testgen::histogram_v1_to_v2;
use super::types::{v1, v2};

/// The stale marker (docs/protocol.md §1): a signalling NaN that must survive bit for bit.
pub const STALE: u64 = 0x7ff0_0000_0000_0002;

pub fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => any::<u64>().prop_map(f64::from_bits),
        1 => Just(f64::from_bits(STALE)),
        1 => Just(f64::from_bits(0x7ff8_0000_0000_0001)),
        1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(0.0), Just(-0.0)],
    ]
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![3 => 1_600_000_000_000i64..1_900_000_000_000, 1 => any::<i64>(), 1 => Just(0i64)]
}

pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-zA-Z_][a-zA-Z0-9_]{0,12}",
        1 => Just("__name__".to_owned()),
        1 => "\\PC{0,6}",
    ]
}

pub fn value() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z0-9_.:-]{0,16}", 2 => "\\PC{0,10}", 1 => Just(String::new())]
}

pub fn labels(max: usize) -> impl Strategy<Value = Vec<(String, String)>> {
    vec((name(), value()), 0..max)
}

fn v1_labels(max: usize) -> impl Strategy<Value = Vec<v1::Label>> {
    labels(max).prop_map(|ls| {
        ls.into_iter()
            .map(|(name, value)| v1::Label { name, value })
            .collect()
    })
}

fn span() -> impl Strategy<Value = v1::BucketSpan> {
    (any::<i32>(), any::<u32>()).prop_map(|(offset, length)| v1::BucketSpan { offset, length })
}

pub fn histogram() -> impl Strategy<Value = v1::Histogram> {
    use v1::histogram::{Count, ZeroCount};
    let int = (
        any::<u64>(),
        any::<u64>(),
        vec(any::<i64>(), 0..4),
        vec(any::<i64>(), 0..4),
    )
        .prop_map(|(c, z, n, p)| {
            (
                Some(Count::CountInt(c)),
                Some(ZeroCount::ZeroCountInt(z)),
                n,
                p,
                vec![],
                vec![],
            )
        });
    let floating =
        (float(), float(), vec(float(), 0..4), vec(float(), 0..4)).prop_map(|(c, z, n, p)| {
            (
                Some(Count::CountFloat(c)),
                Some(ZeroCount::ZeroCountFloat(z)),
                vec![],
                vec![],
                n,
                p,
            )
        });
    (
        prop_oneof![int, floating],
        (float(), -53i32..9, float(), 0i32..4, timestamp()),
        (vec(span(), 0..3), vec(span(), 0..3), vec(float(), 0..3)),
    )
        .prop_map(
            |(
                (count, zero_count, nd, pd, nc, pc),
                (sum, schema, zt, reset_hint, ts),
                (ns, ps, custom),
            )| {
                v1::Histogram {
                    count,
                    sum,
                    schema,
                    zero_threshold: zt,
                    zero_count,
                    negative_spans: ns,
                    negative_deltas: nd,
                    negative_counts: nc,
                    positive_spans: ps,
                    positive_deltas: pd,
                    positive_counts: pc,
                    reset_hint,
                    timestamp: ts,
                    custom_values: custom,
                }
            },
        )
}

fn v1_series() -> impl Strategy<Value = v1::TimeSeries> {
    (
        v1_labels(8),
        vec(
            (float(), timestamp()).prop_map(|(value, timestamp)| v1::Sample { value, timestamp }),
            0..4,
        ),
        vec(
            (v1_labels(3), float(), timestamp()).prop_map(|(labels, value, timestamp)| {
                v1::Exemplar {
                    labels,
                    value,
                    timestamp,
                }
            }),
            0..3,
        ),
        vec(histogram(), 0..2),
    )
        .prop_map(|(labels, samples, exemplars, histograms)| v1::TimeSeries {
            labels,
            samples,
            exemplars,
            histograms,
        })
}

fn v1_metadata() -> impl Strategy<Value = v1::MetricMetadata> {
    (0i32..8, name(), value(), value()).prop_map(|(r#type, metric_family_name, help, unit)| {
        v1::MetricMetadata {
            r#type,
            metric_family_name,
            help,
            unit,
        }
    })
}

/// A random v1 request, round-tripped through prost so that it is exactly what prost decodes
/// from its own encoding (prost drops −0.0 scalars, for one).
pub fn v1_request() -> impl Strategy<Value = v1::WriteRequest> {
    (vec(v1_series(), 0..8), vec(v1_metadata(), 0..4)).prop_map(|(timeseries, metadata)| {
        let req = v1::WriteRequest {
            timeseries,
            metadata,
        };
        prost::Message::decode(prost::Message::encode_to_vec(&req).as_slice())
            .expect("prost round trip")
    })
}

/// A random v2 request: v1 series translated, plus start timestamps and per-series metadata.
pub fn v2_request() -> impl Strategy<Value = v2::Request> {
    let extra = vec(
        (
            vec(timestamp(), 0..4),
            vec(timestamp(), 0..2),
            proptest::option::of((0i32..8, value(), value())),
        ),
        8,
    );
    (v1_request(), extra).prop_map(|(req, extra)| {
        let mut out = super::testgen::v1_to_v2(&req);
        for (ts, (sts, hsts, meta)) in out.timeseries.iter_mut().zip(extra) {
            for (s, st) in ts.samples.iter_mut().zip(sts) {
                s.start_timestamp = st;
            }
            for (h, st) in ts.histograms.iter_mut().zip(hsts) {
                h.start_timestamp = st;
            }
            ts.metadata = meta.map(|(t, help, unit)| v2::Metadata {
                r#type: t,
                help_ref: intern(&mut out.symbols, &help),
                unit_ref: intern(&mut out.symbols, &unit),
            });
        }
        prost::Message::decode(prost::Message::encode_to_vec(&out).as_slice())
            .expect("prost round trip")
    })
}

fn intern(symbols: &mut Vec<String>, s: &str) -> u32 {
    match symbols.iter().position(|x| x == s) {
        Some(i) => i as u32,
        None => {
            symbols.push(s.to_owned());
            (symbols.len() - 1) as u32
        }
    }
}

/// `(labels, value bits, timestamp)`
pub type ResolvedExemplar = (Vec<(String, String)>, u64, i64);

/// A series with everything resolved to strings and floats to bits, comparable across
/// versions. Histograms are their prost encoding as v2 messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub labels: Vec<(String, String)>,
    /// `(value bits, timestamp, start_timestamp)`
    pub samples: Vec<(u64, i64, i64)>,
    pub histograms: Vec<Vec<u8>>,
    pub exemplars: Vec<ResolvedExemplar>,
    /// `(type, help, unit)`
    pub metadata: Option<(i32, String, String)>,
}

fn pairs(labels: &[v1::Label]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

pub fn resolve_v1(ts: &v1::TimeSeries) -> Resolved {
    Resolved {
        labels: pairs(&ts.labels),
        samples: ts
            .samples
            .iter()
            .map(|s| (s.value.to_bits(), s.timestamp, 0))
            .collect(),
        histograms: ts
            .histograms
            .iter()
            .map(|h| prost::Message::encode_to_vec(&histogram_v1_to_v2(h)))
            .collect(),
        exemplars: ts
            .exemplars
            .iter()
            .map(|e| (pairs(&e.labels), e.value.to_bits(), e.timestamp))
            .collect(),
        metadata: None,
    }
}

pub fn resolve_v2(symbols: &[String], ts: &v2::TimeSeries) -> Resolved {
    let sym = |r: u32| symbols.get(r as usize).cloned().expect("ref in range");
    let refs = |r: &[u32]| {
        r.chunks(2)
            .map(|p| (sym(p[0]), sym(p[1])))
            .collect::<Vec<_>>()
    };
    Resolved {
        labels: refs(&ts.labels_refs),
        samples: ts
            .samples
            .iter()
            .map(|s| (s.value.to_bits(), s.timestamp, s.start_timestamp))
            .collect(),
        histograms: ts
            .histograms
            .iter()
            .map(prost::Message::encode_to_vec)
            .collect(),
        exemplars: ts
            .exemplars
            .iter()
            .map(|e| (refs(&e.labels_refs), e.value.to_bits(), e.timestamp))
            .collect(),
        metadata: ts
            .metadata
            .map(|m| (m.r#type, sym(m.help_ref), sym(m.unit_ref))),
    }
}

/// Arbitrary bytes, or a valid encoding with a few bytes flipped and a random cut (which
/// reaches far deeper into the parser than noise does).
pub fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        prop_oneof![
            v1_request().prop_map(|r| prost::Message::encode_to_vec(&r)),
            v2_request().prop_map(|r| prost::Message::encode_to_vec(&r)),
        ],
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut bytes, flips, cut)| {
            if !bytes.is_empty() {
                for (i, b) in flips {
                    let i = i.index(bytes.len());
                    bytes[i] = b;
                }
                let cut = cut.index(bytes.len() + 1);
                if cut % 3 == 0 {
                    bytes.truncate(cut);
                }
            }
            bytes
        });
    prop_oneof![vec(any::<u8>(), 0..256), mutated]
}
