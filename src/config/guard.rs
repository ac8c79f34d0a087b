//! The `guard:` section: who owns a series, how many series each owner may have, and what
//! happens past the budget. Raw serde types and their validation, side by side.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use regex::Regex;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::validate::Errors;
use crate::duration::PromDuration;

/// What happens to a new series over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Drop it; series admitted earlier keep flowing.
    Drop,
    /// Admit it anyway and count what would have been dropped (a dry run).
    Warn,
    /// Collapse it: set the overflow labels to `__overflow__` and merge the series that
    /// collapse together into one aggregate, emitted every `overflow_flush_interval`.
    Relabel,
}

/// How the members of an overflow aggregate combine when they are gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaugeFunction {
    Sum,
    Max,
    Min,
    Last,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Warn => "warn",
            Action::Relabel => "relabel",
        }
    }
}

/// One owner's limits, resolved (rule fields fall back to `default_budget`).
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Most active series.
    pub max_series: u64,
    pub action: Action,
    /// Most active series per metric name, unless `metrics` names it.
    pub max_series_per_metric: Option<u64>,
    /// Per-metric limits by metric name.
    pub metrics: HashMap<String, u64>,
    /// Most distinct values per label name (e.g. `user_id: 1000`).
    pub label_limits: Vec<(String, u64)>,
    /// `relabel`: the labels set to `__overflow__`; empty means the owner's label with the
    /// most distinct values at that moment.
    pub overflow_labels: Vec<String>,
    /// `relabel`: how gauge members combine.
    pub overflow_gauge: GaugeFunction,
}

impl Budget {
    /// The series limit for `metric` within this budget, if any.
    pub fn metric_limit(&self, metric: &[u8]) -> Option<u64> {
        if !self.metrics.is_empty() {
            if let Some(n) = std::str::from_utf8(metric)
                .ok()
                .and_then(|m| self.metrics.get(m))
            {
                return Some(*n);
            }
        }
        self.max_series_per_metric
    }
}

/// Which owners a budget rule applies to.
#[derive(Debug, Clone)]
pub enum OwnerMatch {
    Exact(String),
    /// Anchored, as Prometheus anchors regexes.
    Regex(Regex),
}

