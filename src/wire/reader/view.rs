//! Views of one parsed series: labels borrowed from the buffer, samples decoded lazily,
//! and the label checks (`validate`).

use super::{
    strictly_after, LabelRec, NameOrder, SeriesRec, V2Metadata, CANONICAL, CHECKED, LAZY, SORTED,
};
use crate::wire::proto::{self, Cursor};
use crate::wire::{Version, WireError};

/// One series, borrowing from the decompressed buffer.
#[derive(Clone, Copy)]
pub struct SeriesView<'a> {
    pub(super) buf: &'a [u8],
    pub(super) rec: SeriesRec,
    pub(super) labels: &'a [LabelRec],
    pub(super) version: Version,
    pub(super) metadata: Option<V2Metadata>,
    /// `Parsed::symbols_utf8`.
    pub(super) symbols_utf8: bool,
    /// v2: `Parsed::symbols`, which the refs of a series read lazily point into.
    pub(super) symbols: &'a [(u32, u32)],
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

#[inline]
pub(super) fn is_utf8(s: &[u8]) -> bool {
    is_ascii(s) || std::str::from_utf8(s).is_ok()
}

/// `a == b` for the short strings label names and owner values are, in at most two word
/// compares a side instead of a memcmp call (what the slice compare compiles to).
#[inline(always)]
pub fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let half = |s: &[u8], at: usize| -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_le_bytes(w)
    };
    match n {
        // Two overlapping loads cover every length in the range.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

/// Word-at-a-time ASCII check (std's `is_ascii` ends up byte-at-a-time for these short,
/// unaligned spans).
#[inline]
pub fn is_ascii(s: &[u8]) -> bool {
    let mut words = s.chunks_exact(8);
    let mut acc = 0u64;
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        acc |= u64::from_le_bytes(word);
    }
    let tail = words.remainder().iter().fold(0u8, |a, &b| a | b);
    acc & 0x8080_8080_8080_8080 == 0 && tail < 0x80
}

/// Most labels checked for duplicates pairwise; past it, a sorted scratch copy is cheaper.
const PAIRWISE_MAX: usize = 32;

