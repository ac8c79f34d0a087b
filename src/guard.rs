//! The cardinality guard: the stage after relabeling and the schema that keeps each owner's
//! series inside its budget, estimates the real demand, and never drops a series that was
//! admitted before the limit was reached.
//!
//! Per request: every series is hashed to its id (`identity`). The ids kept and already seen
//! in the current slice are answered by one table (`fresh`), which only adds their samples to
//! their owners' counters. The rest are assigned to their owners, and the series of one owner
//! are decided together under that owner's lock (`owner`), so a request takes each owner lock
//! once and requests for different owners never contend.

mod config;
mod fresh;
pub mod identity;
pub mod image;
pub mod metrics;
mod names;
pub mod owner;
pub(crate) mod prefetch;
pub mod report;
mod ring;
mod runkey;
pub mod sketch;
mod slots;
pub mod table;
mod tables;
pub mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use foldhash::fast::RandomState;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::series::{Decisions, DropCounts, Reason, Verdict};
use crate::wire::{Parsed, SeriesView};
pub use config::{
    Action, Budget, BudgetRule, GaugeFunction, GuardConfig, OwnerMatch, SharedConfig, TenantPolicy,
    TenantRefused,
};
use identity::Identity;
use owner::{OwnerCounters, OwnerDelta, OwnerState, SeriesKey};
use sketch::PassThrough;
use window::Window;

/// Who owns a series: the tenant (when tenants are on) and the owner label's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    pub tenant: Option<String>,
    /// `None`: the series has none of the owner labels.
    pub owner: Option<String>,
}

impl OwnerKey {
    /// The owner as shown on /metrics and the API.
    pub fn display_name(&self) -> &str {
        self.owner.as_deref().unwrap_or(UNOWNED)
    }
}

/// The name under which series without an owner label are reported.
pub const UNOWNED: &str = "unowned";
/// Owners past `max_owners` are accounted together under this name; so are tenants past
/// `max_tenants` (as tenant `other`, service `other`).
pub const OTHER: &str = "other";
/// Owner values (and tenants) longer than this are accounted to `other`: the registry keeps
/// its keys, and a 16 KiB label value must not cost 16 KiB per owner.
pub const MAX_OWNER_KEY_BYTES: usize = 256;

/// One owner's entry in the registry. In declaration order (`repr(C)`): a steady-state
/// request adds to the counters, compares the key and takes the lock, then reads the first
/// fields of the state; with many small owners every owner of a request is cold, and these
/// together span two cache lines (with the `Arc`'s counts) instead of wherever they fall.
#[repr(C)]
pub struct Owner {
    /// Where the state's inline series lie, as the last request left them (`publish_series`):
    /// the address in the low 48 bits, their length in bytes above. Read without the lock,
    /// only to prefetch them (`find_all`), so a stale value costs a wasted prefetch at most;
    /// a steady-state series of a small owner otherwise waited for that block alone, after
    /// the state it points from.
    series_hint: AtomicU64,
    /// The owner's index in the registry (`Registry::by_index`), which the fresh table keeps
    /// instead of the owner; `NO_INDEX` for one the table cannot hold.
    index: AtomicU32,
    pub counters: OwnerCounters,
    /// The owner value as the registry compares it, in the cache line of the `Arc`'s counts
    /// and the counters: the key's `String` is a cache line of its own elsewhere, cold with
    /// many small owners, and its value nearly always short.
    short: ShortValue,
    pub key: OwnerKey,
    pub state: Mutex<OwnerState>,
}

impl Owner {
    fn new(key: OwnerKey, state: OwnerState) -> Self {
        Owner {
            series_hint: AtomicU64::new(0),
            index: AtomicU32::new(NO_INDEX),
            counters: OwnerCounters::default(),
            short: ShortValue::new(key.owner.as_deref().map(str::as_bytes)),
            key,
            state: Mutex::new(state),
        }
    }

    /// Start loading what finding this owner reads: the `Arc`'s counts before it, the hint,
    /// the counters and `short` (80 bytes, which may span three lines wherever the allocation
    /// starts).
    #[inline]
    fn prefetch_head(&self) {
        for offset in [-16, 24, 63] {
            prefetch::read_at(self, offset);
        }
    }

    /// Start loading what admitting into this owner reads: the state's lock and the fields of
    /// the state a steady-state series reads, which follow it, and the state's inline series
    /// where the last request left them (`series_hint`, in the head).
    #[inline]
    fn prefetch_state(&self) {
        for line in 0..3 {
            prefetch::read_at(&self.state, line * 64);
        }
        let hint = self.series_hint.load(Ordering::Relaxed);
        let (addr, len) = (hint & ADDRESS_BITS, hint >> 48);
        if len > 0 {
            let mut off = 0;
            while off < len {
                prefetch::read_address((addr + off) as usize);
                off += 64;
            }
            prefetch::read_address((addr + len - 1) as usize);
        }
    }

    /// Record where the state's inline series lie now, for the next request's
    /// `prefetch_series`; under the state's lock, so that the last writer is the last state.
    #[inline]
    fn publish_series(&self, state: &OwnerState) {
        let hint = match state.inline_series() {
            Some((addr, len)) if len > 0 && addr as u64 & !ADDRESS_BITS == 0 => {
                addr as u64 | (len.min(u16::MAX as usize) as u64) << 48
            }
            _ => 0,
        };
        if self.series_hint.load(Ordering::Relaxed) != hint {
            self.series_hint.store(hint, Ordering::Relaxed);
        }
    }
}

/// `Owner::index` of an owner without one: past `fresh::MAX_OWNER_INDEX`, or collided.
const NO_INDEX: u32 = u32::MAX;

/// How many owner slots ahead of the one being admitted `Guard::admit_slots` prefetches
/// states: enough misses in flight to cover one's latency with the work of the slots between.
const STATES_AHEAD: usize = 8;

/// The bits of `Owner::series_hint` that hold an address: x86_64 and aarch64 user space.
const ADDRESS_BITS: u64 = (1 << 48) - 1;

/// Owner values of at most this many bytes are compared inline (`Owner::short`).
const SHORT_VALUE: usize = 23;
/// `ShortValue`'s first byte for a longer value.
const LONG_VALUE: u8 = u8::MAX;

/// An owner value inline: its length + 1 then its bytes (0 for no value, `LONG_VALUE` for
/// one of more than `SHORT_VALUE` bytes, compared in the key).
#[derive(Clone, Copy)]
struct ShortValue([u8; SHORT_VALUE + 1]);

