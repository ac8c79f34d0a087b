//! A shard's series by key hash (`crate::probing`), each value inline in a slot of two cache
//! lines, with where a key's lookup starts published for readers that do not hold the shard's
//! lock (`Hint`).
//!
//! A request appends to a few hundred buffered series, each cold. With a `HashMap` each
//! append waited for the control bytes, then the entry, one after the other; here the tap
//! asks for every series' slot across the request first (`Hint`), then appends to each where
//! it already is.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::probing::{self, Probing};

/// Two cache lines, the value inline.
#[repr(align(64))]
struct Slot<V>(Option<(u64, V)>);

impl<V> Default for Slot<V> {
    fn default() -> Self {
        Slot(None)
    }
}

impl<V> probing::Slot for Slot<V> {
    type Value = V;
    #[inline(always)]
    fn entry(&self) -> &Option<(u64, V)> {
        &self.0
    }
    #[inline(always)]
    fn entry_mut(&mut self) -> &mut Option<(u64, V)> {
        &mut self.0
    }
}

/// Values by their 64-bit key (already a hash: its low bits pick the slot). At most half
/// full: a lookup probes 1.5 slots on average, mostly the prefetched one.
pub struct Table<V> {
    slots: Probing<Slot<V>, 1, 2>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            slots: Probing::default(),
        }
    }
}

/// Where a table's slots are, published by the table (under its owner's lock) whenever they
/// move, and read without the lock only to prefetch: a stale address costs a useless
/// prefetch, never a wrong answer.
pub struct Hint<V> {
    base: AtomicUsize,
    mask: AtomicUsize,
    _v: PhantomData<fn() -> V>,
}

impl<V> Default for Hint<V> {
    fn default() -> Self {
        Hint {
            base: AtomicUsize::new(0),
            mask: AtomicUsize::new(0),
            _v: PhantomData,
        }
    }
}

impl<V> Hint<V> {
    /// Start loading the slot where a lookup of `key` begins: its first two lines.
    #[inline]
    pub fn prefetch(&self, key: u64) {
        let base = self.base.load(Ordering::Relaxed);
        if base == 0 {
            return;
        }
        let i = key as usize & self.mask.load(Ordering::Relaxed);
        let at = base.wrapping_add(i.wrapping_mul(std::mem::size_of::<Slot<V>>()));
        crate::guard::prefetch::read_address(at);
        crate::guard::prefetch::read_address(at.wrapping_add(64));
    }
}

impl<V> Table<V> {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Slots allocated (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Bytes of one slot.
    pub const fn slot_bytes() -> usize {
        std::mem::size_of::<Slot<V>>()
    }

    /// Where the slots are now, to `hint`.
    fn publish(&self, hint: &Hint<V>) {
        hint.base
            .store(self.slots.base_address(), Ordering::Relaxed);
        hint.mask.store(self.slots.mask(), Ordering::Relaxed);
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        self.slots.get_mut(key)
    }

    pub fn contains_key(&self, key: u64) -> bool {
        self.slots.find(key).is_some()
    }

    /// Insert `v` under `key`, which is not in the table; returns it in place. `hint` hears
    /// of the slots when they move.
    pub fn insert_new(&mut self, key: u64, v: V, hint: &Hint<V>) -> &mut V {
        if self.slots.reserve_one() {
            self.publish(hint);
        }
        self.slots.insert_new(key, v).0
    }

    /// Keep the values `f` says to; the rest are dropped. `hint` hears of the slots when
    /// they move (when the table shrinks, so that a burst of series does not hold its slots
    /// for good).
    pub fn retain(&mut self, f: impl FnMut(&mut V) -> bool, hint: &Hint<V>) {
        if self.slots.retain(f) {
            self.publish(hint);
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.values()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots.values_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's own behaviour is tested in `probing`; here what this one adds: the hint
    /// follows the slots as they grow and shrink.
    #[test]
    fn a_published_hint_points_at_the_slots() {
        let mut t = Table::default();
        let h = Hint::default();
        let published = |h: &Hint<[u8; 112]>| {
            (
                h.base.load(Ordering::Relaxed),
                h.mask.load(Ordering::Relaxed),
            )
        };
        h.prefetch(1); // nothing published: nothing asked
        for k in 0..100u64 {
            t.insert_new(k, [k as u8; 112], &h);
            assert_eq!(published(&h), (t.slots.base_address(), t.slots.mask()));
        }
        assert_eq!(t.capacity(), 256);
        h.prefetch(7);
        t.retain(|v| v[0] < 3, &h);
        assert_eq!((t.len(), t.capacity()), (3, 16));
        assert_eq!(published(&h), (t.slots.base_address(), 15));
        assert_eq!(t.get_mut(2).map(|v| v[0]), Some(2));
        assert!(t.contains_key(0) && !t.contains_key(3));
    }
}
