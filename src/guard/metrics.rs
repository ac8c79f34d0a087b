//! The guard's metrics: its per-owner report (budget, usage, demand, drops by reason, top
//! offenders) and its totals, collected from the guard's state when `/metrics` is scraped.
//!
//! The rows follow the report, so they are as bounded as it is: `max_reported_services`
//! owners, the rest summed into one `other` row.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricType::{COUNTER, GAUGE};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::Registry;

use super::report::{OwnerReport, Report};

/// Where the report comes from: `None` when no guard is configured.
type Source = Arc<dyn Fn() -> Option<Report> + Send + Sync>;

/// The guard report as a collector on the registry.
#[derive(Clone)]
pub struct GuardMetrics {
    source: Source,
    descs: Arc<Vec<Desc>>,
}

/// One family of the report: what it is called and which labels its rows carry.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// The label after `service` (and `tenant`), if any.
    extra: Option<&'static str>,
    /// A per-owner family (labelled by `service`, `tenant`) or a total.
    per_owner: bool,
}

const fn owner(
    name: &'static str,
    kind: MetricType,
    extra: Option<&'static str>,
    help: &'static str,
) -> Family {
    Family {
        name,
        help,
        kind,
        extra,
        per_owner: true,
    }
}

const fn total(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        help,
        kind: MetricType::GAUGE,
        extra: None,
        per_owner: false,
    }
}

const BUDGET: usize = 0;
const ACTIVE: usize = 1;
const DEMAND: usize = 2;
const CREATED: usize = 3;
const SAMPLES: usize = 4;
const DROPPED: usize = 5;
const WARNED: usize = 6;
const OVERFLOWED: usize = 7;
const TOP_METRICS: usize = 8;
const TOP_LABELS: usize = 9;
const GLOBAL_ACTIVE: usize = 10;
const SERVICES: usize = 11;
const LIMIT: usize = 12;
const SERVICES_LIMIT: usize = 13;
const TENANTS: usize = 14;
const TENANTS_LIMIT: usize = 15;

const FAMILIES: [Family; 16] = [
    owner(
        "cardguard_series_budget",
        GAUGE,
        None,
        "Most active series a service may have.",
    ),
    owner(
        "cardguard_series_active",
        GAUGE,
        None,
        "Admitted series seen within the window.",
    ),
    owner(
        "cardguard_series_demand_estimate",
        GAUGE,
        None,
        "Distinct series that arrived within the window, admitted or not (HyperLogLog estimate).",
    ),
    owner(
        "cardguard_series_created_total",
        COUNTER,
        None,
        "Series admitted for the first time (or again after expiring).",
    ),
    owner(
        "cardguard_samples_total",
        COUNTER,
        None,
        "Samples received, per service.",
    ),
    owner(
        "cardguard_samples_dropped_total",
        COUNTER,
        Some("reason"),
        "Samples dropped by the guard, by reason.",
    ),
    owner(
        "cardguard_samples_warned_total",
        COUNTER,
        Some("reason"),
        "Samples a warn budget admitted that a drop budget would have dropped, by reason.",
    ),
    owner(
        "cardguard_samples_overflowed_total",
        COUNTER,
        Some("reason"),
        "Samples a relabel budget merged into __overflow__ aggregates instead of dropping, by reason.",
    ),
    owner(
        "cardguard_metric_series_estimate",
        GAUGE,
        Some("metric"),
        "Distinct series per metric name within the window, for each service's top metrics.",
    ),
    owner(
        "cardguard_label_values_estimate",
        GAUGE,
        Some("label"),
        "Distinct values per label name within the window, for each service's top labels.",
    ),
    total(
        "cardguard_guard_series_active",
        "Admitted series within the window, all services.",
    ),
    total("cardguard_guard_services", "Services the guard tracks."),
    total(
        "cardguard_guard_series_limit",
        "Cap on active series across all services.",
    ),
    total(
        "cardguard_guard_services_limit",
        "Cap on services the guard tracks (guard.max_owners); past it they share `other`.",
    ),
    total(
        "cardguard_guard_tenants",
        "Tenants the guard tracks (with guard.tenant_header).",
    ),
    total(
        "cardguard_guard_tenants_limit",
        "Cap on tenants the guard tracks (guard.max_tenants); past it they share tenant `other`.",
    ),
];

