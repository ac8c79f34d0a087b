//! cardguard's own metrics, served on `/metrics` ("metrics" alone is ambiguous in a metrics
//! proxy, hence the name). Every label here has a small, fixed set of values: status codes,
//! error classes, upstream names from the config. Nothing is labelled by series or label value.
//!
//! Updates happen once per request with counts gathered while parsing, never per sample.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::wire::Counts;

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
    fn register(r: &Registry, direction: &str, help: &str) -> Self {
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

    pub fn add(&self, n: &Counts) {
        self.series.inc_by(n.series);
        self.samples.inc_by(n.samples);
        self.histograms.inc_by(n.histograms);
        self.exemplars.inc_by(n.exemplars);
        self.metadata.inc_by(n.metadata);
    }
}

/// All of cardguard's own metrics.
#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
    /// Write requests answered, by HTTP status code.
    pub write_requests: IntCounterVec,
    pub requests_in_flight: IntGauge,
    /// Items in requests that decoded, before any stage dropped anything.
    pub received: ItemCounters,
    /// Items acknowledged by the upstream.
    pub forwarded: ItemCounters,
    /// Compressed request bodies received.
    pub received_bytes: IntCounter,
    /// Decompressed request bodies.
    pub received_decoded_bytes: IntCounter,
    pub forwarded_bytes: IntCounter,
    /// Requests forwarded as the original body (nothing changed).
    pub passthrough_requests: IntCounter,
    /// Requests refused before forwarding, by reason.
    pub rejected_requests: IntCounterVec,
    pub decode_seconds: Histogram,
    pub upstream_seconds: prometheus::HistogramVec,
    /// Upstream responses by code (`2xx` codes collapsed to their value).
    pub upstream_requests: IntCounterVec,
    /// Upstream failures by class: timeout, connect, 5xx, 429, 4xx, other.
    pub upstream_errors: IntCounterVec,
    /// Series dropped by the guard or the schema (all reasons; per service on the guard's rows).
    pub policy_dropped_series: IntCounter,
    pub policy_dropped_samples: IntCounter,
    /// Series a schema rule dropped, by rule.
    pub schema_dropped_series: IntCounterVec,
    /// Series whose label values were redacted.
    pub redacted_series: IntCounter,
    /// `relabel_configs`: series dropped (also in the policy drop counters) and rewritten.
    pub relabel_dropped_series: IntCounter,
    pub relabel_rewritten_series: IntCounter,
    /// Routing: samples left out by `min_interval`, by route; series a route's own
    /// relabeling dropped; (route, series) entries of the downsampling state.
    pub downsampled_samples: IntCounterVec,
    pub route_relabel_dropped_series: IntCounter,
    pub downsample_series: IntGauge,
    pub reload_success: IntGauge,
    pub reload_timestamp: IntGauge,
    pub build_info: IntGaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric name");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric name");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

