//! cardguard's own series (the guard's overflow aggregates, recorded rule results) out through
//! the routes like any sender's: a recorded `slo="true"` series goes wherever a scraped one
//! with that label would, with the route's relabeling and downsampling and the upstream's
//! tenant header. Each upstream's part is encoded once, in that upstream's version, straight
//! from the series.

use std::sync::Arc;

use http::HeaderValue;

use super::split::{claim, route_relabel, series_key, Part, Routed, SOLE_UPSTREAM};
use super::{Downsampler, Routing};
use crate::forward::{ForwardError, Forwarder};
use crate::wire::{self, ItemCounts, OwnedSeries};

/// What one send delivered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Upstreams that received a part.
    pub parts: usize,
    /// What the parts carried, added up over the upstreams.
    pub forwarded: ItemCounts,
    /// Series no route took (several upstreams and no catch-all route for them).
    pub unrouted: u64,
}

/// The splitter's buffers serve the owned-series sender too.
pub use super::split::Scratch;

/// Route `series` and send every part; `Ok` only when every upstream that got a part
/// acknowledged it (the sender's answer rules of `send::answer`). The downsampling decisions
/// are committed then, so a retry of the same series decides the same. `tenant` is matched by
/// the routes' `tenants:` and passed on under each upstream's tenant header.
pub async fn send(
    forwarder: &Forwarder,
    routing: &Arc<Routing>,
    downsampler: &Downsampler,
    series: &[OwnedSeries],
    tenant: Option<&str>,
    now_ms: i64,
    s: &mut Scratch,
) -> Result<Delivered, ForwardError> {
    let routed = route(routing, downsampler, series, tenant, s);
    let header = tenant.and_then(|t| HeaderValue::from_str(t).ok());
    let results = super::send::send_all(forwarder, routing, &routed.parts, header).await;
    let failures: Vec<ForwardError> = results.into_iter().filter_map(Result::err).collect();
    if let Some(e) = super::send::answer(failures) {
        return Err(e);
    }
    downsampler.commit(&routed.pending, now_ms);
    Ok(Delivered {
        parts: routed.parts.len(),
        forwarded: routed.forwarded(),
        unrouted: routed.unrouted,
    })
}

/// One body per upstream that gets any of `series`, as `split` does for a request.
pub fn route(
    routing: &Routing,
    downsampler: &Downsampler,
    series: &[OwnedSeries],
    tenant: Option<&str>,
    s: &mut Scratch,
) -> Routed {
    let n = routing.upstreams.len();
    let mut out = Routed::default();
    // cardguard's own series are bounded where they are built (rule and overflow caps).
    s.start(routing, usize::MAX);
    for w in &mut s.writers {
        w.reset();
    }
    let mut downsampled = vec![0u64; routing.routes.len()];

    for series in series {
        let labels = series
            .labels
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        if !claim(routing, labels.clone(), tenant, &mut s.claimed) {
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
            let mut masked = false;
            // Recorded histograms are not downsampled: only series of float samples are.
            let downsampling = route
                .and_then(|rt| Some((rt, rt.min_interval?)))
                .filter(|_| !series.samples.is_empty());
            if let Some((route, interval)) = downsampling {
                let key = match &route_labels {
                    Some(l) => series_key(
                        &route.name,
                        l.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
                        &mut s.hash_buf,
                    ),
                    None => series_key(&route.name, labels.clone(), &mut s.hash_buf),
                };
                let total = series.samples.len();
                let kept = downsampler.decide(
                    key,
                    interval.as_millis() as i64,
                    series.samples.iter().map(|&(_, t)| t),
                    &mut s.overlay,
                    &mut s.keep,
                );
                if kept < total {
                    masked = true;
                    downsampled[r] += (total - kept) as u64;
                }
                if kept == 0 {
                    continue;
                }
            }
            let keep = &s.keep;
            let samples = series
                .samples
                .iter()
                .enumerate()
                .filter(|&(k, _)| !masked || keep.get(k).copied().unwrap_or(true))
                .map(|(_, &x)| x);
            for u in 0..n {
                if s.claimed[u] != Some(r) {
                    continue;
                }
                let w = &mut s.writers[u];
                match &route_labels {
                    Some(l) => w.push_labeled_all(
                        l.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
                        samples.clone(),
                        &series.histograms,
                    ),
                    None => w.push_labeled_all(labels.clone(), samples.clone(), &series.histograms),
                }
                let c = &mut s.counts[u];
                c.series += 1;
                c.samples += (samples.clone().count() + series.histograms.len()) as u64;
            }
        }
    }

    s.finish_downsampling(downsampled, &mut out);
    for (u, up) in routing.upstreams.iter().enumerate() {
        if s.counts[u].series == 0 {
            continue;
        }
        let Ok(body) = s.writers[u].finish() else {
            // Unreachable without a limit; never send a partial body.
            tracing::error!("own series body over its limit; not sent");
            continue;
        };
        out.parts.push(Part {
            upstream: u,
            body: s.snappy.compress_bytes(body),
            version: up.version,
            forwarded: s.counts[u],
            passthrough: false,
            translation_dropped: wire::TranslationDrops::default(),
        });
    }
    out
}
