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
//!
//! The table is lock-free: one array of `AtomicU64` entries (62 bits of the key, the outcome,
//! a bit that makes every entry non-zero), probed linearly over a short window. A request
//! takes the current table once (`Memo::table`) and then costs one relaxed load per series,
//! with no lock or read-modify-write on the hit path. It is a cache, so losing an entry is
//! harmless: a full window overwrites its first slot, and an insert racing a resize may land
//! in the table being replaced. It starts empty and doubles up to `MAX_SLOTS` (8 MiB).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::wire::SeriesView;

/// Slots of the largest table: 8 bytes each, 8 MiB. Earlier tables are freed once the last
/// request holding one ends.
const MAX_SLOTS: usize = 1 << 20;
/// The first table, allocated at the first insert (a rule set that never sees traffic, or
/// the empty one, holds none).
const MIN_SLOTS: usize = 1 << 10;
/// Slots probed from a key's home slot before giving up (a lookup) or overwriting the home
/// slot (an insert): one or two cache lines.
const WINDOW: usize = 8;
/// At most this many series remembered (the slots of the largest table).
pub const MAX_ENTRIES: usize = MAX_SLOTS;

/// Mixed into the seed for keys over wire bytes ([`Memo::raw_key`]).
const RAW_DOMAIN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The two low bits of an entry: the outcome, and one always set so no entry is 0 (empty).
const DROPPED: u64 = 1;
const FULL: u64 = 2;
const TAG: u64 = !3;

/// What the memo knows about a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Unchanged,
    Dropped,
}

pub struct Memo {
    seed: u64,
    table: ArcSwap<Table>,
    /// Held only to replace the table, so two resizes do not race.
    resize: Mutex<()>,
}

