//! What the guard tells the platform team: per owner budget, usage, demand, drops and top
//! offenders, as Prometheus text for /metrics and as JSON for `/api/v1/cardinality`.
//!
//! The number of owners reported is capped (`max_reported_services`, largest first); the rest
//! are summed into one `other` row, so the guard's own metrics never explode.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{Guard, OTHER};
use crate::config::GuardConfig;
use crate::series::{Reason, REASONS};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OwnerReport {
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub budget: u64,
    pub action: &'static str,
    pub active: u64,
    /// Distinct series that arrived over the window, admitted or not (HyperLogLog).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demand: Option<f64>,
    pub created_total: u64,
    pub samples_total: u64,
    /// Samples dropped, by reason.
    pub dropped_samples_total: BTreeMap<&'static str, u64>,
    /// Samples a `warn` budget let through that `drop` would have dropped, by reason.
    pub warned_samples_total: BTreeMap<&'static str, u64>,
    /// Samples a `relabel` budget merged into overflow aggregates, by reason.
    pub overflowed_samples_total: BTreeMap<&'static str, u64>,
    /// Metric names with the most distinct series in the window (estimates).
    pub top_metrics: Vec<Top>,
    /// Label names with the most distinct values in the window (estimates).
    pub top_labels: Vec<Top>,
}

/// A name and its distinct-count estimate.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Top {
    pub name: String,
    pub estimate: f64,
}

