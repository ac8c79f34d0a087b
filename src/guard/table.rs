//! The exact admission table: the ids of the series one owner admitted, each with the 8-bit tag
//! of the window slice it was last seen in (see `window`).
//!
//! It is the guard's biggest memory cost (one entry per active series), so it is built for
//! size first: one `u64` per slot, no per-entry heap, no tombstones.
//!
//! - **Slot layout.** The id's high 56 bits, with the tag in the low byte; 0 means empty. Ids
//!   are xxh3 hashes, already well mixed, so they need no hashing of their own.
//! - **Identity is 56 bits.** Two series whose ids share their high 56 bits are one entry.
//!   Among `n` series that happens with probability about `n² / 2⁵⁷`: ~7e-6 at 1M series,
//!   ~7e-4 at 10M. The cost is benign: the newer series passes as already admitted (it is
//!   never the admitted series that gets dropped). Ids whose high 56 bits are all zero share
//!   [`ZERO_KEY`]'s identity, since a zero slot means empty: another 2⁻⁵⁶ event.
//! - **Home slot** by multiply-shift range reduction of the key (`key × capacity >> 64`), so
//!   the capacity need not be a power of two and can grow in small steps: 1.5× while a table
//!   is small (under [`FINE_GROWTH_FROM`] slots, 8 KiB), then 1.125×. At a max load of 0.85
//!   the load of a large table stays between 0.75 and 0.85, i.e. 9.4–10.6 bytes per series
//!   (1.5× steps would dip to 0.57 load, 14.1 bytes, and where in that range a given count lands
//!   is luck: 12.4 bytes for the 5000-series tables of the load harness's 1M, 12.1 for one
//!   table of 1M). The price is on the new-series path only: a resize copies every entry,
//!   about 9 times per entry amortized instead of 3, each a sequential write.
//! - **Linear probing in key order** (Robin Hood order with ties broken by key, Amble & Knuth's
//!   "ordered hash table"), with backward-shift deletion. Because the home slot is monotone in
//!   the key, every run of occupied slots is sorted by key, so:
//!   - a lookup of an absent id stops where the id would be, instead of at the end of the run
//!     (at 0.85 load plain linear probing averages ~20 probes per miss, and misses are the
//!     hot path of refused series);
//!   - [`SeriesTable::retain_tags`] is one in-place compaction pass, and growing or shrinking
//!     is one sequential merge into the new array, not a rehash of every entry.
//!
//! Speed (`benches/table.rs`, against `std::collections::HashMap` in the same run): a touch of
//! an existing id is one multiply and a look at the first 4 slots of its run (nearly always
//! the one cache line it needs) with no branch to mispredict, so that at 1M entries the cache
//! misses of consecutive lookups overlap.

use std::fmt;

/// The bits of an id that identify it: all but the low byte, which holds the tag in a slot.
const KEY_MASK: u64 = !0xFF;

/// The key that stands in for ids whose high 56 bits are all zero, because a zero slot means
/// empty. Any nonzero pattern works; this one is the golden ratio's bits, with no tag bits.
pub const ZERO_KEY: u64 = 0x9E37_79B9_7F4A_7C00;

/// The smallest table that allocates: 32 bytes (48 with malloc's header), 3 ids. Most metric
/// names of an owner have few series, and with many small owners (one series of each of a
/// few names) most tables are this one, so small tables matter as much as big ones.
const MIN_CAPACITY: usize = 4;

/// The capacity from which a table grows by 1.125× instead of 1.5× (see the module docs):
/// below it a table is a few KiB at most, and its resizes would be many for few bytes.
const FINE_GROWTH_FROM: usize = 1024;

/// Slots a lookup compares at once, without branching, from the key's home slot. A branch per
/// slot mispredicts whenever the entry is not at home, and at 1M entries every lookup is a
/// cache miss: the flushed pipeline keeps the next lookup's miss from overlapping this one's.
/// Measured on the 2-core dev VM, 1M entries at 0.66 load: ~24 ns per touch with a probe loop,
/// 12–16 ns with this window. 8 slots cost more compares than the probes they save.
const WINDOW: usize = 4;

