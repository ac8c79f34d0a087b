//! The remote write 2.0 pass (docs/protocol.md §2): `Request` field 4 symbols, field 5
//! `TimeSeries`, everything else skipped as unknown.
//!
//! Field order on the wire is not guaranteed (senders put symbols first, but protobuf allows
//! any order), so symbol references are not resolved while walking: labels are recorded as
//! `(name_ref, value_ref)`, every ref's maximum is tracked, and once the whole body has been
//! seen one range check plus one in-place pass over the flat label table resolve them.
//!
//! In lazy mode (`Parsed::set_lazy_labels`) a series' refs are not read at all: the series
//! is recorded with where they lie, and whoever reads its labels resolves them then
//! (`SeriesView::lazy_refs`). With 4–5 labels a series, reading, recording and resolving
//! every ref was half of what a guarded 2.0 request cost the proxy.

use std::ops::Range;

use super::{
    check_framing, check_label_lengths, LabelRec, Parsed, SeriesRec, V2Metadata, CHECKED, LAZY,
    SORTED,
};
use crate::wire::proto::{Cursor, LEN};
use crate::wire::{Limits, Version, WireError};

/// The largest symbol reference seen so far and the series that holds it.
#[derive(Default)]
struct MaxRef(Option<(u32, usize)>);

impl MaxRef {
    #[inline]
    fn note(&mut self, r: u32, series: usize) {
        match self.0 {
            Some((max, _)) if max >= r => {}
            _ => self.0 = Some((r, series)),
        }
    }
}

/// A `uint32` field is decoded the way Go and prost do it: the varint truncated to 32 bits.
#[inline]
fn as_u32(v: u64) -> u32 {
    v as u32
}

pub(super) fn parse(p: &mut Parsed, buf: &[u8], limits: &Limits) -> Result<(), WireError> {
    let mut refs = MaxRef::default();
    // The span of consecutive symbol entries, and whether all entries were in that one span.
    let mut run: Option<(usize, usize)> = None;
    let mut contiguous = true;
    let mut longest = 0usize;
    let mut c = Cursor::new(buf, 0..buf.len());
    while !c.at_end() {
        let tag_start = c.pos();
        let (field, wire_type) = c.tag()?;
        match field {
            4 => {
                let range = c.expect_len(wire_type, "symbol: wrong wire type")?;
                if p.symbols.len() >= limits.max_symbols {
                    return Err(WireError::TooManySymbols {
                        limit: limits.max_symbols,
                    });
                }
                if range.len() > limits.max_symbol_bytes() {
                    return Err(symbol_too_long(p.symbols.len(), range.len(), limits));
                }
                longest = longest.max(range.len());
                p.symbols.push((range.start as u32, range.len() as u32));
                run = match run {
                    None => Some((tag_start, range.end)),
                    Some((start, end)) if end == tag_start => Some((start, range.end)),
                    Some(other) => {
                        contiguous = false;
                        Some(other)
                    }
                };
            }
            5 => {
                let range = c.expect_len(wire_type, "timeseries: wrong wire type")?;
                if p.series.len() >= limits.max_series {
                    return Err(WireError::TooManySeries {
                        limit: limits.max_series,
                    });
                }
                series(p, buf, range, limits, &mut refs)?;
            }
            _ => c.skip(wire_type)?,
        }
    }
    if contiguous {
        p.symbols_raw = run.map(|(start, end)| (start as u32, (end - start) as u32));
    }
    let fit = longest
        <= limits
            .max_label_name_bytes
            .min(limits.max_label_value_bytes);
    if p.has_lazy && !fit {
        read_lazy_runs(p, buf, limits, &mut refs)?;
    }
    p.symbols_utf8 = symbols_utf8(p, buf);
    if matches!(p.symbols.first(), Some(&(_, len)) if len != 0) {
        return Err(WireError::FirstSymbolNotEmpty);
    }
    if let Some((max, series)) = refs.0 {
        if max as usize >= p.symbols.len() {
            return Err(WireError::SymbolOutOfRange {
                series,
                reference: u64::from(max),
                symbols: p.symbols.len(),
            });
        }
    }
    resolve(p, buf, limits, fit)?;
    if p.counts().exemplars > 0 {
        check_exemplars(p, buf, limits)?;
    }
    Ok(())
}

