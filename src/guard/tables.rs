//! An owner's admitted series by metric name: one inline list while the owner is small, one
//! exact table (`table::SeriesTable`) per metric name beyond.
//!
//! Owners are often many and small (ten thousand owners of a few series, each series often a
//! metric name of its own): a map of tables would cost such an owner a hash map (200–800
//! bytes) and a table per name (48 bytes each) for a few 8-byte ids, and a steady-state series
//! would read the map's control bytes, its bucket and the table, three cold cache lines. The
//! inline list holds each series as (id key and tag, metric hash) in 16 bytes, read in one or
//! two lines.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::table::{key_of, SeriesTable};

/// Series an owner holds inline; the next new series moves them into tables by metric name...
const INLINE_MAX: usize = 16;
/// ...and an owner whose tables fall to this many series (as the window expires them) goes back
/// inline. Below `INLINE_MAX`, so that an owner at the boundary does not move back and forth.
const INLINE_BACK: usize = 8;

/// The bits of an inline entry's first word that identify the series (the low byte is its tag),
/// as in a table's slot.
const KEY_MASK: u64 = !0xFF;

#[derive(Clone, Debug)]
pub enum Tables {
    /// (id key | tag, metric hash) per series, in no order; at most `INLINE_MAX`.
    Inline(Vec<(u64, u64)>),
    /// A table of ids per metric hash, none empty.
    ByMetric(HashMap<u64, SeriesTable, RandomState>),
}

impl Default for Tables {
    fn default() -> Self {
        Tables::Inline(Vec::new())
    }
}

impl Tables {
    /// The tag of series `id` of metric `metric`, if held.
    #[inline]
    pub fn tag(&self, metric: u64, id: u64) -> Option<u8> {
        match self {
            Tables::Inline(v) => {
                let key = key_of(id);
                v.iter()
                    .find(|e| e.0 & KEY_MASK == key && e.1 == metric)
                    .map(|e| e.0 as u8)
            }
            Tables::ByMetric(m) => m.get(&metric)?.tag(id),
        }
    }

    /// Where the inline list's entries lie (address, bytes); `None` past it.
    #[inline]
    pub fn inline_block(&self) -> Option<(usize, usize)> {
        match self {
            Tables::Inline(v) => Some((v.as_ptr().addr(), std::mem::size_of_val(v.as_slice()))),
            Tables::ByMetric(_) => None,
        }
    }

    /// Start loading what [`Self::tag`] of `metric`, `id` will read (its table's slots).
    #[inline]
    pub fn prefetch(&self, metric: u64, id: u64) {
        if let Tables::ByMetric(m) = self {
            if let Some(t) = m.get(&metric) {
                t.prefetch(id);
            }
        }
    }

    /// Insert series `id` of metric `metric` with tag `tag`, or set its tag if held. Returns
    /// true if it was new.
    #[inline]
    pub fn insert(&mut self, metric: u64, id: u64, tag: u8) -> bool {
        match self {
            Tables::Inline(v) => {
                let key = key_of(id);
                if let Some(e) = v
                    .iter_mut()
                    .find(|e| e.0 & KEY_MASK == key && e.1 == metric)
                {
                    e.0 = key | u64::from(tag);
                    return false;
                }
                if v.len() < INLINE_MAX {
                    v.push((key | u64::from(tag), metric));
                    return true;
                }
                let mut m = by_metric(v);
                let new = m.entry(metric).or_default().insert(id, tag);
                *self = Tables::ByMetric(m);
                new
            }
            Tables::ByMetric(m) => m.entry(metric).or_default().insert(id, tag),
        }
    }

    /// Series of metric `metric` held.
    pub fn metric_len(&self, metric: u64) -> usize {
        match self {
            Tables::Inline(v) => v.iter().filter(|e| e.1 == metric).count(),
            Tables::ByMetric(m) => m.get(&metric).map_or(0, SeriesTable::len),
        }
    }