impl<'a> SeriesView<'a> {
    /// Label pairs in wire order (v2: resolved through the symbols table).
    pub fn labels(&self) -> LabelsIter<'a> {
        if let Some(refs) = self.lazy_refs() {
            return LabelsIter {
                buf: self.buf,
                labels: [].iter(),
                raw: refs,
                symbols: Some(self.symbols),
            };
        }
        LabelsIter {
            buf: self.buf,
            labels: self.labels.iter(),
            raw: self.lazy_run().unwrap_or_default(),
            symbols: None,
        }
    }

    /// A 1.0 `LAZY` series' labels as they lie: one run of canonically framed ones, from the
    /// start of the series to its first sample (see `Parsed::set_lazy_labels`).
    #[inline]
    pub fn lazy_run(&self) -> Option<&'a [u8]> {
        if self.rec.flags & LAZY == 0 || self.version != Version::V1 {
            return None;
        }
        self.buf
            .get(self.rec.start as usize..self.rec.first_sample as usize)
    }

    /// A 2.0 `LAZY` series' labels as they lie: the packed symbol refs of its first field,
    /// unchecked (see `Parsed::set_lazy_labels`). The table they point into is
    /// `Parsed::symbols`.
    #[inline]
    pub fn lazy_refs(&self) -> Option<&'a [u8]> {
        if self.rec.flags & LAZY == 0 || self.version != Version::V2 {
            return None;
        }
        let run = super::v2::lazy_refs(self.buf, &self.rec).ok()?;
        self.buf.get(run)
    }

    /// A 2.0 `LAZY` series' label records, resolved from its refs as the full pass resolves
    /// them, with the errors it finds there: a ref that is no varint, or past the table.
    #[inline(never)]
    fn lazy_ref_recs(&self, index: usize, refs: &[u8]) -> Result<Vec<LabelRec>, WireError> {
        // A cursor over the body, so that an error says where in it as the full pass does.
        let start = refs.as_ptr() as usize - self.buf.as_ptr() as usize;
        let mut c = Cursor::new(self.buf, start..start + refs.len());
        let symbol = |c: &mut Cursor<'_>| -> Result<(u32, u32), WireError> {
            // Truncated to 32 bits as Go and prost read a `uint32`.
            let r = c.varint()? as u32;
            self.symbols
                .get(r as usize)
                .copied()
                .ok_or(WireError::SymbolOutOfRange {
                    series: index,
                    reference: u64::from(r),
                    symbols: self.symbols.len(),
                })
        };
        let mut recs = Vec::with_capacity(refs.len() / 2);
        while !c.at_end() {
            let (name_off, name_len) = symbol(&mut c)?;
            if c.at_end() {
                return Err(WireError::OddLabelRefs { series: index });
            }
            let (value_off, value_len) = symbol(&mut c)?;
            recs.push(LabelRec {
                name_off,
                name_len,
                value_off,
                value_len,
            });
        }
        Ok(recs)
    }

    /// Check a `LAZY` series as `validate` does; `Ok(true)` when its labels are canonical
    /// where they lie (`canonical_labels`), so that a hash of its run is its identity. First
    /// the checks the full pass makes on such a run where the bytes are read anyway (names
    /// increasing, a `__name__`, all ASCII); a run that fails them is checked label by label
    /// like any other series, for the same error.
    ///
    /// A 2.0 series is checked in full, and its labels are never canonical where they lie:
    /// `Ok(false)` when they pass.
    pub fn check_lazy(&self, index: usize) -> Result<bool, WireError> {
        if self.lazy_refs().is_some() {
            return self.validate_framing::<false>(index).map(|_| false);
        }
        if let Some(run) = self.lazy_run() {
            if self.rec.histograms == 0 && is_ascii(run) {
                let names = self.lazy_names();
                if names.sorted && names.has_name {
                    return Ok(true);
                }
            }
        }
        Ok(self.validate_framing::<true>(index)? & CANONICAL != 0)
    }

    /// The order of a `LAZY` series' label names, read from its run.
    fn lazy_names(&self) -> NameOrder<'a> {
        let mut names = NameOrder::new();
        for (name, value) in self.labels() {
            names.see(name, value.len());
        }
        names
    }

    /// A `LAZY` series' label records, made from its run for the checks that need them.
    fn lazy_recs(&self) -> Vec<LabelRec> {
        // Where the strings lie, from the slices themselves: a guessed run that the guard
        // knew may hold two-byte lengths.
        let base = self.buf.as_ptr() as usize;
        let off = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        self.labels()
            .map(|(n, v)| LabelRec {
                name_off: off(n),
                name_len: n.len() as u32,
                value_off: off(v),
                value_len: v.len() as u32,
            })
            .collect()
    }
    /// The series' labels exactly as a canonical remote write 1.0 encoding of them, when
    /// the body already holds one: sorted, unique names, each `Label` as
    /// `0a <len> 0a <n> name 12 <v> value` with one-byte lengths, back to back. That is what
    /// Prometheus sends, so the guard can hash these bytes where they lie instead of copying
    /// every label into a canonical buffer first. `None` for anything else (v2, unsorted,
    /// long strings, unusual framing); the caller then builds the same bytes itself.
    ///
    /// After `Parsed::validate` this reads the flag it left; otherwise it walks the labels.
    #[inline]
    pub fn canonical_labels(&self) -> Option<&'a [u8]> {
        if let Some(run) = self.lazy_run() {
            // Framed canonically by construction: canonical when the names increase.
            let canonical = match self.rec.flags & CHECKED {
                0 => self.lazy_names().sorted,
                _ => self.rec.flags & CANONICAL != 0,
            };
            return canonical.then_some(run);
        }
        if self.rec.flags & CHECKED != 0 {
            if self.rec.flags & CANONICAL == 0 {
                return None;
            }
            let (first, last) = (self.labels.first()?, self.labels.last()?);
            let start = (first.name_off as usize).checked_sub(4)?;
            return self
                .buf
                .get(start..last.value_off as usize + last.value_len as usize);
        }
        self.canonical_walk()
    }

    /// `canonical_labels` for a series `Parsed::validate` has not seen.
    fn canonical_walk(&self) -> Option<&'a [u8]> {
        if self.version != Version::V1 {
            return None;
        }
        let first = self.labels.first()?;
        let start = (first.name_off as usize).checked_sub(4)?;
        let mut at = start;
        let mut prev: &[u8] = &[];
        for l in self.labels {
            let (n, v) = (l.name_len as usize, l.value_len as usize);
            let name_off = l.name_off as usize;
            let len = n + v + 4;
            if name_off != at + 4 || l.value_off as usize != name_off + n + 2 || len >= 0x80 {
                return None;
            }
            let b = self.buf.get(at..at + 2 + len)?;
            // The framing bytes, compared whole (n < 0x80 and v < 0x80 follow from len).
            let (head, rest) = b.split_first_chunk::<4>()?;
            let (name, rest) = rest.split_at(n);
            let mid = rest.first_chunk::<2>()?;
            if *head != [0x0a, len as u8, 0x0a, n as u8] || *mid != [0x12, v as u8] {
                return None;
            }
            // Strictly increasing names: sorted and unique.
            if !strictly_after(name, prev) {
                return None;
            }
            prev = name;
            at += 2 + len;
        }
        self.buf.get(start..at)
    }

    /// The series body before its first sample, when every label field lies there (what
    /// every encoder writes: labels first, then samples): whole protobuf fields, every label
    /// field among them, so the series' labels, in order, are a function of these bytes alone.
    /// Two series with the same such bytes have the same labels; one label set may come in
    /// several encodings (only a cache keyed on them misses). Found from the offset tables
    /// alone, without walking the labels: the relabel memo's key. `None` for v2 (labels are
    /// symbol refs), for series without samples (the span would hold their histograms) and
    /// for labels after a sample.
    #[inline]
    pub fn label_fields(&self) -> Option<&'a [u8]> {
        if self.version != Version::V1 || self.rec.samples == 0 {
            return None;
        }
        if let Some(run) = self.lazy_run() {
            return Some(run);
        }
        // Labels are recorded in the order their fields come. A field before the first
        // sample ends at or before it; one after it starts (and holds its strings, or for an
        // empty label message its end) at least a tag and a length byte later.
        let last = self.labels.last()?;
        let first_sample = self.rec.first_sample;
        if last.name_off > first_sample || last.value_off > first_sample {
            return None;
        }
        self.buf.get(self.rec.start as usize..first_sample as usize)
    }

    pub fn label_count(&self) -> usize {
        match self.rec.flags & LAZY {
            0 => self.labels.len(),
            _ => self.labels().count(),
        }
    }

    /// Bytes of every label name and value, from the offset table alone (v2: the resolved
    /// symbols' lengths), without touching the strings.
    pub(crate) fn label_bytes(&self) -> usize {
        if self.rec.flags & LAZY != 0 {
            return self.labels().map(|(n, v)| n.len() + v.len()).sum();
        }
        self.labels
            .iter()
            .map(|l| l.name_len as usize + l.value_len as usize)
            .sum()
    }
    /// Value of `__name__`, if present.
    pub fn metric_name(&self) -> Option<&'a [u8]> {
        self.labels()
            .find(|(n, _)| *n == b"__name__")
            .map(|(_, v)| v)
    }
    pub fn samples(&self) -> SampleIter<'a> {
        // Start at the first sample: the labels before it need no second walk.
        let range = self.rec.first_sample as usize..self.rec.end as usize;
        SampleIter {
            cursor: Cursor::new(self.buf, range),
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
        self.raw_fields(field, self.rec.histograms)
    }
    /// The raw bodies of the series' exemplars (v1 field 3, v2 field 4), in order.
    pub fn exemplars_raw(&self) -> RawFields<'a> {
        let field = match self.version {
            Version::V1 => 3,
            Version::V2 => 4,
        };
        self.raw_fields(field, self.rec.exemplars)
    }

    /// The fields numbered `field` of the body, of which the parser counted `count`: none
    /// means no walk over the body (most series have no histograms or exemplars, and their
    /// readers ask for every series).
    fn raw_fields(&self, field: u32, count: u32) -> RawFields<'a> {
        let body = self.rec.start as usize..self.rec.end as usize;
        let range = if count == 0 { body.end..body.end } else { body };
        RawFields {
            cursor: Cursor::new(self.buf, range),
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

    /// Label semantics: at least one label, `__name__` present with a value, names non-empty
    /// and unique, names and values valid UTF-8; and native histograms whose counts agree
    /// with their buckets. `index` is only used in the error message.
    ///
    /// Labels may arrive unsorted (1.0 receivers accept that, docs/protocol.md §1), so uniqueness
    /// does not rely on order; sorted input (what Prometheus sends) takes a linear fast path.
    pub fn validate(&self, index: usize) -> Result<(), WireError> {
        // The pass settled it already (`v1::canonical_run`, `v2::resolve`), or
        // `Parsed::validate` did.
        if self.rec.flags & CHECKED != 0 {
            return Ok(());
        }
        self.validate_framing::<false>(index).map(|_| ())
    }

    /// `validate`, answering besides (as `SeriesRec::flags` bits) whether the label names
    /// are sorted and unique (`SORTED`) and whether the labels are canonical where they lie
    /// (`CANONICAL`, what `canonical_labels` answers `Some` for): the same walk checks their
    /// framing. Without `FRAMING` (nobody will ask), that check is left out and `CANONICAL`
    /// never set.
    #[inline(always)]
    pub(super) fn validate_framing<const FRAMING: bool>(
        &self,
        index: usize,
    ) -> Result<u8, WireError> {
        if self.rec.flags & LAZY != 0 {
            let recs = match self.lazy_refs() {
                Some(refs) => self.lazy_ref_recs(index, refs)?,
                None => self.lazy_recs(),
            };
            let full = SeriesView {
                labels: &recs,
                rec: SeriesRec {
                    flags: self.rec.flags & !LAZY,
                    ..self.rec
                },
                ..*self
            };
            return full.validate_framing::<FRAMING>(index);
        }
        let Some(first) = self.labels.first() else {
            return Err(WireError::NoLabels { series: index });
        };
        // Where the next label's field must start for the labels to be canonical: right
        // after the previous one (see `canonical_labels` for the framing).
        let mut at = (first.name_off as usize).wrapping_sub(4);
        // The first label's keys and lengths as bytes: where its field starts is a guess
        // (4 bytes before its name) that nothing before it confirms.
        let nl = first.name_len as usize;
        let len = nl + first.value_len as usize + 4;
        let mut framed = FRAMING
            && self.version == Version::V1
            && len < 0x80
            && self.buf.get(at..).and_then(|b| b.first_chunk::<4>())
                == Some(&[0x0a, len as u8, 0x0a, nl as u8]);
        let mut names = NameOrder::new();
        // The byte span covering every label string, and how many bytes the strings hold.
        let (mut lo, mut hi, mut string_bytes) = (usize::MAX, 0usize, 0usize);
        for l in self.labels {
            let name = proto::slice(self.buf, l.name_off, l.name_len);
            if name.is_empty() {
                return Err(WireError::EmptyLabelName { series: index });
            }
            names.see(name, l.value_len as usize);
            let (n, v) = (l.name_off as usize, l.value_off as usize);
            // Offsets alone settle the framing: a name 4 bytes after where the label's field
            // must start leaves room for nothing but one-byte keys (the parser took them as
            // label field 1 and name field 1, so 0a) and one-byte lengths; a value 2 bytes
            // after the name, for its key (field 2: 12) and length. The next label starting
            // right after this value means nothing else is in this one; the last label's
            // length byte is read after the loop.
            if FRAMING {
                framed &= n == at + 4 && v == n + l.name_len as usize + 2;
                at = v + l.value_len as usize;
            }
            if self.version == Version::V1 {
                lo = lo.min(n).min(v);
                hi = hi
                    .max(n + l.name_len as usize)
                    .max(v + l.value_len as usize);
                string_bytes += (l.name_len + l.value_len) as usize;
            }
        }
        // UTF-8: in v1 the label strings sit together inside the series body, separated only
        // by framing bytes below 0x80, so one ASCII scan of that span usually settles every
        // string at once; in v2 the parser checked the symbols table once. Otherwise (a
        // symbol that is not UTF-8, non-ASCII text) check string by string.
        let checked = match self.version {
            Version::V1 => {
                hi > lo
                    && hi - lo <= 2 * string_bytes + 64
                    && self.buf.get(lo..hi).is_some_and(is_ascii)
            }
            Version::V2 => self.symbols_utf8,
        };
        if !checked {
            for (name, value) in self.labels() {
                if !is_utf8(name) {
                    return Err(WireError::InvalidUtf8 {
                        series: index,
                        part: "name",
                    });
                }
                if !is_utf8(value) {
                    return Err(WireError::InvalidUtf8 {
                        series: index,
                        part: "value",
                    });
                }
            }
        }
        if !names.sorted {
            self.check_duplicates(index)?;
        }
        if !names.has_name {
            return Err(WireError::NoMetricName { series: index });
        }
        if self.rec.histograms > 0 {
            self.validate_histograms(index)?;
        }
        // Names strictly increasing (`sorted`) and non-empty (checked above); the last
        // label's field as long as its name and value with their keys and lengths (which
        // also keeps every length a single byte).
        let last = self.labels.last().unwrap_or(first);
        let last_len = last.name_len as usize + last.value_len as usize + 4;
        let canonical = framed
            && names.sorted
            && last_len < 0x80
            && (last.name_off as usize)
                .checked_sub(3)
                .and_then(|at| self.buf.get(at))
                == Some(&(last_len as u8));
        Ok(if canonical { CANONICAL } else { 0 } | if names.sorted { SORTED } else { 0 })
    }

    /// The label names are sorted and unique, as `Parsed::validate` found: `None` when it
    /// has not seen the series.
    #[inline]
    pub fn sorted(&self) -> Option<bool> {
        (self.rec.flags & CHECKED != 0).then_some(self.rec.flags & SORTED != 0)
    }

    /// The checks of [`SeriesView::validate`] that do not depend on the labels (native
    /// histograms), for a series whose labels are known valid (`relabel::vouched`).
    pub fn validate_samples(&self, index: usize) -> Result<(), WireError> {
        if self.rec.histograms > 0 {
            self.validate_histograms(index)?;
        }
        Ok(())
    }

    /// Native histogram semantics (`histogram::check`): one walk of the series body, only for
    /// the series that carry histograms.
    fn validate_histograms(&self, index: usize) -> Result<(), WireError> {
        let field = match self.version {
            Version::V1 => 4,
            Version::V2 => 3,
        };
        let mut c = self.body();
        while !c.at_end() {
            let (f, wire_type) = c.tag()?;
            if f == field && wire_type == proto::LEN {
                let range = c.len_delim()?;
                super::histogram::check(self.buf, range).map_err(|reason| {
                    WireError::InvalidHistogram {
                        series: index,
                        reason,
                    }
                })?;
            } else {
                c.skip(wire_type)?;
            }
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
#[derive(Clone)]
pub struct LabelsIter<'a> {
    buf: &'a [u8],
    labels: std::slice::Iter<'a, LabelRec>,
    /// What of a `LAZY` series' run (1.0) or refs (2.0) is not read yet.
    raw: &'a [u8],
    /// 2.0: the symbols table `raw` refers to.
    symbols: Option<&'a [(u32, u32)]>,
}

impl<'a> Iterator for LabelsIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(l) = self.labels.next() {
            return Some((
                proto::slice(self.buf, l.name_off, l.name_len),
                proto::slice(self.buf, l.value_off, l.value_len),
            ));
        }
        if self.raw.is_empty() {
            return None;
        }
        if let Some(symbols) = self.symbols {
            // Refs the guard knew, or checked: anything else ends the labels.
            let Some((pair, rest)) = ref_pair(self.buf, self.raw, symbols) else {
                self.raw = &[];
                return None;
            };
            self.raw = rest;
            return Some(pair);
        }
        // `0a <len> 0a <n> name 12 <v> value`, as the pass found it (one-byte lengths), or a
        // guessed run the guard knew: the canonical encoding, whose lengths may take two
        // bytes. Anything else (only a run whose guess was not settled) ends the labels.
        let Some(((name, value), rest)) = run_label_fields(self.raw) else {
            self.raw = &[];
            return None;
        };
        self.raw = rest;
        Some((name, value))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        // Each label of a run takes at least 6 bytes.
        let n = self.labels.len();
        (n, Some(n + self.raw.len() / 6))
    }
}