/// Whether every symbol is valid UTF-8. The table is usually one run of entries whose tags
/// and (for strings under 128 bytes) lengths are ASCII bytes themselves, so one scan of the
/// run settles an all-ASCII table; otherwise each symbol is checked once.
fn symbols_utf8(p: &Parsed, buf: &[u8]) -> bool {
    use crate::wire::reader::view::{is_ascii, is_utf8};
    let run = p
        .symbols_raw
        .and_then(|(start, len)| buf.get(start as usize..(start + len) as usize));
    run.is_some_and(is_ascii)
        || p.symbols
            .iter()
            .all(|&(off, len)| is_utf8(crate::wire::proto::slice(buf, off, len)))
}

fn symbol_too_long(index: usize, len: usize, limits: &Limits) -> WireError {
    let key = if limits.max_label_name_bytes > limits.max_label_value_bytes {
        "max_label_name_length"
    } else {
        "max_label_value_length"
    };
    WireError::SymbolTooLong {
        index,
        len,
        limit: limits.max_symbol_bytes(),
        key,
    }
}

/// Exemplar labels get the caps of series labels: name and value lengths and UTF-8 (their
/// count was checked while walking). Done once the table is known, since the refs may come
/// before it; only series with exemplars are walked again, and only their exemplars.
fn check_exemplars(p: &Parsed, buf: &[u8], limits: &Limits) -> Result<(), WireError> {
    let symbol = |r: u32| {
        p.symbols
            .get(r as usize)
            .map(|&(off, len)| crate::wire::proto::slice(buf, off, len))
            .unwrap_or_default()
    };
    for (index, rec) in p.series.iter().enumerate() {
        if rec.exemplars == 0 {
            continue;
        }
        let mut c = Cursor::new(buf, rec.start as usize..rec.end as usize);
        while !c.at_end() {
            let (field, wire_type) = c.tag()?;
            if field != 4 {
                c.skip(wire_type)?;
                continue;
            }
            let range = c.expect_len(wire_type, "exemplar: wrong wire type")?;
            let mut problem = None;
            exemplar_fields(buf, range, |n, v| {
                if problem.is_none() {
                    problem =
                        super::check_exemplar_label(symbol(n), symbol(v), index, limits).err();
                }
            });
            if let Some(e) = problem {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Turn every label's refs into the symbols' byte ranges and apply the length caps (which can
/// only be checked once the strings are known). Every name and value is a symbol, so when the
/// longest symbol is within both caps (`fit`) no label is checked one by one. Series read
/// lazily have no labels here; `fit` holds for them (`read_lazy_runs`).
///
/// The same loop settles what `SeriesView::validate` checks of most series, as the 1.0 pass
/// does (`v1::canonical_run`): the request's label names are few symbols used many times, so
/// they are ordered once (`name_ranks`) and each series' names compared by rank, where the
/// walk sliced and compared every name's bytes (~300 instructions a series). A series whose
/// names are non-empty and rise strictly, with `__name__` set and no native histogram, in a
/// table of valid UTF-8, is marked CHECKED | SORTED; any other is left to the walk, which
/// finds its error as before.
fn resolve(p: &mut Parsed, buf: &[u8], limits: &Limits, fit: bool) -> Result<(), WireError> {
    let metric_name = name_ranks(p, buf);
    let symbols = &p.symbols;
    let ranks = &p.name_ranks;
    let settle = p.symbols_utf8;
    for (index, rec) in p.series.iter_mut().enumerate() {
        let labels = p
            .labels
            .get_mut(rec.labels_start as usize..rec.labels_end as usize)
            .unwrap_or(&mut []);
        let (mut prev, mut sorted, mut has_name) = (0u32, !labels.is_empty(), false);
        for l in labels {
            // In range: the maximum ref was checked above.
            let rank = ranks.get(l.name_off as usize).copied().unwrap_or(0);
            let (name_off, name_len) = symbols
                .get(l.name_off as usize)
                .copied()
                .unwrap_or_default();
            let (value_off, value_len) = symbols
                .get(l.value_off as usize)
                .copied()
                .unwrap_or_default();
            // Rank 0 is an empty name: never above the one before.
            sorted &= rank > prev;
            prev = rank;
            has_name |= Some(rank) == metric_name && value_len > 0;
            *l = LabelRec {
                name_off,
                name_len,
                value_off,
                value_len,
            };
            if !fit {
                check_label_lengths(l, index, limits)?;
            }
        }
        if settle && sorted && has_name && rec.histograms == 0 {
            rec.flags = CHECKED | SORTED;
        }
    }
    Ok(())
}

/// Rank every symbol used as a label name by its bytes into `p.name_ranks` (by symbol; equal
/// strings share a rank, an empty name has rank 0, a symbol used as no name is left 0), refs
/// not yet resolved. Returns the rank of `__name__`, if some series names it.
fn name_ranks(p: &mut Parsed, buf: &[u8]) -> Option<u32> {
    const SEEN: u32 = u32::MAX;
    let ranks = &mut p.name_ranks;
    ranks.clear();
    ranks.resize(p.symbols.len(), 0);
    let names = &mut p.name_symbols;
    names.clear();
    for l in &p.labels {
        if let Some(r) = ranks.get_mut(l.name_off as usize) {
            if *r == 0 {
                *r = SEEN;
                names.push(l.name_off);
            }
        }
    }
    let symbol = |r: u32| {
        p.symbols.get(r as usize).map_or(&[][..], |&(off, len)| {
            crate::wire::proto::slice(buf, off, len)
        })
    };
    names.sort_unstable_by(|&a, &b| symbol(a).cmp(symbol(b)));
    let (mut rank, mut prev, mut metric_name) = (0u32, None, None);
    for &n in names.iter() {
        let name = symbol(n);
        if prev != Some(name) {
            rank += 1;
            prev = Some(name);
        }
        if let Some(r) = ranks.get_mut(n as usize) {
            *r = if name.is_empty() { 0 } else { rank };
        }
        if name == b"__name__" {
            metric_name = Some(rank);
        }
    }
    metric_name
}

fn series(
    p: &mut Parsed,
    buf: &[u8],
    range: Range<usize>,
    limits: &Limits,
    refs: &mut MaxRef,
) -> Result<(), WireError> {
    let index = p.series.len();
    let labels_start = p.labels.len();
    let mut rec = SeriesRec {
        start: range.start as u32,
        end: range.end as u32,
        labels_start: labels_start as u32,
        first_sample: range.end as u32,
        ..SeriesRec::default()
    };
    let mut metadata: Option<V2Metadata> = None;
    let mut pending_name: Option<u32> = None;
    // Lazy mode: the packed refs the series starts with, not read yet (see `lazy_run`).
    let mut lazy: Option<Range<usize>> = None;
    let series_start = range.start;
    let mut c = Cursor::new(buf, range);
    while !c.at_end() {
        let field_start = c.pos();
        if c.plain_sample() {
            if rec.samples == 0 {
                rec.first_sample = field_start as u32;
            }
            rec.samples += 1;
            continue;
        }
        if p.lazy_labels && field_start == series_start && buf.get(field_start) == Some(&0x0a) {
            c.bump();
            let run = c.len_delim()?;
            if lazy_run(buf, &run, limits) {
                lazy = Some(run);
            } else {
                pending_name = packed_pairs(p, buf, run, labels_start, index, limits, refs)?;
            }
            continue;
        }
        let (field, wire_type) = c.tag()?;
        // Another labels field: the first one is read now, and this one after it.
        if field == 1 {
            if let Some(run) = lazy.take() {
                pending_name = packed_pairs(p, buf, run, labels_start, index, limits, refs)?;
            }
        }
        match field {
            // Hot path: one packed run of whole pairs (what every encoder writes).
            1 if wire_type == LEN && pending_name.is_none() => {
                let range = c.len_delim()?;
                pending_name = packed_pairs(p, buf, range, labels_start, index, limits, refs)?;
            }
            1 => {
                let labels = &mut p.labels;
                c.repeated_varint(wire_type, "labels_refs: wrong wire type", |r| {
                    let r = as_u32(r);
                    refs.note(r, index);
                    match pending_name.take() {
                        None => pending_name = Some(r),
                        Some(name) => {
                            if labels.len() - labels_start >= limits.max_labels_per_series {
                                return Err(WireError::TooManyLabels {
                                    series: index,
                                    limit: limits.max_labels_per_series,
                                });
                            }
                            // Refs for now; resolve() swaps in the byte ranges.
                            labels.push(LabelRec {
                                name_off: name,
                                name_len: 0,
                                value_off: r,
                                value_len: 0,
                            });
                        }
                    }
                    Ok(())
                })?;
            }
            2 => {
                let range = c.expect_len(wire_type, "sample: wrong wire type")?;
                super::decode_sample(&mut Cursor::new(buf, range), Version::V2)?;
                if rec.samples == 0 {
                    rec.first_sample = field_start as u32;
                }
                rec.samples += 1;
            }
            3 => {
                let range = c.expect_len(wire_type, "histogram: wrong wire type")?;
                check_framing(buf, range)?;
                rec.histograms += 1;
            }
            4 => {
                let range = c.expect_len(wire_type, "exemplar: wrong wire type")?;
                exemplar(buf, range, index, limits, refs)?;
                rec.exemplars += 1;
            }
            5 => {
                let range = c.expect_len(wire_type, "metadata: wrong wire type")?;
                // A message field seen twice is merged (protobuf): later scalars win.
                let m = metadata.get_or_insert_with(V2Metadata::default);
                merge_metadata(buf, range, m)?;
                refs.note(m.help_ref, index);
                refs.note(m.unit_ref, index);
            }
            _ => c.skip(wire_type)?,
        }
    }
    if let Some(run) = lazy {
        // A series with native histograms is checked in full (`resolve`).
        if rec.histograms == 0 {
            rec.flags = LAZY;
            p.has_lazy = true;
        } else {
            pending_name = packed_pairs(p, buf, run, labels_start, index, limits, refs)?;
        }
    }
    if pending_name.is_some() {
        return Err(WireError::OddLabelRefs { series: index });
    }
    rec.labels_end = p.labels.len() as u32;
    if let Some(m) = metadata {
        p.v2_metadata.push(m);
        rec.metadata = p.v2_metadata.len() as u32;
        if !m.is_empty() {
            p.counts_mut().metadata += 1;
        }
    }
    let counts = p.counts_mut();
    counts.samples += u64::from(rec.samples);
    counts.histograms += u64::from(rec.histograms);
    counts.exemplars += u64::from(rec.exemplars);
    p.series.push(rec);
    Ok(())
}

/// Whether a series' first field, the packed refs `run`, may be left unread in lazy mode
/// (`Parsed::set_lazy_labels`): whole varints (its last byte ends one), as many as whole
/// pairs, and no more pairs than a series may have labels. What the full pass finds of a run
/// beyond that depends on the symbols table (refs in range, the strings' lengths and bytes),
/// and is found when the series is checked (`SeriesView::check_lazy`); a run that fails here
/// is read at once, for the error the full pass gives.
#[inline]
fn lazy_run(buf: &[u8], run: &Range<usize>, limits: &Limits) -> bool {
    let Some(bytes) = buf.get(run.clone()) else {
        return false;
    };
    let Some(&last) = bytes.last() else {
        // No labels: the check says so.
        return true;
    };
    // A varint ends at each byte under 0x80: eight bytes at a time.
    let mut words = bytes.chunks_exact(8);
    let mut ends = 0u32;
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        ends += (!w & 0x8080_8080_8080_8080).count_ones();
    }
    ends += words
        .remainder()
        .iter()
        .map(|&b| u32::from(b < 0x80))
        .sum::<u32>();
    last < 0x80 && ends % 2 == 0 && ends as usize / 2 <= limits.max_labels_per_series
}

/// Where the packed refs of a series read lazily lie: in the field the series starts with,
/// whose key the pass found to be the one byte `0a`.
pub(super) fn lazy_refs(buf: &[u8], rec: &SeriesRec) -> Result<Range<usize>, WireError> {
    Cursor::new(buf, rec.start as usize + 1..rec.end as usize).len_delim()
}

/// Read what lazy mode left unread (`series`) of every series, as the full pass reads it:
/// for a table with a symbol longer than a cap, whose labels `resolve` checks one by one.
fn read_lazy_runs(
    p: &mut Parsed,
    buf: &[u8],
    limits: &Limits,
    refs: &mut MaxRef,
) -> Result<(), WireError> {
    for index in 0..p.series.len() {
        let rec = p.series[index];
        if rec.flags & LAZY == 0 {
            continue;
        }
        let run = lazy_refs(buf, &rec)?;
        let labels_start = p.labels.len();
        if packed_pairs(p, buf, run, labels_start, index, limits, refs)?.is_some() {
            return Err(WireError::OddLabelRefs { series: index });
        }
        let rec = &mut p.series[index];
        rec.labels_start = labels_start as u32;
        rec.labels_end = p.labels.len() as u32;
        rec.flags = 0;
    }
    p.has_lazy = false;
    Ok(())
}

/// A packed `labels_refs` run, read two refs at a time. Returns the trailing name ref when
/// the run holds an odd count (the pair may be completed by a later, unpacked field).
fn packed_pairs(
    p: &mut Parsed,
    buf: &[u8],
    range: Range<usize>,
    labels_start: usize,
    index: usize,
    limits: &Limits,
    refs: &mut MaxRef,
) -> Result<Option<u32>, WireError> {
    let mut c = Cursor::new(buf, range);
    let mut max = 0u32;
    let mut trailing = None;
    while !c.at_end() {
        let name = as_u32(c.varint()?);
        max = max.max(name);
        if c.at_end() {
            trailing = Some(name);
            break;
        }
        let value = as_u32(c.varint()?);
        max = max.max(value);
        if p.labels.len() - labels_start >= limits.max_labels_per_series {
            return Err(WireError::TooManyLabels {
                series: index,
                limit: limits.max_labels_per_series,
            });
        }
        // Refs for now; resolve() swaps in the byte ranges.
        p.labels.push(LabelRec {
            name_off: name,
            name_len: 0,
            value_off: value,
            value_len: 0,
        });
    }
    // An empty run holds no ref at all, not ref 0.
    if p.labels.len() > labels_start || trailing.is_some() {
        refs.note(max, index);
    }
    Ok(trailing)
}

/// An `Exemplar` body: labels_refs 1 (packed or not, even length), value 2, timestamp 3.
fn exemplar(
    buf: &[u8],
    range: Range<usize>,
    index: usize,
    limits: &Limits,
    refs: &mut MaxRef,
) -> Result<(), WireError> {
    let mut c = Cursor::new(buf, range);
    let mut n_refs = 0usize;
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => c.repeated_varint(wire_type, "exemplar labels_refs: wrong wire type", |r| {
                refs.note(as_u32(r), index);
                n_refs += 1;
                if n_refs > 2 * limits.max_labels_per_series {
                    return Err(WireError::TooManyExemplarLabels {
                        series: index,
                        limit: limits.max_labels_per_series,
                    });
                }
                Ok(())
            })?,
            2 => {
                c.expect_fixed64(wire_type, "exemplar value: wrong wire type")?;
            }
            3 => {
                c.expect_varint(wire_type, "exemplar timestamp: wrong wire type")?;
            }
            _ => c.skip(wire_type)?,
        }
    }
    if n_refs % 2 != 0 {
        return Err(WireError::OddLabelRefs { series: index });
    }
    Ok(())
}

/// A `Metadata` body: type 1, help_ref 3, unit_ref 4 (there is no field 2).
fn merge_metadata(buf: &[u8], range: Range<usize>, m: &mut V2Metadata) -> Result<(), WireError> {
    let mut c = Cursor::new(buf, range);
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                m.metric_type = c.expect_varint(wire_type, "metadata type: wrong wire type")? as i32
            }
            3 => {
                m.help_ref =
                    as_u32(c.expect_varint(wire_type, "metadata help_ref: wrong wire type")?)
            }
            4 => {
                m.unit_ref =
                    as_u32(c.expect_varint(wire_type, "metadata unit_ref: wrong wire type")?)
            }
            _ => c.skip(wire_type)?,
        }
    }
    Ok(())
}

/// Decode the labels_refs of an exemplar body checked by the pass, calling `each` per pair.
pub(crate) fn exemplar_fields(
    buf: &[u8],
    range: Range<usize>,
    mut each_pair: impl FnMut(u32, u32),
) -> (f64, i64) {
    let mut value = 0.0;
    let mut timestamp = 0;
    let mut pending: Option<u32> = None;
    let mut c = Cursor::new(buf, range);
    while let Ok((field, wire_type)) = c.tag() {
        let ok = match field {
            1 => c.repeated_varint(wire_type, "", |r| {
                match pending.take() {
                    None => pending = Some(as_u32(r)),
                    Some(name) => each_pair(name, as_u32(r)),
                }
                Ok(())
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
