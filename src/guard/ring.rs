//! Per-owner demand over the window, sized by what the owner sends: a ring of sketches (one per
//! slice) for the names and owners that bring many distinct ids, an exact list for the rest;
//! and the direct-mapped filters that spare the sketches repeated inserts, grown on use.
//!
//! Owners are often many and small (an owner label such as `pod` or `instance`, ten thousand
//! owners of a few series each): what an owner holds before it has series must be bytes, not
//! the kilobytes of sketches and filters a large owner needs.

use super::sketch::Sketch;

/// Distinct ids a ring keeps exactly before it switches to per-slice sketches: 16 bytes each,
/// so at most 512 bytes, about the size of one sparse sketch of that many ids.
const EXACT_MAX: usize = 32;

#[derive(Clone, Debug)]
enum Slots {
    /// One id with the last slice it came in, inline: most names of a small owner (a metric
    /// of one series, a label of one value) never see a second, and a list of one would be an
    /// allocation of 64 bytes (80 with malloc's header) for 16.
    One(u64, u64),
    /// Each distinct id with the last slice it came in (empty, or at least two).
    Exact(Vec<(u64, u64)>),
    /// One sketch per slice, by `slice % len`; the oldest cleared as the window slides.
    Sketched(Box<[Option<Box<Sketch>>]>),
}

/// Distinct ids over the window's slices.
#[derive(Clone, Debug)]
pub struct SketchRing {
    slots: Slots,
    slices: u8,
    precision: u8,
}

impl SketchRing {
    pub fn new(slices: u8, precision: u8) -> Self {
        SketchRing {
            slots: Slots::Exact(Vec::new()),
            slices: slices.max(1),
            precision,
        }
    }

    #[inline]
    pub fn insert(&mut self, slice: u64, id: u64) {
        match &mut self.slots {
            Slots::One(one, last) if *one == id => *last = (*last).max(slice),
            Slots::One(one, last) => {
                let mut ids = Vec::with_capacity(4);
                ids.extend([(*one, *last), (id, slice)]);
                self.slots = Slots::Exact(ids);
            }
            Slots::Exact(ids) if ids.is_empty() => self.slots = Slots::One(id, slice),
            Slots::Exact(ids) => {
                if let Some(e) = ids.iter_mut().find(|e| e.0 == id) {
                    e.1 = e.1.max(slice);
                    return;
                }
                if ids.len() < EXACT_MAX {
                    ids.push((id, slice));
                    return;
                }
                let ids = std::mem::take(ids);
                self.slots = Slots::Sketched(vec![None; usize::from(self.slices)].into());
                for (id, s) in ids {
                    self.insert_sketched(s, id);
                }
                self.insert_sketched(slice, id);
            }
            Slots::Sketched(_) => self.insert_sketched(slice, id),
        }
    }

    #[inline]
    fn insert_sketched(&mut self, slice: u64, id: u64) {
        let precision = self.precision;
        if let Slots::Sketched(slots) = &mut self.slots {
            let n = slots.len() as u64;
            slots[(slice % n) as usize]
                .get_or_insert_with(|| Box::new(Sketch::new(precision)))
                .insert(id);
        }
    }