/// A label's name and value.
type Pair<'a> = (&'a [u8], &'a [u8]);

/// The label the packed 2.0 refs `raw` start with, resolved through `symbols` into `buf`,
/// and the rest. Out of line, like `long_label_fields`, for the iterator's size where it is
/// inlined.
#[inline(never)]
fn ref_pair<'a>(
    buf: &'a [u8],
    raw: &'a [u8],
    symbols: &[(u32, u32)],
) -> Option<(Pair<'a>, &'a [u8])> {
    let mut c = Cursor::new(raw, 0..raw.len());
    let (name, value) = (c.varint().ok()? as u32, c.varint().ok()? as u32);
    let &(name_off, name_len) = symbols.get(name as usize)?;
    let &(value_off, value_len) = symbols.get(value as usize)?;
    Some((
        (
            proto::slice(buf, name_off, name_len),
            proto::slice(buf, value_off, value_len),
        ),
        &raw[c.pos()..],
    ))
}

/// The name and value of the canonically framed label a run starts with, and the rest.
#[inline(always)]
fn run_label_fields(raw: &[u8]) -> Option<(Pair<'_>, &[u8])> {
    if let Some(&[0x0a, len, 0x0a, n]) = raw.first_chunk::<4>() {
        if len < 0x80 && n < 0x80 {
            let (len, n) = (usize::from(len), usize::from(n));
            let field = raw.get(2..2 + len)?;
            let name = field.get(2..2 + n)?;
            let value = field.get(4 + n..)?;
            return Some(((name, value), &raw[2 + len..]));
        }
    }
    long_label_fields(raw)
}

/// `run_label_fields` of a label with a two-byte length: out of line, so that the iterator
/// every stage reads labels with stays small where it is inlined.
#[inline(never)]
fn long_label_fields(raw: &[u8]) -> Option<(Pair<'_>, &[u8])> {
    let mut c = Cursor::new(raw, 0..raw.len());
    let (1, proto::LEN) = c.tag().ok()? else {
        return None;
    };
    let field = c.len_delim().ok()?;
    let rest = &raw[field.end..];
    let mut f = Cursor::new(raw, field);
    let (1, proto::LEN) = f.tag().ok()? else {
        return None;
    };
    let name = f.len_delim().ok()?;
    let (2, proto::LEN) = f.tag().ok()? else {
        return None;
    };
    let value = f.len_delim().ok()?;
    f.at_end().then_some(((&raw[name], &raw[value]), rest))
}

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
    // Fast path for the layout every encoder writes: value (key 0x09) then timestamp (key
    // 0x10). Whatever follows still goes through the general loop, so semantics are equal.
    if c.peek() == Some(0x09) {
        c.bump();
        s.value = f64::from_bits(c.fixed64()?);
        if c.peek() == Some(0x10) {
            c.bump();
            s.timestamp = c.varint()? as i64;
        }
    }
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
