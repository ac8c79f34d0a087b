//! Zero-copy reader: one pass over a decompressed remote-write body that records, per series,
//! where its bytes and its labels are. Nothing is allocated per series; the offset tables are
//! reused between requests (`Parsed::clear` keeps their capacity).
//!
//! The pass checks the protobuf framing of everything the writer may later take apart (series,
//! labels, samples, exemplars, metadata, the top level of histograms), so that the lazy
//! iterators of `view` can decode without error paths. Series label semantics are left to
//! [`SeriesView::validate`], except where the pass settles them on the way and validation is
//! then a flag: the 1.0 series that start with the run of short labels every encoder writes
//! (`v1::canonical_run`), and the 2.0 series whose names the resolve loop finds in order
//! (`v2::resolve`). Exemplar labels are checked here in full (caps and UTF-8),
//! and a v2 symbol can be no longer than the longest allowed label name or value.

pub mod histogram;
#[cfg(test)]
mod tests;
pub(crate) mod v1;
pub(crate) mod v2;
mod view;

use super::proto::{self, Cursor};
use super::{Limits, Version, WireError};
pub(crate) use view::decode_sample;
pub use view::{is_ascii, short_eq, LabelsIter, RawFields, SampleIter, SeriesView, WireSample};

/// Totals over one request, counted while parsing (so telemetry needs no second pass).
///
/// `metadata` is, for v1, the number of request-level `MetricMetadata` entries; for v2, the
/// number of series whose `metadata` field is present and not all-default (Go senders always
/// emit the field, empty when they know nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemCounts {
    pub series: u64,
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
    pub metadata: u64,
}

/// Where one TimeSeries lives. u32 offsets: `parse` rejects bodies of 4 GiB or more.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SeriesRec {
    /// Byte range of the TimeSeries message body in the buffer.
    pub(crate) start: u32,
    pub(crate) end: u32,
    /// Range into `Parsed::labels`.
    pub(crate) labels_start: u32,
    pub(crate) labels_end: u32,
    pub(crate) samples: u32,
    pub(crate) histograms: u32,
    pub(crate) exemplars: u32,
    /// v2: index + 1 into `Parsed::v2_metadata`, 0 when the series carries none.
    pub(crate) metadata: u32,
    /// Offset of the first sample's tag (`end` when there is none), where `samples()` starts.
    pub(crate) first_sample: u32,
    /// `CHECKED`, and `CANONICAL` and `SORTED` with it: found by `Parsed::validate` in its
    /// walk over the labels, so that `SeriesView::canonical_labels` need not walk them again
    /// and the guard need not check their order. `LAZY`, `GUESSED`: see there.
    pub(crate) flags: u8,
}

/// `SeriesRec::flags`: `Parsed::validate` accepted the series and set the other flags.
pub(crate) const CHECKED: u8 = 1;
/// `SeriesRec::flags`: the labels are a canonical 1.0 encoding of themselves, back to back
/// (see `SeriesView::canonical_labels`).
pub(crate) const CANONICAL: u8 = 2;
/// `SeriesRec::flags`: the label names are strictly increasing (sorted and unique), so an
/// identity can be built from them in order without checking it again.
pub(crate) const SORTED: u8 = 4;
/// `SeriesRec::flags`, in lazy mode (`Parsed::set_lazy_labels`): the labels were not
/// recorded. They are one run of labels framed as `canonical` ones, from the
/// start of the series to its first sample, read from the bytes by `SeriesView::labels`, and
/// not yet checked: `SeriesView::check_lazy` checks them.
pub(crate) const LAZY: u8 = 8;
/// `SeriesRec::flags`, with `LAZY`, when runs are guessed (`Parsed::set_guessed_runs`): the
/// run is not known to be one. The series ends in one sample (plain, or of value 0), and the
/// run is taken to be everything before it, unwalked: `Parsed::settle_guess` tells whether it
/// is.
pub(crate) const GUESSED: u8 = 16;

/// One label as byte ranges of the buffer. For v2 these hold symbol refs until the end of the
/// pass, then are resolved in place to the symbols' byte ranges.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LabelRec {
    pub(crate) name_off: u32,
    pub(crate) name_len: u32,
    pub(crate) value_off: u32,
    pub(crate) value_len: u32,
}

/// A v2 series' `Metadata`, refs checked against the symbols table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V2Metadata {
    pub metric_type: i32,
    pub help_ref: u32,
    pub unit_ref: u32,
}

impl V2Metadata {
    /// True when every field is at its default: the series carries no information.
    pub fn is_empty(&self) -> bool {
        *self == V2Metadata::default()
    }
}

