//! From the stages' decisions to the findings of `cardguard ci`: unbounded labels and schema
//! drops (fail), budgets the change would pass (warn), and where the new series go (info).
//! Only series the change adds over the baseline are reported.
//!
//! Every decision here is one the stages made (`stages::run`); this module groups them, finds
//! the words for them (which label, which limit, three examples) and does the one sum the
//! stages cannot: the owner's current use plus what the change adds, against its budget.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::detect::{self, IdKind};
use super::input::{Live, Source};
use super::stages::{self, Fate, LabelSet, Staged};
use crate::config::Config;
use crate::guard::{self, GuardConfig};
use crate::schema::SchemaRule;
use crate::series::Reason;

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

#[derive(Debug, Clone)]
pub struct Options {
    /// `--owner`: for series with none of the owner labels.
    pub owner: Option<String>,
    /// `--instances`.
    pub instances: u32,
    pub now_ms: i64,
}

/// Where an expanded series came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub source: usize,
    pub line: usize,
}

/// Examples shown per finding.
const EXAMPLES: usize = 3;
/// Distinct identifier-like values that make a label unbounded (one alone is a build's hash).
const ID_VALUES: usize = 2;
/// The value of `instance` for replica `k` (1-based), as the scrape would add it.
pub fn instance_value(k: u32) -> String {
    format!("ci-{k}")
}

/// The owner labels in force: the guard's, or the default `service` when the guard is off.
fn owner_labels(config: &Config) -> Vec<String> {
    config
        .guard
        .as_ref()
        .map(|g| g.owner_labels.clone())
        .unwrap_or_else(|| GuardConfig::default().owner_labels)
}

/// The series a scrape of every source by `opts.instances` replicas sends, sorted labels,
/// each once (the same series in two sources is one): the sample's labels, `__name__`, the
/// owner label from `--owner` where none is present, and `instance` (a scraped `instance`
/// label becomes `exported_instance`, as Prometheus's `honor_labels: false` renames it).
pub fn expand(config: &Config, sources: &[Source], opts: &Options) -> (Vec<LabelSet>, Vec<Origin>) {
    let owners = owner_labels(config);
    let mut seen: HashSet<LabelSet> = HashSet::new();
    let mut series = Vec::new();
    let mut origins = Vec::new();
    for (si, src) in sources.iter().enumerate() {
        for s in &src.exposition.samples {
            let mut base: LabelSet = Vec::with_capacity(s.labels.len() + 3);
            base.push(("__name__".into(), s.name.clone()));
            for (n, v) in &s.labels {
                let n = if n == "instance" {
                    "exported_instance"
                } else {
                    n
                };
                base.push((n.to_string(), v.clone()));
            }
            if let Some(owner) = &opts.owner {
                let has = owners
                    .iter()
                    .any(|o| base.iter().any(|(n, v)| n == o && !v.is_empty()));
                if !has {
                    if let Some(first) = owners.first() {
                        base.retain(|(n, _)| n != first);
                        base.push((first.clone(), owner.clone()));
                    }
                }
            }
            for k in 1..=opts.instances.max(1) {
                let mut l = base.clone();
                l.push(("instance".into(), instance_value(k)));
                l.sort();
                if seen.insert(l.clone()) {
                    series.push(l);
                    origins.push(Origin {
                        source: si,
                        line: s.line,
                    });
                }
            }
        }
    }
    (series, origins)
}

fn value<'a>(labels: &'a LabelSet, name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn metric(labels: &LabelSet) -> &str {
    value(labels, "__name__").unwrap_or_default()
}

fn owner_of(owners: &[String], labels: &LabelSet) -> String {
    let key = guard::OwnerKey {
        tenant: None,
        owner: guard::identity::owner(
            owners,
            labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        )
        .map(|o| String::from_utf8_lossy(o).into_owned()),
    };
    key.display_name().to_string()
}

/// The guard decided it (the series reached the guard): kept, or dropped by a budget.
fn reached_guard(f: &Fate) -> bool {
    match f {
        Fate::Kept => true,
        Fate::Dropped(r) => matches!(
            r,
            Reason::Budget | Reason::MetricBudget | Reason::LabelLimit | Reason::GlobalCap
        ),
        Fate::Refused(_) => false,
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

fn times(instances: u32) -> String {
    if instances > 1 {
        format!(" (×{instances} instances)")
    } else {
        String::new()
    }
}

/// Distinct values in first-seen order, at most `n`.
fn examples<'a>(values: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if out.len() == n {
            break;
        }
        if !out.iter().any(|x| x == v) {
            out.push(v.to_string());
        }
    }
    out
}

