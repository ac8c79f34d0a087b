//! Low-level protobuf wire helpers for the hand-written reader and writer.
//!
//! Reading goes through [`Cursor`], which only ever looks at `buf[pos..end]` through checked
//! accessors, so no input can make it panic; every failure is a `WireError::Protobuf` with the
//! absolute byte offset in the decompressed body. Writing uses prost's varint encoder plus a
//! length-prefix helper that avoids a scratch buffer per nested message.
//!
//! Wire format: <https://protobuf.dev/programming-guides/encoding/>.

use std::ops::Range;

use super::WireError;

/// Wire type 0: varint (`int32`, `int64`, `uint32`, `uint64`, `sint*`, `bool`, enums).
pub(crate) const VARINT: u8 = 0;
/// Wire type 1: 8 little-endian bytes (`double`, `fixed64`, `sfixed64`).
pub(crate) const FIXED64: u8 = 1;
/// Wire type 2: length-delimited (`string`, `bytes`, messages, packed repeated scalars).
pub(crate) const LEN: u8 = 2;
/// Wire type 5: 4 little-endian bytes (`float`, `fixed32`, `sfixed32`).
pub(crate) const FIXED32: u8 = 5;

/// Largest field number protobuf allows (2^29 − 1).
const MAX_FIELD: u64 = (1 << 29) - 1;

pub(crate) fn err(what: &'static str, offset: usize) -> WireError {
    WireError::Protobuf { what, offset }
}