/// What [`SeriesTable::touch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// The id was present; its tag is now the given slice.
    Updated,
    /// The id was not present; nothing was inserted.
    Absent,
}

/// The set of admitted series ids of one owner (or one metric), each with its last-seen slice
/// tag. See the module docs for the layout and its trade-offs.
#[derive(Clone)]
pub struct SeriesTable {
    /// `key | tag` per slot, 0 when empty. Empty (unallocated) until the first insert.
    slots: Box<[u64]>,
    len: usize,
    /// The length at which the next new id grows the table: the max load of `slots`.
    grow_at: usize,
    /// How many entries sit before their home: the run that crosses the array end continues
    /// at slot 0, so the first `wrapped` slots hold entries from the end's homes (top keys),
    /// ahead of everything homed there. Lookups homed past them see only slots in plain key
    /// order, which is what lets [`Self::locate`] decide from a window without probing.
    wrapped: usize,
}

impl SeriesTable {
    /// An empty table. Allocates nothing until the first insert.
    pub fn new() -> Self {
        SeriesTable {
            slots: Box::default(),
            len: 0,
            grow_at: 0,
            wrapped: 0,
        }
    }

    /// An empty table that holds `n` ids without growing.
    pub fn with_capacity(n: usize) -> Self {
        Self::with_slots(capacity_for(n))
    }

    fn with_slots(capacity: usize) -> Self {
        SeriesTable {
            slots: vec![0; capacity].into_boxed_slice(),
            len: 0,
            grow_at: max_len(capacity),
            wrapped: 0,
        }
    }

    /// If `id` is present, set its tag to `slice` and report [`Touch::Updated`]; otherwise
    /// report [`Touch::Absent`] and insert nothing.
    #[inline]
    pub fn touch(&mut self, id: u64, slice: u8) -> Touch {
        let key = key_of(id);
        match self.locate(key) {
            Ok(i) => {
                self.slots[i] = key | u64::from(slice);
                Touch::Updated
            }
            Err(_) => Touch::Absent,
        }
    }

    /// Insert `id` with tag `slice`, or update its tag if present. Returns true if it was new.
    #[inline]
    pub fn insert(&mut self, id: u64, slice: u8) -> bool {
        let key = key_of(id);
        let entry = key | u64::from(slice);
        match self.locate(key) {
            Ok(i) => {
                self.slots[i] = entry;
                false
            }
            Err(at) => {
                if self.len < self.grow_at {
                    self.shift_in(at, entry);
                } else {
                    self.grow();
                    self.place(entry);
                }
                self.len += 1;
                true
            }
        }
    }

    /// Start loading the slots a lookup of `id` reads first, so that the cache misses of a
    /// request's lookups overlap instead of coming one after another (see
    /// `OwnerState::prefetch`). Reads nothing the lookup depends on.
    #[inline]
    pub fn prefetch(&self, id: u64) {
        if let Some(s) = self.slots.get(home(key_of(id), self.slots.len())) {
            crate::guard::prefetch::read(s);
        }
    }

    /// Whether `id` is present.
    #[inline]
    pub fn contains(&self, id: u64) -> bool {
        self.locate(key_of(id)).is_ok()
    }

    /// The tag of `id`, if present.
    #[inline]
    pub fn tag(&self, id: u64) -> Option<u8> {
        self.locate(key_of(id)).ok().map(|i| self.slots[i] as u8)
    }

    /// Remove `id`. Returns true if it was present. Never shrinks (see [`Self::shrink_to_fit`]).
    pub fn remove(&mut self, id: u64) -> bool {
        let Ok(mut i) = self.locate(key_of(id)) else {
            return false;
        };
        if i < self.wrapped {
            self.wrapped -= 1;
        }
        // Backward shift: pull each following entry of the run one slot back, until an empty
        // slot or an entry already at its home. No tombstones, so lookups never slow down.
        let cap = self.slots.len();
        loop {
            let j = next(i, cap);
            let s = self.slots[j];
            if s == 0 || distance(s, j, cap) == 0 {
                self.slots[i] = 0;
                break;
            }
            if j == 0 {
                // Back across the array end: no longer before its home.
                self.wrapped -= 1;
            }
            self.slots[i] = s;
            i = j;
        }
        self.len -= 1;
        true
    }

