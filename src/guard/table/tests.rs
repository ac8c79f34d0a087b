use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

impl SeriesTable {
    /// Everything the operations rely on: the count, the order (each entry at most one slot
    /// farther from home than the one before it, at home after an empty slot, and after
    /// the entries of the same home with smaller keys), unique keys, every entry found
    /// where it is, and an empty slot.
    fn check(&self) {
        let cap = self.slots.len();
        assert_eq!(self.grow_at, max_len(cap));
        assert!(self.len <= self.grow_at);
        assert_eq!(self.slots.iter().filter(|&&s| s != 0).count(), self.len);
        if cap == 0 {
            return;
        }
        assert!(self.len < cap, "no empty slot");
        let before_home: Vec<usize> = (0..cap)
            .filter(|&i| self.slots[i] != 0 && home(self.slots[i] & KEY_MASK, cap) > i)
            .collect();
        assert_eq!(
            before_home,
            (0..self.wrapped).collect::<Vec<_>>(),
            "wrapped prefix"
        );
        let mut keys = std::collections::HashSet::new();
        for i in 0..cap {
            let s = self.slots[i];
            if s == 0 {
                continue;
            }
            let prev = self.slots[(i + cap - 1) % cap];
            let d = distance(s, i, cap);
            if prev == 0 {
                assert_eq!(d, 0, "entry at {i} is off home after an empty slot");
            } else {
                let d_prev = distance(prev, (i + cap - 1) % cap, cap);
                assert!(d <= d_prev + 1, "home order at {i}");
                if d == d_prev + 1 {
                    assert!(prev & KEY_MASK < s & KEY_MASK, "key order at {i}");
                }
            }
            assert!(keys.insert(s & KEY_MASK), "duplicate key at {i}");
            assert_eq!(self.probe(s & KEY_MASK), Ok(i));
            assert_eq!(self.locate(s & KEY_MASK), Ok(i));
        }
    }
}

/// Ids whose keys all fall in a 2¹⁴-wide range above `base`: they share one home slot
/// in any table smaller than 2⁵⁰ slots, so they pile up into one long run.
fn crowd(base: u64, n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(move |d| base.wrapping_add(d << 8) | 0x5A)
}

#[test]
fn new_table_is_empty_and_allocates_nothing() {
    let mut t = SeriesTable::new();
    assert!(t.is_empty());
    assert_eq!(t.memory_bytes(), 0);
    assert!(!t.contains(42));
    assert_eq!(t.tag(42), None);
    assert_eq!(t.touch(42, 1), Touch::Absent);
    assert!(!t.remove(42));
    assert_eq!(t.retain_tags(|_| false), 0);
    t.shrink_to_fit();
    assert_eq!(t.iter().count(), 0);
    assert_eq!(SeriesTable::with_capacity(0).memory_bytes(), 0);
    t.check();
}

#[test]
fn insert_then_lookup_and_update() {
    let mut t = SeriesTable::new();
    assert!(t.insert(0xDEAD_BEEF_0000_0100, 3));
    assert!(
        !t.insert(0xDEAD_BEEF_0000_0100, 4),
        "second insert is an update"
    );
    assert_eq!(t.len(), 1);
    assert_eq!(t.tag(0xDEAD_BEEF_0000_0100), Some(4));
    assert!(t.contains(0xDEAD_BEEF_0000_0100));
    assert!(!t.contains(0xDEAD_BEEF_0000_0200));
    assert_eq!(t.memory_bytes(), MIN_CAPACITY * 8);
    t.check();
}

#[test]
fn touch_updates_present_ids_only() {
    let mut t = SeriesTable::new();
    t.insert(7 << 40, 1);
    assert_eq!(t.touch(7 << 40, 9), Touch::Updated);
    assert_eq!(t.tag(7 << 40), Some(9));
    assert_eq!(t.touch(8 << 40, 9), Touch::Absent);
    assert_eq!(t.len(), 1);
    assert!(!t.contains(8 << 40));
}