    /// Series held.
    pub fn len(&self) -> usize {
        match self {
            Tables::Inline(v) => v.len(),
            Tables::ByMetric(m) => m.values().map(SeriesTable::len).sum(),
        }
    }

    /// Remove every series whose tag fails `keep`; returns how many were removed. Tables left
    /// empty are dropped, and an owner left with few series goes back inline.
    pub fn retain_tags(&mut self, mut keep: impl FnMut(u8) -> bool) -> usize {
        let removed = match self {
            Tables::Inline(v) => {
                let before = v.len();
                v.retain(|e| keep(e.0 as u8));
                before - v.len()
            }
            Tables::ByMetric(m) => {
                let removed = m.values_mut().map(|t| t.retain_tags(&mut keep)).sum();
                m.retain(|_, t| !t.is_empty());
                removed
            }
        };
        self.settle();
        removed
    }

    /// Remove every series; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        *self = Tables::default();
        n
    }

    /// Back inline if few enough series are left; an emptied list frees its memory.
    fn settle(&mut self) {
        match self {
            Tables::Inline(v) if v.is_empty() => *v = Vec::new(),
            Tables::Inline(_) => {}
            Tables::ByMetric(m) => {
                if m.values().map(SeriesTable::len).sum::<usize>() <= INLINE_BACK {
                    let v = m
                        .iter()
                        .flat_map(|(metric, t)| {
                            t.iter().map(move |(k, tag)| (k | u64::from(tag), *metric))
                        })
                        .collect();
                    *self = Tables::Inline(v);
                    self.settle();
                }
            }
        }
    }

    /// Every series as (id key, metric hash, tag), in no particular order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (u64, u64, u8)> + '_> {
        match self {
            Tables::Inline(v) => Box::new(v.iter().map(|e| (e.0 & KEY_MASK, e.1, e.0 as u8))),
            Tables::ByMetric(m) => Box::new(
                m.iter()
                    .flat_map(|(metric, t)| t.iter().map(move |(k, tag)| (k, *metric, tag))),
            ),
        }
    }

    /// A table per metric hash, what a snapshot stores.
    pub fn tables(&self) -> Vec<(u64, SeriesTable)> {
        match self {
            Tables::Inline(v) => by_metric(v).into_iter().collect(),
            Tables::ByMetric(m) => m.iter().map(|(k, t)| (*k, t.clone())).collect(),
        }
    }

    /// Tables as [`Self::tables`] gives them (one metric's table given twice is merged).
    pub fn from_tables(tables: impl IntoIterator<Item = (u64, SeriesTable)>) -> Self {
        let mut m: HashMap<u64, SeriesTable, RandomState> = HashMap::default();
        for (k, t) in tables.into_iter().filter(|(_, t)| !t.is_empty()) {
            match m.entry(k) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(t);
                }
                std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().extend_from(&t),
            }
        }
        let mut out = Tables::ByMetric(m);
        out.settle();
        out
    }

    /// Heap bytes of the series: the list, or the tables.
    pub fn memory_bytes(&self) -> usize {
        match self {
            Tables::Inline(v) => v.capacity() * 16,
            Tables::ByMetric(m) => m.values().map(SeriesTable::memory_bytes).sum(),
        }
    }

    /// Heap bytes of the map of tables, about (none inline).
    pub fn map_bytes(&self) -> usize {
        match self {
            Tables::Inline(_) => 0,
            Tables::ByMetric(m) => m.capacity() * 40,
        }
    }
}