/// A read position inside `buf[..end]`. `end <= buf.len()` always holds: constructors clamp
/// it and sub-ranges come from [`Cursor::len_delim`], which checks them.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over `buf[range]`; an out-of-bounds range is clamped to the buffer (so a view
    /// handed the wrong buffer reads garbage or stops, but never panics).
    pub(crate) fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        let end = range.end.min(buf.len());
        Cursor {
            buf,
            pos: range.start.min(end),
            end,
        }
    }

    #[inline]
    pub(crate) fn buf(&self) -> &'a [u8] {
        self.buf
    }

    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    /// The next byte, without consuming it.
    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        if self.pos < self.end {
            self.buf.get(self.pos).copied()
        } else {
            None
        }
    }

    /// Consume one byte (after a successful [`Cursor::peek`]).
    #[inline]
    pub(crate) fn bump(&mut self) {
        if self.pos < self.end {
            self.pos += 1;
        }
    }

    /// The rest of the cursor's range.
    #[inline]
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..self.end).unwrap_or(&[])
    }

    /// A base-128 varint of at most 10 bytes; a 10th byte above 1 overflows u64 and is
    /// rejected, as prost does.
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, WireError> {
        let rest = self.rest();
        // Fast paths: tags, lengths and small ints are usually one byte; a 2.0 request's
        // symbol references past the first 128 symbols, two.
        match *rest {
            [b, ..] if b < 0x80 => {
                self.pos += 1;
                return Ok(u64::from(b));
            }
            [b0, b1, ..] if b1 < 0x80 => {
                self.pos += 2;
                return Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7);
            }
            [] => return Err(err("truncated varint", self.pos)),
            _ => {}
        }
        let mut value = 0u64;
        for (i, &b) in rest.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err(err("varint overflows 64 bits", self.pos));
                }
                self.pos += i + 1;
                return Ok(value);
            }
        }
        if rest.len() < 10 {
            Err(err("truncated varint", self.pos))
        } else {
            Err(err("varint longer than 10 bytes", self.pos))
        }
    }

    /// A field key: `(field number, wire type)`. Field 0, numbers past 2^29−1 and wire types
    /// 3/4 (deprecated groups, which proto3 messages never contain) and 6/7 are errors.
    #[inline]
    pub(crate) fn tag(&mut self) -> Result<(u32, u8), WireError> {
        let at = self.pos;
        let key = self.varint()?;
        let field = key >> 3;
        let wire_type = (key & 7) as u8;
        if field == 0 || field > MAX_FIELD {
            return Err(err("invalid field number", at));
        }
        match wire_type {
            VARINT | FIXED64 | LEN | FIXED32 => Ok((field as u32, wire_type)),
            3 | 4 => Err(err("group wire type not supported", at)),
            _ => Err(err("invalid wire type", at)),
        }
    }

    /// A length prefix and the range of the bytes it covers, which is checked to lie inside
    /// the cursor's range. Advances past those bytes.
    #[inline]
    pub(crate) fn len_delim(&mut self) -> Result<Range<usize>, WireError> {
        let at = self.pos;
        let len = self.varint()?;
        let start = self.pos;
        let available = (self.end - start) as u64;
        if len > available {
            return Err(err("length-delimited field runs past its message", at));
        }
        // len <= available <= usize::MAX, so the cast is lossless.
        let end = start + len as usize;
        self.pos = end;
        Ok(start..end)
    }

    #[inline]
    pub(crate) fn fixed64(&mut self) -> Result<u64, WireError> {
        match self.rest().first_chunk::<8>() {
            Some(b) => {
                self.pos += 8;
                Ok(u64::from_le_bytes(*b))
            }
            None => Err(err("truncated fixed64", self.pos)),
        }
    }

    /// `plain_sample`, and nothing after it, with `plain_sample`'s body inlined here: the
    /// guess of a series' run (`v1::guessed_record`) makes this check once a series.
    #[inline]
    pub(crate) fn plain_sample_to_end(&mut self) -> bool {
        self.plain_sample_inlined() && self.at_end()
    }

    /// Consume one `TimeSeries.samples` field (field 2 in 1.0 and 2.0 alike, key 0x12) if it
    /// is in the layout every encoder writes for a sample with a nonzero value and timestamp:
    /// a one-byte length, the value (key 0x09, 8 bytes), the timestamp (key 0x10, a varint of
    /// 1–9 bytes) and nothing else (no 2.0 start timestamp). Such a field is a valid sample (a varint that short cannot overflow), so the
    /// caller may count it without decoding; `false` leaves the cursor where it was, for the
    /// general path. With 10 samples a series, the general path's tags, lengths and byte-wise
    /// varints were a third of the proxy's time.
    #[inline]
    pub(crate) fn plain_sample(&mut self) -> bool {
        self.plain_sample_inlined()
    }

    /// `plain_sample`, always inlined. Made so everywhere, it slowed the 10–12-label
    /// explosion row by about 5 % (more code in the loops that call it).
    #[inline(always)]
    fn plain_sample_inlined(&mut self) -> bool {
        let rest = self.rest();
        let Some(&[0x12, len]) = rest.first_chunk::<2>() else {
            return false;
        };
        let len = usize::from(len);
        if !(11..=19).contains(&len) {
            return false;
        }
        let Some(body) = rest.get(2..2 + len) else {
            return false;
        };
        if body[0] != 0x09 || body[9] != 0x10 {
            return false;
        }
        let (last, more) = match body[10..].split_last() {
            Some(x) => x,
            None => return false,
        };
        if *last >= 0x80 || more.iter().any(|b| *b < 0x80) {
            return false;
        }
        self.pos += 2 + len;
        true
    }

    #[inline]
    fn advance(&mut self, n: usize, what: &'static str) -> Result<(), WireError> {
        if self.end - self.pos < n {
            return Err(err(what, self.pos));
        }
        self.pos += n;
        Ok(())
    }

    /// Skip the value of a field of `wire_type` (an unknown field, or one we copy raw).
    #[inline]
    pub(crate) fn skip(&mut self, wire_type: u8) -> Result<(), WireError> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.advance(8, "truncated fixed64"),
            LEN => self.len_delim().map(drop),
            FIXED32 => self.advance(4, "truncated fixed32"),
            // tag() never returns another wire type.
            _ => Err(err("invalid wire type", self.pos)),
        }
    }

    /// Like [`Cursor::varint`] for a known field: checks the wire type first.
    #[inline]
    pub(crate) fn expect_varint(
        &mut self,
        wire_type: u8,
        what: &'static str,
    ) -> Result<u64, WireError> {
        if wire_type != VARINT {
            return Err(err(what, self.pos));
        }
        self.varint()
    }

    #[inline]
    pub(crate) fn expect_fixed64(
        &mut self,
        wire_type: u8,
        what: &'static str,
    ) -> Result<u64, WireError> {
        if wire_type != FIXED64 {
            return Err(err(what, self.pos));
        }
        self.fixed64()
    }

    #[inline]
    pub(crate) fn expect_len(
        &mut self,
        wire_type: u8,
        what: &'static str,
    ) -> Result<Range<usize>, WireError> {
        if wire_type != LEN {
            return Err(err(what, self.pos));
        }
        self.len_delim()
    }

    /// Reads one element of a repeated varint field, accepting the packed form (wire type 2,
    /// a run of varints) and the unpacked one (wire type 0, one varint): proto3 decoders must
    /// accept both. Calls `each` for every value.
    #[inline]
    pub(crate) fn repeated_varint(
        &mut self,
        wire_type: u8,
        what: &'static str,
        mut each: impl FnMut(u64) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        match wire_type {
            VARINT => each(self.varint()?),
            LEN => {
                let range = self.len_delim()?;
                let mut packed = Cursor::new(self.buf, range);
                while !packed.at_end() {
                    each(packed.varint()?)?;
                }
                Ok(())
            }
            _ => Err(err(what, self.pos)),
        }
    }
}