impl Telemetry {
    /// A fresh registry with every metric registered. Each server (and each test) owns one.
    pub fn new() -> Self {
        let r = Registry::new();
        // Process CPU, RSS and open fds: what a platform team watches on any proxy.
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = r.register(Box::new(pc));
        }
        let write_requests = counter_vec(
            &r,
            "cardguard_write_requests_total",
            "Remote-write requests answered, by HTTP status code.",
            &["code"],
        );
        let rejected_requests = counter_vec(
            &r,
            "cardguard_write_requests_rejected_total",
            "Remote-write requests refused before forwarding, by reason.",
            &["reason"],
        );
        let decode_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "cardguard_request_decode_duration_seconds",
                "Time to decompress, decode and prepare one request for forwarding.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
            ]),
        )
        .expect("valid histogram");
        r.register(Box::new(decode_seconds.clone()))
            .expect("registered once");
        let upstream_seconds = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "cardguard_upstream_request_duration_seconds",
                "Time from sending a request upstream to its response.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["upstream"],
        )
        .expect("valid histogram");
        r.register(Box::new(upstream_seconds.clone()))
            .expect("registered once");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "cardguard_build_info",
                "Always 1; the labels say which cardguard is running.",
            ),
            &["version"],
        )
        .expect("valid metric name");
        r.register(Box::new(build_info.clone()))
            .expect("registered once");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        Telemetry {
            write_requests,
            requests_in_flight: gauge(
                &r,
                "cardguard_write_requests_in_flight",
                "Remote-write requests being processed or waiting for the upstream.",
            ),
            received: ItemCounters::register(&r, "received", "received in decodable requests."),
            forwarded: ItemCounters::register(&r, "forwarded", "acknowledged by the upstream."),
            received_bytes: counter(
                &r,
                "cardguard_received_bytes_total",
                "Compressed bytes of remote-write request bodies received.",
            ),
            received_decoded_bytes: counter(
                &r,
                "cardguard_received_decoded_bytes_total",
                "Bytes of remote-write request bodies after snappy decompression.",
            ),
            forwarded_bytes: counter(
                &r,
                "cardguard_forwarded_bytes_total",
                "Compressed bytes acknowledged by the upstream.",
            ),
            passthrough_requests: counter(
                &r,
                "cardguard_passthrough_requests_total",
                "Requests forwarded as their original body because nothing in them changed.",
            ),
            rejected_requests,
            decode_seconds,
            upstream_seconds,
            upstream_requests: counter_vec(
                &r,
                "cardguard_upstream_requests_total",
                "Requests sent upstream, by upstream and response code (or error class).",
                &["upstream", "code"],
            ),
            upstream_errors: counter_vec(
                &r,
                "cardguard_upstream_errors_total",
                "Upstream requests that failed, by class: timeout, connect, 5xx, 429, 4xx, other.",
                &["upstream", "class"],
            ),
            policy_dropped_series: counter(
                &r,
                "cardguard_policy_dropped_series_total",
                "Series dropped by policy (budgets and schema); the request still succeeded.",
            ),
            policy_dropped_samples: counter(
                &r,
                "cardguard_policy_dropped_samples_total",
                "Samples dropped by policy (budgets and schema); the request still succeeded.",
            ),
            schema_dropped_series: counter_vec(
                &r,
                "cardguard_schema_dropped_series_total",
                "Series dropped by a schema rule, by rule.",
                &["rule"],
            ),
            redacted_series: counter(
                &r,
                "cardguard_redacted_series_total",
                "Series whose label values were redacted before any other stage saw them.",
            ),
            relabel_dropped_series: counter(
                &r,
                "cardguard_relabel_dropped_series_total",
                "Series dropped by relabel_configs (also counted in the policy drop counters).",
            ),
            relabel_rewritten_series: counter(
                &r,
                "cardguard_relabel_rewritten_series_total",
                "Series whose labels relabel_configs changed (re-encoded on the way out).",
            ),
            downsampled_samples: counter_vec(
                &r,
                "cardguard_downsampled_samples_total",
                "Samples a route's min_interval left out (sent at lower resolution), by route.",
                &["route"],
            ),
            route_relabel_dropped_series: counter(
                &r,
                "cardguard_route_relabel_dropped_series_total",
                "Series a route's own relabel_configs dropped from that route.",
            ),
            downsample_series: gauge(
                &r,
                "cardguard_downsample_series",
                "Series (per route) tracked by the downsampling state.",
            ),
            reload_success: gauge(
                &r,
                "cardguard_config_last_reload_successful",
                "Whether the last configuration reload attempt was successful.",
            ),
            reload_timestamp: gauge(
                &r,
                "cardguard_config_last_reload_success_timestamp_seconds",
                "Timestamp of the last successful configuration reload.",
            ),
            build_info,
            registry: r,
        }
    }

    /// Publish a request's policy outcome (once per request).
    pub fn add_policy(&self, p: &crate::pipeline::Prepared) {
        self.policy_dropped_series.inc_by(p.dropped.dropped_series);
        self.policy_dropped_samples
            .inc_by(p.dropped.dropped_samples);
        self.redacted_series.inc_by(p.redacted);
        self.relabel_dropped_series.inc_by(p.relabel.dropped_series);
        self.relabel_rewritten_series
            .inc_by(p.relabel.rewritten_series);
        for (rule, n) in crate::schema::SchemaRule::ALL.iter().zip(p.schema_dropped) {
            if n > 0 {
                self.schema_dropped_series
                    .with_label_values(&[rule.key()])
                    .inc_by(n);
            }
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> (String, Vec<u8>) {
        let encoder = TextEncoder::new();
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on metric families the registry refuses up front.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        (encoder.format_type().to_string(), buf)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_names_with_units_and_total() {
        let t = Telemetry::new();
        t.write_requests.with_label_values(&["204"]).inc();
        t.received.add(&Counts {
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