/// The inline series as tables by metric hash.
fn by_metric(v: &[(u64, u64)]) -> HashMap<u64, SeriesTable, RandomState> {
    let mut m: HashMap<u64, SeriesTable, RandomState> = HashMap::default();
    for &(slot, metric) in v {
        m.entry(metric)
            .or_default()
            .insert(slot & KEY_MASK, slot as u8);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64;

    fn id(i: u64) -> u64 {
        xxh3_64(&i.to_le_bytes())
    }

    fn sorted(t: &Tables) -> Vec<(u64, u64, u8)> {
        let mut all: Vec<_> = t.iter().collect();
        all.sort_unstable();
        all
    }

    /// Series `i` of metric `i % 3`.
    fn fill(t: &mut Tables, n: u64, tag: u8) {
        for i in 0..n {
            assert!(t.insert(i % 3, id(i), tag), "{i} is new");
        }
    }

    #[test]
    fn an_owner_goes_to_tables_past_the_inline_list_and_back_as_series_expire() {
        let mut t = Tables::default();
        fill(&mut t, INLINE_MAX as u64, 1);
        assert!(matches!(&t, Tables::Inline(v) if v.len() == INLINE_MAX));
        assert_eq!(t.metric_len(0), INLINE_MAX.div_ceil(3));
        let inline = sorted(&t);
        // The same id under another metric hash is another series.
        assert_eq!(t.tag(1, id(0)), None);
        assert_eq!(t.tag(0, id(0)), Some(1));

        // One more: tables by metric, holding the same series and tags.
        assert!(t.insert(7, id(100), 2));
        assert!(matches!(&t, Tables::ByMetric(m) if m.len() == 4));
        assert_eq!(t.len(), INLINE_MAX + 1);
        let mut expect = inline.clone();
        expect.push((key_of(id(100)), 7, 2));
        expect.sort_unstable();
        assert_eq!(sorted(&t), expect);
        assert_eq!(t.metric_len(0), INLINE_MAX.div_ceil(3));
        assert_eq!(t.metric_len(7), 1);
        assert_eq!(t.tag(7, id(100)), Some(2));
        assert!(!t.insert(7, id(100), 3), "known: its tag is set");
        assert_eq!(t.tag(7, id(100)), Some(3));

        // Refresh a few, expire the rest: still tables while above `INLINE_BACK`...
        for i in 0..INLINE_BACK as u64 {
            t.insert(i % 3, id(i), 5);
        }
        assert_eq!(t.retain_tags(|tag| tag >= 3), INLINE_MAX - INLINE_BACK);
        assert!(matches!(t, Tables::ByMetric(_)));
        assert_eq!(t.len(), INLINE_BACK + 1);
        // ...inline again once at it.
        assert_eq!(t.retain_tags(|tag| tag != 3), 1);
        assert!(matches!(&t, Tables::Inline(v) if v.len() == INLINE_BACK));
        let mut expect: Vec<_> = (0..INLINE_BACK as u64)
            .map(|i| (key_of(id(i)), i % 3, 5))
            .collect();
        expect.sort_unstable();
        assert_eq!(sorted(&t), expect);
        assert_eq!(t.tag(2, id(2)), Some(5));
        assert_eq!(t.metric_len(1), (INLINE_BACK - 1) / 3 + 1);

        // Everything expires: nothing held, nothing allocated.
        assert_eq!(t.retain_tags(|_| false), INLINE_BACK);
        assert!(matches!(&t, Tables::Inline(v) if v.capacity() == 0));
        assert_eq!(t.memory_bytes(), 0);
    }

    #[test]
    fn tables_round_trip_through_a_snapshot_either_way() {
        for n in [5u64, 40] {
            let mut t = Tables::default();
            fill(&mut t, n, 4);
            let back = Tables::from_tables(t.tables());
            assert_eq!(sorted(&back), sorted(&t), "n={n}");
            assert_eq!(
                matches!(back, Tables::Inline(_)),
                n as usize <= INLINE_BACK,
                "n={n}"
            );
            // One metric's table twice (a crafted file) is merged.
            let twice = Tables::from_tables(t.tables().into_iter().chain(t.tables()));
            assert_eq!(sorted(&twice), sorted(&t), "n={n}");
        }
    }

    #[test]
    fn clear_counts_and_frees() {
        let mut t = Tables::default();
        fill(&mut t, 40, 1);
        assert_eq!(t.clear(), 40);
        assert_eq!((t.len(), t.memory_bytes()), (0, 0));
        fill(&mut t, 3, 1);
        assert_eq!(t.clear(), 3);
    }
}
