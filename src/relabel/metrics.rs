//! `relabel_configs`' metrics: series it dropped (also in the policy drop counters) and
//! series it rewrote.

use prometheus::{IntCounter, Registry};

use crate::telemetry::counter;

#[derive(Clone)]
pub struct RelabelMetrics {
    pub dropped_series: IntCounter,
    pub rewritten_series: IntCounter,
}

impl RelabelMetrics {
    pub fn register(r: &Registry) -> Self {
        RelabelMetrics {
            dropped_series: counter(
                r,
                "cardguard_relabel_dropped_series_total",
                "Series dropped by relabel_configs (also counted in the policy drop counters).",
            ),
            rewritten_series: counter(
                r,
                "cardguard_relabel_rewritten_series_total",
                "Series whose labels relabel_configs changed (re-encoded on the way out).",
            ),
        }
    }
}