    /// How many ids are present.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no ids are present (an empty table may still hold its slots).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated; the table holds up to 85% of this many ids before it grows.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Remove every entry whose tag fails `keep`; returns how many were removed. Used when the
    /// window slides: entries last seen in slices now outside the window free their slot.
    ///
    /// One pass over the slots, compacting in place. When the table ends up far below its
    /// capacity (under a quarter of its max load) it is rebuilt smaller, so memory follows the
    /// live count without the caller asking; the rebuilt table has the headroom of a freshly
    /// grown one, so a steady churn does not make it shrink and grow back every slice.
    pub fn retain_tags(&mut self, mut keep: impl FnMut(u8) -> bool) -> usize {
        let Some(start) = self.first_empty() else {
            return 0;
        };
        let cap = self.slots.len();
        // Offsets below count from `start`, so a run wrapping around the array end needs no
        // special case. Invariant: offsets `free..off` are empty and every kept entry seen so
        // far sits before `free`. Runs are in key (hence home) order, so each kept entry moves
        // to the first free offset at or after its home, and the order is kept.
        let mut free = 1;
        let mut removed = 0;
        for off in 1..cap {
            let p = wrap(start + off, cap);
            let s = self.slots[p];
            if s == 0 {
                free = off + 1;
                continue;
            }
            if !keep(s as u8) {
                self.slots[p] = 0;
                removed += 1;
                continue;
            }
            // The home lies after `start`: the slots from an entry's home to it are occupied.
            let home = home(s & KEY_MASK, cap);
            let to = free.max(cyclic(start, home, cap));
            if to != off {
                self.slots[wrap(start + to, cap)] = s;
                self.slots[p] = 0;
            }
            free = to + 1;
        }
        self.len -= removed;
        self.wrapped = self.count_wrapped();
        if self.len == 0 {
            *self = Self::new();
        } else if self.len < self.grow_at / 4 && cap > MIN_CAPACITY {
            self.resize(capacity_for(self.len + self.len / 2));
        }
        removed
    }

    /// Shrink to the smallest capacity that holds the current ids without growing (as
    /// [`Self::with_capacity`] would size it); frees everything when empty. The next new id
    /// may then grow the table, so call this when the table is done growing for a while.
    /// [`Self::retain_tags`] already shrinks tables that fall far below their capacity.
    pub fn shrink_to_fit(&mut self) {
        let fit = capacity_for(self.len);
        if fit < self.slots.len() {
            self.resize(fit);
        }
    }

