//! One request into one body per upstream: every kept series through the routes (in order,
//! first match wins unless `continue`), then per route its own relabeling and downsampling,
//! then out to each upstream the route names, as raw bytes when nothing changed. A single
//! `upstream:` skips the routes: the original body, untouched, when nothing changed.

use std::collections::HashMap;

use bytes::Bytes;

use super::downsample::{Downsampler, Pending};
use super::{Route, Routing};
use crate::relabel;
use crate::series::{Decisions, Labels, OwnedLabels};
use crate::wire::{self, ItemCounts, OutputTooLarge, Parsed, Version, Writer};

/// What a request needs besides its series: the routing table, its tenant, the state.
#[derive(Clone, Copy)]
pub struct Plan<'a> {
    pub routing: &'a Routing,
    pub tenant: Option<&'a str>,
    pub downsampler: &'a Downsampler,
}

/// The body for one upstream.
#[derive(Debug, Clone)]
pub struct Part {
    /// Index into `Routing::upstreams`.
    pub upstream: usize,
    /// Snappy-compressed, in `version`.
    pub body: Bytes,
    pub version: Version,
    pub forwarded: ItemCounts,
    /// The original body, forwarded as it came.
    pub passthrough: bool,
    /// What translating into `version` could not carry.
    pub translation_dropped: wire::TranslationDrops,
}

/// A request split by upstream.
#[derive(Debug, Clone, Default)]
pub struct Routed {
    /// Only upstreams that receive something.
    pub parts: Vec<Part>,
    /// Downsampling decisions to commit once every part was acknowledged.
    pub pending: Vec<Pending>,
    /// Samples left out by downsampling, by route index.
    pub downsampled: Vec<(usize, u64)>,
    /// Series dropped by a route's own relabeling (on that route only).
    pub route_relabel_dropped: u64,
    /// Series no route matched (dropped: several upstreams and no route for them cannot
    /// happen with a validated config, which requires a catch-all route then).
    pub unrouted: u64,
    /// Upstreams that get no part because translation left nothing to send (a v1
    /// metadata-only request bound for a v2 upstream), with what was left out.
    pub untranslatable: Vec<(usize, wire::TranslationDrops)>,
}

impl Routed {
    /// What the parts carry, summed over the upstreams.
    pub fn forwarded(&self) -> ItemCounts {
        let mut total = ItemCounts::default();
        for p in &self.parts {
            total.series += p.forwarded.series;
            total.samples += p.forwarded.samples;
            total.histograms += p.forwarded.histograms;
            total.exemplars += p.forwarded.exemplars;
            total.metadata += p.forwarded.metadata;
        }
        total
    }
}

/// Buffers kept from one split (or one owned-series send) to the next.
#[derive(Default)]
pub struct Scratch {
    pub(super) writers: Vec<Writer>,
    unchanged: Vec<usize>,
    pub(super) counts: Vec<ItemCounts>,
    /// Route claiming each upstream for the current series.
    pub(super) claimed: Vec<Option<usize>>,
    pub(super) relabel: relabel::Scratch,
    pub(super) overlay: HashMap<u64, i64, foldhash::fast::FixedState>,
    pub(super) keep: Vec<bool>,
    pub(super) hash_buf: Vec<u8>,
    /// The bodies' snappy encoder and buffer.
    pub(super) snappy: wire::snappy::Compressor,
}

impl Scratch {
    /// One writer per upstream in its version, each limited to `max_output` bytes
    /// (`usize::MAX`: none), counts zeroed, no downsampling decision yet. The writers are
    /// left for the caller to `begin` or `reset`.
    pub(super) fn start(&mut self, routing: &Routing, max_output: usize) {
        let n = routing.upstreams.len();
        self.writers.truncate(n);
        for (u, up) in routing.upstreams.iter().enumerate() {
            match self.writers.get_mut(u) {
                Some(w) if w.version() == up.version => {}
                Some(w) => *w = Writer::new(up.version),
                None => self.writers.push(Writer::new(up.version)),
            }
        }
        for w in &mut self.writers {
            w.set_limit(max_output);
        }
        self.counts.clear();
        self.counts.resize(n, ItemCounts::default());
        self.overlay.clear();
    }

    /// Hand the downsampling decisions of this split to `out`: the pending ones (committed
    /// once every upstream acknowledged) and the samples left out, by route.
    pub(super) fn finish_downsampling(&mut self, downsampled: Vec<u64>, out: &mut Routed) {
        out.pending.extend(self.overlay.drain());
        out.downsampled = downsampled
            .into_iter()
            .enumerate()
            .filter(|(_, n)| *n > 0)
            .collect();
    }

    /// Let go of an output buffer that one outsized request grew past `limit` bytes.
    pub fn release_above(&mut self, limit: usize) {
        for w in &mut self.writers {
            w.release_above(limit);
        }
    }
}

/// No route matched but there is a single upstream: it gets the series.
pub const SOLE_UPSTREAM: usize = usize::MAX;

