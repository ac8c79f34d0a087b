//! One segment file of the durable queue: a versioned header, then records framed as
//! `[length: u32 LE][crc32: u32 LE][payload]`, the checksum over the length and the payload
//! (so a torn length is caught too). The reader stops at the first record that does not check
//! out and says where the good part ends; it never trusts a length to allocate more than
//! `MAX_RECORD` bytes.

use std::io::{self, Read};

/// The first bytes of every segment: the format and its version.
pub const MAGIC: &[u8; 8] = b"CGQUEUE1";
pub const HEADER_LEN: u64 = MAGIC.len() as u64;
/// Per record: length and checksum.
pub const FRAME_LEN: u64 = 8;
/// Largest payload a record may have; a length beyond it is corruption, not an allocation.
pub const MAX_RECORD: usize = 64 << 20;

/// The checksum of a record: over its length field and its payload.
fn checksum(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    h.finalize()
}

/// Append one framed record to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_RECORD);
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why reading stopped before the end of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    #[error("not a queue segment (bad header)")]
    Header,
    #[error("record cut short")]
    Torn,
    #[error("record length {0} over the limit")]
    Length(u32),
    #[error("record checksum mismatch")]
    Checksum,
}

/// Reads records in order from a segment's bytes (a file or a slice).
pub struct Reader<R> {
    src: R,
    /// Bytes of the good part so far: the header and every record returned.
    pub valid: u64,
}

impl<R: Read> Reader<R> {
    /// Check the header. `Ok(None)` for an empty source (a segment created and never written,
    /// as a crash right after creating it leaves).
    pub fn new(mut src: R) -> io::Result<Result<Option<Reader<R>>, Corrupt>> {
        let mut head = [0u8; MAGIC.len()];
        let n = read_full(&mut src, &mut head)?;
        if n == 0 {
            return Ok(Ok(None));
        }
        if n < head.len() || &head != MAGIC {
            return Ok(Err(Corrupt::Header));
        }
        Ok(Ok(Some(Reader {
            src,
            valid: HEADER_LEN,
        })))
    }

    /// Start after the header at `offset` (a record boundary a previous read returned).
    pub fn at(src: R, offset: u64) -> Reader<R> {
        Reader { src, valid: offset }
    }

    /// The next record's payload into `buf`: `Ok(true)` with one, `Ok(false)` at a clean end,
    /// `Err(Corrupt)` where the good part ends (at `self.valid`).
    pub fn next(&mut self, buf: &mut Vec<u8>) -> io::Result<Result<bool, Corrupt>> {
        let mut frame = [0u8; FRAME_LEN as usize];
        match read_full(&mut self.src, &mut frame)? {
            0 => return Ok(Ok(false)),
            n if n < frame.len() => return Ok(Err(Corrupt::Torn)),
            _ => {}
        }
        let len_bytes = [frame[0], frame[1], frame[2], frame[3]];
        let len = u32::from_le_bytes(len_bytes);
        let sum = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if len as usize > MAX_RECORD {
            return Ok(Err(Corrupt::Length(len)));
        }
        buf.clear();
        // `take` + `read_to_end` grows the buffer with what arrives, never by the length alone.
        (&mut self.src).take(u64::from(len)).read_to_end(buf)?;
        if buf.len() < len as usize {
            return Ok(Err(Corrupt::Torn));
        }
        if checksum(len_bytes, buf) != sum {
            return Ok(Err(Corrupt::Checksum));
        }
        self.valid += FRAME_LEN + u64::from(len);
        Ok(Ok(true))
    }
}

/// Read until `buf` is full or the source ends; how many bytes were read.
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What a whole segment holds: its records and, if it ends badly, why and where the good part
/// ends. The fuzz target's body, and what `open` does per file.
#[derive(Debug, Default, PartialEq)]
pub struct Scan {
    pub records: Vec<Vec<u8>>,
    pub valid: u64,
    pub corrupt: Option<Corrupt>,
}

/// Scan segment bytes held in memory.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut out = Scan::default();
    let mut r = match Reader::new(bytes) {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => return out,
        Ok(Err(c)) => {
            out.corrupt = Some(c);
            return out;
        }
        Err(_) => unreachable!("reading a slice does not fail"),
    };
    let mut buf = Vec::new();
    loop {
        match r.next(&mut buf) {
            Ok(Ok(true)) => out.records.push(std::mem::take(&mut buf)),
            Ok(Ok(false)) => break,
            Ok(Err(c)) => {
                out.corrupt = Some(c);
                break;
            }
            Err(_) => unreachable!("reading a slice does not fail"),
        }
    }
    out.valid = r.valid;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segment(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for r in records {
            frame(r, &mut out);
        }
        out
    }

    proptest! {
        #[test]
        fn written_records_read_back(records in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let bytes = segment(&records);
            let s = scan(&bytes);
            prop_assert_eq!(s.corrupt, None);
            prop_assert_eq!(s.valid, bytes.len() as u64);
            prop_assert_eq!(s.records, records);
        }

        /// Cut anywhere: every whole record before the cut reads back, the rest is reported
        /// (never a panic, never a record that was not written).
        #[test]
        fn a_cut_segment_keeps_its_whole_records(records in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..100), 1..10), cut in any::<prop::sample::Index>()) {
            let bytes = segment(&records);
            let at = cut.index(bytes.len());
            let s = scan(&bytes[..at]);
            prop_assert!(records.starts_with(&s.records));
            prop_assert!(s.valid as usize <= at);
            if at < bytes.len() && at > 0 {
                let whole = s.valid as usize == at;
                prop_assert!(whole || s.corrupt.is_some());
            }
        }

        /// A flipped bit is caught by the checksum of the record it lands in.
        #[test]
        fn a_flipped_bit_is_caught(records in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 1..100), 1..10), bit in any::<prop::sample::Index>()) {
            let mut bytes = segment(&records);
            let b = bit.index(bytes.len() * 8);
            bytes[b / 8] ^= 1 << (b % 8);
            let s = scan(&bytes);
            prop_assert!(s.corrupt.is_some());
            prop_assert!(records.starts_with(&s.records));
            prop_assert!(s.records.len() < records.len());
        }
    }

    #[test]
    fn a_huge_length_is_corruption_not_an_allocation() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(scan(&bytes).corrupt, Some(Corrupt::Length(u32::MAX)));
        assert_eq!(scan(b"CGQUEUE0").corrupt, Some(Corrupt::Header));
        assert_eq!(scan(b"").corrupt, None);
    }
}
