//! What the guard tells the platform team: per owner budget, usage, demand, drops and top
//! offenders, as metric families for /metrics (`guard::metrics`) and as JSON for
//! `/api/v1/cardinality`.
//!
//! The number of owners reported is capped (`max_reported_services`, largest first); the rest
//! are summed into one `other` row, so the guard's own metrics never explode.
//!
//! `Guard::counts` is the same rows without the offender sketches: cheap enough for the status
//! page to sample every few seconds and turn the counters into rates.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use super::owner::ByReason;
use super::GuardConfig;
use super::{Guard, OTHER};
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

/// What one of the guard's structures holds, and its cap (`cardguard_memory_bytes`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Memory {
    pub structure: &'static str,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
}

/// The structures the guard reports in `Report::memory`, in order.
pub const MEMORY_STRUCTURES: [&str; 3] = ["guard_owners", "guard_overflow", "guard_fresh"];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub active_total: u64,
    pub max_series: Option<u64>,
    pub owners_total: usize,
    pub max_owners: usize,
    /// With `tenant_header`: tenants tracked, and `max_tenants`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants_total: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tenants: Option<usize>,
    pub memory: Vec<Memory>,
    pub window_seconds: u64,
    pub services: Vec<OwnerReport>,
}

impl OwnerReport {
    /// How much of its budget the owner uses (1.0 = full; above when a `warn` budget lets it
    /// past, or the budget shrank on a reload). An owner without a budget but with series is
    /// infinitely over it.
    pub fn fill(&self) -> f64 {
        fill(self.active, self.budget)
    }

    /// Whether this is the sum of the owners past `max_reported_services` rather than one
    /// owner (an owner past `max_owners` is one owner named `other`, with a tenant or a budget
    /// of its own).
    pub fn is_summary(&self) -> bool {
        self.service == OTHER && self.action == SUMMARY_ACTION
    }
}

fn fill(active: u64, budget: u64) -> f64 {
    match (active, budget) {
        (0, _) => 0.0,
        (_, 0) => f64::INFINITY,
        (a, b) => a as f64 / b as f64,
    }
}

/// The action shown on the summed `other` row: its owners may have different ones.
const SUMMARY_ACTION: &str = "mixed";

/// One reported row's counters at one moment (`Guard::counts`): the report's rows without the
/// offender sketches.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerCounts {
    pub service: String,
    pub tenant: Option<String>,
    /// The sum of the owners past `max_reported_services`.
    pub summary: bool,
    pub budget: u64,
    pub active: u64,
    /// Distinct series that arrived over the window (HyperLogLog); 0 on the summary row.
    pub demand: f64,
    pub created_total: u64,
    pub samples_total: u64,
    /// Indexed by `Reason::index`.
    pub dropped_samples_total: [u64; REASONS],
}

impl From<&OwnerReport> for OwnerCounts {
    fn from(r: &OwnerReport) -> Self {
        OwnerCounts {
            service: r.service.clone(),
            tenant: r.tenant.clone(),
            summary: r.is_summary(),
            budget: r.budget,
            active: r.active,
            demand: r.demand.unwrap_or(0.0),
            created_total: r.created_total,
            samples_total: r.samples_total,
            dropped_samples_total: std::array::from_fn(|i| {
                r.dropped_samples_total
                    .get(Reason::ALL[i].as_str())
                    .copied()
                    .unwrap_or(0)
            }),
        }
    }
}

impl Guard {
    /// With shared budgets joined: the owner's active series and demand across every
    /// replica, as last fetched from Redis (`Shared::maintain`).
    fn global_counts(
        &self,
        cfg: &GuardConfig,
        key: &super::OwnerKey,
    ) -> Option<super::shared::GlobalCounts> {
        cfg.shared.as_ref()?;
        self.shared()?.global_counts(key)
    }

    /// Every owner with its active count, largest first, how many of them are reported one
    /// by one (the rest are summed as `other`), and the bytes the owners hold.
    fn ranked(&self, cfg: &GuardConfig) -> (Vec<(u64, Arc<super::Owner>)>, usize, usize) {
        let mut owner_bytes = 0;
        let mut rows: Vec<(u64, Arc<super::Owner>)> = self
            .owners()
            .into_iter()
            .map(|o| {
                let st = o.state.lock().unwrap_or_else(|e| e.into_inner());
                owner_bytes += st.memory_bytes()
                    + std::mem::size_of::<super::Owner>()
                    + o.key.tenant.as_ref().map_or(0, String::len)
                    + o.key.owner.as_ref().map_or(0, String::len);
                let active = st.active();
                drop(st);
                (active, o)
            })
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
        let shown = cfg.max_reported_services.min(rows.len());
        (rows, shown, owner_bytes + self.index_bytes())
    }

