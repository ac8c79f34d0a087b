//! The writer's output limit: how large the request being built is, and whether the next
//! series still fits (see the `writer` module doc for why a limit is needed at all).

use super::Writer;
use crate::wire::proto;
use crate::wire::reader::{v2, Parsed, SeriesView};
use crate::wire::Version;

/// Encoded length of a length prefix (a varint) for `len` bytes.
#[inline]
fn varint_len(len: usize) -> usize {
    prost::encoding::encoded_len_varint(len as u64)
}

/// Encoded length of one `Label` message field as `put_label` writes it (empty strings left out).
#[inline]
pub(super) fn label_field_len(name: &[u8], value: &[u8]) -> usize {
    let str_len = |s: &[u8]| {
        if s.is_empty() {
            0
        } else {
            1 + varint_len(s.len()) + s.len()
        }
    };
    let inner = str_len(name) + str_len(value);
    1 + varint_len(inner) + inner
}

/// Encoded length of a v1 `MetricMetadata` field as `v2_to_v1` writes it, without the type
/// (at most a few bytes, not amplified).
pub(super) fn metadata_field_len(name: &[u8], help: &[u8], unit: &[u8]) -> usize {
    let opt = |s: &[u8]| {
        if s.is_empty() {
            0
        } else {
            1 + varint_len(s.len()) + s.len()
        }
    };
    let inner = 1 + varint_len(name.len()) + name.len() + opt(help) + opt(unit);
    1 + varint_len(inner) + inner
}

impl Writer {
    /// Refuse to build a request larger than `max_bytes` (kept across `begin`/`reset`):
    /// `finish` answers [`crate::wire::OutputTooLarge`] instead. `usize::MAX` is no limit.
    pub fn set_limit(&mut self, max_bytes: usize) {
        self.limit = max_bytes;
    }

    /// Bytes `finish` would return now (v2: the symbols table counted even before a series).
    pub(super) fn size(&self) -> usize {
        let symbols = match self.out {
            Version::V1 => 0,
            Version::V2 => self.symbols.encoded().len(),
        };
        self.body.len() + self.metadata.len() + symbols
    }

    /// Whether a series (or metadata entry) of at least `lower` bytes may be written. Once
    /// the request is over the limit nothing more is written: `lower` is only added to the
    /// size reported.
    #[inline]
    pub(super) fn room_for(&mut self, lower: usize) -> bool {
        if let Some(total) = &mut self.over {
            *total = total.saturating_add(lower as u64);
            return false;
        }
        let size = self.size();
        if size.saturating_add(lower) > self.limit {
            self.go_over(size as u64 + lower as u64);
            return false;
        }
        true
    }

    /// After a write: the non-amplified rest of a series (never longer than its input) may
    /// have taken the request over.
    #[inline]
    pub(super) fn check_written(&mut self) {
        if self.over.is_none() {
            let size = self.size();
            if size > self.limit {
                self.go_over(size as u64);
            }
        }
    }

    fn go_over(&mut self, size: u64) {
        self.over = Some(size);
        // Nothing written will be sent: keep the capacity, not the bytes.
        self.body.clear();
        self.metadata.clear();
    }

    /// The part of a series' output that can be larger than its input, known before writing
    /// it: for v2 → v1, every resolved label and exemplar label (a ref of one byte can stand
    /// for a symbol of kilobytes), counted at their string bytes plus the two bytes of framing
    /// a label takes at least. `labels` are the labels to write, `None` for the series' own
    /// (summed from the offset table: the hot path). Everything else a writer produces is at
    /// most as long as what it came from, so 0.
    #[inline]
    pub(super) fn series_lower_bound(
        &self,
        req: &Parsed,
        s: &SeriesView<'_>,
        labels: Option<&[(&[u8], &[u8])]>,
    ) -> usize {
        if !(req.version() == Version::V2 && self.out == Version::V1) {
            return 0;
        }
        let mut n = match labels {
            None => s.label_bytes() + 2 * s.label_count(),
            Some(l) => l.iter().map(|(n, v)| n.len() + v.len() + 2).sum(),
        };
        if s.exemplar_count() > 0 {
            n = n.saturating_add(exemplar_labels_len(req, s));
        }
        n
    }

    /// Heap bytes held by the writer's buffers (capacity), for tests and for releasing
    /// buffers an outsized request grew.
    pub fn heap_bytes(&self) -> usize {
        self.body.capacity()
            + self.metadata.capacity()
            + self.done.capacity()
            + self.symbols.heap_bytes()
            + self.refs.capacity() * std::mem::size_of::<u32>()
    }

    /// Let go of the buffers once they hold more than `limit` bytes, so that one large
    /// request does not pin memory on a worker for good.
    pub fn release_above(&mut self, limit: usize) {
        if self.heap_bytes() > limit {
            let (out, max) = (self.out, self.limit);
            *self = Writer::new(out);
            self.limit = max;
        }
    }
}

/// v1 bytes of the labels of every exemplar of a v2 series (tag and length of each label,
/// plus two bytes of framing per exemplar).
fn exemplar_labels_len(req: &Parsed, s: &SeriesView<'_>) -> usize {
    let buf = s.buf();
    let mut n = 0usize;
    let mut c = s.body();
    while let Ok((field, wire_type)) = c.tag() {
        if field != 4 || wire_type != proto::LEN {
            if c.skip(wire_type).is_err() {
                break;
            }
            continue;
        }
        let Ok(range) = c.len_delim() else { break };
        n = n.saturating_add(2);
        v2::exemplar_fields(buf, range, |name, value| {
            let name = req.symbol(buf, name).unwrap_or_default();
            let value = req.symbol(buf, value).unwrap_or_default();
            n = n.saturating_add(label_field_len(name, value));
        });
    }
    n
}