    /// Heap bytes held: the slot array, empty slots included.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val::<[u64]>(&self.slots)
    }

    /// Every entry as `(key, tag)`, in no particular order, for snapshots. The key is the id
    /// with its low byte cleared (or [`ZERO_KEY`]): inserting it back restores the same entry.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.slots
            .iter()
            .filter(|&&s| s != 0)
            .map(|&s| (s & KEY_MASK, s as u8))
    }

    /// Every entry as `(key, tag)` in ascending key order (for delta-coded snapshots): past
    /// the wrapped prefix the slots are in key order, and the prefix holds the top keys.
    pub fn iter_sorted(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        let (wrapped, rest) = self.slots.split_at(self.wrapped.min(self.slots.len()));
        rest.iter()
            .chain(wrapped)
            .filter(|&&s| s != 0)
            .map(|&s| (s & KEY_MASK, s as u8))
    }

    /// Insert every entry of `other` (its keys, with their tags).
    pub fn extend_from(&mut self, other: &SeriesTable) {
        for (key, tag) in other.iter() {
            self.insert(key, tag);
        }
    }

    /// `Ok(slot)` holding `key`, or `Err(slot)` where it belongs.
    ///
    /// Past the wrapped prefix, the slots from `key`'s home on are in plain key order: a run
    /// is sorted, an empty slot ends it, and the next run has later homes, so bigger keys.
    /// So the first [`WINDOW`] of them, compared without branching, show either the key, or
    /// where it belongs (the first empty slot or bigger key). Only a window that shows neither
    /// (a long run) goes on scanning the same way; one that crosses the array end or starts
    /// among wrapped entries needs [`Self::probe`].
    #[inline]
    fn locate(&self, key: u64) -> Result<usize, usize> {
        let h = home(key, self.slots.len());
        let window: Option<&[u64; WINDOW]> = self
            .slots
            .get(h..h + WINDOW)
            .and_then(|w| w.try_into().ok());
        if let (Some(w), true) = (window, h >= self.wrapped) {
            let (mut hit, mut after) = (0u32, 0u32);
            for (i, &s) in w.iter().enumerate() {
                let k = s & KEY_MASK;
                hit |= u32::from(k == key) << i;
                // Empty (k = 0 wraps to the maximum) or a bigger key.
                after |= u32::from(k.wrapping_sub(1) >= key) << i;
            }
            if hit != 0 {
                return Ok(h + hit.trailing_zeros() as usize);
            }
            if after != 0 {
                return Err(h + after.trailing_zeros() as usize);
            }
            // A long run (common near the max load): the same order holds past the window,
            // so the same two compares go on, one slot at a time, with no home to compute.
            for (i, &s) in self.slots.iter().enumerate().skip(h + WINDOW) {
                let k = s & KEY_MASK;
                if k == key {
                    return Ok(i);
                }
                if k.wrapping_sub(1) >= key {
                    return Err(i);
                }
            }
        }
        self.probe(key)
    }

    /// Walk the run from `key`'s home: `Ok(slot)` holding it, or `Err(slot)` where it belongs:
    /// the first empty slot, or the first entry after it in key order (one whose home is
    /// later, or the same with a bigger key). The run is sorted, so nothing past that point
    /// can be `key`.
    fn probe(&self, key: u64) -> Result<usize, usize> {
        let cap = self.slots.len();
        if cap == 0 {
            return Err(0);
        }
        let mut i = home(key, cap);
        let mut dist = 0;
        loop {
            let s = self.slots[i];
            let k = s & KEY_MASK;
            // `key` is never 0, so an empty slot never matches.
            if k == key {
                return Ok(i);
            }
            if s == 0 {
                return Err(i);
            }
            let d = distance(s, i, cap);
            if d < dist || (d == dist && k > key) {
                return Err(i);
            }
            dist += 1;
            i = next(i, cap);
        }
    }

    /// Put `entry` at slot `at`, moving the entries from there to the next empty slot one
    /// slot forward. Each moved entry stays behind the ones before it, so the order is kept.
    fn shift_in(&mut self, mut at: usize, entry: u64) {
        let cap = self.slots.len();
        if at < home(entry & KEY_MASK, cap) {
            // Its probe went around the array end.
            self.wrapped += 1;
        }
        let mut carry = entry;
        loop {
            carry = std::mem::replace(&mut self.slots[at], carry);
            if carry == 0 {
                return;
            }
            at = next(at, cap);
            if at == 0 {
                // The last slot's entry moves across the array end, before its home.
                self.wrapped += 1;
            }
        }
    }

    /// The entries before their home, counted: they are a prefix of the slots (see `wrapped`).
    fn count_wrapped(&self) -> usize {
        let cap = self.slots.len();
        self.slots
            .iter()
            .enumerate()
            .take_while(|&(i, &s)| s != 0 && home(s & KEY_MASK, cap) > i)
            .count()
    }

    /// Insert an entry known to be absent, into a table with room for it.
    fn place(&mut self, entry: u64) {
        match self.probe(entry & KEY_MASK) {
            Ok(_) => unreachable!("place() is only given absent keys"),
            Err(at) => self.shift_in(at, entry),
        }
    }

    /// An empty slot, if the table has slots. One exists whenever it does: max load < 1.
    fn first_empty(&self) -> Option<usize> {
        self.slots.iter().position(|&s| s == 0)
    }

    fn grow(&mut self) {
        let cap = self.slots.len();
        let step = if cap < FINE_GROWTH_FROM {
            cap / 2
        } else {
            cap / 8
        };
        self.resize(cap.saturating_add(step).max(MIN_CAPACITY));
    }

    /// Rebuild into `capacity` slots, as a merge rather than a rehash: the old slots, read
    /// from just after an empty one, are in ascending key order (cyclically: one wrap from
    /// the top keys to the bottom ones), which is also ascending home order in the new array.
    /// So each entry goes to the first free slot at or after its new home, written
    /// sequentially, with no probing.
    fn resize(&mut self, capacity: usize) {
        debug_assert!(max_len(capacity) >= self.len);
        let old = std::mem::replace(self, Self::with_slots(capacity));
        self.len = old.len;
        let Some(start) = old.first_empty() else {
            return;
        };
        let old_cap = old.slots.len();
        // Offsets from the first entry's new home, and that entry's key (the order's start).
        let mut origin = None;
        let mut free = 0;
        for off in 1..old_cap {
            let s = old.slots[wrap(start + off, old_cap)];
            if s == 0 {
                continue;
            }
            let key = s & KEY_MASK;
            let home = home(key, capacity);
            let &mut (first_key, first_home) = origin.get_or_insert((key, home));
            // Keys below the first one come after the wrap: their homes are a lap further.
            let lap = if key >= first_key { 0 } else { capacity };
            let to = free.max(home + lap - first_home);
            if to >= capacity {
                // The last entries spill around the array end into the run of the first
                // ones, which must make room for them: insert the usual way. As offsets only
                // grow, every entry after this one comes here too, after the merged ones.
                self.place(s);
                continue;
            }
            self.slots[wrap(first_home + to, capacity)] = s;
            free = to + 1;
        }
        self.wrapped = self.count_wrapped();
    }
}

