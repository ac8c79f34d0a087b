//! What a snapshot holds, section by section, and each section's encoding. Copying the state
//! out (`capture`) takes each stage's locks one shard or one owner at a time; the encoding
//! runs on the copy, with no lock held.
//!
//! The one structure that dominates the size is the admission tables: per table the count,
//! then the 56-bit keys in ascending order as varint deltas (about 36 bits, 6 bytes, apart
//! at 1M series), then one tag byte per key: about 7 bytes per admitted series on disk.

use prost::Message;

use super::codec::{Dec, DecodeError, Enc};
use crate::guard::image::{AggregateImage, GuardImage, OwnerImage, RingImage};
use crate::guard::sketch::Sketch;
use crate::guard::table::SeriesTable;
use crate::rules::buffer::SeriesImage;
use crate::rules::group::{GroupImage, RuleImage};
use crate::rules::promql::{HistogramSample, Sample};
use crate::rules::tap::{decode_histogram_checked, encode_histogram, Decoded};

/// Section kinds, in the order they are written. A reader of this version knows them all;
/// an unknown kind means a file from a newer cardguard (refused as incompatible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    Guard = 1,
    Overflow = 2,
    Downsample = 3,
    RuleBuffers = 4,
    RuleGroups = 5,
    /// The rule buffers' native histograms, by the index of their series in `RuleBuffers`:
    /// a section of its own, so that a snapshot written before it (none) still loads.
    RuleHistograms = 6,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Guard,
        Kind::Overflow,
        Kind::Downsample,
        Kind::RuleBuffers,
        Kind::RuleGroups,
        Kind::RuleHistograms,
    ];

    pub fn from_u32(n: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u32 == n)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Guard => "guard",
            Kind::Overflow => "overflow",
            Kind::Downsample => "downsample",
            Kind::RuleBuffers => "rule_buffers",
            Kind::RuleGroups => "rule_groups",
            Kind::RuleHistograms => "rule_histograms",
        }
    }
}

/// Everything a snapshot holds.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// `None` when no guard is configured.
    pub guard: Option<GuardImage>,
    /// A hash of the guard's `hash_seed` (aggregate keys depend on it), and the aggregates.
    pub overflow: (u64, Vec<AggregateImage>),
    /// `(key, kept_ts, seen_ms)`.
    pub downsample: Vec<(u64, i64, i64)>,
    pub rule_buffers: Vec<SeriesImage>,
    pub rule_groups: Vec<GroupImage>,
    /// Decoded `RuleHistograms` not yet given to their series (`attach_histograms`).
    pub rule_histograms: Vec<(usize, Vec<HistogramSample>)>,
}

impl Image {
    /// Admitted series in the guard part (what the size target is per).
    pub fn admitted_series(&self) -> u64 {
        self.guard.as_ref().map_or(0, |g| {
            g.owners
                .iter()
                .flat_map(|o| &o.metrics)
                .map(|(_, t)| t.len() as u64)
                .sum()
        })
    }

    /// Give the decoded native histograms to their series, once every section is read (the
    /// sections may come in any order).
    pub fn attach_histograms(&mut self) -> Result<(), DecodeError> {
        for (i, hs) in std::mem::take(&mut self.rule_histograms) {
            let s = self.rule_buffers.get_mut(i).ok_or(DecodeError::Invalid(
                "native histograms of no buffered series",
            ))?;
            s.histograms = hs;
        }
        Ok(())
    }

