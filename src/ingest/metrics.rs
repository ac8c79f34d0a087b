//! Ingest's metrics (requests answered and refused, what arrived, how long preparing took,
//! config reloads), and `Metrics`: every stage's metrics, registered once per server, with the
//! one function that publishes a prepared request into them.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

use crate::forward::metrics::{ForwardMetrics, ItemCounters};
use crate::pipeline::Prepared;
use crate::relabel::metrics::RelabelMetrics;
use crate::rules::metrics::RuleMetrics;
use crate::schema::metrics::SchemaMetrics;
use crate::schema::SchemaRule;
use crate::telemetry::{counter, counter_vec, gauge, histogram};

#[derive(Clone)]
pub struct IngestMetrics {
    /// Write requests answered, by HTTP status code.
    pub write_requests: IntCounterVec,
    pub requests_in_flight: IntGauge,
    /// Items in requests that decoded, before any stage dropped anything.
    pub received: ItemCounters,
    /// Compressed request bodies received.
    pub received_bytes: IntCounter,
    /// Decompressed request bodies.
    pub received_decoded_bytes: IntCounter,
    /// Requests refused before forwarding, by reason.
    pub rejected_requests: IntCounterVec,
    pub decode_seconds: Histogram,
    /// Series dropped by any stage (all reasons; per service on the guard's rows).
    pub policy_dropped_series: IntCounter,
    pub policy_dropped_samples: IntCounter,
    pub reload_success: IntGauge,
    pub reload_timestamp: IntGauge,
}

impl IngestMetrics {
    pub fn register(r: &Registry) -> Self {
        IngestMetrics {
            write_requests: counter_vec(
                r,
                "cardguard_write_requests_total",
                "Remote-write requests answered, by HTTP status code.",
                &["code"],
            ),
            requests_in_flight: gauge(
                r,
                "cardguard_write_requests_in_flight",
                "Remote-write requests being processed or waiting for the upstream.",
            ),
            received: ItemCounters::register(r, "received", "received in decodable requests."),
            received_bytes: counter(
                r,
                "cardguard_received_bytes_total",
                "Compressed bytes of remote-write request bodies received.",
            ),
            received_decoded_bytes: counter(
                r,
                "cardguard_received_decoded_bytes_total",
                "Bytes of remote-write request bodies after snappy decompression.",
            ),
            rejected_requests: counter_vec(
                r,
                "cardguard_write_requests_rejected_total",
                "Remote-write requests refused before forwarding, by reason.",
                &["reason"],
            ),
            decode_seconds: histogram(
                r,
                "cardguard_request_decode_duration_seconds",
                "Time to decompress, decode and prepare one request for forwarding.",
                &[
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                ],
            ),
            policy_dropped_series: counter(
                r,
                "cardguard_policy_dropped_series_total",
                "Series dropped by policy (budgets and schema); the request still succeeded.",
            ),
            policy_dropped_samples: counter(
                r,
                "cardguard_policy_dropped_samples_total",
                "Samples dropped by policy (budgets and schema); the request still succeeded.",
            ),
            reload_success: gauge(
                r,
                "cardguard_config_last_reload_successful",
                "Whether the last configuration reload attempt was successful.",
            ),
            reload_timestamp: gauge(
                r,
                "cardguard_config_last_reload_success_timestamp_seconds",
                "Timestamp of the last successful configuration reload.",
            ),
        }
    }
}

/// The stages' metrics the write path publishes into. The rules runtime holds the rules'
/// (its tasks publish them); the guard's report is a collector the registry reads on a
/// scrape. Clones share the same metrics.
#[derive(Clone)]
pub struct Metrics {
    pub ingest: IngestMetrics,
    pub schema: SchemaMetrics,
    pub relabel: RelabelMetrics,
    pub forward: ForwardMetrics,
}

impl Metrics {
    pub fn register(r: &Registry) -> Self {
        Metrics {
            ingest: IngestMetrics::register(r),
            schema: SchemaMetrics::register(r),
            relabel: RelabelMetrics::register(r),
            forward: ForwardMetrics::register(r),
        }
    }

    /// Publish what preparing one request counted, once per request: the one place that reads
    /// `Prepared` for metrics.
    pub fn add_prepared(&self, p: &Prepared, rules: &RuleMetrics) {
        let i = &self.ingest;
        i.received_decoded_bytes.inc_by(p.decoded_bytes as u64);
        i.received.add(&p.received);
        i.policy_dropped_series.inc_by(p.dropped.dropped_series);
        i.policy_dropped_samples.inc_by(p.dropped.dropped_samples);
        self.schema.redacted_series.inc_by(p.redacted);
        for (rule, n) in SchemaRule::ALL.iter().zip(p.schema_dropped) {
            if n > 0 {
                self.schema
                    .dropped_series
                    .with_label_values(&[rule.key()])
                    .inc_by(n);
            }
        }
        self.relabel.dropped_series.inc_by(p.relabel.dropped_series);
        self.relabel
            .rewritten_series
            .inc_by(p.relabel.rewritten_series);
        rules.add_observed(&p.rules);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;

    /// Every stage's metrics on one registry: no name claimed twice, and every counter named
    /// `_total`.
    #[test]
    fn stages_share_one_registry_with_conventional_names() {
        let t = Telemetry::new();
        let m = Metrics::register(t.registry());
        RuleMetrics::register(t.registry());
        crate::guard::metrics::GuardMetrics::register(t.registry(), || None);
        m.ingest.write_requests.with_label_values(&["204"]).inc();
        m.ingest.received.add(&crate::wire::ItemCounts {
            series: 2,
            samples: 3,
            ..Default::default()
        });
        let (ctype, body) = t.encode();
        assert!(ctype.starts_with("text/plain"));
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("cardguard_write_requests_total{code=\"204\"} 1"));
        assert!(text.contains("cardguard_samples_received_total 3"));
        assert!(text.contains("cardguard_series_received_total 2"));
        assert!(text.contains("cardguard_build_info{version="));
        for line in text.lines().filter(|l| l.starts_with("# TYPE cardguard_")) {
            let mut parts = line.split(' ');
            let name = parts.nth(2).unwrap();
            let kind = parts.next().unwrap();
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "{name} is a counter without _total"
                );
            }
        }
    }
}