fn route_matches<'a, I>(route: &Route, labels: I, tenant: Option<&str>) -> bool
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    if let Some(tenants) = &route.tenants {
        match tenant {
            Some(t) if tenants.iter().any(|x| x == t) => {}
            _ => return false,
        }
    }
    route.selector.as_ref().is_none_or(|s| s.matches(labels))
}

/// Which route claims each upstream for a series with these labels (`claimed[u]`, a route
/// index or `SOLE_UPSTREAM`); `false` when no route takes it and there are several upstreams.
pub fn claim<'a, I>(
    routing: &Routing,
    labels: I,
    tenant: Option<&str>,
    claimed: &mut Vec<Option<usize>>,
) -> bool
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let n = routing.upstreams.len();
    claimed.clear();
    claimed.resize(n, None);
    let mut matched = false;
    for (r, route) in routing.routes.iter().enumerate() {
        if !route_matches(route, labels.clone(), tenant) {
            continue;
        }
        matched = true;
        for &u in &route.upstreams {
            claimed[u].get_or_insert(r);
        }
        if !route.continue_matching {
            break;
        }
    }
    if !matched {
        if n != 1 {
            return false;
        }
        claimed[0] = Some(SOLE_UPSTREAM);
    }
    true
}

/// Split the series of `req` that `decisions` forwards (kept, not withheld for recording
/// rules), with their labels as `decisions` has them.
///
/// # Errors
///
/// When a body built for an upstream would pass `max_output` bytes
/// (`limits.max_output_size`): a translation to v1 writes each v2 symbol reference in full.
pub fn split(
    plan: &Plan<'_>,
    body: &Bytes,
    req: &Parsed,
    buf: &[u8],
    decisions: &Decisions,
    s: &mut Scratch,
    max_output: usize,
) -> Result<Routed, OutputTooLarge> {
    let routing = plan.routing;
    if routing.single {
        let version = routing.upstreams[0].version;
        return single(body, req, buf, decisions, version, s, max_output);
    }
    let n = routing.upstreams.len();
    let mut out = Routed::default();
    s.start(routing, max_output);
    for w in &mut s.writers {
        w.begin(req, buf);
    }
    s.unchanged.clear();
    s.unchanged.resize(n, 0);
    let mut downsampled = vec![0u64; routing.routes.len()];

    for i in 0..req.len() {
        if !decisions.forwarded(i) {
            continue;
        }
        let view = req.series(buf, i);
        let rewritten = decisions.rewritten(i);
        let labels = match rewritten {
            Some(o) => Labels::Owned(o.iter()),
            None => Labels::Wire(view.labels()),
        };
        if !claim(routing, labels.clone(), plan.tenant, &mut s.claimed) {
            out.unrouted += 1;
            continue;
        }

        // Each claiming route once: its labels and sample mask, then every upstream it got.
        for r in (0..routing.routes.len()).chain([SOLE_UPSTREAM]) {
            if !s.claimed.contains(&Some(r)) {
                continue;
            }
            let route = routing.routes.get(r);
            let Some(route_labels) = route_relabel(route, labels.clone(), &mut s.relabel) else {
                out.route_relabel_dropped += 1;
                continue;
            };
            let final_owned = route_labels.as_ref().or(rewritten);
            let mut masked = false;
            if let Some(interval) = route.and_then(|rt| rt.min_interval) {
                let key = series_key(
                    route.map(|rt| rt.name.as_str()).unwrap_or_default(),
                    match final_owned {
                        Some(o) => Labels::Owned(o.iter()),
                        None => Labels::Wire(view.labels()),
                    },
                    &mut s.hash_buf,
                );
                let total = view.sample_count();
                let kept = plan.downsampler.decide(
                    key,
                    interval.as_millis() as i64,
                    view.samples().map(|x| x.timestamp),
                    &mut s.overlay,
                    &mut s.keep,
                );
                if kept < total {
                    masked = true;
                    downsampled[r] += (total - kept) as u64;
                }
                if kept == 0 && view.histogram_count() == 0 && view.exemplar_count() == 0 {
                    continue;
                }
            }
            let pairs: Option<Vec<(&[u8], &[u8])>> = final_owned.map(|o| {
                o.iter()
                    .map(|(n, v)| (n.as_slice(), v.as_slice()))
                    .collect()
            });
            let kept_samples = if masked {
                s.keep.iter().filter(|k| **k).count()
            } else {
                view.sample_count()
            };
            for u in 0..n {
                if s.claimed[u] != Some(r) {
                    continue;
                }
                let w = &mut s.writers[u];
                if masked {
                    w.filtered_series(req, buf, i, pairs.as_deref(), &s.keep);
                } else if let Some(p) = &pairs {
                    w.relabeled_series(req, buf, i, p);
                } else {
                    w.copy_series(req, buf, i);
                    s.unchanged[u] += 1;
                }
                let c = &mut s.counts[u];
                c.series += 1;
                c.samples += kept_samples as u64;
                c.histograms += view.histogram_count() as u64;
                c.exemplars += view.exemplar_count() as u64;
            }
        }
    }

    s.finish_downsampling(downsampled, &mut out);
    for u in 0..n {
        let up = &routing.upstreams[u];
        if s.counts[u].series == 0 && !req.is_empty() {
            continue;
        }
        if s.unchanged[u] == req.len() && req.version() == up.version {
            let mut forwarded = req.counts();
            forwarded.series = req.len() as u64;
            out.parts.push(Part {
                upstream: u,
                body: body.clone(),
                version: up.version,
                forwarded,
                passthrough: true,
                translation_dropped: wire::TranslationDrops::default(),
            });
            continue;
        }
        let w = &mut s.writers[u];
        w.copy_metadata(req, buf);
        let mut forwarded = s.counts[u];
        forwarded.metadata = w.metadata_written() as u64;
        if forwarded.series == 0 && forwarded.metadata == 0 {
            let dropped = w.translation_dropped();
            if dropped != wire::TranslationDrops::default() {
                out.untranslatable.push((u, dropped));
            }
            continue;
        }
        let compressed = s.snappy.compress_bytes(w.finish()?);
        out.parts.push(Part {
            upstream: u,
            body: compressed,
            version: up.version,
            forwarded,
            passthrough: false,
            translation_dropped: w.translation_dropped(),
        });
    }
    Ok(out)
}