impl ShortValue {
    fn new(value: Option<&[u8]>) -> Self {
        let mut b = [0; SHORT_VALUE + 1];
        match value {
            None => {}
            Some(v) if v.len() <= SHORT_VALUE => {
                b[0] = v.len() as u8 + 1;
                b[1..=v.len()].copy_from_slice(v);
            }
            Some(_) => b[0] = LONG_VALUE,
        }
        ShortValue(b)
    }

    /// Whether `value` is this one; `None` when it is long (the key decides).
    #[inline]
    fn is(&self, value: Option<&[u8]>) -> Option<bool> {
        let n = self.0[0];
        if n == LONG_VALUE {
            return None;
        }
        Some(match value {
            None => n == 0,
            // The lengths first: `n` is at most `SHORT_VALUE + 1`, so the slice is in range.
            Some(v) => {
                usize::from(n) == v.len() + 1
                    && crate::wire::short_eq(&self.0[1..usize::from(n)], v)
            }
        })
    }
}

/// The guard's state. Lives as long as the process; survives config reloads.
pub struct Guard {
    /// Unique in the process: what a thread's `Scratch` knows its lane in this guard by.
    id: u64,
    owners: RwLock<Registry>,
    /// The registry's `seed`, readable without its lock.
    seed: u64,
    /// Active series across all owners.
    global_active: AtomicU64,
    /// Aggregates of the series collapsed by `relabel` budgets.
    pub overflow: overflow::Overflow,
    /// Budgets shared with other replicas (`guard.shared`), attached at start.
    shared: std::sync::OnceLock<Arc<shared::Shared>>,
    /// The series kept and already seen in this slice (`fresh`): a steady request's way
    /// past the owners.
    fresh: fresh::Fresh,
    /// What a lazily read 1.0 run is keyed by in `fresh` (`runkey`), from `seed`.
    run_keys: runkey::RunKeys,
}

/// The owners, and how many each tenant has: both bounded (`max_owners`,
/// `max_owners_per_tenant`, `max_tenants`), and owners idle for a whole window are forgotten.
struct Registry {
    /// By `key_hash` of their key, so that a request finds its owners by a hash it computed
    /// while grouping its series and the values it borrows from the request, without building
    /// an `OwnerKey` (two strings) per owner per request.
    owners: slots::Slots<Owner>,
    /// Owners whose hash another owner holds in `owners`: with a random 64-bit seed, only
    /// by accident, so almost always empty.
    collided: Vec<Arc<Owner>>,
    /// The seed of `key_hash`, random per process: owner values come from senders, and must
    /// not be able to pile up on one hash.
    seed: u64,
    /// Owners per tenant (`None`: requests without a tenant, or tenants off).
    tenants: HashMap<Option<String>, usize, RandomState>,
    /// The registry hash of the owner with each index (`Owner::index`): the fresh table
    /// names owners by index, which a request resolves here without their values. Indices
    /// of forgotten owners are given out again (`free`).
    by_index: Vec<Option<u64>>,
    /// Samples the fresh table admitted and not yet in the owners' counters, by thread
    /// (`Lane`), added when a thread first admits. Folded into the owners (`fold`) whenever
    /// they are read, and an owner's when it is forgotten.
    lanes: Vec<Arc<Lane>>,
    free: Vec<u32>,
}

/// One thread's samples admitted by the fresh table, by owner index, not yet in the owners'
/// counters. A request adds to each of its owners here, to a dense array that stays in
/// cache, instead of reaching each owner, which with many small owners was a cache miss and
/// a locked add per owner per request. Only its thread writes it, with a load and a store,
/// under the read lock (once per request); `Registry::fold` takes the write lock to move the
/// counts into the owners, so no add is lost between its load and its store.
#[derive(Default)]
struct Lane(RwLock<Vec<AtomicU64>>);

impl Lane {
    /// The counts, read-locked, with room for owner indices up to `n`.
    fn at_least(&self, n: usize) -> std::sync::RwLockReadGuard<'_, Vec<AtomicU64>> {
        let counts = self.0.read().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= n {
            return counts;
        }
        drop(counts);
        let mut grown = self.0.write().unwrap_or_else(|e| e.into_inner());
        if grown.len() < n {
            // In steps of a few KiB, not doubling: a lane per thread, 8 bytes an owner each.
            let want = n.next_multiple_of(1024);
            let have = grown.len();
            grown.reserve_exact(want - have);
            grown.resize_with(want, AtomicU64::default);
        }
        drop(grown);
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Call `f` with each owner index's count, taken out (write-locked: no add in between).
    fn drain(&self, mut f: impl FnMut(usize, u64)) {
        let counts = self.0.write().unwrap_or_else(|e| e.into_inner());
        for (i, c) in counts.iter().enumerate() {
            if c.load(Ordering::Relaxed) != 0 {
                f(i, c.swap(0, Ordering::Relaxed));
            }
        }
    }

    /// Owner index `i`'s count, taken out.
    fn take(&self, i: usize) -> u64 {
        let counts = self.0.write().unwrap_or_else(|e| e.into_inner());
        counts.get(i).map_or(0, |c| c.swap(0, Ordering::Relaxed))
    }
}

/// The seed of the owner hashes of one tenant's owners (`key_hash`).
fn tenant_seed(seed: u64, tenant: Option<&str>) -> u64 {
    tenant.map_or(seed, |t| xxh3_64_with_seed(t.as_bytes(), seed))
}

