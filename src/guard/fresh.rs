//! The guard's steady state in one probe: the series admitted and already seen in the current
//! slice, by id, each with the index of its owner; and those its owner's budget refused in it.
//!
//! Almost every series of a steady request is one of these, and for them admission changes
//! nothing but the owner's counters. (A series refused for the owner's budget stays refused
//! until the slice turns: an owner's series only expire then, and the budget only changes with
//! the config. Other refusals may not, and are not kept.) Grouping them by owner, locking each
//! owner and finding each series in its owner's per-metric tables was most of the guard's
//! time. Here a request looks them up in one table, prefetched across the request, and only
//! the rest go the owners' way.
//!
//! A key folds the id with a salt of the slice, the config generation and the tenant: a
//! new slice, a reload or another tenant finds nothing it did not put there, so the table is
//! never cleared. Entries are single atomic words, written whole: a racing reader sees an
//! old entry or a new one, each true of its salt. A hit therefore means that some request of
//! this slice, under this config and tenant, kept the series in its owner's tables (which
//! cannot expire it before the slice ends, nor forget the owner). The table is a cache: a
//! full bucket replaces an entry, and a miss only costs the owners' way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::prefetch;

/// Slots of a bucket: one cache line of entries.
const WAYS: usize = 8;
/// The table starts at this many slots once a series is admitted...
const MIN_SLOTS: usize = 1 << 10;
/// ...and grows with the admitted series up to this many (2 MiB): 2 bytes a series at 1M
/// series, where it holds about a quarter of them.
pub const MAX_SLOTS: usize = 1 << 18;
/// The table's largest size in bytes.
pub const MAX_BYTES: usize = MAX_SLOTS * std::mem::size_of::<u64>();
/// An entry is the key's high 47 bits, a bit set when the series was refused for its owner's
/// budget, and its owner's index + 1 in the low 16 (0: empty).
const OWNER_BITS: u32 = 16;
const OWNER_MASK: u64 = (1 << OWNER_BITS) - 1;
const REFUSED: u64 = 1 << OWNER_BITS;
const KEY_MASK: u64 = !(OWNER_MASK | REFUSED);
/// Owner indices the table can hold; owners past it always take the owners' way.
pub const MAX_OWNER_INDEX: u32 = (1 << OWNER_BITS) - 2;

#[repr(align(64))]
#[derive(Default)]
struct Bucket([AtomicU64; WAYS]);

#[derive(Default)]
struct Table {
    /// A power of two long, or empty.
    buckets: Box<[Bucket]>,
}

/// The table, swapped whole when it grows or shrinks (entries are then lost: a cache).
pub struct Fresh {
    table: ArcSwap<Table>,
    resizing: Mutex<()>,
}

impl Default for Fresh {
    fn default() -> Self {
        Fresh {
            table: ArcSwap::from_pointee(Table::default()),
            resizing: Mutex::new(()),
        }
    }
}

/// The salt of one request's keys (see the module doc).
pub fn salt(tenant_seed: u64, slice: u64, generation: u64) -> u64 {
    // splitmix64's finalizer: every input bit moves every output bit.
    let mut z = tenant_seed
        ^ slice.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ generation.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of series `id` under `salt`. Ids are xxh3 hashes: the xor keeps them uniform.
#[inline]
pub fn key(id: u64, salt: u64) -> u64 {
    id ^ salt
}

/// What the table holds of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The owner's index (`Owner::index`).
    pub owner: u32,
    /// Refused for the owner's budget, else kept.
    pub refused: bool,
}

/// One request's view of the table, loaded once.
pub struct View(arc_swap::Guard<Arc<Table>>);

impl View {
    /// The bucket of `key`: its low bits, which the entry does not keep, so that the entry's
    /// 47 and the bucket's bits together tell keys apart (a wrong hit is one in 2⁴⁷ a slot).
    #[inline]
    fn bucket(&self, key: u64) -> Option<&Bucket> {
        let b = &self.0.buckets;
        b.get(key as usize & b.len().wrapping_sub(1))
    }

    #[inline]
    pub fn prefetch(&self, key: u64) {
        if let Some(b) = self.bucket(key) {
            prefetch::read(b);
        }
    }

    /// What the table holds of `key`.
    #[inline]
    pub fn get(&self, key: u64) -> Option<Entry> {
        let want = key & KEY_MASK;
        self.bucket(key)?.0.iter().find_map(|e| {
            let e = e.load(Ordering::Relaxed);
            (e != 0 && e & KEY_MASK == want).then(|| Entry {
                owner: (e & OWNER_MASK) as u32 - 1,
                refused: e & REFUSED != 0,
            })
        })
    }