/// The offset tables of one parsed request. Owns no borrowed data, so one value can be kept
/// per worker and reused; views borrow the buffer it was parsed from.
#[derive(Debug)]
pub struct Parsed {
    version: Version,
    counts: ItemCounts,
    pub(crate) series: Vec<SeriesRec>,
    pub(crate) labels: Vec<LabelRec>,
    /// v2: `(offset, len)` of every symbol, in table order.
    pub(crate) symbols: Vec<(u32, u32)>,
    /// v2: byte range covering all field-4 entries when they are contiguous in the body (the
    /// usual case), so the writer can copy the table with one `memcpy`.
    pub(crate) symbols_raw: Option<(u32, u32)>,
    /// v2: every symbol is valid UTF-8, so `SeriesView::validate` need not check label
    /// strings one reference at a time (a request's labels reuse a few symbols many times).
    pub(crate) symbols_utf8: bool,
    /// v1: body ranges of the request-level `MetricMetadata` entries.
    pub(crate) v1_metadata: Vec<(u32, u32)>,
    pub(crate) v2_metadata: Vec<V2Metadata>,
    /// v2, while resolving: each symbol's rank among the request's label names by their
    /// bytes (`v2::name_ranks`), and the symbols used as names.
    pub(crate) name_ranks: Vec<u32>,
    pub(crate) name_symbols: Vec<u32>,
    /// `set_lazy_labels`.
    pub(crate) lazy_labels: bool,
    /// `set_guessed_runs`.
    pub(crate) guessed_runs: bool,
    /// The caps of the last `parse`, for `settle_guess`.
    pub(crate) limits: Limits,
    /// `has_lazy`.
    pub(crate) has_lazy: bool,
}

impl Default for Parsed {
    fn default() -> Self {
        Parsed {
            version: Version::V1,
            counts: ItemCounts::default(),
            series: Vec::new(),
            labels: Vec::new(),
            symbols: Vec::new(),
            symbols_raw: None,
            symbols_utf8: false,
            v1_metadata: Vec::new(),
            v2_metadata: Vec::new(),
            name_ranks: Vec::new(),
            name_symbols: Vec::new(),
            lazy_labels: false,
            guessed_runs: false,
            limits: Limits::default(),
            has_lazy: false,
        }
    }
}

impl Parsed {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse `buf` (a decompressed body) as `version`, enforcing `limits`. Structural checks
    /// only: protobuf framing, v2 symbol references, the caps in `limits`. Label semantics
    /// (UTF-8, `__name__`, duplicates) are `SeriesView::validate`'s job so that a later stage
    /// can skip it for series already known.
    ///
    /// On error the tables are left cleared.
    pub fn parse(
        &mut self,
        buf: &[u8],
        version: Version,
        limits: &Limits,
    ) -> Result<(), WireError> {
        self.clear();
        self.version = version;
        self.limits = *limits;
        if u32::try_from(buf.len()).is_err() {
            return Err(proto::err("body of 4 GiB or more", 0));
        }
        let result = match version {
            Version::V1 => v1::parse(self, buf, limits),
            Version::V2 => v2::parse(self, buf, limits),
        };
        match result {
            Ok(()) => {
                self.counts.series = self.series.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.clear();
                Err(e)
            }
        }
    }

    /// Lazy mode, from the next `parse` on: a 1.0 series whose labels are one run of short
    /// ones (what every encoder writes) followed by its samples, and a 2.0 series whose first
    /// field is its packed symbol refs (what every encoder writes; `v2::lazy_run` says which
    /// runs), is recorded without its labels (`LAZY`), which saves most of the pass for a
    /// caller that knows most series by those bytes alone: the guard's fresh table. Such a
    /// series is *not checked*: `Parsed::validate` and `SeriesView::validate` check it in
    /// full when asked, and its labels are read from the bytes (2.0: resolved through the
    /// symbols table as they are read); whoever turns this on must check every series it does
    /// not know (`SeriesView::check_lazy`) before using it. A 2.0 body is then not checked
    /// for what depends on its table (refs in range, the caps on the strings they name)
    /// where no series is: a body the full pass refuses may parse, and fails that check.
    pub fn set_lazy_labels(&mut self, on: bool) {
        self.lazy_labels = on;
    }

    /// With lazy mode, from the next `parse` on: a series that ends in one sample (a float and
    /// a timestamp, or a timestamp alone for a value of 0, as Prometheus sends most) is
    /// recorded as `LAZY` with everything
    /// before that sample taken for its run of labels, found from the series' end instead of by
    /// walking its labels one after the other (a chain of dependent loads, the most of what a
    /// lazy series costs the pass). The guess is right when those bytes are a run; a caller
    /// that knows a run by its bytes (the guard's fresh table: the very bytes of a series
    /// checked before) needs no more, and must ask `settle_guess` of every other guessed series
    /// before it reads anything of it. When one does not settle, the request must be read
    /// again without guesses: only then are its records, counts and errors those of lazy mode.
    pub fn set_guessed_runs(&mut self, on: bool) {
        self.guessed_runs = on;
    }