#[cfg(test)]
thread_local! {
    /// Tests put every owner on one registry hash, to drive the collision paths that a random
    /// 64-bit seed only reaches by accident.
    static COLLIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// An owner's registry hash, from its tenant's seed (`tenant_seed`) and its value.
#[inline]
fn key_hash(tenant_seed: u64, owner: Option<&[u8]>) -> u64 {
    #[cfg(test)]
    if COLLIDE.with(std::cell::Cell::get) {
        return 7;
    }
    owner.map_or(!tenant_seed, |o| xxh3_64_with_seed(o, tenant_seed))
}

/// `key`'s registry hash under the registry's `seed`.
fn owner_hash(seed: u64, key: &OwnerKey) -> u64 {
    key_hash(
        tenant_seed(seed, key.tenant.as_deref()),
        key.owner.as_deref().map(str::as_bytes),
    )
}

/// Whether `o` is the owner with this tenant and value.
#[inline]
fn is_owner(o: &Owner, tenant: Option<&str>, owner: Option<&[u8]>) -> bool {
    let same = match o.short.is(owner) {
        Some(same) => same,
        None => o.key.owner.as_deref().map(str::as_bytes) == owner,
    };
    same && o.key.tenant.as_deref() == tenant
}

impl Registry {
    fn new() -> Self {
        Registry {
            owners: slots::Slots::default(),
            collided: Vec::new(),
            seed: std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u64),
            tenants: HashMap::default(),
            by_index: Vec::new(),
            lanes: Vec::new(),
            free: Vec::new(),
        }
    }

    /// The owner with index `i` (`Owner::index`).
    fn by_index(&self, i: u32) -> Option<&Arc<Owner>> {
        let h = (*self.by_index.get(i as usize)?)?;
        self.owners
            .get(h)
            .filter(|o| o.index.load(Ordering::Relaxed) == i)
    }

    fn hash(&self, key: &OwnerKey) -> u64 {
        owner_hash(self.seed, key)
    }

    /// Every owner's samples held in the lanes into its counters, before they are read.
    fn fold(&self) {
        for lane in &self.lanes {
            lane.drain(|i, n| {
                if let Some(o) = self.by_index(i as u32) {
                    o.counters.add_samples(n);
                }
            });
        }
    }

    /// The owner with this tenant and value, `h` its `key_hash`.
    #[inline]
    fn find(&self, h: u64, tenant: Option<&str>, owner: Option<&[u8]>) -> Option<&Arc<Owner>> {
        self.confirm(self.owners.get(h), tenant, owner)
    }

    /// `find`'s answer from the entry under the owner's hash.
    #[inline]
    fn confirm<'r>(
        &'r self,
        entry: Option<&'r Arc<Owner>>,
        tenant: Option<&str>,
        owner: Option<&[u8]>,
    ) -> Option<&'r Arc<Owner>> {
        match entry {
            Some(o) if is_owner(o, tenant, owner) => Some(o),
            Some(_) => self.collided.iter().find(|o| is_owner(o, tenant, owner)),
            None => None,
        }
    }

    /// `find` for every owner of a request (`owners`: hash and value by slot), appended to
    /// `out`. With many small owners each is cold, and one `find` after another waited for
    /// its misses in turn (the slot, then the owner's value), the second needing the first.
    /// Here each step is asked for across all the owners before any is read: the slots, then
    /// the owners' heads, then the values compared.
    fn find_all<'r, 'a>(
        &'r self,
        tenant: Option<&str>,
        owners: impl Iterator<Item = (u64, Option<&'a [u8]>)> + Clone,
        out: &mut Vec<Option<&'r Arc<Owner>>>,
    ) {
        for (h, _) in owners.clone() {
            self.owners.prefetch(h);
        }
        let start = out.len();
        out.extend(owners.clone().map(|(h, _)| {
            let e = self.owners.get(h);
            if let Some(o) = e {
                o.prefetch_head();
            }
            e
        }));
        for (e, (_, name)) in out[start..].iter_mut().zip(owners) {
            *e = self.confirm(*e, tenant, name);
        }
    }

    fn get(&self, key: &OwnerKey) -> Option<&Arc<Owner>> {
        self.get_hashed(self.hash(key), key)
    }

    fn get_hashed(&self, h: u64, key: &OwnerKey) -> Option<&Arc<Owner>> {
        let owner = key.owner.as_deref().map(str::as_bytes);
        self.find(h, key.tenant.as_deref(), owner)
    }

    fn len(&self) -> usize {
        self.owners.len() + self.collided.len()
    }

    fn values(&self) -> impl Iterator<Item = &Arc<Owner>> {
        self.owners.values().chain(&self.collided)
    }

    /// Where a new owner goes: itself while the caps allow, else its tenant's `other`, else
    /// (a tenant past `max_tenants`) the shared `other` of tenant `other`.
    fn place(&self, cfg: &GuardConfig, key: &OwnerKey) -> OwnerKey {
        let other = |tenant: Option<String>| OwnerKey {
            tenant,
            owner: Some(OTHER.to_string()),
        };
        let tenant_known = self.tenants.contains_key(&key.tenant);
        let tenants_full = self.tenants.keys().filter(|t| t.is_some()).count() >= cfg.max_tenants;
        if let Some(t) = &key.tenant {
            if t.len() > MAX_OWNER_KEY_BYTES || (!tenant_known && tenants_full) {
                return other(Some(OTHER.to_string()));
            }
        }
        let per_tenant = self.tenants.get(&key.tenant).copied().unwrap_or(0);
        let long = key
            .owner
            .as_ref()
            .is_some_and(|o| o.len() > MAX_OWNER_KEY_BYTES);
        // The per-tenant cap shares capacity out among tenants; without one (no
        // `tenant_header`, or a request without the header) `max_owners` alone applies.
        let tenant_full = key.tenant.is_some() && per_tenant >= cfg.max_owners_per_tenant;
        if long || self.len() >= cfg.max_owners || tenant_full {
            return other(key.tenant.clone());
        }
        key.clone()
    }

    fn insert(&mut self, key: OwnerKey, owner: impl FnOnce(&OwnerKey) -> Arc<Owner>) -> Arc<Owner> {
        let h = self.hash(&key);
        if let Some(o) = self.get_hashed(h, &key) {
            return o.clone();
        }
        let o = owner(&key);
        *self.tenants.entry(key.tenant).or_default() += 1;
        match self.owners.insert(h, o.clone()) {
            Ok(()) => {
                let i = self.free.pop().or_else(|| {
                    let i = u32::try_from(self.by_index.len()).ok()?;
                    (i <= fresh::MAX_OWNER_INDEX).then(|| {
                        self.by_index.push(None);
                        i
                    })
                });
                if let Some(i) = i {
                    self.by_index[i as usize] = Some(h);
                    o.index.store(i, Ordering::Relaxed);
                }
            }
            // Without an index: by its hash, `by_index` would find the other owner.
            Err(o) => self.collided.push(o),
        }
        o
    }

    fn remove(&mut self, key: &OwnerKey) {
        let h = self.hash(key);
        let removed = if self.owners.get(h).is_some_and(|o| o.key == *key) {
            if let Some(o) = self.owners.remove(h) {
                let i = o.index.load(Ordering::Relaxed);
                // Its samples to the owner (a report may still hold it), and none to whoever
                // takes the index next.
                for lane in &self.lanes {
                    o.counters.add_samples(lane.take(i as usize));
                }
                if let Some(e) = self.by_index.get_mut(i as usize) {
                    *e = None;
                    self.free.push(i);
                }
            }
            // A collided owner of the same hash takes the free place.
            let seed = self.seed;
            let same = |o: &Arc<Owner>| owner_hash(seed, &o.key) == h;
            if let Some(p) = self.collided.iter().position(same) {
                let o = self.collided.swap_remove(p);
                // The hash's place was just freed.
                let _ = self.owners.insert(h, o);
            }
            true
        } else if let Some(p) = self.collided.iter().position(|o| o.key == *key) {
            self.collided.swap_remove(p);
            true
        } else {
            false
        };
        if removed {
            if let Some(n) = self.tenants.get_mut(&key.tenant) {
                *n -= 1;
                if *n == 0 {
                    self.tenants.remove(&key.tenant);
                }
            }
        }
    }
}