impl PartialEq for OwnerMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (OwnerMatch::Exact(a), OwnerMatch::Exact(b)) => a == b,
            (OwnerMatch::Regex(a), OwnerMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl OwnerMatch {
    fn matches(&self, owner: &str) -> bool {
        match self {
            OwnerMatch::Exact(s) => s == owner,
            OwnerMatch::Regex(r) => r.is_match(owner),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRule {
    /// Only for this tenant (when tenants are enabled).
    pub tenant: Option<String>,
    pub owner: OwnerMatch,
    pub budget: Arc<Budget>,
}

/// The validated `guard:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// The first of these labels present on a series names its owner.
    pub owner_labels: Vec<String>,
    /// When set, the tenant (this request header) is an outer level: owners are per tenant.
    pub tenant_header: Option<HeaderName>,
    /// Seed of the series-id hash; replicas sharing budgets must agree on it.
    pub hash_seed: u64,
    /// A series counts as active while seen within this window.
    pub window: Duration,
    /// The window is tracked in this many slices; a series unseen for all of them frees its slot.
    pub window_slices: u8,
    /// Cap on active series across all owners.
    pub max_series: Option<u64>,
    /// Distinct owners tracked; series of further owners are accounted to `other`.
    pub max_owners: usize,
    /// Owners reported individually on /metrics; the rest are summed as `other`.
    pub max_reported_services: usize,
    /// Label names and metric names reported as top offenders per owner.
    pub top_k: usize,
    /// How often overflow aggregates (action `relabel`) are sent upstream.
    pub overflow_flush_interval: Duration,
    pub default_budget: Arc<Budget>,
    pub unowned_budget: Arc<Budget>,
    pub rules: Vec<BudgetRule>,
    /// Which load of the config this is; set by the server on start and every reload, so
    /// owners can tell a newer budget from an older one.
    pub generation: u64,
}

impl GuardConfig {
    /// The budget of an owner: the first rule that matches, else the default.
    pub fn budget_for(&self, tenant: Option<&str>, owner: Option<&str>) -> Arc<Budget> {
        let Some(owner) = owner else {
            return self.unowned_budget.clone();
        };
        self.rules
            .iter()
            .find(|r| {
                r.tenant.as_deref().is_none_or(|t| Some(t) == tenant) && r.owner.matches(owner)
            })
            .map(|r| r.budget.clone())
            .unwrap_or_else(|| self.default_budget.clone())
    }

    /// Length of one window slice.
    pub fn slice_length(&self) -> Duration {
        self.window / u32::from(self.window_slices.max(1))
    }

    /// A guard with one budget for every owner: what `--max-series-per-service` builds.
    pub fn with_default_budget(max_series: u64, owner_labels: Vec<String>) -> Self {
        let budget = Arc::new(Budget {
            max_series,
            ..default_budget()
        });
        GuardConfig {
            owner_labels,
            default_budget: budget.clone(),
            unowned_budget: budget,
            ..Self::default()
        }
    }
}

fn default_budget() -> Budget {
    Budget {
        max_series: 10_000,
        action: Action::Drop,
        max_series_per_metric: None,
        metrics: HashMap::new(),
        label_limits: Vec::new(),
        overflow_labels: Vec::new(),
        overflow_gauge: GaugeFunction::Sum,
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            owner_labels: vec!["service".into()],
            tenant_header: None,
            hash_seed: 0,
            window: Duration::from_secs(3600),
            window_slices: 6,
            max_series: None,
            max_owners: 10_000,
            max_reported_services: 50,
            top_k: 5,
            overflow_flush_interval: Duration::from_secs(30),
            default_budget: Arc::new(default_budget()),
            unowned_budget: Arc::new(default_budget()),
            rules: Vec::new(),
            generation: 0,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub owner_labels: Option<Spanned<Vec<String>>>,
    pub tenant_header: Option<Spanned<String>>,
    pub hash_seed: Option<u64>,
    pub window: Option<Spanned<PromDuration>>,
    pub window_slices: Option<Spanned<u32>>,
    pub max_series: Option<u64>,
    pub max_owners: Option<Spanned<usize>>,
    pub max_reported_services: Option<Spanned<usize>>,
    pub top_k: Option<usize>,
    pub overflow_flush_interval: Option<Spanned<PromDuration>>,
    pub default_budget: Option<RawBudget>,
    pub unowned_budget: Option<RawBudget>,
    #[serde(default)]
    pub budgets: Vec<Spanned<RawRule>>,
}

/// Budget fields; any left out inherit from `default_budget`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub max_series: Option<u64>,
    pub action: Option<Spanned<String>>,
    pub max_series_per_metric: Option<u64>,
    #[serde(default)]
    pub metrics: BTreeMap<String, u64>,
    #[serde(default)]
    pub label_limits: BTreeMap<String, u64>,
    pub overflow_labels: Option<Vec<String>>,
    pub overflow_gauge: Option<Spanned<String>>,
}

/// A budget rule: a matcher plus budget fields (serde cannot flatten under
/// `deny_unknown_fields`, hence the repetition of `RawBudget`'s fields).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub service: Option<String>,
    pub service_regex: Option<Spanned<String>>,
    pub tenant: Option<String>,
    pub max_series: Option<u64>,
    pub action: Option<Spanned<String>>,
    pub max_series_per_metric: Option<u64>,
    #[serde(default)]
    pub metrics: BTreeMap<String, u64>,
    #[serde(default)]
    pub label_limits: BTreeMap<String, u64>,
    pub overflow_labels: Option<Vec<String>>,
    pub overflow_gauge: Option<Spanned<String>>,
}

fn resolve(base: &Budget, raw: &RawBudget, path: &str, errs: &mut Errors) -> Budget {
    let mut b = base.clone();
    if let Some(n) = raw.max_series {
        b.max_series = n;
    }
    if let Some(a) = &raw.action {
        match a.value.as_str() {
            "drop" => b.action = Action::Drop,
            "warn" => b.action = Action::Warn,
            "relabel" => b.action = Action::Relabel,
            other => errs.push(
                &format!("{path}.action"),
                a,
                format!("unknown action {other:?} (drop, warn or relabel)"),
            ),
        }
    }
    if let Some(n) = raw.max_series_per_metric {
        b.max_series_per_metric = (n > 0).then_some(n);
    }
    for (k, v) in &raw.metrics {
        b.metrics.insert(k.clone(), *v);
    }
    if let Some(l) = &raw.overflow_labels {
        b.overflow_labels = l.clone();
    }
    if let Some(g) = &raw.overflow_gauge {
        b.overflow_gauge = match g.value.as_str() {
            "sum" => GaugeFunction::Sum,
            "max" => GaugeFunction::Max,
            "min" => GaugeFunction::Min,
            "last" => GaugeFunction::Last,
            other => {
                errs.push(
                    &format!("{path}.overflow_gauge"),
                    g,
                    format!("unknown function {other:?} (sum, max, min or last)"),
                );
                GaugeFunction::Sum
            }
        };
    }
    for (k, v) in &raw.label_limits {
        b.label_limits.retain(|(name, _)| name != k);
        b.label_limits.push((k.clone(), *v));
    }
    b
}

pub(super) fn validate(raw: &RawGuard, errs: &mut Errors) -> GuardConfig {
    let mut g = GuardConfig::default();
    if let Some(o) = &raw.owner_labels {
        if o.value.is_empty() || o.value.iter().any(|l| !valid_label_name(l)) {
            errs.push(
                "guard.owner_labels",
                o,
                "must be a non-empty list of label names",
            );
        }
        g.owner_labels = o.value.clone();
    }
    if let Some(t) = &raw.tenant_header {
        match HeaderName::from_bytes(t.value.as_bytes()) {
            Ok(h) => g.tenant_header = Some(h),
            Err(_) if t.value.is_empty() => {}
            Err(_) => errs.push(
                "guard.tenant_header",
                t,
                format!("{:?} is not a header name", t.value),
            ),
        }
    }
    if let Some(s) = raw.hash_seed {
        g.hash_seed = s;
    }
    if let Some(w) = &raw.window {
        if w.value.0 < Duration::from_secs(60) {
            errs.push("guard.window", w, "must be at least 1m");
        }
        g.window = w.value.0;
    }
    if let Some(s) = &raw.window_slices {
        if !(1..=60).contains(&s.value) {
            errs.push("guard.window_slices", s, "must be between 1 and 60");
        }
        g.window_slices = s.value.clamp(1, 60) as u8;
    }
    g.max_series = raw.max_series.filter(|&n| n > 0);
    if let Some(n) = &raw.max_owners {
        if n.value == 0 {
            errs.push("guard.max_owners", n, "must be at least 1");
        }
        g.max_owners = n.value.max(1);
    }
    if let Some(n) = &raw.max_reported_services {
        g.max_reported_services = n.value;
    }
    if let Some(k) = raw.top_k {
        g.top_k = k;
    }
    if let Some(f) = &raw.overflow_flush_interval {
        if f.value.0 < Duration::from_secs(1) {
            errs.push("guard.overflow_flush_interval", f, "must be at least 1s");
        }
        g.overflow_flush_interval = f.value.0.max(Duration::from_secs(1));
    }
    let base = match &raw.default_budget {
        Some(b) => resolve(&default_budget(), b, "guard.default_budget", errs),
        None => default_budget(),
    };
    g.unowned_budget = Arc::new(match &raw.unowned_budget {
        Some(b) => resolve(&base, b, "guard.unowned_budget", errs),
        None => base.clone(),
    });
    for (i, rule) in raw.budgets.iter().enumerate() {
        let path = format!("guard.budgets[{i}]");
        let r = &rule.value;
        let owner = match (&r.service, &r.service_regex) {
            (Some(s), None) => Some(OwnerMatch::Exact(s.clone())),
            (None, Some(re)) => match Regex::new(&format!("^(?:{})$", re.value)) {
                Ok(re) => Some(OwnerMatch::Regex(re)),
                Err(e) => {
                    errs.push(
                        &format!("{path}.service_regex"),
                        re,
                        format!("invalid regex: {e}"),
                    );
                    None
                }
            },
            _ => {
                errs.push(&path, rule, "needs exactly one of service or service_regex");
                None
            }
        };
        let raw_budget = RawBudget {
            max_series: r.max_series,
            action: r.action.clone(),
            max_series_per_metric: r.max_series_per_metric,
            metrics: r.metrics.clone(),
            label_limits: r.label_limits.clone(),
            overflow_labels: r.overflow_labels.clone(),
            overflow_gauge: r.overflow_gauge.clone(),
        };
        let budget = Arc::new(resolve(&base, &raw_budget, &path, errs));
        if let Some(owner) = owner {
            g.rules.push(BudgetRule {
                tenant: r.tenant.clone(),
                owner,
                budget,
            });
        }
    }
    g.default_budget = Arc::new(base);
    g
}

fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
