//! Series identity and ownership.
//!
//! A series id is a seeded 64-bit xxh3 of its label pairs in canonical (byte-sorted) order,
//! computed from the label bytes borrowed off the wire. The seed comes from the config so that
//! replicas (and snapshots) agree on ids. Labels that arrive unsorted are hashed in sorted
//! order, so the same series always gets the same id whatever order a sender used.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// 0xFF never occurs in UTF-8, so it separates names and values unambiguously.
const SEP: u8 = 0xFF;

/// Reusable state for hashing series; one per worker thread.
#[derive(Debug, Default)]
pub struct Identity {
    canonical: Vec<u8>,
}

impl Identity {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the series with these labels. `labels` may come in any order.
    pub fn series_id<'a, I>(&mut self, seed: u64, labels: I) -> u64
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        self.canonical.clear();
        let mut prev: &[u8] = &[];
        let mut sorted = true;
        for (name, value) in labels.clone() {
            if name < prev {
                sorted = false;
                break;
            }
            prev = name;
            push_pair(&mut self.canonical, name, value);
        }
        if !sorted {
            // Rare (Prometheus sorts): pay for a sort only here.
            let mut pairs: Vec<(&[u8], &[u8])> = labels.collect();
            pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
            self.canonical.clear();
            for (name, value) in pairs {
                push_pair(&mut self.canonical, name, value);
            }
        }
        xxh3_64_with_seed(&self.canonical, seed)
    }
}

fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.push(SEP);
    out.extend_from_slice(value);
    out.push(SEP);
}

/// The owner of a series: the value of the first owner label present (e.g. `[service, job]`).
pub fn owner<'a, I>(owner_labels: &[String], labels: I) -> Option<&'a [u8]>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    owner_labels.iter().find_map(|want| {
        labels
            .clone()
            .find(|(name, value)| *name == want.as_bytes() && !value.is_empty())
            .map(|(_, value)| value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(seed: u64, labels: &[(&str, &str)]) -> u64 {
        Identity::new().series_id(
            seed,
            labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        )
    }

    #[test]
    fn order_of_labels_does_not_matter() {
        let a = id(0, &[("__name__", "up"), ("job", "x"), ("zone", "a")]);
        let b = id(0, &[("zone", "a"), ("__name__", "up"), ("job", "x")]);
        assert_eq!(a, b);
    }

    #[test]
    fn seed_and_boundaries_matter() {
        let base = id(0, &[("__name__", "up"), ("job", "x")]);
        assert_ne!(base, id(1, &[("__name__", "up"), ("job", "x")]));
        // Moving bytes between name and value must change the id.
        assert_ne!(id(0, &[("ab", "c")]), id(0, &[("a", "bc")]));
        assert_ne!(
            id(0, &[("a", "b"), ("c", "d")]),
            id(0, &[("a", "b\u{0}c"), ("", "d")])
        );
    }

    #[test]
    fn owner_uses_first_label_present() {
        let labels = [("__name__", "up"), ("job", "api"), ("service", "checkout")];
        let it = labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let owners = vec!["service".to_string(), "job".to_string()];
        assert_eq!(owner(&owners, it.clone()), Some(&b"checkout"[..]));
        let owners = vec!["team".to_string(), "job".to_string()];
        assert_eq!(owner(&owners, it.clone()), Some(&b"api"[..]));
        assert_eq!(owner(&["team".to_string()], it), None);
    }

    proptest! {
        #[test]
        fn any_permutation_same_id(
            labels in proptest::collection::btree_map("[a-z_]{1,8}", "[ -~]{0,8}", 1..12),
            seed in any::<u64>(),
            rot in 0usize..12,
        ) {
            let sorted: Vec<(String, String)> = labels.into_iter().collect();
            let mut shuffled = sorted.clone();
            let n = shuffled.len();
            shuffled.rotate_left(rot % n);
            shuffled.reverse();
            let h = |v: &[(String, String)]| Identity::new().series_id(seed, v.iter().map(|(a, b)| (a.as_bytes(), b.as_bytes())));
            prop_assert_eq!(h(&sorted), h(&shuffled));
        }
    }
}
