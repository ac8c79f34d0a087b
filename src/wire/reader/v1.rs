//! The remote write 1.0 pass (PROTOCOL.md §1): `WriteRequest` field 1 `TimeSeries`, field 3
//! `MetricMetadata`, everything else skipped as unknown.

use std::ops::Range;

use super::{check_framing, check_label_lengths, LabelRec, Parsed, SeriesRec};
use crate::wire::proto::{Cursor, VARINT};
use crate::wire::{Limits, Version, WireError};

pub(super) fn parse(p: &mut Parsed, buf: &[u8], limits: &Limits) -> Result<(), WireError> {
    let mut c = Cursor::new(buf, 0..buf.len());
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                let range = c.expect_len(wire_type, "timeseries: wrong wire type")?;
                if p.series.len() >= limits.max_series {
                    return Err(WireError::TooManySeries {
                        limit: limits.max_series,
                    });
                }
                series(p, buf, range, limits)?;
            }
            3 => {
                let range = c.expect_len(wire_type, "metadata: wrong wire type")?;
                check_metadata(buf, range.clone())?;
                p.v1_metadata.push((range.start as u32, range.len() as u32));
                p.counts_mut().metadata += 1;
            }
            _ => c.skip(wire_type)?,
        }
    }
    Ok(())
}

/// One `TimeSeries`: labels are recorded, samples/exemplars/histograms counted and their
/// framing checked.
fn series(
    p: &mut Parsed,
    buf: &[u8],
    range: Range<usize>,
    limits: &Limits,
) -> Result<(), WireError> {
    let index = p.series.len();
    let labels_start = p.labels.len();
    // Offsets fit u32: parse() rejected bodies of 4 GiB or more.
    let mut rec = SeriesRec {
        start: range.start as u32,
        end: range.end as u32,
        labels_start: labels_start as u32,
        ..SeriesRec::default()
    };
    let mut c = Cursor::new(buf, range);
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                let range = c.expect_len(wire_type, "label: wrong wire type")?;
                if p.labels.len() - labels_start >= limits.max_labels_per_series {
                    return Err(WireError::TooManyLabels {
                        series: index,
                        limit: limits.max_labels_per_series,
                    });
                }
                let label = label(buf, range)?;
                check_label_lengths(&label, index, limits)?;
                p.labels.push(label);
            }
            2 => {
                let range = c.expect_len(wire_type, "sample: wrong wire type")?;
                super::decode_sample(&mut Cursor::new(buf, range), Version::V1)?;
                rec.samples += 1;
            }
            3 => {
                let range = c.expect_len(wire_type, "exemplar: wrong wire type")?;
                exemplar(buf, range, index, limits)?;
                rec.exemplars += 1;
            }
            4 => {
                let range = c.expect_len(wire_type, "histogram: wrong wire type")?;
                check_framing(buf, range)?;
                rec.histograms += 1;
            }
            _ => c.skip(wire_type)?,
        }
    }
    rec.labels_end = p.labels.len() as u32;
    let counts = p.counts_mut();
    counts.samples += u64::from(rec.samples);
    counts.histograms += u64::from(rec.histograms);
    counts.exemplars += u64::from(rec.exemplars);
    p.series.push(rec);
    Ok(())
}

/// A `Label` body: name 1, value 2; a missing field is the empty string and a repeated one
/// takes the last value, as protobuf specifies.
#[inline]
pub(crate) fn label(buf: &[u8], range: Range<usize>) -> Result<LabelRec, WireError> {
    let mut l = LabelRec {
        name_off: range.start as u32,
        name_len: 0,
        value_off: range.start as u32,
        value_len: 0,
    };
    let mut c = Cursor::new(buf, range);
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                let s = c.expect_len(wire_type, "label name: wrong wire type")?;
                l.name_off = s.start as u32;
                l.name_len = s.len() as u32;
            }
            2 => {
                let s = c.expect_len(wire_type, "label value: wrong wire type")?;
                l.value_off = s.start as u32;
                l.value_len = s.len() as u32;
            }
            _ => c.skip(wire_type)?,
        }
    }
    Ok(l)
}

