//! Writer: builds an outgoing request (uncompressed protobuf) by copying the raw bytes of
//! unchanged series and encoding only relabeled or new ones, translating v1↔v2 on the way.
//!
//! Same version in and out, an unchanged series is its TimeSeries body copied behind a new
//! tag and length: no decoding, no re-encoding (docs/protocol.md §6, "what is unchanged
//! leaves as it came"). For v2 output the source's symbols table is copied first, in order, so raw
//! series keep valid refs; strings of relabeled or new series are appended, deduplicated.
//!
//! Translation (`translate.rs`) follows docs/protocol.md §1/§2:
//! - v2 → v1: labels resolved; samples re-encoded without `start_timestamp`; histograms copied
//!   without field 17; exemplars with resolved labels; per-series metadata becomes
//!   request-level `MetricMetadata`, one per metric name (the first one seen wins).
//! - v1 → v2: symbols built from `""`; samples and histograms copied raw (v1 Sample and
//!   Histogram bodies are field-compatible with v2's); exemplars re-encoded with refs; the
//!   source's request-level metadata is attached to every series whose `__name__` is the
//!   family name, or the family name plus `_total`, `_bucket`, `_sum`, `_count`, `_created`
//!   or `_info`. A v1 request carrying only metadata (what Prometheus sends every minute)
//!   has no series to attach it to, so it translates to an empty v2 request: v2 has no
//!   request-level metadata.
//!
//! Output size (`budget.rs`): a v2 symbol referenced many times is written out in full each
//! time in v1, so a small body can ask for gigabytes. A writer given a limit checks, before
//! writing a series, that what it already holds plus the exactly known amplifying part of the
//! series (resolved labels, exemplar labels, metadata strings) fits, and after writing it, that
//! the rest did; past the limit it writes nothing more and `finish` answers
//! [`OutputTooLarge`]. What is allocated past the limit is at most one series' non-amplified
//! bytes (samples, histograms, refs), which are never longer than their input.

#[cfg(test)]
mod amplification_tests;
mod budget;
mod symbols;
#[cfg(test)]
mod tests;
mod translate;

use std::collections::HashMap;
use std::ops::Range;

use self::symbols::Symbols;
use super::proto::{self, Cursor};
use super::reader::Parsed;
use super::{OutputTooLarge, Version};

/// A series built in cardguard (a rule result, an overflow aggregate): labels and float samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnedSeries {
    pub labels: Vec<(String, String)>,
    /// `(value, timestamp_ms)`
    pub samples: Vec<(f64, i64)>,
    /// Encoded native histograms (the `Histogram` message, the same in v1 and v2), written
    /// after the samples.
    pub histograms: Vec<Vec<u8>>,
}

/// What a translation could not carry into the output version, by kind: counted (on
/// `cardguard_translation_dropped_total`), never silently lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranslationDrops {
    /// v2 → v1: float samples and native histograms whose `start_timestamp` was set.
    pub start_timestamps: u64,
    /// v2 → v1: series carrying a `created_timestamp` (TimeSeries field 6, what senders
    /// before 2.0-rc.4 send; v2 copies keep it as it came).
    pub created_timestamps: u64,
    /// v1 → v2: request-level metadata no series of the request could carry (v2 has metadata
    /// only per series). v2 → v1: a series' metadata differing from the one already kept for
    /// its metric name (v1 keeps one per name).
    pub metadata: u64,
}

