//! Series identity and ownership.
//!
//! A series id is a seeded 64-bit xxh3 of its labels in canonical form: sorted by name and
//! encoded as remote write 1.0 `Label` messages (`0a <len> 0a <n> name 12 <v> value`, minimal
//! varints). The lengths make the encoding unambiguous, and it is byte for byte what
//! Prometheus sends, so for most series the id is a hash of the label bytes where they lie in
//! the request ([`raw_id`] over `SeriesView::canonical_labels`), with no copy; other series
//! (unsorted, v2, rewritten) are encoded into a scratch buffer first ([`Identity::series_id`];
//! [`Identity::sorted_series_id`] for labels known sorted, as v2 ones are), with the same
//! result. The seed comes from the config so that replicas (and snapshots) agree on ids. The
//! rules buffers key their series by the same encoding (their own seed, 128 bits).

use prost::encoding::{encode_varint, encoded_len_varint};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::wire::proto::Cursor;

/// Reusable state for hashing series; one per worker thread.
#[derive(Debug, Default)]
pub struct Identity {
    /// The canonical encoding being built: written by index and never truncated, so that
    /// growing it is the only time it is zeroed.
    arena: Vec<u8>,
    /// `refs_key`: a hash of each symbol of the request (`begin`).
    symbol_hashes: Vec<u64>,
}

impl Identity {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the series with these labels. `labels` may come in any order.
    pub fn series_id<'a, I>(&mut self, seed: u64, labels: I) -> u64
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        xxh3_64_with_seed(self.canonical(labels), seed)
    }

    /// `series_id` of labels known to be sorted by name and unique (`SeriesView::sorted`),
    /// as v2 series are: no order check.
    pub fn sorted_series_id<'a, I>(&mut self, seed: u64, labels: I) -> u64
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])>,
    {
        let len = self.write::<false, _>(labels).unwrap_or_default();
        xxh3_64_with_seed(&self.arena[..len], seed)
    }

    /// The canonical encoding of these labels (see the module doc), in any order, for
    /// callers that hash it their own way.
    pub fn canonical<'a, I>(&mut self, labels: I) -> &[u8]
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        let len = match self.write::<true, _>(labels.clone()) {
            Some(len) => len,
            None => {
                // Rare (Prometheus sorts): pay for a sort only here.
                let mut pairs: Vec<(&[u8], &[u8])> = labels.collect();
                pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
                self.write::<false, _>(pairs.into_iter())
                    .unwrap_or_default()
            }
        };
        &self.arena[..len]
    }

    /// Encode labels in the order given into the arena; the length written. With `CHECK`,
    /// `None` as soon as a name sorts before the one ahead of it.
    ///
    /// A label whose field fits one-byte lengths (all but long values) is written with a few
    /// fixed-size copies instead of `Vec` pushes, varint encoders and memcpy calls, which
    /// were a quarter of a 2.0 request's guard work.
    #[inline]
    fn write<'a, const CHECK: bool, I>(&mut self, labels: I) -> Option<usize>
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])>,
    {
        let buf = &mut self.arena;
        let mut at = 0usize;
        let mut prev: &[u8] = &[];
        for (name, value) in labels {
            if CHECK {
                // First bytes settle most pairs of exporters' label names.
                let before = match name.first().cmp(&prev.first()) {
                    std::cmp::Ordering::Greater => false,
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Equal => name < prev,
                };
                if before {
                    return None;
                }
                prev = name;
            }
            let (n, v) = (name.len(), value.len());
            let len = n + v + 4;
            let end = at + len + 2;
            if buf.len() < end {
                buf.resize(end.max(2 * buf.len()).max(256), 0);
            }
            if len < 0x80 && n <= 64 && v <= 64 {
                let b = &mut buf[at..end];
                b[..4].copy_from_slice(&[0x0a, len as u8, 0x0a, n as u8]);
                put_short(&mut b[4..4 + n], name);
                b[4 + n] = 0x12;
                b[5 + n] = v as u8;
                put_short(&mut b[6 + n..], value);
                at = end;
            } else {
                // Long strings: varint lengths, written by the general encoder.
                buf.truncate(at);
                push_pair(buf, name, value);
                at = buf.len();
            }
        }
        Some(at)
    }

    /// Start on a request whose symbols table (2.0) is `symbols` (offsets into `buf`):
    /// `refs_key` reads a hash of each symbol, made here in one pass over the table. (Made
    /// on a symbol's first use instead, the test whether it was made mispredicted as often
    /// as a request's label values are new, and cost more than hashing them all.)
    pub fn begin(&mut self, seed: u64, symbols: &[(u32, u32)], buf: &[u8]) {
        self.symbol_hashes.clear();
        self.symbol_hashes.extend(symbols.iter().map(|&(off, len)| {
            let s = buf
                .get(off as usize..off as usize + len as usize)
                .unwrap_or_default();
            xxh3_64_with_seed(s, seed)
        }));
    }

    /// What the fresh table knows a 2.0 series read lazily by (`SeriesView::lazy_refs`): not
    /// its id, which takes writing its labels out in canonical form and hashing them, but a
    /// hash of the sequence of its label strings, in the order given, from the hash of each
    /// symbol its refs name (`begin`). Two series with the same key have, but for a 64-bit
    /// collision, the same strings in the same order, so a key the table holds vouches for a
    /// series as an id does: one like it was checked. `None` when the refs are not whole
    /// pairs of varints within the table: such a series cannot be known, and its check finds
    /// the error.
    pub fn refs_key(&self, seed: u64, refs: &[u8]) -> Option<u64> {
        let hashes = &self.symbol_hashes[..];
        let mut c = Cursor::new(refs, 0..refs.len());
        let mut key = seed ^ 0x9E37_79B9_7F4A_7C15;
        while !c.at_end() {
            // Truncated to 32 bits as Go and prost read a `uint32`.
            let name = *hashes.get(c.varint().ok()? as u32 as usize)?;
            let value = *hashes.get(c.varint().ok()? as u32 as usize)?;
            // The pair mixed together, then into what came before: a 128-bit product folded
            // (as xxh3 and wyhash mix), order-sensitive through the running key.
            key = fold(key ^ name, value ^ 0xD6E8_FEB8_6659_FD93);
        }
        Some(fold(key, refs.len() as u64 ^ 0x94D0_49BB_1331_11EB))
    }
}