    /// Hold `key` as `what` (its owner at most `MAX_OWNER_INDEX`): in its own slot, else an
    /// empty one, else one picked by the key's bits.
    pub fn insert(&self, key: u64, what: Entry) {
        debug_assert!(what.owner <= MAX_OWNER_INDEX);
        let Some(b) = self.bucket(key) else {
            return;
        };
        let want = key & KEY_MASK;
        let refused = if what.refused { REFUSED } else { 0 };
        let entry = want | refused | (u64::from(what.owner) + 1);
        let mut empty = None;
        for slot in &b.0 {
            let e = slot.load(Ordering::Relaxed);
            if e != 0 && e & KEY_MASK == want {
                slot.store(entry, Ordering::Relaxed);
                return;
            }
            if e == 0 && empty.is_none() {
                empty = Some(slot);
            }
        }
        let slot = empty.unwrap_or(&b.0[(key >> 61) as usize % WAYS]);
        slot.store(entry, Ordering::Relaxed);
    }
}

impl Fresh {
    pub fn view(&self) -> View {
        View(self.table.load())
    }

    /// Slots held now.
    pub fn slots(&self) -> usize {
        self.table.load().buckets.len() * WAYS
    }

    /// Heap bytes of the table.
    pub fn memory_bytes(&self) -> usize {
        self.slots() * std::mem::size_of::<AtomicU64>()
    }

    /// Size the table for `active` admitted series: grown at once when they outgrow it (a
    /// request that admitted new series asks), shrunk when they fell to a quarter of it
    /// (the periodic tick asks). Another thread resizing meanwhile wins.
    pub fn fit(&self, active: u64) {
        let have = self.slots();
        let want = Self::slots_for(active);
        let grow = want > have;
        let shrink = have > MIN_SLOTS && want * 4 <= have;
        if !(grow || shrink) {
            return;
        }
        let Ok(_held) = self.resizing.try_lock() else {
            return;
        };
        if self.slots() != have {
            return;
        }
        let buckets = (0..want / WAYS).map(|_| Bucket::default()).collect();
        self.table.store(Arc::new(Table { buckets }));
    }

    /// Room for half again the series, in powers of two: 8-way buckets keep nearly all.
    fn slots_for(active: u64) -> usize {
        if active == 0 {
            return 0;
        }
        let n = usize::try_from(active).unwrap_or(usize::MAX);
        n.saturating_add(n / 2)
            .checked_next_power_of_two()
            .unwrap_or(MAX_SLOTS)
            .clamp(MIN_SLOTS, MAX_SLOTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(active: u64) -> Fresh {
        let f = Fresh::default();
        f.fit(active);
        f
    }

    fn kept(owner: u32) -> Entry {
        Entry {
            owner,
            refused: false,
        }
    }

    #[test]
    fn an_empty_table_holds_nothing() {
        let f = Fresh::default();
        let v = f.view();
        v.insert(42, kept(1));
        assert_eq!(v.get(42), None);
        assert_eq!(f.memory_bytes(), 0);
    }

    #[test]
    fn a_key_is_found_with_its_owner_and_not_under_another_salt() {
        let f = filled(100);
        let v = f.view();
        let (a, b) = (salt(1, 10, 1), salt(1, 11, 1));
        v.insert(key(7, a), kept(3));
        assert_eq!(v.get(key(7, a)), Some(kept(3)));
        assert_eq!(v.get(key(7, b)), None, "another slice");
        assert_eq!(v.get(key(7, salt(1, 10, 2))), None, "another generation");
        assert_eq!(v.get(key(7, salt(2, 10, 1))), None, "another tenant");
        v.insert(key(7, a), kept(MAX_OWNER_INDEX));
        assert_eq!(v.get(key(7, a)), Some(kept(MAX_OWNER_INDEX)));
        let refused = Entry {
            owner: 0,
            refused: true,
        };
        v.insert(key(7, a), refused);
        assert_eq!(v.get(key(7, a)), Some(refused));
    }

    #[test]
    fn a_full_bucket_replaces_and_keeps_the_rest() {
        let f = filled(100);
        let v = f.view();
        let buckets = f.slots() / WAYS;
        // Ten keys of one bucket: the same low bits, different high ones.
        let keys: Vec<u64> = (1..=10u64).map(|i| (i << 40) | 5).collect();
        assert!(keys.iter().all(|k| *k as usize % buckets == 5));
        for (i, k) in keys.iter().enumerate() {
            v.insert(*k, kept(i as u32));
        }
        let held: Vec<_> = keys.iter().filter_map(|k| v.get(*k)).collect();
        assert_eq!(held.len(), WAYS);
        for (i, k) in keys.iter().enumerate() {
            if let Some(o) = v.get(*k) {
                assert_eq!(o, kept(i as u32));
            }
        }
    }

    #[test]
    fn it_grows_with_the_series_and_shrinks_when_they_go() {
        let f = Fresh::default();
        f.fit(0);
        assert_eq!(f.slots(), 0);
        f.fit(10);
        assert_eq!(f.slots(), MIN_SLOTS);
        f.fit(100_000);
        assert_eq!(f.slots(), 1 << 18);
        f.fit(10_000_000);
        assert_eq!(f.slots(), MAX_SLOTS);
        // A fall to half keeps it; to a tenth shrinks it.
        f.fit(90_000);
        assert_eq!(f.slots(), 1 << 18);
        f.fit(10_000);
        assert_eq!(f.slots(), 1 << 14);
    }
}