impl TranslationDrops {
    /// `(what, count)` for each kind, as the metric's `what` label spells it.
    pub fn by_kind(&self) -> [(&'static str, u64); 3] {
        [
            ("start_timestamp", self.start_timestamps),
            ("created_timestamp", self.created_timestamps),
            ("metadata", self.metadata),
        ]
    }

    pub fn add(&mut self, other: &TranslationDrops) {
        self.start_timestamps += other.start_timestamps;
        self.created_timestamps += other.created_timestamps;
        self.metadata += other.metadata;
    }
}

/// v1 metadata of one family of the source request, for attaching to v2 series.
#[derive(Debug, Clone)]
struct Family {
    metric_type: i32,
    help: Range<usize>,
    unit: Range<usize>,
    /// `(help_ref, unit_ref)` once interned into the output symbols.
    refs: Option<(u32, u32)>,
}

/// Reusable output buffer for one outgoing request at a time.
#[derive(Debug)]
pub struct Writer {
    out: Version,
    /// Encoded series (and copied v1 metadata) of the request being built.
    body: Vec<u8>,
    /// v1 output from v2 input: `MetricMetadata` entries, appended by `finish`.
    metadata: Vec<u8>,
    /// v1 output from v2 input: metric names whose metadata is already in `metadata`, with
    /// the metadata kept.
    metadata_seen: HashMap<Vec<u8>, super::V2Metadata>,
    /// What translating the current request could not carry (v1 → v2 metadata is added up
    /// by `translation_dropped`).
    dropped: TranslationDrops,
    /// v2 output: the symbols table.
    symbols: Symbols,
    /// v2 output: scratch for one series' labels_refs.
    refs: Vec<u32>,
    /// v2 output from v1 input: the source's metadata by family name.
    families: HashMap<Vec<u8>, Family>,
    /// v2 output: symbols followed by series, assembled by `finish`.
    done: Vec<u8>,
    series_written: usize,
    /// Metadata items written, counted as `ItemCounts::metadata` counts them on input.
    metadata_written: usize,
    /// `filtered_series`: which float samples of the series being written to keep.
    sample_mask: Vec<bool>,
    masking: bool,
    mask_pos: usize,
    /// Largest request `finish` may return (`usize::MAX`: no limit).
    limit: usize,
    /// Set once the request went over `limit`: at least how large it would have been.
    over: Option<u64>,
}

impl Writer {
    /// A writer ready for `push_series` (or `begin` with a source).
    pub fn new(out: Version) -> Self {
        let mut w = Writer {
            out,
            body: Vec::new(),
            metadata: Vec::new(),
            metadata_seen: HashMap::new(),
            dropped: TranslationDrops::default(),
            symbols: Symbols::default(),
            refs: Vec::new(),
            families: HashMap::new(),
            done: Vec::new(),
            series_written: 0,
            metadata_written: 0,
            sample_mask: Vec::new(),
            masking: false,
            mask_pos: 0,
            limit: usize::MAX,
            over: None,
        };
        w.reset();
        w
    }

    /// The version this writer produces.
    pub fn version(&self) -> Version {
        self.out
    }

    /// Number of series written since `begin`/`reset`.
    pub fn series_written(&self) -> usize {
        self.series_written
    }

    /// Metadata items written since `begin`/`reset`, counted like [`super::ItemCounts::metadata`]
    /// counts the output version: v1 `MetricMetadata` entries, or v2 series carrying
    /// non-empty metadata.
    pub fn metadata_written(&self) -> usize {
        self.metadata_written
    }

    /// What translating the request since `begin` could not carry into the output version.
    pub fn translation_dropped(&self) -> TranslationDrops {
        let mut d = self.dropped;
        // Families no written series picked up have no place in v2.
        d.metadata += self.families.values().filter(|f| f.refs.is_none()).count() as u64;
        d
    }

    /// v2 → v2 raw copies carry their metadata along.
    fn count_copied_metadata(&mut self, req: &Parsed, s: &super::SeriesView<'_>) {
        if req.version() == Version::V2 && self.out == Version::V2 {
            self.metadata_written += usize::from(s.v2_metadata().is_some_and(|m| !m.is_empty()));
        }
    }

    /// Start a new request with no source (only `push_series` will follow), clearing the
    /// previous one but keeping capacity.
    pub fn reset(&mut self) {
        self.body.clear();
        self.metadata.clear();
        self.metadata_seen.clear();
        self.dropped = TranslationDrops::default();
        self.symbols.clear();
        self.refs.clear();
        self.families.clear();
        self.done.clear();
        self.series_written = 0;
        self.metadata_written = 0;
        self.over = None;
        if self.out == Version::V2 {
            self.symbols.push(b"");
        }
    }