/// The 128-bit product of `a` and `b`, its halves xor-ed.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// `dst.copy_from_slice(s)` for strings of at most 64 bytes as at most two overlapping
/// fixed-size copies, which compile to register moves where a variable length is a call.
/// Both halves are loaded before either is stored: written as two copies, LLVM may see that
/// together they copy `n` bytes and make them one `memcpy` call again, as it did once the
/// code around `write` changed (5 % of a 2.0 request).
#[inline(always)]
fn put_short(dst: &mut [u8], s: &[u8]) {
    let n = s.len();
    debug_assert!(n <= 64 && dst.len() == n);
    match n {
        32..=64 => halves::<32>(dst, s),
        16..=31 => halves::<16>(dst, s),
        8..=15 => halves::<8>(dst, s),
        4..=7 => halves::<4>(dst, s),
        1..=3 => {
            let (a, b, c) = (s[0], s[n / 2], s[n - 1]);
            dst[0] = a;
            dst[n / 2] = b;
            dst[n - 1] = c;
        }
        _ => {}
    }
}

/// The first and last `N` bytes of `s` (`N <= s.len() <= 2N`) into `dst`.
#[inline(always)]
fn halves<const N: usize>(dst: &mut [u8], s: &[u8]) {
    let n = s.len();
    let head: [u8; N] = *s.first_chunk().expect("N <= len");
    let tail: [u8; N] = *s.last_chunk().expect("N <= len");
    *dst.first_chunk_mut().expect("N <= len") = head;
    *dst[n - N..].first_chunk_mut().expect("N <= len") = tail;
}

/// The id of a series whose labels are already in canonical form (see the module doc).
#[inline]
pub fn raw_id(seed: u64, canonical: &[u8]) -> u64 {
    xxh3_64_with_seed(canonical, seed)
}