/// One generation of the memo's slots; a request holds the one it started with.
pub struct Table {
    slots: Box<[AtomicU64]>,
    /// Slots filled (an estimate under races), for the resize.
    used: AtomicUsize,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Table {
    fn new(slots: usize) -> Table {
        Table {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            used: AtomicUsize::new(0),
        }
    }

    /// The key's home slot: its top bits (the low ones are in its tag anyway).
    #[inline]
    fn home(&self, key: u64) -> usize {
        // `slots.len()` is a power of two, at least `MIN_SLOTS`, when this is called.
        (key >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    /// Bring the key's home slot into the cache without waiting for it (see `get`).
    #[inline]
    pub fn prefetch(&self, key: u64) {
        if !self.slots.is_empty() {
            crate::guard::prefetch::read(&self.slots[self.home(key)]);
        }
    }

    #[inline]
    pub fn get(&self, key: u64) -> Option<Known> {
        if self.slots.is_empty() {
            return None;
        }
        let (home, mask) = (self.home(key), self.slots.len() - 1);
        for i in 0..WINDOW {
            let e = self.slots[(home + i) & mask].load(Relaxed);
            if e == 0 {
                return None;
            }
            if (e ^ key) & TAG == 0 {
                return Some(if e & DROPPED != 0 {
                    Known::Dropped
                } else {
                    Known::Unchanged
                });
            }
        }
        None
    }

    /// Record `known`; false when the slot it took was empty (the table fills).
    fn put(&self, key: u64, known: Known) -> bool {
        let entry = (key & TAG)
            | FULL
            | match known {
                Known::Dropped => DROPPED,
                Known::Unchanged => 0,
            };
        let (home, mask) = (self.home(key), self.slots.len() - 1);
        for i in 0..WINDOW {
            let slot = &self.slots[(home + i) & mask];
            let e = slot.load(Relaxed);
            if e == 0 {
                match slot.compare_exchange(0, entry, Relaxed, Relaxed) {
                    Ok(_) => return true,
                    Err(now) if (now ^ key) & TAG == 0 => return false,
                    Err(_) => continue,
                }
            }
            if (e ^ key) & TAG == 0 {
                return false;
            }
        }
        // The window is full: the newest series takes the home slot.
        self.slots[home].store(entry, Relaxed);
        false
    }

    fn len(&self) -> usize {
        self.slots.iter().filter(|e| e.load(Relaxed) != 0).count()
    }
}

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

    /// The key of a series from remote write 1.0 bytes of the body that determine its labels
    /// (`SeriesView::label_fields`, or the canonical `SeriesView::canonical_labels`), hashed
    /// where they lie, with no copy. A seed of its own keeps these keys apart from
    /// [`Memo::key`]'s: the two encodings of one label set give two entries with the same
    /// outcome, and no encoding of one set can stand for another. The two kinds of wire bytes
    /// share it soundly: either is parsed into labels the same way (a `TimeSeries` body's
    /// label fields), so equal bytes mean equal labels whichever way they were found.
    pub fn raw_key(&self, wire: &[u8]) -> u64 {
        xxh3_64_with_seed(wire, self.seed ^ RAW_DOMAIN)
    }

    /// The key of one series of a request: [`Memo::raw_key`] over the bytes before its first
    /// sample (found without walking the labels) or its canonical labels, [`Memo::key`]
    /// otherwise.
    #[cfg(test)]
    pub fn series_key(&self, view: &SeriesView<'_>, buf: &mut Vec<u8>) -> u64 {
        self.series_key_and_bytes(view, buf).0
    }

    /// [`Memo::series_key`], and the wire bytes it hashed when it hashed wire bytes.
    pub fn series_key_and_bytes<'a>(
        &self,
        view: &SeriesView<'a>,
        buf: &mut Vec<u8>,
    ) -> (u64, Option<&'a [u8]>) {
        match view.label_fields().or_else(|| view.canonical_labels()) {
            Some(raw) => (self.raw_key(raw), Some(raw)),
            None => (self.key(view.labels(), buf), None),
        }
    }

    /// The current table, taken once per request.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Remember `known` for `key`, in `table` (this request's), growing the memo when that
    /// table is the current one and half full (linear probing's windows stay short then);
    /// `table` then becomes the new one.
    pub fn insert(&self, table: &mut Arc<Table>, key: u64, known: Known) {
        let cap = table.slots.len();
        if cap != 0 {
            if !table.put(key, known) {
                return;
            }
            let used = table.used.fetch_add(1, Relaxed) + 1;
            if used <= cap / 2 || cap >= MAX_SLOTS {
                return;
            }
        }
        *table = self.grow(table, key, known);
    }

    /// The table after `seen`: twice its slots with its entries and `key`, unless another
    /// request replaced it first.
    fn grow(&self, seen: &Arc<Table>, key: u64, known: Known) -> Arc<Table> {
        let _one = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.table.load_full();
        if !Arc::ptr_eq(&now, seen) {
            if !now.slots.is_empty() {
                now.put(key, known);
            }
            return now;
        }
        let next = Table::new((seen.slots.len() * 2).clamp(MIN_SLOTS, MAX_SLOTS));
        let mut used = 0;
        for e in seen
            .slots
            .iter()
            .map(|e| e.load(Relaxed))
            .filter(|&e| e != 0)
        {
            let known = if e & DROPPED != 0 {
                Known::Dropped
            } else {
                Known::Unchanged
            };
            used += usize::from(next.put(e, known));
        }
        used += usize::from(next.put(key, known));
        next.used.store(used, Relaxed);
        let next = Arc::new(next);
        self.table.store(Arc::clone(&next));
        next
    }

    pub fn len(&self) -> usize {
        self.table.load().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots of the current table (tests: how far it grew).
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.table.load().slots.len()
    }
}

impl Default for Memo {
    fn default() -> Memo {
        Memo {
            seed: std::collections::hash_map::RandomState::new().hash_one(0u64),
            table: ArcSwap::from_pointee(Table::new(0)),
            resize: Mutex::new(()),
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

#[cfg(test)]
mod tests;