/// Check `head` against `config`: what the change adds over `baseline`, with current use from
/// `live` when given.
pub fn check(
    config: &Config,
    head: &[Source],
    baseline: Option<&Source>,
    live: Option<&Live>,
    opts: &Options,
) -> Report {
    let owners = owner_labels(config);
    let (series, origins) = expand(config, head, opts);
    let staged = stages::run(config, &series, opts.now_ms);

    let (base_series, base_staged) = match baseline {
        Some(b) => {
            let (s, _) = expand(config, std::slice::from_ref(b), opts);
            let st = stages::run(config, &s, opts.now_ms);
            (s, st)
        }
        None => (Vec::new(), Vec::new()),
    };
    let base_inputs: HashSet<&LabelSet> = base_series.iter().collect();
    let added: Vec<usize> = (0..series.len())
        .filter(|&i| !base_inputs.contains(&series[i]))
        .collect();
    let location = |i: usize| {
        let o = origins[i];
        Some(Location {
            file: head[o.source].name.clone(),
            line: o.line,
        })
    };

    let mut findings = Vec::new();
    // (metric, label) already reported unbounded: the detector does not repeat them.
    let mut unbounded: HashSet<(String, String)> = HashSet::new();

    // Refused by the wire checks, and dropped by relabeling, redacted: per metric.
    let mut refused: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut relabeled: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut redacted: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    // Keyed by the rule's index: `SchemaRule` has no order of its own.
    let mut schema_drops: BTreeMap<(&str, usize), Vec<usize>> = BTreeMap::new();
    for &i in &added {
        let m = metric(&series[i]);
        match &staged[i].fate {
            Fate::Refused(_) => refused.entry(m).or_default().push(i),
            Fate::Dropped(Reason::Relabel) => relabeled.entry(m).or_default().push(i),
            Fate::Dropped(Reason::Schema(rule)) => {
                schema_drops.entry((m, *rule as usize)).or_default().push(i)
            }
            _ => {}
        }
        if staged[i].redacted {
            redacted.entry(m).or_default().push(i);
        }
    }
    for (m, idx) in &refused {
        let Fate::Refused(why) = &staged[idx[0]].fate else {
            continue;
        };
        findings.push(Finding {
            severity: Severity::Fail,
            kind: Kind::Refused,
            owner: None,
            metric: Some(m.to_string()),
            label: None,
            examples: Vec::new(),
            message: format!(
                "{m}: {} series refused by the proxy's request limits ({why}); the proxy answers 400 to every request carrying one",
                thousands(idx.len() as u64)
            ),
            location: location(idx[0]),
        });
    }
    for (m, idx) in &relabeled {
        findings.push(Finding {
            severity: Severity::Info,
            kind: Kind::Relabel,
            owner: None,
            metric: Some(m.to_string()),
            label: None,
            examples: Vec::new(),
            message: format!(
                "{m}: {} series dropped by relabel_configs",
                thousands(idx.len() as u64)
            ),
            location: location(idx[0]),
        });
    }
    for (m, idx) in &redacted {
        findings.push(Finding {
            severity: Severity::Info,
            kind: Kind::Redaction,
            owner: None,
            metric: Some(m.to_string()),
            label: None,
            examples: Vec::new(),
            message: format!(
                "{m}: {} series have label values redacted before the guard and the upstream see them",
                thousands(idx.len() as u64)
            ),
            location: location(idx[0]),
        });
    }
    if let Some(schema) = &config.schema {
        for ((m, rule), idx) in &schema_drops {
            let rule = &SchemaRule::ALL[*rule];
            let consequence = match schema.action(*rule) {
                crate::schema::SchemaAction::Drop => "the proxy drops these series",
                crate::schema::SchemaAction::Reject => {
                    "the proxy refuses (400) every request carrying one"
                }
            };
            if *rule == SchemaRule::ForbiddenLabelNames {
                // Group by the forbidden label the schema names.
                let mut by_label: BTreeMap<String, Vec<usize>> = BTreeMap::new();
                for &i in idx {
                    let name = schema.forbidden_label_names.as_ref().and_then(|re| {
                        staged[i]
                            .labels
                            .iter()
                            .find(|(n, _)| re.is_match(n))
                            .map(|(n, _)| n.clone())
                    });
                    by_label
                        .entry(name.unwrap_or_default())
                        .or_default()
                        .push(i);
                }
                for (label, idx) in by_label {
                    let ex = examples(
                        idx.iter().filter_map(|&i| value(&staged[i].labels, &label)),
                        EXAMPLES,
                    );
                    unbounded.insert((m.to_string(), label.clone()));
                    findings.push(Finding {
                        severity: Severity::Fail,
                        kind: Kind::Unbounded,
                        owner: None,
                        metric: Some(m.to_string()),
                        label: Some(label.clone()),
                        message: format!(
                            "{m}: label {label} is forbidden by the schema (forbidden_label_names); {consequence}; e.g. {}",
                            quoted(&ex)
                        ),
                        examples: ex,
                        location: location(idx[0]),
                    });
                }
                continue;
            }
            let reason = crate::schema::check(
                schema,
                staged[idx[0]]
                    .labels
                    .iter()
                    .map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            )
            .map(|(_, _, r)| r)
            .unwrap_or_else(|| rule.key().to_string());
            findings.push(Finding {
                severity: Severity::Fail,
                kind: Kind::Schema,
                owner: None,
                metric: Some(m.to_string()),
                label: None,
                examples: Vec::new(),
                message: format!(
                    "{m}: {} series break the schema ({}: {reason}); {consequence}",
                    thousands(idx.len() as u64),
                    rule.key()
                ),
                location: location(idx[0]),
            });
        }
    }

    // The guard's verdicts, on everything that reached it (limits count all of an owner's
    // series), reported where the change adds to them.
    let mut budgets = Vec::new();
    if let Some(g) = &config.guard {
        guard_findings(
            g,
            &owners,
            &series,
            &staged,
            &added,
            &location,
            opts,
            &mut findings,
            &mut unbounded,
        );
        budgets = budget_uses(
            g,
            &owners,
            &staged,
            &added,
            baseline.map(|_| &base_staged[..]),
            live,
            opts,
        );
        for b in budgets.iter().filter(|b| b.over) {
            let consequence = match b.action {
                "warn" => "the proxy would admit and count the series past it (action warn)",
                "relabel" => {
                    "the proxy would collapse new series into __overflow__ aggregates (action relabel)"
                }
                _ => "the proxy would drop new series past it (action drop)",
            };
            findings.push(Finding {
                severity: Severity::Warn,
                kind: Kind::Budget,
                owner: Some(b.owner.clone()),
                metric: None,
                label: None,
                examples: Vec::new(),
                message: format!("{}: over budget; {consequence}", budget_line(b)),
                location: None,
            });
        }
    }

    // Identifier-like values, on the labels as the guard and the upstream would see them.
    let mut values: BTreeMap<(&str, &str), Vec<(&str, IdKind, usize)>> = BTreeMap::new();
    for &i in &added {
        if !reached_guard(&staged[i].fate) {
            continue;
        }
        let labels = &staged[i].labels;
        let m = metric(labels);
        for (n, v) in labels {
            if detect::exempt(n) || n == "instance" {
                continue;
            }
            if let Some(kind) = detect::identifier(v) {
                values.entry((m, n)).or_default().push((v, kind, i));
            }
        }
    }
    for ((m, label), found) in values {
        if unbounded.contains(&(m.to_string(), label.to_string())) {
            continue;
        }
        let distinct: BTreeSet<&str> = found.iter().map(|(v, _, _)| *v).collect();
        if distinct.len() < ID_VALUES {
            continue;
        }
        let kinds: BTreeSet<IdKind> = found.iter().map(|(_, k, _)| *k).collect();
        let kinds: Vec<&str> = kinds.iter().map(|k| k.describe()).collect();
        let ex = examples(found.iter().map(|(v, _, _)| *v), EXAMPLES);
        let redacted = if found.iter().any(|(v, _, _)| v.starts_with("redacted:")) {
            " (redaction hides the values but keeps one series per value)"
        } else {
            ""
        };
        findings.push(Finding {
            severity: Severity::Fail,
            kind: Kind::Unbounded,
            owner: None,
            metric: Some(m.to_string()),
            label: Some(label.to_string()),
            message: format!(
                "{m}: label {label} has values that look like identifiers ({}{redacted}): {} distinct in this run, e.g. {}",
                kinds.join(", "),
                thousands(distinct.len() as u64),
                quoted(&ex)
            ),
            examples: ex,
            location: location(found[0].2),
        });
    }

    let retention = config
        .routing
        .as_ref()
        .map(|r| retention(r, &staged, &added))
        .unwrap_or_default();

    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.kind.cmp(&b.kind))
            .then(a.metric.cmp(&b.metric))
            .then(a.label.cmp(&b.label))
    });
    let worst = findings.iter().map(|f| f.severity).max();
    let (result, exit_code) = match worst {
        Some(Severity::Fail) => ("fail", super::EXIT_FAIL),
        Some(Severity::Warn) => ("warn", super::EXIT_WARN),
        _ => ("pass", super::EXIT_PASS),
    };
    let exposed: u64 = head.iter().map(|s| s.exposition.samples.len() as u64).sum();
    Report {
        result,
        exit_code,
        expositions: head.iter().map(|s| s.name.clone()).collect(),
        baseline: baseline.map(|b| b.name.clone()),
        live: live.map(|l| l.url.clone()),
        instances: opts.instances,
        series: Counts {
            exposed,
            sent: series.len() as u64,
            added: added.len() as u64,
            admitted: added
                .iter()
                .filter(|&&i| staged[i].fate == Fate::Kept)
                .count() as u64,
        },
        findings,
        budgets,
        retention,
    }
}