#[test]
fn low_byte_of_the_id_is_not_identity() {
    let mut t = SeriesTable::new();
    t.insert(0x1234_5678_9ABC_DE00, 1);
    assert!(!t.insert(0x1234_5678_9ABC_DEFF, 2));
    assert_eq!(t.tag(0x1234_5678_9ABC_DE42), Some(2));
    assert_eq!(t.iter().collect::<Vec<_>>(), [(0x1234_5678_9ABC_DE00, 2)]);
}

#[test]
fn zero_high_bits_get_a_stand_in_key() {
    let mut t = SeriesTable::new();
    assert!(t.insert(0, 1));
    assert!(t.contains(0));
    // Every id with zero high bits is the same series, and so is the stand-in itself.
    assert!(!t.insert(0xFF, 2));
    assert_eq!(t.tag(ZERO_KEY | 0x33), Some(2));
    assert_eq!(t.iter().collect::<Vec<_>>(), [(ZERO_KEY, 2)]);
    assert!(
        !t.contains(0x100),
        "the smallest nonzero key is a different series"
    );
    assert!(t.remove(0x7F));
    assert!(t.is_empty());
    t.check();
}

#[test]
fn crowded_home_slot_and_backward_shift() {
    let mut t = SeriesTable::with_capacity(200);
    let ids: Vec<u64> = crowd(1 << 63, 100).collect();
    for &id in &ids {
        assert!(t.insert(id, 0));
    }
    t.check();
    // Remove from the front, the middle and the back of the run.
    for &id in ids.iter().step_by(3) {
        assert!(t.remove(id));
        t.check();
    }
    for (k, &id) in ids.iter().enumerate() {
        assert_eq!(t.contains(id), k % 3 != 0);
    }
}

#[test]
fn runs_wrap_around_the_array_end() {
    let mut t = SeriesTable::with_capacity(100);
    let cap = t.capacity();
    // Keys at the very top all have home `cap - 1`; the run continues at slot 0, ahead
    // of entries whose home is slot 0.
    let high: Vec<u64> = crowd(u64::MAX - (20 << 8), 20).collect();
    let low: Vec<u64> = crowd(0x100, 10).collect();
    for &id in high.iter().chain(&low) {
        assert!(t.insert(id, 1));
    }
    assert!(high.iter().all(|&id| home(key_of(id), cap) == cap - 1));
    assert_ne!(
        t.slots[0] & KEY_MASK,
        key_of(low[0]),
        "slot 0 holds a wrapped entry"
    );
    t.check();
    for &id in &low {
        assert!(t.contains(id));
    }
    // A miss whose home is slot 0 walks over wrapped entries to find its place.
    assert!(!t.contains(0x100 + (999 << 8)));
    for &id in high.iter().step_by(2) {
        assert!(t.remove(id));
        t.check();
    }
    assert!(low.iter().all(|&id| t.contains(id)));
    assert_eq!(t.retain_tags(|_| true), 0);
    t.check();
}

#[test]
fn rebuilds_keep_runs_that_wrap() {
    // Growing from empty and shrinking back both rebuild with a long run across the array
    // end, whose last entries spill into the first ones in the new array.
    let mut t = SeriesTable::new();
    let ids: Vec<u64> = crowd(u64::MAX - (40 << 8), 40)
        .chain(crowd(0x100, 40))
        .collect();
    for &id in &ids {
        t.insert(id, 0);
        t.check();
    }
    for &id in &ids[..30] {
        t.remove(id);
    }
    t.shrink_to_fit();
    t.check();
    assert!(ids[30..].iter().all(|&id| t.contains(id)));
}

/// Cases proptest found against broken wrap handling (a retain, and a remove, emptying
/// the slot where a run crosses the array end), pinned.
#[test]
fn removal_at_the_array_end_moves_the_wrapped_entry_back() {
    let mut t = SeriesTable::new();
    t.insert(u64::MAX - 12032, 1);
    t.insert(256, 5);
    assert_eq!(t.retain_tags(|tag| tag >= 4), 1);
    t.check();
    assert!(t.contains(256));

    let mut t = SeriesTable::new();
    t.insert(u64::MAX - 5120, 0);
    t.insert(u64::MAX - 4864, 0);
    assert_eq!(t.wrapped, 1);
    assert!(t.remove(u64::MAX - 5120));
    t.check();
    assert_eq!(t.wrapped, 0);
    assert!(t.contains(u64::MAX - 4864));
}