    /// Start a new request from source `req` (parsed from `buf`), clearing the previous one but
    /// keeping capacity. Copies/relabels below refer to series of this source.
    pub fn begin(&mut self, req: &Parsed, buf: &[u8]) {
        self.reset();
        match (req.version(), self.out) {
            (Version::V2, Version::V2) if req.symbol_count() > 0 => {
                // Replace the "" pushed by reset() with the source table, in order.
                self.symbols.clear();
                match req.symbols_raw {
                    Some((off, len)) => {
                        self.symbols
                            .extend_raw(proto::slice(buf, off, len), off, &req.symbols)
                    }
                    None => {
                        for &(off, len) in &req.symbols {
                            self.symbols.push(proto::slice(buf, off, len));
                        }
                    }
                }
            }
            (Version::V1, Version::V2) => {
                for i in 0..req.metadata_len() {
                    let Some(&(off, len)) = req.v1_metadata.get(i) else {
                        continue;
                    };
                    let m = super::reader::v1::decode_metadata(
                        buf,
                        off as usize..off as usize + len as usize,
                    );
                    let name = buf.get(m.family.clone()).unwrap_or_default();
                    // First entry wins, as for the reverse translation.
                    self.families.entry(name.to_vec()).or_insert(Family {
                        metric_type: m.metric_type,
                        help: m.help,
                        unit: m.unit,
                        refs: None,
                    });
                }
            }
            _ => {}
        }
    }

    /// Copy series `i` unchanged: its raw bytes when versions match, translated otherwise.
    pub fn copy_series(&mut self, req: &Parsed, buf: &[u8], i: usize) {
        let Some(s) = req.get(buf, i) else { return };
        let lower = self.series_lower_bound(req, &s, None);
        if !self.room_for(lower) {
            return;
        }
        match (req.version(), self.out) {
            (Version::V1, Version::V1) => proto::put_bytes(&mut self.body, 1, s.raw()),
            (Version::V2, Version::V2) => proto::put_bytes(&mut self.body, 5, s.raw()),
            (Version::V1, Version::V2) => self.v1_to_v2(&s, s.labels()),
            (Version::V2, Version::V1) => self.v2_to_v1(req, &s, s.labels()),
        }
        self.count_copied_metadata(req, &s);
        self.series_written += 1;
        self.check_written();
    }

    /// Series `range` unchanged, in order: exactly what `copy_series` of each writes. A run
    /// of v1 series that lie back to back in the source, each behind the one-byte tag and
    /// shortest length a sender's encoder writes, is copied as one span of the source: a
    /// request the guard dropped a fifth of is mostly such runs, and a copy each was ~200
    /// instructions a series.
    pub fn copy_series_run(&mut self, req: &Parsed, buf: &[u8], range: Range<usize>) {
        match self.contiguous_run(req, buf, range.clone()) {
            Some((first, rest)) => {
                proto::put_bytes(&mut self.body, 1, first);
                self.body.extend_from_slice(rest);
                self.series_written += range.len();
            }
            None => {
                for i in range {
                    self.copy_series(req, buf, i);
                }
            }
        }
    }

