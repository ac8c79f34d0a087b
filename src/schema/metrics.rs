//! The schema's metrics: series a schema rule dropped, by rule (a fixed set), and series
//! whose label values were redacted.

use prometheus::{IntCounter, IntCounterVec, Registry};

use crate::telemetry::{counter, counter_vec};

#[derive(Clone)]
pub struct SchemaMetrics {
    /// Series a schema rule dropped, by rule.
    pub dropped_series: IntCounterVec,
    /// Series whose label values were redacted.
    pub redacted_series: IntCounter,
}

impl SchemaMetrics {
    pub fn register(r: &Registry) -> Self {
        SchemaMetrics {
            dropped_series: counter_vec(
                r,
                "cardguard_schema_dropped_series_total",
                "Series dropped by a schema rule, by rule.",
                &["rule"],
            ),
            redacted_series: counter(
                r,
                "cardguard_redacted_series_total",
                "Series whose label values were redacted before any other stage saw them.",
            ),
        }
    }
}
