//! Distinct-series estimates: HyperLogLog++ sketches (crate `hyperloglogplus`) fed with series
//! ids, which are already good 64-bit hashes, so the sketch's hasher passes them through.
//!
//! Small sets stay in the sparse representation (a few bytes per id, exact-ish); large ones
//! switch to 2^precision registers (12 KiB at precision 14, standard error 0.81%).

use std::hash::{BuildHasher, Hasher};

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};

/// Precision of the per-service demand sketches: 0.81% standard error.
pub const DEMAND_PRECISION: u8 = 14;
/// Precision of the per-metric and per-label "top offender" sketches: 3.3% standard error,
/// 768 bytes when dense. Ranking offenders needs no more, and an owner may hold hundreds.
pub const OFFENDER_PRECISION: u8 = 10;

/// Hands a series id to the sketch unchanged: hashing a hash again buys nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassThrough;

/// The hasher behind `PassThrough`.
#[derive(Debug, Default)]
pub struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 ids are inserted; any other input still gets a deterministic mix.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

/// An estimate of how many distinct ids were inserted.
#[derive(Clone)]
pub struct Sketch {
    hll: HyperLogLogPlus<u64, PassThrough>,
    precision: u8,
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch")
            .field("precision", &self.precision)
            .finish()
    }
}

impl Sketch {
    /// `precision` must be 4..=18; the constants above are what cardguard uses.
    pub fn new(precision: u8) -> Self {
        let precision = precision.clamp(4, 18);
        Sketch {
            // In range by the clamp above, so this cannot fail.
            hll: HyperLogLogPlus::new(precision, PassThrough).unwrap_or_else(|_| unreachable!()),
            precision,
        }
    }

    pub fn insert(&mut self, id: u64) {
        self.hll.insert(&id);
    }

    /// Fold `other` in (same precision); afterwards this estimates the union.
    pub fn merge(&mut self, other: &Sketch) {
        // Precisions always match here: sketches of one kind share a constant.
        let _ = self.hll.merge(&other.hll);
    }

    /// The estimate. Takes `&mut` because the sketch compacts pending sparse entries first.
    pub fn count(&mut self) -> f64 {
        self.hll.count()
    }

    pub fn precision(&self) -> u8 {
        self.precision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64_with_seed;

    fn ids(n: u64, seed: u64) -> impl Iterator<Item = u64> {
        (0..n).map(move |i| xxh3_64_with_seed(&i.to_le_bytes(), seed))
    }

    /// The bar: within 2% at precision 14 from 1k to 1M distinct series.
    #[test]
    fn demand_estimate_within_two_percent() {
        for (n, seed) in [(1_000u64, 1u64), (10_000, 2), (100_000, 3), (1_000_000, 4)] {
            let mut s = Sketch::new(DEMAND_PRECISION);
            for id in ids(n, seed) {
                s.insert(id);
            }
            let est = s.count();
            let err = (est - n as f64).abs() / n as f64;
            assert!(
                err < 0.02,
                "n={n}: estimate {est:.0}, error {:.2}%",
                err * 100.0
            );
        }
    }

    #[test]
    fn reinserting_does_not_grow_the_estimate() {
        let mut s = Sketch::new(DEMAND_PRECISION);
        for _ in 0..3 {
            for id in ids(5_000, 9) {
                s.insert(id);
            }
        }
        let est = s.count();
        assert!((est - 5_000.0).abs() / 5_000.0 < 0.02, "{est}");
    }

    #[test]
    fn merge_estimates_the_union() {
        let mut a = Sketch::new(DEMAND_PRECISION);
        let mut b = Sketch::new(DEMAND_PRECISION);
        for id in ids(30_000, 5) {
            a.insert(id);
        }
        // b overlaps a in 10k ids and adds 20k new ones.
        for id in ids(30_000, 5).skip(20_000).chain(ids(20_000, 6)) {
            b.insert(id);
        }
        a.merge(&b);
        let est = a.count();
        assert!((est - 50_000.0).abs() / 50_000.0 < 0.02, "{est}");
    }

    proptest::proptest! {
        // A fixed seed: an estimator with 0.81% standard error misses a 2% bound now and then
        // (about 1 in 70 sets), and a test that fails by chance is worse than none.
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 16,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed),
            ..Default::default()
        })]
        #[test]
        fn random_sets_within_two_percent(n in 1_000u64..200_000, seed in proptest::prelude::any::<u64>()) {
            let mut s = Sketch::new(DEMAND_PRECISION);
            for id in ids(n, seed) {
                s.insert(id);
            }
            let est = s.count();
            proptest::prop_assert!((est - n as f64).abs() / (n as f64) < 0.02, "n={} est={}", n, est);
        }
    }
}