#[test]
fn retain_removes_failing_tags() {
    let mut t = SeriesTable::new();
    let ids: Vec<u64> = (1..=1000u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    for (k, &id) in ids.iter().enumerate() {
        t.insert(id, (k % 10) as u8);
    }
    let removed = t.retain_tags(|tag| tag >= 5);
    assert_eq!(removed, 500);
    assert_eq!(t.len(), 500);
    t.check();
    for (k, &id) in ids.iter().enumerate() {
        assert_eq!(t.tag(id), (k % 10 >= 5).then_some((k % 10) as u8));
    }
}

#[test]
fn retain_compacts_wrapped_runs() {
    let mut t = SeriesTable::with_capacity(300);
    let ids: Vec<u64> = crowd(u64::MAX - (60 << 8), 60)
        .chain(crowd(0, 60))
        .chain(crowd(1 << 62, 60))
        .collect();
    for (k, &id) in ids.iter().enumerate() {
        t.insert(id, (k % 3) as u8);
    }
    t.check();
    assert_eq!(t.retain_tags(|tag| tag == 1), 120);
    t.check();
    for (k, &id) in ids.iter().enumerate() {
        assert_eq!(t.contains(id), k % 3 == 1);
    }
}

#[test]
fn grows_within_16_bytes_per_series() {
    let mut t = SeriesTable::new();
    let mut caps = vec![];
    for i in 1..=1_000_000u64 {
        t.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0);
        if caps.last() != Some(&t.capacity()) {
            caps.push(t.capacity());
        }
        if i >= 64 {
            let per = t.memory_bytes() as f64 / i as f64;
            assert!(per <= 16.0, "{per} bytes/series at {i}");
        }
    }
    t.check();
    assert!(
        caps.windows(2).all(|w| w[1] <= w[0] * 3 / 2 + 1),
        "{caps:?}"
    );
    assert!(
        caps.windows(2)
            .filter(|w| w[0] >= FINE_GROWTH_FROM)
            .all(|w| w[1] <= w[0] * 9 / 8 + 1),
        "{caps:?}"
    );
    let per = t.memory_bytes() as f64 / 1e6;
    assert!((9.4..=10.6).contains(&per), "{per} bytes/series at 1M");
    // And once grown by a fine step, at every size: a load of at least 0.75.
    let (mut t, mut prev, mut cap) = (SeriesTable::new(), 0, 0);
    for i in 1..=100_000u64 {
        t.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0);
        if t.capacity() != cap {
            (prev, cap) = (cap, t.capacity());
        }
        if prev >= FINE_GROWTH_FROM {
            let per = t.memory_bytes() as f64 / i as f64;
            assert!(per <= 10.7, "{per} bytes/series at {i}");
        }
    }
}

#[test]
fn with_capacity_holds_n_without_growing() {
    for n in [1, 7, 8, 100, 1000, 12345] {
        let mut t = SeriesTable::with_capacity(n);
        let cap = t.capacity();
        for i in 0..n as u64 {
            t.insert((i + 1) << 20, 0);
        }
        assert_eq!(t.capacity(), cap, "n = {n}");
        t.check();
    }
    let t = SeriesTable::with_capacity(1_000_000);
    assert!(t.memory_bytes() <= 9_500_000, "{}", t.memory_bytes());
}

#[test]
fn retain_shrinks_a_table_far_below_capacity() {
    let mut t = SeriesTable::new();
    for i in 1..=100_000u64 {
        t.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), (i % 20) as u8);
    }
    let big = t.memory_bytes();
    assert_eq!(t.retain_tags(|tag| tag == 0), 95_000);
    t.check();
    assert!(t.memory_bytes() * 10 < big, "{} of {big}", t.memory_bytes());
    // Shrunk with headroom: the survivors plus half as many again fit without growing.
    let cap = t.capacity();
    for i in 1..=2_500u64 {
        t.insert(i << 32, 1);
    }
    assert_eq!(t.capacity(), cap);
    assert_eq!(t.retain_tags(|_| false), 7_500);
    assert_eq!(t.memory_bytes(), 0, "an emptied table frees its slots");
}

