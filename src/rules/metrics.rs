//! The rules' own metrics. `rule_group` values come from the loaded rule files (`file;name`,
//! as Prometheus labels them), so their number is bounded by the config.

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::buffer::BufferStats;
use super::tap::TapCounts;
use crate::telemetry::{counter, counter_vec, gauge, memory_gauges, register};

#[derive(Clone)]
pub struct RuleMetrics {
    pub evaluations: IntCounterVec,
    pub evaluation_failures: IntCounterVec,
    pub last_duration: GaugeVec,
    pub last_evaluation: GaugeVec,
    pub samples_recorded: IntCounter,
    pub stale_markers: IntCounter,
    pub buffered_series: IntGauge,
    pub buffered_samples: IntGauge,
    pub buffer_bytes: IntGauge,
    pub samples_buffered: IntCounter,
    pub out_of_order: IntCounter,
    pub refused_series: IntCounter,
    pub evicted_early: IntCounter,
    pub withheld_series: IntCounter,
    pub withheld_samples: IntCounter,
    pub output_sent: IntCounter,
    pub output_dropped: IntCounterVec,
    pub output_queue: IntGauge,
    /// `cardguard_memory_bytes` / `_limit_bytes` of the buffers' labels and the output queue.
    pub buffer_label_memory: (IntGauge, IntGauge),
    pub output_queue_memory: (IntGauge, IntGauge),
}

impl RuleMetrics {
    pub fn register(r: &Registry) -> Self {
        let by_group = |name: &str, help: &str| counter_vec(r, name, help, &["rule_group"]);
        RuleMetrics {
            evaluations: by_group(
                "cardguard_rule_evaluations_total",
                "Rule group evaluations, by group.",
            ),
            evaluation_failures: by_group(
                "cardguard_rule_evaluation_failures_total",
                "Rule evaluations that failed (each failing rule counts), by group.",
            ),
            last_duration: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "cardguard_rule_group_last_duration_seconds",
                        "Duration of the last evaluation of the group.",
                    ),
                    &["rule_group"],
                )
                .expect("valid metric"),
            ),
            last_evaluation: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "cardguard_rule_group_last_evaluation_timestamp_seconds",
                        "Evaluation timestamp (after query_offset) of the group's last evaluation.",
                    ),
                    &["rule_group"],
                )
                .expect("valid metric"),
            ),
            samples_recorded: counter(
                r,
                "cardguard_rule_samples_recorded_total",
                "Samples produced by recording rules (stale markers included).",
            ),
            stale_markers: counter(
                r,
                "cardguard_rule_stale_markers_total",
                "Stale markers written for recorded series that disappeared.",
            ),
            buffered_series: gauge(
                r,
                "cardguard_rule_buffered_series",
                "Series held in the rule buffers.",
            ),
            buffered_samples: gauge(
                r,
                "cardguard_rule_buffered_samples",
                "Samples held in the rule buffers.",
            ),
            buffer_bytes: gauge(
                r,
                "cardguard_rule_buffer_bytes",
                "Approximate memory of the rule buffers (labels, rings, index).",
            ),
            samples_buffered: counter(
                r,
                "cardguard_rule_samples_buffered_total",
                "Input samples added to the rule buffers.",
            ),
            out_of_order: counter(
                r,
                "cardguard_rule_samples_out_of_order_total",
                "Input samples ignored by the buffers: at or before the newest buffered for their series (retries, out of order).",
            ),
            refused_series: counter(
                r,
                "cardguard_rule_buffer_refused_series_total",
                "Series a rule reads that were not buffered because rules.max_buffered_series was reached (counted per request).",
            ),
            evicted_early: counter(
                r,
                "cardguard_rule_samples_evicted_early_total",
                "Buffered samples pushed out by rules.max_samples_per_series before the plan's history ended.",
            ),
            withheld_series: counter(
                r,
                "cardguard_rule_withheld_series_total",
                "Input series buffered and not forwarded (forward_inputs: false).",
            ),
            withheld_samples: counter(
                r,
                "cardguard_rule_withheld_samples_total",
                "Input samples buffered and not forwarded (forward_inputs: false).",
            ),
            output_sent: counter(
                r,
                "cardguard_rule_output_samples_sent_total",
                "Recorded samples acknowledged by the upstream.",
            ),
            output_dropped: counter_vec(
                r,
                "cardguard_rule_output_dropped_samples_total",
                "Recorded samples never delivered, by reason: queue_full, rejected (a 4xx from the upstream), no_upstream.",
                &["reason"],
            ),
            output_queue: gauge(
                r,
                "cardguard_rule_output_queue_samples",
                "Recorded samples waiting to be sent upstream.",
            ),
            buffer_label_memory: memory_gauges(r, "rules_buffer_labels"),
            output_queue_memory: memory_gauges(r, "rules_output_queue"),
        }
    }

    /// The byte caps of the config in force, next to their use.
    pub fn set_memory_limits(&self, rules: &super::RulesConfig) {
        let cap = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.buffer_label_memory
            .1
            .set(cap(rules.max_buffered_label_bytes));
        self.output_queue_memory
            .1
            .set(cap(rules.max_output_queue_bytes));
    }

    pub fn set_output_queue(&self, samples: usize, bytes: usize) {
        self.output_queue.set(samples as i64);
        self.output_queue_memory.0.set(bytes as i64);
    }

    /// Publish one request's tap counts.
    pub fn add_observed(&self, o: &TapCounts) {
        if *o == TapCounts::default() {
            return;
        }
        self.samples_buffered.inc_by(o.samples);
        self.out_of_order.inc_by(o.out_of_order);
        self.refused_series.inc_by(o.refused_series);
        self.evicted_early.inc_by(o.evicted_early);
        self.withheld_series.inc_by(o.withheld_series);
        self.withheld_samples.inc_by(o.withheld_samples);
    }

    pub fn set_buffer(&self, s: &BufferStats) {
        self.buffered_series.set(s.series as i64);
        self.buffered_samples.set(s.samples as i64);
        self.buffer_bytes.set(s.bytes as i64);
        self.buffer_label_memory.0.set(s.label_bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let r = Registry::new();
        let m = RuleMetrics::register(&r);
        // Labelled families appear once they have a row.
        m.evaluations.with_label_values(&["f;g"]).inc();
        m.evaluation_failures.with_label_values(&["f;g"]).inc();
        m.last_duration.with_label_values(&["f;g"]).set(0.1);
        m.last_evaluation.with_label_values(&["f;g"]).set(1.0);
        m.output_dropped.with_label_values(&["queue_full"]).inc();
        let families = r.gather();
        // The two memory families hold a row for each of the rules' two structures.
        assert_eq!(families.len(), 20);
        for f in families {
            let name = f.name();
            if name.starts_with("cardguard_memory_") {
                assert_eq!(f.get_metric().len(), 2, "{name}");
                continue;
            }
            assert!(name.starts_with("cardguard_rule_"), "{name}");
            if f.get_field_type() == prometheus::proto::MetricType::COUNTER {
                assert!(name.ends_with("_total"), "{name}");
            } else {
                assert!(!name.ends_with("_total"), "{name}");
            }
        }
    }
}