    /// Series `i`'s run was guessed (`set_guessed_runs`), whether or not it settles.
    #[cfg(test)]
    pub(crate) fn guessed(&self, i: usize) -> bool {
        self.series[i].flags & GUESSED != 0
    }

    /// Whether series `i`'s guessed run is the run lazy mode would have walked: the labels,
    /// framed and capped as `v1::canonical_run` takes them, end exactly where the guessed
    /// sample starts. Then its record is the one lazy mode makes (one sample, no exemplar, no
    /// histogram). `true` for a series that was not guessed.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`, like slice indexing.
    pub fn settle_guess(&self, buf: &[u8], i: usize) -> bool {
        let rec = &self.series[i];
        rec.flags & GUESSED == 0
            || v1::run_end(
                buf,
                rec.start as usize..rec.first_sample as usize,
                &self.limits,
            ) == Some(rec.first_sample as usize)
    }

    /// Some series of the last `parse` were recorded without their labels (`lazy`).
    pub fn has_lazy(&self) -> bool {
        self.has_lazy
    }

    /// Series `i` was recorded without its labels, not yet checked (`set_lazy_labels`).
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`, like slice indexing.
    pub fn lazy(&self, i: usize) -> bool {
        self.series[i].flags & LAZY != 0
    }

    /// Heap bytes held by the offset tables (their capacity, not their length), so a caller
    /// that reuses one `Parsed` can release it after an outsized request.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.series.capacity() * size_of::<SeriesRec>()
            + self.labels.capacity() * size_of::<LabelRec>()
            + self.symbols.capacity() * size_of::<(u32, u32)>()
            + self.v1_metadata.capacity() * size_of::<(u32, u32)>()
            + self.v2_metadata.capacity() * size_of::<V2Metadata>()
            + (self.name_ranks.capacity() + self.name_symbols.capacity()) * size_of::<u32>()
    }

    pub fn clear(&mut self) {
        self.counts = ItemCounts::default();
        self.series.clear();
        self.labels.clear();
        self.symbols.clear();
        self.symbols_raw = None;
        self.symbols_utf8 = false;
        self.v1_metadata.clear();
        self.v2_metadata.clear();
        self.has_lazy = false;
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn counts(&self) -> ItemCounts {
        self.counts
    }

    pub(crate) fn counts_mut(&mut self) -> &mut ItemCounts {
        &mut self.counts
    }

    /// Number of TimeSeries entries.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A view of series `i` (0-based, in request order). `buf` must be the buffer passed to
    /// `parse`.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`, like slice indexing (a caller bug, never input-dependent).
    pub fn series<'a>(&'a self, buf: &'a [u8], i: usize) -> SeriesView<'a> {
        self.view(buf, &self.series[i])
    }

    /// `SeriesView::validate` of series `i`, which also records whether its labels are
    /// canonical where they lie, for `SeriesView::canonical_labels` (found in the same walk,
    /// at ~25 instructions a label), and whether its names are sorted
    /// (`SeriesView::sorted`): for callers that will ask, such as the guard.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`, like slice indexing.
    pub fn validate(&mut self, buf: &[u8], i: usize) -> Result<(), WireError> {
        // The pass settled it already (`v1::canonical_run`, `v2::resolve`).
        if self.series[i].flags & CHECKED != 0 {
            return Ok(());
        }
        let lazy = self.series[i].flags & LAZY;
        self.series[i].flags = lazy | self.check(buf, i)?;
        Ok(())
    }

    /// The walk of [`Parsed::validate`] whatever the pass found: the flags it would record.
    fn check(&self, buf: &[u8], i: usize) -> Result<u8, WireError> {
        // v2 labels are symbol references, never canonical in place: no framing to check.
        let flags = match self.version {
            Version::V1 => self.series(buf, i).validate_framing::<true>(i)?,
            Version::V2 => self.series(buf, i).validate_framing::<false>(i)?,
        };
        Ok(CHECKED | flags)
    }

    /// For the fuzz targets and property tests: the flags series `i` holds now (what the pass
    /// or `validate` recorded, 0 before either), and what the full walk of `validate` finds.
    #[doc(hidden)]
    pub fn flags_and_check(&self, buf: &[u8], i: usize) -> (u8, Result<u8, WireError>) {
        (self.series[i].flags, self.check(buf, i))
    }

    /// Series `i`, or `None` past the end.
    pub fn get<'a>(&'a self, buf: &'a [u8], i: usize) -> Option<SeriesView<'a>> {
        self.series.get(i).map(|rec| self.view(buf, rec))
    }

