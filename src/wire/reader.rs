//! Zero-copy reader: one pass over a decompressed remote-write body that records, per series,
//! where its bytes and its labels are. Nothing is allocated per series; the offset tables are
//! reused between requests (`Parsed::clear` keeps their capacity).
//!
//! The pass checks the protobuf framing of everything the writer may later take apart (series,
//! labels, samples, exemplars, metadata, the top level of histograms), so that the lazy
//! iterators below can decode without error paths. Label semantics are left to
//! [`SeriesView::validate`].

#[cfg(test)]
mod tests;
pub(crate) mod v1;
pub(crate) mod v2;

use super::proto::{self, Cursor};
use super::{Limits, Version, WireError};

/// Totals over one request, counted while parsing (so telemetry needs no second pass).
///
/// `metadata` is, for v1, the number of request-level `MetricMetadata` entries; for v2, the
/// number of series whose `metadata` field is present and not all-default (Go senders always
/// emit the field, empty when they know nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
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
}

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
    counts: Counts,
    pub(crate) series: Vec<SeriesRec>,
    pub(crate) labels: Vec<LabelRec>,
    /// v2: `(offset, len)` of every symbol, in table order.
    pub(crate) symbols: Vec<(u32, u32)>,
    /// v2: byte range covering all field-4 entries when they are contiguous in the body (the
    /// usual case), so the writer can copy the table with one `memcpy`.
    pub(crate) symbols_raw: Option<(u32, u32)>,
    /// v1: body ranges of the request-level `MetricMetadata` entries.
    pub(crate) v1_metadata: Vec<(u32, u32)>,
    pub(crate) v2_metadata: Vec<V2Metadata>,
}

impl Default for Parsed {
    fn default() -> Self {
        Parsed {
            version: Version::V1,
            counts: Counts::default(),
            series: Vec::new(),
            labels: Vec::new(),
            symbols: Vec::new(),
            symbols_raw: None,
            v1_metadata: Vec::new(),
            v2_metadata: Vec::new(),
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

    pub fn clear(&mut self) {
        self.counts = Counts::default();
        self.series.clear();
        self.labels.clear();
        self.symbols.clear();
        self.symbols_raw = None;
        self.v1_metadata.clear();
        self.v2_metadata.clear();
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub(crate) fn counts_mut(&mut self) -> &mut Counts {
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

/// One series, borrowing from the decompressed buffer.
#[derive(Clone, Copy)]
pub struct SeriesView<'a> {
    buf: &'a [u8],
    rec: SeriesRec,
    labels: &'a [LabelRec],
    version: Version,
    metadata: Option<V2Metadata>,
}

impl std::fmt::Debug for SeriesView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<_> = self
            .labels()
            .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
            .collect();
        f.debug_struct("SeriesView")
            .field("version", &self.version)
            .field("bytes", &(self.rec.start..self.rec.end))
            .field("labels", &labels)
            .field("samples", &self.rec.samples)
            .field("histograms", &self.rec.histograms)
            .field("exemplars", &self.rec.exemplars)
            .finish()
    }
}

/// Most labels checked for duplicates pairwise; past it, a sorted scratch copy is cheaper.
const PAIRWISE_MAX: usize = 32;

impl<'a> SeriesView<'a> {
    /// Label pairs in wire order (v2: resolved through the symbols table).
    pub fn labels(&self) -> LabelsIter<'a> {
        LabelsIter {
            buf: self.buf,
            labels: self.labels.iter(),
        }
    }
    pub fn label_count(&self) -> usize {
        self.labels.len()
    }
    /// Value of `__name__`, if present.
    pub fn metric_name(&self) -> Option<&'a [u8]> {
        self.labels()
            .find(|(n, _)| *n == b"__name__")
            .map(|(_, v)| v)
    }
    pub fn samples(&self) -> SampleIter<'a> {
        SampleIter {
            cursor: self.body(),
            version: self.version,
        }
    }
    pub fn sample_count(&self) -> usize {
        self.rec.samples as usize
    }
    pub fn histogram_count(&self) -> usize {
        self.rec.histograms as usize
    }
    pub fn exemplar_count(&self) -> usize {
        self.rec.exemplars as usize
    }
    /// The TimeSeries message body (without its field tag and length prefix).
    pub fn raw(&self) -> &'a [u8] {
        proto::slice(self.buf, self.rec.start, self.rec.end - self.rec.start)
    }
    /// The version the series was parsed as.
    pub fn version(&self) -> Version {
        self.version
    }
    /// v2: the series' `Metadata`, if the field is present (it may be all-default).
    pub fn v2_metadata(&self) -> Option<V2Metadata> {
        self.metadata
    }
    /// The raw bodies of the series' native histograms (v1 field 4, v2 field 3), in order.
    pub fn histograms_raw(&self) -> RawFields<'a> {
        let field = match self.version {
            Version::V1 => 4,
            Version::V2 => 3,
        };
        RawFields {
            cursor: self.body(),
            buf: self.buf,
            field,
        }
    }
    /// The raw bodies of the series' exemplars (v1 field 3, v2 field 4), in order.
    pub fn exemplars_raw(&self) -> RawFields<'a> {
        let field = match self.version {
            Version::V1 => 3,
            Version::V2 => 4,
        };
        RawFields {
            cursor: self.body(),
            buf: self.buf,
            field,
        }
    }

    pub(crate) fn body(&self) -> Cursor<'a> {
        Cursor::new(self.buf, self.rec.start as usize..self.rec.end as usize)
    }

    pub(crate) fn buf(&self) -> &'a [u8] {
        self.buf
    }

    /// Label semantics: at least one label, `__name__` present, names non-empty and unique,
    /// names and values valid UTF-8. `index` is only used in the error message.
    ///
    /// Labels may arrive unsorted (1.0 receivers accept that, PROTOCOL.md §5b), so uniqueness
    /// does not rely on order; sorted input (what Prometheus sends) takes a linear fast path.
    pub fn validate(&self, index: usize) -> Result<(), WireError> {
        if self.labels.is_empty() {
            return Err(WireError::NoLabels { series: index });
        }
        let mut has_name = false;
        let mut sorted = true;
        let mut prev: &[u8] = &[];
        for (i, (name, value)) in self.labels().enumerate() {
            if name.is_empty() {
                return Err(WireError::EmptyLabelName { series: index });
            }
            if std::str::from_utf8(name).is_err() {
                return Err(WireError::InvalidUtf8 {
                    series: index,
                    part: "name",
                });
            }
            if std::str::from_utf8(value).is_err() {
                return Err(WireError::InvalidUtf8 {
                    series: index,
                    part: "value",
                });
            }
            has_name |= name == b"__name__";
            if i > 0 && name <= prev {
                sorted = false;
            }
            prev = name;
        }
        if !sorted {
            self.check_duplicates(index)?;
        }
        if !has_name {
            return Err(WireError::NoMetricName { series: index });
        }
        Ok(())
    }

    /// Slow path for unsorted labels: pairwise for few labels (no allocation), a sorted
    /// scratch copy for many.
    fn check_duplicates(&self, index: usize) -> Result<(), WireError> {
        let dup = |name: &[u8]| WireError::DuplicateLabel {
            series: index,
            name: String::from_utf8_lossy(name).into_owned(),
        };
        if self.labels.len() <= PAIRWISE_MAX {
            for (i, (a, _)) in self.labels().enumerate() {
                if self.labels().skip(i + 1).any(|(b, _)| a == b) {
                    return Err(dup(a));
                }
            }
            return Ok(());
        }
        let mut names: Vec<&[u8]> = self.labels().map(|(n, _)| n).collect();
        names.sort_unstable();
        match names.windows(2).find(|w| w[0] == w[1]) {
            Some(w) => Err(dup(w[0])),
            None => Ok(()),
        }
    }
}