fn tops(v: Vec<(String, f64)>) -> Vec<Top> {
    v.into_iter()
        .map(|(name, e)| Top {
            name,
            estimate: e.round(),
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub active_total: u64,
    pub max_series: Option<u64>,
    pub owners_total: usize,
    pub window_seconds: u64,
    pub services: Vec<OwnerReport>,
}

impl Guard {
    /// Gather the report. Cost grows with the number of reported owners (sketch merges), not
    /// with the number of series.
    pub fn report(&self, cfg: &GuardConfig) -> Report {
        let owners = self.owners();
        let mut rows: Vec<(u64, std::sync::Arc<super::Owner>)> = owners
            .iter()
            .map(|o| {
                (
                    o.state.lock().unwrap_or_else(|e| e.into_inner()).active(),
                    o.clone(),
                )
            })
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
        let shown = cfg.max_reported_services.min(rows.len());
        let mut services = Vec::with_capacity(shown + 1);
        for (active, o) in &rows[..shown] {
            let st = o.state.lock().unwrap_or_else(|e| e.into_inner());
            services.push(OwnerReport {
                service: o.key.display_name().to_string(),
                tenant: o.key.tenant.clone(),
                budget: st.budget.max_series,
                action: st.budget.action.as_str(),
                active: *active,
                demand: Some(st.demand_estimate().round()),
                created_total: o.counters.created.load(Ordering::Relaxed),
                samples_total: o.counters.samples.load(Ordering::Relaxed),
                dropped_samples_total: by_reason(&o.counters.dropped_samples),
                warned_samples_total: by_reason(&o.counters.warned_samples),
                overflowed_samples_total: by_reason(&o.counters.overflowed_samples),
                top_metrics: tops(st.top_metrics(cfg.top_k)),
                top_labels: tops(st.top_labels(cfg.top_k)),
            });
        }
        if rows.len() > shown {
            let mut other = OwnerReport {
                service: OTHER.to_string(),
                tenant: None,
                budget: 0,
                action: "mixed",
                active: 0,
                demand: None,
                created_total: 0,
                samples_total: 0,
                dropped_samples_total: Reason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
                warned_samples_total: Reason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
                overflowed_samples_total: Reason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
                top_metrics: Vec::new(),
                top_labels: Vec::new(),
            };
            for (active, o) in &rows[shown..] {
                other.active += active;
                other.budget += o
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .budget
                    .max_series;
                other.created_total += o.counters.created.load(Ordering::Relaxed);
                other.samples_total += o.counters.samples.load(Ordering::Relaxed);
                for (r, n) in by_reason(&o.counters.dropped_samples) {
                    *other.dropped_samples_total.entry(r).or_default() += n;
                }
                for (r, n) in by_reason(&o.counters.warned_samples) {
                    *other.warned_samples_total.entry(r).or_default() += n;
                }
                for (r, n) in by_reason(&o.counters.overflowed_samples) {
                    *other.overflowed_samples_total.entry(r).or_default() += n;
                }
            }
            services.push(other);
        }
        Report {
            active_total: self.global_active(),
            max_series: cfg.max_series,
            owners_total: owners.len(),
            window_seconds: cfg.window.as_secs(),
            services,
        }
    }
}

fn by_reason(counters: &[std::sync::atomic::AtomicU64; REASONS]) -> BTreeMap<&'static str, u64> {
    Reason::ALL
        .iter()
        .map(|r| (r.as_str(), counters[r.index()].load(Ordering::Relaxed)))
        .collect()
}

impl Report {
    /// Prometheus text exposition of the report.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut family =
            |name: &str, kind: &str, help: &str, rows: &mut dyn Iterator<Item = (String, f64)>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (labels, v) in rows {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            };
        let base = |s: &OwnerReport| match &s.tenant {
            Some(t) => format!("service=\"{}\",tenant=\"{}\"", esc(&s.service), esc(t)),
            None => format!("service=\"{}\"", esc(&s.service)),
        };
        let ss = &self.services;
        family(
            "cardguard_series_budget",
            "gauge",
            "Most active series a service may have.",
            &mut ss.iter().map(|s| (base(s), s.budget as f64)),
        );
        family(
            "cardguard_series_active",
            "gauge",
            "Admitted series seen within the window.",
            &mut ss.iter().map(|s| (base(s), s.active as f64)),
        );
        family(
            "cardguard_series_demand_estimate",
            "gauge",
            "Distinct series that arrived within the window, admitted or not (HyperLogLog estimate).",
            &mut ss.iter().filter_map(|s| s.demand.map(|d| (base(s), d))),
        );
        family(
            "cardguard_series_created_total",
            "counter",
            "Series admitted for the first time (or again after expiring).",
            &mut ss.iter().map(|s| (base(s), s.created_total as f64)),
        );
        family(
            "cardguard_samples_total",
            "counter",
            "Samples received, per service.",
            &mut ss.iter().map(|s| (base(s), s.samples_total as f64)),
        );
        family(
            "cardguard_samples_dropped_total",
            "counter",
            "Samples dropped by the guard, by reason.",
            &mut ss.iter().flat_map(|s| {
                s.dropped_samples_total
                    .iter()
                    .filter(|(r, n)| **n > 0 || **r == "budget")
                    .map(move |(r, n)| (format!("{},reason=\"{r}\"", base(s)), *n as f64))
            }),
        );
        family(
            "cardguard_samples_warned_total",
            "counter",
            "Samples a warn budget admitted that a drop budget would have dropped, by reason.",
            &mut ss.iter().flat_map(|s| {
                s.warned_samples_total
                    .iter()
                    .filter(|(r, n)| **n > 0 || **r == "budget")
                    .map(move |(r, n)| (format!("{},reason=\"{r}\"", base(s)), *n as f64))
            }),
        );
        family(
            "cardguard_samples_overflowed_total",
            "counter",
            "Samples a relabel budget merged into __overflow__ aggregates instead of dropping, by reason.",
            &mut ss.iter().flat_map(|s| {
                s.overflowed_samples_total
                    .iter()
                    .filter(|(r, n)| **n > 0 || **r == "budget")
                    .map(move |(r, n)| (format!("{},reason=\"{r}\"", base(s)), *n as f64))
            }),
        );
        family(
            "cardguard_metric_series_estimate",
            "gauge",
            "Distinct series per metric name within the window, for each service's top metrics.",
            &mut ss.iter().flat_map(|s| {
                s.top_metrics.iter().map(move |t| {
                    (
                        format!("{},metric=\"{}\"", base(s), esc(&t.name)),
                        t.estimate,
                    )
                })
            }),
        );
        family(
            "cardguard_label_values_estimate",
            "gauge",
            "Distinct values per label name within the window, for each service's top labels.",
            &mut ss.iter().flat_map(|s| {
                s.top_labels.iter().map(move |t| {
                    (
                        format!("{},label=\"{}\"", base(s), esc(&t.name)),
                        t.estimate,
                    )
                })
            }),
        );
        let _ = writeln!(
            out,
            "# HELP cardguard_guard_series_active Admitted series within the window, all services.\n\
             # TYPE cardguard_guard_series_active gauge\ncardguard_guard_series_active {}",
            self.active_total
        );
        let _ = writeln!(
            out,
            "# HELP cardguard_guard_services Services the guard tracks.\n\
             # TYPE cardguard_guard_services gauge\ncardguard_guard_services {}",
            self.owners_total
        );
        if let Some(m) = self.max_series {
            let _ = writeln!(
                out,
                "# HELP cardguard_guard_series_limit Cap on active series across all services.\n\
                 # TYPE cardguard_guard_series_limit gauge\ncardguard_guard_series_limit {m}"
            );
        }
        out
    }
}

/// Label-value escaping of the text format.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
