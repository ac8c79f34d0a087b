//! The symbols table of an outgoing v2 request: the encoded field-4 entries ready to emit,
//! plus a dedupe index that is built only when a new string is first interned (requests whose
//! series are all copied raw never hash a symbol).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::wire::proto;

/// Field number of `Request.symbols`.
const SYMBOLS_FIELD: u32 = 4;
/// End of a hash chain.
const NONE: u32 = u32::MAX;

#[derive(Debug, Default)]
pub(crate) struct Symbols {
    /// The encoded `symbols` entries (tag, length, bytes), in table order.
    encoded: Vec<u8>,
    /// `(offset, len)` of every symbol's bytes inside `encoded`.
    spans: Vec<(u32, u32)>,
    /// Hash of a symbol → the latest ref with that hash; `chain[r]` is the previous ref with
    /// the same hash. Keys are our own hashes, so the map does not hash them again.
    index: HashMap<u64, u32, BuildHasherDefault<PreHashed>>,
    chain: Vec<u32>,
    /// How many symbols (from the front) are in `index`.
    indexed: usize,
}

impl Symbols {
    pub(crate) fn clear(&mut self) {
        self.encoded.clear();
        self.spans.clear();
        self.index.clear();
        self.chain.clear();
        self.indexed = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Heap bytes held (capacities; the index counted at its key and value size).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.encoded.capacity()
            + self.spans.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.index.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
            + self.chain.capacity() * std::mem::size_of::<u32>()
    }

    pub(crate) fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Append already-encoded field-4 entries copied from a source body; `spans` are the
    /// symbols' `(offset, len)` in that body and `raw_start` the body offset of `raw`.
    pub(crate) fn extend_raw(&mut self, raw: &[u8], raw_start: u32, spans: &[(u32, u32)]) {
        let base = self.encoded.len() as u32;
        self.encoded.extend_from_slice(raw);
        self.spans.extend(
            spans
                .iter()
                .map(|&(off, len)| (base + off.saturating_sub(raw_start), len)),
        );
        self.chain.resize(self.spans.len(), NONE);
    }

    /// Append `s` without looking for an existing copy (the source table is taken as is so
    /// that raw-copied series keep valid refs).
    pub(crate) fn push(&mut self, s: &[u8]) -> u32 {
        proto::put_tag(&mut self.encoded, SYMBOLS_FIELD, proto::LEN);
        proto::put_varint(&mut self.encoded, s.len() as u64);
        let off = self.encoded.len() as u32;
        self.encoded.extend_from_slice(s);
        self.spans.push((off, s.len() as u32));
        self.chain.push(NONE);
        (self.spans.len() - 1) as u32
    }

    fn get(&self, r: u32) -> &[u8] {
        let (off, len) = self.spans.get(r as usize).copied().unwrap_or_default();
        proto::slice(&self.encoded, off, len)
    }

    /// The ref of `s`, adding it if the table does not have it yet.
    pub(crate) fn intern(&mut self, s: &[u8]) -> u32 {
        while self.indexed < self.spans.len() {
            let r = self.indexed as u32;
            let h = hash(self.get(r));
            self.link(h, r);
            self.indexed += 1;
        }
        let h = hash(s);
        let mut r = self.index.get(&h).copied().unwrap_or(NONE);
        while r != NONE {
            if self.get(r) == s {
                return r;
            }
            r = self.chain.get(r as usize).copied().unwrap_or(NONE);
        }
        let r = self.push(s);
        self.link(h, r);
        self.indexed += 1;
        r
    }

    fn link(&mut self, h: u64, r: u32) {
        let prev = self.index.insert(h, r).unwrap_or(NONE);
        if let Some(slot) = self.chain.get_mut(r as usize) {
            *slot = prev;
        }
    }
}

/// A fast 64-bit hash of a byte string (FxHash-style multiply-rotate over 8-byte words, then
/// a murmur3 finaliser so the low bits the table indexes by are mixed too). Not DoS-resistant:
/// chains are compared byte-for-byte, so collisions cost time, never correctness, and one
/// request's table is bounded by `Limits::max_symbols`.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// A `Hasher` for keys that are already hashes.
#[derive(Default)]
pub(crate) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only write_u64 is used by HashMap<u64, _>; fold anything else in anyway.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intern_dedupes_and_indexes_copied_entries_lazily() {
        let mut s = Symbols::default();
        assert_eq!(s.push(b""), 0);
        assert_eq!(s.push(b"job"), 1);
        assert_eq!(s.push(b"job"), 2); // source tables may repeat; kept as is
        assert_eq!(s.intern(b"job"), 2);
        assert_eq!(s.intern(b""), 0);
        assert_eq!(s.intern(b"instance"), 3);
        assert_eq!(s.intern(b"instance"), 3);
        assert_eq!(s.len(), 4);
        assert_ne!(hash(b"abcdefgh1"), hash(b"abcdefgh2"));
    }
}
