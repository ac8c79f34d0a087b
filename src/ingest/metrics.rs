//! Ingest's metrics (requests answered and refused, what arrived, how long preparing took,
//! config reloads), the server's (connections, bodies being read, timeouts and the bounds in
//! force), and `Metrics`: every stage's metrics, registered once per server, with the one
//! function that publishes a prepared request into them.

use prometheus::{GaugeVec, Histogram, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::config::ServerConfig;

use crate::forward::metrics::{ForwardMetrics, ItemCounters};
use crate::pipeline::Prepared;
use crate::relabel::metrics::RelabelMetrics;
use crate::rules::metrics::RuleMetrics;
use crate::schema::metrics::SchemaMetrics;
use crate::schema::SchemaRule;
use crate::telemetry::{counter, counter_vec, gauge, histogram, register};

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

/// What connections and bodies still arriving cost the server, against its bounds.
#[derive(Clone)]
pub struct ServerMetrics {
    pub connections: IntGauge,
    pub connections_accepted: IntCounter,
    /// Accepted beyond `server.max_connections`, answered 503 and closed.
    pub connections_rejected: IntCounter,
    /// Connections closed because their TLS handshake, their protocol or their HTTP/1
    /// headers did not arrive in time, by phase (`tls`, `detect`, `header`; an idle HTTP/1
    /// keep-alive connection counts as `header`).
    pub connection_timeouts: IntCounterVec,
    pub bodies_reading: IntGauge,
    pub body_bytes_reading: IntGauge,
    /// Bodies cut off, by reason: `rate` (below `body_min_rate`), `total`
    /// (`body_read_timeout`).
    pub body_timeouts: IntCounterVec,
    /// The bounds in force, by name (seconds for durations, bytes for sizes).
    pub limit: GaugeVec,
}

impl ServerMetrics {
    pub fn register(r: &Registry) -> Self {
        ServerMetrics {
            connections: gauge(
                r,
                "cardguard_server_connections",
                "Client connections open now.",
            ),
            connections_accepted: counter(
                r,
                "cardguard_server_connections_accepted_total",
                "Client connections accepted, including those then rejected.",
            ),
            connections_rejected: counter(
                r,
                "cardguard_server_connections_rejected_total",
                "Client connections closed at once because server.max_connections were open.",
            ),
            connection_timeouts: counter_vec(
                r,
                "cardguard_server_connection_timeouts_total",
                "Client connections closed by server.header_read_timeout, by phase: tls (TLS \
                 handshake not done in time), detect (protocol not known in time) or header \
                 (HTTP/1 headers, idle keep-alive included).",
                &["phase"],
            ),
            bodies_reading: gauge(
                r,
                "cardguard_server_bodies_reading",
                "Write request bodies still arriving.",
            ),
            body_bytes_reading: gauge(
                r,
                "cardguard_server_body_bytes_reading",
                "Bytes buffered of write request bodies still arriving (bounded by \
                 server.max_body_bytes_reading).",
            ),
            body_timeouts: counter_vec(
                r,
                "cardguard_server_body_timeouts_total",
                "Write request bodies cut off with 408, by reason: rate (slower than \
                 server.body_min_rate) or total (server.body_read_timeout).",
                &["reason"],
            ),
            limit: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "cardguard_server_limit",
                        "The server's bounds in force, by name (seconds for durations, bytes \
                         for sizes, 0 for off).",
                    ),
                    &["limit"],
                )
                .expect("valid metric name"),
            ),
        }
    }

    /// Publish the bounds of `c`: at start and after each reload.
    pub fn set_limits(&self, c: &ServerConfig) {
        let secs = |d: std::time::Duration| d.as_secs_f64();
        for (name, v) in [
            ("max_connections", c.max_connections as f64),
            ("max_inflight_requests", c.max_inflight_requests as f64),
            ("header_read_timeout_seconds", secs(c.header_read_timeout)),
            ("max_body_bytes_reading", c.max_body_bytes_reading as f64),
            ("body_reading_wait_seconds", secs(c.body_reading_wait)),
            ("body_read_timeout_seconds", secs(c.body_read_timeout)),
            ("body_min_rate_bytes_per_second", c.body_min_rate as f64),
            (
                "body_rate_grace_period_seconds",
                secs(c.body_rate_grace_period),
            ),
            (
                "http2_max_concurrent_streams",
                c.http2_max_concurrent_streams as f64,
            ),
            (
                "http2_keep_alive_interval_seconds",
                c.http2_keep_alive_interval.map_or(0.0, secs),
            ),
            (
                "http2_keep_alive_timeout_seconds",
                secs(c.http2_keep_alive_timeout),
            ),
        ] {
            self.limit.with_label_values(&[name]).set(v);
        }
    }
}

/// The stages' metrics the write path publishes into. The rules runtime holds the rules'
/// (its tasks publish them); the guard's report is a collector the registry reads on a
/// scrape. Clones share the same metrics.
#[derive(Clone)]
pub struct Metrics {
    pub ingest: IngestMetrics,
    pub server: ServerMetrics,
    pub schema: SchemaMetrics,
    pub relabel: RelabelMetrics,
    pub forward: ForwardMetrics,
}

impl Metrics {
    pub fn register(r: &Registry) -> Self {
        Metrics {
            ingest: IngestMetrics::register(r),
            server: ServerMetrics::register(r),
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