/// Iterator over `(name, value)` byte slices.
pub struct LabelsIter<'a> {
    buf: &'a [u8],
    labels: std::slice::Iter<'a, LabelRec>,
}

impl<'a> Iterator for LabelsIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.labels.next().map(|l| {
            (
                proto::slice(self.buf, l.name_off, l.name_len),
                proto::slice(self.buf, l.value_off, l.value_len),
            )
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.labels.size_hint()
    }
}

impl ExactSizeIterator for LabelsIter<'_> {}

/// A float sample as read off the wire. `start_timestamp` is 0 (unset) for v1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WireSample {
    pub value: f64,
    pub timestamp: i64,
    pub start_timestamp: i64,
}

/// Iterator over a series' float samples, decoded lazily from its raw bytes.
pub struct SampleIter<'a> {
    cursor: Cursor<'a>,
    version: Version,
}

impl Iterator for SampleIter<'_> {
    type Item = WireSample;
    fn next(&mut self) -> Option<Self::Item> {
        // `parse` checked the framing of every sample, so errors here cannot happen for the
        // parsed buffer; with any other buffer the iterator just stops.
        while !self.cursor.at_end() {
            let (field, wire_type) = self.cursor.tag().ok()?;
            if field == 2 && wire_type == proto::LEN {
                let range = self.cursor.len_delim().ok()?;
                let mut c = Cursor::new(self.cursor.buf(), range);
                return decode_sample(&mut c, self.version).ok();
            }
            self.cursor.skip(wire_type).ok()?;
        }
        None
    }
}

/// Decode one Sample body (v1: 1 value, 2 timestamp; v2 adds 3 start_timestamp). Later
/// occurrences of a field win, as protobuf specifies for scalars.
#[inline]
pub(crate) fn decode_sample(c: &mut Cursor<'_>, version: Version) -> Result<WireSample, WireError> {
    let mut s = WireSample {
        value: 0.0,
        timestamp: 0,
        start_timestamp: 0,
    };
    while !c.at_end() {
        let (field, wire_type) = c.tag()?;
        match field {
            1 => {
                s.value =
                    f64::from_bits(c.expect_fixed64(wire_type, "sample value: wrong wire type")?)
            }
            2 => {
                s.timestamp =
                    c.expect_varint(wire_type, "sample timestamp: wrong wire type")? as i64
            }
            3 if version == Version::V2 => {
                s.start_timestamp =
                    c.expect_varint(wire_type, "sample start_timestamp: wrong wire type")? as i64
            }
            _ => c.skip(wire_type)?,
        }
    }
    Ok(s)
}

/// Iterator over the raw bodies of one repeated message field of a series.
pub struct RawFields<'a> {
    cursor: Cursor<'a>,
    buf: &'a [u8],
    field: u32,
}

impl<'a> Iterator for RawFields<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<Self::Item> {
        while !self.cursor.at_end() {
            let (field, wire_type) = self.cursor.tag().ok()?;
            if field == self.field && wire_type == proto::LEN {
                let range = self.cursor.len_delim().ok()?;
                return self.buf.get(range);
            }
            self.cursor.skip(wire_type).ok()?;
        }
        None
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
