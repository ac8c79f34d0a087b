//! Open addressing with linear probing over keys that are already hashes (their low bits pick
//! the slot): the one scheme behind the guard's owner registry (`guard::slots`) and the rules
//! buffers' shards (`rules::buffer::table`).
//!
//! Where a lookup starts is an address computable before the table is read, so a request can
//! ask for the slots of all its keys first and read each where it already is; a `HashMap`
//! lookup waits for its control bytes, then for the bucket they point at. Entries are taken out
//! by shifting the ones after them back (no tombstones), so a table that entries come into and
//! leave all day does not fill with dead slots.

/// A slot's layout: a bare `Option<(u64, V)>` (16 bytes for an `Arc`), or one aligned to cache
/// lines so that a value inline in it is read in the lines its slot starts.
pub trait Slot: Default {
    type Value;
    fn entry(&self) -> &Option<(u64, Self::Value)>;
    fn entry_mut(&mut self) -> &mut Option<(u64, Self::Value)>;
}

impl<V> Slot for Option<(u64, V)> {
    type Value = V;
    #[inline(always)]
    fn entry(&self) -> &Option<(u64, V)> {
        self
    }
    #[inline(always)]
    fn entry_mut(&mut self) -> &mut Option<(u64, V)> {
        self
    }
}

/// Slots a power of two long (or none), never more than `NUM`/`DEN` full, so that every probe
/// ends at an empty slot.
pub struct Probing<S, const NUM: usize, const DEN: usize> {
    slots: Vec<S>,
    len: usize,
}

impl<S, const NUM: usize, const DEN: usize> Default for Probing<S, NUM, DEN> {
    fn default() -> Self {
        Probing {
            slots: Vec::new(),
            len: 0,
        }
    }
}

const MIN_SLOTS: usize = 16;

