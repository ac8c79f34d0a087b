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
