//! The remote write 1.0 pass (docs/protocol.md §1): `WriteRequest` field 1 `TimeSeries`, field 3
//! `MetricMetadata`, everything else skipped as unknown.

use std::ops::Range;

use super::{
    check_framing, check_label_lengths, is_ascii, LabelRec, NameOrder, Parsed, SeriesRec,
    CANONICAL, CHECKED, GUESSED, LAZY, SORTED,
};
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

/// Key byte of `TimeSeries.labels`: field 1, wire type 2.
const LABEL_TAG: u8 = 0x0a;

/// One `TimeSeries`: labels are recorded, samples/exemplars/histograms counted and their
/// framing checked.
fn series(
    p: &mut Parsed,
    buf: &[u8],
    range: Range<usize>,
    limits: &Limits,
) -> Result<(), WireError> {
    let index = p.series.len();
    if p.lazy_labels && lazy_series(p, buf, range.clone(), limits) {
        return Ok(());
    }
    let labels_start = p.labels.len();
    // Offsets fit u32: parse() rejected bodies of 4 GiB or more.
    let mut rec = SeriesRec {
        start: range.start as u32,
        end: range.end as u32,
        labels_start: labels_start as u32,
        first_sample: range.end as u32,
        ..SeriesRec::default()
    };
    let (run_end, run_valid) = canonical_run(p, buf, range.clone(), limits);
    let run_labels = p.labels.len();
    let mut c = Cursor::new(buf, run_end..range.end);
    while !c.at_end() {
        // Hot path: the run of labels every encoder starts a series with. Testing the one-byte
        // tag (field 1, wire type 2) first keeps the branch predictable; the general match
        // below is an indirect jump that mispredicts where labels end.
        if c.peek() == Some(LABEL_TAG) {
            c.bump();
            let range = c.len_delim()?;
            if p.labels.len() - labels_start >= limits.max_labels_per_series {
                return Err(WireError::TooManyLabels {
                    series: index,
                    limit: limits.max_labels_per_series,
                });
            }
            let label = label(buf, range)?;
            check_label_lengths(&label, index, limits)?;
            p.labels.push(label);
            continue;
        }
        let field_start = c.pos();
        if c.plain_sample() {
            if rec.samples == 0 {
                rec.first_sample = field_start as u32;
            }
            rec.samples += 1;
            continue;
        }
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
                if rec.samples == 0 {
                    rec.first_sample = field_start as u32;
                }
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
    // Everything `SeriesView::validate` checks, settled in the run: no label after it, no
    // histogram (whose fields it checks too). Otherwise the series is checked label by label
    // later, as if the run had not been seen.
    if run_valid && p.labels.len() == run_labels && rec.histograms == 0 {
        rec.flags = CHECKED | CANONICAL | SORTED;
    }
    let counts = p.counts_mut();
    counts.samples += u64::from(rec.samples);
    counts.histograms += u64::from(rec.histograms);
    counts.exemplars += u64::from(rec.exemplars);
    p.series.push(rec);
    Ok(())
}

/// Lazy mode (`Parsed::set_lazy_labels`): a series that is one run of labels framed as
/// `canonical_run` takes them (its caps included), then only samples, the first right after
/// the run, and exemplars, is recorded without its labels (`LAZY`). `false`, with nothing
/// recorded, for anything else and for any error: the full pass then takes the series and
/// reports what it finds, in its order.
///
/// Not inlined, which keeps the full pass as fast as before. It records the series itself:
/// handed back by value, the record went through the stack, and perf put half of the rest of
/// the pass on the first load after it (the `wire` bench's lazy decode: −3 %).
#[inline(never)]
fn lazy_series(p: &mut Parsed, buf: &[u8], range: Range<usize>, limits: &Limits) -> bool {
    let guess = if p.guessed_runs {
        guessed_record(p, buf, range.clone())
    } else {
        None
    };
    let Some(rec) = guess.or_else(|| lazy_record(p, buf, range, limits)) else {
        return false;
    };
    let counts = p.counts_mut();
    counts.samples += u64::from(rec.samples);
    counts.exemplars += u64::from(rec.exemplars);
    p.series.push(rec);
    p.has_lazy = true;
    true
}

/// `set_guessed_runs`: the record of a series that ends in one sample, everything before it
/// taken for its run (`GUESSED`). The sample is found from the end: its timestamp's varint
/// ends the series, its other bytes have the high bit set and the byte before them is the
/// timestamp's key (0x10), which does not; the float's 8 bytes and key (unless the value is 0),
/// and the field's key and length, come before. The sample is then read as the walk reads it.
#[inline(always)]
fn guessed_record(p: &Parsed, buf: &[u8], range: Range<usize>) -> Option<SeriesRec> {
    let series = buf.get(range.clone())?;
    let (&last, rest) = series.split_last()?;
    if last >= 0x80 {
        return None;
    }
    // At most 9 varint bytes in a plain sample (`plain_sample`'s field length 11..=19).
    let more = rest
        .iter()
        .rev()
        .take(9)
        .take_while(|&&b| b >= 0x80)
        .count();
    let key = rest.len().checked_sub(more + 1)?;
    if series[key] != 0x10 {
        return None;
    }
    let start = match key.checked_sub(11) {
        Some(at) if Cursor::new(buf, range.start + at..range.end).plain_sample_to_end() => at,
        // A value of 0 is left out by the encoder (counters that have not moved, many
        // gauges): `12 <len> 10 <timestamp>`.
        _ => {
            let at = key.checked_sub(2)?;
            let inner = range.start + at + 2..range.end;
            if series[at] != 0x12 || usize::from(series[at + 1]) != inner.len() {
                return None;
            }
            super::decode_sample(&mut Cursor::new(buf, inner), Version::V1).ok()?;
            at
        }
    };
    // A series of nothing but the sample has no run: the walk's business.
    if start == 0 {
        return None;
    }
    let start = range.start + start;
    Some(SeriesRec {
        start: range.start as u32,
        end: range.end as u32,
        labels_start: p.labels.len() as u32,
        labels_end: p.labels.len() as u32,
        first_sample: start as u32,
        samples: 1,
        flags: LAZY | GUESSED,
        ..SeriesRec::default()
    })
}

/// Where the run of labels `canonical_run` takes ends, walked from `range.start` within the
/// series ending at `range.end`; `None` when there is none (no label in it).
#[inline(always)]
pub(super) fn run_end(buf: &[u8], range: Range<usize>, limits: &Limits) -> Option<usize> {
    let body = buf.get(..range.end)?;
    let short_caps = short_caps(limits);
    let mut at = range.start;
    let mut count = 0usize;
    while let Some((_, _, len)) = run_label(body, at, count, limits, short_caps) {
        count += 1;
        at += 2 + len;
    }
    (count > 0).then_some(at)
}

/// `lazy_series`'s record of the series, if it is one.
#[inline(always)]
fn lazy_record(p: &Parsed, buf: &[u8], range: Range<usize>, limits: &Limits) -> Option<SeriesRec> {
    let at = run_end(buf, range.clone(), limits)?;
    let index = p.series.len();
    let mut rec = SeriesRec {
        start: range.start as u32,
        end: range.end as u32,
        labels_start: p.labels.len() as u32,
        labels_end: p.labels.len() as u32,
        first_sample: range.end as u32,
        flags: LAZY,
        ..SeriesRec::default()
    };
    let mut c = Cursor::new(buf, at..range.end);
    while !c.at_end() {
        let field_start = c.pos();
        let sample = c.plain_sample()
            || match c.tag().ok()? {
                (2, wire_type) => {
                    let r = c.expect_len(wire_type, "").ok()?;
                    super::decode_sample(&mut Cursor::new(buf, r), Version::V1).ok()?;
                    true
                }
                (3, wire_type) => {
                    let r = c.expect_len(wire_type, "").ok()?;
                    exemplar(buf, r, index, limits).ok()?;
                    rec.exemplars += 1;
                    false
                }
                // A label after the run, a histogram, an unknown field: the full pass.
                _ => return None,
            };
        if sample {
            if rec.samples == 0 {
                rec.first_sample = field_start as u32;
            }
            rec.samples += 1;
        }
    }
    // The run ends where the first sample starts (or the series does): that is how a view
    // finds its end.
    (rec.first_sample as usize == at).then_some(rec)
}

/// The run of labels a series body starts with when it is what every encoder writes for
/// short labels: each `Label` field as `0a <len> 0a <n> name 12 <v> value`, one-byte lengths,
/// back to back. Their records are pushed as the general loop would push them, and the checks
/// of `SeriesView::validate` are made on the way, where the bytes are already in cache: names
/// non-empty and strictly increasing (so unique), a non-empty `__name__`, and (one scan of the
/// whole run, whose keys and lengths are all below 0x80) ASCII strings. Returns where the run
/// ends and whether its labels passed all of them.
///
/// Anything else (a longer label, another field, a cap reached) ends the run where it is,
/// and the general loop takes over from there: it then reports the same errors, in the same
/// order, as if there had been no run.
#[inline(always)]
fn canonical_run(
    p: &mut Parsed,
    buf: &[u8],
    range: Range<usize>,
    limits: &Limits,
) -> (usize, bool) {
    let Some(body) = buf.get(..range.end) else {
        return (range.start, false);
    };
    let mut at = range.start;
    let mut names = NameOrder::new();
    let short_caps = short_caps(limits);
    let mut count = 0;
    while let Some((n, v, len)) = run_label(body, at, count, limits, short_caps) {
        names.see(&body[at + 4..at + 4 + n], v);
        p.labels.push(LabelRec {
            name_off: (at + 4) as u32,
            name_len: n as u32,
            value_off: (at + 6 + n) as u32,
            value_len: v as u32,
        });
        count += 1;
        at += 2 + len;
    }
    let valid = count > 0 && names.sorted && names.has_name && is_ascii(&body[range.start..at]);
    (at, valid)
}

/// Strings in a run are shorter than 0x80 bytes: the caps on their lengths need checking only
/// when they are lower than that.
#[inline(always)]
fn short_caps(limits: &Limits) -> bool {
    limits.max_label_name_bytes < 0x7f || limits.max_label_value_bytes < 0x7f
}

/// The label at `at` when the run of `canonical_run` goes on there (`count` labels before it):
/// the lengths of its name, its value and its field (after the field's key and length).
#[inline(always)]
fn run_label(
    body: &[u8],
    at: usize,
    count: usize,
    limits: &Limits,
    short_caps: bool,
) -> Option<(usize, usize, usize)> {
    let &[0x0a, len, 0x0a, n] = body.get(at..)?.first_chunk::<4>()? else {
        return None;
    };
    let (len, n) = (usize::from(len), usize::from(n));
    // `len` below 0x80 keeps both lengths single bytes.
    if len >= 0x80 || n == 0 || n + 4 > len {
        return None;
    }
    let field = body.get(at..at + 2 + len)?;
    // n + 4 <= len: the value's key and length lie inside the field.
    let (key, v) = (field[4 + n], usize::from(field[5 + n]));
    let capped = count >= limits.max_labels_per_series
        || (short_caps && (n > limits.max_label_name_bytes || v > limits.max_label_value_bytes));
    (key == 0x12 && n + v + 4 == len && !capped).then_some((n, v, len))
}

/// A `Label` body: name 1, value 2; a missing field is the empty string and a repeated one
/// takes the last value, as protobuf specifies.
#[inline(always)]
pub(crate) fn label(buf: &[u8], range: Range<usize>) -> Result<LabelRec, WireError> {
    if let Some(l) = label_fast(buf, range.clone()) {
        return Ok(l);
    }
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

/// The shape every encoder produces for short labels: `0a <n> name 12 <v> value`, both
/// lengths one byte, nothing else. Anything else goes the general way.
#[inline(always)]
fn label_fast(buf: &[u8], range: Range<usize>) -> Option<LabelRec> {
    let b = buf.get(range.clone())?;
    let (&[0x0a, name_len], rest) = b.split_first_chunk::<2>()? else {
        return None;
    };
    let name_len = usize::from(name_len);
    let (&[0x12, value_len], value) = rest.get(name_len..)?.split_first_chunk::<2>()? else {
        return None;
    };
    // Both lengths below 0x80 (one-byte varints) and the value ends the message exactly.
    if name_len >= 0x80 || value_len >= 0x80 || value.len() != usize::from(value_len) {
        return None;
    }
    let start = range.start as u32;
    Some(LabelRec {
        name_off: start + 2,
        name_len: name_len as u32,
        value_off: start + 4 + name_len as u32,
        value_len: u32::from(value_len),
    })
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
                    return Err(WireError::TooManyExemplarLabels {
                        series: index,
                        limit: limits.max_labels_per_series,
                    });
                }
                let l = label(buf, range)?;
                super::check_exemplar_label(
                    crate::wire::proto::slice(buf, l.name_off, l.name_len),
                    crate::wire::proto::slice(buf, l.value_off, l.value_len),
                    index,
                    limits,
                )?;
            }
            2 => {
                c.expect_fixed64(wire_type, "exemplar value: wrong wire type")?;
            }
            3 => {
                c.expect_varint(wire_type, "exemplar timestamp: wrong wire type")?;
            }
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
            1 => {
                c.expect_varint(wire_type, "metadata type: wrong wire type")?;
            }
            2 | 4 | 5 => {
                c.expect_len(wire_type, "metadata string: wrong wire type")?;
            }
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
            1 => c
                .expect_len(wire_type, "")
                .and_then(|r| label(buf, r))
                .map(|l| {
                    each_label(
                        crate::wire::proto::slice(buf, l.name_off, l.name_len),
                        crate::wire::proto::slice(buf, l.value_off, l.value_len),
                    )
                }),
            2 => c
                .expect_fixed64(wire_type, "")
                .map(|v| value = f64::from_bits(v)),
            3 => c.expect_varint(wire_type, "").map(|v| timestamp = v as i64),
            _ => c.skip(wire_type),
        };
        if ok.is_err() || c.at_end() {
            break;
        }
    }
    (value, timestamp)
}
