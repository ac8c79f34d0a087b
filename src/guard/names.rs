//! The names an owner's demand is tracked by (metric names, label names), each with its ring:
//! packed into two lists while they are few, a hash map beyond.
//!
//! A small owner tracks a dozen names (a few metric names, the labels of its series), each
//! with a ring of one or a few ids: as a hash map of boxed names that is a map of 400–800
//! bytes and a 32-byte allocation per name, most of an owner's memory when owners are many
//! and small. Packed, the names' bytes share one buffer and the rings one list.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::ring::SketchRing;

/// Names held packed; the next new name moves them into a map...
const PACKED_MAX: usize = 16;
/// ...and a map that falls to this many names (as the window empties their rings) is packed
/// again. Below `PACKED_MAX`, so that an owner at the boundary does not move back and forth.
const PACKED_BACK: usize = 8;

#[derive(Clone, Debug)]
pub enum Names {
    Packed {
        /// Every name's bytes, one after another.
        bytes: Vec<u8>,
        /// Per name: where its bytes start in `bytes`, their length, its ring.
        rings: Vec<(u32, u32, SketchRing)>,
    },
    Map(HashMap<Box<[u8]>, SketchRing, RandomState>),
}

impl Default for Names {
    fn default() -> Self {
        Names::Packed {
            bytes: Vec::new(),
            rings: Vec::new(),
        }
    }
}