/// An `Exemplar` body: labels 1, value 2 (double), timestamp 3 (int64).
fn exemplar(
    buf: &[u8],
    range: Range<usize>,
    index: usize,
    limits: &Limits,
) -> Result<(), WireError> {
    let mut c = Cursor::new(buf, range);
    let mut labels = 0usize;
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                let range = c.expect_len(wire_type, "exemplar label: wrong wire type")?;
                labels += 1;
                if labels > limits.max_labels_per_series {
                    return Err(WireError::TooManyLabels {
                        series: index,
                        limit: limits.max_labels_per_series,
                    });
                }
                check_label_lengths(&label(buf, range)?, index, limits)?;
            }
            2 => drop(c.expect_fixed64(wire_type, "exemplar value: wrong wire type")?),
            3 => drop(c.expect_varint(wire_type, "exemplar timestamp: wrong wire type")?),
            _ => c.skip(wire_type)?,
        }
    }
    Ok(())
}

/// A `MetricMetadata` body: type 1 (enum), family name 2, help 4, unit 5.
fn check_metadata(buf: &[u8], range: Range<usize>) -> Result<(), WireError> {
    let mut c = Cursor::new(buf, range);
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => drop(c.expect_varint(wire_type, "metadata type: wrong wire type")?),
            2 | 4 | 5 => drop(c.expect_len(wire_type, "metadata string: wrong wire type")?),
            _ => c.skip(wire_type)?,
        }
    }
    Ok(())
}

/// A decoded v1 `MetricMetadata`, strings as byte ranges of the buffer.
#[derive(Debug, Clone, Default)]
pub(crate) struct V1Metadata {
    pub(crate) metric_type: i32,
    pub(crate) family: Range<usize>,
    pub(crate) help: Range<usize>,
    pub(crate) unit: Range<usize>,
}

/// Decode a metadata body checked by `check_metadata` (errors cannot happen then; any other
/// buffer yields defaults).
pub(crate) fn decode_metadata(buf: &[u8], range: Range<usize>) -> V1Metadata {
    let mut m = V1Metadata::default();
    let mut c = Cursor::new(buf, range);
    while let Ok((field, wire_type)) = c.tag() {
        let ok = match (field, wire_type) {
            (1, VARINT) => c.varint().map(|v| m.metric_type = v as i32),
            (2, _) => c.expect_len(wire_type, "").map(|r| m.family = r),
            (4, _) => c.expect_len(wire_type, "").map(|r| m.help = r),
            (5, _) => c.expect_len(wire_type, "").map(|r| m.unit = r),
            _ => c.skip(wire_type),
        };
        if ok.is_err() || c.at_end() {
            break;
        }
    }
    m
}

/// Decode an exemplar body checked by the pass, calling `each_label` per label in order.
/// Returns `(value, timestamp)`.
pub(crate) fn exemplar_fields<'a>(
    buf: &'a [u8],
    range: Range<usize>,
    mut each_label: impl FnMut(&'a [u8], &'a [u8]),
) -> (f64, i64) {
    let mut value = 0.0;
    let mut timestamp = 0;
    let mut c = Cursor::new(buf, range);
    while let Ok((field, wire_type)) = c.tag() {
        let ok = match field {
            1 => c.expect_len(wire_type, "").and_then(|r| label(buf, r)).map(|l| {
                each_label(
                    crate::wire::proto::slice(buf, l.name_off, l.name_len),
                    crate::wire::proto::slice(buf, l.value_off, l.value_len),
                )
            }),
            2 => c.expect_fixed64(wire_type, "").map(|v| value = f64::from_bits(v)),
            3 => c.expect_varint(wire_type, "").map(|v| timestamp = v as i64),
            _ => c.skip(wire_type),
        };
        if ok.is_err() || c.at_end() {
            break;
        }
    }
    (value, timestamp)
}
