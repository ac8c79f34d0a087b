//! What the page shows, gathered from the server's state in one place: the guard's report with
//! each row's rates, the upstreams and rule groups with what their counters say, the config
//! and the version. Plain data, so that rendering is a pure function of it (and testable
//! without a server).

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;

use super::history::{GroupCounts, Observation, OwnerRates, UpstreamCounts, UpstreamState};
use crate::guard::report::{OwnerCounts, OwnerReport, Report};
use crate::ingest::State;

/// The whole page.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub version: &'static str,
    pub now_ms: i64,
    /// `None`: the guard is off.
    pub guard: Option<GuardView>,
    pub upstreams: Vec<UpstreamView>,
    pub groups: Vec<GroupView>,
    pub config: ConfigView,
}

#[derive(Debug, Clone)]
pub struct GuardView {
    pub report: Report,
    pub max_reported_services: usize,
    pub max_owners: usize,
    pub owner_labels: Vec<String>,
    /// The report's rows with their rates, in the page's order (see `Row::order`).
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub report: OwnerReport,
    /// `None` until the service has been observed twice.
    pub rates: Option<OwnerRates>,
}

impl Row {
    pub fn exploding(&self) -> bool {
        self.rates.as_ref().is_some_and(|r| r.exploding)
    }
}

/// Closest to (or furthest over) the budget first; an explosion before a calm row of the same
/// use; the summed `other` row last, being no one service.
pub(super) fn order(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        a.report
            .is_summary()
            .cmp(&b.report.is_summary())
            .then_with(|| b.report.fill().total_cmp(&a.report.fill()))
            .then_with(|| b.exploding().cmp(&a.exploding()))
            .then_with(|| a.report.service.cmp(&b.report.service))
            .then_with(|| a.report.tenant.cmp(&b.report.tenant))
    });
}

#[derive(Debug, Clone, Default)]
pub struct UpstreamView {
    pub name: String,
    /// Scheme, host, port and path only: never the userinfo or the query, which may hold
    /// credentials.
    pub url: String,
    pub version: String,
    pub timeout_s: f64,
    pub requests_total: u64,
    pub errors_total: u64,
    pub state: UpstreamState,
}

