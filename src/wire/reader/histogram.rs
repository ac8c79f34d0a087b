//! Native histogram semantics: the checks Prometheus's TSDB applies before it appends one
//! (`model/histogram` `Validate`), done in one pass over the histogram's bytes with no
//! allocation, so a receiver behind cardguard never sees a histogram it would refuse and the
//! sender hears 400 from cardguard instead (remote-write 2.0 compliance: "a native histogram
//! whose count disagrees with its buckets").
//!
//! Integer histograms (count in field 1, or no count) keep bucket counts as deltas (fields
//! 9/12); float histograms (count in field 2) as absolute counts (fields 10/13). As in
//! Prometheus, a float histogram's count is not compared with its buckets (rounding makes
//! that comparison meaningless); its buckets must not be negative and its spans must match.

use std::ops::Range;

use crate::wire::proto::{Cursor, FIXED64, LEN};

/// Schema of histograms with custom bucket bounds (`custom_values`).
const CUSTOM_BUCKETS_SCHEMA: i64 = -53;

/// Why a native histogram is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    #[error("count is {count} but the buckets hold {buckets}")]
    CountMismatch { count: u64, buckets: u64 },
    #[error("count is {count} but the buckets hold more ({buckets}) and the sum is NaN")]
    CountNotBigEnough { count: u64, buckets: u64 },
    #[error("a {side} bucket has a negative count")]
    NegativeBucket { side: &'static str },
    #[error("{side} spans need {spans} buckets but {buckets} are given")]
    SpansMismatch {
        side: &'static str,
        spans: u64,
        buckets: u64,
    },
    #[error("{side} span {index} has a negative offset")]
    NegativeSpanOffset { side: &'static str, index: usize },
    #[error("custom bucket bounds are not strictly increasing")]
    CustomBoundsNotIncreasing,
    #[error("custom-bucket spans need {need} buckets but the bounds define {have}")]
    CustomBucketsMismatch { need: u64, have: u64 },
    #[error("custom-bucket histogram with {0}")]
    CustomWith(&'static str),
    #[error("custom bucket bounds on a histogram of schema {0}")]
    BoundsWithoutCustomSchema(i64),
    #[error("malformed field")]
    Malformed,
}

/// One side's (positive or negative) spans and buckets, added up as they come.
#[derive(Default)]
struct Side {
    /// Sum of span lengths.
    span_buckets: u64,
    /// Sum of span lengths plus offsets (custom buckets: the highest bucket index + 1).
    span_extent: i64,
    spans: usize,
    negative_offset: Option<usize>,
    /// Any span offset below zero, the first span included (custom buckets forbid it).
    any_negative_offset: bool,
    /// Integer: running absolute count (deltas added up), number of buckets, total.
    last: i64,
    int_buckets: u64,
    int_total: u64,
    int_negative: bool,
    int_overflow: bool,
    /// Float: number of buckets, total, any negative.
    float_buckets: u64,
    float_total: f64,
    float_negative: bool,
}

impl Side {
    fn span(&mut self, buf: &[u8], range: Range<usize>) -> Result<(), HistogramError> {
        let (mut offset, mut length) = (0i64, 0u64);
        let mut c = Cursor::new(buf, range);
        while !c.at_end() {
            let (field, wire_type) = c.tag().map_err(|_| HistogramError::Malformed)?;
            match field {
                1 => {
                    let v = c
                        .expect_varint(wire_type, "")
                        .map_err(|_| HistogramError::Malformed)?;
                    // sint32: zigzag, truncated to 32 bits as Go and prost do.
                    offset = i64::from(zigzag(v) as i32);
                }
                2 => {
                    length = u64::from(
                        c.expect_varint(wire_type, "")
                            .map_err(|_| HistogramError::Malformed)? as u32,
                    )
                }
                _ => c.skip(wire_type).map_err(|_| HistogramError::Malformed)?,
            }
        }
        if offset < 0 {
            self.any_negative_offset = true;
            if self.spans > 0 && self.negative_offset.is_none() {
                self.negative_offset = Some(self.spans + 1);
            }
        }
        self.spans += 1;
        self.span_buckets += length;
        self.span_extent = self
            .span_extent
            .saturating_add(offset)
            .saturating_add(length as i64);
        Ok(())
    }

    fn delta(&mut self, raw: u64) {
        match self.last.checked_add(zigzag(raw)) {
            Some(c) => {
                self.last = c;
                if c < 0 {
                    self.int_negative = true;
                } else {
                    match self.int_total.checked_add(c as u64) {
                        Some(t) => self.int_total = t,
                        None => self.int_overflow = true,
                    }
                }
            }
            None => self.int_overflow = true,
        }
        self.int_buckets += 1;
    }

    fn count(&mut self, bits: u64) {
        let v = f64::from_bits(bits);
        if v < 0.0 {
            self.float_negative = true;
        }
        self.float_total += v;
        self.float_buckets += 1;
    }

    /// The side's spans against its buckets, and its buckets' counts.
    fn check(&self, side: &'static str, float: bool) -> Result<(), HistogramError> {
        if let Some(index) = self.negative_offset {
            return Err(HistogramError::NegativeSpanOffset { side, index });
        }
        let buckets = if float {
            self.float_buckets
        } else {
            self.int_buckets
        };
        if self.span_buckets != buckets {
            return Err(HistogramError::SpansMismatch {
                side,
                spans: self.span_buckets,
                buckets,
            });
        }
        if (float && self.float_negative) || (!float && self.int_negative) {
            return Err(HistogramError::NegativeBucket { side });
        }
        Ok(())
    }

    fn has_buckets(&self) -> bool {
        self.spans > 0 || self.int_buckets > 0 || self.float_buckets > 0
    }
}

#[inline]
fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Doubles of a repeated `double` field, packed or not.
fn each_double(
    c: &mut Cursor<'_>,
    wire_type: u8,
    mut each: impl FnMut(u64),
) -> Result<(), HistogramError> {
    match wire_type {
        FIXED64 => each(c.fixed64().map_err(|_| HistogramError::Malformed)?),
        LEN => {
            let range = c.len_delim().map_err(|_| HistogramError::Malformed)?;
            let mut p = Cursor::new(c.buf(), range);
            while !p.at_end() {
                each(p.fixed64().map_err(|_| HistogramError::Malformed)?);
            }
        }
        _ => return Err(HistogramError::Malformed),
    }
    Ok(())
}

/// Check one `Histogram` message body (`buf[range]`, framing already checked by the parse
/// pass).
pub fn check(buf: &[u8], range: Range<usize>) -> Result<(), HistogramError> {
    let (mut count_int, mut count_float): (Option<u64>, Option<f64>) = (None, None);
    let (mut zero_int, mut zero_float) = (0u64, 0.0f64);
    let (mut sum, mut schema, mut zero_threshold) = (0.0f64, 0i64, 0.0f64);
    let (mut neg, mut pos) = (Side::default(), Side::default());
    let (mut bounds, mut prev_bound, mut increasing) = (0u64, f64::NEG_INFINITY, true);
    let mut c = Cursor::new(buf, range);
    let bad = |_| HistogramError::Malformed;
    while !c.at_end() {
        let (field, wire_type) = c.tag().map_err(bad)?;
        match field {
            // The count oneof: the last member seen wins, as protobuf specifies.
            1 => {
                count_int = Some(c.expect_varint(wire_type, "").map_err(bad)?);
                count_float = None;
            }
            2 => {
                count_float = Some(f64::from_bits(
                    c.expect_fixed64(wire_type, "").map_err(bad)?,
                ));
                count_int = None;
            }
            3 => sum = f64::from_bits(c.expect_fixed64(wire_type, "").map_err(bad)?),
            4 => schema = i64::from(zigzag(c.expect_varint(wire_type, "").map_err(bad)?) as i32),
            5 => zero_threshold = f64::from_bits(c.expect_fixed64(wire_type, "").map_err(bad)?),
            6 => {
                zero_int = c.expect_varint(wire_type, "").map_err(bad)?;
                zero_float = 0.0;
            }
            7 => {
                zero_float = f64::from_bits(c.expect_fixed64(wire_type, "").map_err(bad)?);
                zero_int = 0;
            }
            8 => neg.span(buf, c.expect_len(wire_type, "").map_err(bad)?)?,
            11 => pos.span(buf, c.expect_len(wire_type, "").map_err(bad)?)?,
            9 => c
                .repeated_varint(wire_type, "", |v| {
                    neg.delta(v);
                    Ok(())
                })
                .map_err(bad)?,
            12 => c
                .repeated_varint(wire_type, "", |v| {
                    pos.delta(v);
                    Ok(())
                })
                .map_err(bad)?,
            10 => each_double(&mut c, wire_type, |b| neg.count(b))?,
            13 => each_double(&mut c, wire_type, |b| pos.count(b))?,
            16 => each_double(&mut c, wire_type, |b| {
                let v = f64::from_bits(b);
                // NaN compares false, so it breaks the order too.
                increasing &= v > prev_bound;
                prev_bound = v;
                bounds += 1;
            })?,
            _ => c.skip(wire_type).map_err(bad)?,
        }
    }
    let float = count_float.is_some();
    if schema == CUSTOM_BUCKETS_SCHEMA {
        if !increasing {
            return Err(HistogramError::CustomBoundsNotIncreasing);
        }
        pos.check("positive", float)?;
        if pos.any_negative_offset {
            return Err(HistogramError::NegativeSpanOffset {
                side: "positive",
                index: 1,
            });
        }
        if pos.span_extent > bounds as i64 + 1 {
            return Err(HistogramError::CustomBucketsMismatch {
                need: pos.span_extent as u64,
                have: bounds + 1,
            });
        }
        if zero_int != 0 || zero_float != 0.0 {
            return Err(HistogramError::CustomWith("a zero count"));
        }
        if zero_threshold != 0.0 {
            return Err(HistogramError::CustomWith("a zero threshold"));
        }
        if neg.has_buckets() {
            return Err(HistogramError::CustomWith("negative buckets"));
        }
    } else {
        if bounds > 0 {
            return Err(HistogramError::BoundsWithoutCustomSchema(schema));
        }
        neg.check("negative", float)?;
        pos.check("positive", float)?;
    }
    if float {
        return Ok(());
    }
    let count = count_int.unwrap_or(0);
    let buckets = neg
        .int_total
        .checked_add(pos.int_total)
        .and_then(|b| b.checked_add(zero_int));
    let Some(buckets) = buckets.filter(|_| !neg.int_overflow && !pos.int_overflow) else {
        return Err(HistogramError::CountMismatch {
            count,
            buckets: u64::MAX,
        });
    };
    if sum.is_nan() {
        // A NaN observation lands in no bucket, so the count may exceed the buckets.
        if buckets > count {
            return Err(HistogramError::CountNotBigEnough { count, buckets });
        }
    } else if buckets != count {
        return Err(HistogramError::CountMismatch { count, buckets });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::types::v2::{histogram, BucketSpan, Histogram};
    use prost::Message;

    fn span(offset: i32, length: u32) -> BucketSpan {
        BucketSpan { offset, length }
    }

    /// The compliance suite's histogram: positive [1,3,4,7,8], negative [1,2], zero 1.
    fn suite(positive: bool, negative: bool, zero: bool, custom: bool) -> Histogram {
        let mut h = Histogram {
            sum: 1.0,
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
            h.zero_count = Some(histogram::ZeroCount::ZeroCountInt(1));
            count += 1;
        }
        if custom {
            h.schema = -53;
            h.custom_values = vec![0.1, 0.5, 1.0, 2.5, 5.0, 10.0];
            h.positive_spans = vec![span(0, 6)];
            h.positive_deltas = vec![2, 1, 2, 3, -1, -2];
            count = 30;
        }
        h.count = Some(histogram::Count::CountInt(count));
        h
    }

    fn run(h: &Histogram) -> Result<(), HistogramError> {
        let b = h.encode_to_vec();
        check(&b, 0..b.len())
    }

    #[test]
    fn accepts_every_shape_of_the_compliance_suite() {
        for (p, n, z, c) in [
            (true, true, true, false),
            (true, false, false, true),
            (true, false, true, false),
            (false, true, false, false),
            (false, false, true, false),
            (false, false, false, false),
        ] {
            assert_eq!(run(&suite(p, n, z, c)), Ok(()));
        }
    }

    #[test]
    fn refuses_a_count_the_buckets_do_not_add_up_to() {
        let mut h = suite(true, false, false, false);
        h.count = Some(histogram::Count::CountInt(99));
        assert_eq!(
            run(&h),
            Err(HistogramError::CountMismatch {
                count: 99,
                buckets: 23
            })
        );
        // With a NaN sum, only a count below the buckets is wrong.
        h.sum = f64::NAN;
        assert!(run(&h).is_ok());
        h.count = Some(histogram::Count::CountInt(5));
        assert!(matches!(
            run(&h),
            Err(HistogramError::CountNotBigEnough { .. })
        ));
    }

    #[test]
    fn refuses_spans_buckets_and_bounds_that_disagree() {
        let mut h = suite(true, false, false, false);
        h.positive_spans = vec![span(0, 3)];
        assert!(matches!(run(&h), Err(HistogramError::SpansMismatch { .. })));
        let mut h = suite(true, false, false, false);
        h.positive_spans = vec![span(0, 3), span(-1, 2)];
        assert!(matches!(
            run(&h),
            Err(HistogramError::NegativeSpanOffset { index: 2, .. })
        ));
        let mut h = suite(false, true, false, false);
        h.negative_deltas = vec![1, -2];
        h.count = Some(histogram::Count::CountInt(0));
        assert!(matches!(
            run(&h),
            Err(HistogramError::NegativeBucket { .. })
        ));
        let mut h = suite(false, false, false, true);
        h.custom_values = vec![0.1, 0.5, 0.5, 2.5, 5.0, 10.0];
        assert_eq!(run(&h), Err(HistogramError::CustomBoundsNotIncreasing));
        let mut h = suite(false, false, false, true);
        h.custom_values.truncate(4);
        assert!(matches!(
            run(&h),
            Err(HistogramError::CustomBucketsMismatch { need: 6, have: 5 })
        ));
        let mut h = suite(false, false, false, true);
        h.zero_count = Some(histogram::ZeroCount::ZeroCountInt(1));
        assert!(matches!(run(&h), Err(HistogramError::CustomWith(_))));
        let mut h = suite(true, false, false, false);
        h.custom_values = vec![1.0];
        assert!(matches!(
            run(&h),
            Err(HistogramError::BoundsWithoutCustomSchema(0))
        ));
    }

    #[test]
    fn float_histograms_are_checked_for_shape_not_count() {
        let h = Histogram {
            count: Some(histogram::Count::CountFloat(10.5)),
            positive_spans: vec![span(0, 2)],
            positive_counts: vec![1.5, 2.0],
            ..Default::default()
        };
        assert!(run(&h).is_ok());
        let mut bad = h.clone();
        bad.positive_counts = vec![1.5, -2.0];
        assert!(matches!(
            run(&bad),
            Err(HistogramError::NegativeBucket { .. })
        ));
        let mut bad = h;
        bad.positive_counts.push(1.0);
        assert!(matches!(
            run(&bad),
            Err(HistogramError::SpansMismatch { .. })
        ));
    }
}