    /// Sort every list the stages hand over in hash-map order, so that the same state always
    /// encodes the same way (deltas between sorted keys are also what keeps them small).
    pub fn canonicalize(&mut self) {
        if let Some(g) = &mut self.guard {
            g.owners
                .sort_by(|a, b| (&a.tenant, &a.owner).cmp(&(&b.tenant, &b.owner)));
            for o in &mut g.owners {
                o.metrics.sort_by_key(|(k, _)| *k);
                o.label_values.sort_by(|a, b| a.0.cmp(&b.0));
                o.metric_demand.sort_by(|a, b| a.0.cmp(&b.0));
                o.label_demand.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
        self.overflow.1.sort_by_key(|a| a.key);
        for a in &mut self.overflow.1 {
            a.members.sort_by_key(|m| m.0);
        }
        self.downsample.sort_unstable_by_key(|x| x.0);
        self.rule_buffers
            .sort_by(|a, b| (&a.tenant, &a.labels).cmp(&(&b.tenant, &b.labels)));
        self.rule_groups.sort_by(|a, b| a.key.cmp(&b.key));
        for g in &mut self.rule_groups {
            for r in &mut g.rules {
                r.previous.sort();
            }
        }
    }

    pub fn encode_section(&self, kind: Kind) -> Vec<u8> {
        let mut e = Enc::default();
        match kind {
            Kind::Guard => match &self.guard {
                None => e.u8(0),
                Some(g) => {
                    e.u8(1);
                    guard(&mut e, g);
                }
            },
            Kind::Overflow => {
                e.u64(self.overflow.0);
                e.usize(self.overflow.1.len());
                for a in &self.overflow.1 {
                    aggregate(&mut e, a);
                }
            }
            Kind::Downsample => {
                e.usize(self.downsample.len());
                let mut prev = 0u64;
                for &(k, kept, seen) in &self.downsample {
                    e.u64(k.wrapping_sub(prev));
                    prev = k;
                    e.i64(kept);
                    e.i64(seen);
                }
            }
            Kind::RuleBuffers => {
                e.usize(self.rule_buffers.len());
                for s in &self.rule_buffers {
                    e.opt_str(s.tenant.as_deref());
                    e.labels(&s.labels);
                    e.i64(s.retention_ms);
                    e.usize(s.samples.len());
                    let mut prev = 0i64;
                    for x in &s.samples {
                        e.i64(x.t.wrapping_sub(prev));
                        prev = x.t;
                        e.f64(x.v);
                    }
                }
            }
            Kind::RuleHistograms => {
                // Each as the remote-write message the tap reads them from (its own
                // timestamp inside): that encoder and decoder are tested as a pair already.
                let with = || self.rule_buffers.iter().enumerate();
                e.usize(with().filter(|(_, s)| !s.histograms.is_empty()).count());
                for (i, s) in with().filter(|(_, s)| !s.histograms.is_empty()) {
                    e.usize(i);
                    e.usize(s.histograms.len());
                    for h in &s.histograms {
                        e.bytes(&encode_histogram(h.t, &h.h).encode_to_vec());
                    }
                }
            }
            Kind::RuleGroups => {
                e.usize(self.rule_groups.len());
                for g in &self.rule_groups {
                    e.str(&g.key);
                    match g.last_eval_ms {
                        None => e.u8(0),
                        Some(t) => {
                            e.u8(1);
                            e.i64(t);
                        }
                    }
                    e.usize(g.rules.len());
                    for r in &g.rules {
                        e.str(&r.record);
                        e.str(&r.expr);
                        e.labels(&r.labels);
                        e.usize(r.previous.len());
                        for l in &r.previous {
                            e.labels(l);
                        }
                    }
                }
            }
        }
        e.buf
    }

    /// Decode one section's payload into `self`.
    pub fn decode_section(&mut self, kind: Kind, payload: &[u8]) -> Result<(), DecodeError> {
        let mut d = Dec::new(payload);
        match kind {
            Kind::Guard => {
                self.guard = match d.u8()? {
                    0 => None,
                    1 => Some(read_guard(&mut d)?),
                    _ => return Err(DecodeError::Invalid("guard presence")),
                }
            }
            Kind::Overflow => {
                let seed = d.u64()?;
                let n = d.count(8)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(read_aggregate(&mut d)?);
                }
                self.overflow = (seed, v);
            }
            Kind::Downsample => {
                let n = d.count(3)?;
                let mut v = Vec::with_capacity(n);
                let mut prev = 0u64;
                for _ in 0..n {
                    prev = prev.wrapping_add(d.u64()?);
                    v.push((prev, d.i64()?, d.i64()?));
                }
                self.downsample = v;
            }
            Kind::RuleBuffers => {
                let n = d.count(4)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let tenant = d.opt_string()?;
                    let labels = d.labels()?;
                    let retention_ms = d.i64()?;
                    let k = d.count(9)?;
                    let mut samples = Vec::with_capacity(k);
                    let mut prev = 0i64;
                    for _ in 0..k {
                        prev = prev.wrapping_add(d.i64()?);
                        samples.push(Sample {
                            t: prev,
                            v: d.f64()?,
                        });
                    }
                    v.push(SeriesImage {
                        tenant,
                        labels,
                        samples,
                        histograms: Vec::new(),
                        retention_ms,
                    });
                }
                self.rule_buffers = v;
            }
            Kind::RuleHistograms => {
                let n = d.count(2)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    // An index past the series is refused by `attach_histograms`.
                    let series = usize::try_from(d.u64()?)
                        .map_err(|_| DecodeError::Invalid("histogram series index"))?;
                    let k = d.count(1)?;
                    let mut hs = Vec::with_capacity(k);
                    for _ in 0..k {
                        match decode_histogram_checked(d.bytes()?) {
                            Some(Decoded::Histogram(h)) => hs.push(h),
                            _ => return Err(DecodeError::Invalid("native histogram")),
                        }
                    }
                    v.push((series, hs));
                }
                self.rule_histograms = v;
            }
            Kind::RuleGroups => {
                let n = d.count(3)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = d.string()?;
                    let last_eval_ms = match d.u8()? {
                        0 => None,
                        1 => Some(d.i64()?),
                        _ => return Err(DecodeError::Invalid("last evaluation presence")),
                    };
                    let k = d.count(4)?;
                    let mut rules = Vec::with_capacity(k);
                    for _ in 0..k {
                        let record = d.string()?;
                        let expr = d.string()?;
                        let labels = d.labels()?;
                        let p = d.count(1)?;
                        let mut previous = Vec::with_capacity(p);
                        for _ in 0..p {
                            previous.push(d.labels()?);
                        }
                        rules.push(RuleImage {
                            record,
                            expr,
                            labels,
                            previous,
                        });
                    }
                    v.push(GroupImage {
                        key,
                        last_eval_ms,
                        rules,
                    });
                }
                self.rule_groups = v;
            }
        }
        d.finish()
    }
}

