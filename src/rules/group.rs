//! Evaluating one group at one timestamp, as Prometheus's rule manager does: each rule in
//! order, its result renamed to `record` with the rule's labels applied, `limit` enforced,
//! and stale markers for recorded series that were there last time and are gone now.
//!
//! A rule that fails (evaluation error, `limit` exceeded, duplicate output labels) produces
//! nothing this time and keeps its previous series, so no stale markers are written for it:
//! Prometheus does the same (rules/group.go returns before updating `seriesInPreviousEval`).

use std::collections::HashSet;
use std::time::Duration;

use super::file::{RecordingRule, RuleGroup};
use prost::Message;

use super::promql::{Labels, Point, Storage, Value, STALE_NAN_BITS};
use crate::wire::OwnedSeries;

/// What a group remembers between evaluations: per rule, the label sets it wrote last time.
#[derive(Debug, Default, Clone)]
pub struct GroupState {
    rules: Vec<RuleState>,
    /// Evaluation timestamp of the last evaluation, if any.
    pub last_eval_ms: Option<i64>,
}

#[derive(Debug, Clone)]
struct RuleState {
    record: String,
    expr: String,
    labels: Vec<(String, String)>,
    previous: HashSet<Labels>,
}

/// A group's state as plain data, for snapshots: after a restart each rule still knows the
/// series it wrote last, so the ones that are gone get their stale markers.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupImage {
    pub key: String,
    pub last_eval_ms: Option<i64>,
    pub rules: Vec<RuleImage>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleImage {
    pub record: String,
    pub expr: String,
    pub labels: Vec<(String, String)>,
    pub previous: Vec<Labels>,
}

impl GroupState {
    pub fn image(&self, key: &str) -> GroupImage {
        GroupImage {
            key: key.to_string(),
            last_eval_ms: self.last_eval_ms,
            rules: self
                .rules
                .iter()
                .map(|r| RuleImage {
                    record: r.record.clone(),
                    expr: r.expr.clone(),
                    labels: r.labels.clone(),
                    previous: r.previous.iter().cloned().collect(),
                })
                .collect(),
        }
    }

    pub fn from_image(img: GroupImage) -> (String, GroupState) {
        let state = GroupState {
            last_eval_ms: img.last_eval_ms,
            rules: img
                .rules
                .into_iter()
                .map(|r| RuleState {
                    record: r.record,
                    expr: r.expr,
                    labels: r.labels,
                    previous: r.previous.into_iter().collect(),
                })
                .collect(),
        };
        (img.key, state)
    }
}

/// One failed rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleFailure {
    pub record: String,
    pub message: String,
}

/// The result of one evaluation.
#[derive(Debug, Default)]
pub struct Evaluated {
    pub series: Vec<OwnedSeries>,
    pub failures: Vec<RuleFailure>,
    pub stale_markers: u64,
}

impl GroupState {
    /// Carry the state over to `group` after a reload: a rule keeps its previous series when a
    /// rule with the same record, expression and labels existed; the series of rules that are
    /// gone get stale markers at `t_ms` (when known), as Prometheus does on reload.
    pub fn adopt(&mut self, group: &RuleGroup, t_ms: Option<i64>, out: &mut Vec<OwnedSeries>) {
        let mut old = std::mem::take(&mut self.rules);
        for r in &group.rules {
            let pos = old
                .iter()
                .position(|o| o.record == r.record && o.expr == r.expr && o.labels == r.labels);
            self.rules.push(match pos {
                Some(p) => old.swap_remove(p),
                None => RuleState {
                    record: r.record.clone(),
                    expr: r.expr.clone(),
                    labels: r.labels.clone(),
                    previous: HashSet::new(),
                },
            });
        }
        if let Some(t) = t_ms {
            for gone in old {
                stale(gone.previous.into_iter(), t, out);
            }
        }
    }

    /// Stale markers for everything this group wrote last time (the group was removed).
    pub fn retire(self, t_ms: i64, out: &mut Vec<OwnedSeries>) {
        for r in self.rules {
            stale(r.previous.into_iter(), t_ms, out);
        }
    }
}