#[derive(Debug, Clone, Default)]
pub struct GroupView {
    pub key: String,
    pub file: String,
    pub name: String,
    pub rules: usize,
    pub interval_s: f64,
    pub evaluations: u64,
    pub failures_total: u64,
    /// Failures within the rate window.
    pub failures_recent: u64,
    /// Evaluation timestamp (after the query offset) of the last evaluation.
    pub last_evaluation_s: Option<f64>,
    pub last_duration_s: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct ConfigView {
    pub file: Option<String>,
    pub last_reload_ok: bool,
    pub last_reload_success_s: i64,
}

/// Gather the page: the report and every counter, recorded in the history (which turns them
/// into rates).
pub fn gather(state: &State, now_ms: i64) -> View {
    let config = state.config();
    let report = config.guard.as_ref().map(|g| (g, state.guard.report(g)));
    let upstream_counts = upstream_counts(state);
    let group_counts = group_counts(state);
    let rates = state.status.observe(Observation {
        at_ms: now_ms,
        owners: report
            .as_ref()
            .map(|(_, r)| r.services.iter().map(OwnerCounts::from).collect())
            .unwrap_or_default(),
        upstreams: upstream_counts.clone(),
        groups: group_counts.clone(),
    });

    let guard = report.map(|(g, report)| {
        let mut rows: Vec<Row> = report
            .services
            .iter()
            .map(|r| Row {
                rates: rates
                    .owners
                    .get(&(r.service.clone(), r.tenant.clone(), r.is_summary()))
                    .cloned(),
                report: r.clone(),
            })
            .collect();
        order(&mut rows);
        GuardView {
            max_reported_services: g.max_reported_services,
            max_owners: g.max_owners,
            owner_labels: g.owner_labels.clone(),
            report,
            rows,
        }
    });

    let upstreams = config
        .routing
        .iter()
        .flat_map(|r| r.upstreams.iter())
        .map(|up| {
            let counts = upstream_counts.iter().find(|c| c.name == up.name);
            UpstreamView {
                name: up.name.clone(),
                url: safe_url(&up.url),
                version: match up.version {
                    crate::wire::Version::V1 => "1.0",
                    crate::wire::Version::V2 => "2.0",
                }
                .to_string(),
                timeout_s: up.timeout.as_secs_f64(),
                requests_total: counts.map_or(0, |c| c.requests),
                errors_total: counts.map_or(0, |c| c.errors.iter().map(|(_, n)| n).sum()),
                state: rates.upstreams.get(&up.name).cloned().unwrap_or_default(),
            }
        })
        .collect();

    let rules = &state.rules.metrics;
    let last_evaluation = gauges(&rules.last_evaluation.collect(), "rule_group");
    let last_duration = gauges(&rules.last_duration.collect(), "rule_group");
    let groups = config
        .rules
        .groups
        .iter()
        .map(|g| {
            let key = g.key();
            let counts = group_counts.iter().find(|c| c.key == key);
            GroupView {
                file: g.file.clone(),
                name: g.name.clone(),
                rules: g.rules.len(),
                interval_s: g
                    .interval
                    .unwrap_or(config.rules.evaluation_interval)
                    .as_secs_f64(),
                evaluations: counts.map_or(0, |c| c.evaluations),
                failures_total: counts.map_or(0, |c| c.failures),
                failures_recent: rates.group_failures.get(&key).copied().unwrap_or(0),
                last_evaluation_s: lookup(&last_evaluation, &key),
                last_duration_s: lookup(&last_duration, &key),
                key,
            }
        })
        .collect();

    let ingest = &state.metrics.ingest;
    View {
        version: env!("CARGO_PKG_VERSION"),
        now_ms,
        guard,
        upstreams,
        groups,
        config: ConfigView {
            file: state.config_file().map(|p| p.display().to_string()),
            last_reload_ok: ingest.reload_success.get() == 1,
            last_reload_success_s: ingest.reload_timestamp.get(),
        },
    }
}

/// The counters the history samples between renders (the guard ticker calls this): cheap,
/// no offender sketches.
pub fn observation(state: &State, now_ms: i64) -> Observation {
    let config = state.config();
    Observation {
        at_ms: now_ms,
        owners: config
            .guard
            .as_ref()
            .map(|g| state.guard.counts(g))
            .unwrap_or_default(),
        upstreams: upstream_counts(state),
        groups: group_counts(state),
    }
}

/// Per upstream from forward's metrics, read through `collect` (which, unlike
/// `with_label_values`, creates no series).
fn upstream_counts(state: &State) -> Vec<UpstreamCounts> {
    let f = &state.metrics.forward;
    let mut out: Vec<UpstreamCounts> = Vec::new();
    fn entry<'a>(out: &'a mut Vec<UpstreamCounts>, name: &str) -> &'a mut UpstreamCounts {
        match out.iter().position(|u| u.name == name) {
            Some(i) => &mut out[i],
            None => {
                out.push(UpstreamCounts {
                    name: name.to_string(),
                    ..UpstreamCounts::default()
                });
                out.last_mut().expect("just pushed")
            }
        }
    }
    for fam in f.upstream_requests.collect() {
        for m in fam.get_metric() {
            let (Some(up), Some(code)) = (label(m, "upstream"), label(m, "code")) else {
                continue;
            };
            let n = m.get_counter().get_value() as u64;
            let e = entry(&mut out, up);
            e.requests += n;
            if code == "2xx" {
                e.ok += n;
            }
        }
    }
    for fam in f.upstream_errors.collect() {
        for m in fam.get_metric() {
            let (Some(up), Some(class)) = (label(m, "upstream"), label(m, "class")) else {
                continue;
            };
            let n = m.get_counter().get_value() as u64;
            entry(&mut out, up).errors.push((class.to_string(), n));
        }
    }
    for fam in f.upstream_seconds.collect() {
        for m in fam.get_metric() {
            let Some(up) = label(m, "upstream") else {
                continue;
            };
            let h = m.get_histogram();
            let e = entry(&mut out, up);
            e.latency_sum_s = h.get_sample_sum();
            e.latency_count = h.get_sample_count();
        }
    }
    out
}

fn group_counts(state: &State) -> Vec<GroupCounts> {
    let m = &state.rules.metrics;
    let evaluations = counters(&m.evaluations.collect(), "rule_group");
    let failures = counters(&m.evaluation_failures.collect(), "rule_group");
    evaluations
        .iter()
        .map(|(key, n)| GroupCounts {
            key: key.clone(),
            evaluations: *n as u64,
            failures: lookup(&failures, key).unwrap_or(0.0) as u64,
        })
        .collect()
}

/// The values of one family (`get` reads a counter or a gauge) by the value of label `by`.
fn values(
    families: &[MetricFamily],
    by: &str,
    get: impl Fn(&prometheus::proto::Metric) -> f64,
) -> Vec<(String, f64)> {
    families
        .iter()
        .flat_map(|f| f.get_metric())
        .filter_map(|m| label(m, by).map(|k| (k.to_string(), get(m))))
        .collect()
}

fn gauges(families: &[MetricFamily], by: &str) -> Vec<(String, f64)> {
    values(families, by, |m| m.get_gauge().get_value())
}

fn counters(families: &[MetricFamily], by: &str) -> Vec<(String, f64)> {
    values(families, by, |m| m.get_counter().get_value())
}

fn lookup(values: &[(String, f64)], key: &str) -> Option<f64> {
    values.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

/// `scheme://host[:port]/path`, without the userinfo or the query.
pub fn safe_url(url: &http::Uri) -> String {
    let host = url
        .authority()
        .map(|a| a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h))
        .unwrap_or("");
    format!(
        "{}://{}{}",
        url.scheme_str().unwrap_or("http"),
        host,
        url.path()
    )
}
