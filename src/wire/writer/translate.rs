//! v1 ↔ v2 translation of one series (see the module doc of `writer` for the mapping).

use super::budget::metadata_field_len;
use super::{put_label, put_packed_u32, put_sample, Writer};
use crate::wire::proto::{self, Cursor};
use crate::wire::reader::{self, Parsed, SeriesView};
use crate::wire::Version;

/// Suffixes a sample name may add to its metric family name (OpenMetrics; Prometheus's own
/// metadata uses the sample name for counters, so the exact name is tried first).
const FAMILY_SUFFIXES: [&[u8]; 6] = [
    b"_total",
    b"_bucket",
    b"_sum",
    b"_count",
    b"_created",
    b"_info",
];

fn metric_name<'l>(mut labels: impl Iterator<Item = (&'l [u8], &'l [u8])>) -> Option<&'l [u8]> {
    labels.find(|(n, _)| *n == b"__name__").map(|(_, v)| v)
}

impl Writer {
    /// A v1 series written as a v2 `TimeSeries` (field 5) with `labels`.
    pub(super) fn v1_to_v2<'l>(
        &mut self,
        s: &SeriesView<'_>,
        labels: impl Iterator<Item = (&'l [u8], &'l [u8])> + Clone,
    ) {
        let buf = s.buf();
        self.intern_labels(labels.clone());
        let metadata = metric_name(labels).and_then(|name| self.family_refs(buf, name));
        let pos = proto::begin_nested(&mut self.body, 5);
        put_packed_u32(&mut self.body, 1, &self.refs);
        let mut c = s.body();
        while let Ok((field, wire_type)) = c.tag() {
            if wire_type != proto::LEN {
                if c.skip(wire_type).is_err() {
                    break;
                }
                continue;
            }
            let Ok(range) = c.len_delim() else { break };
            match field {
                // Re-encoded rather than copied: a field unknown to v1 (say 3) would take on a
                // v2 meaning (start_timestamp) it was never given. Found by the fuzzer.
                2 if !self.take_sample() => {}
                2 => {
                    let mut sc = Cursor::new(buf, range);
                    if let Ok(sample) = reader::decode_sample(&mut sc, Version::V1) {
                        put_sample(&mut self.body, sample.value, sample.timestamp, 0);
                    }
                }
                // v1 Histogram fields 1–16 are v2's; v1 field 4 → v2 field 3, minus anything in
                // field 17, which v2 reads as start_timestamp.
                4 => {
                    let h = proto::begin_nested(&mut self.body, 3);
                    // A v1 field 17 has no meaning to lose.
                    let _ = super::copy_fields_except(&mut self.body, Cursor::new(buf, range), 17);
                    proto::end_nested(&mut self.body, h);
                }
                3 => {
                    let ex = proto::begin_nested(&mut self.body, 4);
                    self.refs.clear();
                    let (symbols, refs) = (&mut self.symbols, &mut self.refs);
                    let (value, timestamp) = reader::v1::exemplar_fields(buf, range, |n, v| {
                        refs.push(symbols.intern(n));
                        refs.push(symbols.intern(v));
                    });
                    put_packed_u32(&mut self.body, 1, &self.refs);
                    proto::put_double(&mut self.body, 2, value);
                    proto::put_varint_field(&mut self.body, 3, timestamp as u64);
                    proto::end_nested(&mut self.body, ex);
                }
                // Labels are already written; unknown v1 fields have no v2 meaning.
                _ => {}
            }
        }
        if let Some((metric_type, help_ref, unit_ref)) = metadata {
            if metric_type != 0 || help_ref != 0 || unit_ref != 0 {
                self.metadata_written += 1;
            }
            let m = proto::begin_nested(&mut self.body, 5);
            // int32 enums are sign-extended varints.
            proto::put_varint_field(&mut self.body, 1, i64::from(metric_type) as u64);
            proto::put_varint_field(&mut self.body, 3, u64::from(help_ref));
            proto::put_varint_field(&mut self.body, 4, u64::from(unit_ref));
            proto::end_nested(&mut self.body, m);
        }
        proto::end_nested(&mut self.body, pos);
    }

    /// The source metadata for metric `name`: `(type, help_ref, unit_ref)`, interning help and
    /// unit on first use.
    fn family_refs(&mut self, buf: &[u8], name: &[u8]) -> Option<(i32, u32, u32)> {
        if self.families.is_empty() {
            return None;
        }
        let key = std::iter::once(name)
            .chain(
                FAMILY_SUFFIXES
                    .iter()
                    .filter_map(|suffix| name.strip_suffix(*suffix)),
            )
            .find(|candidate| self.families.contains_key(*candidate))?;
        let family = self.families.get_mut(key)?;
        let (help_ref, unit_ref) = match family.refs {
            Some(refs) => refs,
            None => {
                let help = self
                    .symbols
                    .intern(buf.get(family.help.clone()).unwrap_or_default());
                let unit = self
                    .symbols
                    .intern(buf.get(family.unit.clone()).unwrap_or_default());
                family.refs = Some((help, unit));
                (help, unit)
            }
        };
        Some((family.metric_type, help_ref, unit_ref))
    }

    /// A v2 series written as a v1 `TimeSeries` (field 1) with `labels`.
    pub(super) fn v2_to_v1<'l>(
        &mut self,
        req: &Parsed,
        s: &SeriesView<'_>,
        labels: impl Iterator<Item = (&'l [u8], &'l [u8])> + Clone,
    ) {
        let buf = s.buf();
        let pos = proto::begin_nested(&mut self.body, 1);
        for (name, value) in labels.clone() {
            put_label(&mut self.body, 1, name, value);
        }
        let mut c = s.body();
        while let Ok((field, wire_type)) = c.tag() {
            if wire_type != proto::LEN {
                // Field 6: the created timestamp of senders before 2.0-rc.4; v1 has no place.
                if field == 6 && wire_type == proto::VARINT {
                    match c.varint() {
                        Ok(ct) => self.dropped.created_timestamps += u64::from(ct != 0),
                        Err(_) => break,
                    }
                } else if c.skip(wire_type).is_err() {
                    break;
                }
                continue;
            }
            let Ok(range) = c.len_delim() else { break };
            match field {
                2 if !self.take_sample() => {}
                2 => {
                    // v1 has no start_timestamp: re-encode without it (counted).
                    let mut sc = Cursor::new(buf, range);
                    if let Ok(sample) = reader::decode_sample(&mut sc, Version::V2) {
                        self.dropped.start_timestamps += u64::from(sample.start_timestamp != 0);
                        put_sample(&mut self.body, sample.value, sample.timestamp, 0);
                    }
                }
                3 => {
                    // v2 field 3 → v1 field 4, minus field 17 (start_timestamp, counted).
                    let h = proto::begin_nested(&mut self.body, 4);
                    self.dropped.start_timestamps +=
                        super::copy_fields_except(&mut self.body, Cursor::new(buf, range), 17)
                            .min(1);
                    proto::end_nested(&mut self.body, h);
                }
                4 => {
                    let ex = proto::begin_nested(&mut self.body, 3);
                    let body = &mut self.body;
                    let (value, timestamp) = reader::v2::exemplar_fields(buf, range, |n, v| {
                        let name = req.symbol(buf, n).unwrap_or_default();
                        let value = req.symbol(buf, v).unwrap_or_default();
                        put_label(body, 1, name, value);
                    });
                    proto::put_double(&mut self.body, 2, value);
                    proto::put_varint_field(&mut self.body, 3, timestamp as u64);
                    proto::end_nested(&mut self.body, ex);
                }
                // Labels are resolved above; metadata goes to the request level below.
                _ => {}
            }
        }
        proto::end_nested(&mut self.body, pos);
        if let (Some(m), Some(name)) = (s.v2_metadata(), metric_name(labels)) {
            if let Some(kept) = self.metadata_seen.get(name).filter(|_| !m.is_empty()) {
                self.dropped.metadata += u64::from(*kept != m);
            } else if !m.is_empty() {
                let help = req.symbol(buf, m.help_ref).unwrap_or_default();
                let unit = req.symbol(buf, m.unit_ref).unwrap_or_default();
                // One entry per metric name, but each can repeat a long help symbol.
                if !self.room_for(metadata_field_len(name, help, unit)) {
                    return;
                }
                self.metadata_seen.insert(name.to_vec(), m);
                self.metadata_written += 1;
                let out = &mut self.metadata;
                let e = proto::begin_nested(out, 3);
                proto::put_varint_field(out, 1, i64::from(m.metric_type) as u64);
                proto::put_bytes(out, 2, name);
                if !help.is_empty() {
                    proto::put_bytes(out, 4, help);
                }
                if !unit.is_empty() {
                    proto::put_bytes(out, 5, unit);
                }
                proto::end_nested(out, e);
            }
        }
    }
}
