//! Comparing raw samples: Prometheus's TSDB is the reference, a backend must hold the same label
//! sets, timestamps and values over a window; problems are listed for a readable failure.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{fmt_labels, fmt_ms, poll_until, Labels, Vm};

/// Raw samples of one series: (timestamp ms, value).
pub type Samples = Vec<(i64, f64)>;
pub type SeriesMap = BTreeMap<Labels, Samples>;

/// Restrict to [from, to] ms and drop NaN values (VictoriaMetrics does not store ordinary NaN
/// samples; stale markers are NaN too and Prometheus range queries never return them).
pub fn window(m: &SeriesMap, from_ms: i64, to_ms: i64) -> SeriesMap {
    m.iter()
        .filter_map(|(l, s)| {
            let s: Samples = s
                .iter()
                .copied()
                .filter(|(t, v)| *t >= from_ms && *t <= to_ms && !v.is_nan())
                .collect();
            (!s.is_empty()).then(|| (l.clone(), s))
        })
        .collect()
}

fn values_equal(a: f64, b: f64, rel_tol: f64) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    if rel_tol == 0.0 {
        return false;
    }
    (a - b).abs() <= rel_tol * a.abs().max(b.abs())
}

/// Compare `expected` (Prometheus's TSDB) to `actual` (VictoriaMetrics) over [from, to]:
/// same label sets, same timestamps, values equal within `rel_tol` (0 = bit-exact). Returns
/// human-readable problems (empty = equal).
pub fn compare_samples(
    expected: &SeriesMap,
    actual: &SeriesMap,
    from_ms: i64,
    to_ms: i64,
    rel_tol: f64,
) -> Vec<String> {
    let e = window(expected, from_ms, to_ms);
    let a = window(actual, from_ms, to_ms);
    let mut problems = Vec::new();
    for (l, es) in &e {
        let Some(as_) = a.get(l) else {
            problems.push(format!(
                "missing in VM: {} ({} samples in Prometheus)",
                fmt_labels(l),
                es.len()
            ));
            continue;
        };
        let em: BTreeMap<i64, f64> = es.iter().copied().collect();
        let am: BTreeMap<i64, f64> = as_.iter().copied().collect();
        let missing: Vec<i64> = em.keys().filter(|t| !am.contains_key(t)).copied().collect();
        let extra: Vec<i64> = am.keys().filter(|t| !em.contains_key(t)).copied().collect();
        let wrong: Vec<String> = em
            .iter()
            .filter_map(|(t, v)| {
                am.get(t)
                    .filter(|av| !values_equal(*v, **av, rel_tol))
                    .map(|av| format!("@{}: prom {v} vm {av}", fmt_ms(*t)))
            })
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{}: {} of {} Prometheus timestamps missing in VM, e.g. {:?}",
                fmt_labels(l),
                missing.len(),
                em.len(),
                missing
                    .iter()
                    .take(8)
                    .map(|t| fmt_ms(*t))
                    .collect::<Vec<_>>()
            ));
        }
        if !extra.is_empty() {
            problems.push(format!(
                "{}: {} timestamps in VM that Prometheus does not have, e.g. {:?}",
                fmt_labels(l),
                extra.len(),
                extra.iter().take(8).map(|t| fmt_ms(*t)).collect::<Vec<_>>()
            ));
        }
        if !wrong.is_empty() {
            problems.push(format!(
                "{}: {} values differ: {:?}",
                fmt_labels(l),
                wrong.len(),
                &wrong[..wrong.len().min(5)]
            ));
        }
    }
    for l in a.keys().filter(|l| !e.contains_key(*l)) {
        problems.push(format!("in VM but not in Prometheus: {}", fmt_labels(l)));
    }
    problems
}

pub fn summarize(problems: &[String], max: usize) -> String {
    let mut s: Vec<String> = problems
        .iter()
        .take(max)
        .map(|p| format!("  - {p}"))
        .collect();
    if problems.len() > max {
        s.push(format!("  ... and {} more", problems.len() - max));
    }
    s.join("\n")
}

/// Poll until VictoriaMetrics holds exactly `expected` (Prometheus's raw samples) for
/// `selector` over [from, cutoff] ms, values within `rel_tol`; `also` may add problems of its
/// own (checks on other series). Different series travel in different batches, hence the wait.
/// Returns the backend's samples; panics with the problems after `timeout`.
#[allow(clippy::too_many_arguments)]
pub fn wait_until_backend_matches_prometheus(
    what: &str,
    vm: &Vm,
    expected: &SeriesMap,
    selector: &str,
    (from, cutoff): (i64, i64),
    rel_tol: f64,
    timeout: Duration,
    mut also: impl FnMut(&SeriesMap, &mut Vec<String>) -> Result<(), String>,
) -> SeriesMap {
    poll_until(what, timeout, Duration::from_millis(500), || {
        let got = vm.export(selector, from, cutoff + 60_000)?;
        let mut problems = compare_samples(expected, &got, from, cutoff, rel_tol);
        also(&got, &mut problems)?;
        if problems.is_empty() {
            Ok(got)
        } else {
            Err(format!(
                "{} problems:\n{}",
                problems.len(),
                summarize(&problems, 20)
            ))
        }
    })
}