    /// Make room for slice `slice`: forget what came only in the slice a window before it.
    pub fn clear_slot(&mut self, slice: u64) {
        let n = u64::from(self.slices);
        match &mut self.slots {
            Slots::One(_, last) => {
                if *last + n <= slice {
                    self.slots = Slots::Exact(Vec::new());
                }
            }
            Slots::Exact(ids) => {
                ids.retain(|e| e.1 + n > slice);
                match ids[..] {
                    [] => *ids = Vec::new(),
                    [(id, last)] => self.slots = Slots::One(id, last),
                    _ => {}
                }
            }
            Slots::Sketched(slots) => {
                slots[(slice % n) as usize] = None;
                if slots.iter().all(Option::is_none) {
                    self.slots = Slots::Exact(Vec::new());
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.slots {
            Slots::One(..) => false,
            Slots::Exact(ids) => ids.is_empty(),
            Slots::Sketched(slots) => slots.iter().all(Option::is_none),
        }
    }

    pub fn estimate(&self) -> f64 {
        match &self.slots {
            Slots::One(..) => 1.0,
            Slots::Exact(ids) => ids.len() as f64,
            Slots::Sketched(slots) => {
                let mut merged = Sketch::new(self.precision);
                for s in slots.iter().flatten() {
                    merged.merge(s);
                }
                merged.count()
            }
        }
    }

    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// The ring as one sketch per slice (by `slice % slices`), what a snapshot stores: exact ids
    /// go into the sketch of the last slice they came in.
    pub fn to_slices(&self) -> Vec<Option<Sketch>> {
        let one;
        let ids: &[(u64, u64)] = match &self.slots {
            Slots::One(id, slice) => {
                one = [(*id, *slice)];
                &one
            }
            Slots::Exact(ids) => ids,
            Slots::Sketched(slots) => {
                return slots.iter().map(|s| s.as_deref().cloned()).collect();
            }
        };
        let n = u64::from(self.slices);
        let mut out: Vec<Option<Sketch>> = vec![None; usize::from(self.slices)];
        for &(id, slice) in ids {
            out[(slice % n) as usize]
                .get_or_insert_with(|| Sketch::new(self.precision))
                .insert(id);
        }
        out
    }

    /// A ring from [`Self::to_slices`]' form; `None` when it does not fit `slices` and
    /// `precision`. A restored ring with ids is sketched (the exact ids are not in the file).
    pub fn from_slices(sketches: Vec<Option<Sketch>>, slices: u8, precision: u8) -> Option<Self> {
        let fits = sketches.len() == usize::from(slices.max(1))
            && sketches
                .iter()
                .flatten()
                .all(|s| s.precision() == precision);
        if !fits {
            return None;
        }
        let mut ring = SketchRing::new(slices, precision);
        if sketches.iter().any(Option::is_some) {
            ring.slots = Slots::Sketched(sketches.into_iter().map(|s| s.map(Box::new)).collect());
        }
        Some(ring)
    }

    /// Heap bytes, about (sketches at their dense size, an upper bound).
    pub fn memory_bytes(&self) -> usize {
        match &self.slots {
            Slots::One(..) => 0,
            Slots::Exact(ids) => ids.capacity() * 16,
            Slots::Sketched(slots) => {
                let dense = (1usize << self.precision) * 6 / 8;
                slots.len() * 8 + slots.iter().flatten().count() * dense
            }
        }
    }
}

/// A set of nonzero u64 keys in buckets of `WAYS` slots that forgets when a bucket is full:
/// "was this seen in this slice?" where a wrong "no" only costs a repeated (idempotent)
/// sketch insert. It starts unallocated and grows 4× (up to `max` slots) once keys filled
/// more than half its slots during a slice, so a small owner holds a few dozen bytes and a
/// busy one the full filter. Only keys that fill an empty slot count: a few keys colliding and
/// coming back in turn would otherwise grow it as if they were many.
///
/// Buckets, not one slot a key: the keys that come back every request (an exploding owner's
/// refused series, tens of thousands a slice) fill the filter to half or more, and a
/// direct-mapped slot keeps a key only when no other key of the slice maps to it (47 % of
/// them at 0.75 load, and none past the filter's size). A full bucket replaces a slot picked
/// by the key's bits, so keys that keep coming back in the same order stay in the other slots.
#[derive(Clone, Debug)]
pub struct SeenFilter {
    slots: Box<[u64]>,
    /// Keys inserted into an empty slot since the last `clear`.
    inserted: usize,
    min: usize,
    max: usize,
}

/// Slots of a bucket: 64 bytes, one cache line when the slots are so aligned.
const WAYS: usize = 8;

impl SeenFilter {
    /// `min` and `max` slots, rounded up to powers of two of at least a bucket (so that 4×
    /// growth keeps a power of two, and a bucket is found with a mask, not a division).
    pub fn new(min: usize, max: usize) -> Self {
        let min = min.max(WAYS).next_power_of_two();
        SeenFilter {
            slots: Box::new([]),
            inserted: 0,
            min,
            max: max.next_power_of_two().max(min),
        }
    }

    /// A key's bucket (its first slot): its low 3 bits left out, so that a key and its
    /// tagged forms (`insert_tagged`) share one. `len` is a power of two.
    #[inline]
    fn bucket(key: u64, len: usize) -> usize {
        (((key >> 3) as usize) & (len / WAYS - 1)) * WAYS
    }

    /// The slots of `key`'s bucket (the filter is allocated).
    #[inline]
    fn slots_of(&self, key: u64) -> &[u64] {
        let b = Self::bucket(key, self.slots.len());
        &self.slots[b..b + WAYS]
    }

    pub fn contains(&self, key: u64) -> bool {
        !self.slots.is_empty() && self.slots_of(key).contains(&key)
    }

    /// `insert` with a tag of 1..=7 in place of the key's low 3 bits (keys that differ only
    /// there are one key to a tagged filter; the ids are 64-bit hashes): `tag` tells it back.
    pub fn insert_tagged(&mut self, key: u64, tag: u8) {
        self.replace_tagged(key, tag);
    }

    /// `insert_tagged`, returning the tag `key` had before (what `tag` answered): one look at
    /// the bucket where a refusal took two.
    pub fn replace_tagged(&mut self, key: u64, tag: u8) -> Option<u8> {
        debug_assert!((1..=7).contains(&tag));
        self.put((key & !7) | u64::from(tag & 7))
    }

    /// The tag `key` was inserted with, while the filter holds it.
    pub fn tag(&self, key: u64) -> Option<u8> {
        if self.slots.is_empty() {
            return None;
        }
        self.slots_of(key)
            .iter()
            .find(|&&k| k & 7 != 0 && k & !7 == key & !7)
            .map(|&k| (k & 7) as u8)
    }

    /// `key` must be nonzero (0 is the empty slot).
    pub fn insert(&mut self, key: u64) {
        self.put(key);
    }

    /// `insert`, returning what `tag` answered before it. One scan of the bucket, which
    /// stops at the first empty slot: slots fill in order and empty only all at once
    /// (`clear`, growth), so a bucket's keys are a prefix of it. (The scans this replaces,
    /// `tag`'s and then three of `insert`'s, were ~130 instructions a refused series.)
    fn put(&mut self, key: u64) -> Option<u8> {
        let len = self.slots.len();
        if len > 0 {
            let b = Self::bucket(key, len);
            let bucket = &mut self.slots[b..b + WAYS];
            let mut empty = None;
            for i in 0..WAYS {
                let k = bucket[i];
                // The key, or its other tagged form: replaced in place.
                if k & !7 == key & !7 {
                    let was = if k & 7 != 0 {
                        Some((k & 7) as u8)
                    } else {
                        // A slot without tag bits (an untagged key; an empty slot, for a key
                        // below 8): `tag` looks on.
                        bucket[i + 1..]
                            .iter()
                            .find(|&&k| k & 7 != 0 && k & !7 == key & !7)
                            .map(|&k| (k & 7) as u8)
                    };
                    bucket[i] = key;
                    return was;
                }
                if k == 0 {
                    empty = Some(i);
                    break;
                }
            }
            let Some(i) = empty else {
                // Full: a slot picked by the key's bits (see `place`).
                bucket[(key >> 40) as usize % WAYS] = key;
                return None;
            };
            self.inserted += 1;
            if !(self.inserted > len / 2 && len < self.max) {
                bucket[i] = key;
                return None;
            }
        } else {
            self.inserted += 1;
        }
        let new = if len == 0 {
            self.min
        } else {
            (len * 4).min(self.max)
        };
        let old = std::mem::replace(&mut self.slots, vec![0u64; new].into_boxed_slice());
        for &k in old.iter().filter(|k| **k != 0) {
            self.place(k);
        }
        self.place(key);
        None
    }

    /// Put `key` (not in the filter) into its bucket: an empty slot, else the slot its bits
    /// pick.
    fn place(&mut self, key: u64) {
        let b = Self::bucket(key, self.slots.len());
        let bucket = &mut self.slots[b..b + WAYS];
        match bucket.iter_mut().find(|k| **k == 0) {
            Some(k) => *k = key,
            None => bucket[(key >> 40) as usize % WAYS] = key,
        }
    }

    /// Forget every key (a new slice), keeping the size reached.
    pub fn clear(&mut self) {
        if self.inserted > 0 {
            self.slots.fill(0);
        }
        self.inserted = 0;
    }

    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::sketch::{DEMAND_PRECISION, OFFENDER_PRECISION};
    use xxhash_rust::xxh3::xxh3_64;

    fn id(i: u64) -> u64 {
        xxh3_64(&i.to_le_bytes())
    }

    /// One body for both representations: below `EXACT_MAX` the count is exact, above it the
    /// sketches' (within 2% at these sizes); repeats never count twice.
    #[test]
    fn counts_distinct_ids_exactly_then_by_sketch() {
        for n in [1u64, 5, 31, 32, 33, 100, 5_000] {
            let mut r = SketchRing::new(6, DEMAND_PRECISION);
            for round in 0..2 {
                for i in 0..n {
                    r.insert(10 + round, id(i));
                }
            }
            let est = r.estimate();
            if n as usize <= EXACT_MAX {
                assert_eq!(est, n as f64, "n={n}");
            } else {
                assert!((est - n as f64).abs() / n as f64 <= 0.02, "n={n}: {est}");
            }
        }
    }

    #[test]
    fn ids_leave_a_window_after_their_last_slice() {
        for n in [3u64, 300] {
            let mut r = SketchRing::new(3, OFFENDER_PRECISION);
            for i in 0..n {
                r.insert(10, id(i));
            }
            // The first id comes again a slice later: it outlives the others by one slice.
            r.insert(11, id(0));
            r.clear_slot(12);
            assert!(r.estimate() >= n as f64 * 0.9, "n={n}");
            r.clear_slot(13);
            if n == 3 {
                assert_eq!(r.estimate(), 1.0);
            }
            r.clear_slot(14);
            assert_eq!(r.estimate(), 0.0, "n={n}");
            assert!(r.is_empty());
            assert_eq!(r.memory_bytes(), 0, "an emptied ring frees its memory");
        }
    }

    /// A ring of one id holds it inline; a second id makes a list, and the slide of the
    /// window takes it back to one id inline, then to none.
    #[test]
    fn a_ring_of_one_id_holds_it_inline_through_the_window() {
        let mut r = SketchRing::new(3, OFFENDER_PRECISION);
        r.insert(10, id(1));
        r.insert(10, id(1));
        assert!(matches!(r.slots, Slots::One(k, 10) if k == id(1)));
        assert_eq!((r.estimate(), r.memory_bytes()), (1.0, 0));
        let slices = r.to_slices();
        assert!(slices[10 % 3].is_some());
        assert_eq!(slices.iter().flatten().count(), 1);
        r.insert(11, id(1));
        r.insert(11, id(2));
        assert!(matches!(&r.slots, Slots::Exact(ids) if ids.len() == 2));
        assert_eq!(r.estimate(), 2.0);
        r.insert(12, id(2));
        // id(1) came last in slice 11: it leaves with slice 14's arrival, id(2) stays.
        r.clear_slot(14);
        assert!(matches!(r.slots, Slots::One(k, 12) if k == id(2)));
        assert_eq!((r.estimate(), r.memory_bytes()), (1.0, 0));
        r.clear_slot(15);
        assert!(r.is_empty());
        assert_eq!(r.estimate(), 0.0);
        r.insert(16, id(3));
        assert!(matches!(r.slots, Slots::One(k, 16) if k == id(3)));
    }

    #[test]
    fn a_small_ring_stays_small() {
        let mut r = SketchRing::new(6, DEMAND_PRECISION);
        for i in 0..10 {
            r.insert(1, id(i));
        }
        assert!(r.memory_bytes() <= 16 * 16, "{}", r.memory_bytes());
    }

    #[test]
    fn filter_grows_with_the_keys_of_a_slice_and_keeps_them() {
        let mut f = SeenFilter::new(8, 1024);
        assert_eq!(f.memory_bytes(), 0);
        assert!(!f.contains(7));
        f.insert(7);
        assert!(f.contains(7));
        assert_eq!(f.memory_bytes(), 64);
        // Repeats are not new keys.
        for _ in 0..100 {
            f.insert(7);
        }
        assert_eq!(f.memory_bytes(), 64);
        for k in 1..=600u64 {
            f.insert(id(k) | 1);
        }
        assert_eq!(f.memory_bytes(), 1024 * 8);
        assert!(f.contains(id(600) | 1));
        f.clear();
        assert!(!f.contains(id(600) | 1));
        assert_eq!(f.memory_bytes(), 1024 * 8, "the size reached is kept");
    }

    /// More keys than a bucket holds, coming back in turn, are that many keys, not one per
    /// insert: the filter keeps its size.
    #[test]
    fn colliding_keys_coming_back_do_not_grow_the_filter() {
        let mut f = SeenFilter::new(16, 1024);
        // Twelve keys of the second of the two buckets.
        let keys: Vec<u64> = (0..12u64).map(|j| ((1 + 2 * j) << 3) | 1).collect();
        for _ in 0..50 {
            for &k in &keys {
                f.insert(k);
                assert!(f.contains(k));
            }
        }
        assert_eq!(f.memory_bytes(), 16 * 8);
        // Distinct keys still grow it.
        for k in 1..=20u64 {
            f.insert(id(k) | 1);
        }
        assert!(f.memory_bytes() > 16 * 8);
    }

    /// The refused series of an exploding owner come back every request, as many as fill
    /// three quarters of the filter: nearly all of them are still there the next time.
    #[test]
    fn keys_coming_back_stay_at_three_quarters_load() {
        let mut f = SeenFilter::new(64, 4096);
        let keys: Vec<u64> = (1..=3000u64).map(|k| id(k) | 1).collect();
        for _ in 0..3 {
            for &k in &keys {
                if !f.contains(k) {
                    f.insert(k);
                }
            }
        }
        assert_eq!(f.memory_bytes(), 4096 * 8);
        let kept = keys.iter().filter(|&&k| f.contains(k)).count();
        assert!(kept * 100 >= keys.len() * 85, "{kept} of {}", keys.len());
    }

    /// The insert `put` replaced, three scans of the bucket: the reference it must match.
    fn insert_by_scans(f: &mut SeenFilter, key: u64) {
        let len = f.slots.len();
        if len > 0 {
            let b = SeenFilter::bucket(key, len);
            let bucket = &mut f.slots[b..b + WAYS];
            if let Some(k) = bucket.iter_mut().find(|k| **k & !7 == key & !7) {
                *k = key;
                return;
            }
            if bucket.contains(&0) {
                f.inserted += 1;
            }
        } else {
            f.inserted += 1;
        }
        if len == 0 || (f.inserted > len / 2 && len < f.max) {
            let new = if len == 0 {
                f.min
            } else {
                (len * 4).min(f.max)
            };
            let old = std::mem::replace(&mut f.slots, vec![0u64; new].into_boxed_slice());
            for &k in old.iter().filter(|k| **k != 0) {
                f.place(k);
            }
        }
        f.place(key);
    }

    /// `replace_tagged` answers what `tag` answered before it, and leaves the filter as the
    /// three-scan insert did, through growth, full buckets, new tags and untagged keys.
    #[test]
    fn replace_tagged_answers_the_tag_before_it_and_inserts_as_before() {
        let (mut a, mut b) = (SeenFilter::new(8, 512), SeenFilter::new(8, 512));
        for round in 0..3u64 {
            for k in 1..=700u64 {
                let key = id(k % 350 + round);
                if k % 7 == 0 {
                    a.insert(key | 1);
                    insert_by_scans(&mut b, key | 1);
                } else {
                    let tag = 1 + ((k + round) % 4) as u8;
                    let before = a.tag(key);
                    assert_eq!(a.replace_tagged(key, tag), before, "k={k} round={round}");
                    insert_by_scans(&mut b, (key & !7) | u64::from(tag));
                }
                assert_eq!(a.slots, b.slots, "k={k} round={round}");
                assert_eq!(a.inserted, b.inserted);
            }
        }
        for k in 1..=20u64 {
            a.insert(k);
            insert_by_scans(&mut b, k);
            assert_eq!(a.slots, b.slots, "small key {k}");
        }
    }

    #[test]
    fn a_tagged_filter_tells_the_tag_back_through_growth() {
        let mut f = SeenFilter::new(8, 1024);
        assert_eq!(f.tag(id(1)), None);
        f.insert_tagged(id(1), 3);
        assert_eq!(f.tag(id(1)), Some(3));
        // The key's own low bits do not matter; a new tag replaces the old one.
        assert_eq!(f.tag(id(1) ^ 5), Some(3));
        f.insert_tagged(id(1), 2);
        assert_eq!(f.tag(id(1)), Some(2));
        for k in 2..=300u64 {
            f.insert_tagged(id(k), 1 + (k % 4) as u8);
        }
        assert_eq!(f.tag(id(300)), Some(1 + (300 % 4) as u8));
        f.clear();
        assert_eq!(f.tag(id(300)), None);
    }
}