    /// For `copy_series_run`: the first series' body and the source bytes of the rest (their
    /// tags and lengths included), when the run is v1 to v1, at least two series, back to
    /// back with canonical headers, and fits under the limit whole (so that going over
    /// happens, and is sized, as series by series). `None`: copy series by series.
    fn contiguous_run<'b>(
        &self,
        req: &'b Parsed,
        buf: &'b [u8],
        range: Range<usize>,
    ) -> Option<(&'b [u8], &'b [u8])> {
        if range.len() < 2
            || req.version() != Version::V1
            || self.out != Version::V1
            || self.over.is_some()
        {
            return None;
        }
        let at = |r: &[u8]| (r.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        let first = req.get(buf, range.start)?.raw();
        let from = at(first).checked_add(first.len())?;
        let mut end = from;
        for i in range.start + 1..range.end {
            let raw = req.get(buf, i)?.raw();
            // The gap is this series' header, and no longer than the shortest one: its tag
            // is the one byte of field 1, its length the shortest varint.
            let header = 1 + prost::encoding::encoded_len_varint(raw.len() as u64);
            if at(raw) != end.checked_add(header)? || buf.get(end) != Some(&0x0a) {
                return None;
            }
            end = at(raw) + raw.len();
        }
        let rest = buf.get(from..end)?;
        let total = 1 + prost::encoding::encoded_len_varint(first.len() as u64) + first.len();
        (self.size().saturating_add(total + rest.len()) <= self.limit).then_some((first, rest))
    }

    /// Series `i` with new labels; samples, histograms and exemplars copied from the source.
    pub fn relabeled_series(
        &mut self,
        req: &Parsed,
        buf: &[u8],
        i: usize,
        labels: &[(&[u8], &[u8])],
    ) {
        let Some(s) = req.get(buf, i) else { return };
        let given = labels.iter().copied();
        let lower = self.series_lower_bound(req, &s, Some(labels));
        if !self.room_for(lower) {
            return;
        }
        match (req.version(), self.out) {
            (Version::V1, Version::V1) => {
                let pos = proto::begin_nested(&mut self.body, 1);
                for &(name, value) in labels {
                    put_label(&mut self.body, 1, name, value);
                }
                copy_fields_except(&mut self.body, s.body(), 1);
                proto::end_nested(&mut self.body, pos);
            }
            (Version::V2, Version::V2) => {
                self.intern_labels(given);
                let pos = proto::begin_nested(&mut self.body, 5);
                put_packed_u32(&mut self.body, 1, &self.refs);
                // Samples, histograms, exemplars and metadata keep their refs into the copied
                // source table.
                copy_fields_except(&mut self.body, s.body(), 1);
                proto::end_nested(&mut self.body, pos);
            }
            (Version::V1, Version::V2) => self.v1_to_v2(&s, given),
            (Version::V2, Version::V1) => self.v2_to_v1(req, &s, given),
        }
        self.count_copied_metadata(req, &s);
        self.series_written += 1;
        self.check_written();
    }

    /// Series `i` keeping only the float samples whose entry in `keep` is `true` (in wire
    /// order; missing entries keep), with `labels` when given. Everything else (histograms,
    /// exemplars, metadata) is copied as for `copy_series`/`relabeled_series`.
    pub fn filtered_series(
        &mut self,
        req: &Parsed,
        buf: &[u8],
        i: usize,
        labels: Option<&[(&[u8], &[u8])]>,
        keep: &[bool],
    ) {
        let Some(s) = req.get(buf, i) else { return };
        let lower = self.series_lower_bound(req, &s, labels);
        if !self.room_for(lower) {
            return;
        }
        self.sample_mask.clear();
        self.sample_mask.extend_from_slice(keep);
        self.masking = true;
        self.mask_pos = 0;
        match (req.version(), self.out) {
            (Version::V1, Version::V1) | (Version::V2, Version::V2) => {
                let v2 = self.out == Version::V2;
                let pos = proto::begin_nested(&mut self.body, if v2 { 5 } else { 1 });
                if let Some(labels) = labels {
                    if v2 {
                        self.intern_labels(labels.iter().copied());
                        put_packed_u32(&mut self.body, 1, &self.refs);
                    } else {
                        for &(name, value) in labels {
                            put_label(&mut self.body, 1, name, value);
                        }
                    }
                }
                let mut c = s.body();
                let src = c.buf();
                loop {
                    let start = c.pos();
                    let Ok((field, wire_type)) = c.tag() else {
                        break;
                    };
                    if c.skip(wire_type).is_err() {
                        break;
                    }
                    let keep = match field {
                        1 => labels.is_none(),
                        2 => self.take_sample(),
                        _ => true,
                    };
                    if keep {
                        self.body
                            .extend_from_slice(src.get(start..c.pos()).unwrap_or_default());
                    }
                }
                proto::end_nested(&mut self.body, pos);
            }
            (Version::V1, Version::V2) => match labels {
                Some(l) => self.v1_to_v2(&s, l.iter().copied()),
                None => self.v1_to_v2(&s, s.labels()),
            },
            (Version::V2, Version::V1) => match labels {
                Some(l) => self.v2_to_v1(req, &s, l.iter().copied()),
                None => self.v2_to_v1(req, &s, s.labels()),
            },
        }
        self.masking = false;
        self.count_copied_metadata(req, &s);
        self.series_written += 1;
        self.check_written();
    }

    /// Whether the next float sample of the series being written is kept.
    #[inline]
    fn take_sample(&mut self) -> bool {
        if !self.masking {
            return true;
        }
        let k = self.mask_pos;
        self.mask_pos += 1;
        self.sample_mask.get(k).copied().unwrap_or(true)
    }

    /// A series built in cardguard.
    pub fn push_series(&mut self, s: &OwnedSeries) {
        self.push_labeled_all(
            s.labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            s.samples.iter().copied(),
            &s.histograms,
        );
    }

    /// A series built in cardguard, from its labels (sorted) and `(value, timestamp_ms)`
    /// samples: what a route relabeled or downsampled is written without a copy first.
    pub fn push_labeled<'a>(
        &mut self,
        labels: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        samples: impl Iterator<Item = (f64, i64)>,
    ) {
        self.push_labeled_all(labels, samples, &[]);
    }