#[test]
fn shrink_to_fit_sizes_like_with_capacity() {
    let mut t = SeriesTable::new();
    for i in 1..=10_000u64 {
        t.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1);
    }
    for i in 1..=9_000u64 {
        assert!(t.remove(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    }
    assert!(t.capacity() > 10_000, "remove never shrinks");
    t.shrink_to_fit();
    assert_eq!(t.capacity(), SeriesTable::with_capacity(1000).capacity());
    t.check();
    for i in 9_001..=10_000u64 {
        assert!(t.contains(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    }
    let cap = t.capacity();
    t.shrink_to_fit();
    assert_eq!(t.capacity(), cap, "already fits");
}

#[test]
fn iter_round_trips_through_insert() {
    let mut t = SeriesTable::new();
    for i in 0..500u64 {
        t.insert(i.wrapping_mul(0x2545_F491_4F6C_DD1D), i as u8);
    }
    let mut copy = SeriesTable::new();
    for (key, tag) in t.iter() {
        assert!(copy.insert(key, tag));
    }
    let mut a: Vec<_> = t.iter().collect();
    let mut b: Vec<_> = copy.iter().collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u64, u8),
    Touch(u64, u8),
    Remove(u64),
    /// Keep the tags whose bit is set (tags are drawn from 0..8).
    Retain(u8),
    Shrink,
}

/// A mix that makes collisions common: random ids, and crowds at the array's start
/// (including the zero-high-bits edge), middle and end (runs that wrap).
fn id() -> impl Strategy<Value = u64> {
    let near = |base: u64| {
        (0u64..48, any::<u8>()).prop_map(move |(d, low)| base.wrapping_add(d << 8) | u64::from(low))
    };
    prop_oneof![
        3 => any::<u64>(),
        2 => near(0),
        2 => near(1 << 63),
        2 => near(u64::MAX - (47 << 8)),
        1 => Just(ZERO_KEY),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (id(), 0u8..8).prop_map(|(id, t)| Op::Insert(id, t)),
        3 => (id(), 0u8..8).prop_map(|(id, t)| Op::Touch(id, t)),
        3 => id().prop_map(Op::Remove),
        1 => any::<u8>().prop_map(Op::Retain),
        1 => Just(Op::Shrink),
    ]
}

/// The model's key: the id's high 56 bits, with the documented stand-in for zero.
fn model_key(id: u64) -> u64 {
    match id >> 8 {
        0 => ZERO_KEY >> 8,
        k => k,
    }
}

proptest! {
    #[test]
    fn behaves_like_a_hashmap(ops in prop::collection::vec(op(), 1..600)) {
        let mut t = SeriesTable::new();
        let mut model: HashMap<u64, u8> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(id, tag) => {
                    prop_assert_eq!(t.insert(id, tag), model.insert(model_key(id), tag).is_none());
                }
                Op::Touch(id, tag) => {
                    let want = match model.get_mut(&model_key(id)) {
                        Some(v) => { *v = tag; Touch::Updated }
                        None => Touch::Absent,
                    };
                    prop_assert_eq!(t.touch(id, tag), want);
                }
                Op::Remove(id) => {
                    prop_assert_eq!(t.remove(id), model.remove(&model_key(id)).is_some());
                }
                Op::Retain(mask) => {
                    let keep = |tag: u8| mask & (1 << tag) != 0;
                    let before = model.len();
                    model.retain(|_, tag| keep(*tag));
                    prop_assert_eq!(t.retain_tags(keep), before - model.len());
                }
                Op::Shrink => t.shrink_to_fit(),
            }
            t.check();
            prop_assert_eq!(t.len(), model.len());
        }
        let mut got: Vec<(u64, u8)> = t.iter().map(|(k, tag)| (k >> 8, tag)).collect();
        let mut want: Vec<(u64, u8)> = model.iter().map(|(&k, &tag)| (k, tag)).collect();
        got.sort_unstable();
        want.sort_unstable();
        prop_assert_eq!(got, want);
        for (&k, &tag) in &model {
            prop_assert_eq!(t.tag(k << 8), Some(tag));
        }
    }
}