fn stale(labels: impl Iterator<Item = Labels>, t_ms: i64, out: &mut Vec<OwnedSeries>) {
    for l in labels {
        // A float stale marker ends a histogram series too, as Prometheus's rule manager
        // writes it.
        out.push(OwnedSeries {
            labels: l,
            samples: vec![(f64::from_bits(STALE_NAN_BITS), t_ms)],
            histograms: Vec::new(),
        });
    }
}

/// The effective interval and offset of a group.
pub fn timing(g: &RuleGroup, interval: Duration, offset: Duration) -> (i64, i64) {
    (
        g.interval.unwrap_or(interval).as_millis().max(1) as i64,
        g.query_offset.unwrap_or(offset).as_millis() as i64,
    )
}

/// The evaluation timestamp for a tick: ticks are multiples of the interval since the epoch,
/// so the same config always evaluates at the same timestamps.
pub fn aligned_tick(now_ms: i64, interval_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(interval_ms)
}

/// Evaluate every rule of `group` at `t_ms` (already shifted by the query offset).
pub fn evaluate(
    group: &RuleGroup,
    storage: &dyn Storage,
    t_ms: i64,
    state: &mut GroupState,
) -> Evaluated {
    evaluate_with(group, storage, t_ms, state, &mut |_| {})
}

/// [`evaluate`], handing each rule's output (stale markers included) to `written` before the
/// next rule runs: in Prometheus a rule reads what the rules before it in its group recorded
/// at the same timestamp, so the caller writes them where the storage will find them.
pub fn evaluate_with(
    group: &RuleGroup,
    storage: &dyn Storage,
    t_ms: i64,
    state: &mut GroupState,
    written: &mut dyn FnMut(&[OwnedSeries]),
) -> Evaluated {
    if state.rules.len() != group.rules.len() {
        state.adopt(group, None, &mut Vec::new());
    }
    let mut out = Evaluated::default();
    for (rule, rs) in group.rules.iter().zip(state.rules.iter_mut()) {
        match eval_rule(rule, group.limit, storage, t_ms) {
            Ok(rows) => {
                let first = out.series.len();
                let mut current = HashSet::with_capacity(rows.len());
                for (labels, v) in rows {
                    current.insert(labels.clone());
                    let (samples, histograms) = match v {
                        Point::Float(v) => (vec![(v, t_ms)], Vec::new()),
                        Point::Histogram(h) => (
                            Vec::new(),
                            vec![super::tap::encode_histogram(t_ms, &h).encode_to_vec()],
                        ),
                    };
                    out.series.push(OwnedSeries {
                        labels,
                        samples,
                        histograms,
                    });
                }
                let before = out.series.len();
                stale(
                    rs.previous.difference(&current).cloned(),
                    t_ms,
                    &mut out.series,
                );
                out.stale_markers += (out.series.len() - before) as u64;
                rs.previous = current;
                written(&out.series[first..]);
            }
            Err(message) => out.failures.push(RuleFailure {
                record: rule.record.clone(),
                message,
            }),
        }
    }
    state.last_eval_ms = Some(t_ms);
    out
}

/// One rule's output rows (labels sorted), or why it failed.
fn eval_rule(
    rule: &RecordingRule,
    limit: usize,
    storage: &dyn Storage,
    t_ms: i64,
) -> Result<Vec<(Labels, Point)>, String> {
    let rows = match rule
        .compiled
        .eval(storage, t_ms)
        .map_err(|e| e.to_string())?
    {
        Value::Vector(v) => v.into_iter().map(|(l, v)| (l, Point::Float(v))).collect(),
        Value::Scalar(x) => vec![(Vec::new(), Point::Float(x))],
        Value::Mixed(v) => v,
        Value::String(_) | Value::Matrix(_) | Value::MixedMatrix(_) => {
            return Err("rule result is not a vector or scalar".into())
        }
    };
    let mut seen = HashSet::with_capacity(rows.len());
    let mut out = Vec::with_capacity(rows.len());
    for (mut labels, v) in rows {
        labels.retain(|(n, _)| n != "__name__");
        labels.push(("__name__".into(), rule.record.clone()));
        for (k, val) in &rule.labels {
            labels.retain(|(n, _)| n != k);
            if !val.is_empty() {
                labels.push((k.clone(), val.clone()));
            }
        }
        labels.sort_unstable();
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        out.push((labels, v));
    }
    // Prometheus checks the limit on the result, before anything is written.
    if limit > 0 && out.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