/// Per-request totals of the guard's own decisions, for the request's accounting. Series an
/// earlier stage dropped are counted against their owner but not here: they are that stage's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionCounts {
    pub kept_series: u64,
    pub dropped_series: u64,
    pub dropped_samples: u64,
    /// Series taken out of the request and merged into overflow aggregates.
    pub overflowed_series: u64,
}

impl AdmissionCounts {
    pub fn dropped(&self) -> DropCounts {
        DropCounts {
            dropped_series: self.dropped_series,
            dropped_samples: self.dropped_samples,
        }
    }
}

/// One request as the guard sees it.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub req: &'a Parsed,
    /// The buffer `req` was parsed from.
    pub buf: &'a [u8],
    /// The request's tenant, used when `tenant_header` is configured.
    pub tenant: Option<&'a str>,
    pub now_ms: i64,
}

impl<'a> Batch<'a> {
    /// The id of series `i`, whose labels as the guard sees them are `labels()`. Labels no
    /// earlier stage rewrote are hashed where they lie when the request holds them in
    /// canonical form, and built without an order check when `Parsed::validate` found their
    /// names sorted (all 2.0 series); anything else is built and checked (see `identity`).
    /// A 2.0 series read lazily gets its key instead (`Identity::refs_key`), or `None` when
    /// its refs cannot be resolved.
    fn series_id<'l, L>(
        &self,
        decisions: &Decisions,
        i: usize,
        labels: impl FnOnce() -> L,
        identity: &mut Identity,
        run_keys: &runkey::RunKeys,
        seed: u64,
    ) -> Option<u64>
    where
        L: Iterator<Item = (&'l [u8], &'l [u8])> + Clone,
    {
        if decisions.rewritten(i).is_none() {
            let view = self.req.series(self.buf, i);
            // Not checked yet: taken to be canonical, which `admit` confirms for every such
            // series the fresh table does not know (a known one is those very bytes). Known
            // by its run's key (`runkey`); its id is made only if the table does not know it.
            if let Some(run) = view.lazy_run() {
                return Some(run_keys.key(seed, run));
            }
            // Not checked either: known by its strings (`Identity::refs_key`). Its id is
            // made only if the table does not know it.
            if let Some(refs) = view.lazy_refs() {
                return identity.refs_key(seed, refs);
            }
            if let Some(raw) = view.canonical_labels() {
                return Some(identity::raw_id(seed, raw));
            }
            if view.sorted() == Some(true) {
                return Some(identity.sorted_series_id(seed, labels()));
            }
        }
        Some(identity.series_id(seed, labels()))
    }
}

/// Buffers reused by every request on one thread.
#[derive(Default)]
pub struct Scratch {
    identity: Identity,
    /// (owner slot in `owners`, series index, series id), in request order.
    series: Vec<(u32, u32, u64)>,
    /// `series` grouped by owner slot (request order kept within a slot).
    grouped: Vec<(u32, u32, u64)>,
    /// Series per owner slot, then each slot's start in `grouped`.
    slot_counts: Vec<u32>,
    /// The request's owners by slot: their registry hash (`key_hash`) and where their value
    /// is in `names` (`None`: no owner label).
    owners: Vec<(u64, Option<(u32, u32)>)>,
    /// The owners' values back to back: copied without an allocation per owner.
    names: Vec<u8>,
    /// Owner slot by the owner's hash: one lookup per series instead of comparing the value
    /// with every owner of the request.
    slots: HashMap<u64, u32, PassThrough>,
    /// The owners of the request's slots that the registry did not have under their value
    /// (new, or accounted elsewhere), by slot; empty when it had them all.
    found: Vec<Option<Arc<Owner>>>,
    /// The metric hash of each series, in request order: found with its id, used to
    /// prefetch its table slots and to admit it.
    metric_keys: Vec<u64>,
    /// The id of each series, in request order.
    ids: Vec<u64>,
    /// The series whose id cannot be known before they are checked (`Batch::series_id`).
    unknown: Vec<usize>,
    /// What the fresh table knows each series by, in request order: its id, but for
    /// series read lazily whose bytes are not their canonical labels (`Batch::series_id`).
    keys: Vec<u64>,
    /// What the fresh table holds of each series, in request order.
    hits: Vec<Option<fresh::Entry>>,
    /// This thread's lane (`Lane`) in the guard of that id, where the samples of the series
    /// the fresh table answered are counted.
    lane: Option<(u64, Arc<Lane>)>,
    /// The refusals the fresh table answered, by owner index, a run of one owner's together.
    fresh_drops: Vec<(u32, OwnerDelta)>,
}