/// The `cardguard_memory_bytes` rows (and `_limit_bytes` where capped) of the guard's
/// structures: one desc per structure, its name a const label (see `telemetry::memory_gauges`).
fn memory_descs() -> Vec<Desc> {
    use crate::telemetry::{
        MEMORY_BYTES, MEMORY_BYTES_HELP, MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES_HELP,
    };
    let desc = |name: &str, help: &str, structure: &str| {
        Desc::new(
            name.into(),
            help.into(),
            vec![],
            [("structure".to_string(), structure.to_string())].into(),
        )
        .expect("valid metric name")
    };
    let mut v: Vec<Desc> = super::report::MEMORY_STRUCTURES
        .iter()
        .map(|s| desc(MEMORY_BYTES, MEMORY_BYTES_HELP, s))
        .collect();
    for s in ["guard_overflow", "guard_fresh"] {
        v.push(desc(MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES_HELP, s));
    }
    v
}

impl GuardMetrics {
    /// Register the report's families; `report` is called on every scrape.
    pub fn register(
        r: &Registry,
        report: impl Fn() -> Option<Report> + Send + Sync + 'static,
    ) -> Self {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                let mut labels = Vec::new();
                if f.per_owner {
                    labels.extend(["service".to_string(), "tenant".to_string()]);
                }
                labels.extend(f.extra.map(str::to_string));
                Desc::new(f.name.into(), f.help.into(), labels, Default::default())
                    .expect("valid metric name")
            })
            .chain(memory_descs())
            .collect();
        crate::telemetry::register(
            r,
            GuardMetrics {
                source: Arc::new(report),
                descs: Arc::new(descs),
            },
        )
    }
}

impl Collector for GuardMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        (self.source)().map_or_else(Vec::new, |r| families(&r))
    }
}

/// The report as metric families, those without rows left out.
pub fn families(report: &Report) -> Vec<MetricFamily> {
    let mut rows: [Vec<Metric>; FAMILIES.len()] = Default::default();
    for s in &report.services {
        let row = |f: usize, extra: Option<&str>, v: f64| sample(&FAMILIES[f], Some(s), extra, v);
        rows[BUDGET].push(row(BUDGET, None, s.budget as f64));
        rows[ACTIVE].push(row(ACTIVE, None, s.active as f64));
        if let Some(d) = s.demand {
            rows[DEMAND].push(row(DEMAND, None, d));
        }
        rows[CREATED].push(row(CREATED, None, s.created_total as f64));
        rows[SAMPLES].push(row(SAMPLES, None, s.samples_total as f64));
        for (f, by_reason) in [
            (DROPPED, &s.dropped_samples_total),
            (WARNED, &s.warned_samples_total),
            (OVERFLOWED, &s.overflowed_samples_total),
        ] {
            // Zero rows are left out except `budget`, so every owner has one row to graph.
            for (reason, n) in by_reason.iter().filter(|(r, n)| **n > 0 || **r == "budget") {
                rows[f].push(row(f, Some(reason), *n as f64));
            }
        }
        for t in &s.top_metrics {
            rows[TOP_METRICS].push(row(TOP_METRICS, Some(&t.name), t.estimate));
        }
        for t in &s.top_labels {
            rows[TOP_LABELS].push(row(TOP_LABELS, Some(&t.name), t.estimate));
        }
    }
    let total = |f: usize, v: f64| sample(&FAMILIES[f], None, None, v);
    rows[GLOBAL_ACTIVE].push(total(GLOBAL_ACTIVE, report.active_total as f64));
    rows[SERVICES].push(total(SERVICES, report.owners_total as f64));
    if let Some(m) = report.max_series {
        rows[LIMIT].push(total(LIMIT, m as f64));
    }
    rows[SERVICES_LIMIT].push(total(SERVICES_LIMIT, report.max_owners as f64));
    if let (Some(n), Some(max)) = (report.tenants_total, report.max_tenants) {
        rows[TENANTS].push(total(TENANTS, n as f64));
        rows[TENANTS_LIMIT].push(total(TENANTS_LIMIT, max as f64));
    }
    let family = |name: &str, help: &str, kind, rows| {
        let mut mf = MetricFamily::default();
        mf.set_name(name.into());
        mf.set_help(help.into());
        mf.set_field_type(kind);
        mf.set_metric(rows);
        mf
    };
    let mut out: Vec<MetricFamily> = FAMILIES
        .iter()
        .zip(rows)
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(f, rows)| family(f.name, f.help, f.kind, rows))
        .collect();
    use crate::telemetry::{
        MEMORY_BYTES, MEMORY_BYTES_HELP, MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES_HELP,
    };
    let memory = |v: u64, structure: &str| {
        let mut l = LabelPair::default();
        l.set_name("structure".into());
        l.set_value(structure.into());
        let mut g = Gauge::default();
        g.set_value(v as f64);
        let mut m = Metric::default();
        m.set_label(vec![l]);
        m.set_gauge(g);
        m
    };
    if !report.memory.is_empty() {
        let used = report.memory.iter().map(|m| memory(m.bytes, m.structure));
        out.push(family(
            MEMORY_BYTES,
            MEMORY_BYTES_HELP,
            GAUGE,
            used.collect(),
        ));
        let limits = report
            .memory
            .iter()
            .filter_map(|m| m.limit_bytes.map(|l| memory(l, m.structure)));
        out.push(family(
            MEMORY_LIMIT_BYTES,
            MEMORY_LIMIT_BYTES_HELP,
            GAUGE,
            limits.collect(),
        ));
    }
    out
}