    /// The report's rows, counters only: one demand-sketch merge per reported owner, no
    /// offender sketches. What the status page samples for its rates.
    pub fn counts(&self, cfg: &GuardConfig) -> Vec<OwnerCounts> {
        let (rows, shown, _) = self.ranked(cfg);
        let mut out = Vec::with_capacity(shown + 1);
        for (active, o) in &rows[..shown] {
            let st = o.state.lock().unwrap_or_else(|e| e.into_inner());
            let global = self.global_counts(cfg, &o.key);
            out.push(OwnerCounts {
                service: o.key.display_name().to_string(),
                tenant: o.key.tenant.clone(),
                summary: false,
                budget: st.budget.max_series,
                active: global.map_or(*active, |g| g.active),
                demand: global.map_or_else(|| st.demand_estimate().round(), |g| g.demand),
                created_total: o.counters.created.load(Ordering::Relaxed),
                samples_total: o.counters.samples.load(Ordering::Relaxed),
                dropped_samples_total: o.counters.dropped_samples(),
            });
        }
        if rows.len() > shown {
            let mut other = OwnerCounts {
                service: OTHER.to_string(),
                tenant: None,
                summary: true,
                budget: 0,
                active: 0,
                demand: 0.0,
                created_total: 0,
                samples_total: 0,
                dropped_samples_total: [0; REASONS],
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
                for (sum, n) in other
                    .dropped_samples_total
                    .iter_mut()
                    .zip(o.counters.dropped_samples())
                {
                    *sum += n;
                }
            }
            out.push(other);
        }
        out
    }

    /// Gather the report. Cost grows with the number of reported owners (sketch merges), not
    /// with the number of series.
    pub fn report(&self, cfg: &GuardConfig) -> Report {
        let (rows, shown, owner_bytes) = self.ranked(cfg);
        let mut services = Vec::with_capacity(shown + 1);
        for (active, o) in &rows[..shown] {
            let st = o.state.lock().unwrap_or_else(|e| e.into_inner());
            let global = self.global_counts(cfg, &o.key);
            services.push(OwnerReport {
                service: o.key.display_name().to_string(),
                tenant: o.key.tenant.clone(),
                budget: st.budget.max_series,
                action: st.budget.action.as_str(),
                active: global.map_or(*active, |g| g.active),
                demand: Some(global.map_or_else(|| st.demand_estimate().round(), |g| g.demand)),
                created_total: o.counters.created.load(Ordering::Relaxed),
                samples_total: o.counters.samples.load(Ordering::Relaxed),
                dropped_samples_total: by_reason(o.counters.dropped_samples()),
                warned_samples_total: by_reason(o.counters.warned_samples()),
                overflowed_samples_total: by_reason(o.counters.overflowed_samples()),
                top_metrics: tops(st.top_metrics(cfg.top_k)),
                top_labels: tops(st.top_labels(cfg.top_k)),
            });
        }
        if rows.len() > shown {
            let mut other = OwnerReport {
                service: OTHER.to_string(),
                tenant: None,
                budget: 0,
                action: SUMMARY_ACTION,
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
                for (r, n) in by_reason(o.counters.dropped_samples()) {
                    *other.dropped_samples_total.entry(r).or_default() += n;
                }
                for (r, n) in by_reason(o.counters.warned_samples()) {
                    *other.warned_samples_total.entry(r).or_default() += n;
                }
                for (r, n) in by_reason(o.counters.overflowed_samples()) {
                    *other.overflowed_samples_total.entry(r).or_default() += n;
                }
            }
            services.push(other);
        }
        let overflow = self.overflow.stats();
        let tenants = cfg.tenant_header.is_some();
        Report {
            active_total: self.global_active(),
            max_series: cfg.max_series,
            owners_total: rows.len(),
            max_owners: cfg.max_owners,
            tenants_total: tenants.then(|| self.tenants()),
            max_tenants: tenants.then_some(cfg.max_tenants),
            memory: vec![
                Memory {
                    structure: MEMORY_STRUCTURES[0],
                    bytes: owner_bytes as u64,
                    limit_bytes: None,
                },
                Memory {
                    structure: MEMORY_STRUCTURES[1],
                    bytes: overflow.bytes as u64,
                    limit_bytes: Some(overflow.max_bytes as u64),
                },
                Memory {
                    structure: MEMORY_STRUCTURES[2],
                    bytes: self.fresh.memory_bytes() as u64,
                    limit_bytes: Some(super::fresh::MAX_BYTES as u64),
                },
            ],
            window_seconds: cfg.window.as_secs(),
            services,
        }
    }
}

fn by_reason(counters: ByReason) -> BTreeMap<&'static str, u64> {
    Reason::ALL
        .iter()
        .map(|r| (r.as_str(), counters[r.index()]))
        .collect()
}

impl Report {
    /// The report in the text exposition format, as `/metrics` shows it (there through the
    /// registry, see `guard::metrics`).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Only fails on a family without rows, which `families` leaves out.
        let _ =
            prometheus::TextEncoder::new().encode_utf8(&super::metrics::families(self), &mut out);
        out
    }
}