impl Names {
    pub fn is_empty(&self) -> bool {
        match self {
            Names::Packed { rings, .. } => rings.is_empty(),
            Names::Map(m) => m.is_empty(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        match self {
            Names::Packed { rings, .. } => rings.len(),
            Names::Map(m) => m.len(),
        }
    }

    /// `name`'s ring, a new one from `ring` if it has none and fewer than `max` names are
    /// held; `None` when it has none and `max` are.
    pub fn get_or_insert(
        &mut self,
        name: &[u8],
        max: usize,
        ring: impl FnOnce() -> SketchRing,
    ) -> Option<&mut SketchRing> {
        enum Step {
            Found(usize),
            Push,
            Full,
            Map,
        }
        let step = match &*self {
            Names::Packed { bytes, rings } => {
                let at = rings.iter().position(|&(start, len, _)| {
                    // Length, then last byte, before the bytes: names of one length
                    // (`service`, `user_id`) would otherwise each cost a `memcmp` call.
                    len as usize == name.len() && {
                        let held = &bytes[start as usize..][..len as usize];
                        held.last() == name.last() && held == name
                    }
                });
                match at {
                    Some(i) => Step::Found(i),
                    None if rings.len() >= max => Step::Full,
                    None if rings.len() < PACKED_MAX => Step::Push,
                    None => Step::Map,
                }
            }
            Names::Map(_) => Step::Map,
        };
        match step {
            Step::Full => return None,
            Step::Map if matches!(self, Names::Packed { .. }) => *self = Names::Map(self.to_map()),
            _ => {}
        }
        match self {
            Names::Packed { bytes, rings } => {
                let i = match step {
                    Step::Found(i) => i,
                    _ => {
                        push(bytes, rings, name, ring());
                        rings.len() - 1
                    }
                };
                Some(&mut rings[i].2)
            }
            Names::Map(m) => {
                if !m.contains_key(name) {
                    if m.len() >= max {
                        return None;
                    }
                    m.insert(name.into(), ring());
                }
                m.get_mut(name)
            }
        }
    }

    /// Set `name`'s ring (a snapshot's).
    pub fn insert(&mut self, name: &[u8], ring: SketchRing) {
        if let Some(r) = self.get_or_insert(name, usize::MAX, || ring.clone()) {
            *r = ring;
        }
    }

    /// Every ring.
    pub fn for_each_ring(&mut self, mut f: impl FnMut(&mut SketchRing)) {
        match self {
            Names::Packed { rings, .. } => rings.iter_mut().for_each(|e| f(&mut e.2)),
            Names::Map(m) => m.values_mut().for_each(f),
        }
    }

    /// Forget the names whose rings are empty; few names left are packed again.
    pub fn retain_nonempty(&mut self) {
        match self {
            Names::Packed { bytes, rings } => {
                if rings.iter().all(|e| !e.2.is_empty()) {
                    return;
                }
                let old_bytes = std::mem::take(bytes);
                for (start, len, ring) in std::mem::take(rings) {
                    if !ring.is_empty() {
                        push(
                            bytes,
                            rings,
                            &old_bytes[start as usize..][..len as usize],
                            ring,
                        );
                    }
                }
            }
            Names::Map(m) => {
                m.retain(|_, r| !r.is_empty());
                if m.len() <= PACKED_BACK {
                    let mut packed = Names::default();
                    if let Names::Packed { bytes, rings } = &mut packed {
                        for (name, ring) in m.drain() {
                            push(bytes, rings, &name, ring);
                        }
                    }
                    *self = packed;
                }
            }
        }
    }

    /// Every name with its ring, in no particular order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&[u8], &SketchRing)> + '_> {
        match self {
            Names::Packed { bytes, rings } => Box::new(
                rings
                    .iter()
                    .map(|(start, len, r)| (&bytes[*start as usize..][..*len as usize], r)),
            ),
            Names::Map(m) => Box::new(m.iter().map(|(k, r)| (&k[..], r))),
        }
    }

    /// Heap bytes, about: the names, what holds them, and their rings.
    pub fn memory_bytes(&self) -> usize {
        let rings = self.iter().map(|(_, r)| r.memory_bytes()).sum::<usize>();
        rings
            + match self {
                Names::Packed { bytes, rings } => {
                    bytes.capacity()
                        + rings.capacity() * std::mem::size_of::<(u32, u32, SketchRing)>()
                }
                Names::Map(m) => m.keys().map(|k| k.len() + 48).sum(),
            }
    }

    fn to_map(&self) -> HashMap<Box<[u8]>, SketchRing, RandomState> {
        self.iter().map(|(k, r)| (k.into(), r.clone())).collect()
    }
}

/// Append a name to packed lists, to their exact size: names come rarely (once each, for most
/// owners), and a packed owner holds at most `PACKED_MAX`.
fn push(
    bytes: &mut Vec<u8>,
    rings: &mut Vec<(u32, u32, SketchRing)>,
    name: &[u8],
    ring: SketchRing,
) {
    bytes.reserve_exact(name.len());
    rings.reserve_exact(1);
    // Names are at most `MAX_TRACKED_NAME_BYTES` long and at most `PACKED_MAX` are packed.
    rings.push((bytes.len() as u32, name.len() as u32, ring));
    bytes.extend_from_slice(name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::sketch::OFFENDER_PRECISION;

    fn name(i: usize) -> Vec<u8> {
        format!("metric_{i}_total").into_bytes()
    }

    fn estimates(n: &Names) -> Vec<(Vec<u8>, f64)> {
        let mut all: Vec<_> = n.iter().map(|(k, r)| (k.to_vec(), r.estimate())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Name `i` gets `1 + i % 3` ids in slice `slice`.
    fn track(n: &mut Names, names: std::ops::Range<usize>, slice: u64) {
        for i in names {
            for id in 0..=(i % 3) as u64 {
                n.get_or_insert(&name(i), 64, || SketchRing::new(3, OFFENDER_PRECISION))
                    .expect("under the cap")
                    .insert(slice, id);
            }
        }
    }

    #[test]
    fn names_go_to_a_map_past_the_packed_lists_and_back_as_rings_empty() {
        let mut n = Names::default();
        track(&mut n, 0..PACKED_MAX, 10);
        assert!(matches!(n, Names::Packed { .. }));
        let packed = estimates(&n);
        assert_eq!(packed.len(), PACKED_MAX);
        assert!(packed.iter().all(|(k, e)| {
            let i: usize = std::str::from_utf8(k).unwrap()[7..]
                .split('_')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            *e == (1 + i % 3) as f64
        }));
        // Again: the same names, no new ones.
        track(&mut n, 0..PACKED_MAX, 10);
        assert_eq!(estimates(&n), packed);

        // One more name: a map, with the same names and rings.
        track(&mut n, PACKED_MAX..PACKED_MAX + 1, 11);
        assert!(matches!(n, Names::Map(_)));
        assert_eq!(
            estimates(&n)[..],
            {
                let mut all = packed.clone();
                all.push((name(PACKED_MAX), (1 + PACKED_MAX % 3) as f64));
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            }[..]
        );

        // The first names come again a slice later; slice 13 takes the others out of the
        // window (3 slices): a map while above `PACKED_BACK`...
        track(&mut n, 0..PACKED_BACK, 12);
        n.for_each_ring(|r| r.clear_slot(13));
        n.retain_nonempty();
        assert!(matches!(n, Names::Map(_)));
        assert_eq!(n.len(), PACKED_BACK + 1);
        // ...packed again at it.
        n.for_each_ring(|r| r.clear_slot(14));
        n.retain_nonempty();
        assert!(matches!(n, Names::Packed { .. }));
        assert_eq!(
            estimates(&n),
            packed[..]
                .iter()
                .filter(|(k, _)| { (0..PACKED_BACK).any(|i| name(i) == *k) })
                .cloned()
                .collect::<Vec<_>>()
        );
        assert_eq!(n.len(), PACKED_BACK);

        // Then nothing: no memory left.
        n.for_each_ring(|r| r.clear_slot(15));
        n.retain_nonempty();
        assert_eq!((n.len(), n.memory_bytes()), (0, 0));
    }

    #[test]
    fn the_cap_holds_both_ways_and_insert_replaces() {
        for cap in [3, 20] {
            let mut n = Names::default();
            for i in 0..30 {
                let got = n.get_or_insert(&name(i), cap, || SketchRing::new(3, OFFENDER_PRECISION));
                assert_eq!(got.is_some(), i < cap, "cap {cap}, name {i}");
            }
            assert_eq!(n.len(), cap);
            // A known name is found at the cap.
            assert!(n.get_or_insert(&name(0), cap, || unreachable!()).is_some());
        }
        let mut n = Names::default();
        let mut r = SketchRing::new(3, OFFENDER_PRECISION);
        r.insert(1, 7);
        r.insert(1, 8);
        n.insert(b"a", SketchRing::new(3, OFFENDER_PRECISION));
        n.insert(b"a", r);
        assert_eq!(estimates(&n), vec![(b"a".to_vec(), 2.0)]);
    }
}
