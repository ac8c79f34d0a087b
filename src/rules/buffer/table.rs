//! A shard's series by key hash: open addressing with linear probing, each value inline in a
//! slot of two cache lines, so that where a key's lookup starts is an address computable
//! before the shard is locked (`Table::at`).
//!
//! A request appends to a few hundred buffered series, each cold. With a `HashMap` each
//! append waited for the control bytes, then the entry, one after the other; here the tap
//! asks for every series' slot across the request first (`Hint`), then appends to each where
//! it already is.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

/// At most half full: a lookup probes 1.5 slots on average, mostly the prefetched one.
const MAX_LOAD: (usize, usize) = (1, 2);
const MIN_SLOTS: usize = 16;

#[repr(align(64))]
struct Slot<V>(Option<(u64, V)>);

/// Values by their 64-bit key (already a hash: its low bits pick the slot).
pub struct Table<V> {
    /// A power of two long (or empty).
    slots: Vec<Slot<V>>,
    len: usize,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            len: 0,
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
        self.len
    }

    /// Slots allocated (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Bytes of one slot.
    pub const fn slot_bytes() -> usize {
        std::mem::size_of::<Slot<V>>()
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Where the slots are now, to `hint`.
    fn publish(&self, hint: &Hint<V>) {
        let base = if self.slots.is_empty() {
            0
        } else {
            self.slots.as_ptr() as usize
        };
        hint.base.store(base, Ordering::Relaxed);
        hint.mask.store(self.mask(), Ordering::Relaxed);
    }

    fn find(&self, key: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = key as usize & mask;
        // Never full (`MAX_LOAD`): every probe ends at an empty slot.
        loop {
            match &self.slots[i].0 {
                Some((k, _)) if *k == key => return Some(i),
                Some(_) => i = (i + 1) & mask,
                None => return None,
            }
        }
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        let i = self.find(key)?;
        self.slots[i].0.as_mut().map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: u64) -> bool {
        self.find(key).is_some()
    }

    /// Insert `v` under `key`, which is not in the table; returns it in place. `hint` hears
    /// of the slots when they move.
    pub fn insert_new(&mut self, key: u64, v: V, hint: &Hint<V>) -> &mut V {
        debug_assert!(!self.contains_key(key));
        if (self.len + 1) * MAX_LOAD.1 > self.slots.len() * MAX_LOAD.0 {
            self.rebuild((self.slots.len() * 2).max(MIN_SLOTS));
            self.publish(hint);
        }
        let mask = self.mask();
        let mut i = key as usize & mask;
        while self.slots[i].0.is_some() {
            i = (i + 1) & mask;
        }
        self.len += 1;
        let slot = self.slots[i].0.insert((key, v));
        &mut slot.1
    }

    /// Keep the values `f` says to; the rest are dropped. `hint` hears of the slots when
    /// they move (when the table shrinks).
    pub fn retain(&mut self, mut f: impl FnMut(&mut V) -> bool, hint: &Hint<V>) {
        let mut gone = Vec::new();
        for (k, v) in self.slots.iter_mut().filter_map(|s| s.0.as_mut()) {
            if !f(v) {
                gone.push(*k);
            }
        }
        for k in gone {
            if let Some(i) = self.find(k) {
                self.remove_at(i);
            }
        }
        // Shrunk once mostly empty, so that a burst of series does not hold its slots for
        // good.
        if self.slots.len() > MIN_SLOTS && self.len * MAX_LOAD.1 * 4 < self.slots.len() * MAX_LOAD.0
        {
            let mut n = MIN_SLOTS;
            while self.len * MAX_LOAD.1 * 2 > n * MAX_LOAD.0 {
                n *= 2;
            }
            self.rebuild(if self.len == 0 { 0 } else { n });
            self.publish(hint);
        }
    }

    /// Empty slot `i`, moving back the entries after it that probed past it, so that every
    /// probe run stays unbroken (no tombstones).
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.mask();
        self.slots[i].0 = None;
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let Some((k, _)) = &self.slots[j].0 else {
                return;
            };
            // The entry at `j` may fill `i` when `i` lies on its probe run: between its home
            // slot and `j`, going round.
            let home = *k as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(i) & mask {
                self.slots[i].0 = self.slots[j].0.take();
                i = j;
            }
        }
    }

    fn rebuild(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, (0..slots).map(|_| Slot(None)).collect());
        let mask = self.mask();
        for (k, v) in old.into_iter().filter_map(|s| s.0) {
            let mut i = k as usize & mask;
            while self.slots[i].0.is_some() {
                i = (i + 1) & mask;
            }
            self.slots[i].0 = Some((k, v));
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots
            .iter()
            .filter_map(|s| s.0.as_ref().map(|(_, v)| v))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.0.as_mut().map(|(_, v)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Get(u64),
        Retain(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct low bits, so that probe runs collide and wrap.
        let key = (0u64..64).prop_map(|k| k.wrapping_mul(0x9e37_79b9_0000_0000) | (k % 5));
        prop_oneof![
            4 => key.clone().prop_map(Op::Insert),
            3 => key.prop_map(Op::Get),
            1 => (0u64..4).prop_map(Op::Retain),
        ]
    }

    proptest! {
        #[test]
        fn the_table_agrees_with_a_hashmap(ops in proptest::collection::vec(op(), 0..300)) {
            let mut t = Table::default();
            let h = Hint::default();
            let mut m = HashMap::new();
            let mut n = 0u64;
            for o in ops {
                match o {
                    Op::Insert(k) => {
                        n += 1;
                        if let Some(v) = t.get_mut(k) {
                            *v = n;
                        } else {
                            t.insert_new(k, n, &h);
                        }
                        m.insert(k, n);
                    }
                    Op::Get(k) => prop_assert_eq!(t.get_mut(k).copied(), m.get(&k).copied()),
                    Op::Retain(r) => {
                        t.retain(|v| *v % 4 != r, &h);
                        m.retain(|_, v| *v % 4 != r);
                    }
                }
                prop_assert_eq!(t.len(), m.len());
                prop_assert!(t.len() * MAX_LOAD.1 <= t.capacity() * MAX_LOAD.0 || t.len() == 0);
                let published = h.base.load(Ordering::Relaxed);
                prop_assert_eq!(published, if t.capacity() == 0 { 0 } else { t.slots.as_ptr() as usize });
            }
            let mut a: Vec<u64> = t.values().copied().collect();
            let mut b: Vec<u64> = m.values().copied().collect();
            a.sort_unstable();
            b.sort_unstable();
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn a_published_hint_points_at_the_slots() {
        let mut t = Table::default();
        let h = Hint::default();
        h.prefetch(1); // nothing published: nothing asked
        t.insert_new(7, [0u8; 112], &h);
        assert_eq!(h.base.load(Ordering::Relaxed), t.slots.as_ptr() as usize);
        assert_eq!(h.mask.load(Ordering::Relaxed), MIN_SLOTS - 1);
        h.prefetch(7);
    }
}
