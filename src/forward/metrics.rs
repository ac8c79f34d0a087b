//! Forward's metrics: what the upstreams acknowledged, how they answered and how long they
//! took, and what routing left out on the way (downsampling, a route's own relabeling).
//! `upstream` and `route` values are names from the config.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

use crate::telemetry::{counter, counter_vec, gauge, register};
use crate::wire::ItemCounts;

/// Per-item-kind counters (series, samples, histograms, exemplars, metadata) in one direction.
#[derive(Clone)]
pub struct ItemCounters {
    series: IntCounter,
    samples: IntCounter,
    histograms: IntCounter,
    exemplars: IntCounter,
    metadata: IntCounter,
}

impl ItemCounters {
    /// `cardguard_<kind>_<direction>_total` for each kind.
    pub fn register(r: &Registry, direction: &str, help: &str) -> Self {
        let c = |kind: &str| {
            counter(
                r,
                &format!("cardguard_{kind}_{direction}_total"),
                &format!("{kind} {help}"),
            )
        };
        ItemCounters {
            series: c("series"),
            samples: c("samples"),
            histograms: c("histograms"),
            exemplars: c("exemplars"),
            metadata: c("metadata"),
        }
    }

    /// Samples counted so far (the demo and tests read it).
    pub fn samples(&self) -> u64 {
        self.samples.get()
    }

    pub fn add(&self, n: &ItemCounts) {
        self.series.inc_by(n.series);
        self.samples.inc_by(n.samples);
        self.histograms.inc_by(n.histograms);
        self.exemplars.inc_by(n.exemplars);
        self.metadata.inc_by(n.metadata);
    }
}

#[derive(Clone)]
pub struct ForwardMetrics {
    /// Items acknowledged by the upstream.
    pub forwarded: ItemCounters,
    pub forwarded_bytes: IntCounter,
    /// Requests forwarded as the original body (nothing changed).
    pub passthrough_requests: IntCounter,
    pub upstream_seconds: HistogramVec,
    /// Upstream responses by code (`2xx` codes collapsed to their value).
    pub upstream_requests: IntCounterVec,
    /// Bodies that failed, by class: timeout, connect, 5xx, 429, config, 4xx, other (the
    /// outcome of a body, after splitting on a 413).
    pub upstream_errors: IntCounterVec,
    /// Bodies refused for a reason of cardguard's configuration, by upstream and status.
    pub config_errors: IntCounterVec,
    /// Bodies (or pieces) split in two after a 413, by upstream.
    pub body_splits: IntCounterVec,
    /// Routing: samples left out by `min_interval`, by route; series a route's own
    /// relabeling dropped; (route, series) entries of the downsampling state.
    pub downsampled_samples: IntCounterVec,
    pub route_relabel_dropped_series: IntCounter,
    pub downsample_series: IntGauge,
    /// What translating to an upstream's version could not carry, by kind (`what`:
    /// start_timestamp, created_timestamp, metadata), counted once acknowledged.
    pub translation_dropped: IntCounterVec,
}

impl ForwardMetrics {
    pub fn register(r: &Registry) -> Self {
        ForwardMetrics {
            forwarded: ItemCounters::register(r, "forwarded", "acknowledged by the upstream."),
            forwarded_bytes: counter(
                r,
                "cardguard_forwarded_bytes_total",
                "Compressed bytes acknowledged by the upstream.",
            ),
            passthrough_requests: counter(
                r,
                "cardguard_passthrough_requests_total",
                "Requests forwarded as their original body because nothing in them changed.",
            ),
            upstream_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "cardguard_upstream_request_duration_seconds",
                        "Time from sending a request upstream to its response.",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ]),
                    &["upstream"],
                )
                .expect("valid histogram"),
            ),
            upstream_requests: counter_vec(
                r,
                "cardguard_upstream_requests_total",
                "Requests sent upstream, by upstream and response code (or error class).",
                &["upstream", "code"],
            ),
            upstream_errors: counter_vec(
                r,
                "cardguard_upstream_errors_total",
                "Upstream writes that failed, by class: timeout, connect, 5xx, 429, config, 4xx, other.",
                &["upstream", "class"],
            ),
            config_errors: counter_vec(
                r,
                "cardguard_upstream_config_errors_total",
                "Upstream writes refused for a reason of cardguard's configuration (credentials, \
                 URL, tenant, size), answered 503 so senders retry; by upstream and status.",
                &["upstream", "status"],
            ),
            body_splits: counter_vec(
                r,
                "cardguard_upstream_body_splits_total",
                "Bodies an upstream refused as too large (413) that were split in two halves by \
                 series and sent again, by upstream.",
                &["upstream"],
            ),
            downsampled_samples: counter_vec(
                r,
                "cardguard_downsampled_samples_total",
                "Samples a route's min_interval left out (sent at lower resolution), by route.",
                &["route"],
            ),
            route_relabel_dropped_series: counter(
                r,
                "cardguard_route_relabel_dropped_series_total",
                "Series a route's own relabel_configs dropped from that route.",
            ),
            downsample_series: gauge(
                r,
                "cardguard_downsample_series",
                "Series (per route) tracked by the downsampling state.",
            ),
            translation_dropped: counter_vec(
                r,
                "cardguard_translation_dropped_total",
                "Items an upstream's remote-write version cannot carry, left out of what it \
                 acknowledged, by upstream and what (start_timestamp, created_timestamp, metadata).",
                &["upstream", "what"],
            ),
        }
    }
}