impl Default for SeriesTable {
    fn default() -> Self {
        Self::new()
    }
}

/// Not the slots: a 1M-entry table would print megabytes.
impl fmt::Debug for SeriesTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeriesTable")
            .field("len", &self.len)
            .field("capacity", &self.slots.len())
            .finish()
    }
}

/// The table key of an id: its high 56 bits, never zero.
#[inline]
/// The key a series id is held under: the id with its low byte (the tag's) cleared.
pub fn key_of(id: u64) -> u64 {
    match id & KEY_MASK {
        0 => ZERO_KEY,
        k => k,
    }
}

/// Multiply-shift range reduction: maps the key onto `0..cap` by its high bits, without a
/// division and without requiring a power-of-two `cap` (Lemire, "A fast alternative to the
/// modulo reduction", 2016). Monotone in the key, which keeps runs in key order.
#[inline]
fn home(key: u64, cap: usize) -> usize {
    ((u128::from(key) * cap as u128) >> 64) as usize
}

/// How far the entry `s` at slot `i` sits from its home slot.
#[inline]
fn distance(s: u64, i: usize, cap: usize) -> usize {
    cyclic(home(s & KEY_MASK, cap), i, cap)
}

/// Slots from `from` forward to `to`, going around the array end if need be.
#[inline]
fn cyclic(from: usize, to: usize, cap: usize) -> usize {
    if to >= from {
        to - from
    } else {
        to + cap - from
    }
}

#[inline]
fn next(i: usize, cap: usize) -> usize {
    wrap(i + 1, cap)
}

/// `i % cap` for `i < 2 * cap`, without a division.
#[inline]
fn wrap(i: usize, cap: usize) -> usize {
    if i >= cap {
        i - cap
    } else {
        i
    }
}

/// Ids a table of `capacity` slots holds before growing: a max load of 0.85 (always leaving
/// at least one empty slot, which lookups, `retain_tags` and `resize` rely on).
fn max_len(capacity: usize) -> usize {
    capacity - capacity.saturating_mul(3).div_ceil(20)
}

/// The smallest capacity that holds `n` ids without growing.
fn capacity_for(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let mut cap = (n.saturating_mul(20) / 17).max(MIN_CAPACITY);
    while max_len(cap) < n {
        cap += 1;
    }
    cap
}

#[cfg(test)]
mod tests;