fn quoted(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
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

/// Label limits (unbounded), per-metric limits and the global cap, from the guard's drops.
#[allow(clippy::too_many_arguments)]
fn guard_findings(
    g: &GuardConfig,
    owners: &[String],
    series: &[LabelSet],
    staged: &[Staged],
    added: &[usize],
    location: &dyn Fn(usize) -> Option<Location>,
    opts: &Options,
    findings: &mut Vec<Finding>,
    unbounded: &mut HashSet<(String, String)>,
) {
    let added_set: HashSet<usize> = added.iter().copied().collect();
    // Per owner, what reached the guard: distinct labels as the guard saw them.
    let mut reached: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, s) in staged.iter().enumerate() {
        if reached_guard(&s.fate) {
            reached
                .entry(owner_of(owners, &s.labels))
                .or_default()
                .push(i);
        }
    }
    let mut owners_sorted: Vec<_> = reached.into_iter().collect();
    owners_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (owner, idx) in owners_sorted {
        let over = |r: Reason| {
            idx.iter()
                .copied()
                .filter(|i| added_set.contains(i) && staged[*i].fate == Fate::Dropped(r))
                .collect::<Vec<usize>>()
        };
        let budget = g.budget_for(None, (owner != guard::UNOWNED).then_some(owner.as_str()));
        let action = budget.action.as_str();

        let label_limited = over(Reason::LabelLimit);
        if !label_limited.is_empty() {
            for (name, limit) in &budget.label_limits {
                let distinct: BTreeSet<&str> = idx
                    .iter()
                    .filter_map(|&i| value(&staged[i].labels, name))
                    .collect();
                if (distinct.len() as u64) <= *limit {
                    continue;
                }
                let metrics: BTreeSet<&str> = label_limited
                    .iter()
                    .filter(|&&i| value(&staged[i].labels, name).is_some())
                    .map(|&i| metric(&staged[i].labels))
                    .collect();
                let first = label_limited
                    .iter()
                    .copied()
                    .find(|&i| value(&staged[i].labels, name).is_some());
                // The values refused first, then the ones admitted before them.
                let ex = examples(
                    label_limited
                        .iter()
                        .chain(&idx)
                        .filter_map(|&i| value(&staged[i].labels, name)),
                    EXAMPLES,
                );
                for m in &metrics {
                    unbounded.insert((m.to_string(), name.clone()));
                }
                let metrics: Vec<&str> = metrics.into_iter().collect();
                findings.push(Finding {
                    severity: Severity::Fail,
                    kind: Kind::Unbounded,
                    owner: Some(owner.clone()),
                    metric: metrics.first().map(|m| m.to_string()),
                    label: Some(name.clone()),
                    message: format!(
                        "{}: label {name}: {} distinct values, over its label_limits of {} ({owner}, action {action}); e.g. {}",
                        metrics.join(", "),
                        thousands(distinct.len() as u64),
                        thousands(*limit),
                        quoted(&ex)
                    ),
                    examples: ex,
                    location: first.and_then(location),
                });
            }
        }

        let metric_limited = over(Reason::MetricBudget);
        let mut by_metric: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in &metric_limited {
            by_metric.entry(metric(&staged[i].labels)).or_insert(i);
        }
        for (m, first) in by_metric {
            let n = idx
                .iter()
                .filter(|&&i| metric(&staged[i].labels) == m)
                .map(|&i| &staged[i].labels)
                .collect::<HashSet<_>>()
                .len();
            let limit = budget.metric_limit(m.as_bytes()).unwrap_or_default();
            findings.push(Finding {
                severity: Severity::Warn,
                kind: Kind::MetricBudget,
                owner: Some(owner.clone()),
                metric: Some(m.to_string()),
                label: None,
                examples: Vec::new(),
                message: format!(
                    "{owner}: {m}: {} series{}, over its limit of {} (action {action})",
                    thousands(n as u64),
                    times(opts.instances),
                    thousands(limit)
                ),
                location: location(first),
            });
        }

        let capped = over(Reason::GlobalCap);
        if let (Some(&first), Some(cap)) = (capped.first(), g.max_series) {
            findings.push(Finding {
                severity: Severity::Warn,
                kind: Kind::GlobalCap,
                owner: Some(owner.clone()),
                metric: Some(metric(&series[first]).to_string()),
                label: None,
                examples: Vec::new(),
                message: format!(
                    "{owner}: {} series past the guard's global max_series of {}",
                    thousands(capped.len() as u64),
                    thousands(cap)
                ),
                location: location(first),
            });
        }
    }
}

