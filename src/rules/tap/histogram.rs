//! Remote write's native histograms (v1 and v2 share the message) → the engine's sparse
//! histograms: integer bucket deltas summed into absolute counts, spans kept as they are.
//! The body was validated by the wire reader before the tap sees it.

use std::sync::Arc;

use prost::Message;

use crate::rules::promql::{Histogram, HistogramSample, ResetHint, Span, STALE_NAN_BITS};
use crate::wire::types::v1;

pub enum Decoded {
    Histogram(HistogramSample),
    /// A stale marker (the sum is Prometheus's stale NaN) at this timestamp.
    Stale(i64),
}

/// One histogram body; `None` if it does not decode (never after validation).
pub fn decode(raw: &[u8]) -> Option<Decoded> {
    let w = v1::Histogram::decode(raw).ok()?;
    if w.sum.to_bits() == STALE_NAN_BITS {
        return Some(Decoded::Stale(w.timestamp));
    }
    use v1::histogram::{Count, ZeroCount};
    let count = match w.count {
        Some(Count::CountInt(n)) => n as f64,
        Some(Count::CountFloat(f)) => f,
        None => 0.0,
    };
    let zero_count = match w.zero_count {
        Some(ZeroCount::ZeroCountInt(n)) => n as f64,
        Some(ZeroCount::ZeroCountFloat(f)) => f,
        None => 0.0,
    };
    let integer = matches!(w.count, Some(Count::CountInt(_)));
    let counts = |deltas: &[i64], floats: Vec<f64>| -> Vec<f64> {
        if !integer {
            return floats;
        }
        let mut acc = 0i64;
        deltas
            .iter()
            .map(|d| {
                acc = acc.wrapping_add(*d);
                acc as f64
            })
            .collect()
    };
    let spans = |s: &[v1::BucketSpan]| -> Vec<Span> {
        s.iter()
            .map(|s| Span {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    };
    let hint = match w.reset_hint {
        1 => ResetHint::Reset,
        2 => ResetHint::NotReset,
        3 => ResetHint::Gauge,
        _ => ResetHint::Unknown,
    };
    let h = Histogram {
        hint,
        schema: w.schema,
        zero_threshold: w.zero_threshold,
        zero_count,
        count,
        sum: w.sum,
        positive_spans: spans(&w.positive_spans),
        positive: counts(&w.positive_deltas, w.positive_counts),
        negative_spans: spans(&w.negative_spans),
        negative: counts(&w.negative_deltas, w.negative_counts),
        custom_values: w.custom_values.into(),
    };
    Some(Decoded::Histogram(HistogramSample {
        t: w.timestamp,
        h: Arc::new(h),
    }))
}

/// `decode` of bytes that no request validated (a snapshot's): the wire reader's framing and
/// histogram checks first, so that nothing the engine's bucket walks could trip on gets in.
pub fn decode_checked(raw: &[u8]) -> Option<Decoded> {
    crate::wire::reader::check_framing(raw, 0..raw.len()).ok()?;
    crate::wire::reader::histogram::check(raw, 0..raw.len()).ok()?;
    decode(raw)
}

/// The wire message for a histogram the engine computed (always a float histogram).
pub fn encode(t: i64, h: &Histogram) -> v1::Histogram {
    let spans = |s: &[Span]| -> Vec<v1::BucketSpan> {
        s.iter()
            .map(|s| v1::BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    };
    v1::Histogram {
        count: Some(v1::histogram::Count::CountFloat(h.count)),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: Some(v1::histogram::ZeroCount::ZeroCountFloat(h.zero_count)),
        negative_spans: spans(&h.negative_spans),
        negative_deltas: Vec::new(),
        negative_counts: h.negative.clone(),
        positive_spans: spans(&h.positive_spans),
        positive_deltas: Vec::new(),
        positive_counts: h.positive.clone(),
        reset_hint: match h.hint {
            ResetHint::Unknown => 0,
            ResetHint::Reset => 1,
            ResetHint::NotReset => 2,
            ResetHint::Gauge => 3,
        },
        timestamp: t,
        custom_values: h.custom_values.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn histogram() -> impl Strategy<Value = Histogram> {
        (
            prop_oneof![
                (-4i32..=8),
                Just(crate::rules::promql::CUSTOM_BUCKETS_SCHEMA)
            ],
            proptest::collection::vec((-3i32..5, 1u32..4), 0..4),
            proptest::collection::vec(0.0f64..1e6, 0..12),
            (0.0f64..1e6, -1e6f64..1e6, 0.0f64..1.0, 0u8..4),
        )
            .prop_map(|(schema, spans, counts, (count, sum, zt, hint))| {
                let spans: Vec<Span> = spans
                    .into_iter()
                    .map(|(offset, length)| Span { offset, length })
                    .collect();
                let n = spans.iter().map(|s| s.length as usize).sum::<usize>();
                let positive: Vec<f64> = counts.iter().cycle().take(n).copied().collect();
                let positive = if counts.is_empty() {
                    vec![0.0; n]
                } else {
                    positive
                };
                let custom = schema == crate::rules::promql::CUSTOM_BUCKETS_SCHEMA;
                Histogram {
                    hint: [
                        ResetHint::Unknown,
                        ResetHint::Reset,
                        ResetHint::NotReset,
                        ResetHint::Gauge,
                    ][hint as usize],
                    schema,
                    zero_threshold: if custom { 0.0 } else { zt },
                    zero_count: if custom { 0.0 } else { count / 2.0 },
                    count,
                    sum,
                    negative_spans: if custom { Vec::new() } else { spans.clone() },
                    negative: if custom { Vec::new() } else { positive.clone() },
                    positive_spans: spans,
                    positive,
                    custom_values: if custom {
                        vec![0.5, 1.0, 2.5].into()
                    } else {
                        Vec::new().into()
                    },
                }
            })
    }

    proptest! {
        /// What the rules write is what the tap reads back (and what prost decodes).
        #[test]
        fn encode_then_decode_is_the_identity(h in histogram(), t in any::<i64>()) {
            let raw = encode(t, &h).encode_to_vec();
            let Some(Decoded::Histogram(back)) = decode(&raw) else {
                panic!("did not decode");
            };
            prop_assert_eq!(back.t, t);
            prop_assert_eq!(&*back.h, &h);
        }

        /// Integer histograms: bucket deltas become absolute counts.
        #[test]
        fn integer_deltas_become_counts(deltas in proptest::collection::vec(-5i64..10, 1..8)) {
            let w = v1::Histogram {
                count: Some(v1::histogram::Count::CountInt(7)),
                positive_spans: vec![v1::BucketSpan { offset: 2, length: deltas.len() as u32 }],
                positive_deltas: deltas.clone(),
                ..v1::Histogram::default()
            };
            let Some(Decoded::Histogram(h)) = decode(&w.encode_to_vec()) else {
                panic!("did not decode");
            };
            let mut acc = 0;
            let want: Vec<f64> = deltas.iter().map(|d| { acc += d; acc as f64 }).collect();
            prop_assert_eq!(&h.h.positive, &want);
            prop_assert_eq!(h.h.count, 7.0);
        }
    }

    #[test]
    fn a_stale_histogram_is_a_stale_marker() {
        let w = v1::Histogram {
            sum: f64::from_bits(STALE_NAN_BITS),
            timestamp: 5,
            ..v1::Histogram::default()
        };
        assert!(matches!(
            decode(&w.encode_to_vec()),
            Some(Decoded::Stale(5))
        ));
    }
}
