//! The registry's table of owners by hash: open addressing with linear probing, one 16-byte
//! slot (hash, owner) per entry, the slot of a hash computable before it is read.
//!
//! With many small owners a request looks up a thousand of them, each cold. A `HashMap`'s
//! lookup reads its control bytes, then the bucket they point at, then the owner: three misses
//! in turn, none of which can be asked for before the one it depends on arrived. Here the
//! slot of every owner of a request can be prefetched first (`prefetch`), then each read
//! where it already is; the hashes are seeded `xxh3` of the owner values, so the low bits
//! alone spread them.

use std::sync::Arc;

use super::prefetch;

/// The table grows past three quarters full: probe runs stay a slot or two, and 10,000
/// owners take 16,384 slots (256 KiB, 26 bytes an owner).
const MAX_LOAD: (usize, usize) = (3, 4);
const MIN_SLOTS: usize = 16;

/// Entries by their (unique) 64-bit hash.
pub struct Slots<T> {
    /// A power of two long (or empty).
    slots: Vec<Option<(u64, Arc<T>)>>,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slots<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Start loading the slot where a lookup of `h` begins.
    #[inline]
    pub fn prefetch(&self, h: u64) {
        if let Some(s) = self.slots.get(h as usize & self.mask()) {
            prefetch::read(s);
        }
    }

    /// The entry of hash `h`.
    #[inline]
    pub fn get(&self, h: u64) -> Option<&Arc<T>> {
        self.find(h).map(|(_, v)| v)
    }

    /// The slot holding hash `h`, and its entry.
    #[inline]
    fn find(&self, h: u64) -> Option<(usize, &Arc<T>)> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = h as usize & mask;
        // The table is never full (`MAX_LOAD`): every probe ends at an empty slot.
        loop {
            match &self.slots[i] {
                Some((k, v)) if *k == h => return Some((i, v)),
                Some(_) => i = (i + 1) & mask,
                None => return None,
            }
        }
    }

    /// Put `v` under `h`; when `h` is taken, `v` is handed back and the table is unchanged.
    pub fn insert(&mut self, h: u64, v: Arc<T>) -> Result<(), Arc<T>> {
        if self.get(h).is_some() {
            return Err(v);
        }
        if (self.len + 1) * MAX_LOAD.1 > self.slots.len() * MAX_LOAD.0 {
            self.grow();
        }
        self.place(h, v);
        self.len += 1;
        Ok(())
    }

    /// Put an entry whose hash is not in the table, with room for it.
    fn place(&mut self, h: u64, v: Arc<T>) {
        let mask = self.mask();
        let mut i = h as usize & mask;
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some((h, v));
    }

    fn grow(&mut self) {
        self.resize((self.slots.len() * 2).max(MIN_SLOTS));
    }

    fn resize(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.slots, (0..n).map(|_| None).collect());
        for (h, v) in old.into_iter().flatten() {
            self.place(h, v);
        }
    }

    /// Take out the entry of hash `h`. The entries after it in its run move back to where a
    /// lookup finds them without it (no tombstones: a table that owners come into and leave
    /// all day does not fill with them), and a table a quarter as full as it could be shrinks.
    pub fn remove(&mut self, h: u64) -> Option<Arc<T>> {
        let (i, _) = self.find(h)?;
        let mask = self.mask();
        let (_, removed) = self.slots[i].take()?;
        self.len -= 1;
        // Backward shift: an entry further on may move into the hole when its home slot is
        // not between the hole and itself (cyclically), or a lookup from its home would stop
        // at the hole.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while let Some((k, _)) = &self.slots[j] {
            let home = *k as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
            j = (j + 1) & mask;
        }
        if self.slots.len() > MIN_SLOTS && self.len * MAX_LOAD.1 * 4 < self.slots.len() * MAX_LOAD.0
        {
            self.resize((self.slots.len() / 2).max(MIN_SLOTS));
        }
        Some(removed)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<T>> {
        self.slots.iter().flatten().map(|(_, v)| v)
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
        Remove(u64),
    }

    /// Hashes from a small range, so that runs collide, wrap around the end and get removed
    /// from the middle.
    fn op() -> impl Strategy<Value = Op> {
        let h = prop_oneof![0u64..64, any::<u64>()];
        prop_oneof![h.clone().prop_map(Op::Insert), h.prop_map(Op::Remove)]
    }

    proptest! {
        /// Every sequence of inserts and removes leaves the table answering as a map does.
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec(op(), 0..400)) {
            let mut t = Slots::<u64>::default();
            let mut m = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(h) => {
                        let v = Arc::new(h ^ 0xabc);
                        let got = t.insert(h, v.clone()).is_ok();
                        let want = !m.contains_key(&h);
                        if want {
                            m.insert(h, v);
                        }
                        prop_assert_eq!(got, want);
                    }
                    Op::Remove(h) => {
                        prop_assert_eq!(t.remove(h).map(|v| *v), m.remove(&h).map(|v| *v));
                    }
                }
                prop_assert_eq!(t.len(), m.len());
                for (h, v) in &m {
                    prop_assert_eq!(t.get(*h).map(|v| **v), Some(**v));
                }
                prop_assert_eq!(t.values().count(), m.len());
            }
            for h in 0..64 {
                prop_assert_eq!(t.get(h).is_some(), m.contains_key(&h));
            }
        }
    }

    #[test]
    fn grows_and_shrinks_back() {
        let mut t = Slots::<u64>::default();
        for h in 0..10_000u64 {
            t.insert(h.wrapping_mul(0x9e37_79b9_7f4a_7c15), Arc::new(h))
                .unwrap();
        }
        assert_eq!(t.slots.len(), 16_384);
        for h in 0..9_990u64 {
            assert_eq!(
                t.remove(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)).map(|v| *v),
                Some(h)
            );
        }
        assert!(
            t.slots.len() <= 64,
            "{} slots for 10 entries",
            t.slots.len()
        );
        for h in 9_990..10_000u64 {
            assert_eq!(
                t.get(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)).map(|v| **v),
                Some(h)
            );
        }
    }
}