/// Per owner the change adds to: what it adds, what is in use, against the budget.
fn budget_uses(
    g: &GuardConfig,
    owners: &[String],
    staged: &[Staged],
    added: &[usize],
    baseline: Option<&[Staged]>,
    live: Option<&Live>,
    opts: &Options,
) -> Vec<BudgetUse> {
    // Series as the guard counts them: distinct labels after relabeling and redaction.
    let per_owner = |st: &[Staged], idx: &mut dyn Iterator<Item = usize>| {
        let mut m: BTreeMap<String, HashSet<LabelSet>> = BTreeMap::new();
        for i in idx {
            if reached_guard(&st[i].fate) {
                m.entry(owner_of(owners, &st[i].labels))
                    .or_default()
                    .insert(st[i].labels.clone());
            }
        }
        m
    };
    let base = baseline
        .map(|b| per_owner(b, &mut (0..b.len())))
        .unwrap_or_default();
    let head = per_owner(staged, &mut added.iter().copied());
    let mut out = Vec::new();
    for (owner, set) in head {
        let before = base.get(&owner);
        let added = set
            .iter()
            .filter(|l| before.is_none_or(|b| !b.contains(*l)))
            .count() as u64;
        if added == 0 {
            continue;
        }
        let (current, current_from) = match (live, baseline) {
            (Some(l), _) => (l.active(&owner).unwrap_or(0), "live"),
            (None, Some(_)) => (before.map_or(0, |b| b.len() as u64), "baseline"),
            (None, None) => (0, "none"),
        };
        let budget = g.budget_for(None, (owner != guard::UNOWNED).then_some(owner.as_str()));
        let uses = current + added;
        out.push(BudgetUse {
            owner,
            added,
            instances: opts.instances,
            current,
            current_from,
            uses,
            budget: budget.max_series,
            action: budget.action.as_str(),
            over: uses > budget.max_series,
        });
    }
    out
}