    /// [`Writer::push_labeled`] with encoded native histograms too (v1 field 4, v2 field 3).
    pub fn push_labeled_all<'a>(
        &mut self,
        labels: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        samples: impl Iterator<Item = (f64, i64)>,
        histograms: &[Vec<u8>],
    ) {
        // Labels and samples are already in memory: nothing here amplifies, so the size is
        // checked once written.
        if !self.room_for(0) {
            return;
        }
        match self.out {
            Version::V1 => {
                let pos = proto::begin_nested(&mut self.body, 1);
                for (name, value) in labels {
                    put_label(&mut self.body, 1, name, value);
                }
                for (value, timestamp) in samples {
                    put_sample(&mut self.body, value, timestamp, 0);
                }
                for h in histograms {
                    proto::put_bytes(&mut self.body, 4, h);
                }
                proto::end_nested(&mut self.body, pos);
            }
            Version::V2 => {
                self.intern_labels(labels);
                let pos = proto::begin_nested(&mut self.body, 5);
                put_packed_u32(&mut self.body, 1, &self.refs);
                for (value, timestamp) in samples {
                    put_sample(&mut self.body, value, timestamp, 0);
                }
                for h in histograms {
                    proto::put_bytes(&mut self.body, 3, h);
                }
                proto::end_nested(&mut self.body, pos);
            }
        }
        self.series_written += 1;
        self.check_written();
    }

    /// Copy the request-level metadata of the source (v1 field 3) when the output can carry it.
    ///
    /// v1 → v1 copies the raw entries. v1 → v2 has nowhere to put them at request level: they
    /// were attached to matching series by `begin`/`copy_series` instead. A v2 source has no
    /// request-level metadata (v2 → v1 metadata comes from the copied series).
    pub fn copy_metadata(&mut self, req: &Parsed, buf: &[u8]) {
        if req.version() == Version::V1 && self.out == Version::V1 {
            for i in 0..req.metadata_len() {
                if let Some(raw) = req.metadata_raw(buf, i) {
                    if !self.room_for(raw.len()) {
                        return;
                    }
                    proto::put_bytes(&mut self.body, 3, raw);
                    self.metadata_written += 1;
                    self.check_written();
                }
            }
        }
    }

    /// The encoded request so far. A v2 request with no series is empty (no symbols table).
    ///
    /// # Errors
    ///
    /// When the request went over the limit set with [`Writer::set_limit`].
    pub fn finish(&mut self) -> Result<&[u8], OutputTooLarge> {
        if let Some(size) = self.over {
            return Err(OutputTooLarge {
                size,
                limit: self.limit,
            });
        }
        Ok(match self.out {
            Version::V1 => {
                // Field order does not matter in protobuf; metadata goes after the series.
                self.body.extend_from_slice(&self.metadata);
                self.metadata.clear();
                &self.body
            }
            Version::V2 => {
                self.done.clear();
                if self.series_written > 0 {
                    // Symbols first, as Prometheus sends them: any order is valid protobuf,
                    // but a receiver that resolves refs while streaming needs the table up
                    // front. Costs one copy of the series bytes.
                    self.done.extend_from_slice(self.symbols.encoded());
                    self.done.extend_from_slice(&self.body);
                }
                &self.done
            }
        })
    }

    /// Fill `self.refs` with the interned `(name, value)` refs of `labels`.
    fn intern_labels<'l>(&mut self, labels: impl Iterator<Item = (&'l [u8], &'l [u8])>) {
        self.refs.clear();
        for (name, value) in labels {
            let n = self.symbols.intern(name);
            let v = self.symbols.intern(value);
            self.refs.push(n);
            self.refs.push(v);
        }
    }
}