/// A single `upstream:`: the original body when nothing changed and the version matches,
/// without looking at a series; else one body of what `decisions` forwards. Nothing goes
/// out when nothing is left, series or metadata.
fn single(
    body: &Bytes,
    req: &Parsed,
    buf: &[u8],
    decisions: &Decisions,
    version: Version,
    s: &mut Scratch,
    max_output: usize,
) -> Result<Routed, OutputTooLarge> {
    let part = if decisions.unchanged() && req.version() == version {
        Part {
            upstream: 0,
            body: body.clone(),
            version,
            forwarded: req.counts(),
            passthrough: true,
            translation_dropped: wire::TranslationDrops::default(),
        }
    } else {
        s.writers.truncate(1);
        match s.writers.first_mut() {
            Some(w) if w.version() == version => {}
            Some(w) => *w = Writer::new(version),
            None => s.writers.push(Writer::new(version)),
        }
        let w = &mut s.writers[0];
        w.set_limit(max_output);
        w.begin(req, buf);
        let mut forwarded = ItemCounts::default();
        // Unchanged series in a row not yet written: copied together (`copy_series_run`).
        let mut run = 0..0;
        for i in 0..req.len() {
            if !decisions.forwarded(i) {
                continue;
            }
            let view = req.series(buf, i);
            forwarded.series += 1;
            forwarded.samples += view.sample_count() as u64;
            forwarded.histograms += view.histogram_count() as u64;
            forwarded.exemplars += view.exemplar_count() as u64;
            match decisions.rewritten(i) {
                Some(owned) => {
                    w.copy_series_run(req, buf, std::mem::replace(&mut run, 0..0));
                    let labels: Vec<(&[u8], &[u8])> = owned
                        .iter()
                        .map(|(n, v)| (n.as_slice(), v.as_slice()))
                        .collect();
                    w.relabeled_series(req, buf, i, &labels);
                }
                None if run.end == i && !run.is_empty() => run.end = i + 1,
                None => w.copy_series_run(req, buf, std::mem::replace(&mut run, i..i + 1)),
            }
        }
        w.copy_series_run(req, buf, run);
        w.copy_metadata(req, buf);
        forwarded.metadata = w.metadata_written() as u64;
        let compressed = s.snappy.compress_bytes(w.finish()?);
        Part {
            upstream: 0,
            body: compressed,
            version,
            forwarded,
            passthrough: false,
            translation_dropped: w.translation_dropped(),
        }
    };
    let mut out = Routed::default();
    if part.forwarded.series > 0 || part.forwarded.metadata > 0 {
        out.parts.push(part);
    } else if part.translation_dropped != wire::TranslationDrops::default() {
        out.untranslatable.push((0, part.translation_dropped));
    }
    Ok(out)
}

/// A claiming route's own `relabel_configs` over a series' labels: `Some(None)` leaves them
/// as they are, `Some(Some(l))` rewrites them for this route, `None` keeps the series off it.
pub fn route_relabel<'a>(
    route: Option<&Route>,
    labels: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    scratch: &mut relabel::Scratch,
) -> Option<Option<OwnedLabels>> {
    let Some(route) = route.filter(|rt| !rt.relabel.is_empty()) else {
        return Some(None);
    };
    match relabel::process(&route.relabel, labels, scratch) {
        relabel::Relabeled::Unchanged => Some(None),
        relabel::Relabeled::Changed(l) => Some(Some(l)),
        relabel::Relabeled::Dropped => None,
    }
}

/// The downsampling key of a series on a route: its labels as sent, hashed with the route.
pub(super) fn series_key<'a>(
    route: &str,
    labels: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    buf: &mut Vec<u8>,
) -> u64 {
    buf.clear();
    buf.extend_from_slice(route.as_bytes());
    buf.push(0xff);
    for (n, v) in labels {
        buf.extend_from_slice(n);
        buf.push(0xfe);
        buf.extend_from_slice(v);
        buf.push(0xff);
    }
    xxhash_rust::xxh3::xxh3_64(buf)
}
