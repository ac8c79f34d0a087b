//! The guard's part of the report: label limits (unbounded), per-metric limits and the global
//! cap from the guard's own drops, and each owner's budget arithmetic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{examples, metric, owner_of, quoted, reached_guard, value, Options, EXAMPLES};
use crate::ci::input::Live;
use crate::ci::report::{thousands, times, BudgetUse, Finding, Kind, Location, Severity};
use crate::ci::stages::{Fate, LabelSet, Staged};
use crate::guard::{self, GuardConfig};
use crate::series::Reason;

/// Label limits (unbounded), per-metric limits and the global cap, from the guard's drops.
#[allow(clippy::too_many_arguments)]
pub(super) fn findings(
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
pub(super) fn budget_uses(
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