/// One row: `service` (and `tenant` when the owner has one), then the family's own label.
fn sample(f: &Family, owner: Option<&OwnerReport>, extra: Option<&str>, v: f64) -> Metric {
    let mut labels = Vec::with_capacity(3);
    let mut label = |name: &str, value: &str| {
        let mut l = LabelPair::default();
        l.set_name(name.into());
        l.set_value(value.into());
        labels.push(l);
    };
    if let Some(o) = owner {
        label("service", &o.service);
        if let Some(t) = &o.tenant {
            label("tenant", t);
        }
    }
    if let (Some(name), Some(value)) = (f.extra, extra) {
        label(name, value);
    }
    let mut m = Metric::default();
    m.set_label(labels);
    if f.kind == COUNTER {
        let mut c = Counter::default();
        c.set_value(v);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(v);
        m.set_gauge(g);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::report::Top;

    fn report(services: Vec<OwnerReport>) -> Report {
        Report {
            active_total: 42,
            max_series: None,
            owners_total: 7,
            max_owners: 10,
            tenants_total: Some(3),
            max_tenants: Some(5),
            memory: vec![crate::guard::report::Memory {
                structure: "guard_overflow",
                bytes: 12,
                limit_bytes: Some(34),
            }],
            window_seconds: 600,
            services,
        }
    }

    fn row(service: &str, tenant: Option<&str>) -> OwnerReport {
        OwnerReport {
            service: service.into(),
            tenant: tenant.map(String::from),
            budget: 100,
            action: "drop",
            active: 7,
            demand: None,
            created_total: 3,
            samples_total: 11,
            dropped_samples_total: [
                ("budget", 0),
                ("label_value_length", 0),
                ("metric_budget", 2),
            ]
            .into_iter()
            .collect(),
            warned_samples_total: Default::default(),
            overflowed_samples_total: Default::default(),
            top_metrics: vec![Top {
                name: "m\"x\\y\nz".into(),
                estimate: 0.5,
            }],
            top_labels: vec![],
        }
    }

    #[test]
    fn the_registry_gathers_the_report_on_each_scrape() {
        let r = Registry::new();
        let shown = Arc::new(std::sync::Mutex::new(None));
        let source = shown.clone();
        GuardMetrics::register(&r, move || source.lock().unwrap().clone());
        // No guard configured: no families at all.
        assert!(r.gather().is_empty());

        *shown.lock().unwrap() = Some(report(vec![row("a", Some("t")), row("other", None)]));
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&r.gather(), &mut text)
            .unwrap();
        for line in [
            "# TYPE cardguard_series_created_total counter",
            "cardguard_series_budget{service=\"a\",tenant=\"t\"} 100",
            "cardguard_series_budget{service=\"other\"} 100",
            // Zero reasons are left out, but for `budget`.
            "cardguard_samples_dropped_total{service=\"a\",tenant=\"t\",reason=\"budget\"} 0",
            "cardguard_samples_dropped_total{service=\"a\",tenant=\"t\",reason=\"metric_budget\"} 2",
            "cardguard_metric_series_estimate{service=\"other\",metric=\"m\\\"x\\\\y\\nz\"} 0.5",
            "cardguard_guard_series_active 42",
            "cardguard_guard_services 7",
            "cardguard_guard_services_limit 10",
            "cardguard_guard_tenants 3",
            "cardguard_guard_tenants_limit 5",
            "cardguard_memory_bytes{structure=\"guard_overflow\"} 12",
            "cardguard_memory_limit_bytes{structure=\"guard_overflow\"} 34",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        for absent in [
            "label_value_length",
            "cardguard_series_demand_estimate",
            "cardguard_samples_warned_total",
            "cardguard_label_values_estimate",
            "cardguard_guard_series_limit",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }
}