/// Bytes of `buf[range]`, or empty if the range does not fit (only possible when a caller
/// passes a different buffer than the one parsed).
#[inline]
pub(crate) fn slice(buf: &[u8], start: u32, len: u32) -> &[u8] {
    let start = start as usize;
    buf.get(start..start.saturating_add(len as usize))
        .unwrap_or(&[])
}

#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, value: u64) {
    prost::encoding::encode_varint(value, out);
}

#[inline]
pub(crate) fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

/// A length-delimited field with the given bytes.
#[inline]
pub(crate) fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A `double` field, left out when its bits are zero (+0.0) as prost does; unlike prost we
/// keep −0.0, whose bits are not zero.
#[inline]
pub(crate) fn put_double(out: &mut Vec<u8>, field: u32, value: f64) {
    if value.to_bits() != 0 {
        put_tag(out, field, FIXED64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// A varint field (`int64` values are cast, not zigzagged), left out when 0.
#[inline]
pub(crate) fn put_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_tag(out, field, VARINT);
        put_varint(out, value);
    }
}

/// Start a length-delimited field whose length is not known yet: writes the tag and reserves
/// one length byte. Returns the position to hand to [`end_nested`].
#[inline]
pub(crate) fn begin_nested(out: &mut Vec<u8>, field: u32) -> usize {
    put_tag(out, field, LEN);
    out.push(0);
    out.len() - 1
}

/// Finish a field opened by [`begin_nested`]: writes the body length, moving the body right
/// when the length needs more than the one reserved byte (one `memmove` of a body that is hot
/// in cache, cheaper than encoding into a scratch buffer and copying it back).
#[inline]
pub(crate) fn end_nested(out: &mut Vec<u8>, len_pos: usize) {
    let body_start = len_pos + 1;
    let len = out.len() - body_start;
    if len < 0x80 {
        // One-byte varint; `len_pos` was pushed by begin_nested so it exists.
        if let Some(b) = out.get_mut(len_pos) {
            *b = len as u8;
        }
        return;
    }
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let mut v = len as u64;
    while v >= 0x80 {
        prefix[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    n += 1;
    let extra = n - 1;
    out.resize(out.len() + extra, 0);
    out.copy_within(body_start..body_start + len, body_start + extra);
    out[len_pos..len_pos + n].copy_from_slice(&prefix[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_and_rejects_overflow() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut c = Cursor::new(&out, 0..out.len());
            assert_eq!(c.varint().unwrap(), v);
            assert!(c.at_end());
        }
        // 10th byte 0x02 would need bit 64.
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Cursor::new(&over, 0..10).varint().is_err());
        let long = [0x80u8; 11];
        assert!(Cursor::new(&long, 0..11).varint().is_err());
        assert!(Cursor::new(&[0x80], 0..1).varint().is_err());
        assert!(Cursor::new(&[], 0..0).varint().is_err());
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere by the cursor's range: the same value, length and
        /// refusals as prost's decoder (the fast paths included).
        #[test]
        fn varints_decode_as_prost_does(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            cut in 0usize..12,
        ) {
            let end = cut.min(bytes.len());
            let mut c = Cursor::new(&bytes, 0..end);
            let mut theirs = &bytes[..end];
            let expected = prost::encoding::decode_varint(&mut theirs).ok();
            let got = c.varint().ok();
            proptest::prop_assert_eq!(got, expected);
            if got.is_some() {
                proptest::prop_assert_eq!(c.pos(), end - theirs.len());
            }
        }
    }

    #[test]
    fn tags_reject_groups_and_field_zero() {
        assert!(Cursor::new(&[0x03], 0..1).tag().is_err()); // field 0
        assert!(Cursor::new(&[0x0b], 0..1).tag().is_err()); // group start
        assert!(Cursor::new(&[0x0c], 0..1).tag().is_err()); // group end
        assert!(Cursor::new(&[0x0e], 0..1).tag().is_err()); // wire type 6
        assert_eq!(Cursor::new(&[0x0a], 0..1).tag().unwrap(), (1, LEN));
    }

    #[test]
    fn len_delim_is_bounded_by_the_cursor_range() {
        let buf = [0x05, 1, 2, 3, 4, 5, 6];
        assert_eq!(Cursor::new(&buf, 0..6).len_delim().unwrap(), 1..6);
        assert!(Cursor::new(&buf, 0..5).len_delim().is_err());
        let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(Cursor::new(&huge, 0..5).len_delim().is_err());
    }

    #[test]
    fn nested_lengths_shift_long_bodies() {
        for len in [0usize, 1, 127, 128, 300, 20_000] {
            let mut out = vec![0xaa];
            let pos = begin_nested(&mut out, 5);
            out.extend(std::iter::repeat_n(7u8, len));
            end_nested(&mut out, pos);
            let mut c = Cursor::new(&out, 1..out.len());
            assert_eq!(c.tag().unwrap(), (5, LEN));
            let r = c.len_delim().unwrap();
            assert_eq!(r.len(), len);
            assert!(c.at_end());
            assert!(out[r].iter().all(|&b| b == 7));
        }
    }

    /// The plain-sample recogniser accepts exactly the fields the general decoder reads as
    /// one sample in that layout, and leaves every other field to it.
    #[test]
    fn plain_samples_are_what_the_decoder_reads() {
        use crate::wire::reader::decode_sample;
        use crate::wire::Version;
        let field = |body: &[u8]| {
            let mut f = vec![0x12, body.len() as u8];
            f.extend_from_slice(body);
            f
        };
        let mut plain = Vec::new();
        for ts in [1i64, 127, 128, 1_700_000_000_000, i64::MAX >> 8] {
            let mut body = vec![0x09];
            body.extend_from_slice(&1.5f64.to_le_bytes());
            body.push(0x10);
            let mut v = ts as u64;
            while v >= 0x80 {
                body.push(v as u8 | 0x80);
                v >>= 7;
            }
            body.push(v as u8);
            plain.push((field(&body), ts));
        }
        for (f, ts) in &plain {
            let mut c = Cursor::new(f, 0..f.len());
            assert!(c.plain_sample(), "{ts}");
            assert!(c.at_end());
            let s = decode_sample(&mut Cursor::new(f, 2..f.len()), Version::V1).unwrap();
            assert_eq!((s.value, s.timestamp), (1.5, *ts));
        }
        // Negative timestamps (10-byte varints), value or timestamp left out, another field
        // after them, a truncated field: not plain, and the cursor does not move.
        let (base, _) = &plain[3];
        let mut negative = vec![0x09];
        negative.extend_from_slice(&1.5f64.to_le_bytes());
        negative.push(0x10);
        negative.extend_from_slice(&[0xff; 9]);
        negative.push(0x01);
        let others = [
            field(&negative),
            field(&base[11..]),
            field(&base[2..11]),
            field(&[&base[2..], &[0x18, 0x01][..]].concat()),
            base[..base.len() - 1].to_vec(),
            [&[0x12, 0x80, 0x01][..], &[0u8; 128]].concat(),
        ];
        for f in &others {
            let mut c = Cursor::new(f, 0..f.len());
            assert!(!c.plain_sample(), "{f:?}");
            assert_eq!(c.pos(), 0);
        }
    }
}