/// Which routes and upstreams the new series take, grouped by metric and path.
fn retention(
    routing: &crate::route::Routing,
    staged: &[Staged],
    added: &[usize],
) -> Vec<Retention> {
    use crate::route::split::{claim, route_relabel, SOLE_UPSTREAM};
    let mut claimed = Vec::new();
    let mut scratch = crate::relabel::Scratch::default();
    let mut groups: BTreeMap<(String, Vec<Hop>), u64> = BTreeMap::new();
    for &i in added {
        let s = &staged[i];
        // Budget drops included: the budget finding says they are over; this says where
        // they would go once admitted.
        if !reached_guard(&s.fate) {
            continue;
        }
        let labels = s.labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let mut hops = Vec::new();
        if claim(routing, labels.clone(), None, &mut claimed) {
            let mut routes: Vec<usize> = claimed.iter().flatten().copied().collect();
            routes.sort();
            routes.dedup();
            for r in routes {
                let route = routing.routes.get(r);
                let upstreams = claimed
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == Some(r))
                    .map(|(u, _)| routing.upstreams[u].name.clone())
                    .collect();
                let dropped = route_relabel(route, labels.clone(), &mut scratch).is_none();
                hops.push(Hop {
                    route: match route {
                        Some(rt) => rt.name.clone(),
                        None if r == SOLE_UPSTREAM => {
                            "(no route matched: the only upstream)".into()
                        }
                        None => String::new(),
                    },
                    upstreams,
                    min_interval: route
                        .and_then(|rt| rt.min_interval)
                        .map(|d| crate::duration::PromDuration(d).to_string()),
                    dropped_by_route_relabel: dropped,
                });
            }
        }
        *groups
            .entry((metric(&s.labels).to_string(), hops))
            .or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((metric, routes), series)| Retention {
            metric,
            series,
            routes,
        })
        .collect()
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
