//! The registry's table of owners by hash (`crate::probing`), one 16-byte slot (hash, owner)
//! per entry, the slot of a hash computable before it is read.
//!
//! With many small owners a request looks up a thousand of them, each cold. A `HashMap`'s
//! lookup reads its control bytes, then the bucket they point at, then the owner: three misses
//! in turn, none of which can be asked for before the one it depends on arrived. Here the
//! slot of every owner of a request can be prefetched first (`prefetch`), then each read
//! where it already is; the hashes are seeded `xxh3` of the owner values, so the low bits
//! alone spread them.

use std::sync::Arc;

use super::prefetch;
use crate::probing::Probing;

/// Entries by their (unique) 64-bit hash. The table grows past three quarters full: probe runs
/// stay a slot or two, and 10,000 owners take 16,384 slots (256 KiB, 26 bytes an owner).
pub struct Slots<T> {
    table: Probing<Option<(u64, Arc<T>)>, 3, 4>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            table: Probing::default(),
        }
    }
}

impl<T> Slots<T> {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Start loading the slot where a lookup of `h` begins.
    #[inline]
    pub fn prefetch(&self, h: u64) {
        if let Some(s) = self.table.home(h) {
            prefetch::read(s);
        }
    }

    /// The entry of hash `h`.
    #[inline]
    pub fn get(&self, h: u64) -> Option<&Arc<T>> {
        self.table.get(h)
    }

    /// Put `v` under `h`; when `h` is taken, `v` is handed back and the table is unchanged.
    pub fn insert(&mut self, h: u64, v: Arc<T>) -> Result<(), Arc<T>> {
        if self.table.find(h).is_some() {
            return Err(v);
        }
        self.table.insert_new(h, v);
        Ok(())
    }

    /// Take out the entry of hash `h`; a table a quarter as full as it could be shrinks.
    pub fn remove(&mut self, h: u64) -> Option<Arc<T>> {
        let removed = self.table.remove(h)?;
        self.table.shrink();
        Some(removed)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<T>> {
        self.table.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's own behaviour is tested in `probing`; here what the registry adds: a taken
    /// hash hands the value back, and removing owners gives their slots back.
    #[test]
    fn a_taken_hash_hands_the_value_back_and_removal_shrinks() {
        let mut t = Slots::<u64>::default();
        let key = |h: u64| h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for h in 0..1_000u64 {
            t.insert(key(h), Arc::new(h)).unwrap();
        }
        let back = t.insert(key(7), Arc::new(70)).unwrap_err();
        assert_eq!((*back, t.get(key(7)).map(|v| **v)), (70, Some(7)));
        assert_eq!(t.table.capacity(), 2_048);
        for h in 0..990u64 {
            assert_eq!(t.remove(key(h)).map(|v| *v), Some(h));
        }
        assert!(t.table.capacity() <= 64, "{} slots", t.table.capacity());
        assert_eq!(t.len(), 10);
        assert_eq!(t.values().count(), 10);
        assert!(t.remove(key(0)).is_none());
    }
}