fn guard(e: &mut Enc, g: &GuardImage) {
    e.u64(g.slice_ms);
    e.u8(g.slices);
    e.u64(g.seed_check);
    e.usize(g.owners.len());
    for o in &g.owners {
        e.opt_str(o.tenant.as_deref());
        e.opt_str(o.owner.as_deref());
        e.u64(o.slice);
        e.u64(o.last_seen);
        e.usize(o.metrics.len());
        for (k, t) in &o.metrics {
            e.u64(*k);
            table(e, t);
        }
        e.usize(o.label_values.len());
        for (name, t) in &o.label_values {
            e.str(name);
            table(e, t);
        }
        ring(e, &o.demand);
        for named in [&o.metric_demand, &o.label_demand] {
            e.usize(named.len());
            for (name, r) in named {
                e.bytes(name);
                ring(e, r);
            }
        }
    }
}

fn read_guard(d: &mut Dec<'_>) -> Result<GuardImage, DecodeError> {
    let slice_ms = d.u64()?;
    let slices = d.u8()?;
    let seed_check = d.u64()?;
    let n = d.count(8)?;
    let mut owners = Vec::with_capacity(n);
    for _ in 0..n {
        let tenant = d.opt_string()?;
        let owner = d.opt_string()?;
        let slice = d.u64()?;
        let last_seen = d.u64()?;
        let m = d.count(2)?;
        let mut metrics = Vec::with_capacity(m);
        for _ in 0..m {
            metrics.push((d.u64()?, read_table(d)?));
        }
        let l = d.count(2)?;
        let mut label_values = Vec::with_capacity(l);
        for _ in 0..l {
            label_values.push((d.string()?, read_table(d)?));
        }
        let demand = read_ring(d)?;
        let mut named = || -> Result<Vec<(Vec<u8>, RingImage)>, DecodeError> {
            let k = d.count(3)?;
            let mut v = Vec::with_capacity(k);
            for _ in 0..k {
                v.push((d.bytes()?.to_vec(), read_ring(d)?));
            }
            Ok(v)
        };
        let metric_demand = named()?;
        let label_demand = named()?;
        owners.push(OwnerImage {
            tenant,
            owner,
            slice,
            last_seen,
            metrics,
            label_values,
            demand,
            metric_demand,
            label_demand,
        });
    }
    Ok(GuardImage {
        slice_ms,
        slices,
        seed_check,
        owners,
    })
}

