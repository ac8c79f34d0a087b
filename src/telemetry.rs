//! cardguard's own metrics, served on `/metrics` ("metrics" alone is ambiguous in a metrics
//! proxy, hence the name). This module owns the registry, the process and build metrics and
//! the one text encoding; each stage owns its metrics next to its code
//! (`<stage>/metrics.rs`, a struct with `register(&Registry) -> Self`) and registers them here.
//! It imports no stage, so any stage can depend on it.
//!
//! Every label has a small, fixed set of values: status codes, error classes, upstream names
//! from the config, owners up to a cap. Nothing is labelled by series or label value. Updates
//! happen once per request with counts gathered while processing it, never per sample.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The registry every stage registers into. Each server (and each test) owns one; clones share
/// it.
#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
}

impl Telemetry {
    /// A fresh registry with the process and build metrics registered.
    pub fn new() -> Self {
        let r = Registry::new();
        // Process CPU, RSS and open fds: what a platform team watches on any proxy.
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = r.register(Box::new(pc));
        }
        let build_info = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "cardguard_build_info",
                    "Always 1; the labels say which cardguard is running.",
                ),
                &["version"],
            )
            .expect("valid metric name"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Telemetry { registry: r }
    }

    /// The text exposition format of everything registered.
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

/// Register `c` and hand it back. Each server registers its metrics once on its own registry,
/// so a clash is a bug (two stages claiming one name).
pub fn register<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

pub fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid metric name"))
}

pub fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name"),
    )
}

pub fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric name"))
}

pub fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
            .expect("valid histogram"),
    )
}

/// `cardguard_memory_bytes{structure}` and `cardguard_memory_limit_bytes{structure}`: what each
/// structure that grows with input holds, about, and its cap. One family for every stage:
/// each structure is its own gauge (its `structure` a const label), so stages register their
/// rows independently and the registry shows them as one family.
pub const MEMORY_BYTES: &str = "cardguard_memory_bytes";
pub const MEMORY_BYTES_HELP: &str =
    "Bytes held by a structure that grows with input (an estimate), by structure.";
pub const MEMORY_LIMIT_BYTES: &str = "cardguard_memory_limit_bytes";
pub const MEMORY_LIMIT_BYTES_HELP: &str =
    "Cap on the bytes a structure that grows with input may hold, by structure.";

/// The `(used, limit)` gauges of one structure.
pub fn memory_gauges(r: &Registry, structure: &str) -> (IntGauge, IntGauge) {
    let one = |name: &str, help: &str| {
        register(
            r,
            IntGauge::with_opts(Opts::new(name, help).const_label("structure", structure))
                .expect("valid metric name"),
        )
    };
    (
        one(MEMORY_BYTES, MEMORY_BYTES_HELP),
        one(MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES_HELP),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_build_info() {
        let t = Telemetry::new();
        let (ctype, body) = t.encode();
        assert!(ctype.starts_with("text/plain"));
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("cardguard_build_info{version="));
    }
}
