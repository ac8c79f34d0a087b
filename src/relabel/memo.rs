//! A memo of the series a rule set leaves unchanged or drops, so that the traffic relabeling
//! does not touch costs one hash and one lookup per series instead of the rules (remote write
//! repeats the same series every scrape). Series the rules change are never recorded: they
//! need their rewritten labels, and they are the rare case.
//!
//! The memo belongs to its `RuleSet`, which lives in the immutable config swapped on reload,
//! so new rules always start with an empty memo. Its `Clone` starts empty too, and it never
//! takes part in config equality.
//!
//! The key is a seeded 64-bit xxh3 of the labels in the order they came (order included, so
//! a hit is the same input `process` saw). A collision would make a series take another's
//! outcome; the guard already trusts 64-bit seeded series ids the same way, and the seed is
//! random per rule set, so an attacker cannot aim for one.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::wire::SeriesView;

/// Shards, chosen by the top bits of the key, so worker threads rarely meet on a lock.
const SHARDS: usize = 64;
/// Entries per shard: exactly what a table of 16384 buckets holds (7/8 of them) without
/// growing. A full shard is cleared: simple, and bounded under any input.
pub(super) const SHARD_CAP: usize = 14_336;
/// At most 917,504 series remembered. An entry is a `(u64, u8)` slot (16 bytes) plus one
/// control byte in a table of fixed size: 17 bytes a bucket, about 19.4 bytes an entry when
/// full, 17.8 MB per rule set at most (allocated only as shards fill).
pub const MAX_ENTRIES: usize = SHARDS * SHARD_CAP;

/// Mixed into the seed for keys over canonical wire bytes ([`Memo::raw_key`]).
const RAW_DOMAIN: u64 = 0x9e37_79b9_7f4a_7c15;

/// What the memo knows about a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Unchanged,
    Dropped,
}

pub struct Memo {
    seed: u64,
    shards: Box<[Mutex<Shard>]>,
}

type Shard = HashMap<u64, Known, BuildHasherDefault<PassThrough>>;

impl Memo {
    /// The key of the series with these labels; `buf` is reused from series to series.
    pub fn key<'a, I>(&self, labels: I, buf: &mut Vec<u8>) -> u64
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])>,
    {
        buf.clear();
        // Length prefixes make the encoding unambiguous whatever bytes names and values hold.
        for (name, value) in labels {
            buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
            buf.extend_from_slice(name);
            buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
            buf.extend_from_slice(value);
        }
        xxh3_64_with_seed(buf, self.seed)
    }

    /// The key of a series whose labels the body already holds in canonical remote write 1.0
    /// form (`SeriesView::canonical_labels`, what Prometheus sends): those bytes hashed where
    /// they lie, with no copy. A seed of its own keeps these keys apart from [`Memo::key`]'s:
    /// the two encodings of one label set give two entries with the same outcome, and no
    /// encoding of one set can stand for another.
    pub fn raw_key(&self, canonical: &[u8]) -> u64 {
        xxh3_64_with_seed(canonical, self.seed ^ RAW_DOMAIN)
    }

    /// The key of one series of a request: [`Memo::raw_key`] when the body holds its labels in
    /// canonical form, [`Memo::key`] otherwise.
    pub fn series_key(&self, view: &SeriesView<'_>, buf: &mut Vec<u8>) -> u64 {
        match view.canonical_labels() {
            Some(raw) => self.raw_key(raw),
            None => self.key(view.labels(), buf),
        }
    }

    pub fn get(&self, key: u64) -> Option<Known> {
        self.shard(key).get(&key).copied()
    }

    pub fn insert(&self, key: u64, known: Known) {
        let mut shard = self.shard(key);
        if shard.len() >= SHARD_CAP {
            shard.clear();
        }
        shard.insert(key, known);
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Shard> {
        lock(&self.shards[(key >> (64 - SHARDS.trailing_zeros())) as usize])
    }
}

/// A panic while a shard was held leaves a map that is still valid: carry on with it.
fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Memo {
    fn default() -> Memo {
        Memo {
            seed: std::collections::hash_map::RandomState::new().hash_one(0u64),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// A copy (a config cloned) starts empty, with its own seed.
impl Clone for Memo {
    fn clone(&self) -> Memo {
        Memo::default()
    }
}

/// Config equality never depends on what the memo has seen.
impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.len())
            .finish()
    }
}

/// The key is already a hash. The top bits pick the shard, so they are rotated down: the
/// table's bucket index comes from the low bits and its tag from the top 7.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, k: u64) {
        self.0 = k.rotate_left(32);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests;