/// Count, ascending keys as deltas of their 56 significant bits, then the tags.
fn table(e: &mut Enc, t: &SeriesTable) {
    e.usize(t.len());
    let mut prev = 0u64;
    for (key, _) in t.iter_sorted() {
        let k = key >> 8;
        e.u64(k.wrapping_sub(prev));
        prev = k;
    }
    e.buf.extend(t.iter_sorted().map(|(_, tag)| tag));
}

fn read_table(d: &mut Dec<'_>) -> Result<SeriesTable, DecodeError> {
    let n = d.count(2)?;
    let mut keys = Vec::with_capacity(n);
    let mut prev = 0u64;
    for _ in 0..n {
        prev = prev.wrapping_add(d.u64()?);
        keys.push(prev << 8);
    }
    let tags = d.take(n)?;
    let mut t = SeriesTable::with_capacity(n);
    for (k, &tag) in keys.into_iter().zip(tags) {
        t.insert(k, tag);
    }
    Ok(t)
}

fn ring(e: &mut Enc, r: &RingImage) {
    e.u8(r.precision);
    e.usize(r.slices.len());
    for s in &r.slices {
        match s {
            None => e.u8(0),
            Some(s) => {
                e.u8(1);
                e.bytes(&s.to_bytes());
            }
        }
    }
}

fn read_ring(d: &mut Dec<'_>) -> Result<RingImage, DecodeError> {
    let precision = d.u8()?;
    let n = d.count(1)?;
    if n > 256 {
        return Err(DecodeError::Invalid("more sketch slices than a window has"));
    }
    let mut slices = Vec::with_capacity(n);
    for _ in 0..n {
        slices.push(match d.u8()? {
            0 => None,
            1 => {
                Some(Sketch::from_bytes(d.bytes()?).map_err(|_| DecodeError::Invalid("a sketch"))?)
            }
            _ => return Err(DecodeError::Invalid("sketch presence")),
        });
    }
    Ok(RingImage { precision, slices })
}

fn aggregate(e: &mut Enc, a: &AggregateImage) {
    e.u64(a.key);
    e.opt_str(a.tenant.as_deref());
    e.labels(&a.labels);
    e.u8(a.kind);
    e.usize(a.members.len());
    for &(id, v, t, seen) in &a.members {
        e.u64(id);
        e.f64(v);
        e.i64(t);
        e.i64(seen);
    }
    e.f64(a.base);
    e.i64(a.timestamp);
    e.i64(a.emitted);
    e.bool(a.dirty);
}

fn read_aggregate(d: &mut Dec<'_>) -> Result<AggregateImage, DecodeError> {
    let key = d.u64()?;
    let tenant = d.opt_string()?;
    let labels = d.labels()?;
    let kind = d.u8()?;
    if kind > 4 {
        return Err(DecodeError::Invalid("aggregate kind"));
    }
    let n = d.count(11)?;
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        members.push((d.u64()?, d.f64()?, d.i64()?, d.i64()?));
    }
    Ok(AggregateImage {
        key,
        tenant,
        labels,
        kind,
        members,
        base: d.f64()?,
        timestamp: d.i64()?,
        emitted: d.i64()?,
        dirty: d.bool()?,
    })
}
