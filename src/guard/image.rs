//! The guard's state as plain data, for snapshots (`storage`): what a restart must not forget
//! so that admission is not first-come again. Copied out under each owner's lock (a memcpy of
//! its tables and sketches, never the encoding), and put back before the listener opens.

use super::sketch::Sketch;
use super::table::SeriesTable;

/// Every owner, and what their state is only valid under.
#[derive(Debug, Clone, Default)]
pub struct GuardImage {
    /// Slice length and count: slice numbers and tags mean something only under the same.
    pub slice_ms: u64,
    pub slices: u8,
    /// A hash of `hash_seed`: series ids mean something only under the same seed.
    pub seed_check: u64,
    pub owners: Vec<OwnerImage>,
}

/// One owner's admission state. Its budget is not kept: it comes from the config in force.
#[derive(Debug, Clone)]
pub struct OwnerImage {
    pub tenant: Option<String>,
    pub owner: Option<String>,
    pub slice: u64,
    pub last_seen: u64,
    /// Admitted series ids with their slice tags, by metric-name hash.
    pub metrics: Vec<(u64, SeriesTable)>,
    /// Distinct value hashes with their slice tags, by limited label name.
    pub label_values: Vec<(String, SeriesTable)>,
    pub demand: RingImage,
    pub metric_demand: Vec<(Vec<u8>, RingImage)>,
    pub label_demand: Vec<(Vec<u8>, RingImage)>,
}

/// A ring of per-slice sketches.
#[derive(Debug, Clone)]
pub struct RingImage {
    pub precision: u8,
    pub slices: Vec<Option<Sketch>>,
}

/// One overflow aggregate with its members, whose latest values and the base keep the
/// aggregate's counter sums monotonic across a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateImage {
    pub key: u64,
    pub tenant: Option<String>,
    pub labels: Vec<(String, String)>,
    /// 0 counter; gauges 1 sum, 2 max, 3 min, 4 last.
    pub kind: u8,
    /// `(member id, value, timestamp, seen_ms)`.
    pub members: Vec<(u64, f64, i64, i64)>,
    pub base: f64,
    pub timestamp: i64,
    pub emitted: i64,
    pub dirty: bool,
}

/// The hash of a seed stored in snapshots (not the seed itself: it guards against crafted
/// collisions, and a snapshot file may be read by more people than the config).
pub fn seed_check(seed: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(b"cardguard snapshot seed", seed)
}

/// Why a saved guard state does not fit the config in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("guard.window or guard.window_slices changed since the snapshot")]
    Window,
    #[error("guard.hash_seed changed since the snapshot")]
    Seed,
    #[error("an owner's sketches do not match the window: {0}")]
    Sketches(&'static str),
}