    /// Every series in request order.
    pub fn iter<'a>(&'a self, buf: &'a [u8]) -> impl ExactSizeIterator<Item = SeriesView<'a>> + 'a {
        self.series.iter().map(move |rec| self.view(buf, rec))
    }

    fn view<'a>(&'a self, buf: &'a [u8], rec: &'a SeriesRec) -> SeriesView<'a> {
        let labels = self
            .labels
            .get(rec.labels_start as usize..rec.labels_end as usize)
            .unwrap_or(&[]);
        let metadata = match rec.metadata {
            0 => None,
            n => self.v2_metadata.get(n as usize - 1).copied(),
        };
        SeriesView {
            buf,
            rec: *rec,
            labels,
            version: self.version,
            metadata,
            symbols_utf8: self.symbols_utf8,
            symbols: &self.symbols,
        }
    }

    /// v2: number of entries in the symbols table.
    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    /// v2: symbol `r` of the table, if in range.
    pub fn symbol<'a>(&self, buf: &'a [u8], r: u32) -> Option<&'a [u8]> {
        self.symbols
            .get(r as usize)
            .map(|&(off, len)| proto::slice(buf, off, len))
    }

    /// v1: number of request-level `MetricMetadata` entries.
    pub fn metadata_len(&self) -> usize {
        self.v1_metadata.len()
    }

    /// v1: the body of `MetricMetadata` entry `i` (without tag and length).
    pub fn metadata_raw<'a>(&self, buf: &'a [u8], i: usize) -> Option<&'a [u8]> {
        self.v1_metadata
            .get(i)
            .map(|&(off, len)| proto::slice(buf, off, len))
    }
}

/// Whether a series' label names come strictly increasing (sorted and unique), and whether
/// one is a non-empty `__name__`: what `SeriesView::validate`, the 1.0 pass's canonical runs
/// and the checks of lazily read series all ask, fed one label at a time.
pub(crate) struct NameOrder<'a> {
    prev: &'a [u8],
    pub(crate) sorted: bool,
    pub(crate) has_name: bool,
}

impl<'a> NameOrder<'a> {
    pub(crate) fn new() -> Self {
        NameOrder {
            prev: &[],
            sorted: true,
            has_name: false,
        }
    }

    #[inline(always)]
    pub(crate) fn see(&mut self, name: &'a [u8], value_len: usize) {
        self.sorted &= strictly_after(name, self.prev);
        // An empty value is no value (Prometheus drops empty labels): `__name__=""` is a
        // series without a name.
        self.has_name |= value_len > 0 && name == b"__name__";
        self.prev = name;
    }
}

/// `name` sorts after `prev` (label names strictly increasing: sorted and unique).
#[inline(always)]
pub(crate) fn strictly_after(name: &[u8], prev: &[u8]) -> bool {
    // First bytes before memcmp: exporters' label names mostly differ there.
    match name.first().cmp(&prev.first()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => name > prev,
    }
}

/// Walk the top-level fields of a message we only copy (histograms): framing only, so that
/// the writer can take it apart field by field.
pub(crate) fn check_framing(buf: &[u8], range: std::ops::Range<usize>) -> Result<(), WireError> {
    let mut c = Cursor::new(buf, range);
    while !c.at_end() {
        let (_, wire_type) = c.tag()?;
        c.skip(wire_type)?;
    }
    Ok(())
}

#[inline]
pub(crate) fn check_label_lengths(
    l: &LabelRec,
    series: usize,
    limits: &Limits,
) -> Result<(), WireError> {
    if l.name_len as usize > limits.max_label_name_bytes {
        return Err(WireError::LabelNameTooLong {
            series,
            limit: limits.max_label_name_bytes,
        });
    }
    if l.value_len as usize > limits.max_label_value_bytes {
        return Err(WireError::LabelValueTooLong {
            series,
            limit: limits.max_label_value_bytes,
        });
    }
    Ok(())
}

/// An exemplar label gets the caps of a series label: name and value lengths, and valid
/// UTF-8 (checked here rather than in `SeriesView::validate`, since exemplars are never part
/// of a series' identity and v2 ones need the symbols table).
pub(crate) fn check_exemplar_label(
    name: &[u8],
    value: &[u8],
    series: usize,
    limits: &Limits,
) -> Result<(), WireError> {
    if name.len() > limits.max_label_name_bytes {
        return Err(WireError::ExemplarLabelNameTooLong {
            series,
            limit: limits.max_label_name_bytes,
        });
    }
    if value.len() > limits.max_label_value_bytes {
        return Err(WireError::ExemplarLabelValueTooLong {
            series,
            limit: limits.max_label_value_bytes,
        });
    }
    for (part, s) in [("name", name), ("value", value)] {
        if !s.is_ascii() && std::str::from_utf8(s).is_err() {
            return Err(WireError::ExemplarInvalidUtf8 { series, part });
        }
    }
    Ok(())
}