/// One `Label` message as field 1 of a `TimeSeries`; an empty value is written too (as
/// `12 00`), so that a label with an empty value and an absent label stay different series.
fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let (n, v) = (name.len() as u64, value.len() as u64);
    let len = 1 + encoded_len_varint(n) as u64 + n + 1 + encoded_len_varint(v) as u64 + v;
    out.push(0x0a);
    encode_varint(len, out);
    out.push(0x0a);
    encode_varint(n, out);
    out.extend_from_slice(name);
    out.push(0x12);
    encode_varint(v, out);
    out.extend_from_slice(value);
}

/// The owner of a series: the value of the first owner label present (e.g. `[service, job]`).
pub fn owner<'a, I>(owner_labels: &[String], labels: I) -> Option<&'a [u8]>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    owner_labels.iter().find_map(|want| {
        labels
            .clone()
            .find(|(name, value)| *name == want.as_bytes() && !value.is_empty())
            .map(|(_, value)| value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(seed: u64, labels: &[(&str, &str)]) -> u64 {
        Identity::new().series_id(
            seed,
            labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        )
    }

    #[test]
    fn order_of_labels_does_not_matter() {
        let a = id(0, &[("__name__", "up"), ("job", "x"), ("zone", "a")]);
        let b = id(0, &[("zone", "a"), ("__name__", "up"), ("job", "x")]);
        assert_eq!(a, b);
    }

    #[test]
    fn seed_and_boundaries_matter() {
        let base = id(0, &[("__name__", "up"), ("job", "x")]);
        assert_ne!(base, id(1, &[("__name__", "up"), ("job", "x")]));
        // Moving bytes between name and value must change the id.
        assert_ne!(id(0, &[("ab", "c")]), id(0, &[("a", "bc")]));
        assert_ne!(
            id(0, &[("a", "b"), ("c", "d")]),
            id(0, &[("a", "b\u{0}c"), ("", "d")])
        );
    }

    #[test]
    fn owner_uses_first_label_present() {
        let labels = [("__name__", "up"), ("job", "api"), ("service", "checkout")];
        let it = labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let owners = vec!["service".to_string(), "job".to_string()];
        assert_eq!(owner(&owners, it.clone()), Some(&b"checkout"[..]));
        let owners = vec!["team".to_string(), "job".to_string()];
        assert_eq!(owner(&owners, it.clone()), Some(&b"api"[..]));
        assert_eq!(owner(&["team".to_string()], it), None);
    }

    /// Parse a one-series v1 body with these labels (in this order) and return
    /// (the id from the bytes in place, if canonical there; the id from the label iterator).
    fn wire_ids(seed: u64, labels: &[(String, String)]) -> (Option<u64>, u64) {
        use crate::wire::types::v1;
        use crate::wire::{Limits, Parsed, Version};
        use prost::Message;
        let req = v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| v1::Label {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                samples: vec![v1::Sample {
                    value: 1.0,
                    timestamp: 1,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let buf = req.encode_to_vec();
        let mut p = Parsed::new();
        p.parse(&buf, Version::V1, &Limits::default()).unwrap();
        let view = p.series(&buf, 0);
        (
            view.canonical_labels().map(|raw| raw_id(seed, raw)),
            Identity::new().series_id(seed, view.labels()),
        )
    }

    #[test]
    fn prometheus_labels_are_hashed_in_place() {
        let labels: Vec<(String, String)> = [("__name__", "up"), ("job", "api"), ("zone", "a")]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let (raw, built) = wire_ids(7, &labels);
        assert_eq!(raw, Some(built));
        // Unsorted: not canonical in place, same id once sorted.
        let mut rev = labels.clone();
        rev.reverse();
        assert_eq!(wire_ids(7, &rev), (None, built));
        // A value of 128 bytes or more has a two-byte length: built, not borrowed.
        let long = vec![
            ("__name__".to_string(), "up".to_string()),
            ("path".to_string(), "x".repeat(200)),
        ];
        let (raw, _) = wire_ids(7, &long);
        assert_eq!(raw, None);
    }

    #[test]
    fn unusual_label_framing_is_not_taken_as_canonical() {
        use crate::wire::{Limits, Parsed, Version};
        // One series; its labels: __name__="up", then a label whose name field is repeated
        // (protobuf: the last wins, so it is job="a"), then a sample.
        let mut ts = vec![0x0a, 0x0e, 0x0a, 0x08];
        ts.extend_from_slice(b"__name__");
        ts.extend_from_slice(&[0x12, 0x02, b'u', b'p']);
        ts.extend_from_slice(&[0x0a, 0x0b, 0x0a, 0x01, b'x', 0x0a, 0x03]);
        ts.extend_from_slice(b"job");
        ts.extend_from_slice(&[0x12, 0x01, b'a']);
        ts.extend_from_slice(&[0x12, 0x0b, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x01]);
        let mut buf = vec![0x0a, ts.len() as u8];
        buf.extend_from_slice(&ts);
        let mut p = Parsed::new();
        p.parse(&buf, Version::V1, &Limits::default()).unwrap();
        let view = p.series(&buf, 0);
        let labels: Vec<(&[u8], &[u8])> = view.labels().collect();
        assert_eq!(labels, [(&b"__name__"[..], &b"up"[..]), (b"job", b"a")]);
        assert_eq!(view.canonical_labels(), None);
        let clean: Vec<(String, String)> = [("__name__", "up"), ("job", "a")]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let (raw, built) = wire_ids(3, &clean);
        assert_eq!(raw, Some(built));
        assert_eq!(Identity::new().series_id(3, view.labels()), built);
    }

    proptest! {
        #[test]
        fn in_place_and_built_ids_agree(
            labels in proptest::collection::btree_map("[a-z_]{1,8}", "[ -~]{0,130}", 1..10),
            seed in any::<u64>(),
            reverse in any::<bool>(),
        ) {
            let mut v: Vec<(String, String)> = labels.into_iter().collect();
            if reverse {
                v.reverse();
            }
            let (raw, built) = wire_ids(seed, &v);
            if let Some(raw) = raw {
                prop_assert_eq!(raw, built);
            }
            let short = v.iter().all(|(n, v)| !v.is_empty() && n.len() + v.len() + 4 < 0x80);
            if short && (!reverse || v.len() == 1) {
                prop_assert!(raw.is_some(), "canonical labels not recognised");
            }
        }

        /// The fast writer against the plain encoding of the module doc, for sorted and
        /// shuffled labels, short and long strings.
        #[test]
        fn builders_match_the_plain_encoding(
            labels in proptest::collection::btree_map("[a-z_]{1,40}", "[ -~]{0,140}", 1..12),
            seed in any::<u64>(),
            rot in 0usize..12,
        ) {
            let sorted: Vec<(String, String)> = labels.into_iter().collect();
            let mut plain = Vec::new();
            for (n, v) in &sorted {
                push_pair(&mut plain, n.as_bytes(), v.as_bytes());
            }
            let want = xxh3_64_with_seed(&plain, seed);
            fn it(v: &[(String, String)]) -> Vec<(&[u8], &[u8])> {
                v.iter().map(|(a, b)| (a.as_bytes(), b.as_bytes())).collect()
            }
            let mut id = Identity::new();
            prop_assert_eq!(id.sorted_series_id(seed, it(&sorted).into_iter()), want);
            prop_assert_eq!(id.canonical(it(&sorted).into_iter()), &plain[..]);
            let mut shuffled = sorted.clone();
            let n = shuffled.len();
            shuffled.rotate_left(rot % n);
            prop_assert_eq!(id.series_id(seed, it(&shuffled).into_iter()), want);
            // The arena is reused, longer than the next series: its tail must not count.
            let first = it(&sorted[..1]);
            let mut one = Vec::new();
            push_pair(&mut one, first[0].0, first[0].1);
            prop_assert_eq!(id.sorted_series_id(seed, first.into_iter()), xxh3_64_with_seed(&one, seed));
        }

        #[test]
        fn any_permutation_same_id(
            labels in proptest::collection::btree_map("[a-z_]{1,8}", "[ -~]{0,8}", 1..12),
            seed in any::<u64>(),
            rot in 0usize..12,
        ) {
            let sorted: Vec<(String, String)> = labels.into_iter().collect();
            let mut shuffled = sorted.clone();
            let n = shuffled.len();
            shuffled.rotate_left(rot % n);
            shuffled.reverse();
            let h = |v: &[(String, String)]| Identity::new().series_id(seed, v.iter().map(|(a, b)| (a.as_bytes(), b.as_bytes())));
            prop_assert_eq!(h(&sorted), h(&shuffled));
        }
    }
}
