//! What `cardguard ci` answers: findings with their severity, each owner's budget
//! arithmetic, where new series go. Serialized as is for `--format json`.

use serde::Serialize;

/// How serious a finding is; the worst one decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Fail,
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A label whose values grow without bound: forbidden by the schema, over its
    /// `label_limits`, or with identifier-like values.
    Unbounded,
    /// A series another schema rule drops (or rejects with 400).
    Schema,
    /// A series the wire checks refuse (the proxy answers 400 to the request carrying it).
    Refused,
    /// An owner's budget: the change's series plus the current use.
    Budget,
    /// A per-metric limit (`metrics` or `max_series_per_metric`).
    MetricBudget,
    /// The guard's global `max_series`.
    GlobalCap,
    /// Series `relabel_configs` drops.
    Relabel,
    /// Values a `redact` rule rewrites.
    Redaction,
}

/// Where in an exposition a finding points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// One owner's budget arithmetic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetUse {
    pub owner: String,
    /// Series the change adds (all instances).
    pub added: u64,
    pub instances: u32,
    /// Active series before the change.
    pub current: u64,
    /// `live` (a running cardguard), `baseline` (the baseline exposition) or `none`.
    pub current_from: &'static str,
    /// `current + added`.
    pub uses: u64,
    pub budget: u64,
    pub action: &'static str,
    pub over: bool,
}

/// Where one group of new series goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retention {
    pub metric: String,
    pub series: u64,
    pub routes: Vec<Hop>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Hop {
    pub route: String,
    pub upstreams: Vec<String>,
    /// The route's `min_interval` (downsampling), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_interval: Option<String>,
    /// The route's own `relabel_configs` keep the series off it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dropped_by_route_relabel: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Samples in the expositions (one series each).
    pub exposed: u64,
    /// Series sent: every exposed series once per instance.
    pub sent: u64,
    /// Of those, not in the baseline.
    pub added: u64,
    /// Added series the proxy would admit.
    pub admitted: u64,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `pass`, `warn` or `fail`.
    pub result: &'static str,
    pub exit_code: u8,
    pub expositions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    pub instances: u32,
    pub series: Counts,
    /// Worst first.
    pub findings: Vec<Finding>,
    pub budgets: Vec<BudgetUse>,
    pub retention: Vec<Retention>,
}

impl Report {
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// Thousands separated by commas, as the report writes counts.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn times(instances: u32) -> String {
    if instances > 1 {
        format!(" (×{instances} instances)")
    } else {
        String::new()
    }
}

/// `checkout: +3,200 series (×4 instances), uses 48,100 of 50,000`.
pub fn budget_line(b: &BudgetUse) -> String {
    format!(
        "{}: +{} series{}, uses {} of {}",
        b.owner,
        thousands(b.added),
        times(b.instances),
        thousands(b.uses),
        thousands(b.budget)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(3200), "3,200");
        assert_eq!(thousands(48_100), "48,100");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
