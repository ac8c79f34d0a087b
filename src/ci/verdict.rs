//! From the stages' decisions to the findings of `cardguard ci`: unbounded labels and schema
//! drops (fail), budgets the change would pass (warn), and where the new series go (info).
//! Only series the change adds over the baseline are reported.
//!
//! Every decision here is one the stages made (`stages::run`); this module groups them, finds
//! the words for them (which label, which limit, three examples) and does the one sum the
//! stages cannot: the owner's current use plus what the change adds, against its budget.

mod budgets;
mod retention;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::detect::{self, IdKind};
use super::input::{Live, Source};
use super::report::{budget_line, thousands, Counts, Finding, Kind, Location, Report, Severity};
use super::stages::{self, Fate, LabelSet};
use crate::config::Config;
use crate::guard::{self, GuardConfig};
use crate::schema::SchemaRule;
use crate::series::Reason;

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
pub(super) const EXAMPLES: usize = 3;
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

pub(super) fn value<'a>(labels: &'a LabelSet, name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub(super) fn metric(labels: &LabelSet) -> &str {
    value(labels, "__name__").unwrap_or_default()
}

pub(super) fn owner_of(owners: &[String], labels: &LabelSet) -> String {
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
pub(super) fn reached_guard(f: &Fate) -> bool {
    match f {
        Fate::Kept => true,
        Fate::Dropped(r) => matches!(
            r,
            Reason::Budget | Reason::MetricBudget | Reason::LabelLimit | Reason::GlobalCap
        ),
        Fate::Refused(_) => false,
    }
}

/// Distinct values in first-seen order, at most `n`.
pub(super) fn examples<'a>(values: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
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
        budgets::findings(
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
        budgets = budgets::budget_uses(
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
    // (metric, label) -> (value, what it looks like, series index).
    type Found<'a> = Vec<(&'a str, IdKind, usize)>;
    let mut values: BTreeMap<(&str, &str), Found<'_>> = BTreeMap::new();
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
        .map(|r| retention::retention(r, &staged, &added))
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

pub(super) fn quoted(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