impl<S: Slot, const NUM: usize, const DEN: usize> Probing<S, NUM, DEN> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot index a lookup of key `k` starts at is `k & mask`.
    #[inline]
    pub fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Where the slots are (0 when there are none): for lookups' prefetches made without the
    /// table at hand.
    pub fn base_address(&self) -> usize {
        if self.slots.is_empty() {
            0
        } else {
            self.slots.as_ptr() as usize
        }
    }

    /// The slot where a lookup of `key` starts, to prefetch.
    #[inline]
    pub fn home(&self, key: u64) -> Option<&S> {
        self.slots.get(key as usize & self.mask())
    }

    /// The slot holding `key`.
    #[inline]
    pub fn find(&self, key: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = key as usize & mask;
        loop {
            match self.slots[i].entry() {
                Some((k, _)) if *k == key => return Some(i),
                Some(_) => i = (i + 1) & mask,
                None => return None,
            }
        }
    }

    #[inline]
    pub fn get(&self, key: u64) -> Option<&S::Value> {
        let i = self.find(key)?;
        self.slots[i].entry().as_ref().map(|(_, v)| v)
    }

    #[inline]
    pub fn get_mut(&mut self, key: u64) -> Option<&mut S::Value> {
        let i = self.find(key)?;
        self.slots[i].entry_mut().as_mut().map(|(_, v)| v)
    }

    /// Put `v` under `key`, which is not in the table; the value in place, and whether the
    /// slots moved to make room.
    pub fn insert_new(&mut self, key: u64, v: S::Value) -> (&mut S::Value, bool) {
        debug_assert!(self.find(key).is_none());
        let moved = self.reserve_one();
        self.len += 1;
        let i = self.vacant(key);
        let (_, v) = self.slots[i].entry_mut().insert((key, v));
        (v, moved)
    }

    /// Make room for one more entry; returns whether the slots moved for it.
    pub fn reserve_one(&mut self) -> bool {
        let grow = (self.len + 1) * DEN > self.slots.len() * NUM;
        if grow {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
        }
        grow
    }

    /// The first empty slot of `key`'s probe run.
    fn vacant(&self, key: u64) -> usize {
        let mask = self.mask();
        let mut i = key as usize & mask;
        while self.slots[i].entry().is_some() {
            i = (i + 1) & mask;
        }
        i
    }

    /// Take out the entry of `key`. The entries after it in its run move back to where a
    /// lookup finds them without it.
    pub fn remove(&mut self, key: u64) -> Option<S::Value> {
        let mut hole = self.find(key)?;
        let (_, removed) = self.slots[hole].entry_mut().take()?;
        self.len -= 1;
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some((k, _)) = self.slots[j].entry() else {
                return Some(removed);
            };
            // The entry at `j` may fill the hole when the hole lies on its probe run: between
            // its home slot and `j`, going round. Otherwise a lookup from its home would stop
            // at the hole.
            let home = *k as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                let moved = self.slots[j].entry_mut().take();
                *self.slots[hole].entry_mut() = moved;
                hole = j;
            }
        }
    }

    /// Keep the values `keep` says to. Returns whether the slots moved (`shrink`).
    pub fn retain(&mut self, mut keep: impl FnMut(&mut S::Value) -> bool) -> bool {
        let gone: Vec<u64> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.entry_mut().as_mut())
            .filter_map(|(k, v)| (!keep(v)).then_some(*k))
            .collect();
        for k in gone {
            self.remove(k);
        }
        self.shrink()
    }

    /// Once a quarter as full as it may be, the table moves to the smallest size at most half
    /// that full (none when empty), so that a burst of entries does not hold its slots for
    /// good. Returns whether the slots moved.
    pub fn shrink(&mut self) -> bool {
        if self.slots.len() <= MIN_SLOTS || self.len * DEN * 4 >= self.slots.len() * NUM {
            return false;
        }
        let mut n = MIN_SLOTS;
        while self.len * DEN * 2 > n * NUM {
            n *= 2;
        }
        self.resize(if self.len == 0 { 0 } else { n });
        true
    }

    fn resize(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.slots, (0..n).map(|_| S::default()).collect());
        for mut s in old {
            if let Some((k, v)) = s.entry_mut().take() {
                let i = self.vacant(k);
                *self.slots[i].entry_mut() = Some((k, v));
            }
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &S::Value> {
        self.slots
            .iter()
            .filter_map(|s| s.entry().as_ref().map(|(_, v)| v))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut S::Value> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.entry_mut().as_mut().map(|(_, v)| v))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Get(u64),
        Remove(u64),
        Retain(u64),
    }

    /// Keys from a small range with few distinct low bits, so that runs collide, wrap around
    /// the end and lose entries from their middle.
    fn op() -> impl Strategy<Value = Op> {
        let key = prop_oneof![
            (0u64..64).prop_map(|k| k.wrapping_mul(0x9e37_79b9_0000_0000) | (k % 5)),
            0u64..64,
            any::<u64>(),
        ];
        prop_oneof![
            4 => key.clone().prop_map(Op::Insert),
            3 => key.clone().prop_map(Op::Get),
            2 => key.prop_map(Op::Remove),
            1 => (0u64..4).prop_map(Op::Retain),
        ]
    }

    fn check<S: Slot<Value = u64>, const NUM: usize, const DEN: usize>(
        ops: Vec<Op>,
    ) -> Result<(), TestCaseError> {
        let mut t = Probing::<S, NUM, DEN>::default();
        let mut m = HashMap::new();
        let mut n = 0u64;
        for o in ops {
            match o {
                Op::Insert(k) => {
                    n += 1;
                    match t.get_mut(k) {
                        Some(v) => *v = n,
                        None => {
                            t.insert_new(k, n);
                        }
                    }
                    m.insert(k, n);
                }
                Op::Get(k) => prop_assert_eq!(t.get(k).copied(), m.get(&k).copied()),
                Op::Remove(k) => {
                    prop_assert_eq!(t.remove(k), m.remove(&k));
                    t.shrink();
                }
                Op::Retain(r) => {
                    t.retain(|v| *v % 4 != r);
                    m.retain(|_, v| *v % 4 != r);
                }
            }
            prop_assert_eq!(t.len(), m.len());
            prop_assert!(t.len() * DEN <= t.capacity() * NUM || t.len() == 0);
            for (k, v) in &m {
                prop_assert_eq!(t.get(*k), Some(v));
            }
        }
        let mut a: Vec<u64> = t.values().copied().collect();
        let mut b: Vec<u64> = m.values().copied().collect();
        a.sort_unstable();
        b.sort_unstable();
        prop_assert_eq!(a, b);
        Ok(())
    }

    #[derive(Default)]
    #[repr(align(64))]
    struct Aligned(Option<(u64, u64)>);

    impl Slot for Aligned {
        type Value = u64;
        fn entry(&self) -> &Option<(u64, u64)> {
            &self.0
        }
        fn entry_mut(&mut self) -> &mut Option<(u64, u64)> {
            &mut self.0
        }
    }

    proptest! {
        /// Every sequence of inserts, lookups, removes and retains leaves the table answering
        /// as a map does, at both load factors and both layouts in use.
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec(op(), 0..400)) {
            check::<Option<(u64, u64)>, 3, 4>(ops.clone())?;
            check::<Aligned, 1, 2>(ops)?;
        }
    }

    #[test]
    fn grows_and_shrinks_back() {
        let mut t = Probing::<Option<(u64, u64)>, 3, 4>::default();
        let key = |h: u64| h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for h in 0..10_000u64 {
            t.insert_new(key(h), h);
        }
        assert_eq!(t.capacity(), 16_384);
        for h in 0..9_990u64 {
            assert_eq!(t.remove(key(h)), Some(h));
            t.shrink();
        }
        assert!(t.capacity() <= 64, "{} slots for 10 entries", t.capacity());
        for h in 9_990..10_000u64 {
            assert_eq!(t.get(key(h)), Some(&h));
        }
        for h in 9_990..10_000u64 {
            t.remove(key(h));
            t.shrink();
        }
        assert_eq!(t.len(), 0);
        assert!(t.capacity() <= MIN_SLOTS);
    }
}