/// Copy every field of the message under `c` except `skip_field`, as raw bytes (tag
/// included), merging runs of consecutive kept fields into one copy. Returns how many
/// occurrences of `skip_field` were left out.
pub(crate) fn copy_fields_except(out: &mut Vec<u8>, mut c: Cursor<'_>, skip_field: u32) -> u64 {
    let mut skipped = 0;
    let buf = c.buf();
    let mut run_start = c.pos();
    // End of the last whole field: parsed bodies are well framed, but with any other buffer
    // only whole fields are copied.
    let mut end = c.pos();
    while let Ok((field, wire_type)) = c.tag() {
        if c.skip(wire_type).is_err() {
            break;
        }
        if field == skip_field {
            out.extend_from_slice(buf.get(run_start..end).unwrap_or_default());
            run_start = c.pos();
            skipped += 1;
        }
        end = c.pos();
    }
    out.extend_from_slice(buf.get(run_start..end).unwrap_or_default());
    skipped
}

/// A `Label` message (name 1, value 2) as field `field`; empty strings are left out, as prost
/// does.
#[inline]
pub(crate) fn put_label(out: &mut Vec<u8>, field: u32, name: &[u8], value: &[u8]) {
    let str_len = |s: &[u8]| {
        if s.is_empty() {
            0
        } else {
            1 + prost::encoding::encoded_len_varint(s.len() as u64) + s.len()
        }
    };
    proto::put_tag(out, field, proto::LEN);
    proto::put_varint(out, (str_len(name) + str_len(value)) as u64);
    if !name.is_empty() {
        proto::put_bytes(out, 1, name);
    }
    if !value.is_empty() {
        proto::put_bytes(out, 2, value);
    }
}

/// A `Sample` message as field 2 (the same number in v1 and v2). `start_timestamp` is v2's
/// field 3; pass 0 for v1.
#[inline]
pub(crate) fn put_sample(out: &mut Vec<u8>, value: f64, timestamp: i64, start_timestamp: i64) {
    let pos = proto::begin_nested(out, 2);
    proto::put_double(out, 1, value);
    proto::put_varint_field(out, 2, timestamp as u64);
    proto::put_varint_field(out, 3, start_timestamp as u64);
    proto::end_nested(out, pos);
}

/// A packed repeated `uint32` field; nothing when `values` is empty.
pub(crate) fn put_packed_u32(out: &mut Vec<u8>, field: u32, values: &[u32]) {
    if values.is_empty() {
        return;
    }
    let len: usize = values
        .iter()
        .map(|&v| prost::encoding::encoded_len_varint(u64::from(v)))
        .sum();
    proto::put_tag(out, field, proto::LEN);
    proto::put_varint(out, len as u64);
    for &v in values {
        proto::put_varint(out, u64::from(v));
    }
}