/// Two owner values equal (`short_eq`: no memcmp call for a short value).
#[inline(always)]
fn same_owner(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => crate::wire::short_eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

impl Scratch {
    /// The same thread's scratch with every buffer let go; the lane stays (see `lane`).
    pub fn released(self) -> Scratch {
        Scratch {
            lane: self.lane,
            ..Scratch::default()
        }
    }

    /// Count a series the fresh table refused (`r`), with `samples`, to owner `index`.
    fn drop_fresh(&mut self, index: u32, r: Reason, samples: u64) {
        match self.fresh_drops.last_mut() {
            Some((i, d)) if *i == index => d.dropped(r, samples),
            _ => {
                let mut d = OwnerDelta::default();
                d.dropped(r, samples);
                self.fresh_drops.push((index, d));
            }
        }
    }

    /// The registry hash and value of the owner of every slot, in slot order.
    fn slots_iter(&self) -> impl Iterator<Item = (u64, Option<&[u8]>)> + Clone {
        self.owners.iter().map(|&(h, at)| {
            (
                h,
                at.map(|(from, to)| &self.names[from as usize..to as usize]),
            )
        })
    }

    /// The registry hash and value of the owner in `slot`.
    #[inline]
    fn owner(&self, slot: u32) -> (u64, Option<&[u8]>) {
        let (h, at) = self.owners[slot as usize];
        (
            h,
            at.map(|(from, to)| &self.names[from as usize..to as usize]),
        )
    }
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

/// How many series ahead the fresh table's buckets are asked for.
const FRESH_AHEAD: usize = 16;

impl Guard {
    pub fn new() -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let owners = Registry::new();
        Guard {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            seed: owners.seed,
            run_keys: runkey::RunKeys::new(owners.seed),
            owners: RwLock::new(owners),
            global_active: AtomicU64::new(0),
            overflow: overflow::Overflow::default(),
            shared: std::sync::OnceLock::new(),
            fresh: fresh::Fresh::default(),
        }
    }

    /// Share the budgets through Redis from now on (once, at start).
    pub fn attach_shared(&self, shared: Arc<shared::Shared>) {
        let _ = self.shared.set(shared);
    }

    pub fn shared(&self) -> Option<&Arc<shared::Shared>> {
        self.shared.get()
    }

    pub fn global_active(&self) -> u64 {
        self.global_active.load(Ordering::Relaxed)
    }

    /// Decide every series of a parsed request that no earlier stage dropped, into
    /// `decisions` (sized for this request: `Decisions::reset`). The guard identifies and owns
    /// a series by its labels as `decisions` has them (rewritten by an earlier stage or not);
    /// series an earlier stage dropped are counted against their owner but not admitted.
    ///
    /// Series read lazily (`Parsed::set_lazy_labels`) are checked here, those the fresh table
    /// does not know, before anything is counted: one that fails fails the request, with
    /// nothing decided.
    pub fn admit(
        &self,
        cfg: &GuardConfig,
        batch: Batch<'_>,
        decisions: &mut Decisions,
        scratch: &mut Scratch,
    ) -> Result<AdmissionCounts, crate::wire::WireError> {
        let Batch {
            req,
            buf,
            tenant,
            now_ms,
        } = batch;
        let window = Window::new(cfg.window, cfg.window_slices);
        let now = window.slice(now_ms);
        let tenant = cfg.tenant_header.as_ref().and(tenant);
        let seed = tenant_seed(self.seed, tenant);

        // The fresh table first (see `fresh`): every series' id, then each one's bucket asked
        // for `FRESH_AHEAD` series before it is read. Asking for all of a request's buckets
        // up front stalled on the cache's few outstanding misses, and the first were evicted
        // before they were read. Shared budgets keep to the owners' way: Redis is told of a
        // series' first sighting in a slice, and knows the rest.
        let fresh = cfg.shared.is_none().then(|| self.fresh.view());
        let salt = fresh::salt(seed, now, cfg.generation);
        scratch.ids.clear();
        scratch.unknown.clear();
        if req.has_lazy() && req.version() == crate::wire::Version::V2 {
            scratch.identity.begin(cfg.hash_seed, &req.symbols, buf);
        }
        for i in 0..req.len() {
            let labels = || decisions.labels(req, buf, i);
            let id = batch.series_id(
                decisions,
                i,
                labels,
                &mut scratch.identity,
                &self.run_keys,
                cfg.hash_seed,
            );
            if id.is_none() {
                scratch.unknown.push(i);
            }
            scratch.ids.push(id.unwrap_or_default());
        }
        if let Some(f) = &fresh {
            for &id in scratch.ids.iter().take(FRESH_AHEAD) {
                f.prefetch(fresh::key(id, salt));
            }
        }
        // What the table holds of each series. What an earlier stage dropped is counted
        // against its owner: the owners' way.
        let lookup = |i: usize, id: u64| {
            fresh
                .as_ref()
                .filter(|_| decisions.kept(i))
                .and_then(|f| f.get(fresh::key(id, salt)))
        };
        scratch.hits.clear();
        for i in 0..req.len() {
            if let (Some(f), Some(&ahead)) = (&fresh, scratch.ids.get(i + FRESH_AHEAD)) {
                f.prefetch(fresh::key(ahead, salt));
            }
            scratch.hits.push(lookup(i, scratch.ids[i]));
        }
        for &i in &scratch.unknown {
            scratch.hits[i] = None;
        }
        // What the table is to know each series by, from now on (`Batch::series_id`).
        scratch.keys.clear();
        scratch.keys.extend_from_slice(&scratch.ids);
        // Series read lazily that the table does not know are checked before anything is
        // counted. One whose names turn out unsorted has another id (built in canonical
        // order), which the table is asked again. A guessed run (`Parsed::set_guessed_runs`)
        // is settled first; one that does not settle sends the request back to be read
        // without guesses.
        let read_lazily = if req.has_lazy() { req.len() } else { 0 };
        for i in 0..read_lazily {
            if scratch.hits[i].is_some() || !req.lazy(i) {
                continue;
            }
            if !req.settle_guess(buf, i) {
                return Err(crate::wire::WireError::UnsettledGuess { series: i });
            }
            let view = req.series(buf, i);
            // Asked again by its id, which a series read in full is known by. When that
            // knows it, it is put by its key too, which the next request asks first; when
            // not, the owners' way puts it by its key.
            let canonical = view.check_lazy(i)?;
            let id = match view.lazy_run() {
                Some(run) if canonical => identity::raw_id(cfg.hash_seed, run),
                _ => scratch.identity.series_id(cfg.hash_seed, view.labels()),
            };
            if id != scratch.keys[i] {
                scratch.ids[i] = id;
                scratch.hits[i] = lookup(i, id);
                if let (Some(f), Some(hit)) = (&fresh, scratch.hits[i]) {
                    f.insert(fresh::key(scratch.keys[i], salt), hit);
                }
            }
        }

        // What the fresh table decided (no overflow: `relabel` budgets are not kept there).
        let mut by_fresh = AdmissionCounts::default();
        // Its kept series' samples go straight to this thread's lane, under the registry's
        // read lock (an index is given to another owner only under the write lock, once its
        // samples were folded) and the lane's, long enough for every index the table holds.
        let lane = fresh.as_ref().map(|_| self.lane(scratch));
        let reg = lane
            .as_ref()
            .map(|_| self.owners.read().unwrap_or_else(|e| e.into_inner()));
        let counts = lane
            .as_ref()
            .zip(reg.as_ref())
            .map(|(l, r)| l.at_least(r.by_index.len()));

        // Group the rest by owner: one lock per owner per request. The tenant is the same
        // for every series of a request, so the owner's value alone picks the slot.
        scratch.series.clear();
        scratch.owners.clear();
        scratch.names.clear();
        scratch.slots.clear();
        scratch.slot_counts.clear();
        scratch.metric_keys.clear();
        for i in 0..req.len() {
            let id = scratch.ids[i];
            if let Some(hit) = scratch.hits[i] {
                let s = req.series(buf, i);
                let samples = (s.sample_count() + s.histogram_count()) as u64;
                if hit.refused {
                    // Still over its owner's budget. The global cap, which `check` tries
                    // first, may have been reached since: then it is the reason.
                    let global = self.global_active.load(Ordering::Relaxed);
                    let r = match cfg.max_series {
                        Some(cap) if global >= cap => Reason::GlobalCap,
                        _ => Reason::Budget,
                    };
                    scratch.drop_fresh(hit.owner, r, samples);
                    decisions.decide(i, Verdict::Drop(r));
                    by_fresh.dropped_series += 1;
                    by_fresh.dropped_samples += samples;
                } else {
                    if let Some(c) = counts.as_ref().and_then(|c| c.get(hit.owner as usize)) {
                        c.store(c.load(Ordering::Relaxed) + samples, Ordering::Relaxed);
                    }
                    by_fresh.kept_series += 1;
                }
                scratch.metric_keys.push(0);
                continue;
            }
            let labels = decisions.labels(req, buf, i);
            scratch
                .metric_keys
                .push(owner::value_hash(owner::metric_of(labels.clone())));
            let owner = identity::owner(&cfg.owner_labels, labels);
            // Senders group a target's series together: the previous series' owner first.
            if let Some(&(last, _, _)) = scratch.series.last() {
                if same_owner(scratch.owner(last).1, owner) {
                    scratch.slot_counts[last as usize] += 1;
                    scratch.series.push((last, i as u32, id));
                    continue;
                }
            }
            let h = key_hash(seed, owner);
            // One probe: the slot a new owner will have is taken now, if the hash is free.
            let hit = match scratch.slots.entry(h) {
                std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(scratch.owners.len() as u32);
                    None
                }
            };
            let found = match hit {
                Some(p) if same_owner(scratch.owner(p).1, owner) => Some(p as usize),
                // A 64-bit hash collision between two owners of one request: compare values.
                Some(_) => {
                    (0..scratch.owners.len() as u32).rposition(|p| scratch.owner(p).1 == owner)
                }
                // No owner of this request has this hash, so none has this value: no scan
                // (which, with a thousand owners in a request, was quadratic).
                None => None,
            };
            let slot = match found {
                Some(p) => p,
                None => {
                    let at = owner.map(|o| {
                        let from = scratch.names.len() as u32;
                        scratch.names.extend_from_slice(o);
                        (from, scratch.names.len() as u32)
                    });
                    scratch.owners.push((h, at));
                    scratch.slot_counts.push(0);
                    scratch.owners.len() - 1
                }
            };
            scratch.slot_counts[slot] += 1;
            scratch.series.push((slot as u32, i as u32, id));
        }
        drop(counts);
        drop(reg);
        // Counting sort by slot (stable, so request order holds within an owner): linear,
        // where a comparison sort of 2000 entries was a visible share of the request. It
        // leaves in `slot_counts` where each slot's series end.
        let mut next = 0u32;
        for c in scratch.slot_counts.iter_mut() {
            let n = *c;
            *c = next;
            next += n;
        }
        scratch.grouped.clear();
        scratch.grouped.resize(scratch.series.len(), (0, 0, 0));
        for &e in &scratch.series {
            let at = &mut scratch.slot_counts[e.0 as usize];
            scratch.grouped[*at as usize] = e;
            *at += 1;
        }
        std::mem::swap(&mut scratch.series, &mut scratch.grouped);

        let mut out = if scratch.series.is_empty() {
            AdmissionCounts::default()
        } else {
            let fresh = fresh.as_ref().map(|f| (f, salt));
            self.admit_grouped(cfg, batch, decisions, scratch, (&window, now), fresh)
        };
        out.kept_series += by_fresh.kept_series;
        out.dropped_series += by_fresh.dropped_series;
        out.dropped_samples += by_fresh.dropped_samples;
        self.add_fresh_drops(scratch);
        if fresh.is_some() && !scratch.series.is_empty() {
            self.fresh.fit(self.global_active.load(Ordering::Relaxed));
        }
        Ok(out)
    }

    /// This thread's lane in this guard (`Lane`), added to the registry the first time.
    fn lane(&self, scratch: &mut Scratch) -> Arc<Lane> {
        match &scratch.lane {
            Some((id, lane)) if *id == self.id => lane.clone(),
            _ => {
                let lane = Arc::new(Lane::default());
                self.owners
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .lanes
                    .push(lane.clone());
                scratch.lane = Some((self.id, lane.clone()));
                lane
            }
        }
    }

    /// Add the refusals the fresh table answered to their owners' counters, under each
    /// owner's lock like every other add (`OwnerCounters::add`).
    fn add_fresh_drops(&self, scratch: &mut Scratch) {
        if scratch.fresh_drops.is_empty() {
            return;
        }
        let reg = self.owners.read().unwrap_or_else(|e| e.into_inner());
        for (index, mut tally) in scratch.fresh_drops.drain(..) {
            if let Some(owner) = reg.by_index(index) {
                let state = owner.state.lock().unwrap_or_else(|e| e.into_inner());
                owner.counters.add(&mut tally, &state);
            }
        }
    }

    /// `admit`'s owners' way: the series grouped by owner (`scratch.series`), each owner's
    /// decided under its lock; the ones kept go into the fresh table (`fresh`, with the
    /// request's salt) when there is one.
    fn admit_grouped(
        &self,
        cfg: &GuardConfig,
        batch: Batch<'_>,
        decisions: &mut Decisions,
        scratch: &mut Scratch,
        (window, now): (&Window, u64),
        fresh: Option<(&fresh::View, fresh::Salt)>,
    ) -> AdmissionCounts {
        let tenant = cfg.tenant_header.as_ref().and(batch.tenant);
        // Shared budgets: Redis decides while it answers; while it does not, every limit
        // is this replica's share of it.
        let mut share = 1;
        if let Some(sh) = cfg.shared.as_ref().and(self.shared.get()) {
            if sh.is_up() {
                return self.admit_shared(sh, cfg, batch, decisions, scratch, window, now);
            }
            share = sh.cfg.replicas_hint;
        }

        // Every owner of the request looked up under one read lock, held while the request
        // admits into them: a registry entry cannot go meanwhile (`tick` removes under the
        // write lock), so no owner is cloned out of it, which cost two locked operations per
        // owner per request. Owners not there (new, or accounted elsewhere: past the caps, a
        // value that is not UTF-8) are resolved first, outside the lock (`owner` may take it
        // for writing), and held by `found` for the request.
        let n = scratch.owners.len();
        let at = (window, now, share, fresh);
        scratch.found.clear();
        let missing: Vec<u32> = {
            let reg = self.owners.read().unwrap_or_else(|e| e.into_inner());
            let mut refs = Vec::with_capacity(n);
            reg.find_all(tenant, scratch.slots_iter(), &mut refs);
            if refs.iter().all(Option::is_some) {
                return self.admit_slots(cfg, batch, decisions, scratch, &refs, at);
            }
            (0..n as u32)
                .filter(|&i| refs[i as usize].is_none())
                .collect()
        };
        let generation = cfg.generation;
        scratch.found.resize(n, None);
        for slot in missing {
            let o = self.owner(cfg, tenant, scratch.owner(slot), window, now, generation);
            scratch.found[slot as usize] = Some(o);
        }
        let reg = self.owners.read().unwrap_or_else(|e| e.into_inner());
        let mut refs = Vec::with_capacity(n);
        reg.find_all(tenant, scratch.slots_iter(), &mut refs);
        let out = self.admit_slots(cfg, batch, decisions, scratch, &refs, at);
        // Held no longer than the request: `tick` forgets only owners no one holds.
        scratch.found.clear();
        out
    }

    /// Admit the request's series grouped by owner slot (`scratch.series`, each slot ending
    /// where `scratch.slot_counts` says) into the owners of the slots: as the registry has
    /// them (`owners`), else as `scratch.found` holds them.
    fn admit_slots(
        &self,
        cfg: &GuardConfig,
        batch: Batch<'_>,
        decisions: &mut Decisions,
        scratch: &Scratch,
        owners: &[Option<&Arc<Owner>>],
        (window, now, share, fresh): (&Window, u64, u64, Option<(&fresh::View, fresh::Salt)>),
    ) -> AdmissionCounts {
        let Batch { req, buf, .. } = batch;
        // Budgets follow the config *this request* carries, and only forward: a request that
        // took its config before a reload and finishes after it must not put the old budget
        // back (it would stick until the next reload).
        let generation = cfg.generation;
        let mut out = AdmissionCounts::default();
        let mut tally = OwnerDelta::default();
        let mut start = 0;
        // `admit` resolved every slot the registry did not have into `found`.
        let owner_of = |slot: usize| -> Option<&Owner> {
            owners
                .get(slot)
                .copied()
                .flatten()
                .or_else(|| scratch.found.get(slot)?.as_ref())
                .map(Arc::as_ref)
        };
        // The states of the owners a few slots ahead are asked for while this one's series
        // are admitted: with many small owners each is cold, and asking for every owner's
        // up front (as for their heads) evicted the first before they were used.
        for slot in 0..STATES_AHEAD {
            owner_of(slot).map(Owner::prefetch_state);
        }
        // The slots in order, each ending where the counting sort left its count.
        for slot in 0..owners.len() {
            let end = scratch.slot_counts[slot] as usize;
            owner_of(slot + STATES_AHEAD).map(Owner::prefetch_state);
            let Some(owner) = owner_of(slot) else {
                unreachable!("owner slot {slot} unresolved");
            };
            {
                let mut state = owner.state.lock().unwrap_or_else(|e| e.into_inner());
                if generation > state.generation {
                    state.budget =
                        cfg.budget_for(owner.key.tenant.as_deref(), owner.key.owner.as_deref());
                    state.generation = generation;
                }
                let expired = state.advance(window, now);
                self.sub_active(expired);
                state.seen(now);
                // Resolved on the first overflow of this owner in this request.
                let mut overflow_names: Option<Vec<String>> = None;
                let index = owner.index.load(Ordering::Relaxed);
                let fresh = fresh.filter(|_| index != NO_INDEX);
                // A refusal for the budget holds until the slice turns (see `fresh`); not
                // one by shared budgets' local share, which Redis may lift.
                let keep_refusals = share == 1 && state.budget.action == Action::Drop;
                // Every series' table slots asked for before any is admitted: the owner's
                // tables are far bigger than the cache, and one lookup after another, each
                // waited for its miss alone. A loop this short keeps many in flight.
                for &(_, i, id) in &scratch.series[start..end] {
                    state.prefetch(scratch.metric_keys[i as usize], id);
                }
                for &(_, i, id) in &scratch.series[start..end] {
                    let metric_key = scratch.metric_keys[i as usize];
                    let s: SeriesView<'_> = req.series(buf, i as usize);
                    let samples = (s.sample_count() + s.histogram_count()) as u64;
                    if let Verdict::Drop(reason) = decisions.verdict(i as usize) {
                        tally.dropped(reason, samples);
                        continue;
                    }
                    let labels = decisions.labels(req, buf, i as usize);
                    let key = SeriesKey::new(id, labels, samples, metric_key);
                    let v = state.admit(
                        key,
                        now,
                        &self.global_active,
                        cfg.max_series,
                        share,
                        &mut tally,
                    );
                    // Kept (in the owner's tables, seen in this slice), or refused for good.
                    let held = match v {
                        Verdict::Keep => Some(false),
                        Verdict::Drop(Reason::Budget) if keep_refusals => Some(true),
                        _ => None,
                    };
                    if let (Some((f, salt)), Some(refused)) = (fresh, held) {
                        let e = fresh::Entry {
                            owner: index,
                            refused,
                        };
                        f.insert(fresh::key(scratch.keys[i as usize], salt), e);
                    }
                    match v {
                        Verdict::Drop(_) => {
                            out.dropped_series += 1;
                            out.dropped_samples += samples;
                        }
                        Verdict::Overflow(_) => {
                            self.absorb_overflow(
                                cfg,
                                &batch,
                                decisions,
                                &state,
                                &mut overflow_names,
                                (i, id),
                            );
                            out.overflowed_series += 1;
                        }
                        Verdict::Keep => out.kept_series += 1,
                    }
                    decisions.decide(i as usize, v);
                }
                owner.publish_series(&state);
                owner.counters.add(&mut tally, &state);
            }
            start = end;
        }
        out
    }

    /// Merge series `i` (id `id`) into its overflow aggregate; `names` is resolved on the
    /// first overflow of the owner in the request.
    fn absorb_overflow(
        &self,
        cfg: &GuardConfig,
        batch: &Batch<'_>,
        decisions: &Decisions,
        state: &OwnerState,
        names: &mut Option<Vec<String>>,
        (i, id): (u32, u64),
    ) {
        let Batch {
            req, buf, now_ms, ..
        } = *batch;
        let tenant = cfg.tenant_header.as_ref().and(batch.tenant);
        let names = names.get_or_insert_with(|| {
            if state.budget.overflow_labels.is_empty() {
                state.top_labels(1).into_iter().map(|(n, _)| n).collect()
            } else {
                state.budget.overflow_labels.clone()
            }
        });
        let labels = overflow::overflow_labels(decisions.labels(req, buf, i as usize), names);
        let s = req.series(buf, i as usize);
        self.overflow.set_max_bytes(cfg.max_overflow_bytes);
        self.overflow.absorb(
            cfg.hash_seed,
            tenant,
            &labels,
            id,
            state.budget.overflow_gauge,
            s.samples().map(|x| (x.value, x.timestamp)),
            now_ms,
        );
    }

    fn sub_active(&self, n: u64) {
        if n > 0 {
            let _ = self
                .global_active
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(n))
                });
        }
    }

    /// The registry entry of the owner of `tenant` with value `owner` (`h`: its `key_hash`),
    /// created on first sight. Past the caps, new owners share an `other` entry
    /// (`Registry::place`) so that an explosion of owner values or tenants stays bounded too.
    fn owner(
        &self,
        cfg: &GuardConfig,
        tenant: Option<&str>,
        (h, owner): (u64, Option<&[u8]>),
        window: &Window,
        now: u64,
        generation: u64,
    ) -> Arc<Owner> {
        if let Some(o) = self
            .owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .find(h, tenant, owner)
        {
            return o.clone();
        }
        // Not found by its value as sent: a new owner, or one accounted elsewhere (a value
        // that is not UTF-8, an owner past the caps).
        let key = OwnerKey {
            tenant: tenant.map(str::to_string),
            owner: owner.map(|o| String::from_utf8_lossy(o).into_owned()),
        };
        let mut reg = self.owners.write().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = reg.get(&key) {
            return o.clone();
        }
        let key = reg.place(cfg, &key);
        reg.insert(key, |key| {
            let budget = cfg.budget_for(key.tenant.as_deref(), key.owner.as_deref());
            Arc::new(Owner::new(
                key.clone(),
                OwnerState::new(budget, generation, window, now),
            ))
        })
    }

    /// Slide every owner's window (so idle owners expire their series too) and forget owners
    /// that have had no series for a whole window: their slot under the caps, their tables
    /// and sketches are freed, and their counters start again from zero if they come back.
    /// Run periodically.
    pub fn tick(&self, cfg: &GuardConfig, now_ms: i64) {
        let window = Window::new(cfg.window, cfg.window_slices);
        let now = window.slice(now_ms);
        let owners = self.owners();
        let mut idle = Vec::new();
        for o in owners {
            let mut st = o.state.lock().unwrap_or_else(|e| e.into_inner());
            let expired = st.advance(&window, now);
            self.sub_active(expired);
            if st.idle(&window, now) {
                idle.push(o.key.clone());
            }
        }
        // Sized here too, so that it shrinks once series expired while no new ones come;
        // with shared budgets, which never use it, to nothing.
        let active = self.global_active.load(Ordering::Relaxed);
        self.fresh
            .fit(if cfg.shared.is_none() { active } else { 0 });
        if idle.is_empty() {
            return;
        }
        let mut reg = self.owners.write().unwrap_or_else(|e| e.into_inner());
        for key in idle {
            // Only when no request holds the owner: none can take it while the registry is
            // write-locked, and one that holds it now may be admitting into it (its series
            // would then be counted in `global_active` but never expire).
            let unused = reg.get(&key).is_some_and(|o| {
                Arc::strong_count(o) == 1 && {
                    let st = o.state.lock().unwrap_or_else(|e| e.into_inner());
                    st.idle(&window, now)
                }
            });
            if unused {
                reg.remove(&key);
            }
        }
    }

    /// A copy of every owner's admission state, for a snapshot. Each owner is locked only
    /// while its tables and sketches are cloned; requests for other owners go on meanwhile.
    pub fn image(&self, cfg: &GuardConfig) -> image::GuardImage {
        let window = Window::new(cfg.window, cfg.window_slices);
        let owners = self
            .owners()
            .iter()
            .map(|o| {
                let st = o.state.lock().unwrap_or_else(|e| e.into_inner());
                st.image(&o.key)
            })
            .collect();
        image::GuardImage {
            slice_ms: window.slice_ms(),
            slices: window.slices(),
            seed_check: image::seed_check(cfg.hash_seed),
            owners,
        }
    }

    /// Put a saved state back, before any request: each owner with its tables and sketches
    /// under its budget of the config in force. Refused whole when the window or the hash
    /// seed changed since (the slice tags and series ids would mean something else), or when
    /// an owner's sketches do not fit. Returns the admitted series restored.
    pub fn restore(
        &self,
        cfg: &GuardConfig,
        img: image::GuardImage,
    ) -> Result<u64, image::RestoreError> {
        let window = Window::new(cfg.window, cfg.window_slices);
        if img.slice_ms != window.slice_ms() || img.slices != window.slices() {
            return Err(image::RestoreError::Window);
        }
        if img.seed_check != image::seed_check(cfg.hash_seed) {
            return Err(image::RestoreError::Seed);
        }
        let mut owners = Vec::with_capacity(img.owners.len());
        for o in img.owners {
            let key = OwnerKey {
                tenant: o.tenant.clone(),
                owner: o.owner.clone(),
            };
            let budget = cfg.budget_for(key.tenant.as_deref(), key.owner.as_deref());
            owners.push((key, OwnerState::from_image(o, budget, &window)?));
        }
        let mut reg = self.owners.write().unwrap_or_else(|e| e.into_inner());
        let mut restored = 0;
        for (key, state) in owners {
            // A config that lowered the caps since: the owners past them start over.
            if reg.get(&key).is_some() || reg.place(cfg, &key) != key {
                continue;
            }
            restored += state.active();
            reg.insert(key, |key| Arc::new(Owner::new(key.clone(), state)));
        }
        self.global_active.fetch_add(restored, Ordering::Relaxed);
        Ok(restored)
    }

    /// Tenants tracked (those with at least one owner).
    pub fn tenants(&self) -> usize {
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .tenants
            .keys()
            .filter(|t| t.is_some())
            .count()
    }

    /// Heap bytes of what indexes the owners beyond their own state: the index table and
    /// the threads' lanes (8 bytes an owner each).
    pub fn index_bytes(&self) -> usize {
        let reg = self.owners.read().unwrap_or_else(|e| e.into_inner());
        let lanes: usize = reg
            .lanes
            .iter()
            .map(|l| l.0.read().unwrap_or_else(|e| e.into_inner()).capacity())
            .sum();
        (reg.by_index.capacity() * std::mem::size_of::<Option<u64>>())
            + lanes * std::mem::size_of::<AtomicU64>()
    }

    /// A snapshot of every owner, for telemetry and the API.
    pub fn owners(&self) -> Vec<Arc<Owner>> {
        let reg = self.owners.read().unwrap_or_else(|e| e.into_inner());
        reg.fold();
        reg.values().cloned().collect()
    }
}

pub mod overflow;
pub mod shared;
#[cfg(test)]
mod tests;
